/* cuda_backend.cu — the "cuda" backend: every op of the op table (ops.h) on
 * an NVIDIA GPU, over device pointers. docs/CUDA.md is the user's guide.
 *
 * Files: cuda_common.cuh (state, error and profiler hooks, shared
 * helpers), cuda_backend.cu (this: matmul, embedding, rope, sumsq,
 * grad_ctl, lifecycle), graphs.cu (the graph hooks: recorded decoding and
 * train steps), xent.cu (cross-entropy), elementwise.cu (swiglu,
 * add, scale, adamw, gelu), copies.cu (bf16 copies, lazy
 * tensors, the bf16 storage ops), norms.cu (rmsnorm, add + rmsnorm,
 * layernorm), attention.cu (attention ops and their fp32/cuBLAS paths),
 * flash.cu (tensor-core flash attention, bf16 mode), decode.cu (the
 * one-token decode ops), qmatmul.cu (GGML-quantized weights).
 *
 * What runs where
 *  - matmul: cuBLAS GemmEx; the precision is smj_ctx_options.bf16_matmul or
 *    SMJ_CUDA_MATMUL (fp32 default: no tensor cores, results match the fp32
 *    reference; tf32; bf16: our cast kernels round A and B to bf16 copies,
 *    fp32 accumulation and C; bf16x: cuBLAS's FAST_16BF on the fp32 data).
 *    Row-major C = op(A)·op(B) is column-major C^T = op(B)^T·op(A)^T, so the
 *    operands are passed swapped. In bf16 mode the last BC_N operand copies
 *    are kept while only matmuls run and no host write into device memory
 *    happened (cast_of; host_writes is a process-wide counter, with the
 *    last writes' ranges: global state, as blaslt.cu's chosen algorithms);
 *    the parameters' copy, written by adamw_runs, outlives host writes
 *    elsewhere (wm_view). A · Bᵀ with at most 4 rows (decoding),
 *    K % 4 == 0: our GEMV (k_gemv_nt); A · B with at most 4 rows, N % 4 ==
 *    0 (GPT-2's [in, out] weights): k_gemv_nn; both fp32 in every mode.
 *  - attention, bf16 mode, Tq >= 16, head size 64/128: flash.cu (tensor-core
 *    flash attention, O(T) memory, causal tiles skipped).
 *  - attention, Tq = 1 (decoding a token): keys split in chunks of 32
 *    across blocks, merged by a second kernel (attention.cu, att_decode).
 *  - attention otherwise, Tq >= 16: cuBLAS batched products over
 *    materialized score matrices (chunks of batch rows) with our softmax /
 *    dS kernels between them; 1 < Tq < 16 or SMJ_CUDA_ATTN=fused: the
 *    tiled fused fp32 kernels (online softmax, LSE saved; the backward
 *    recomputes P from the LSE, one kernel for dq and one for dk/dv that
 *    loops over the query heads of its KV group, so GQA needs no atomics).
 *    SMJ_CUDA_ATTN=gemm forces the cuBLAS path (no flash) in bf16 mode.
 *    Flash attention at head size 64 on a Hopper GPU (a build for sm_90a)
 *    runs flash_sm90.cu's wgmma kernels; SMJ_CUDA_ATTN=mma keeps flash.cu's
 *    mma.sync kernels there, SMJ_CUDA_ATTN=wgmma insists on Hopper's.
 *  - everything else: our kernels below.
 *  - SMJ_CUDA_PROFILE=1: device time per op (event pairs), printed at fini.
 *
 * Determinism: every op is deterministic run to run on one GPU model (fixed
 * reduction orders, no floating-point atomics). embedding_bwd (embed_bwd.cu)
 * groups positions by id with a stable device sort and sums each id's rows
 * in position order: bit-identical to the reference.
 *
 * State: one smj_cuda per context (ex->impl): stream, cuBLAS handle,
 * scratch buffers, a pinned host word and the first error. No globals.
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
#include "cuda_common.cuh"
#include <mutex>

const char *const prec_name[4] = {"fp32", "tf32", "bf16", "bf16x"};

/* ------------------------------------------------------------ errors, profiler, scratch */
void record(smj_cuda *c, smj_status st, const char *fmt, ...) {
    if (c->capturing) { /* the graph is dropped and the ops run again without one */
        capture_fail(c, c->op ? c->op : "an error");
        return;
    }
    if (c->err != SMJ_OK) return;
    c->err = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

int ck_cuda(smj_cuda *c, cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return 1;
    record(c, e == cudaErrorMemoryAllocation ? SMJ_ERR_NOMEM : SMJ_ERR_UNSUPPORTED,
           "CUDA error in %s (%s, %s:%d): %s", c->op ? c->op : "?", what, file, line,
           cudaGetErrorString(e));
    return 0;
}
int ck_blas(smj_cuda *c, cublasStatus_t e, const char *what, const char *file, int line) {
    if (e == CUBLAS_STATUS_SUCCESS) return 1;
    record(c, e == CUBLAS_STATUS_ALLOC_FAILED ? SMJ_ERR_NOMEM : SMJ_ERR_UNSUPPORTED,
           "cuBLAS error in %s (%s, %s:%d): %s", c->op ? c->op : "?", what, file, line,
           cublasGetStatusString(e));
    return 0;
}
void launched(smj_cuda *c, const char *file, int line) {
    trace_mix(c, ((uint64_t)(uintptr_t)file << 16) ^ (uint64_t)line, file, line);
    ck_cuda(c, cudaGetLastError(), "kernel launch", file, line);
    if (c->sync_each) ck_cuda(c, cudaStreamSynchronize(c->stream), "SMJ_CUDA_SYNC", file, line);
}

/* Profiling: resolves the pending event pairs (synchronizes). */
void prof_flush(smj_cuda *c) {
    if (!c->npend) return;
    cudaEventSynchronize(c->pev[2 * (c->npend - 1) + 1]);
    for (int i = 0; i < c->npend; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->pev[2 * i], c->pev[2 * i + 1]) == cudaSuccess) c->prof[c->pidx[i]].ms += ms;
    }
    (void)cudaGetLastError();
    c->npend = 0;
}
void prof_begin(smj_cuda *c, const char *name) {
    c->pname = name;
    if (!c->profile) return;
    if (c->npend == PROF_EV) prof_flush(c);
    cudaEventRecord(c->pev[2 * c->npend], c->stream);
}
void prof_end(smj_cuda *c) {
    if (!c->profile || !c->pname) return;
    int e = 0;
    while (e < c->nprof && strcmp(c->prof[e].name, c->pname) != 0) e++;
    if (e == c->nprof) {
        if (c->nprof == PROF_ROWS) return;
        c->prof[c->nprof].name = c->pname; /* (a cleared table's old row: counted from zero) */
        c->prof[c->nprof].ms = 0;
        c->prof[c->nprof].calls = 0;
        c->nprof++;
    }
    c->prof[e].calls++;
    cudaEventRecord(c->pev[2 * c->npend + 1], c->stream);
    c->pidx[c->npend++] = e;
    c->pname = NULL;
}
/* A product's profile name: its kind ("matmul NT (fwd)"), or with
 * SMJ_CUDA_PROFILE_SHAPES=1 the kind and its shape, M x N x K of
 * C[M,N] = op(A)[M,K] op(B)[K,N] (past PROF_SHAPES shapes, the kind). */
const char *prof_matmul(smj_cuda *c, const char *kind, int64_t M, int64_t N, int64_t K) {
    if (!c->prof_shapes || !c->profile) return kind;
    char b[sizeof c->pshape[0]];
    snprintf(b, sizeof b, "%s %lldx%lldx%lld", kind, (long long)M, (long long)N, (long long)K);
    for (int i = 0; i < c->npshape; i++)
        if (strcmp(c->pshape[i], b) == 0) return c->pshape[i];
    if (c->npshape == PROF_SHAPES) return kind;
    memcpy(c->pshape[c->npshape], b, sizeof b);
    return c->pshape[c->npshape++];
}
void prof_print(smj_cuda *c) {
    prof_flush(c);
    double tot = 0;
    for (int i = 0; i < c->nprof; i++) tot += c->prof[i].ms;
    if (tot <= 0) return;
    int ord[PROF_ROWS];
    for (int i = 0; i < c->nprof; i++) ord[i] = i;
    for (int i = 1; i < c->nprof; i++)
        for (int j = i; j > 0 && c->prof[ord[j]].ms > c->prof[ord[j - 1]].ms; j--) {
            int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t;
        }
    fprintf(stderr, "cuda profile (SMJ_CUDA_PROFILE, matmul %s, attention %s): device time per op, whole run\n",
            prec_name[c->prec], c->attn == ATTN_FUSED ? "fused" : c->attn == ATTN_GEMM ? "gemm" : c->attn == ATTN_WGMMA ? "wgmma" : c->attn == ATTN_MMA ? "mma" : "auto");
    fprintf(stderr, "  %-34s %10s %7s %8s\n", "op", "ms", "share", "calls");
    for (int k = 0; k < c->nprof; k++) {
        int i = ord[k];
        fprintf(stderr, "  %-34s %10.2f %6.1f%% %8ld\n", c->prof[i].name, c->prof[i].ms, 100.0 * c->prof[i].ms / tot,
                c->prof[i].calls);
    }
    fprintf(stderr, "  %-34s %10.2f %6.1f%%\n", "total", tot, 100.0);
}

/* Profiling only: the op's time from here on counts under name (phases of
 * one op, e.g. "attention_bwd: dV, dP"). */
void prof_phase(smj_cuda *c, const char *name) {
    if (!c->profile) return;
    prof_end(c);
    prof_begin(c, name);
}

/* In sync mode an op also checks the device at its end. */
void op_end(smj_cuda *c) {
    if (c->sync_each) ck_cuda(c, cudaStreamSynchronize(c->stream), "SMJ_CUDA_SYNC", __FILE__, __LINE__);
    prof_end(c);
    c->op = NULL;
    c->n_home = c->n_only = 0; /* bf16_home / bf16_only speak of one op */
}

void *scratch(smj_cuda *c, size_t bytes) {
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->capturing) { /* a graph cannot hold memory freed after it */
        capture_fail(c, "the scratch buffer would grow");
        return NULL;
    }
    if (c->scratch) CK(c, cudaFree(c->scratch)); /* synchronizes: no kernel still reads it */
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t b = bytes + bytes / 4 + 4096;
    c->scratch_gen++;
    if (!CK(c, cudaMalloc(&c->scratch, b))) return NULL;
    c->scratch_bytes = b;
    return c->scratch;
}

/* ------------------------------------------------------------ memory hooks */

/* Host writes into device memory (upload, zero, the clearing in alloc) by
 * any context. The memory hooks have no context, so this counter is the
 * backend's process-wide state (with blaslt.cu's chosen algorithms): a
 * kept bf16 operand copy is valid only while it is unchanged (cast_of). */
std::atomic<unsigned long> host_writes{0};
/* the last HW_RING host writes' ranges, host write k at k % HW_RING (under
 * hw_mu, which orders the counter's increments with them) */
#define HW_RING 64
static struct { uintptr_t p; size_t n; } hw_ring[HW_RING];
static std::mutex hw_mu;
static void host_wrote(const void *p, size_t n) {
    std::lock_guard<std::mutex> l(hw_mu);
    const unsigned long k = host_writes.load();
    hw_ring[k % HW_RING].p = (uintptr_t)p;
    hw_ring[k % HW_RING].n = n;
    host_writes.store(k + 1);
}
bool host_touched(unsigned long since, const void *p, size_t n) {
    std::lock_guard<std::mutex> l(hw_mu);
    const unsigned long now = host_writes.load();
    if (now - since > HW_RING) return true;
    for (unsigned long k = since; k < now; k++) {
        const uintptr_t a = hw_ring[k % HW_RING].p, e = a + hw_ring[k % HW_RING].n;
        if (a < (uintptr_t)p + n && (uintptr_t)p < e) return true;
    }
    return false;
}

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
    host_wrote(p, bytes);
    return p;
}
static void cu_free(void *p) { if (p) cudaFree(p); }
/* Downloads up to BOUNCE bytes (a train step's losses) go through a pinned
 * buffer, copied on the legacy stream (ordered after every context's
 * blocking stream, as cudaMemcpy is) and waited for by a stream
 * synchronize. Process-wide as host_writes (the hooks have no context),
 * under its own lock; made at the first use, kept for the process. */
#define BOUNCE (1u << 20)
static std::mutex bounce_mu;
static void *bounce;
/* Uploads up to BOUNCE bytes (a step's tokens) go through a ring of UP_N
 * pinned buffers, copied on the legacy stream without waiting: the host
 * returns at once, and the copy stays ordered between the work queued
 * before and after it, as cudaMemcpy's. A buffer is written again only
 * once its last copy has completed (its event). A pageable cudaMemcpy
 * waits for the device's queue first: two of them before a step's first
 * kernel left the GPU idle ~90 us a Llama 110M step (bench/RESULTS.md
 * round 41). */
#define UP_N 4
static struct { void *buf; cudaEvent_t ev; int used; } up_ring[UP_N];
static int up_next, up_broken;
static int upload_async(void *dst, const void *src, size_t n) {
    std::lock_guard<std::mutex> l(bounce_mu);
    if (up_broken) return 0;
    auto &u = up_ring[up_next];
    if (!u.buf) {
        if (cudaMallocHost(&u.buf, BOUNCE) != cudaSuccess ||
            cudaEventCreateWithFlags(&u.ev, cudaEventDisableTiming) != cudaSuccess) {
            (void)cudaGetLastError();
            if (u.buf) cudaFreeHost(u.buf);
            u.buf = NULL;
            up_broken = 1;
            return 0;
        }
    } else if (u.used && cudaEventSynchronize(u.ev) != cudaSuccess) {
        return 0;
    }
    memcpy(u.buf, src, n);
    if (cudaMemcpyAsync(dst, u.buf, n, cudaMemcpyHostToDevice, 0) != cudaSuccess ||
        cudaEventRecord(u.ev, 0) != cudaSuccess)
        return 0;
    u.used = 1;
    up_next = (up_next + 1) % UP_N;
    return 1;
}
static void cu_upload(void *dst, const void *src, size_t n) {
    if (n && !(n <= BOUNCE && upload_async(dst, src, n))) cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
    host_wrote(dst, n);
}
static void cu_download(void *dst, const void *src, size_t n) {
    if (!n) return;
    if (n <= BOUNCE) {
        std::lock_guard<std::mutex> l(bounce_mu);
        if (!bounce && cudaMallocHost(&bounce, BOUNCE) != cudaSuccess) {
            (void)cudaGetLastError();
            bounce = NULL;
        }
        if (bounce) {
            if (cudaMemcpyAsync(bounce, src, n, cudaMemcpyDeviceToHost, 0) == cudaSuccess &&
                cudaStreamSynchronize(0) == cudaSuccess)
                memcpy(dst, bounce, n);
            else
                memset(dst, 0xFF, n);
            return;
        }
    }
    if (cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost) != cudaSuccess) memset(dst, 0xFF, n);
}
static void cu_zero(void *p, size_t n) {
    if (n) cudaMemset(p, 0, n);
    host_wrote(p, n);
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
/* nb rows of n4 float4 (source rows sst4 float4 apart), 4 per thread */
__global__ void k_to_bf16_rows_v4(__nv_bfloat162 *dst, const float4 *src, int64_t n4, int64_t sst4, int nb) {
    int64_t tot = n4 * nb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = i / n4;
        float4 v = src[b * sst4 + (i - b * n4)];
        dst[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        dst[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
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
void to_bf16(smj_cuda *c, __nv_bfloat16 *dst, const float *src, int64_t n, int64_t sst, int nb) {
    if (n <= 0 || nb <= 0) return;
    unsigned g = blocks_for(n * nb / 4 + 1, 256, (int64_t)c->n_sm * 16);
    if (nb == 1 && n % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 3) == 0)
        k_to_bf16_v4<<<g, 256, 0, c->stream>>>((__nv_bfloat162 *)dst, (const float4 *)src, n / 4);
    else if (n % 4 == 0 && sst % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 3) == 0)
        k_to_bf16_rows_v4<<<g, 256, 0, c->stream>>>((__nv_bfloat162 *)dst, (const float4 *)src, n / 4, sst / 4, nb);
    else
        k_to_bf16<<<g, 256, 0, c->stream>>>(dst, src, n, sst, nb);
    LAUNCHED(c);
}

/* Row-major batched product: C[M,N] (ldc) = alpha op(A)[M,K] op(B)[K,N] +
 * beta C, batch stride sA/sB/sC; op(X) = X^T when tX (A stored [K,M] with
 * row stride lda, B stored [N,K]). A and B are fp32 or bf16 (ty), C fp32
 * (gemm) or of type cty (gemm_t: bf16 C, rounded to nearest from the fp32
 * sums). Column-major cuBLAS computes C^T = op(B)^T op(A)^T: operands
 * swapped. Compute: fp32 data with PREC_FP32 -> plain fp32 (no tensor
 * cores), PREC_TF32 -> TF32 tensor cores, PREC_BF16X -> cuBLAS rounds fp32
 * inputs to bf16 itself; bf16 data -> bf16 tensor cores, fp32
 * accumulation. */
static int gemm_t(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                  int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, float beta, void *C, int64_t ldc,
                  int64_t sC, int batch, cudaDataType ty, cudaDataType cty) {
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: dimension over 2^31 (M %lld N %lld K %lld)", c->op, (long long)M,
               (long long)N, (long long)K);
        return 0;
    }
    trace_mix(c, (uint64_t)(uintptr_t)A, "product A, K", (int)K);
    trace_mix(c, (uint64_t)(uintptr_t)B, "product B, K", (int)K);
    trace_mix(c, (uint64_t)(uintptr_t)C, "product C, K", (int)K);
    trace_mix(c, (uint64_t)(M * 31 + N * 17 + K), "product shape, K", (int)K);
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
    if (ty == CUDA_R_32F && c->prec == PREC_TF32) ct = CUBLAS_COMPUTE_32F_FAST_TF32;
    if (ty == CUDA_R_32F && c->prec == PREC_BF16X) ct = CUBLAS_COMPUTE_32F_FAST_16BF;
    if (batch == 1 && ty == CUDA_R_16BF && cty == CUDA_R_16BF && !tA && tB && alpha == 1.0f && beta == 0.0f &&
        gemm_nt_sm90(c, M, N, K, (const __nv_bfloat16 *)A, lda, (const __nv_bfloat16 *)B, ldb, (__nv_bfloat16 *)C, ldc))
        return 1;
    if (batch == 1 && ty == CUDA_R_16BF && c->gemm != GEMM_EX &&
        lt_gemm(c, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, cty))
        return 1;
    if (batch == 1)
        return CKB(c, cublasGemmEx(c->blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
                                   (int)M, (int)K, &alpha, B, ty, (int)ldb, A, ty, (int)lda, &beta, C, cty,
                                   (int)ldc, ct, CUBLAS_GEMM_DEFAULT));
    return CKB(c, cublasGemmStridedBatchedEx(c->blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             (int)N, (int)M, (int)K, &alpha, B, ty, (int)ldb, sB, A, ty, (int)lda, sA,
                                             &beta, C, cty, (int)ldc, sC, batch, ct, CUBLAS_GEMM_DEFAULT));
}
int gemm(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
         int64_t sA, const void *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC, int batch,
         cudaDataType ty) {
    return gemm_t(c, tA, tB, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch, ty, CUDA_R_32F);
}

/* bf16 product whose A is over bc_max elements (dlogits [N,V] in the LM
 * head's backward): A is cast a block at a time into the scratch buffer, so
 * the workspace stays at bc_max bf16 values instead of a copy of all of A.
 * A stored [M,K] (no tA): blocks of rows give blocks of C's rows. A stored
 * [K,M] (tA): blocks of K rows, each product accumulated into C (B's rows
 * or columns at the same k offset, in its kept copy). */
static void matmul_big_a(smj_cuda *c, float *Cm, const float *A, const float *Bm, int64_t M, int64_t N, int64_t K,
                         int tA, int tB, int acc) {
    const char *name = c->pname;
    prof_phase(c, "matmul: bf16 casts");
    fp32_in(c, A, M * K);
    const __nv_bfloat16 *b16 = cast_of(c, Bm, K * N, NULL);
    int64_t ldb = tB ? K : N, inner = tA ? M : K;
    int64_t blk = c->bc_max / inner;
    if (tA) blk = blk / 64 * 64; /* k offsets into B stay 16-byte aligned */
    if (blk < 64) blk = 64;
    int64_t outer = tA ? K : M;
    if (blk > outer) blk = outer;
    __nv_bfloat16 *s = (__nv_bfloat16 *)scratch(c, 2 * (size_t)(blk * inner));
    if (!s || !b16) return;
    for (int64_t o = 0; o < outer; o += blk) {
        int64_t n = outer - o < blk ? outer - o : blk;
        prof_phase(c, "matmul: bf16 casts");
        to_bf16(c, s, A + o * inner, n * inner, 0, 1);
        prof_phase(c, name);
        if (!tA)
            gemm(c, 0, tB, n, N, K, 1.0f, s, K, 0, b16, ldb, 0, acc ? 1.0f : 0.0f, Cm + o * N, N, 0, 1, CUDA_R_16BF);
        else
            gemm(c, 1, tB, M, N, n, 1.0f, s, M, 0, tB ? b16 + o : b16 + o * N, ldb, 0, (o > 0 || acc) ? 1.0f : 0.0f, Cm,
                 N, 0, 1, CUDA_R_16BF);
    }
}

/* C[M,N] = (acc ? C : 0) + A[M,K] · B[N,K]^T for a few rows (decoding:
 * M = 1), fp32: one warp per output column n reads B's row n once with
 * 16-byte loads, GEMV_U of them per lane issued before any is used (the
 * weight streams at a good share of the bandwidth only with many loads in
 * flight), for all M rows of A (tiny, served from cache). cuBLAS takes
 * ~7.6 us per such product on an H200 against the ~1-2 us the weight's
 * bytes need. K % 4 == 0, A and B 16-byte aligned. */
#define GEMV_MAXM 4
#define GEMV_U 8
template <int MR>
__global__ void __launch_bounds__(128) k_gemv_nt(float *C, const float *A, const float *B, int64_t N, int64_t K,
                                                 int acc) {
    int64_t n = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float4 *b4 = (const float4 *)(B + n * K), *a4 = (const float4 *)A;
    int64_t K4 = K / 4;
    float s[MR];
#pragma unroll
    for (int m = 0; m < MR; m++) s[m] = 0;
    for (int64_t k0 = lane; k0 < K4; k0 += 32 * GEMV_U) {
        float4 b[GEMV_U];
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int64_t k = k0 + 32 * u;
            b[u] = k < K4 ? __ldg(b4 + k) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int64_t k = k0 + 32 * u;
            if (k >= K4) break;
#pragma unroll
            for (int m = 0; m < MR; m++) {
                float4 a = __ldg(a4 + m * K4 + k);
                s[m] += a.x * b[u].x + a.y * b[u].y + a.z * b[u].z + a.w * b[u].w;
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++) {
        float v = warp_sum(s[m]);
        if (lane == 0) C[m * N + n] = acc ? C[m * N + n] + v : v;
    }
}
static int gemv_ok(int64_t M, int64_t K, int tA, int tB, const float *A, const float *B) {
    return !tA && tB && M <= GEMV_MAXM && K % 4 == 0 && (uintptr_t)A % 16 == 0 && (uintptr_t)B % 16 == 0;
}
static void gemv_nt(smj_cuda *c, float *Cm, const float *A, const float *Bm, int64_t M, int64_t N, int64_t K,
                    int acc) {
    unsigned grid = (unsigned)((N + 3) / 4);
    switch (M) {
    case 1: k_gemv_nt<1><<<grid, 128, 0, c->stream>>>(Cm, A, Bm, N, K, acc); break;
    case 2: k_gemv_nt<2><<<grid, 128, 0, c->stream>>>(Cm, A, Bm, N, K, acc); break;
    case 3: k_gemv_nt<3><<<grid, 128, 0, c->stream>>>(Cm, A, Bm, N, K, acc); break;
    default: k_gemv_nt<4><<<grid, 128, 0, c->stream>>>(Cm, A, Bm, N, K, acc); break;
    }
    LAUNCHED(c);
}

/* C[M,N] = (acc ? C : 0) + A[M,K] · B[K,N] for a few rows where B is stored
 * [K,N] (GPT-2's weights are [in, out]; a bias gradient's ones · dout),
 * fp32. Block (tile, split) takes 128 columns (a float4 per lane) over its
 * split's rows of B, the 8 warps a row at a time each (a row's 512 bytes
 * read by one warp, 8 rows' loads in flight), the warps' sums added in
 * order into part[split][M][N]; k_gemv_nn_sum adds the splits in order
 * (deterministic, no atomics). About four blocks an SM (a bias gradient
 * streams all of B once: ~64 KiB in flight an SM to approach the HBM's
 * rate). cuBLAS took ~15 us per such product on an H200. N % 4 == 0, B
 * 16-byte aligned. */
#define GEMV_NN_U 8
template <int MR>
__global__ void __launch_bounds__(256) k_gemv_nn(float *part, const float *A, const float *B, int64_t N, int64_t K,
                                                 int64_t rows) {
    __shared__ float4 red[8][MR][32];
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t n4 = (int64_t)blockIdx.x * 32 + lane, k0 = (int64_t)blockIdx.y * rows;
    int64_t k1 = k0 + rows < K ? k0 + rows : K;
    bool ok = 4 * n4 < N;
    float4 s[MR];
#pragma unroll
    for (int m = 0; m < MR; m++) s[m] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int64_t kb = k0 + w; ok && kb < k1; kb += 8 * GEMV_NN_U) {
        float4 b[GEMV_NN_U];
#pragma unroll
        for (int u = 0; u < GEMV_NN_U; u++) {
            int64_t k = kb + 8 * u;
            b[u] = k < k1 ? __ldg((const float4 *)(B + k * N) + n4) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < GEMV_NN_U; u++) {
            int64_t k = kb + 8 * u;
            if (k >= k1) break;
#pragma unroll
            for (int m = 0; m < MR; m++) {
                float a = __ldg(A + m * K + k);
                s[m].x += a * b[u].x; s[m].y += a * b[u].y; s[m].z += a * b[u].z; s[m].w += a * b[u].w;
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++) red[w][m][lane] = s[m];
    __syncthreads();
    if (w != 0 || !ok) return;
#pragma unroll
    for (int m = 0; m < MR; m++) {
        float4 t = red[0][m][lane];
        for (int j = 1; j < 8; j++) {
            float4 v = red[j][m][lane];
            t.x += v.x; t.y += v.y; t.z += v.z; t.w += v.w;
        }
        ((float4 *)(part + ((int64_t)blockIdx.y * MR + m) * N))[n4] = t;
    }
}
__global__ void k_gemv_nn_sum(float *C, const float *part, int64_t MN, int splits, int acc) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= MN) return;
    float t = 0;
    for (int p = 0; p < splits; p++) t += part[(int64_t)p * MN + i];
    C[i] = acc ? C[i] + t : t;
}
static int gemv_nn_ok(int64_t M, int64_t N, int tA, int tB, const float *B) {
    return !tA && !tB && M <= GEMV_MAXM && N % 4 == 0 && (uintptr_t)B % 16 == 0;
}
static void gemv_nn(smj_cuda *c, float *Cm, const float *A, const float *Bm, int64_t M, int64_t N, int64_t K,
                    int acc) {
    int64_t tiles = (N + 127) / 128, splits = (4 * (int64_t)c->n_sm + tiles - 1) / tiles;
    if (splits > K / 32) splits = K / 32;
    if (splits < 1) splits = 1;
    int64_t rows = (K + splits - 1) / splits;
    splits = (K + rows - 1) / rows;
    float *part = (float *)scratch(c, sizeof(float) * (size_t)(splits * M * N));
    if (!part) return;
    dim3 grid((unsigned)tiles, (unsigned)splits);
    switch (M) {
    case 1: k_gemv_nn<1><<<grid, 256, 0, c->stream>>>(part, A, Bm, N, K, rows); break;
    case 2: k_gemv_nn<2><<<grid, 256, 0, c->stream>>>(part, A, Bm, N, K, rows); break;
    case 3: k_gemv_nn<3><<<grid, 256, 0, c->stream>>>(part, A, Bm, N, K, rows); break;
    default: k_gemv_nn<4><<<grid, 256, 0, c->stream>>>(part, A, Bm, N, K, rows); break;
    }
    LAUNCHED(c);
    k_gemv_nn_sum<<<blocks_for(M * N, 256, INT32_MAX), 256, 0, c->stream>>>(Cm, part, M * N, (int)splits, acc);
    LAUNCHED(c);
}

static void cu_matmul(const smj_exec *ex, float *Cm, const float *A, const float *Bm, int64_t M, int64_t N,
                      int64_t K, int tA, int tB, int acc) {
    OP_BEGIN_L("matmul"); /* a matmul keeps the bf16 copies of its operands valid */
    c->pname = prof_matmul(c, tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)", M, N, K);
    if (M <= 0 || N <= 0) { op_end(c); return; }
    if (acc) cast_written(c, Cm, M * N);
    else cast_overwritten(c, Cm, M * N);
    if (K <= 0) {
        if (!acc) CK(c, cudaMemsetAsync(Cm, 0, sizeof(float) * (size_t)(M * N), c->stream));
        op_end(c);
        return;
    }
    int64_t lda = tA ? M : K, ldb = tB ? K : N;
    /* (an output bf16_tight named is the bf16 product at every shape, and
     * such a tensor is read as bf16 by every product) */
    const int tight = (!acc && tight_out(c, Cm, M * N)) || tight_in(c, A, M * K) || tight_in(c, Bm, K * N);
    int bf16 = c->prec == PREC_BF16 && (tight || (K >= 16 && M >= 16 && !gemv_ok(M, K, tA, tB, A, Bm)));
    if (!bf16) { /* the fp32 data itself (bf16 operands come through cast_of) */
        fp32_in(c, A, M * K);
        fp32_in(c, Bm, K * N);
    }
    if (!tight && gemv_ok(M, K, tA, tB, A, Bm)) {
        c->pname = "matmul NT (gemv)";
        gemv_nt(c, Cm, A, Bm, M, N, K, acc);
        op_end(c);
        return;
    }
    if (!tight && gemv_nn_ok(M, N, tA, tB, Bm)) {
        c->pname = "matmul NN (gemv)";
        gemv_nn(c, Cm, A, Bm, M, N, K, acc);
        op_end(c);
        return;
    }
    /* bf16 pays when the product is large against its operands; a few rows
     * (decoding: M = 1) through a weight would spend more on casting the
     * weight than on the product, so those stay fp32 */
    if (bf16) {
        /* bf16 copies of both operands (kept or new), fp32 C */
        int64_t na = M * K, nb = K * N, oa = (na + 127) / 128 * 128;
        const int big_a = cast_big(c, A, na), big_b = cast_big(c, Bm, nb);
        if (big_a && !big_b && !tight) { /* the LM head's dlogits: A in blocks, see below */
            matmul_big_a(c, Cm, A, Bm, M, N, K, tA, tB, acc);
            op_end(c);
            return;
        }
        /* An output bf16_only promised is the bf16 product: written as bf16
         * alone (its copy, lazy: ops after read it through the copy), or,
         * with no copy to keep (sizes, SMJ_CUDA_BF16_KEEP), the same
         * product's bf16 values unpacked into C (the same numbers either
         * way). The copies of operands not kept and that bf16 product go to
         * the scratch buffer. */
        int64_t nc = M * N;
        int promised = !acc && only_promised(c, Cm, nc);
        int round = promised && !copy_room(c, Cm, nc);
        int64_t ns = (big_a || big_b ? oa + nb : 0), nr = round ? nc : 0;
        __nv_bfloat16 *s = ns + nr ? (__nv_bfloat16 *)scratch(c, 2 * (size_t)(ns + nr)) : NULL;
        if (ns + nr && !s) { op_end(c); return; }
        const __nv_bfloat16 *a16, *b16;
        cast_pair(c, A, na, ns ? s : NULL, Bm, nb, ns ? s + oa : NULL, &a16, &b16);
        if (!a16 || !b16) { op_end(c); return; }
        __nv_bfloat16 *c16 = promised && !round ? shadow_of(c, Cm, nc) : NULL;
        if (c16 && !fp32_out(c, Cm, nc, c16)) {
            gemm_t(c, tA, tB, M, N, K, 1.0f, a16, lda, 0, b16, ldb, 0, 0.0f, c16, N, 0, 1, CUDA_R_16BF, CUDA_R_16BF);
        } else if (round) {
            gemm_t(c, tA, tB, M, N, K, 1.0f, a16, lda, 0, b16, ldb, 0, 0.0f, s + ns, N, 0, 1, CUDA_R_16BF, CUDA_R_16BF);
            bf16_to_f32(c, Cm, s + ns, nc);
        } else {
            if (c16) cast_written(c, Cm, nc); /* (not reached: fp32_out takes a promised output's copy) */
            gemm(c, tA, tB, M, N, K, 1.0f, a16, lda, 0, b16, ldb, 0, acc ? 1.0f : 0.0f, Cm, N, 0, 1, CUDA_R_16BF);
        }
    } else {
        gemm(c, tA, tB, M, N, K, 1.0f, A, lda, 0, Bm, ldb, 0, acc ? 1.0f : 0.0f, Cm, N, 0, 1, CUDA_R_32F);
    }
    op_end(c);
}

/* ------------------------------------------------------------ embedding */

/* A row per grid row, V floats a thread (V = 4: 16-byte copies where C and
 * the pointers allow); o16 (or NULL): out's bf16 copy, written beside it. */
template <int V>
__global__ void k_embedding_fwd(float *out, __nv_bfloat16 *o16, const int32_t *ids, const float *wte, int64_t N,
                                int C) {
    int64_t n = blockIdx.y;
    int cc = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (n >= N || cc >= C) return;
    if (V == 4) {
        float4 x = *(const float4 *)(wte + (int64_t)ids[n] * C + cc);
        *(float4 *)(out + n * C + cc) = x;
        if (o16) st_bf16x4(o16 + n * C + cc, x);
    } else {
        out[n * C + cc] = wte[(int64_t)ids[n] * C + cc];
        if (o16) o16[n * C + cc] = __float2bfloat16_rn(out[n * C + cc]);
    }
}

/* OP_BEGIN_W: the kept bf16 copies of other tensors stay (GPT-2 splits its
 * q|k|v product with this op between products, and gathers dq|dk|dv into
 * dqkv: the copy written beside the output is what attention and the
 * products after read). */
static void cu_embedding_fwd(const smj_exec *ex, float *out, const int32_t *ids, const float *wte, int64_t N, int C) {
    OP_BEGIN_W("embedding_fwd");
    cast_written(c, out, N * C);
    __nv_bfloat16 *o16 = N > 0 && C > 0 ? shadow_of(c, out, N * C) : NULL;
    int v4 = C % 4 == 0 && ((uintptr_t)out | (uintptr_t)wte) % 16 == 0 && (uintptr_t)o16 % 8 == 0;
    int cols = v4 ? C / 4 : C;
    for (int64_t n0 = 0; n0 < N; n0 += 65535) {
        int64_t nn = N - n0 < 65535 ? N - n0 : 65535;
        dim3 grid((unsigned)((cols + 127) / 128), (unsigned)nn);
        __nv_bfloat16 *b = o16 ? o16 + n0 * C : NULL;
        if (v4) k_embedding_fwd<4><<<grid, 128, 0, c->stream>>>(out + n0 * C, b, ids + n0, wte, nn, C);
        else k_embedding_fwd<1><<<grid, 128, 0, c->stream>>>(out + n0 * C, b, ids + n0, wte, nn, C);
        LAUNCHED(c);
    }
    op_end(c);
}

/* ------------------------------------------------------------ rope */

/* In fp32 (the rotation of a pair in float: within 1e-6 of the double
 * reference). Reads x as X from xi (fp32, or an exact bf16 copy); writes
 * xo (fp32, NULL: not written) and x16 (x's bf16 copy, NULL: none; may be
 * xi itself: the copy rotated in place). V pairs per thread (V = 4: 16-byte
 * fp32 / 8-byte bf16 accesses, HS % 8 == 0 and aligned pointers); index
 * math in I (32 bits when it fits: 64-bit division is slow). */
template <typename X, int V, typename I>
__global__ void k_rope(float *xo, __nv_bfloat16 *x16, const X *xi, const float *cs, const float *sn, I rows, int T,
                       int NH, int HS, int pos0, int64_t rs, float sgn) {
    const int h2 = HS / 2, q = h2 / V;
    I idx = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * q) return;
    I row = idx / q, bt = row / NH; /* row over [B, T, NH] */
    int i = (int)(idx - row * q) * V, t = (int)(bt % T);
    int64_t e = (int64_t)bt * rs + (int64_t)(row - bt * NH) * HS + i, tp = (int64_t)(pos0 + t) * h2 + i;
    float a[V], b[V], co[V], si[V], o0[V], o1[V];
    if (V == 4) {
        float4 va = ld4(xi + e, 0), vb = ld4(xi + e + h2, 0), vc = ld4(cs + tp, 0), vs = ld4(sn + tp, 0);
        a[0] = va.x; a[1] = va.y; a[2] = va.z; a[3] = va.w;
        b[0] = vb.x; b[1] = vb.y; b[2] = vb.z; b[3] = vb.w;
        co[0] = vc.x; co[1] = vc.y; co[2] = vc.z; co[3] = vc.w;
        si[0] = vs.x; si[1] = vs.y; si[2] = vs.z; si[3] = vs.w;
    } else {
        for (int k = 0; k < V; k++) {
            a[k] = ld1(xi, e + k);
            b[k] = ld1(xi, e + h2 + k);
            co[k] = cs[tp + k];
            si[k] = sn[tp + k];
        }
    }
#pragma unroll
    for (int k = 0; k < V; k++) rope_rot(a[k], b[k], co[k], sgn * si[k], o0[k], o1[k]);
    if (V == 4) {
        float4 r0 = make_float4(o0[0], o0[1], o0[2], o0[3]), r1 = make_float4(o1[0], o1[1], o1[2], o1[3]);
        if (xo) { ((float4 *)(xo + e))[0] = r0; ((float4 *)(xo + e + h2))[0] = r1; }
        if (x16) { st_bf16x4(x16 + e, r0); st_bf16x4(x16 + e + h2, r1); }
    } else {
        for (int k = 0; k < V; k++) {
            if (xo) { xo[e + k] = o0[k]; xo[e + h2 + k] = o1[k]; }
            if (x16) { x16[e + k] = __float2bfloat16_rn(o0[k]); x16[e + h2 + k] = __float2bfloat16_rn(o1[k]); }
        }
    }
}
template <typename X>
static void rope_launch(smj_cuda *c, float *xo, __nv_bfloat16 *x16, const X *xi, const float *cs, const float *sn,
                        int64_t rows, int T, int NH, int HS, int pos0, int64_t rs, float sgn) {
    int v4 = HS % 8 == 0 && rs % 4 == 0 && ((uintptr_t)xo | (uintptr_t)xi | (uintptr_t)cs | (uintptr_t)sn) % 16 == 0 &&
             (uintptr_t)x16 % 8 == 0;
    int64_t total = rows * (HS / 2) / (v4 ? 4 : 1);
    unsigned g = blocks_for(total, 256, INT32_MAX);
    if (rows * HS < INT32_MAX) {
        if (v4) k_rope<X, 4, int><<<g, 256, 0, c->stream>>>(xo, x16, xi, cs, sn, (int)rows, T, NH, HS, pos0, rs, sgn);
        else k_rope<X, 1, int><<<g, 256, 0, c->stream>>>(xo, x16, xi, cs, sn, (int)rows, T, NH, HS, pos0, rs, sgn);
    } else {
        if (v4) k_rope<X, 4, int64_t><<<g, 256, 0, c->stream>>>(xo, x16, xi, cs, sn, rows, T, NH, HS, pos0, rs, sgn);
        else k_rope<X, 1, int64_t><<<g, 256, 0, c->stream>>>(xo, x16, xi, cs, sn, rows, T, NH, HS, pos0, rs, sgn);
    }
    LAUNCHED(c);
}

/* dst16 = bf16(src) over columns c0..c0+w of N rows rs apart (the columns a
 * rotation over part of each row leaves as they are). */
__global__ void k_cast_cols(__nv_bfloat16 *dst, const float *src, int64_t N, int64_t rs, int64_t c0, int64_t w) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N * w; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / w, e = r * rs + c0 + (i - r * w);
        dst[e] = __float2bfloat16_rn(src[e]);
    }
}

/* bf16 mode: rope writes x's bf16 copy too (forward: flash attention reads
 * q, k as bf16; backward: the Q/K products read dq, dk next), alone when
 * bf16_only promised x (fp32_out). A promised x whose values are an exact
 * copy (a product wrote q as bf16 alone) is rotated in that copy, in place:
 * x stays unwritten, the copy stands for it. The tensor is x's whole rows,
 * [B*T, rs]: a copy written here holds the columns past the rotated heads
 * too (a fused dq|dk|dv's dv, cast from fp32). */
static void rope(const smj_exec *ex, const char *name, float *x, const float *cs, const float *sn, int B, int T,
                 int NH, int HS, int pos0, int64_t rs, float sgn) {
    OP_BEGIN_L(name);
    int64_t W = (int64_t)NH * HS, N = (int64_t)B * T, rows = N * NH;
    if (!rs) rs = W;
    int64_t n = N * rs;
    fp32_in(c, cs, (int64_t)(pos0 + T) * (HS / 2));
    fp32_in(c, sn, (int64_t)(pos0 + T) * (HS / 2));
    if (rows > 0 && HS >= 2) {
        __nv_bfloat16 *xe = only_promised(c, x, n) ? (__nv_bfloat16 *)exact_copy(c, x, n) : NULL;
        if (xe) {
            rope_launch(c, (float *)NULL, xe, (const __nv_bfloat16 *)xe, cs, sn, rows, T, NH, HS, pos0, rs, sgn);
        } else {
            cast_written(c, x, n); /* (read too: a lazy x is written first) */
            __nv_bfloat16 *x16 = shadow_of(c, x, n);
            if (x16 && rs > W) {
                k_cast_cols<<<blocks_for(N * (rs - W), 256, (int64_t)c->n_sm * 16), 256, 0, c->stream>>>(
                    x16, x, N, rs, W, rs - W);
                LAUNCHED(c);
            }
            rope_launch(c, fp32_out(c, x, n, x16), x16, (const float *)x, cs, sn, rows, T, NH, HS, pos0, rs, sgn);
        }
    }
    op_end(c);
}
static void cu_rope_fwd(const smj_exec *ex, float *x, const float *cs, const float *sn, int B, int T, int NH, int HS,
                        int pos0, int64_t rs) {
    rope(ex, "rope_fwd", x, cs, sn, B, T, NH, HS, pos0, rs, 1.0f);
}
static void cu_rope_bwd(const smj_exec *ex, float *dx, const float *cs, const float *sn, int B, int T, int NH, int HS,
                        int pos0, int64_t rs) {
    rope(ex, "rope_bwd", dx, cs, sn, B, T, NH, HS, pos0, rs, -1.0f);
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

/* grad_ctl: sumsq's two kernels, the second also summing the losses (in
 * double, a fixed order) and writing the trainer's decision into the
 * control block (one thread, the same double arithmetic as the host's). */
__global__ void k_grad_ctl(smj_step_ctl *ctl, const double *part, int P, const float *losses, int64_t nl, float clip,
                           int skip_nonfinite) {
    __shared__ double sh[32];
    double s = 0, ls = 0;
    for (int i = threadIdx.x; i < P; i += blockDim.x) s += part[i];
    s = block_sum_d(s, sh); /* (as k_sum_parts: the same value) */
    for (int64_t i = threadIdx.x; i < nl; i += blockDim.x) ls += (double)losses[i];
    ls = block_sum_d(ls, sh);
    const int bad = !isfinite(ls);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        float gs = 1.0f;
        if (clip > 0 && norm > clip) {
            const float coef = (float)((double)clip / (norm + 1e-6));
            if (coef < 1.0f) gs = coef;
        }
        ctl->sumsq = s;
        ctl->loss_sum = ls;
        ctl->gs = gs;
        ctl->skip = skip_nonfinite && (bad || !isfinite(norm));
    }
}
static void cu_grad_ctl(const smj_exec *ex, smj_step_ctl *ctl, const float *g, int64_t n, const float *losses,
                       int64_t nl, float clip, int skip_nonfinite) {
    OP_BEGIN("sumsq");
    unsigned P = blocks_for(n, 256, (int64_t)c->n_sm * 4);
    double *d = c->err == SMJ_OK ? (double *)scratch(c, sizeof(double) * (P + 1)) : NULL;
    if (!d) { /* after an error: no update (as sumsq's NaN) */
        CK(c, cudaMemsetAsync(&ctl->skip, 0xFF, sizeof ctl->skip, c->stream));
    } else {
        if (n > 0) {
            k_sumsq_part<<<P, 256, 0, c->stream>>>(d + 1, g, n);
            LAUNCHED(c);
        }
        k_grad_ctl<<<1, 256, 0, c->stream>>>(ctl, d + 1, n > 0 ? (int)P : 0, losses, nl, clip, skip_nonfinite);
        LAUNCHED(c);
    }
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
        if (ex->bf16_matmul) c->prec = PREC_BF16; /* smj_ctx_options.bf16_matmul; the variables override it */
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
        /* SMJ_CUDA_BF16_KEEP=n: largest operand kept as a bf16 copy (elements;
         * small values let the op checker reach the blocked paths), copies in
         * the caller's memory too (by default those take no memory: any size) */
        const char *kp = getenv("SMJ_CUDA_BF16_KEEP");
        c->bc_max = kp && atol(kp) > 0 ? (int64_t)atol(kp) : BC_MAX;
        c->ext_max = kp && atol(kp) > 0 ? c->bc_max : INT64_MAX;
        /* SMJ_CUDA_GRAPHS=0: no graphs (decoding and training launch every kernel) */
        const char *gr = getenv("SMJ_CUDA_GRAPHS");
        c->no_graphs = gr && strcmp(gr, "0") == 0;
        /* SMJ_CUDA_GRAPH_LOG=1: why a train step's recording was not kept, on stderr */
        const char *gl = getenv("SMJ_CUDA_GRAPH_LOG");
        if (gl && strcmp(gl, "0") != 0) c->tlog = trace_log_new();
        /* SMJ_CUDA_DECODE_BLOCK=0: one-token steps run the ops one by one */
        const char *db = getenv("SMJ_CUDA_DECODE_BLOCK");
        c->no_dec_block = db && strcmp(db, "0") == 0;
        const char *at = getenv("SMJ_CUDA_ATTN");
        if (at && *at) {
            if (strcmp(at, "fused") == 0) c->attn = ATTN_FUSED;
            else if (strcmp(at, "gemm") == 0) c->attn = ATTN_GEMM;
            else if (strcmp(at, "mma") == 0) c->attn = ATTN_MMA;
            else if (strcmp(at, "wgmma") == 0) c->attn = ATTN_WGMMA;
            else if (strcmp(at, "auto") != 0) {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_ATTN=%s: want auto, mma, wgmma, fused or gemm", at);
                ok = 0;
            }
#ifndef SMJ_SM90A
            if (c->attn == ATTN_WGMMA) {
                record(c, SMJ_ERR_UNSUPPORTED, "SMJ_CUDA_ATTN=wgmma: this build has no sm_90a kernels (GPU_ARCH without 90a)");
                ok = 0;
            }
#endif
            if (c->attn == ATTN_WGMMA && prop.major * 10 + prop.minor != 90) {
                record(c, SMJ_ERR_UNSUPPORTED, "SMJ_CUDA_ATTN=wgmma needs a Hopper GPU (compute capability 9.0), not %d.%d",
                       prop.major, prop.minor);
                ok = 0;
            }
        }
        const char *tm = getenv("SMJ_CUDA_TMA");
        c->tma = !(tm && strcmp(tm, "0") == 0);
        const char *ft = getenv("SMJ_CUDA_FWD_TILE");
        c->fwd_tile = 128;
        if (ft && *ft) {
            if (strcmp(ft, "64") == 0) c->fwd_tile = 64;
            else if (strcmp(ft, "128") != 0) {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_FWD_TILE=%s: want 64 or 128", ft);
                ok = 0;
            }
        }
        const char *xf = getenv("SMJ_CUDA_XENT_FUSED");
        c->xent_fused = !(xf && strcmp(xf, "0") == 0);
        /* SMJ_CUDA_GEMM: how bf16 products are called (blaslt.cu), default tune */
        const char *gm = getenv("SMJ_CUDA_GEMM");
        c->gemm = GEMM_TUNE;
        if (gm && *gm) {
            if (strcmp(gm, "ex") == 0) c->gemm = GEMM_EX;
            else if (strcmp(gm, "lt") == 0) c->gemm = GEMM_LT;
            else if (strcmp(gm, "tune") == 0) c->gemm = GEMM_TUNE;
            else {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_GEMM=%s: want ex, lt or tune", gm);
                ok = 0;
            }
        }
        const char *og = getenv("SMJ_CUDA_OWN_GEMM");
        c->own_gemm = 0;
        if (og && *og) {
            if (strcmp(og, "0") == 0 || strcmp(og, "1") == 0 || strcmp(og, "2") == 0) c->own_gemm = og[0] - '0';
            else {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_OWN_GEMM=%s: want 0, 1 or 2", og);
                ok = 0;
            }
        }
        const char *pr = getenv("SMJ_CUDA_PROFILE");
        c->profile = c->profile_env = pr && *pr && strcmp(pr, "0") != 0;
        const char *ps = getenv("SMJ_CUDA_PROFILE_SHAPES");
        if (ps && *ps) {
            if (strcmp(ps, "0") == 0 || strcmp(ps, "1") == 0) c->prof_shapes = ps[0] == '1';
            else {
                record(c, SMJ_ERR_INVALID, "SMJ_CUDA_PROFILE_SHAPES=%s: want 0 or 1", ps);
                ok = 0;
            }
        }
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
    c->cc = prop.major * 10 + prop.minor;
    /* decode_block's barrier and counters, decode_argmax's (no memory: decode_block declines,
     * decode_argmax errs) */
    size_t db = sizeof(unsigned) * DEC_SYNC_N;
    if (cudaMalloc((void **)&c->dec_sync, db) != cudaSuccess || cudaMemset(c->dec_sync, 0, db) != cudaSuccess) {
        if (c->dec_sync) cudaFree(c->dec_sync);
        c->dec_sync = NULL;
        (void)cudaGetLastError();
    }
    c->smem_optin = prop.sharedMemPerBlockOptin;
    ex->impl = c;
    return SMJ_OK;
}

static void cu_fini(smj_exec *ex) {
    smj_cuda *c = S(ex);
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    if (c->profile_env) prof_print(c);
    if (c->pev)
        for (int i = 0; i < 2 * PROF_EV; i++)
            if (c->pev[i]) cudaEventDestroy(c->pev[i]);
    free(c->pev);
    free(c->pidx);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    if (c->scratch) cudaFree(c->scratch);
    if (c->dec_sync) cudaFree(c->dec_sync);
    if (c->qbuf) cudaFree(c->qbuf);
    lt_free(c);
    for (int i = 0; i < BC_N; i++) if (c->bc[i].buf) cudaFree(c->bc[i].buf);
    if (c->wm.b) cudaFree(c->wm.b);
    if (c->h_sum) cudaFreeHost(c->h_sum);
    free(c->snap);
    free(c->tlog);
    free(c);
    ex->impl = NULL;
}

/* Per-op profile on demand (smj_ctx_profile): on = 1 clears the table and
 * starts timing (creating the events the first time), 0 stops. */
static void cu_profile(const smj_exec *ex, int on) {
    smj_cuda *c = S(ex);
    if (!c) return;
    if (on && !c->pev) {
        c->pev = (cudaEvent_t *)calloc(2 * PROF_EV, sizeof(cudaEvent_t));
        c->pidx = (int *)calloc(PROF_EV, sizeof(int));
        int ok = c->pev && c->pidx;
        for (int i = 0; ok && i < 2 * PROF_EV; i++) ok = CK(c, cudaEventCreate(&c->pev[i]));
        if (!ok) { /* error recorded (or out of host memory): no profile */
            for (int i = 0; c->pev && i < 2 * PROF_EV; i++)
                if (c->pev[i]) cudaEventDestroy(c->pev[i]);
            free(c->pev);
            free(c->pidx);
            c->pev = NULL;
            c->pidx = NULL;
            return;
        }
    }
    if (c->pev) prof_flush(c);
    if (on) c->nprof = 0;
    c->profile = on && c->pev;
}

static int cu_profile_rows(const smj_exec *ex, smj_profile_row *rows, int max) {
    smj_cuda *c = S(ex);
    if (!c || !c->pev) return 0;
    prof_flush(c);
    int n = 0;
    for (int i = 0; i < c->nprof; i++) { /* insertion into rows, largest time first */
        smj_profile_row r = {c->prof[i].name, c->prof[i].ms, c->prof[i].calls};
        int j = n < max ? n++ : max;
        while (j > 0 && rows[j - 1].ms < r.ms) {
            if (j < max) rows[j] = rows[j - 1];
            j--;
        }
        if (j < max) rows[j] = r;
    }
    return c->nprof; /* all rows, also when only max were copied */
}

static int cu_mem_info(const smj_exec *ex, size_t *used, size_t *total) {
    (void)ex;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) { (void)cudaGetLastError(); return 0; }
    *used = tot - fr;
    *total = tot;
    return 1;
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
    .profile = cu_profile,
    .profile_rows = cu_profile_rows,
    .mem_info = cu_mem_info,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_launch = cu_graph_launch,
    .graph_free = cu_graph_free,
    .graph_trace = cu_graph_trace,
#define SMJ_OP_SET(n) .n = cu_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
    .qmatmul = cu_qmatmul,
    .matmul_bias = cu_matmul_bias,
    .matmul_bias_gelu = cu_matmul_bias_gelu,
    .matmul_dgelu = cu_matmul_dgelu,
    .xent_fwd_bwd = cu_xent_fwd_bwd,
    .attention_bwd_rope = cu_attention_bwd_rope,
    .attention_bwd_bias = cu_attention_bwd_bias,
    .gelu_bwd_bias = cu_gelu_bwd_bias,
    .adamw_runs = cu_adamw_runs,
    .grad_ctl = cu_grad_ctl,
    .decode_attention = cu_decode_attention,
    .decode_block = cu_decode_block,
    .decode_linear = cu_decode_linear,
    .decode_argmax = cu_decode_argmax,
    .bf16_tight = cu_bf16_tight,
    .bf16_home = cu_bf16_home,
    .bf16_bind = cu_bf16_bind,
    .bf16_only = cu_bf16_only,
    .bf16_drop = cu_bf16_drop,
};
