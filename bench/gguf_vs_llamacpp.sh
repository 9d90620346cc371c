#!/bin/sh
# gguf_vs_llamacpp.sh — smedjan vs llama.cpp on the same GGUF file(s): prompt
# processing of 128 tokens (pp128) and 32 single-token decode steps (tg32),
# in tok/s, with the same thread count.
#
#   sh bench/gguf_vs_llamacpp.sh MODEL.gguf [MODEL2.gguf ...]
#
# env: THREADS (default 2), REPS (default 5; every figure is the best of them),
#      LLAMA_BENCH=/path/to/llama-bench  use a local llama.cpp build's
#        llama-bench (never built by this script) instead of node-llama-cpp
#        (tests/llamacpp: `npm ci` there once; its prebuilt CPU backends pick
#        the variant for this CPU).
#
# smedjan's side is bench/gguf_bench.c (smj_model_load_gguf + a session, the
# same pp/tg definitions). Also prints smedjan's kernel-level figures (bench/qmatmul_bench.c) for the
# linear-layer shapes. Make a test model like the one of bench/RESULTS.md:
#   smedjan tokenizer --input corpus.txt --vocab-size 50257 --output tok.bin
#   smedjan prepare --input text.txt --tokenizer tok.bin --output train.bin
#   smedjan train --dataset train.bin --tokenizer tok.bin --size custom --dim 512 \
#       --layers 8 --heads 8 --ffn-mult 3 --untied --steps 20 --checkpoint-dir ck
#   smedjan export-gguf --checkpoint ck/model.ckpt --tokenizer tok.bin \
#       --output m-q8_0.gguf --quant q8_0          (and q4_0)
# The machine should be otherwise idle: compare best-of figures only.
set -e
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,25p' "$0"; exit 2; }
THREADS=${THREADS:-2}
REPS=${REPS:-5}
BIN=build/smedjan
LIB=build/libsmedjan.a
[ -x "$BIN" ] && [ -f "$LIB" ] || { echo "gguf_vs_llamacpp: run make first" >&2; exit 1; }
mkdir -p build/bench
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Iinclude bench/qmatmul_bench.c "$LIB" \
    -o build/bench/qmatmul_bench -fopenmp -lm
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Iinclude bench/gguf_bench.c "$LIB" \
    -o build/bench/gguf_bench -fopenmp -lm

echo "== smedjan qmatmul kernels ($THREADS threads)"
build/bench/qmatmul_bench "$THREADS"

for m in "$@"; do
    echo "== $m ($THREADS threads, best of $REPS)"
    if [ -n "$LLAMA_BENCH" ]; then
        "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p 128 -n 32 -r "$REPS" -o md 2>/dev/null | grep -E "pp128|tg32"
    else
        printf 'llama.cpp (node-llama-cpp): '
        node bench/llamacpp_bench.mjs "$m" "$THREADS" 128 32 "$REPS"
    fi
    printf 'smedjan (bench/gguf_bench.c): '
    build/bench/gguf_bench "$m" "$THREADS" 128 32 "$REPS"
done
