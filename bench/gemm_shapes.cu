/* bench/gemm_shapes.cu — what fusing the Llama block's products would save:
 * cuBLAS (cublasGemmEx, bf16 operands, fp32 accumulation — the calls the
 * CUDA backend's matmul makes) on the 110M model's shapes at B·T = 32768
 * rows, each way timed: Q/K/V and gate/up as separate products or one over
 * the stacked weights, the input gradients accumulated product by product
 * into fp32 (beta = 1) or in one product over the concatenated K, bf16 or
 * fp32 outputs; and GPT-2's LM head with its 50,257-wide rows as they are
 * or padded to 50,304. Build and run on the GPU machine:
 *   nvcc -O2 -arch=sm_90 -o /tmp/gs bench/gemm_shapes.cu -lcublas && /tmp/gs
 * Prints milliseconds per configuration (median of 20 after 5 warm-ups;
 * operands filled with hashed values in [-1, 1)). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include "gemm_common.cuh"

static cublasHandle_t h;
/* row-major C[M,N] (+)= A[M,K] op(B), B stored [N,K] (nt) or [K,N] (nn); A^T when ta (A stored [K,M]) */
static void mm(int ta, int nt, int M, int N, int K, const void *A, const void *B, void *C, cudaDataType ct, float beta) {
    float one = 1.0f;
    cublasGemmEx(h, nt ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B, CUDA_R_16BF,
                 nt ? K : N, A, CUDA_R_16BF, ta ? M : K, &beta, C, ct, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
typedef void (*fn)(void);
static float timeit(fn f) { return time_median(f, 5, 20); }
enum { M = 32768, C = 768, H = 2048 };
static void *X, *W, *G, *O32, *O16;
/* forward */
static void qkv3_16(void) { for (int i = 0; i < 3; i++) mm(0, 1, M, C, C, X, (char *)W + (size_t)i * C * C * 2, (char *)O16 + (size_t)i * M * C * 2, CUDA_R_16BF, 0); }
static void qkv1_16(void) { mm(0, 1, M, 3 * C, C, X, W, O16, CUDA_R_16BF, 0); }
static void qkv3_32(void) { for (int i = 0; i < 3; i++) mm(0, 1, M, C, C, X, (char *)W + (size_t)i * C * C * 2, (char *)O32 + (size_t)i * M * C * 4, CUDA_R_32F, 0); }
static void gu2_16(void) { for (int i = 0; i < 2; i++) mm(0, 1, M, H, C, X, (char *)W + (size_t)i * H * C * 2, (char *)O16 + (size_t)i * M * H * 2, CUDA_R_16BF, 0); }
static void gu1_16(void) { mm(0, 1, M, 2 * H, C, X, W, O16, CUDA_R_16BF, 0); }
/* input gradients [M, C] fp32: accumulated product by product, or one product */
static void dqkv3(void) { for (int i = 0; i < 3; i++) mm(0, 0, M, C, C, (char *)G + (size_t)i * M * C * 2, (char *)W + (size_t)i * C * C * 2, O32, CUDA_R_32F, i ? 1.0f : 0.0f); }
static void dqkv1(void) { mm(0, 0, M, C, 3 * C, G, W, O32, CUDA_R_32F, 0); }
static void dgu2(void) { for (int i = 0; i < 2; i++) mm(0, 0, M, C, H, (char *)G + (size_t)i * M * H * 2, (char *)W + (size_t)i * H * C * 2, O32, CUDA_R_32F, i ? 1.0f : 0.0f); }
static void dgu1(void) { mm(0, 0, M, C, 2 * H, G, W, O32, CUDA_R_32F, 0); }
/* weight gradients fp32 (beta = 1: accumulated into the gradient buffer) */
static void wqkv3(void) { for (int i = 0; i < 3; i++) mm(1, 0, C, C, M, (char *)G + (size_t)i * M * C * 2, X, (char *)O32 + (size_t)i * C * C * 4, CUDA_R_32F, 1.0f); }
static void wqkv1(void) { mm(1, 0, 3 * C, C, M, G, X, O32, CUDA_R_32F, 1.0f); }
static void wgu2(void) { for (int i = 0; i < 2; i++) mm(1, 0, H, C, M, (char *)G + (size_t)i * M * H * 2, X, (char *)O32 + (size_t)i * H * C * 4, CUDA_R_32F, 1.0f); }
static void wgu1(void) { mm(1, 0, 2 * H, C, M, G, X, O32, CUDA_R_32F, 1.0f); }
/* GPT-2's LM head (V = 50257, odd) against rows padded to 50304 (llm.c's
 * and PyTorch's padded vocabulary): whether the unaligned leading
 * dimension costs cuBLAS its fast kernels. logits = lnf · W^T (fp32 C),
 * dX = dlogits · W, dW = dlogits^T · lnf (dlogits bf16). */
enum { VG = 50257, VP = 50304 };
static void mmld(int ta, int nt, int M_, int N_, int K_, const void *A, int lda, const void *B, int ldb, void *C_, int ldc,
                 cudaDataType ct, float beta) {
    float one = 1.0f;
    cublasGemmEx(h, nt ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N_, M_, K_, &one, B, CUDA_R_16BF,
                 ldb, A, CUDA_R_16BF, lda, &beta, C_, ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
static void head_fwd(int ld) { mmld(0, 1, M, VG, C, X, C, W, C, O32, ld, CUDA_R_32F, 0); }
static void head_dx(int ld) { mmld(0, 0, M, C, VG, G, ld, W, C, O32, C, CUDA_R_32F, 0); }
static void head_dw(int ld) { mmld(1, 0, VG, C, M, G, ld, X, C, O32, C, CUDA_R_32F, 1.0f); }
static void hf_odd(void) { head_fwd(VG); }
static void hf_pad(void) { head_fwd(VP); }
static void hx_odd(void) { head_dx(VG); }
static void hx_pad(void) { head_dx(VP); }
static void hw_odd(void) { head_dw(VG); }
static void hw_pad(void) { head_dw(VP); }

int main(void) {
    cublasCreate(&h);
    size_t big = (size_t)M * VP; /* (> M * 2H: the head's operands fit too) */
    cudaMalloc(&X, (size_t)M * C * 2); cudaMalloc(&W, (size_t)VP * C * 2); cudaMalloc(&G, big * 2);
    cudaMalloc(&O32, big * 4); cudaMalloc(&O16, big * 2);
    k_fill<<<1024, 256>>>((__nv_bfloat16 *)X, (size_t)M * C, 1);
    k_fill<<<1024, 256>>>((__nv_bfloat16 *)W, (size_t)VP * C, 2);
    k_fill<<<1024, 256>>>((__nv_bfloat16 *)G, big, 3);
    cudaMemset(O32, 0, big * 4);
    struct { const char *name; fn f; double gflop; } r[] = {
        {"fwd Q,K,V: 3 products, bf16 out", qkv3_16, 3.0 * 2 * M * C * C},
        {"fwd Q,K,V: 1 product [3C], bf16 out", qkv1_16, 3.0 * 2 * M * C * C},
        {"fwd Q,K,V: 3 products, fp32 out", qkv3_32, 3.0 * 2 * M * C * C},
        {"fwd gate,up: 2 products, bf16 out", gu2_16, 2.0 * 2 * M * H * C},
        {"fwd gate,up: 1 product [2H], bf16 out", gu1_16, 2.0 * 2 * M * H * C},
        {"dX of Q,K,V: 3 products accumulated (fp32)", dqkv3, 3.0 * 2 * M * C * C},
        {"dX of Q,K,V: 1 product, K = 3C (fp32)", dqkv1, 3.0 * 2 * M * C * C},
        {"dX of gate,up: 2 products accumulated (fp32)", dgu2, 2.0 * 2 * M * H * C},
        {"dX of gate,up: 1 product, K = 2H (fp32)", dgu1, 2.0 * 2 * M * H * C},
        {"dW of Q,K,V: 3 products (fp32, beta 1)", wqkv3, 3.0 * 2 * M * C * C},
        {"dW of Q,K,V: 1 product [3C] (fp32, beta 1)", wqkv1, 3.0 * 2 * M * C * C},
        {"dW of gate,up: 2 products (fp32, beta 1)", wgu2, 2.0 * 2 * M * H * C},
        {"dW of gate,up: 1 product [2H] (fp32, beta 1)", wgu1, 2.0 * 2 * M * H * C},
        {"GPT-2 head fwd, logits rows 50257 (fp32)", hf_odd, 2.0 * M * VG * C},
        {"GPT-2 head fwd, logits rows padded to 50304", hf_pad, 2.0 * M * VG * C},
        {"GPT-2 head dX, dlogits rows 50257 (bf16)", hx_odd, 2.0 * M * VG * C},
        {"GPT-2 head dX, dlogits rows padded to 50304", hx_pad, 2.0 * M * VG * C},
        {"GPT-2 head dW, dlogits rows 50257 (bf16)", hw_odd, 2.0 * M * VG * C},
        {"GPT-2 head dW, dlogits rows padded to 50304", hw_pad, 2.0 * M * VG * C},
    };
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    printf("%s, cuBLAS GemmEx bf16 x bf16 -> fp32 accumulation, M = %d rows\n", p.name, M);
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        float ms = timeit(r[i].f);
        printf("  %-48s %7.3f ms  %6.0f TFLOP/s\n", r[i].name, ms, r[i].gflop / (ms * 1e-3) / 1e12);
    }
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 1; }
    return 0;
}
