#!/bin/sh
# bench/cuda_vs_pytorch.sh — smedjan's CUDA backend against PyTorch on the
# same GPU, in one run: the PyTorch reference's Llama 110M (vocab 32768,
# d768, 12 layers, 12 heads, SwiGLU 2048, tied; --ffn-mult 2.6667 gives our
# model the same 2048) at sequence length T; with MODEL=gpt2 the GPT-2 124M
# of both (smedjan's with GPT-2's own vocabulary, 50,257, whose LM head it
# pads to 50,304 rows inside; PyTorch's reference model has 50,304 tokens).
#
# Needs a CUDA build (make CUDA=1) and the PyTorch reference scripts copied
# into bench/pytorch/ (git-ignored; from the shared bench/pytorch folder).
# Runs smedjan once per flag set, PyTorch once (torch.compile, bf16
# autocast, fused AdamW), then prints for each flag set the ratio of
# training tokens/s and both peak memories.
# Env: MODEL (llama or gpt2, default llama), T (sequence, default 1024), B (smedjan batch, default 32), TB
# (PyTorch batch, default B), STEPS (smedjan timed steps, default 5),
# SMJ_FLAGS (smedjan flag sets separated by ';', default
# "--bf16-matmul;--bf16-matmul --fp16-activations;--bf16-matmul --fp16-activations --fused-ce"),
# PT_STEPS (PyTorch timed steps, default 10).
set -eu
MODEL=${MODEL:-llama}
case "$MODEL" in
  llama) ARCH="--ffn-mult 2.6667 --vocab-size 32768" ;;
  gpt2) ARCH="--arch gpt2 --vocab-size 50257" ;;
  *) echo "cuda_vs_pytorch.sh: MODEL=$MODEL: want llama or gpt2" >&2; exit 2 ;;
esac
T=${T:-1024}
B=${B:-32}
TB=${TB:-$B}
STEPS=${STEPS:-5}
SETS=${SMJ_FLAGS:---bf16-matmul;--bf16-matmul --fp16-activations;--bf16-matmul --fp16-activations --fused-ce}
BIN=${SMJ_BIN:-build-cuda/smedjan}
OUT=${OUT:-/tmp}
: >"$OUT/smedjan_lines.txt"
IFS=';'
for FLAGS in $SETS; do
  IFS=' '
  # shellcheck disable=SC2086
  smj=$("$BIN" bench --device cuda --size custom --dim 768 --layers 12 --heads 12 $ARCH \
        --seq-len "$T" --batch-size "$B" --steps "$STEPS" --warmup 2 --decode-tokens 0 \
        --profile-steps 0 --matmul-probe 0 $FLAGS 2>"$OUT/smedjan_bench.txt" | tail -1)
  grep -E '^  (train|memory)' "$OUT/smedjan_bench.txt" || cat "$OUT/smedjan_bench.txt"
  echo "smedjan ($FLAGS): $smj"
  printf '%s\t%s\n' "$FLAGS" "$smj" >>"$OUT/smedjan_lines.txt"
  IFS=';'
done
unset IFS
( cd bench/pytorch && WARM=${WARM:-5} STEPS=${PT_STEPS:-10} PYTHONUNBUFFERED=1 OUT=$OUT \
    python3 train_bench.py "$MODEL" "$T" "c:$TB" ) >"$OUT/pytorch_bench.txt" 2>&1 || true
pt=$(grep -o '{.*}' "$OUT/pytorch_bench.txt" | tail -1)
echo "pytorch: ${pt:-<no result; see $OUT/pytorch_bench.txt>}"
python3 - "$OUT/smedjan_lines.txt" "$pt" <<'PY'
import json, sys
try:
    p = json.loads(sys.argv[2])
except Exception as e:
    sys.exit(f"ratio unavailable: no PyTorch result ({e})")
print(f"pytorch {p['tok_s_median']:.0f} tok/s ({p['mode']}, B={p['B']}, MFU {100 * p['mfu_989']:.1f}%), "
      f"{p['peak_alloc_GiB']:.2f} GiB allocated peak / {p['peak_reserved_GiB']:.2f} GiB reserved")
for line in open(sys.argv[1]):
    flags, js = line.rstrip("\n").split("\t", 1)
    try:
        s = json.loads(js)
        print(f"T={s['T']} B={s['B']} smedjan {flags}: {s['train_tok_s']:.0f} tok/s (MFU {100 * s['mfu']:.1f}%), "
              f"{s['device_mem_mb'] / 1024:.2f} GiB: smedjan/pytorch = {s['train_tok_s'] / p['tok_s_median']:.3f}, "
              f"memory {s['device_mem_mb'] / 1024 / p['peak_alloc_GiB']:.2f}x")
    except Exception as e:
        print(f"smedjan {flags}: ratio unavailable: {e}")
PY
