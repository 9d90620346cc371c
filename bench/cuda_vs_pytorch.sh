#!/bin/sh
# bench/cuda_vs_pytorch.sh — smedjan's CUDA backend against PyTorch on the
# same GPU, in one run: the PyTorch reference's Llama 110M (vocab 32768,
# d768, 12 layers, 12 heads, SwiGLU 2048, tied; --ffn-mult 2.6667 gives our
# model the same 2048) at sequence length T.
#
# Needs a CUDA build (make CUDA=1) and the PyTorch reference scripts copied
# into bench/pytorch/ (git-ignored; from the shared bench/pytorch folder).
# Prints smedjan's JSON line, PyTorch's (torch.compile, bf16 autocast, fused
# AdamW), the ratio of training tokens/s and both peak memories.
# Env: T (sequence, default 1024), B (smedjan batch, default 32), TB
# (PyTorch batch, default B), STEPS (smedjan timed steps, default 5),
# SMJ_FLAGS (extra smedjan flags, default --bf16-matmul; e.g. add
# --fused-ce), PT_STEPS (PyTorch timed steps, default 10).
set -eu
T=${T:-1024}
B=${B:-32}
TB=${TB:-$B}
STEPS=${STEPS:-5}
FLAGS=${SMJ_FLAGS:---bf16-matmul}
BIN=${SMJ_BIN:-build-cuda/smedjan}
OUT=${OUT:-/tmp}
# shellcheck disable=SC2086
smj=$("$BIN" bench --device cuda --size custom --dim 768 --layers 12 --heads 12 --ffn-mult 2.6667 \
      --vocab-size 32768 --seq-len "$T" --batch-size "$B" --steps "$STEPS" --warmup 2 --decode-tokens 0 $FLAGS \
      2>"$OUT/smedjan_bench.txt" | tail -1)
cat "$OUT/smedjan_bench.txt"
echo "smedjan ($FLAGS): $smj"
( cd bench/pytorch && WARM=${WARM:-5} STEPS=${PT_STEPS:-10} PYTHONUNBUFFERED=1 OUT=$OUT \
    python3 train_bench.py llama "$T" "c:$TB" ) >"$OUT/pytorch_bench.txt" 2>&1 || true
pt=$(grep -o '{.*}' "$OUT/pytorch_bench.txt" | tail -1)
echo "pytorch: ${pt:-<no result; see $OUT/pytorch_bench.txt>}"
python3 - "$smj" "$pt" "$FLAGS" <<'PY'
import json, sys
try:
    s = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
    print(f"T={s['T']}: train tokens/s smedjan {s['train_tok_s']:.0f} ({sys.argv[3]}, B={s['B']}, "
          f"MFU {100 * s['mfu']:.1f}%) vs pytorch {p['tok_s_median']:.0f} ({p['mode']}, B={p['B']}, "
          f"MFU {100 * p['mfu_989']:.1f}%): smedjan/pytorch = {s['train_tok_s'] / p['tok_s_median']:.3f}; "
          f"device memory smedjan {s['device_mem_mb'] / 1024:.2f} GiB (in use, this run) vs pytorch "
          f"{p['peak_alloc_GiB']:.2f} GiB allocated peak / {p['peak_reserved_GiB']:.2f} GiB reserved")
except Exception as e:
    print("ratio unavailable:", e)
PY
