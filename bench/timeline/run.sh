#!/bin/sh
# bench/timeline/run.sh — a GPU timeline of `smedjan bench`'s training steps:
# where the GPU sits idle between operations (launch gaps, host round trips).
# Builds tracer.c (CUPTI, from the CUDA toolkit), runs build-cuda/smedjan
# bench with it preloaded and prints idle.py's summary of the last 4 steps.
# Needs a CUDA build (make CUDA=1) and python3.
# Env: T (default 1024), B (default 32), SMJ_FLAGS (default "--bf16-matmul
# --fp16-activations --fused-ce"), TRACE_OUT (default /tmp/smedjan_trace.csv).
set -eu
T=${T:-1024}
B=${B:-32}
FLAGS=${SMJ_FLAGS:---bf16-matmul --fp16-activations --fused-ce}
OUTF=${TRACE_OUT:-/tmp/smedjan_trace.csv}
HERE=$(dirname "$0")
CUDA=${CUDA_HOME:-/usr/local/cuda}
LIB=$(dirname "$(find "$CUDA"/ "$CUDA"/../ -name 'libcupti.so' 2>/dev/null | head -1)")
INC=$(dirname "$(find "$CUDA"/ "$CUDA"/../ -name 'cupti.h' 2>/dev/null | head -1)")
[ -n "$LIB" ] && [ -n "$INC" ] || { echo "timeline: CUPTI (libcupti.so, cupti.h) not found under $CUDA" >&2; exit 1; }
gcc -shared -fPIC -O2 -I"$INC" -I"$CUDA/include" -o /tmp/smedjan_tracer.so "$HERE/tracer.c" -L"$LIB" -lcupti -Wl,-rpath,"$LIB"
# shellcheck disable=SC2086
TRACE_OUT=$OUTF LD_PRELOAD=/tmp/smedjan_tracer.so build-cuda/smedjan bench --device cuda --size custom --dim 768 \
  --layers 12 --heads 12 --ffn-mult 2.6667 --vocab-size 32768 --steps 6 --warmup 2 --decode-tokens 0 \
  --matmul-probe 0 --profile-steps 0 --seq-len "$T" --batch-size "$B" $FLAGS 2>&1 | grep -E '^  train '
python3 "$HERE/idle.py" "$OUTF" 4
