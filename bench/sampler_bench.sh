#!/bin/sh
# sampler_bench.sh — smj_sample (generate's default sampling) against the
# full-sort definition, per token on this CPU: bench/sampler_bench.c.
# usage: bench/sampler_bench.sh [VOCAB] [REPS]   (after make)
set -e
cd "$(dirname "$0")/.."
lib=build/libsmedjan.a
[ -f "$lib" ] || { echo "sampler_bench: $lib missing; run make first" >&2; exit 1; }
mkdir -p build/bench
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Iinclude bench/sampler_bench.c "$lib" -fopenmp -lm -lpthread \
  -o build/bench/sampler_bench
build/bench/sampler_bench "${1:-32768}" "${2:-200}"
