#!/bin/sh
# bench/ab.sh — two builds of smedjan (or one build under two environments)
# measured in alternation on the same machine in one run: `smedjan bench`
# with the same flags, A then B, ROUNDS times, so that drift of the machine
# (clocks, temperature, other tenants) falls on both. Prints each run's
# train tok/s and device memory, the per-op rows matching PROFILE (a grep -E
# pattern over the per-op table, with --profile-steps > 0), then the median
# of each side and B / A.
#
#   A=old/smedjan B=build-cuda/smedjan sh bench/ab.sh -- --device cuda \
#     --size custom --dim 768 --layers 12 --heads 12 --ffn-mult 2.6667 \
#     --vocab-size 32768 --bf16-matmul --fp16-activations --seq-len 1024 \
#     --batch-size 32 --steps 6 --warmup 2 --decode-tokens 0 --matmul-probe 0
#
# Env: A, B (binaries; B defaults to A), A_ENV, B_ENV (space-separated
# VAR=value settings for that side, e.g. B_ENV=SMJ_CUDA_XENT_FUSED=0),
# ROUNDS (default 2), PROFILE (default: no per-op rows). To measure an older
# commit, build it in a worktree beside this one (git worktree add --detach
# /tmp/old REV; make -C /tmp/old CUDA=1) and pass A=/tmp/old/build-cuda/smedjan;
# on a machine whose copy of the tree has no git history, take the commit
# along as an archive (git archive REV -o base.tar; there: mkdir /tmp/old &&
# tar -xf base.tar -C /tmp/old && make -C /tmp/old CUDA=1 build-cuda/smedjan).
set -eu
A=${A:?set A to the first smedjan binary}
B=${B:-$A}
ROUNDS=${ROUNDS:-2}
[ "${1:-}" = "--" ] && shift
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "ab.sh: $bin: not an executable" >&2; exit 2; }
done
case "$ROUNDS" in ''|*[!0-9]*|0) echo "ab.sh: ROUNDS=$ROUNDS: want a positive integer" >&2; exit 2 ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
: >"$tmp/A"
: >"$tmp/B"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for side in A B; do
    if [ "$side" = A ]; then bin=$A; envs=${A_ENV:-}; else bin=$B; envs=${B_ENV:-}; fi
    # shellcheck disable=SC2086
    if ! env $envs "$bin" bench "$@" >"$tmp/out" 2>"$tmp/err"; then
      echo "ab.sh: $side ($bin) failed:" >&2
      tail -5 "$tmp/err" >&2
      exit 1
    fi
    tok=$(sed -n 's/.*"train_tok_s":\([0-9.]*\).*/\1/p' "$tmp/out")
    [ -n "$tok" ] || { echo "ab.sh: $side ($bin): no train_tok_s in its output" >&2; exit 1; }
    echo "$tok" >>"$tmp/$side"
    mem=$(sed -n 's/.* \([0-9.]* GiB\) of it this run.s.*/\1/p' "$tmp/err")
    printf 'round %d %s %s%s: train %.0f tok/s%s\n' "$r" "$side" "$bin" "${envs:+ ($envs)}" "$tok" "${mem:+, $mem}"
    if [ -n "${PROFILE:-}" ]; then grep -E "$PROFILE" "$tmp/err" | sed 's/^/    /' || true; fi
  done
  r=$((r + 1))
done
med() { sort -g "$1" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ma=$(med "$tmp/A")
mb=$(med "$tmp/B")
awk -v a="$ma" -v b="$mb" -v n="$ROUNDS" \
  'BEGIN {printf "median of %d: A %.0f tok/s, B %.0f tok/s: B/A = %.4f\n", n, a, b, b / a}'
