/* bench/gemm_own.cu — the CUDA backend's own Hopper product
 * (src/cuda/gemm_sm90.cu, compiled in here through its host entry
 * gemm_nt_sm90, tensor maps and launch as the backend makes them) against
 * cuBLASLt's fastest of its heuristic's first 8 candidates (the backend's
 * SMJ_CUDA_GEMM=tune choice), on the Llama 110M forward's shapes with bf16
 * outputs (B·T = 32768 rows; the LM head as a 4096-row chunk), the outputs
 * compared. Two operand fills: hashed uniform [-1, 1) (gemm_common.cuh, as
 * the other product benchmarks), and "model-like": the weight scaled to
 * 0.02 (a trained 110M model's weights are ~0.02-0.05), which draws less
 * power and lets the clocks rise as they do inside a training step. Each
 * time: the median of 20 runs of 8 back-to-back calls, after 40 such runs
 * (sustained: power-limited as in a step). Build and run on a Hopper GPU:
 *   nvcc -O3 -std=c++20 -gencode arch=compute_90a,code=sm_90a -DSMJ_HAVE_CUDA -DSMJ_SM90A -Iinclude \
 *     -o /tmp/gown bench/gemm_own.cu -lcublasLt && /tmp/gown */
#include "../src/cuda/gemm_sm90.cu"
#include <cublasLt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "gemm_common.cuh"

/* what gemm_sm90.cu asks of the backend, for a standalone build */
int smem_ok(smj_cuda *c, const void *fn, size_t bytes) {
    (void)c;
    return cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) == cudaSuccess;
}
void prof_phase(smj_cuda *c, const char *name) { (void)c; (void)name; }
void launched(smj_cuda *c, const char *file, int line) {
    (void)c;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) { fprintf(stderr, "%s:%d: %s\n", file, line, cudaGetErrorString(e)); exit(1); }
}

__global__ void k_scale(bf16 *p, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(__bfloat162float(p[i]) * s);
}

static smj_cuda *ctx;
static cublasLtHandle_t lth;
static void *ltws;
static cublasLtMatmulDesc_t lop;
static cublasLtMatrixLayout_t lla, llb, llc;
static cublasLtMatmulAlgo_t lalgo;
static int64_t gM, gN, gK;
static bf16 *gA, *gB, *gC1, *gC2;
/* REP calls a timed run: the host's work per call (gemm_nt_sm90 encodes its
 * three tensor maps) overlaps the GPU's after the first, as in a step */
enum { REP = 8 };
static void run_ours(void) {
    for (int r = 0; r < REP; r++)
        if (!gemm_nt_sm90(ctx, gM, gN, gK, gA, gK, gB, gK, gC1, gN)) { fprintf(stderr, "gemm_nt_sm90 declined\n"); exit(1); }
}
static void run_lt(void) {
    float one = 1.0f, zero = 0.0f;
    for (int r = 0; r < REP; r++)
        cublasLtMatmul(lth, lop, &one, gB, lla, gA, llb, &zero, gC2, llc, gC2, llc, &lalgo, ltws, 32u << 20, 0);
}
/* row-major C = A B^T as column-major C^T = B^T' A: the backend's call; the fastest of 8 candidates kept */
static void lt_choose(void) {
    cublasOperation_t tT = CUBLAS_OP_T, tN = CUBLAS_OP_N;
    cublasLtMatmulDescCreate(&lop, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatmulDescSetAttribute(lop, CUBLASLT_MATMUL_DESC_TRANSA, &tT, sizeof tT);
    cublasLtMatmulDescSetAttribute(lop, CUBLASLT_MATMUL_DESC_TRANSB, &tN, sizeof tN);
    cublasLtMatrixLayoutCreate(&lla, CUDA_R_16BF, gK, gN, gK);
    cublasLtMatrixLayoutCreate(&llb, CUDA_R_16BF, gK, gM, gK);
    cublasLtMatrixLayoutCreate(&llc, CUDA_R_16BF, gN, gM, gN);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    size_t ws = 32u << 20;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t res[8];
    int n = 0;
    cublasLtMatmulAlgoGetHeuristic(lth, lop, lla, llb, llc, llc, pref, 8, res, &n);
    float best = 1e30f;
    int bi = 0;
    for (int i = 0; i < n; i++) {
        lalgo = res[i].algo;
        const float t = time_median(run_lt, 5, 20);
        if (t < best) best = t, bi = i;
    }
    lalgo = res[bi].algo;
    cublasLtMatmulPreferenceDestroy(pref);
}
static void lt_free(void) {
    cublasLtMatmulDescDestroy(lop);
    cublasLtMatrixLayoutDestroy(lla);
    cublasLtMatrixLayoutDestroy(llb);
    cublasLtMatrixLayoutDestroy(llc);
}

int main(void) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
        fprintf(stderr, "gemm_own: needs a Hopper GPU\n");
        return 1;
    }
    ctx = (smj_cuda *)calloc(1, sizeof(smj_cuda));
    ctx->own_gemm = 2, ctx->cc = 90, ctx->tma = 1, ctx->n_sm = prop.multiProcessorCount;
    ctx->smem_optin = prop.sharedMemPerBlockOptin;
    printf("device: %s, %d SMs; each time a call's share of the median of 20 runs of %d calls, after 40 runs\n",
           prop.name, ctx->n_sm, (int)REP);
    cublasLtCreate(&lth);
    if (cudaMalloc(&ltws, 32u << 20) != cudaSuccess) return 1;
    static const int64_t S[][3] = {{32768, 2304, 768}, {32768, 4096, 768}, {32768, 768, 2048}, {32768, 768, 768},
                                   {4096, 32768, 768}};
    static const char *name[] = {"Q|K|V", "gate|up", "down", "Wo", "LM head chunk"};
    for (int fill = 0; fill < 2; fill++) {
        printf("== operands: %s\n", fill ? "A uniform [-1, 1), B (the weight) 0.02 x that" : "uniform [-1, 1)");
        for (int i = 0; i < 5; i++) {
            gM = S[i][0], gN = S[i][1], gK = S[i][2];
            size_t na = (size_t)(gM * gK), nb = (size_t)(gN * gK), nc = (size_t)(gM * gN);
            if (cudaMalloc(&gA, na * 2) || cudaMalloc(&gB, nb * 2) || cudaMalloc(&gC1, nc * 2) || cudaMalloc(&gC2, nc * 2))
                return 1;
            k_fill<<<1024, 256>>>(gA, na, 1u + i);
            k_fill<<<1024, 256>>>(gB, nb, 77u + i);
            if (fill) k_scale<<<1024, 256>>>(gB, nb, 0.02f);
            lt_choose();
            const float tl = time_median(run_lt, 40, 20) / (float)REP, to = time_median(run_ours, 40, 20) / (float)REP;
            std::vector<bf16> c1(nc), c2(nc);
            cudaMemcpy(c1.data(), gC1, nc * 2, cudaMemcpyDeviceToHost);
            cudaMemcpy(c2.data(), gC2, nc * 2, cudaMemcpyDeviceToHost);
            double mx = 0, md = 0;
            for (size_t j = 0; j < nc; j++) {
                double a = __bfloat162float(c1[j]), b = __bfloat162float(c2[j]);
                mx = fmax(mx, fabs(b)), md = fmax(md, fabs(a - b));
            }
            const double fl = 2.0 * gM * gN * gK;
            printf("%-14s M %5lld N %5lld K %4lld: ours %.3f ms (%.0f TFLOP/s), cuBLASLt %.3f ms (%.0f): Lt/ours %.3f; "
                   "max |diff| %.3g of max |C| %.3g%s\n",
                   name[i], (long long)gM, (long long)gN, (long long)gK, to, fl / to / 1e9, tl, fl / tl / 1e9, tl / to,
                   md, mx, md <= 0.02 * mx ? "" : "  WRONG");
            lt_free();
            cudaFree(gA); cudaFree(gB); cudaFree(gC1); cudaFree(gC2);
        }
    }
    return 0;
}
