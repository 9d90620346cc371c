/* overlap.cu — could a training step's weight-gradient products run beside
 * its memory-bound kernels? In a Llama 110M step on an H200 (T = 1024,
 * B = 32, ~50 ms) the dW products take ~10 ms of tensor-core time and sit
 * off the backward's critical path (nothing in the backward reads them),
 * while the norm, SwiGLU and cross-entropy backward kernels take ~5 ms of
 * memory bandwidth and almost no arithmetic. On one stream (smedjan's step
 * today, and PyTorch's) they run one after the other.
 *
 * Here: one dW-shaped product (cuBLASLt, bf16 in, fp32 out, TN 768 x 4096 x
 * 32768: gate|up's dW) and one memory-bound kernel shaped like rmsnorm_bwd
 * (reads x fp32 and dout bf16, adds into dres fp32: ~350 MB), timed alone,
 * one after the other on one stream, and on two streams at once (the
 * product on a low-priority stream, with cuBLASLt told to use fewer SMs:
 * CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET), each repeated R times between two
 * events. Prints us per pair and how much of the memory kernel's time the
 * overlap hid.
 *   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/ov bench/overlap.cu -lcublasLt && /tmp/ov
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_check.cuh"
#define CB(x)                                                                  \
    do {                                                                       \
        cublasStatus_t s_ = (x);                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                     \
            fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, (int)s_); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

enum { M = 768, N = 4096, K = 32768, R = 20 };
static const long long NE = 32768LL * 768; /* the memory kernel's rows x C */

/* dres += x * dout (fp32, bf16 -> fp32): 16 bytes of x, 8 of dout, 16 of dres read and written */
__global__ void k_mem(float4 *dres, const float4 *x, const uint2 *dout, long long n4) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (long long)gridDim.x * blockDim.x) {
        float4 a = x[i], r = dres[i];
        uint2 d = dout[i];
        r.x += a.x * __uint_as_float(d.x << 16);
        r.y += a.y * __uint_as_float(d.x & 0xffff0000u);
        r.z += a.z * __uint_as_float(d.y << 16);
        r.w += a.w * __uint_as_float(d.y & 0xffff0000u);
        dres[i] = r;
    }
}

struct Gemm {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    void *ws;
    size_t wsb;
    const void *A, *B;
    float *D;
};

/* the heuristic's first algorithm for D[M,N] (fp32) = A^T B, A [K,M], B [K,N] bf16, column-major;
 * sm: SM count target (0: all) */
static void gemm_init(Gemm &g, int sm) {
    CB(cublasLtMatmulDescCreate(&g.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CB(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CB(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (sm) CB(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sm, sizeof sm));
    CB(cublasLtMatrixLayoutCreate(&g.la, CUDA_R_16BF, K, M, K));
    CB(cublasLtMatrixLayoutCreate(&g.lb, CUDA_R_16BF, K, N, K));
    CB(cublasLtMatrixLayoutCreate(&g.ld, CUDA_R_32F, M, N, M));
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g.wsb, sizeof g.wsb));
    cublasLtMatmulHeuristicResult_t h;
    int n = 0;
    CB(cublasLtMatmulAlgoGetHeuristic(g.lt, g.op, g.la, g.lb, g.ld, g.ld, pref, 1, &h, &n));
    if (n < 1) { fprintf(stderr, "no algorithm\n"); exit(1); }
    g.algo = h.algo;
    cublasLtMatmulPreferenceDestroy(pref);
}

static void gemm_run(Gemm &g, cudaStream_t s) {
    const float one = 1.0f; /* accumulate, as the dW products do */
    CB(cublasLtMatmul(g.lt, g.op, &one, g.A, g.la, g.B, g.lb, &one, g.D, g.ld, g.D, g.ld, &g.algo, g.ws, g.wsb, s));
}

int main(void) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int nsm = prop.multiProcessorCount, plo, phi;
    CK(cudaDeviceGetStreamPriorityRange(&plo, &phi));
    cudaStream_t s0, s1;
    CK(cudaStreamCreateWithPriority(&s0, cudaStreamNonBlocking, phi)); /* the step's: first pick of SMs */
    CK(cudaStreamCreateWithPriority(&s1, cudaStreamNonBlocking, plo)); /* the side stream's */
    cudaEvent_t e0, e1, fork, join;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    void *A, *B, *D, *x, *dout, *dres;
    CK(cudaMalloc(&A, (size_t)K * M * 2));
    CK(cudaMalloc(&B, (size_t)K * N * 2));
    CK(cudaMalloc(&D, (size_t)M * N * 4));
    CK(cudaMalloc(&x, NE * 4));
    CK(cudaMalloc(&dout, NE * 2));
    CK(cudaMalloc(&dres, NE * 4));
    CK(cudaMemset(A, 0, (size_t)K * M * 2));
    CK(cudaMemset(B, 0, (size_t)K * N * 2));
    CK(cudaMemset(D, 0, (size_t)M * N * 4));
    CK(cudaMemset(x, 0, NE * 4));
    CK(cudaMemset(dout, 0, NE * 2));
    CK(cudaMemset(dres, 0, NE * 4));
    cublasLtHandle_t lt;
    CB(cublasLtCreate(&lt));
    size_t wsb = 32u << 20;
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    const int mem_grid = nsm * 8;
    auto mem = [&](cudaStream_t s) {
        k_mem<<<mem_grid, 256, 0, s>>>((float4 *)dres, (const float4 *)x, (const uint2 *)dout, NE / 4);
    };
    auto timed = [&](const char *what, auto body) {
        for (int w = 0; w < 3; w++) body();
        CK(cudaEventRecord(e0, s0));
        for (int r = 0; r < R; r++) body();
        CK(cudaEventRecord(e1, s0));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        double us = 1000.0 * ms / R;
        printf("%-58s %8.1f us\n", what, us);
        return us;
    };
    printf("%s, %d SMs; product TN %dx%dx%d bf16 -> fp32 (accumulate), memory kernel %.0f MB\n", prop.name, nsm,
           M, N, K, NE * 14.0 / 1e6);
    double tm = timed("memory kernel alone", [&] { mem(s0); });
    const int targets[] = {0, nsm - 16, nsm - 32, nsm - 48};
    for (int t : targets) {
        Gemm g = {lt, 0, 0, 0, 0, {}, ws, wsb, A, B, (float *)D};
        gemm_init(g, t);
        char name[96];
        snprintf(name, sizeof name, "product alone, SM target %d", t);
        double tg = timed(name, [&] { gemm_run(g, s0); });
        snprintf(name, sizeof name, "product then memory kernel, one stream (target %d)", t);
        double ts = timed(name, [&] { gemm_run(g, s0); mem(s0); });
        /* the product on the side stream, the memory kernel on the step's */
        auto two = [&](int mem_first) {
            CK(cudaEventRecord(fork, s0));
            CK(cudaStreamWaitEvent(s1, fork, 0));
            if (mem_first) mem(s0);
            gemm_run(g, s1);
            if (!mem_first) mem(s0);
            CK(cudaEventRecord(join, s1));
            CK(cudaStreamWaitEvent(s0, join, 0));
        };
        snprintf(name, sizeof name, "two streams, product launched first (target %d)", t);
        double tc = timed(name, [&] { two(0); });
        snprintf(name, sizeof name, "two streams, memory kernel launched first (target %d)", t);
        double tc2 = timed(name, [&] { two(1); });
        double best = tc < tc2 ? tc : tc2;
        printf("  -> serial %.1f, overlapped %.1f: %.1f us saved (%.0f%% of the memory kernel's %.1f; product alone "
               "%.1f)\n",
               ts, best, ts - best, 100.0 * (ts - best) / tm, tm, tg);
        cublasLtMatmulDescDestroy(g.op);
        cublasLtMatrixLayoutDestroy(g.la);
        cublasLtMatrixLayoutDestroy(g.lb);
        cublasLtMatrixLayoutDestroy(g.ld);
    }
    return 0;
}
