/* bench/gemm_step.cu — the Llama 110M training step's products one by one
 * (B·T = 32768 rows, d 768, ffn 2048, V 32768, 12 layers, the shapes,
 * transposes, output types and betas the CUDA backend uses with
 * --bf16-matmul --fp16-activations --fused-ce), each timed three ways:
 * cublasGemmEx (what the backend calls), cuBLASLt's heuristic first choice
 * (32 MiB workspace, as PyTorch sets it), and the fastest of the heuristic's
 * candidates (up to 16 asked for; it offers 8 on these shapes with cuBLAS
 * 13.1), as the backend's SMJ_CUDA_GEMM=tune chooses; then the LM head as
 * PyTorch runs it (whole, bf16 outputs). Prints ms per call, TFLOP/s, and
 * the step's total of each way; `gst v` also each candidate's configuration
 * (tile, stages, split-K, reduction scheme, cluster). Build and run on the
 * GPU machine:
 *   nvcc -O2 -arch=sm_90 -o /tmp/gst bench/gemm_step.cu -lcublas -lcublasLt && /tmp/gst
 * (LD_LIBRARY_PATH may point at another cuBLAS to compare libraries.)
 * Operands are hashed values in [-1, 1) (gemm_common.cuh); each time is the
 * median of 15 after 3 warm-ups. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include "gemm_common.cuh"

static cublasHandle_t h;
static cublasLtHandle_t lh;
static void *ws;
enum { WS = 32 << 20, NALG = 16 };
static int verbose;

/* one product: row-major C[M,N] (beta: accumulate) = op(A)[M,K] op(B)[K,N];
 * tA: A stored [K,M]; tB: B stored [N,K]; out16: bf16 C, else fp32 */
struct prod { const char *name; int tA, tB; long M, N, K; int out16; float beta; int per_step; };

static cublasLtMatmulDesc_t od;
static cublasLtMatrixLayout_t la, lb, lc;
static void *A, *B, *C;
static const prod *cur;
static cublasLtMatmulAlgo_t algo;

static void run_ex(void) {
    const prod *p = cur;
    float one = 1.0f;
    cublasGemmEx(h, p->tB ? CUBLAS_OP_T : CUBLAS_OP_N, p->tA ? CUBLAS_OP_T : CUBLAS_OP_N, (int)p->N, (int)p->M, (int)p->K,
                 &one, B, CUDA_R_16BF, (int)(p->tB ? p->K : p->N), A, CUDA_R_16BF, (int)(p->tA ? p->M : p->K), &p->beta,
                 C, p->out16 ? CUDA_R_16BF : CUDA_R_32F, (int)p->N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
static void run_lt(void) {
    float one = 1.0f;
    cublasLtMatmul(lh, od, &one, B, la, A, lb, &cur->beta, C, lc, C, lc, &algo, ws, WS, 0);
}
static float timeit(void (*f)(void)) { return time_median(f, 3, 15); }

int main(int argc, char **argv) {
    verbose = argc > 1;
    const long R = 32768, Cd = 768, H = 2048, V = 32768, CH = 4096; /* CH: a --fused-ce chunk's rows */
    const prod ps[] = {
        {"fwd qkv      NT", 0, 1, R, 3 * Cd, Cd, 1, 0, 12},
        {"fwd wo       NT", 0, 1, R, Cd, Cd, 1, 0, 12},
        {"fwd gate|up  NT", 0, 1, R, 2 * H, Cd, 1, 0, 12},
        {"fwd down     NT", 0, 1, R, Cd, H, 1, 0, 12},
        {"dX down      NN", 0, 0, R, H, Cd, 1, 0, 12},
        {"dW down      TN", 1, 0, Cd, H, R, 0, 1, 12},
        {"dW gate|up   TN", 1, 0, 2 * H, Cd, R, 0, 1, 12},
        {"dX gate|up   NN", 0, 0, R, Cd, 2 * H, 1, 0, 12},
        {"dW wo        TN", 1, 0, Cd, Cd, R, 0, 1, 12},
        {"dX wo        NN", 0, 0, R, Cd, Cd, 1, 0, 12},
        {"dW qkv       TN", 1, 0, 3 * Cd, Cd, R, 0, 1, 12},
        {"dX qkv       NN", 0, 0, R, Cd, 3 * Cd, 1, 0, 12},
        {"head chunk   NT", 0, 1, CH, V, Cd, 1, 0, 8},
        {"head dW chk  TN", 1, 0, V, Cd, CH, 0, 1, 8},
        {"head dX chk  NN", 0, 0, CH, Cd, V, 0, 0, 8},
        {"head whole   NT", 0, 1, R, V, Cd, 1, 0, 0},
        {"head dW whl  TN", 1, 0, V, Cd, R, 1, 0, 0},
        {"head dX whl  NN", 0, 0, R, Cd, V, 1, 0, 0},
        {"8192^3       NT", 0, 1, 8192, 8192, 8192, 1, 0, 0},
    };
    const int np = (int)(sizeof ps / sizeof ps[0]);
    cublasCreate(&h);
    cublasLtCreate(&lh);
    cudaMalloc(&ws, WS);
    size_t big = (size_t)R * V; /* the largest operand (the whole head's dlogits) */
    cudaMalloc(&A, big * 2); cudaMalloc(&B, big * 2); cudaMalloc(&C, big * 4);
    k_fill<<<1024, 256>>>((__nv_bfloat16 *)A, big, 1);
    k_fill<<<1024, 256>>>((__nv_bfloat16 *)B, big, 2);
    cudaMemset(C, 0, big * 4);
    cudaDeviceProp dp;
    cudaGetDeviceProperties(&dp, 0);
    int ver = 0;
    cublasGetVersion(h, &ver);
    printf("%s, cuBLAS %d, cuBLASLt %zu; bf16 x bf16, fp32 accumulation\n", dp.name, ver, cublasLtGetVersion());
    printf("  %-16s %6s %6s %6s  %-22s %-22s %-22s\n", "product", "M", "N", "K", "GemmEx ms (TF/s)",
           "Lt heur. ms (TF/s)", "Lt best of 16 ms (TF/s)");
    double tot[3] = {0, 0, 0};
    for (int i = 0; i < np; i++) {
        const prod *p = cur = &ps[i];
        double fl = 2.0 * p->M * p->N * p->K;
        float te = timeit(run_ex);
        /* cuBLASLt: D^T [N,M] col-major = op(B)^T op(A)^T, as the backend's blaslt.cu */
        cublasOperation_t oa = p->tB ? CUBLAS_OP_T : CUBLAS_OP_N, ob = p->tA ? CUBLAS_OP_T : CUBLAS_OP_N;
        cudaDataType_t ct = p->out16 ? CUDA_R_16BF : CUDA_R_32F;
        cublasLtMatmulDescCreate(&od, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        cublasLtMatmulDescSetAttribute(od, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa);
        cublasLtMatmulDescSetAttribute(od, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob);
        cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, p->tB ? p->K : p->N, p->tB ? p->N : p->K, p->tB ? p->K : p->N);
        cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, p->tA ? p->M : p->K, p->tA ? p->K : p->M, p->tA ? p->M : p->K);
        cublasLtMatrixLayoutCreate(&lc, ct, p->N, p->M, p->N);
        cublasLtMatmulPreference_t pref;
        cublasLtMatmulPreferenceCreate(&pref);
        size_t wsb = WS;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
        cublasLtMatmulHeuristicResult_t res[NALG];
        int got = 0;
        cublasLtMatmulAlgoGetHeuristic(lh, od, la, lb, lc, lc, pref, NALG, res, &got);
        float th = -1, tb = -1;
        for (int a = 0; a < got; a++) {
            algo = res[a].algo;
            float t = timeit(run_lt);
            if (cudaGetLastError() != cudaSuccess) continue;
            if (a == 0) th = t;
            if (tb < 0 || t < tb) tb = t;
            if (verbose) {
                int tile = 0, stages = 0, sk = 0, red = 0, sw = 0, cl = 0, id = 0; size_t w = 0;
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &sw, sizeof sw, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cl, sizeof cl, &w);
                printf("      #%-2d %7.3f ms  id %d tile %d stages %d splitk %d red %d swizzle %d cluster %d ws %zu waves %.2f\n", a, t, id,
                       tile, stages, sk, red, sw, cl, res[a].workspaceSize, res[a].wavesCount);
            }
        }
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(od);
        printf("  %-16s %6ld %6ld %6ld  %8.3f (%4.0f)        %8.3f (%4.0f)        %8.3f (%4.0f)   x%d\n", p->name, p->M,
               p->N, p->K, te, fl / te / 1e9, th, fl / th / 1e9, tb, fl / tb / 1e9, p->per_step);
        tot[0] += p->per_step * te;
        tot[1] += p->per_step * th;
        tot[2] += p->per_step * tb;
    }
    printf("  the step's products (--fused-ce chunks): GemmEx %.2f ms, Lt heuristic %.2f ms, Lt best %.2f ms\n", tot[0],
           tot[1], tot[2]);
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 1; }
    return 0;
}
