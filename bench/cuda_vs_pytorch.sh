#!/bin/sh
# bench/cuda_vs_pytorch.sh — smedjan's CUDA backend against PyTorch on the
# same GPU, Llama 110M-like (d768, 12 layers, 12 heads, vocab 32768), T=1024.
#
# Needs a CUDA build (make CUDA=1) and the PyTorch reference scripts copied
# into bench/pytorch/ (git-ignored; from the shared bench/pytorch folder).
# Prints smedjan's JSON lines, PyTorch's (torch.compile, bf16 autocast), and
# the ratio of training tokens/s. Env: B (smedjan batch, default 32),
# TB (PyTorch batch, default 32), STEPS (timed steps, default 5),
# SMJ_CUDA_MATMUL (smedjan's product precision, default bf16; fp32 is the
# exact mode, docs/CUDA.md).
set -eu
B=${B:-32}
PREC=${SMJ_CUDA_MATMUL:-bf16}
TB=${TB:-32}
STEPS=${STEPS:-5}
BIN=${SMJ_BIN:-build-cuda/smedjan}
OUT=${OUT:-/tmp}
smj=$(SMJ_CUDA_MATMUL=$PREC "$BIN" bench --device cuda --size custom --dim 768 --layers 12 --heads 12 --vocab-size 32768 \
      --seq-len 1024 --batch-size "$B" --steps "$STEPS" --warmup 2 --decode-tokens 0 2>/dev/null | tail -1)
echo "smedjan cuda ($PREC products): $smj"
( cd bench/pytorch && WARM=${WARM:-5} STEPS=${PT_STEPS:-10} PYTHONUNBUFFERED=1 OUT=$OUT \
    python3 train_bench.py llama 1024 "c:$TB" ) >"$OUT/pytorch_bench.txt" 2>&1 || true
pt=$(grep -o '{.*}' "$OUT/pytorch_bench.txt" | tail -1)
echo "pytorch: ${pt:-<no result; see $OUT/pytorch_bench.txt>}"
tail -n 5 "$OUT/pytorch_bench.txt"
python3 - "$smj" "$pt" "$PREC" <<'PY'
import json, sys
try:
    s = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
    print(f"train tokens/s: smedjan {s['train_tok_s']:.0f} ({sys.argv[3]} products, B={s['B']}) vs pytorch {p['tok_s_median']:.0f} "
          f"({p['mode']}, bf16 autocast, B={p['B']}): smedjan/pytorch = {s['train_tok_s'] / p['tok_s_median']:.3f}")
except Exception as e:
    print("ratio unavailable:", e)
PY
