/* qmatmul.cu — the optional qmatmul op on the GPU: C (+)= A · Wᵀ with W in
 * GGML blocks (f16, q8_0, q4_0; layouts in src/ops/ops.h), so models loaded
 * from a quantized GGUF run on CUDA.
 *
 *  - Few rows (M <= QM_MAXM, decoding): a warp per output column reads W's
 *    row once; lane b dequantizes block b (32 values) into registers and
 *    dots it with the M rows of A. W streams once in its compact form.
 *  - More rows (prompts): W is dequantized into an fp32 buffer [N, K] kept
 *    by the context (smj_cuda.qbuf) and multiplied by the matmul op
 *    (cuBLAS; bf16 operands in bf16 mode): one extra pass over W, amortized
 *    over the M rows.
 *
 * A is used as it is (fp32), not rounded to 8 bits as the CPU backend and
 * llama.cpp do: results are the exact product to fp32 rounding (the op's
 * contract allows the 8-bit rounding's ~1e-2). W's 34- and 18-byte blocks
 * are 2-byte aligned only, so they are read 16 bits at a time.
 */
#include <cuda_fp16.h>
#include "cuda_common.cuh"

#define QM_MAXM 8

static __device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

/* Values k0 .. k0 + 31 of a row (w[j] = 0 past K, f16 only) */
template <int WT>
static __device__ __forceinline__ void dequant_block(const uint8_t *row, int b, int K, float *w) {
    if (WT == SMJ_WTYPE_F16) {
        const uint16_t *h = (const uint16_t *)row + (int64_t)b * 32;
#pragma unroll
        for (int j = 0; j < 32; j++) w[j] = b * 32 + j < K ? h2f(__ldg(h + j)) : 0.0f;
    } else if (WT == SMJ_WTYPE_Q8_0) {
        const uint16_t *h = (const uint16_t *)(row + (int64_t)b * 34);
        float d = h2f(__ldg(h));
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint16_t v = __ldg(h + 1 + j);
            w[2 * j] = (float)(int8_t)(v & 0xff) * d;
            w[2 * j + 1] = (float)(int8_t)(v >> 8) * d;
        }
    } else { /* Q4_0: byte j holds value j (low nibble) and j + 16 (high) */
        const uint16_t *h = (const uint16_t *)(row + (int64_t)b * 18);
        float d = h2f(__ldg(h));
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint16_t v = __ldg(h + 1 + j);
            int q0 = v & 0xff, q1 = v >> 8;
            w[2 * j] = (float)((q0 & 15) - 8) * d;
            w[2 * j + 16] = (float)((q0 >> 4) - 8) * d;
            w[2 * j + 1] = (float)((q1 & 15) - 8) * d;
            w[2 * j + 17] = (float)((q1 >> 4) - 8) * d;
        }
    }
}

/* C[m, n] (+)= A[m, :] · W[n, :] for m < M <= MR, a warp per n. */
template <int WT, int MR>
__global__ void __launch_bounds__(128) k_qgemv(float *C, const float *A, const uint8_t *W, int64_t N, int K,
                                              int64_t rb, int M, int acc) {
    int64_t n = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const uint8_t *row = W + n * rb;
    float s[MR];
#pragma unroll
    for (int m = 0; m < MR; m++) s[m] = 0;
    for (int b = lane; b * 32 < K; b += 32) {
        float w[32];
        dequant_block<WT>(row, b, K, w);
#pragma unroll
        for (int m = 0; m < MR; m++) {
            if (m >= M) break;
            const float *a = A + (int64_t)m * K + b * 32;
#pragma unroll
            for (int j = 0; j < 32; j++)
                if (b * 32 + j < K) s[m] += __ldg(a + j) * w[j];
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++) {
        if (m >= M) break;
        float v = warp_sum(s[m]);
        if (lane == 0) C[(int64_t)m * N + n] = acc ? C[(int64_t)m * N + n] + v : v;
    }
}

/* out [N, K] fp32 = W dequantized, a thread per 32-value block. */
template <int WT>
__global__ void k_dequant(float *out, const uint8_t *W, int64_t N, int K, int64_t rb) {
    int nb = (K + 31) / 32;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * nb) return;
    int64_t n = t / nb;
    int b = (int)(t % nb);
    float w[32];
    dequant_block<WT>(W + n * rb, b, K, w);
    float *o = out + n * K + (int64_t)b * 32;
#pragma unroll
    for (int j = 0; j < 32; j++)
        if (b * 32 + j < K) o[j] = w[j];
}

void cu_qmatmul(const smj_exec *ex, float *Cm, const float *A, const void *Wq, int wtype, int64_t M, int64_t N,
                int64_t K, int acc) {
    smj_cuda *c0 = S(ex);
    int64_t rb = wtype == SMJ_WTYPE_F16 ? 2 * K : wtype == SMJ_WTYPE_Q8_0 ? K / 32 * 34 : K / 32 * 18;
    if ((wtype != SMJ_WTYPE_F16 && wtype != SMJ_WTYPE_Q8_0 && wtype != SMJ_WTYPE_Q4_0) ||
        (wtype != SMJ_WTYPE_F16 && K % 32) || K > INT32_MAX) {
        c0->op = "qmatmul";
        record(c0, SMJ_ERR_UNSUPPORTED, "qmatmul: weight type %d with K = %lld (want f16, or q8_0/q4_0 with K a "
               "multiple of 32)", wtype, (long long)K);
        c0->op = NULL;
        return;
    }
    if (M <= 0 || N <= 0 || K <= 0) { /* nothing to dequantize: the matmul op's empty cases */
        smj_backend_cuda.matmul(ex, Cm, A, NULL, M, N, K, 0, 1, acc);
        return;
    }
    if (M > QM_MAXM) {
        /* dequantize, then the matmul op (its own profile row) */
        {
            OP_BEGIN("qmatmul (dequantize)");
            size_t need = sizeof(float) * (size_t)(N * K);
            if (need > c->qbuf_bytes) {
                if (c->qbuf) CK(c, cudaFree(c->qbuf)); /* synchronizes: nothing reads it any more */
                c->qbuf = NULL;
                c->qbuf_bytes = 0;
                if (!CK(c, cudaMalloc((void **)&c->qbuf, need))) return;
                c->qbuf_bytes = need;
            }
            int64_t nblk = N * ((K + 31) / 32);
            unsigned grid = (unsigned)((nblk + 255) / 256);
            const uint8_t *W = (const uint8_t *)Wq;
            if (wtype == SMJ_WTYPE_F16) k_dequant<SMJ_WTYPE_F16><<<grid, 256, 0, c->stream>>>(c->qbuf, W, N, (int)K, rb);
            else if (wtype == SMJ_WTYPE_Q8_0) k_dequant<SMJ_WTYPE_Q8_0><<<grid, 256, 0, c->stream>>>(c->qbuf, W, N, (int)K, rb);
            else k_dequant<SMJ_WTYPE_Q4_0><<<grid, 256, 0, c->stream>>>(c->qbuf, W, N, (int)K, rb);
            LAUNCHED(c);
            op_end(c);
        }
        smj_backend_cuda.matmul(ex, Cm, A, c0->qbuf, M, N, K, 0, 1, acc);
        return;
    }
    OP_BEGIN_W("qmatmul");
    cast_written(c, Cm, M * N);
    unsigned grid = (unsigned)((N + 3) / 4);
    const uint8_t *W = (const uint8_t *)Wq;
#define QG(T, MR) k_qgemv<T, MR><<<grid, 128, 0, c->stream>>>(Cm, A, W, N, (int)K, rb, (int)M, acc)
#define QGM(T) do { if (M <= 1) QG(T, 1); else if (M <= 4) QG(T, 4); else QG(T, 8); } while (0)
    if (wtype == SMJ_WTYPE_F16) QGM(SMJ_WTYPE_F16);
    else if (wtype == SMJ_WTYPE_Q8_0) QGM(SMJ_WTYPE_Q8_0);
    else QGM(SMJ_WTYPE_Q4_0);
#undef QGM
#undef QG
    LAUNCHED(c);
    op_end(c);
}
