#!/bin/sh
# CPU training throughput, smedjan vs PyTorch, side by side in one run.
#
#   sh bench/cpu_train_vs_pytorch.sh [PRESET ...]     (default: tiny small medium)
#
# Same model (Llama-style, vocab 8192, tied, SwiGLU, RMSNorm, RoPE), same
# batch and sequence length, fp32, 2 threads, AdamW + clipping in both.
# PyTorch side: the reference script cpu_train_bench.py (PYTORCH_BENCH, default
# ../shared/bench/pytorch/cpu_train_bench.py) under Debian's python3-torch with
# OpenBLAS (apt-get install python3-torch libopenblas0-pthread).
# Prints both tok/s and the ratio per preset. Needs `make` first.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
REF=${PYTORCH_BENCH:-../shared/bench/pytorch/cpu_train_bench.py}
THREADS=${THREADS:-2}
STEPS=${STEPS:-10}
[ -x build/smedjan ] || make
[ -f "$REF" ] || { echo "PyTorch reference script not found: $REF (set PYTORCH_BENCH)" >&2; exit 1; }
[ $# -gt 0 ] || set -- tiny small medium
printf '%-8s %-6s %12s %12s %8s\n' preset BxT smedjan pytorch ratio
for p in "$@"; do
    case $p in medium) B=4 ;; *) B=8 ;; esac
    T=256
    ours=$(build/smedjan bench --size "$p" --batch-size $B --seq-len $T --steps "$STEPS" --warmup 2 \
           --threads "$THREADS" --vocab-size 8192 --decode-tokens 32 2>/dev/null | grep '^{' |
           sed 's/.*"train_tok_s":\([0-9.]*\).*/\1/')
    theirs=$("$PY" "$REF" "$p" $B $T "$THREADS" "$STEPS" 2>/dev/null | sed 's/.*"tok_s": \([0-9.]*\).*/\1/')
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.2f", a/b}')
    printf '%-8s %-6s %12.0f %12.0f %7sx\n' "$p" "${B}x$T" "$ours" "$theirs" "$ratio"
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, threads=$THREADS"
