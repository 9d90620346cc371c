/* cuda_backend.cu — the "cuda" backend: every op of the op table (ops.h) on
 * an NVIDIA GPU, over device pointers. docs/CUDA.md is the user's guide.
 *
 * What runs where
 *  - matmul: cuBLAS GemmEx; the precision is SMJ_CUDA_MATMUL (fp32 default:
 *    no tensor cores, results match the fp32 reference; tf32; bf16: our cast
 *    kernels round A and B to bf16 copies, fp32 accumulation and C; bf16x:
 *    cuBLAS's FAST_16BF on the fp32 data). Row-major C = op(A)·op(B) is
 *    column-major C^T = op(B)^T·op(A)^T, so the operands are passed swapped.
 *  - attention, Tq >= 16: cuBLAS batched products over materialized score
 *    matrices (chunks of batch rows) with our softmax / dS kernels between
 *    them; Tq < 16 (decoding) or SMJ_CUDA_ATTN=fused: the tiled fused fp32
 *    kernels (online softmax, LSE saved; the backward recomputes P from the
 *    LSE, one kernel for dq and one for dk/dv that loops over the query
 *    heads of its KV group, so GQA needs no atomics).
 *  - everything else: our kernels below.
 *  - SMJ_CUDA_PROFILE=1: device time per op (event pairs), printed at fini.
 *
 * Determinism: every op is deterministic run to run on one GPU model (fixed
 * reduction orders, no atomics). embedding_bwd downloads the ids (N int32),
 * groups positions by id on the host (a stable counting sort) and sums each
 * id's rows in position order: bit-identical to the reference.
 *
 * State: one smj_cuda per context (ex->impl): stream, cuBLAS handle,
 * scratch buffers, pinned host buffers and the first error. No globals.
 *
 * Errors: ops return nothing, so every CUDA/cuBLAS call goes through CK()
 * or CKB(), which record the FIRST failure (call, op, file:line, message) in
 * the state; later ops still run (their results are garbage). After a
 * failure sumsq returns NaN, so the trainer sees a non-finite gradient norm,
 * and smj_ctx_status() returns SMJ_ERR_NOMEM (out of device memory) or
 * SMJ_ERR_UNSUPPORTED (any other device error) with the message. With
 * SMJ_CUDA_SYNC=1 every op synchronizes after each kernel and checks, so the
 * message names the op that failed (slow; for debugging).
 * The memory hooks have no context: alloc returns NULL on failure (the
 * caller reports out of memory); a failed download fills the host buffer
 * with 0xFF bytes (NaN); a failed upload stays in the runtime's last error,
 * which the next op's launch check (or smj_ctx_status) records.
 *
 * Ordering: ops run on the context's stream, created blocking, and the
 * memory hooks use the legacy default stream, which orders against it, so
 * upload -> ops -> download needs no explicit synchronization.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../ops/ops.h"
}

/* ------------------------------------------------------------ state */

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    int device, n_sm, sync_each;
    size_t smem_optin;           /* max dynamic shared memory per block */
    void *scratch;               /* device scratch, grown on demand */
    size_t scratch_bytes;
    double *h_sum;               /* pinned: the sumsq result */
    int32_t *h_ids;              /* pinned: embedding_bwd ids / order / offsets */
    size_t h_ids_n;
    int32_t *h_cnt;              /* host: counting-sort buckets */
    size_t h_cnt_n;
    smj_status err;              /* first failure */
    char errmsg[512];
    const char *op;              /* op running now (for messages) */
    int prec;                    /* matmul precision: PREC_* (SMJ_CUDA_MATMUL) */
    int attn_fused;              /* 1: always the fused fp32 attention kernels (SMJ_CUDA_ATTN=fused) */
    /* SMJ_CUDA_PROFILE=1: device time per op from event pairs, resolved in
     * batches; the table is printed to stderr when the context is freed. */
    int profile;
    struct { const char *name; double ms; long calls; } prof[48];
    int nprof;
    cudaEvent_t *pev;            /* [2 * PROF_EV]: start/end per pending op */
    int *pidx;                   /* [PROF_EV]: prof[] entry of each pending op */
    int npend;
    const char *pname;           /* profile name of the op running now */
} smj_cuda;

enum { PREC_FP32 = 0, PREC_TF32 = 1, PREC_BF16 = 2, PREC_BF16X = 3 };
static const char *prec_name[] = {"fp32", "tf32", "bf16", "bf16x"};
#define PROF_EV 4096

static smj_cuda *S(const smj_exec *ex) { return (smj_cuda *)ex->impl; }

static void record(smj_cuda *c, smj_status st, const char *fmt, ...) {
    if (c->err != SMJ_OK) return;
    c->err = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

static int ck_cuda(smj_cuda *c, cudaError_t e, const char *what, int line) {
    if (e == cudaSuccess) return 1;
    record(c, e == cudaErrorMemoryAllocation ? SMJ_ERR_NOMEM : SMJ_ERR_UNSUPPORTED,
           "CUDA error in %s (%s, cuda_backend.cu:%d): %s", c->op ? c->op : "?", what, line,
           cudaGetErrorString(e));
    return 0;
}
static int ck_blas(smj_cuda *c, cublasStatus_t e, const char *what, int line) {
    if (e == CUBLAS_STATUS_SUCCESS) return 1;
    record(c, e == CUBLAS_STATUS_ALLOC_FAILED ? SMJ_ERR_NOMEM : SMJ_ERR_UNSUPPORTED,
           "cuBLAS error in %s (%s, cuda_backend.cu:%d): %s", c->op ? c->op : "?", what, line,
           cublasGetStatusString(e));
    return 0;
}
#define CK(c, call) ck_cuda((c), (call), #call, __LINE__)
#define CKB(c, call) ck_blas((c), (call), #call, __LINE__)
/* After every launch: launch errors now, execution errors in sync mode. */
#define LAUNCHED(c) launched((c), __LINE__)
static void launched(smj_cuda *c, int line) {
    ck_cuda(c, cudaGetLastError(), "kernel launch", line);
    if (c->sync_each) ck_cuda(c, cudaStreamSynchronize(c->stream), "SMJ_CUDA_SYNC", line);
}
#define OP_BEGIN(name) smj_cuda *c = S(ex); c->op = name; prof_begin(c, name)

/* Profiling: resolves the pending event pairs (synchronizes). */
static void prof_flush(smj_cuda *c) {
    if (!c->npend) return;
    cudaEventSynchronize(c->pev[2 * (c->npend - 1) + 1]);
    for (int i = 0; i < c->npend; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->pev[2 * i], c->pev[2 * i + 1]) == cudaSuccess) c->prof[c->pidx[i]].ms += ms;
    }
    (void)cudaGetLastError();
    c->npend = 0;
}
static void prof_begin(smj_cuda *c, const char *name) {
    c->pname = name;
    if (!c->profile) return;
    if (c->npend == PROF_EV) prof_flush(c);
    cudaEventRecord(c->pev[2 * c->npend], c->stream);
}
static void prof_end(smj_cuda *c) {
    if (!c->profile || !c->pname) return;
    int e = 0;
    while (e < c->nprof && strcmp(c->prof[e].name, c->pname) != 0) e++;
    if (e == c->nprof) {
        if (c->nprof == 48) return;
        c->prof[c->nprof].name = c->pname;
        c->nprof++;
    }
    c->prof[e].calls++;
    cudaEventRecord(c->pev[2 * c->npend + 1], c->stream);
    c->pidx[c->npend++] = e;
    c->pname = NULL;
}
static void prof_print(smj_cuda *c) {
    prof_flush(c);
    double tot = 0;
    for (int i = 0; i < c->nprof; i++) tot += c->prof[i].ms;
    if (tot <= 0) return;
    int ord[48];
    for (int i = 0; i < c->nprof; i++) ord[i] = i;
    for (int i = 1; i < c->nprof; i++)
        for (int j = i; j > 0 && c->prof[ord[j]].ms > c->prof[ord[j - 1]].ms; j--) {
            int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t;
        }
    fprintf(stderr, "cuda profile (SMJ_CUDA_PROFILE, matmul %s, attention %s): device time per op, whole run\n",
            prec_name[c->prec], c->attn_fused ? "fused" : "gemm");
    fprintf(stderr, "  %-22s %10s %7s %8s\n", "op", "ms", "share", "calls");
    for (int k = 0; k < c->nprof; k++) {
        int i = ord[k];
        fprintf(stderr, "  %-22s %10.2f %6.1f%% %8ld\n", c->prof[i].name, c->prof[i].ms, 100.0 * c->prof[i].ms / tot,
                c->prof[i].calls);
    }
    fprintf(stderr, "  %-22s %10.2f %6.1f%%\n", "total", tot, 100.0);
}

/* Profiling only: the op's time from here on counts under name (phases of
 * one op, e.g. "attention_bwd: dV, dP"). */
static void prof_phase(smj_cuda *c, const char *name) {
    if (!c->profile) return;
    prof_end(c);
    prof_begin(c, name);
}

/* In sync mode an op also checks the device at its end. */
static void op_end(smj_cuda *c) {
    if (c->sync_each) ck_cuda(c, cudaStreamSynchronize(c->stream), "SMJ_CUDA_SYNC", __LINE__);
    prof_end(c);
    c->op = NULL;
}

static void *scratch(smj_cuda *c, size_t bytes) {
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->scratch) CK(c, cudaFree(c->scratch)); /* synchronizes: no kernel still reads it */
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t b = bytes + bytes / 4 + 4096;
    if (!CK(c, cudaMalloc(&c->scratch, b))) return NULL;
    c->scratch_bytes = b;
    return c->scratch;
}

static unsigned blocks_for(int64_t n, int threads, int64_t cap) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b < cap ? b : cap);
}

/* ------------------------------------------------------------ memory hooks */

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 256;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is not sticky: clear it */
        return NULL;
    }
    if (cudaMemset(p, 0, bytes) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}
static void cu_free(void *p) { if (p) cudaFree(p); }
static void cu_upload(void *dst, const void *src, size_t n) {
    if (n) cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
}
static void cu_download(void *dst, const void *src, size_t n) {
    if (n && cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost) != cudaSuccess) memset(dst, 0xFF, n);
}
static void cu_zero(void *p, size_t n) { if (n) cudaMemset(p, 0, n); }

/* ------------------------------------------------------------ reductions */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Block-wide sum in double (blockDim.x a multiple of 32, <= 1024); every
 * thread gets the result. */
__device__ double block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}
__device__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = -INFINITY;
    for (int i = 0; i < nw; i++) t = fmaxf(t, sh[i]);
    return t;
}

/* ------------------------------------------------------------ matmul */

/* fp32 -> bf16 (round to nearest even): n elements of each of nb batches,
 * src batch stride sst, dst contiguous. */
__global__ void k_to_bf16(__nv_bfloat16 *dst, const float *src, int64_t n, int64_t sst, int nb) {
    int64_t tot = n * nb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = i / n, j = i - b * n;
        dst[i] = __float2bfloat16_rn(src[b * sst + j]);
    }
}
/* contiguous, 4 per thread (n % 4 == 0, 16-byte aligned src) */
__global__ void k_to_bf16_v4(__nv_bfloat162 *dst, const float4 *src, int64_t n4) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float4 v = src[i];
        dst[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        dst[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}
static void to_bf16(smj_cuda *c, __nv_bfloat16 *dst, const float *src, int64_t n, int64_t sst, int nb) {
    if (n <= 0 || nb <= 0) return;
    unsigned g = blocks_for(n * nb / 4 + 1, 256, (int64_t)c->n_sm * 16);
    if (nb == 1 && n % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 3) == 0)
        k_to_bf16_v4<<<g, 256, 0, c->stream>>>((__nv_bfloat162 *)dst, (const float4 *)src, n / 4);
    else
        k_to_bf16<<<g, 256, 0, c->stream>>>(dst, src, n, sst, nb);
    LAUNCHED(c);
}

/* Row-major batched product: C[M,N] (ldc) = alpha op(A)[M,K] op(B)[K,N] +
 * beta C, batch stride sA/sB/sC; op(X) = X^T when tX (A stored [K,M] with
 * row stride lda, B stored [N,K]). A and B are fp32 or bf16 (ty), C fp32.
 * Column-major cuBLAS computes C^T = op(B)^T op(A)^T: operands swapped.
 * Compute: fp32 data with PREC_FP32 -> plain fp32 (no tensor cores),
 * PREC_TF32 -> TF32 tensor cores, PREC_BF16X -> cuBLAS rounds fp32 inputs
 * to bf16 itself; bf16 data -> bf16 tensor cores, fp32 accumulation. */
static int gemm(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc,
                int64_t sC, int batch, cudaDataType ty) {
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: dimension over 2^31 (M %lld N %lld K %lld)", c->op, (long long)M,
               (long long)N, (long long)K);
        return 0;
    }
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
    if (ty == CUDA_R_32F && c->prec == PREC_TF32) ct = CUBLAS_COMPUTE_32F_FAST_TF32;
    if (ty == CUDA_R_32F && c->prec == PREC_BF16X) ct = CUBLAS_COMPUTE_32F_FAST_16BF;
    if (batch == 1)
        return CKB(c, cublasGemmEx(c->blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
                                   (int)M, (int)K, &alpha, B, ty, (int)ldb, A, ty, (int)lda, &beta, C, CUDA_R_32F,
                                   (int)ldc, ct, CUBLAS_GEMM_DEFAULT));
    return CKB(c, cublasGemmStridedBatchedEx(c->blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             (int)N, (int)M, (int)K, &alpha, B, ty, (int)ldb, sB, A, ty, (int)lda, sA,
                                             &beta, C, CUDA_R_32F, (int)ldc, sC, batch, ct, CUBLAS_GEMM_DEFAULT));
}

static void cu_matmul(const smj_exec *ex, float *Cm, const float *A, const float *Bm, int64_t M, int64_t N,
                      int64_t K, int tA, int tB, int acc) {
    OP_BEGIN("matmul");
    c->pname = tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)";
    if (M <= 0 || N <= 0) { op_end(c); return; }
    if (K <= 0) {
        if (!acc) CK(c, cudaMemsetAsync(Cm, 0, sizeof(float) * (size_t)(M * N), c->stream));
        op_end(c);
        return;
    }
    int64_t lda = tA ? M : K, ldb = tB ? K : N;
    if (c->prec == PREC_BF16 && K >= 16) {
        /* bf16 copies of both operands in the scratch buffer, fp32 C */
        size_t na = (size_t)(M * K), nb = (size_t)(K * N), oa = (na + 127) / 128 * 128;
        __nv_bfloat16 *s = (__nv_bfloat16 *)scratch(c, 2 * (oa + nb));
        if (!s) return;
        const char *name = c->pname;
        prof_phase(c, "matmul: bf16 casts");
        to_bf16(c, s, A, (int64_t)na, 0, 1);
        to_bf16(c, s + oa, Bm, (int64_t)nb, 0, 1);
        prof_phase(c, name);
        gemm(c, tA, tB, M, N, K, 1.0f, s, lda, 0, s + oa, ldb, 0, acc ? 1.0f : 0.0f, Cm, N, 0, 1, CUDA_R_16BF);
    } else {
        gemm(c, tA, tB, M, N, K, 1.0f, A, lda, 0, Bm, ldb, 0, acc ? 1.0f : 0.0f, Cm, N, 0, 1, CUDA_R_32F);
    }
    op_end(c);
}

/* ------------------------------------------------------------ embedding */

__global__ void k_embedding_fwd(float *out, const int32_t *ids, const float *wte, int64_t N, int C) {
    int64_t n = blockIdx.y;
    int cc = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N && cc < C) out[n * C + cc] = wte[(int64_t)ids[n] * C + cc];
}

static void cu_embedding_fwd(const smj_exec *ex, float *out, const int32_t *ids, const float *wte, int64_t N, int C) {
    OP_BEGIN("embedding_fwd");
    for (int64_t n0 = 0; n0 < N; n0 += 65535) {
        int64_t nn = N - n0 < 65535 ? N - n0 : 65535;
        dim3 grid((unsigned)((C + 127) / 128), (unsigned)nn);
        k_embedding_fwd<<<grid, 128, 0, c->stream>>>(out + n0 * C, ids + n0, wte, nn, C);
        LAUNCHED(c);
    }
    op_end(c);
}

/* dwte[id, c] += dout[n, c] over the positions n of id, in increasing n
 * (the reference's order). order: positions grouped by id; off[u..u+1]:
 * the positions of unique id uid[u]. */
__global__ void k_embedding_bwd(float *dwte, const float *dout, const int32_t *uid, const int32_t *off,
                                const int32_t *order, int C) {
    int u = blockIdx.y, cc = blockIdx.x * blockDim.x + threadIdx.x;
    if (cc >= C) return;
    float *row = dwte + (int64_t)uid[u] * C;
    float acc = row[cc];
    for (int k = off[u]; k < off[u + 1]; k++) acc += dout[(int64_t)order[k] * C + cc];
    row[cc] = acc;
}

static void cu_embedding_bwd(const smj_exec *ex, float *dwte, const int32_t *ids, const float *dout, int64_t N, int C) {
    OP_BEGIN("embedding_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    if (N > INT32_MAX / 4) { record(c, SMJ_ERR_UNSUPPORTED, "embedding_bwd: N %lld too large", (long long)N); return; }
    size_t need = (size_t)N * 4 + 2; /* ids [N] | order [N] | uid [<=N] | off [<=N+1] */
    if (need > c->h_ids_n) {
        if (c->h_ids) CK(c, cudaFreeHost(c->h_ids));
        c->h_ids = NULL;
        c->h_ids_n = 0;
        if (!CK(c, cudaMallocHost((void **)&c->h_ids, need * sizeof(int32_t)))) return;
        c->h_ids_n = need;
    }
    int32_t *h = c->h_ids, *ord = h + N, *uo = h + 2 * N; /* uo: uid[U] then off[U+1] */
    if (!CK(c, cudaMemcpyAsync(h, ids, sizeof(int32_t) * (size_t)N, cudaMemcpyDeviceToHost, c->stream))) return;
    if (!CK(c, cudaStreamSynchronize(c->stream))) return;
    int32_t mx = 0;
    for (int64_t n = 0; n < N; n++) mx = h[n] > mx ? h[n] : mx;
    if ((size_t)mx + 2 > c->h_cnt_n) {
        free(c->h_cnt);
        c->h_cnt_n = (size_t)mx + 2;
        c->h_cnt = (int32_t *)malloc(sizeof(int32_t) * c->h_cnt_n);
        if (!c->h_cnt) { c->h_cnt_n = 0; record(c, SMJ_ERR_NOMEM, "embedding_bwd: out of host memory"); return; }
    }
    int32_t *cnt = c->h_cnt;
    memset(cnt, 0, sizeof(int32_t) * ((size_t)mx + 2));
    for (int64_t n = 0; n < N; n++) cnt[h[n] + 1]++;
    int U = 0;
    for (int32_t v = 0; v <= mx; v++) U += cnt[v + 1] > 0;
    int32_t *uid = uo, *off = uo + U;
    int u = 0;
    for (int32_t v = 0; v <= mx; v++)
        if (cnt[v + 1]) { uid[u] = v; off[u] = cnt[v]; u++; cnt[v + 1] += cnt[v]; }
        else cnt[v + 1] = cnt[v];
    off[U] = (int32_t)N;
    /* cnt[v] is now the start of v's positions: scatter stably */
    for (int64_t n = 0; n < N; n++) ord[cnt[h[n]]++] = (int32_t)n;
    /* device copy of order | uid | off */
    size_t dev_n = (size_t)N + 2 * (size_t)U + 1;
    int32_t *d = (int32_t *)scratch(c, dev_n * sizeof(int32_t));
    if (!d) return;
    if (!CK(c, cudaMemcpyAsync(d, ord, sizeof(int32_t) * dev_n, cudaMemcpyHostToDevice, c->stream))) return;
    for (int u0 = 0; u0 < U; u0 += 65535) {
        int nu = U - u0 < 65535 ? U - u0 : 65535;
        dim3 grid((unsigned)((C + 127) / 128), (unsigned)nu);
        k_embedding_bwd<<<grid, 128, 0, c->stream>>>(dwte, dout, d + N + u0, d + N + U + u0, d, C);
        LAUNCHED(c);
    }
    /* the pinned buffers are rewritten only after the next call's sync */
    op_end(c);
}

/* ------------------------------------------------------------ rmsnorm */

/* One warp per row. */
__global__ void k_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int64_t N, int C, float eps) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C;
    float ss = 0;
    for (int i = lane; i < C; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[n] = r;
    for (int i = lane; i < C; i += 32) out[n * C + i] = (xr[i] * r) * w[i];
}

static void cu_rmsnorm_fwd(const smj_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                           int C, float eps) {
    OP_BEGIN("rmsnorm_fwd");
    if (N > 0) {
        k_rmsnorm_fwd<<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(out, rstd, x, w, N, C, eps);
        LAUNCHED(c);
    }
    op_end(c);
}

/* dx = r w dy - r^3 x mean(w dy x): one warp per row. */
__global__ void k_rmsnorm_bwd_dx(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                                 int64_t N, int C) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C, *dy = dout + n * C;
    float dot = 0;
    for (int i = lane; i < C; i += 32) dot += w[i] * dy[i] * xr[i];
    dot = warp_sum(dot) / (float)C;
    float r = rstd[n], r3 = r * r * r;
    for (int i = lane; i < C; i += 32) dx[n * C + i] = r * w[i] * dy[i] - r3 * xr[i] * dot;
}
/* dw partials: part[p, c] = sum over rows [p*R, (p+1)*R) of dy x r. */
__global__ void k_rmsnorm_bwd_dwpart(float *part, const float *dout, const float *x, const float *rstd, int64_t N,
                                     int C, int R) {
    int cc = blockIdx.x * blockDim.x + threadIdx.x, p = blockIdx.y;
    if (cc >= C) return;
    int64_t n0 = (int64_t)p * R, n1 = n0 + R < N ? n0 + R : N;
    float s = 0;
    for (int64_t n = n0; n < n1; n++) s += dout[n * C + cc] * x[n * C + cc] * rstd[n];
    part[(int64_t)p * C + cc] = s;
}
__global__ void k_colsum_add(float *dw, const float *part, int P, int C) {
    int cc = blockIdx.x * blockDim.x + threadIdx.x;
    if (cc >= C) return;
    float s = 0;
    for (int p = 0; p < P; p++) s += part[(int64_t)p * C + cc];
    dw[cc] += s;
}

static void cu_rmsnorm_bwd(const smj_exec *ex, float *dx, float *dw, const float *dout, const float *x,
                           const float *w, const float *rstd, int64_t N, int C) {
    OP_BEGIN("rmsnorm_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    k_rmsnorm_bwd_dx<<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(dx, dout, x, w, rstd, N, C);
    LAUNCHED(c);
    /* enough row chunks to fill the GPU, each at least 32 rows */
    int64_t col_blocks = (C + 127) / 128, want = (int64_t)c->n_sm * 8 / col_blocks;
    if (want < 1) want = 1;
    int64_t R = (N + want - 1) / want;
    if (R < 32) R = 32;
    int P = (int)((N + R - 1) / R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * C);
    if (!part) return;
    k_rmsnorm_bwd_dwpart<<<dim3((unsigned)col_blocks, (unsigned)P), 128, 0, c->stream>>>(part, dout, x, rstd, N, C,
                                                                                          (int)R);
    LAUNCHED(c);
    k_colsum_add<<<(unsigned)col_blocks, 128, 0, c->stream>>>(dw, part, P, C);
    LAUNCHED(c);
    op_end(c);
}

/* ------------------------------------------------------------ rope */

__global__ void k_rope(float *x, const float *cs, const float *sn, int64_t rows, int T, int NH, int HS, int pos0,
                       double sgn) {
    int h2 = HS / 2;
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, total = rows * h2;
    if (idx >= total) return;
    int64_t row = idx / h2; /* row over [B, T, NH] */
    int i = (int)(idx % h2);
    int t = (int)((row / NH) % T);
    float *v = x + row * HS;
    int64_t tp = (int64_t)(pos0 + t) * h2 + i;
    double a = v[i], b = v[i + h2], co = cs[tp], si = sgn * sn[tp];
    v[i] = (float)(a * co - b * si);
    v[i + h2] = (float)(b * co + a * si);
}

static void rope(const smj_exec *ex, const char *name, float *x, const float *cs, const float *sn, int B, int T,
                 int NH, int HS, int pos0, double sgn) {
    OP_BEGIN(name);
    int64_t rows = (int64_t)B * T * NH, total = rows * (HS / 2);
    if (total > 0) {
        k_rope<<<blocks_for(total, 256, INT32_MAX), 256, 0, c->stream>>>(x, cs, sn, rows, T, NH, HS, pos0, sgn);
        LAUNCHED(c);
    }
    op_end(c);
}
static void cu_rope_fwd(const smj_exec *ex, float *x, const float *cs, const float *sn, int B, int T, int NH, int HS,
                        int pos0) {
    rope(ex, "rope_fwd", x, cs, sn, B, T, NH, HS, pos0, 1.0);
}
static void cu_rope_bwd(const smj_exec *ex, float *dx, const float *cs, const float *sn, int B, int T, int NH, int HS,
                        int pos0) {
    rope(ex, "rope_bwd", dx, cs, sn, B, T, NH, HS, pos0, -1.0);
}

/* ------------------------------------------------------------ attention */

/* Tiles of TQ queries x TK keys, 128 threads (4 warps). In a tile product
 * thread (warp w, lane l) owns rows w + 4r (r < 8) and column l, or for
 * [rows x HS] accumulators rows w + 4r and dims l + 32j (j < NC, NC =
 * ceil(HS/32)). Shared tiles are [32][LD] with LD = HS rounded up to odd
 * (conflict-free column reads); score tiles are [32][33]. */
#define AT 32
#define ATHREADS 128
#define AROWS 8 /* rows per thread: AT / 4 warps */

__device__ __forceinline__ void load_rows(float *dst, int ld, const float *src, int64_t row_stride, int nrows,
                                          int HS) {
    for (int e = threadIdx.x; e < AT * HS; e += ATHREADS) {
        int r = e / HS, d = e - r * HS;
        dst[r * ld + d] = r < nrows ? src[(int64_t)r * row_stride + d] : 0.0f;
    }
}

/* s[r] = X[w+4r] · Y[lane] over HS. */
__device__ __forceinline__ void tile_dot(float s[AROWS], const float *X, const float *Y, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < AROWS; r++) s[r] = 0;
    const float *y = Y + lane * ld;
    for (int d = 0; d < HS; d++) {
        float yv = y[d];
#pragma unroll
        for (int r = 0; r < AROWS; r++) s[r] += X[(w + 4 * r) * ld + d] * yv;
    }
}

/* acc[r][j] += sum_k P[w+4r][k] · V[k][lane+32j]  (P [32][33], V [32][ld]) */
template <int NC>
__device__ __forceinline__ void tile_pv(float acc[AROWS][NC], const float *P, const float *V, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int k = 0; k < AT; k++) {
        float v[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) v[j] = lane + 32 * j < HS ? V[k * ld + lane + 32 * j] : 0.0f;
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float p = P[(w + 4 * r) * 33 + k];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] += p * v[j];
        }
    }
}

/* acc[r][j] += sum_i P[i][w+4r] · X[i][lane+32j]  (the transposed product) */
template <int NC>
__device__ __forceinline__ void tile_ptx(float acc[AROWS][NC], const float *P, const float *X, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int i = 0; i < AT; i++) {
        float x[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) x[j] = lane + 32 * j < HS ? X[i * ld + lane + 32 * j] : 0.0f;
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float p = P[i * 33 + w + 4 * r];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] += p * x[j];
        }
    }
}

/* Forward: one block per (query tile, head, batch). */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_fwd(float *out, float *lse, const float *q, const float *k,
                                                            const float *v, int Tq, int Tk, int NH, int NKV, int HS,
                                                            int64_t kv_bstride, float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Qs = sh, *Ks = Qs + AT * ld, *Vs = Ks + AT * ld, *P = Vs + AT * ld; /* P [32][33] */
    float *row_m = P + AT * 33, *row_l = row_m + AT, *row_a = row_l + AT;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, grp = NH / NKV, kvh = h / grp;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0 = qt * AT, nq = Tq - t0 < AT ? Tq - t0 : AT, off = Tk - Tq;
    const float *qb = q + (((int64_t)b * Tq + t0) * NH + h) * HS;
    const float *kb = k + b * kv_bstride + (int64_t)kvh * HS, *vb = v + b * kv_bstride + (int64_t)kvh * HS;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    load_rows(Qs, ld, qb, qstride, nq, HS);
    if (threadIdx.x < AT) { row_m[threadIdx.x] = -INFINITY; row_l[threadIdx.x] = 0; }
    float acc[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[r][j] = 0;
    int last_key = off + t0 + nq - 1; /* the last key any row of this tile sees */
    for (int k0 = 0; k0 <= last_key; k0 += AT) {
        int nk = Tk - k0 < AT ? Tk - k0 : AT;
        __syncthreads();
        load_rows(Ks, ld, kb + (int64_t)k0 * kstride, kstride, nk, HS);
        load_rows(Vs, ld, vb + (int64_t)k0 * kstride, kstride, nk, HS);
        __syncthreads();
        float s[AROWS];
        tile_dot(s, Qs, Ks, ld, HS);
        /* online softmax: warp w owns rows w + 4r; lane = key */
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            int i = w + 4 * r, key = k0 + lane;
            int ok = i < nq && key <= off + t0 + i;
            float sc = ok ? s[r] * scale : -INFINITY;
            float mo = row_m[i], mn = fmaxf(mo, warp_max(sc));
            float p = ok ? expf(sc - mn) : 0.0f;
            float ps = warp_sum(p);
            P[i * 33 + lane] = p;
            if (lane == 0) {
                float a = mn == -INFINITY ? 1.0f : expf(mo - mn); /* mo = -inf -> 0 */
                row_a[i] = a;
                row_l[i] = row_l[i] * a + ps;
                row_m[i] = mn;
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float a = row_a[w + 4 * r];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] *= a;
        }
        tile_pv<NC>(acc, P, Vs, ld, HS);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nq) continue;
        float l = row_l[i], inv = 1.0f / l;
        float *o = out + (((int64_t)b * Tq + t0 + i) * NH + h) * HS;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) o[lane + 32 * j] = acc[r][j] * inv;
        if (lane == 0) lse[((int64_t)b * NH + h) * Tq + t0 + i] = row_m[i] + logf(l);
    }
}

static size_t att_smem(int HS, int tiles, int ptiles) {
    return sizeof(float) * ((size_t)tiles * AT * (HS | 1) + (size_t)ptiles * AT * 33 + 3 * AT);
}

/* Sets the kernel's dynamic shared memory limit when over the default. */
static int smem_ok(smj_cuda *c, const void *fn, size_t bytes) {
    if (bytes > c->smem_optin) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: head size needs %zu bytes of shared memory, the GPU has %zu", c->op,
               bytes, c->smem_optin);
        return 0;
    }
    if (bytes > 48 * 1024) return CK(c, cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 1;
}

#define NC_DISPATCH(HS, F)                                  \
    do {                                                    \
        if ((HS) <= 32) F(1);                               \
        else if ((HS) <= 64) F(2);                          \
        else if ((HS) <= 128) F(4);                         \
        else F(8);                                          \
    } while (0)

static int att_args_ok(smj_cuda *c, int NH, int NKV, int HS) {
    if (HS < 1 || HS > 256 || NKV < 1 || NH % NKV != 0) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: head size %d (must be 1..256) or heads %d/%d not supported", c->op, HS,
               NH, NKV);
        return 0;
    }
    return 1;
}

/* attention through cuBLAS products (below); when it applies */
static int att_use_gemm(smj_cuda *c, int Tq, int Tk, int NH) {
    return !c->attn_fused && Tq >= 16 && (int64_t)NH * Tq * Tk * 10 <= ((int64_t)4 << 30);
}
static void att_fwd_gemm(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale);
static void att_bwd_gemm(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale);
static void att_fwd_bf16(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale);
static void att_bwd_bf16(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale);

static void cu_attention_fwd(const smj_exec *ex, float *out, float *lse, const float *q, const float *k,
                             const float *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride,
                             float scale) {
    OP_BEGIN("attention_fwd");
    if (!att_args_ok(c, NH, NKV, HS)) return;
    if (B <= 0 || Tq <= 0 || NH <= 0) { op_end(c); return; }
    if (att_use_gemm(c, Tq, Tk, NH)) {
        if (c->prec == PREC_BF16) att_fwd_bf16(c, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, kv_bstride, scale);
        else att_fwd_gemm(c, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, kv_bstride, scale);
        op_end(c);
        return;
    }
    size_t smem = att_smem(HS, 3, 1);
    dim3 grid((unsigned)((Tq + AT - 1) / AT), (unsigned)NH, (unsigned)B);
#define F(NC)                                                                                              \
    do {                                                                                                   \
        if (smem_ok(c, (const void *)k_attention_fwd<NC>, smem)) {                                         \
            k_attention_fwd<NC><<<grid, ATHREADS, smem, c->stream>>>(out, lse, q, k, v, Tq, Tk, NH, NKV,  \
                                                                     HS, kv_bstride, scale);               \
            LAUNCHED(c);                                                                                   \
        }                                                                                                  \
    } while (0)
    NC_DISPATCH(HS, F);
#undef F
    op_end(c);
}

/* D[b,h,t] = dout · out over HS, laid out like lse: one thread per row,
 * summed in the order tile_dot sums dout · v, so that where out == v (one
 * visible key) ds = p (dp - D) cancels exactly, as in the reference. */
__global__ void k_att_delta(float *D, const float *dout, const float *out, int B, int T, int NH, int HS) {
    int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* over [B, T, NH] */
    if (row >= (int64_t)B * T * NH) return;
    const float *a = dout + row * HS, *o = out + row * HS;
    float s = 0;
    for (int i = 0; i < HS; i++) s += a[i] * o[i];
    int h = (int)(row % NH);
    int64_t bt = row / NH;
    int t = (int)(bt % T), b = (int)(bt / T);
    D[((int64_t)b * NH + h) * T + t] = s;
}

/* dq for one (query tile, head, batch): loop over key tiles. */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_bwd_dq(float *dq, const float *dout, const float *lse,
                                                               const float *D, const float *q, const float *k,
                                                               const float *v, int T, int NH, int NKV, int HS,
                                                               float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Qs = sh, *dOs = Qs + AT * ld, *Ks = dOs + AT * ld, *Vs = Ks + AT * ld, *DS = Vs + AT * ld;
    float *rl = DS + AT * 33, *rd = rl + AT;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0 = qt * AT, nq = T - t0 < AT ? T - t0 : AT;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    int64_t qoff = (((int64_t)b * T + t0) * NH + h) * HS;
    const float *kb = k + (int64_t)b * T * kstride + (int64_t)kvh * HS;
    const float *vb = v + (int64_t)b * T * kstride + (int64_t)kvh * HS;
    load_rows(Qs, ld, q + qoff, qstride, nq, HS);
    load_rows(dOs, ld, dout + qoff, qstride, nq, HS);
    if (threadIdx.x < AT) {
        int i = threadIdx.x;
        rl[i] = i < nq ? lse[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
        rd[i] = i < nq ? D[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
    }
    float acc[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[r][j] = 0;
    for (int k0 = 0; k0 <= t0 + nq - 1; k0 += AT) {
        int nk = T - k0 < AT ? T - k0 : AT;
        __syncthreads();
        load_rows(Ks, ld, kb + (int64_t)k0 * kstride, kstride, nk, HS);
        load_rows(Vs, ld, vb + (int64_t)k0 * kstride, kstride, nk, HS);
        __syncthreads();
        float s[AROWS], dp[AROWS];
        tile_dot(s, Qs, Ks, ld, HS);
        tile_dot(dp, dOs, Vs, ld, HS);
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            int i = w + 4 * r, key = k0 + lane;
            int ok = i < nq && key <= t0 + i;
            float p = ok ? expf(s[r] * scale - rl[i]) : 0.0f;
            DS[i * 33 + lane] = p * (dp[r] - rd[i]);
        }
        __syncthreads();
        tile_pv<NC>(acc, DS, Ks, ld, HS);
    }
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nq) continue;
        float *o = dq + qoff + (int64_t)i * qstride;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) o[lane + 32 * j] = acc[r][j] * scale;
    }
}

/* dk, dv for one (key tile, kv head, batch): loop over the group's query
 * heads and the query tiles at or after the key tile. */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_bwd_dkv(float *dk, float *dv, const float *dout,
                                                                const float *lse, const float *D, const float *q,
                                                                const float *k, const float *v, int T, int NH,
                                                                int NKV, int HS, float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Ks = sh, *Vs = Ks + AT * ld, *Qs = Vs + AT * ld, *dOs = Qs + AT * ld, *P = dOs + AT * ld;
    float *DS = P + AT * 33, *rl = DS + AT * 33, *rd = rl + AT;
    int kt = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, grp = NH / NKV;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int k0 = kt * AT, nk = T - k0 < AT ? T - k0 : AT;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    int64_t koff = ((int64_t)b * T + k0) * kstride + (int64_t)kvh * HS;
    load_rows(Ks, ld, k + koff, kstride, nk, HS);
    load_rows(Vs, ld, v + koff, kstride, nk, HS);
    float adk[AROWS][NC], adv[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) adk[r][j] = adv[r][j] = 0;
    for (int hh = 0; hh < grp; hh++) {
        int h = kvh * grp + hh;
        for (int t0 = k0; t0 < T; t0 += AT) { /* query tiles aligned with key tiles: t0 = k0 + 32m */
            int nq = T - t0 < AT ? T - t0 : AT;
            int64_t qoff = (((int64_t)b * T + t0) * NH + h) * HS;
            __syncthreads();
            load_rows(Qs, ld, q + qoff, qstride, nq, HS);
            load_rows(dOs, ld, dout + qoff, qstride, nq, HS);
            if (threadIdx.x < AT) {
                int i = threadIdx.x;
                rl[i] = i < nq ? lse[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
                rd[i] = i < nq ? D[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
            }
            __syncthreads();
            float s[AROWS], dp[AROWS];
            tile_dot(s, Qs, Ks, ld, HS);  /* rows: queries, lane: key */
            tile_dot(dp, dOs, Vs, ld, HS);
#pragma unroll
            for (int r = 0; r < AROWS; r++) {
                int i = w + 4 * r, key = k0 + lane;
                int ok = i < nq && lane < nk && key <= t0 + i;
                float p = ok ? expf(s[r] * scale - rl[i]) : 0.0f;
                P[i * 33 + lane] = p;
                DS[i * 33 + lane] = p * (dp[r] - rd[i]);
            }
            __syncthreads();
            tile_ptx<NC>(adv, P, dOs, ld, HS);
            tile_ptx<NC>(adk, DS, Qs, ld, HS);
        }
    }
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nk) continue;
        int64_t o = koff + (int64_t)i * kstride;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) {
                dk[o + lane + 32 * j] = adk[r][j] * scale;
                dv[o + lane + 32 * j] = adv[r][j];
            }
    }
}

static void cu_attention_bwd(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout,
                             const float *out, const float *lse, const float *q, const float *k, const float *v,
                             int B, int T, int NH, int NKV, int HS, float scale) {
    OP_BEGIN("attention_bwd");
    if (!att_args_ok(c, NH, NKV, HS)) return;
    if (B <= 0 || T <= 0 || NH <= 0) { op_end(c); return; }
    if (att_use_gemm(c, T, T, NH)) {
        if (c->prec == PREC_BF16) att_bwd_bf16(c, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, scale);
        else att_bwd_gemm(c, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, scale);
        op_end(c);
        return;
    }
    int64_t rows = (int64_t)B * T * NH;
    float *D = (float *)scratch(c, sizeof(float) * (size_t)rows);
    if (!D) return;
    k_att_delta<<<blocks_for(rows, 128, INT32_MAX), 128, 0, c->stream>>>(D, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    size_t smem_q = att_smem(HS, 4, 1), smem_kv = att_smem(HS, 4, 2);
    dim3 gq((unsigned)((T + AT - 1) / AT), (unsigned)NH, (unsigned)B);
    dim3 gk((unsigned)((T + AT - 1) / AT), (unsigned)NKV, (unsigned)B);
#define F(NC)                                                                                                \
    do { if (smem_ok(c, (const void *)k_attention_bwd_dq<NC>, smem_q) &&                                     \
        smem_ok(c, (const void *)k_attention_bwd_dkv<NC>, smem_kv)) {                                        \
        k_attention_bwd_dq<NC><<<gq, ATHREADS, smem_q, c->stream>>>(dq, dout, lse, D, q, k, v, T, NH, NKV, HS, \
                                                                    scale);                                  \
        LAUNCHED(c);                                                                                         \
        k_attention_bwd_dkv<NC><<<gk, ATHREADS, smem_kv, c->stream>>>(dk, dv, dout, lse, D, q, k, v, T, NH,  \
                                                                      NKV, HS, scale);                       \
        LAUNCHED(c);                                                                                         \
    } } while (0)
    NC_DISPATCH(HS, F);
#undef F
    op_end(c);
}

/* ------------------------------------------------------------ attention through GEMMs
 *
 * For Tq >= 16 (training, prefill; att_use_gemm) attention is done as
 * batched cuBLAS products over score matrices materialized in the scratch
 * buffer, a chunk of batch rows at a time ([nb][NH][Tq][Tk] floats):
 *   fwd: S = Q K^T; P = softmax(scale S) with the causal mask, LSE saved
 *        (one warp per row); O = P V.
 *   bwd: S = Q K^T again, P = exp(scale S - LSE); dV += P^T dO; dP = dO V^T;
 *        dS = P (dP - D), D = rowsum(dO o O); dQ = scale dS K;
 *        dK += scale dS^T Q (the += runs over the query heads of a KV group,
 *        in order, so GQA needs no atomics and stays deterministic).
 * The products go through gemm(), so they follow the matmul precision: with
 * PREC_BF16 Q, K, V, dO are rounded to bf16 copies and P, dS are written as
 * bf16, S and dP stay fp32. The masked half of each causal score matrix is
 * still multiplied (zeros): about 2x the necessary tensor-core work, bought
 * for simplicity. SMJ_CUDA_ATTN=fused keeps the fused kernels above. */

template <typename PT> __device__ __forceinline__ PT to_pt(float x);
template <> __device__ __forceinline__ float to_pt<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 to_pt<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/* One warp per score row r of [rows = nb*NH*Tq][Tk]: query i = r % Tq sees
 * keys 0..off+i. Writes P (masked keys 0) and lse. */
template <typename PT>
__global__ void k_att_softmax(PT *P, float *lse, const float *S, int64_t rows, int Tq, int Tk, int off, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int i = (int)(r % Tq), nv = off + i + 1;
    if (nv > Tk) nv = Tk;
    const float *s = S + r * Tk;
    float m = -INFINITY, l = 0;
    for (int j = lane; j < nv; j += 32) {
        float x = s[j] * scale;
        if (x > m) { l = l * expf(m - x) + 1.0f; m = x; }
        else l += expf(x - m);
    }
    float M = warp_max(m);
    l = m == -INFINITY ? 0.0f : l * expf(m - M);
    l = warp_sum(l);
    float z = M + logf(l);
    PT *p = P + r * Tk;
    for (int j = lane; j < Tk; j += 32) p[j] = to_pt<PT>(j < nv ? expf(s[j] * scale - z) : 0.0f);
    if (lane == 0) lse[r] = z;
}

/* P = exp(scale S - lse) (masked 0), one warp per row (backward). */
template <typename PT>
__global__ void k_att_p(PT *P, const float *S, const float *lse, int64_t rows, int T, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv = (int)(r % T) + 1;
    float z = lse[r];
    const float *s = S + r * T;
    PT *p = P + r * T;
    for (int j = lane; j < T; j += 32) p[j] = to_pt<PT>(j < nv ? expf(s[j] * scale - z) : 0.0f);
}

/* dS = P (dP - D[row]), written over P (same element: in place is safe).
 * P and dP never alias (__restrict__). This scalar form took 2.5 ms a call
 * in bf16 (B 16, T 1024, 12 heads; SMJ_CUDA_PROFILE), 10x the bytes it
 * moves; the bf16 path uses the 16-byte version below when T % 8 == 0. */
template <typename PT>
__global__ void k_att_ds(PT *__restrict__ P, const float *__restrict__ dP, const float *__restrict__ D, int64_t rows,
                         int T) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv = (int)(r % T) + 1;
    float d = D[r];
    PT *p = P + r * T;
    const float *dp = dP + r * T;
    for (int j = lane; j < nv; j += 32) p[j] = to_pt<PT>((float)p[j] * (dp[j] - d));
}
/* bf16, T % 8 == 0: 8 elements a lane (16-byte P, 2 x 16-byte dP), up to
 * the visible keys rounded up to 8 (the rest of P is 0 and stays 0). */
__global__ void k_att_ds_bf16x8(__nv_bfloat16 *__restrict__ P, const float *__restrict__ dP,
                                const float *__restrict__ D, int64_t rows, int T) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv8 = ((int)(r % T) + 1 + 7) >> 3;
    float d = D[r];
    uint4 *p = (uint4 *)(P + r * T);
    const float4 *dp = (const float4 *)(dP + r * T);
    for (int j = lane; j < nv8; j += 32) {
        uint4 pv = p[j];
        float4 a = dp[2 * j], b = dp[2 * j + 1];
        __nv_bfloat162 *h = (__nv_bfloat162 *)&pv;
        float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
        float2 f2 = __bfloat1622float2(h[2]), f3 = __bfloat1622float2(h[3]);
        h[0] = __floats2bfloat162_rn(f0.x * (a.x - d), f0.y * (a.y - d));
        h[1] = __floats2bfloat162_rn(f1.x * (a.z - d), f1.y * (a.w - d));
        h[2] = __floats2bfloat162_rn(f2.x * (b.x - d), f2.y * (b.y - d));
        h[3] = __floats2bfloat162_rn(f3.x * (b.z - d), f3.y * (b.w - d));
        p[j] = pv;
    }
}

static size_t al256(size_t x) { return (x + 255) / 256 * 256; }

/* Rows per chunk of batch rows so that the score buffers stay under ~4 GiB. */
static int att_chunk(int B, int64_t per_b) {
    int64_t nb = ((int64_t)4 << 30) / (per_b > 0 ? per_b : 1);
    if (nb < 1) nb = 1;
    return nb < B ? (int)nb : B;
}

/* fp32 data (PREC_FP32, TF32, BF16X: the compute type is gemm()'s), in the
 * tensors' own layout: one strided-batched product per (batch row, query
 * head of a GQA group) over the KV heads. */
static void att_fwd_gemm(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)Tq * Tk, ldq = (int64_t)NH * HS, ldk = (int64_t)NKV * HS;
    int nb = att_chunk(B, NH * TT * 4);
    float *Sb = (float *)scratch(c, (size_t)nb * NH * TT * 4); /* P overwrites S */
    if (!Sb) return;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * Tq * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 1, Tq, Tk, HS, 1.0f, q + sq, ldq, (int64_t)grp * HS, k + b * kv_bstride, ldk, HS, 0.0f,
                     Sb + ss, Tk, grp * TT, NKV, CUDA_R_32F);
            }
        int64_t rows = (int64_t)n * NH * Tq;
        k_att_softmax<float><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Sb, lse + (int64_t)b0 * NH * Tq,
                                                                                   Sb, rows, Tq, Tk, Tk - Tq, scale);
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * Tq * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 0, Tq, HS, Tk, 1.0f, Sb + ss, Tk, grp * TT, v + b * kv_bstride, ldk, HS, 0.0f, out + sq,
                     ldq, (int64_t)grp * HS, NKV, CUDA_R_32F);
            }
    }
}

static void att_bwd_gemm(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)T * T, nkv = (int64_t)T * NKV * HS, rows_all = (int64_t)B * NH * T;
    int nb = att_chunk(B, NH * TT * 8);
    size_t o_s = al256((size_t)rows_all * 4), o_dp = o_s + al256((size_t)nb * NH * TT * 4);
    char *sc = (char *)scratch(c, o_dp + (size_t)nb * NH * TT * 4);
    if (!sc) return;
    float *Dd = (float *)sc, *Sb = (float *)(sc + o_s), *dPb = (float *)(sc + o_dp); /* P over S, dS over dP */
    k_att_delta<<<blocks_for(rows_all, 128, INT32_MAX), 128, 0, c->stream>>>(Dd, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    int64_t ldq = (int64_t)NH * HS, ldk = (int64_t)NKV * HS, sq_h = (int64_t)grp * HS, ss_h = (int64_t)grp * TT;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        int64_t rows = (int64_t)n * NH * T, r0 = (int64_t)b0 * NH * T;
        unsigned g = blocks_for(rows, 8, INT32_MAX);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 1, T, T, HS, 1.0f, q + sq, ldq, sq_h, k + b * nkv, ldk, HS, 0.0f, Sb + ss, T, ss_h, NKV,
                     CUDA_R_32F);
            }
        k_att_p<float><<<g, 256, 0, c->stream>>>(Sb, Sb, lse + r0, rows, T, scale);
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                int64_t sk = (int64_t)b * nkv;
                /* dV[kvh] (+)= P^T dO; dP = dO V^T */
                gemm(c, 1, 0, T, HS, T, 1.0f, Sb + ss, T, ss_h, dout + sq, ldq, sq_h, hh ? 1.0f : 0.0f, dv + sk, ldk,
                     HS, NKV, CUDA_R_32F);
                gemm(c, 0, 1, T, T, HS, 1.0f, dout + sq, ldq, sq_h, v + sk, ldk, HS, 0.0f, dPb + ss, T, ss_h, NKV,
                     CUDA_R_32F);
            }
        k_att_ds<float><<<g, 256, 0, c->stream>>>(Sb, dPb, Dd + r0, rows, T); /* dS over P */
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                int64_t sk = (int64_t)b * nkv;
                /* dQ = scale dS K; dK[kvh] (+)= scale dS^T Q */
                gemm(c, 0, 0, T, HS, T, scale, Sb + ss, T, ss_h, k + sk, ldk, HS, 0.0f, dq + sq, ldq, sq_h, NKV,
                     CUDA_R_32F);
                gemm(c, 1, 0, T, HS, T, scale, Sb + ss, T, ss_h, q + sq, ldq, sq_h, hh ? 1.0f : 0.0f, dk + sk, ldk,
                     HS, NKV, CUDA_R_32F);
            }
    }
}

/* bf16 products (PREC_BF16): Q, K, V (and dO) are cast to bf16 copies in
 * head-major layout [B][H][T][HS], so that one strided-batched product
 * covers every (batch row, KV head) pair of a chunk (one launch per query
 * head of a GQA group, not one per batch row); results land in head-major
 * fp32 scratch and are permuted back. */
__global__ void k_cast_hm(__nv_bfloat16 *dst, const float *src, int B, int T, int H, int HS, int64_t bstride) {
    int64_t n = (int64_t)B * T * H * HS;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* over [B][H][T] */
        int t = (int)(r % T);
        int64_t bh = r / T;
        int h = (int)(bh % H), b = (int)(bh / H);
        dst[i] = __float2bfloat16_rn(src[(int64_t)b * bstride + ((int64_t)t * H + h) * HS + d]);
    }
}
/* dst [B][T][H][HS] = src [B][H][T][HS] (fp32) */
__global__ void k_hm_back(float *dst, const float *src, int B, int T, int H, int HS) {
    int64_t n = (int64_t)B * T * H * HS;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* over [B][T][H] */
        int h = (int)(r % H);
        int64_t bt = r / H;
        int t = (int)(bt % T), b = (int)(bt / T);
        dst[i] = src[(((int64_t)b * H + h) * T + t) * HS + d];
    }
}
static void cast_hm(smj_cuda *c, __nv_bfloat16 *dst, const float *src, int B, int T, int H, int HS, int64_t bs) {
    k_cast_hm<<<blocks_for((int64_t)B * T * H * HS, 256, (int64_t)c->n_sm * 16), 256, 0, c->stream>>>(dst, src, B, T,
                                                                                                     H, HS, bs);
    LAUNCHED(c);
}
static void hm_back(smj_cuda *c, float *dst, const float *src, int B, int T, int H, int HS) {
    k_hm_back<<<blocks_for((int64_t)B * T * H * HS, 256, (int64_t)c->n_sm * 16), 256, 0, c->stream>>>(dst, src, B, T,
                                                                                                     H, HS);
    LAUNCHED(c);
}

static void att_fwd_bf16(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)Tq * Tk, nq = (int64_t)B * Tq * NH * HS, nkv = (int64_t)B * Tk * NKV * HS;
    int nb = att_chunk(B, NH * TT * 6);
    size_t o_p = al256((size_t)nb * NH * TT * 4), o_q = o_p + al256((size_t)nb * NH * TT * 2);
    size_t o_k = o_q + al256((size_t)nq * 2), o_v = o_k + al256((size_t)nkv * 2), o_o = o_v + al256((size_t)nkv * 2);
    char *sc = (char *)scratch(c, o_o + (size_t)nq * 4);
    if (!sc) return;
    float *Sb = (float *)sc, *Oh = (float *)(sc + o_o);
    __nv_bfloat16 *Pb = (__nv_bfloat16 *)(sc + o_p), *Qh = (__nv_bfloat16 *)(sc + o_q);
    __nv_bfloat16 *Kh = (__nv_bfloat16 *)(sc + o_k), *Vh = (__nv_bfloat16 *)(sc + o_v);
    prof_phase(c, "attn fwd: casts");
    cast_hm(c, Qh, q, B, Tq, NH, HS, (int64_t)Tq * NH * HS);
    cast_hm(c, Kh, k, B, Tk, NKV, HS, kv_bstride);
    cast_hm(c, Vh, v, B, Tk, NKV, HS, kv_bstride);
    int64_t qh = (int64_t)Tq * HS, kh = (int64_t)Tk * HS;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        prof_phase(c, "attn fwd: S=QK^T");
        for (int hh = 0; hh < grp; hh++)
            gemm(c, 0, 1, Tq, Tk, HS, 1.0f, Qh + ((int64_t)b0 * NH + hh) * qh, HS, grp * qh,
                 Kh + (int64_t)b0 * NKV * kh, HS, kh, 0.0f, Sb + hh * TT, Tk, grp * TT, n * NKV, CUDA_R_16BF);
        int64_t rows = (int64_t)n * NH * Tq;
        prof_phase(c, "attn fwd: softmax");
        k_att_softmax<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(
            Pb, lse + (int64_t)b0 * NH * Tq, Sb, rows, Tq, Tk, Tk - Tq, scale);
        LAUNCHED(c);
        prof_phase(c, "attn fwd: O=PV");
        for (int hh = 0; hh < grp; hh++)
            gemm(c, 0, 0, Tq, HS, Tk, 1.0f, Pb + hh * TT, Tk, grp * TT, Vh + (int64_t)b0 * NKV * kh, HS, kh, 0.0f,
                 Oh + ((int64_t)b0 * NH + hh) * qh, HS, grp * qh, n * NKV, CUDA_R_16BF);
    }
    prof_phase(c, "attn fwd: casts");
    hm_back(c, out, Oh, B, Tq, NH, HS);
}

static void att_bwd_bf16(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)T * T, nq = (int64_t)B * T * NH * HS, nkv = (int64_t)B * T * NKV * HS;
    int64_t rows_all = (int64_t)B * NH * T;
    int nb = att_chunk(B, NH * TT * 10);
    size_t o_s = al256((size_t)rows_all * 4), o_dp = o_s + al256((size_t)nb * NH * TT * 4);
    size_t o_p = o_dp + al256((size_t)nb * NH * TT * 4), o_q = o_p + al256((size_t)nb * NH * TT * 2);
    size_t o_do = o_q + al256((size_t)nq * 2), o_k = o_do + al256((size_t)nq * 2), o_v = o_k + al256((size_t)nkv * 2);
    size_t o_dq = o_v + al256((size_t)nkv * 2), o_dk = o_dq + al256((size_t)nq * 4), o_dv = o_dk + al256((size_t)nkv * 4);
    char *sc = (char *)scratch(c, o_dv + (size_t)nkv * 4);
    if (!sc) return;
    float *Dd = (float *)sc, *Sb = (float *)(sc + o_s), *dPb = (float *)(sc + o_dp);
    float *dQh = (float *)(sc + o_dq), *dKh = (float *)(sc + o_dk), *dVh = (float *)(sc + o_dv);
    __nv_bfloat16 *Pb = (__nv_bfloat16 *)(sc + o_p), *Qh = (__nv_bfloat16 *)(sc + o_q);
    __nv_bfloat16 *dOh = (__nv_bfloat16 *)(sc + o_do), *Kh = (__nv_bfloat16 *)(sc + o_k);
    __nv_bfloat16 *Vh = (__nv_bfloat16 *)(sc + o_v);
    k_att_delta<<<blocks_for(rows_all, 128, INT32_MAX), 128, 0, c->stream>>>(Dd, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    prof_phase(c, "attn bwd: D, casts");
    cast_hm(c, Qh, q, B, T, NH, HS, (int64_t)T * NH * HS);
    cast_hm(c, dOh, dout, B, T, NH, HS, (int64_t)T * NH * HS);
    cast_hm(c, Kh, k, B, T, NKV, HS, (int64_t)T * NKV * HS);
    cast_hm(c, Vh, v, B, T, NKV, HS, (int64_t)T * NKV * HS);
    int64_t th = (int64_t)T * HS;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb, nbat = n * NKV;
        int64_t rows = (int64_t)n * NH * T, r0 = (int64_t)b0 * NH * T;
        const __nv_bfloat16 *Kc = Kh + (int64_t)b0 * NKV * th, *Vc = Vh + (int64_t)b0 * NKV * th;
        float *dKc = dKh + (int64_t)b0 * NKV * th, *dVc = dVh + (int64_t)b0 * NKV * th;
        prof_phase(c, "attn bwd: S=QK^T");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            gemm(c, 0, 1, T, T, HS, 1.0f, Qh + qo, HS, grp * th, Kc, HS, th, 0.0f, Sb + hh * TT, T, grp * TT, nbat,
                 CUDA_R_16BF);
        }
        prof_phase(c, "attn bwd: P");
        k_att_p<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, Sb, lse + r0, rows, T, scale);
        LAUNCHED(c);
        prof_phase(c, "attn bwd: dV, dP");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            /* dV (+)= P^T dO; dP = dO V^T */
            gemm(c, 1, 0, T, HS, T, 1.0f, Pb + hh * TT, T, grp * TT, dOh + qo, HS, grp * th, hh ? 1.0f : 0.0f, dVc,
                 HS, th, nbat, CUDA_R_16BF);
            gemm(c, 0, 1, T, T, HS, 1.0f, dOh + qo, HS, grp * th, Vc, HS, th, 0.0f, dPb + hh * TT, T, grp * TT, nbat,
                 CUDA_R_16BF);
        }
        prof_phase(c, "attn bwd: dS");
        if (T % 8 == 0)
            k_att_ds_bf16x8<<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, dPb, Dd + r0, rows, T);
        else
            k_att_ds<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, dPb, Dd + r0, rows, T);
        LAUNCHED(c);
        prof_phase(c, "attn bwd: dQ, dK");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            /* dQ = scale dS K; dK (+)= scale dS^T Q */
            gemm(c, 0, 0, T, HS, T, scale, Pb + hh * TT, T, grp * TT, Kc, HS, th, 0.0f, dQh + qo, HS, grp * th, nbat,
                 CUDA_R_16BF);
            gemm(c, 1, 0, T, HS, T, scale, Pb + hh * TT, T, grp * TT, Qh + qo, HS, grp * th, hh ? 1.0f : 0.0f, dKc,
                 HS, th, nbat, CUDA_R_16BF);
        }
    }
    prof_phase(c, "attn bwd: D, casts");
    hm_back(c, dq, dQh, B, T, NH, HS);
    hm_back(c, dk, dKh, B, T, NKV, HS);
    hm_back(c, dv, dVh, B, T, NKV, HS);
}

/* ------------------------------------------------------------ element-wise */

__global__ void k_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}
__global__ void k_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double g = gate[i], s = 1.0 / (1.0 + exp(-g)), d = dout[i];
        dgate[i] = (float)(d * up[i] * s * (1.0 + g * (1.0 - s)));
        dup[i] = (float)(d * g * s);
    }
}
__global__ void k_add(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}
__global__ void k_scale(float *x, float s, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}
__global__ void k_adamw(float *p, float *m, float *v, const float *g, int64_t n, float lr, float b1, float b2,
                        float eps, float wd, double bc1, double bc2) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double gi = g[i];
        double mi = b1 * (double)m[i] + (1.0 - b1) * gi;
        double vi = b2 * (double)v[i] + (1.0 - b2) * gi * gi;
        m[i] = (float)mi;
        v[i] = (float)vi;
        p[i] = (float)(p[i] - lr * (mi / bc1 / (sqrt(vi / bc2) + eps) + wd * (double)p[i]));
    }
}

#define EW_GRID(n) blocks_for((n), 256, (int64_t)c->n_sm * 32), 256, 0, c->stream

static void cu_swiglu_fwd(const smj_exec *ex, float *out, const float *gate, const float *up, int64_t n) {
    OP_BEGIN("swiglu_fwd");
    if (n > 0) { k_swiglu_fwd<<<EW_GRID(n)>>>(out, gate, up, n); LAUNCHED(c); }
    op_end(c);
}
static void cu_swiglu_bwd(const smj_exec *ex, float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n) {
    OP_BEGIN("swiglu_bwd");
    if (n > 0) { k_swiglu_bwd<<<EW_GRID(n)>>>(dgate, dup, dout, gate, up, n); LAUNCHED(c); }
    op_end(c);
}
static void cu_add(const smj_exec *ex, float *out, const float *a, const float *b, int64_t n) {
    OP_BEGIN("add");
    if (n > 0) { k_add<<<EW_GRID(n)>>>(out, a, b, n); LAUNCHED(c); }
    op_end(c);
}
static void cu_scale(const smj_exec *ex, float *x, float s, int64_t n) {
    OP_BEGIN("scale");
    if (n > 0) { k_scale<<<EW_GRID(n)>>>(x, s, n); LAUNCHED(c); }
    op_end(c);
}
static void cu_adamw(const smj_exec *ex, float *p, float *m, float *v, const float *g, int64_t n, float lr,
                     float b1, float b2, float eps, float wd, int64_t t) {
    OP_BEGIN("adamw");
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    if (n > 0) { k_adamw<<<EW_GRID(n)>>>(p, m, v, g, n, lr, b1, b2, eps, wd, bc1, bc2); LAUNCHED(c); }
    op_end(c);
}

/* ------------------------------------------------------------ cross-entropy */

/* One block per row: max, then sum of exp in double. */
__global__ void k_xent_fwd(float *losses, float *lse, const float *logits, const int32_t *targets, int V) {
    __shared__ double shd[32];
    __shared__ float shf[32];
    int64_t n = blockIdx.x;
    const float *l = logits + n * V;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, l[j]);
    mx = block_max(mx, shf);
    double s = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += exp((double)l[j] - (double)mx);
    s = block_sum_d(s, shd);
    if (threadIdx.x == 0) {
        double z = (double)mx + log(s);
        int32_t t = targets[n];
        lse[n] = (float)z;
        losses[n] = t < 0 ? 0.0f : (float)(z - l[t]);
    }
}

__global__ void k_xent_bwd(float *dl, const float *logits, const float *lse, const int32_t *targets, float dloss,
                           int V) {
    int64_t n = blockIdx.y;
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= V) return;
    int32_t t = targets[n];
    int64_t i = n * V + j;
    float p = t < 0 ? 0.0f : expf((float)((double)logits[i] - (double)lse[n]));
    dl[i] = dloss * (p - (j == t ? 1.0f : 0.0f));
}

static void cu_xent_fwd(const smj_exec *ex, float *losses, float *lse, const float *logits, const int32_t *targets,
                        int64_t N, int V) {
    OP_BEGIN("xent_fwd");
    for (int64_t n0 = 0; n0 < N; n0 += INT32_MAX) {
        int64_t nn = N - n0 < INT32_MAX ? N - n0 : INT32_MAX;
        k_xent_fwd<<<(unsigned)nn, V >= 4096 ? 1024 : 256, 0, c->stream>>>(losses + n0, lse + n0,
                                                                             logits + n0 * V, targets + n0, V);
        LAUNCHED(c);
    }
    op_end(c);
}

static void cu_xent_bwd(const smj_exec *ex, float *dlogits, const float *logits, const float *lse,
                        const int32_t *targets, float dloss, int64_t N, int V) {
    OP_BEGIN("xent_bwd");
    for (int64_t n0 = 0; n0 < N; n0 += 65535) {
        int64_t nn = N - n0 < 65535 ? N - n0 : 65535;
        dim3 grid((unsigned)((V + 255) / 256), (unsigned)nn);
        k_xent_bwd<<<grid, 256, 0, c->stream>>>(dlogits + n0 * V, logits + n0 * V, lse + n0, targets + n0, dloss,
                                                 V);
        LAUNCHED(c);
    }
    op_end(c);
}

/* ------------------------------------------------------------ sumsq */

__global__ void k_sumsq_part(double *part, const float *x, int64_t n) {
    __shared__ double sh[32];
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        s += (double)x[i] * (double)x[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void k_sum_parts(double *out, const double *part, int P) {
    __shared__ double sh[32];
    double s = 0;
    for (int i = threadIdx.x; i < P; i += blockDim.x) s += part[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) *out = s;
}

/* The one synchronization of a training step. NaN once an error is recorded. */
static double cu_sumsq(const smj_exec *ex, const float *x, int64_t n) {
    OP_BEGIN("sumsq");
    if (c->err != SMJ_OK) return NAN;
    unsigned P = blocks_for(n, 256, (int64_t)c->n_sm * 4);
    double *d = (double *)scratch(c, sizeof(double) * (P + 1));
    if (!d) return NAN;
    if (n > 0) {
        k_sumsq_part<<<P, 256, 0, c->stream>>>(d + 1, x, n);
        LAUNCHED(c);
        k_sum_parts<<<1, 256, 0, c->stream>>>(d, d + 1, (int)P);
        LAUNCHED(c);
    } else {
        CK(c, cudaMemsetAsync(d, 0, sizeof(double), c->stream));
    }
    CK(c, cudaMemcpyAsync(c->h_sum, d, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    prof_end(c);
    CK(c, cudaStreamSynchronize(c->stream));
    c->op = NULL;
    return c->err != SMJ_OK ? NAN : *c->h_sum;
}

/* ------------------------------------------------------------ layernorm, gelu (GPT-2 family) */

/* One warp per row, two passes as the reference: the mean, then the
 * variance of the deviations (biased, eps inside the sqrt). */
__global__ void k_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                                int64_t N, int C, float eps) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C;
    float s = 0, v = 0;
    for (int i = lane; i < C; i += 32) s += xr[i];
    float m = warp_sum(s) / (float)C;
    for (int i = lane; i < C; i += 32) v += (xr[i] - m) * (xr[i] - m);
    float r = 1.0f / sqrtf(warp_sum(v) / (float)C + eps);
    if (lane == 0) { mean[n] = m; rstd[n] = r; }
    float *o = out + n * C;
    if (b)
        for (int i = lane; i < C; i += 32) o[i] = (xr[i] - m) * r * w[i] + b[i];
    else
        for (int i = lane; i < C; i += 32) o[i] = (xr[i] - m) * r * w[i];
}

static void cu_layernorm_fwd(const smj_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int64_t N, int C, float eps) {
    OP_BEGIN("layernorm_fwd");
    if (N > 0 && C > 0) {
        k_layernorm_fwd<<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(out, mean, rstd, x, w, b, N, C, eps);
        LAUNCHED(c);
    }
    op_end(c);
}

/* xh = (x - mean) r, g = w dy: dx = r (g - mean(g) - xh mean(g xh)); one warp per row. */
__global__ void k_layernorm_bwd_dx(float *dx, const float *dout, const float *x, const float *w, const float *mean,
                                   const float *rstd, int64_t N, int C) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C, *dy = dout + n * C;
    float m = mean[n], r = rstd[n], sg = 0, sgx = 0;
    for (int i = lane; i < C; i += 32) {
        float g = w[i] * dy[i];
        sg += g;
        sgx += g * ((xr[i] - m) * r);
    }
    sg = warp_sum(sg) / (float)C;
    sgx = warp_sum(sgx) / (float)C;
    for (int i = lane; i < C; i += 32) dx[n * C + i] = r * (w[i] * dy[i] - sg - (xr[i] - m) * r * sgx);
}
/* dw, db partials over rows [p*R, (p+1)*R): part[p, c] = sum dy xh,
 * part[P + p, c] = sum dy (when db is wanted). */
__global__ void k_layernorm_bwd_part(float *part, const float *dout, const float *x, const float *mean,
                                     const float *rstd, int64_t N, int C, int R, int P, int want_db) {
    int cc = blockIdx.x * blockDim.x + threadIdx.x, p = blockIdx.y;
    if (cc >= C) return;
    int64_t n0 = (int64_t)p * R, n1 = n0 + R < N ? n0 + R : N;
    float sw = 0, sb = 0;
    for (int64_t n = n0; n < n1; n++) {
        float dy = dout[n * C + cc];
        sw += dy * ((x[n * C + cc] - mean[n]) * rstd[n]);
        sb += dy;
    }
    part[(int64_t)p * C + cc] = sw;
    if (want_db) part[((int64_t)P + p) * C + cc] = sb;
}

/* dw, db: per-block column partials, then k_colsum_add sums them in fixed
 * order (no atomics: deterministic). */
static void cu_layernorm_bwd(const smj_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                             const float *w, const float *mean, const float *rstd, int64_t N, int C) {
    OP_BEGIN("layernorm_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    k_layernorm_bwd_dx<<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(dx, dout, x, w, mean, rstd, N, C);
    LAUNCHED(c);
    /* enough row chunks to fill the GPU, each at least 32 rows */
    int64_t col_blocks = (C + 127) / 128, want = (int64_t)c->n_sm * 8 / col_blocks;
    if (want < 1) want = 1;
    int64_t R = (N + want - 1) / want;
    if (R < 32) R = 32;
    int P = (int)((N + R - 1) / R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * C * (db ? 2 : 1));
    if (!part) { op_end(c); return; }
    k_layernorm_bwd_part<<<dim3((unsigned)col_blocks, (unsigned)P), 128, 0, c->stream>>>(part, dout, x, mean, rstd, N,
                                                                                          C, (int)R, P, db != NULL);
    LAUNCHED(c);
    k_colsum_add<<<(unsigned)col_blocks, 128, 0, c->stream>>>(dw, part, P, C);
    LAUNCHED(c);
    if (db) {
        k_colsum_add<<<(unsigned)col_blocks, 128, 0, c->stream>>>(db, part + (int64_t)P * C, P, C);
        LAUNCHED(c);
    }
    op_end(c);
}

/* GELU, tanh form, in double as the reference (the formula of ref_impl.h;
 * double tanh keeps 1 + tanh u exact enough where it is small). */
#define GELU_K 0.79788456080286535588 /* sqrt(2/pi) */
__global__ void k_gelu_fwd(float *out, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double v = x[i];
        out[i] = (float)(0.5 * v * (1.0 + tanh(GELU_K * (v + 0.044715 * v * v * v))));
    }
}
__global__ void k_gelu_bwd(float *dx, const float *dout, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double v = x[i], t = tanh(GELU_K * (v + 0.044715 * v * v * v));
        double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * 0.044715 * v * v);
        dx[i] = (float)(dout[i] * d);
    }
}

static void cu_gelu_fwd(const smj_exec *ex, float *out, const float *x, int64_t n) {
    OP_BEGIN("gelu_fwd");
    if (n > 0) { k_gelu_fwd<<<EW_GRID(n)>>>(out, x, n); LAUNCHED(c); }
    op_end(c);
}
static void cu_gelu_bwd(const smj_exec *ex, float *dx, const float *dout, const float *x, int64_t n) {
    OP_BEGIN("gelu_bwd");
    if (n > 0) { k_gelu_bwd<<<EW_GRID(n)>>>(dx, dout, x, n); LAUNCHED(c); }
    op_end(c);
}

/* ------------------------------------------------------------ lifecycle */

static smj_status cu_init(smj_exec *ex, char *err, size_t errlen) {
    ex->impl = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        snprintf(err, errlen, "no usable CUDA device: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports no GPU");
        (void)cudaGetLastError();
        return SMJ_ERR_UNSUPPORTED;
    }
    smj_cuda *c = (smj_cuda *)calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return SMJ_ERR_NOMEM; }
    const char *dev = getenv("SMJ_CUDA_DEVICE");
    c->device = dev && *dev ? atoi(dev) : 0;
    const char *sy = getenv("SMJ_CUDA_SYNC");
    c->sync_each = sy && *sy && strcmp(sy, "0") != 0;
    cudaDeviceProp prop;
    int ok = c->device >= 0 && c->device < n && CK(c, cudaSetDevice(c->device)) &&
             CK(c, cudaGetDeviceProperties(&prop, c->device)) &&
             CK(c, cudaStreamCreate(&c->stream)) && CKB(c, cublasCreate(&c->blas)) &&
             CKB(c, cublasSetStream(c->blas, c->stream)) && CK(c, cudaMallocHost((void **)&c->h_sum, sizeof(double)));
    if (ok) {
        /* precision of the products: SMJ_CUDA_MATMUL=fp32 (default) | tf32 | bf16 | bf16x;
         * SMJ_CUDA_TF32=1 is the older spelling of tf32 */
        const char *tf = getenv("SMJ_CUDA_TF32"), *mm = getenv("SMJ_CUDA_MATMUL");
        if (tf && *tf && strcmp(tf, "0") != 0) c->prec = PREC_TF32;
        if (mm && *mm) {
            int p = -1;
            for (int i = 0; i < 4; i++) if (strcmp(mm, prec_name[i]) == 0) p = i;
            if (p < 0) {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_MATMUL=%s: want fp32, tf32, bf16 or bf16x", mm);
                ok = 0;
            } else {
                c->prec = p;
            }
        }
        const char *at = getenv("SMJ_CUDA_ATTN");
        c->attn_fused = at && strcmp(at, "fused") == 0;
        const char *pr = getenv("SMJ_CUDA_PROFILE");
        c->profile = pr && *pr && strcmp(pr, "0") != 0;
        /* the compute type of each product is chosen per call (gemm()) */
        ok = ok && CKB(c, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    }
    if (ok && c->profile) {
        c->pev = (cudaEvent_t *)calloc(2 * PROF_EV, sizeof(cudaEvent_t));
        c->pidx = (int *)calloc(PROF_EV, sizeof(int));
        ok = c->pev && c->pidx;
        for (int i = 0; ok && i < 2 * PROF_EV; i++) ok = CK(c, cudaEventCreate(&c->pev[i]));
        if (!ok) c->profile = 0;
    }
    if (!ok) {
        if (c->device < 0 || c->device >= n) snprintf(err, errlen, "SMJ_CUDA_DEVICE=%d: only %d GPU(s)", c->device, n);
        else snprintf(err, errlen, "%s", c->errmsg);
        smj_status st = c->err != SMJ_OK ? c->err : SMJ_ERR_UNSUPPORTED;
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        if (c->h_sum) cudaFreeHost(c->h_sum);
        free(c->pev);
        free(c->pidx);
        free(c);
        (void)cudaGetLastError();
        return st;
    }
    c->n_sm = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    ex->impl = c;
    return SMJ_OK;
}

static void cu_fini(smj_exec *ex) {
    smj_cuda *c = S(ex);
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    if (c->profile) {
        prof_print(c);
        for (int i = 0; i < 2 * PROF_EV; i++) cudaEventDestroy(c->pev[i]);
    }
    free(c->pev);
    free(c->pidx);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    if (c->scratch) cudaFree(c->scratch);
    if (c->h_sum) cudaFreeHost(c->h_sum);
    if (c->h_ids) cudaFreeHost(c->h_ids);
    free(c->h_cnt);
    free(c);
    ex->impl = NULL;
}

/* Also picks up errors of the memory hooks (the runtime's last error) and
 * of kernels still running (a synchronization). */
static smj_status cu_error(const smj_exec *ex, char *err, size_t errlen) {
    smj_cuda *c = S(ex);
    if (!c) return SMJ_OK;
    if (c->err == SMJ_OK) {
        c->op = "(device check)";
        CK(c, cudaGetLastError());
        CK(c, cudaStreamSynchronize(c->stream));
        c->op = NULL;
    }
    if (c->err != SMJ_OK) snprintf(err, errlen, "%s", c->errmsg);
    return c->err;
}

extern "C" const smj_backend smj_backend_cuda = {
    .name = "cuda",
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .zero = cu_zero,
    .init = cu_init,
    .fini = cu_fini,
    .error = cu_error,
#define SMJ_OP_SET(n) .n = cu_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
};
