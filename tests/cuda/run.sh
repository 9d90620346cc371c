#!/bin/sh
# tests/cuda/run.sh — everything the CUDA backend needs checked on a GPU
# machine, in one command (run from the repository root):
#
#   OUT=/some/dir sh tests/cuda/run.sh [quick]
#
# builds `make CUDA=1` (build-cuda/) and the CPU build (build/), runs every
# CUDA test with SMJ_CUDA_REQUIRE=1 (a missing GPU fails instead of
# skipping; the op checker eight times: default, fused attention kernels,
# bf16 products with flash attention, with few kept copies, with the
# mma.sync flash kernels a Hopper GPU does not run by default, with cp.async
# instead of TMA, with Hopper's 64-key attention forward, with cublasGemmEx
# instead of cuBLASLt's timed choice; the decoding
# and bf16-copy checks in fp32 and bf16 modes; finite differences of every
# backward op and of whole models on the GPU), the parity fixtures once more with
# SMJ_CUDA_SYNC=1 — these correctness checks run side by side, each with its
# own log, as they are CPU-bound on the reference backend and measure no
# time or device memory — the memory options' equality tests on the GPU, the CPU
# test programs (not the fuzzers; skipped with `quick`), the PyTorch
# reference's Llama 110M benchmarked on CUDA (fp32; bf16 at T=1024 plain,
# --fused-ce, --gradient-checkpointing, --fp16-activations, the last three
# together, --fused-ce with --fp16-activations; T=4096), each with MFU,
# device memory and per-op shares, decoding 1024 tokens (with and without
# CUDA graphs; greedy and sampled), GPT-2 124M decoding 256 tokens (fp32
# and with bf16 products), and,
# when bench/pytorch/ holds the PyTorch reference
# scripts, PyTorch's GPT-2 decoding (bench/pytorch/decode_bench.py) and (not
# with `quick`) bench/cuda_vs_pytorch.sh at T=1024 B=32 and T=4096 B=8, and
# GPT-2 124M at T=1024 B=32. Everything goes to
# $OUT/LAST_RUN.md (device, date, commit from $SMJ_COMMIT, each step's
# output); a summary table is printed last. Exit status: 1 if any step failed.
set -u
OUT=${OUT:-/tmp/smj-cuda-out}
mkdir -p "$OUT"
LOG=$OUT/LAST_RUN.md
J=$(nproc 2>/dev/null || echo 4)
MODE=${1:-full}
SUMMARY=$OUT/.summary
: >"$SUMMARY"
fails=0

{
  echo "# CUDA backend: device run"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: ${SMJ_COMMIT:-unknown}"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  echo "- nvcc: $(${CUDA_HOME:-/usr/local/cuda}/bin/nvcc --version 2>&1 | tail -1)"
  echo "- host: $(nproc) cores, $(uname -m)"
} >"$LOG"

# record NAME RC SECONDS: a step's pass/fail in the summary
record() {
  if [ "$2" -eq 0 ]; then r=PASS; else r="FAIL($2)"; fails=$((fails+1)); fi
  printf '%-34s %-9s %5ss\n' "$1" "$r" "$3" >>"$SUMMARY"
  echo "[$r] $1 ($3s)"
}

# step NAME TIMEOUT CMD...: runs CMD, logs its output, records pass/fail.
step() {
  name=$1; lim=$2; shift 2
  printf '\n## %s\n\n```\n$ %s\n' "$name" "$*" >>"$LOG"
  t0=$(date +%s)
  timeout "$lim" sh -c "$*" >>"$LOG" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  printf '```\n\nexit %s, %ss\n' "$rc" "$dt" >>"$LOG"
  record "$name" "$rc" "$dt"
}

# pstep NAME TIMEOUT CMD...: like step, but queued; pflush runs the queued
# steps side by side and then logs them in order.
NQ=0
pstep() {
  NQ=$((NQ+1)); q=$OUT/.q$NQ
  printf '%s\n' "$1" >"$q.name"; printf '%s\n' "$2" >"$q.lim"; shift 2; printf '%s\n' "$*" >"$q.cmd"
}
pflush() {
  i=1
  while [ "$i" -le "$NQ" ]; do
    q=$OUT/.q$i
    ( t0=$(date +%s); timeout "$(cat "$q.lim")" sh -c "$(cat "$q.cmd")" >"$q.out" 2>&1; echo $? >"$q.rc"
      echo $(( $(date +%s) - t0 )) >"$q.dt" ) &
    i=$((i+1))
  done
  wait
  i=1
  while [ "$i" -le "$NQ" ]; do
    q=$OUT/.q$i; name=$(cat "$q.name"); rc=$(cat "$q.rc"); dt=$(cat "$q.dt")
    printf '\n## %s\n\n```\n$ %s\n' "$name" "$(cat "$q.cmd")" >>"$LOG"
    cat "$q.out" >>"$LOG"
    printf '```\n\nexit %s, %ss (beside the other %s checks of its group)\n' "$rc" "$dt" "$((NQ-1))" >>"$LOG"
    record "$name" "$rc" "$dt"
    rm -f "$q.name" "$q.lim" "$q.cmd" "$q.out" "$q.rc" "$q.dt"
    i=$((i+1))
  done
  NQ=0
}

step "build: make CUDA=1" 400 "make CUDA=1 -j$J >\$OUT/build-cuda.log 2>&1; rc=\$?; grep -v '^  [A-Z]* ' \$OUT/build-cuda.log; exit \$rc"
step "build: make (CPU)" 300 "make -j$J 2>&1 | grep -v '^  [A-Z]* '; make -j$J \$(ls tests/test_*.c | sed 's|tests/\\(.*\\)\\.c|build/tests/\\1|') >/dev/null && echo built the CPU test programs"
export SMJ_CUDA_REQUIRE=1
pstep "test_cuda_ops" 400 "build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (SMJ_CUDA_ATTN=fused)" 400 "SMJ_CUDA_ATTN=fused build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (SMJ_CUDA_MATMUL=bf16)" 400 "SMJ_CUDA_MATMUL=bf16 build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (bf16, SMJ_CUDA_BF16_KEEP=3000)" 400 "SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_BF16_KEEP=3000 build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (bf16, SMJ_CUDA_ATTN=mma)" 400 "SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_ATTN=mma build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (bf16, SMJ_CUDA_TMA=0)" 400 "SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_TMA=0 build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (bf16, SMJ_CUDA_FWD_TILE=64)" 400 "SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_FWD_TILE=64 build-cuda/tests/test_cuda_ops"
pstep "test_cuda_ops (bf16, SMJ_CUDA_GEMM=ex)" 400 "SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_GEMM=ex build-cuda/tests/test_cuda_ops"
pstep "test_cuda_decode (fp32; bf16)" 300 "build-cuda/tests/test_cuda_decode && SMJ_CUDA_MATMUL=bf16 build-cuda/tests/test_cuda_decode"
pstep "test_cuda_bf16 (bf16; SMJ_CUDA_BF16_KEEP=3000; fp32)" 300 "SMJ_CUDA_MATMUL=bf16 build-cuda/tests/test_cuda_bf16 && SMJ_CUDA_MATMUL=bf16 SMJ_CUDA_BF16_KEEP=3000 build-cuda/tests/test_cuda_bf16 && build-cuda/tests/test_cuda_bf16"
pstep "test_cuda_grad (finite differences on the GPU, fp32)" 300 "build-cuda/tests/test_cuda_grad"
pstep "test_parity (ref, cpu, cuda)" 200 "SMJ_CUDA_REQUIRE=1 build-cuda/tests/test_parity"
pstep "test_parity (SMJ_CUDA_SYNC=1)" 200 "SMJ_CUDA_REQUIRE=1 SMJ_CUDA_SYNC=1 build-cuda/tests/test_parity"
pstep "test_cuda_model" 300 "build-cuda/tests/test_cuda_model"
pflush
step "test_memory (cpu, ref, cuda)" 300 "build-cuda/tests/test_memory"
step "test_probe (bench's measuring API)" 120 "build-cuda/tests/test_probe"
step "training: cpu vs cuda, fp32 and bf16" 300 "sh tests/cuda/train_cpu_vs_cuda.sh"
step "cli: --device cuda / cpu" 60 "build-cuda/smedjan bench --device cuda --size tiny --batch-size 2 --seq-len 64 --steps 2 --warmup 1 --decode-tokens 8 && build-cuda/smedjan bench --device cpu --size tiny --batch-size 2 --seq-len 64 --steps 1 --warmup 0 --decode-tokens 4 && { build/smedjan bench --device cuda --size tiny; test \$? -eq 1; }"
step "cli: bad SMJ_CUDA_* values refused" 60 "for v in SMJ_CUDA_GEMM SMJ_CUDA_ATTN SMJ_CUDA_MATMUL SMJ_CUDA_DEVICE SMJ_CUDA_FWD_TILE SMJ_CUDA_OWN_GEMM SMJ_CUDA_PROFILE_SHAPES; do out=\$(env \$v=99bogus build-cuda/smedjan bench --device cuda --size tiny --steps 1 --warmup 0 --decode-tokens 0 2>&1); rc=\$?; echo \"\$v=99bogus: exit \$rc: \$(echo \"\$out\" | tail -1)\"; [ \$rc -ne 0 ] && echo \"\$out\" | grep -q \"\$v\" || exit 1; done"
step "cli: SMJ_CUDA_PROFILE_SHAPES=1 names products by shape" 60 "out=\$(SMJ_CUDA_PROFILE_SHAPES=1 build-cuda/smedjan bench --device cuda --size tiny --batch-size 2 --seq-len 64 --steps 1 --warmup 0 --profile-steps 1 --decode-tokens 0 --matmul-probe 0 2>&1) || exit 1; echo \"\$out\" | grep -E 'matmul|calls'; echo \"\$out\" | grep -qE 'matmul NT \\(fwd\\) 128x[0-9]+x128 ' && ! echo \"\$out\" | grep -qE 'matmul (NT|NN|TN) \\([a-zA-Z]+\\) +[0-9.]+%'"
# the PyTorch reference's Llama 110M (SwiGLU 2048 through --ffn-mult 2.6667)
BENCH="--size custom --dim 768 --layers 12 --heads 12 --ffn-mult 2.6667 --vocab-size 32768 --steps 5 --warmup 2"
step "bench fp32 T=1024 B=16" 300 "build-cuda/smedjan bench --device cuda $BENCH --seq-len 1024 --batch-size 16 --decode-tokens 64"
step "bench bf16 T=1024 B=32" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --seq-len 1024 --batch-size 32 --decode-tokens 64"
step "bench bf16 T=1024 B=32 --fused-ce" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --fused-ce --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0"
step "bench bf16 T=1024 B=32 --gradient-checkpointing" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --gradient-checkpointing --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0"
step "bench bf16 T=1024 B=32 --fp16-activations" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --fp16-activations --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0"
step "bench bf16 T=1024 B=32 ckpt + fused-ce (+ fp16)" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --gradient-checkpointing --fused-ce --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0 --profile-steps 0 && build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --gradient-checkpointing --fused-ce --fp16-activations --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0 --profile-steps 0"
step "bench bf16 T=1024 B=32 --fused-ce --fp16-activations" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --fused-ce --fp16-activations --seq-len 1024 --batch-size 32 --decode-tokens 0 --matmul-probe 0 --profile-steps 0"
step "decode 1024 tokens, batch 1 (fp32; bf16 weights; fp32 without CUDA graphs)" 300 "build-cuda/smedjan bench --device cuda $BENCH --seq-len 1024 --batch-size 1 --steps 1 --warmup 0 --profile-steps 0 --matmul-probe 0 --decode-tokens 1024 && build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --seq-len 1024 --batch-size 1 --steps 1 --warmup 0 --profile-steps 0 --matmul-probe 0 --decode-tokens 1024 2>&1 | grep -E '^  (decode|prompt)' && SMJ_CUDA_GRAPHS=0 build-cuda/smedjan bench --device cuda $BENCH --seq-len 1024 --batch-size 1 --steps 1 --warmup 0 --profile-steps 0 --matmul-probe 0 --decode-tokens 1024 2>&1 | grep -E '^  (decode|prompt)'"
G2DEC="--arch gpt2 --size custom --dim 768 --layers 12 --heads 12 --vocab-size 50257 --seq-len 1024 --batch-size 1 --steps 1 --warmup 0 --profile-steps 0 --matmul-probe 0 --decode-tokens 256"
step "decode GPT-2 124M, 256 tokens (fp32; bf16 products; PyTorch's decode_bench.py runs the same model in bf16)" 120 "build-cuda/smedjan bench --device cuda $G2DEC 2>&1 | grep -E '^  (decode|prompt)' && build-cuda/smedjan bench --device cuda $G2DEC --bf16-matmul 2>&1 | grep -E '^  (decode|prompt)'"
step "bench bf16 T=4096 B=8" 300 "build-cuda/smedjan bench --device cuda $BENCH --bf16-matmul --seq-len 4096 --batch-size 8 --decode-tokens 0 --matmul-probe 0"
if [ -f bench/pytorch/train_bench.py ] && [ "$MODE" != quick ]; then
  step "vs PyTorch T=1024 B=32 (bench/cuda_vs_pytorch.sh)" 400 "T=1024 B=32 sh bench/cuda_vs_pytorch.sh"
  step "vs PyTorch T=4096 B=8 (bench/cuda_vs_pytorch.sh)" 400 "T=4096 B=8 sh bench/cuda_vs_pytorch.sh"
  step "vs PyTorch GPT-2 124M T=1024 B=32 (bench/cuda_vs_pytorch.sh)" 400 "MODEL=gpt2 SMJ_FLAGS='--bf16-matmul;--bf16-matmul --fp16-activations' sh bench/cuda_vs_pytorch.sh"
fi
if [ -f bench/pytorch/decode_bench.py ]; then
  step "PyTorch decode reference (GPT-2 124M bf16, batch 1)" 300 "cd bench/pytorch && OUT=\$OUT python3 decode_bench.py 2>&1 | tail -5"
fi
if [ "$MODE" != quick ]; then
  step "CPU test programs (build/)" ${CPU_TEST_TIMEOUT:-300} "sh tests/run_all.sh \$(ls build/tests/test_* | grep -v '[.]o\$')"
fi

{
  printf '\n## Summary\n\n```\n'
  cat "$SUMMARY"
  printf '```\n'
} >>"$LOG"
echo "---- summary ($fails failed) ----"
cat "$SUMMARY"
rm -f "$SUMMARY"
[ "$fails" -eq 0 ]
