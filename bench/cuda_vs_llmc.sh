#!/bin/sh
# cuda_vs_llmc.sh — smedjan against karpathy/llm.c (`train_gpt2cu`) training
# GPT-2 124M (d12: 12 layers, 768 wide, 12 heads, vocabulary 50,257) on the
# same GPU in one run: tokens a second, device memory, and their ratio.
#
#   LLMC=/path/to/llm.c/train_gpt2cu sh bench/cuda_vs_llmc.sh
#
# env: T (default 1024; at most 1,024, GPT-2's positions), B (default 32), STEPS (llm.c's steps, default 40;
#      its figure is the median step time over the steps after the first
#      ten), SMJ_FLAGS (smedjan's precision flags, default
#      "--bf16-matmul --fp16-activations --fused-ce"), LLMC_FLAGS (more
#      flags for llm.c, e.g. "-r 0": no GELU recomputation), SMJ (the
#      smedjan binary, default build-cuda/smedjan).
# llm.c is never built here: build it from its own checkout as its README
# says (`make train_gpt2cu USE_CUDNN=1` for cuDNN's flash attention, the
# configuration of the issue's 491k tok/s on an H100). Both train from
# random weights on random tokens (llm.c's data format: a header of 256
# int32, 20240520, 1 and the token count, then uint16 tokens, written here
# by python3 into a temporary directory); llm.c's model is its d12 from
# scratch (-e d12: vocabulary padded to 50,304). llm.c's memory is what it
# reports in use after allocating (weights, gradients, AdamW, activations);
# smedjan's is the peak its bench reports.
set -eu
cd "$(dirname "$0")/.."
LLMC=${LLMC:?set LLMC to a built llm.c train_gpt2cu}
SMJ=${SMJ:-build-cuda/smedjan}
T=${T:-1024}
B=${B:-32}
STEPS=${STEPS:-40}
SMJ_FLAGS=${SMJ_FLAGS:---bf16-matmul --fp16-activations --fused-ce}
[ -x "$LLMC" ] || { echo "cuda_vs_llmc: $LLMC: not an executable" >&2; exit 2; }
[ -x "$SMJ" ] || { echo "cuda_vs_llmc: $SMJ: not built (make CUDA=1)" >&2; exit 2; }
case "$STEPS" in ''|*[!0-9]*) echo "cuda_vs_llmc: STEPS=$STEPS: want an integer over 10" >&2; exit 2 ;; esac
[ "$STEPS" -gt 10 ] || { echo "cuda_vs_llmc: STEPS=$STEPS: want an integer over 10" >&2; exit 2; }
case "$T$B" in *[!0-9]*) echo "cuda_vs_llmc: T=$T B=$B: want integers" >&2; exit 2 ;; esac
[ "$T" -ge 1 ] && [ "$T" -le 1024 ] || { echo "cuda_vs_llmc: T=$T: llm.c's d12 has 1,024 positions (1..1024)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
python3 - "$tmp" "$B" "$T" "$STEPS" <<'EOF'
import os, struct, sys, random
d, B, T, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(1)
for name, n in (("train.bin", B * T * (steps + 2) + 1), ("val.bin", B * T * 2 + 1)):
    with open(os.path.join(d, name), "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack("<%dH" % n, *(rng.randrange(50257) for _ in range(n))))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader
echo "== smedjan ($SMJ_FLAGS), GPT-2 124M, T=$T B=$B"
# shellcheck disable=SC2086
"$SMJ" bench --device cuda --arch gpt2 --size custom --dim 768 --layers 12 --heads 12 --vocab-size 50257 \
    --seq-len "$T" --batch-size "$B" --steps 10 --warmup 3 --decode-tokens 0 --matmul-probe 0 $SMJ_FLAGS \
    >"$tmp/smj.out" 2>"$tmp/smj.err" || { tail -5 "$tmp/smj.err" >&2; exit 1; }
grep -E '^  (train|memory)' "$tmp/smj.err" || true
smj=$(sed -n 's/.*"train_tok_s":\([0-9.]*\).*/\1/p' "$tmp/smj.out")
smem=$(sed -n 's/.* \([0-9.]*\) GiB of it this run.s.*/\1/p' "$tmp/smj.err")
echo "== llm.c ($LLMC -e d12 -b $B -t $T -x $STEPS ${LLMC_FLAGS:-})"
# shellcheck disable=SC2086
(cd "$tmp" && "$LLMC" -i train.bin -j val.bin -e d12 -b "$B" -t "$T" -x "$STEPS" -v 100000 -m 1 -s 0 -n 0 \
    ${LLMC_FLAGS:-}) >"$tmp/llmc.out" 2>&1 || { tail -15 "$tmp/llmc.out" >&2; exit 1; }
grep -E 'device memory usage|cuDNN|step +[0-9]+/' "$tmp/llmc.out" | sed -n '1,4p;$p'
lms=$(awk '/^step +[0-9]+\// { split($2, s, "/"); if (s[1] + 0 > 10) for (i = 1; i < NF; i++) if ($(i + 1) == "ms") print $i }' \
    "$tmp/llmc.out" | sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
lmem=$(sed -n 's/^device memory usage: \([0-9]*\) MiB.*/\1/p' "$tmp/llmc.out" | tail -1)
[ -n "$smj" ] && [ -n "$lms" ] || { echo "cuda_vs_llmc: a figure is missing (smedjan '$smj', llm.c step '$lms' ms)" >&2; exit 1; }
awk -v s="$smj" -v ms="$lms" -v b="$B" -v t="$T" -v sm="${smem:-?}" -v lm="${lmem:-?}" 'BEGIN {
    l = b * t / (ms / 1000)
    printf "smedjan %.0f tok/s (%s GiB) | llm.c %.0f tok/s (median step %.2f ms; %s MiB in use) | smedjan / llm.c = %.3f\n",
        s, sm, l, ms, lm, s / l }'
