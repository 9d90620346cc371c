#!/bin/sh
# gemm_bench.sh — builds bench/gemm_bench.c against build/libsmedjan.a and runs
# it: GFLOP/s of smj_sgemm and, when libopenblas.so.0 is installed (it is
# dlopen'ed at run time, no link dependency), of OpenBLAS's cblas_sgemm on the
# same shapes, with the ratio ours/OpenBLAS.
#
#   sh bench/gemm_bench.sh [nt [tiny|small|medium|decode|square|all]]
#   sh bench/gemm_bench.sh nt M N K tA tB acc          (one shape)
#
# Run `make` first (the library must be built with the default, non-OpenBLAS
# gemm). Extra compiler flags for the bench can be passed in CFLAGS_EXTRA.
set -e
cd "$(dirname "$0")/.."
LIB=build/libsmedjan.a
[ -f "$LIB" ] || { echo "gemm_bench: $LIB missing, run make first" >&2; exit 1; }
OUT=build/bench/gemm_bench
mkdir -p build/bench
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp $CFLAGS_EXTRA \
    bench/gemm_bench.c "$LIB" -o "$OUT" -fopenmp -lm -ldl


if [ $# -ge 7 ]; then exec "$OUT" "$@"; fi
exec "$OUT" "${1:-2}" "${2:-all}"
