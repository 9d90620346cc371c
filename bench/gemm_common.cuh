/* bench/gemm_common.cuh — what the standalone product benchmarks
 * (gemm_shapes.cu, gemm_step.cu) share: operands filled with hashed bf16
 * values in [-1, 1) (zeros would let the tensor cores idle at higher
 * clocks) and the median of `reps` timed runs after `warm` warm-ups. */
#ifndef SMJ_BENCH_GEMM_COMMON_CUH
#define SMJ_BENCH_GEMM_COMMON_CUH
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdlib.h>

__global__ void k_fill(__nv_bfloat16 *p, size_t n, unsigned seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
        p[i] = __float2bfloat16((float)(x & 0xffff) / 32768.0f - 1.0f);
    }
}
static int cmpf(const void *a, const void *b) { float x = *(const float *)a, y = *(const float *)b; return (x > y) - (x < y); }
/* ms: the median of reps runs of f (at most 64) after warm warm-ups, by events on the default stream */
static float time_median(void (*f)(void), int warm, int reps) {
    cudaEvent_t s, e;
    cudaEventCreate(&s); cudaEventCreate(&e);
    float t[64];
    if (reps > 64) reps = 64;
    for (int i = 0; i < warm; i++) f();
    for (int i = 0; i < reps; i++) {
        cudaEventRecord(s); f(); cudaEventRecord(e); cudaEventSynchronize(e);
        cudaEventElapsedTime(&t[i], s, e);
    }
    cudaEventDestroy(s); cudaEventDestroy(e);
    qsort(t, (size_t)reps, sizeof(float), cmpf);
    return t[reps / 2];
}
#endif
