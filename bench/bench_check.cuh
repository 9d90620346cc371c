/* bench_check.cuh — CK(call): the standalone CUDA benchmarks' check (bench/
 * decode_bw.cu, launch_gap.cu, overlap.cu): a failed runtime call prints
 * where and why, and the program exits 1. Included by those files only; each
 * still builds with one nvcc command (the include is found beside it). */
#pragma once
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)
