/* blaslt.cu — products through cuBLASLt: every bf16 product of matmul
 * (lt_gemm, called by gemm() in bf16 mode), and the products with a fused
 * epilogue: matmul_bias (C = op(A) op(B) + bias, the bias broadcast over
 * C's rows), the GPT-2 family's and biased attention's linear layers;
 * matmul_bias_gelu and matmul_dgelu (GPT-2's c_fc with its GELU, the c_proj
 * dX product with GELU's backward; below, at their definitions).
 *
 * Algorithms: one per shape and GPU, kept (LT_CACHE entries a context, their
 * descriptors made once). SMJ_CUDA_GEMM=tune (the default) times the
 * heuristic's first candidates on a large product's first run and keeps the
 * fastest for the whole process (lt_choose, lt_tuned): on an H200 the Llama
 * 110M step's products take 30.6 ms instead of cublasGemmEx's 32.1 (the
 * heuristic's own first choice is level with cublasGemmEx; bench/gemm_step.cu
 * times every product each way). SMJ_CUDA_GEMM=lt keeps the heuristic's
 * choice, ex sends the plain products to cublasGemmEx. The workspace is the
 * backend's (SMJ_CUDA_LT_WS, allocated at the first use). Deterministic:
 * an algorithm computes the same bits every run (split-K ones add their
 * parts in a fixed order), the choice depends on the shape and GPU alone
 * (never on where the operands lie) and is the same for every context of a
 * process; only two processes may time a shape's close candidates
 * differently (docs/CUDA.md, Determinism).
 *
 * The bias epilogue: without it the model adds the bias as a second product
 * over a ones vector (K = 1), which reads and writes all of C in fp32 again:
 * on GPT-2 124M (B = 32, T = 1024) ~1.8 GB a layer. cuBLASLt's BIAS epilogue
 * adds it to the fp32 accumulator before the one store: the same rounding
 * (one, of the exact product plus the bias) as the two-product path.
 * Taken only in bf16 mode, on the operand copies the plain matmul uses
 * (cast_of, kept or in the scratch buffer), for shapes the blocked
 * products take (M, N, K >= 16) that cuBLASLt has an algorithm for;
 * anything else returns 0 and the caller runs matmul + its own bias add.
 * An output bf16_only promised is, as matmul makes it, the bf16 rounding
 * of the sum (product + bias, rounded once; the bias in bf16 then, the type
 * cuBLASLt's epilogue takes with a bf16 output): stored as bf16 into its
 * copy alone, or with no copy to keep (sizes, SMJ_CUDA_BF16_KEEP) the same
 * bf16 values unpacked into C. (So whether copies are kept never changes which
 * path runs or the values: test_cuda_model's kept == fresh runs stay bit
 * for bit.) The epilogue products ask for algorithms without split-K
 * reduction schemes.
 */
#include "cuda_common.cuh"
#include <cublasLt.h>
#include <pthread.h>

#define LT_CACHE 64
#define LT_TUNE 8       /* candidates timed per shape (SMJ_CUDA_GEMM=tune) */
#define LT_MARGIN 0.97f /* a later candidate replaces the choice only when this much faster */
#define LT_TUNE_MIN ((int64_t)1 << 30) /* M N K of the smallest product timed (2 GFLOP, ~3 us on an H200) */
#define LT_ALIGN 16u    /* the operand alignment (bytes) every algorithm is asked to take */

/* One cuBLASLt product: row-major D [M,N] (ldc) = alpha op(A) op(B) (+ D
 * when acc) with epilogue epi; op(A) = A^T when tA (A stored [K,M], lda), B
 * stored [N,K] when tB (ldb). dt: D's type (fp32 or bf16), xt: aux's; cc,
 * nsm: the GPU's. The algorithm depends on these alone, not on where the
 * operands are (every algorithm asked for takes 16-byte aligned operands,
 * LT_ALIGN: al), so that two runs of a model compute the same bits whichever
 * buffers hold its operands; operands less aligned than that get their own
 * entries (al: their alignment). */
struct lt_shape {
    int64_t M, N, K, lda, ldb, ldc;
    int tA, tB, dt, xt, epi, acc, cc, nsm;
    uint32_t al, pad; /* LT_ALIGN, or less for operands that are not (no padding bytes: compared by memcmp) */
};
/* a shape's descriptors (made once) and algorithm */
struct lt_entry {
    lt_shape s;
    int ok, tuned;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct smj_lt {
    cublasLtHandle_t h;
    void *ws;
    lt_entry e[LT_CACHE];
    int n, next;
};

/* The timed choices (SMJ_CUDA_GEMM=tune), shared by every context of the
 * process under a lock: the first context to meet a shape times it, the
 * others take its choice, so that runs in one process (two models, a
 * resumed run, the tests' comparisons) compute the same bits. The one
 * process-wide state of the CUDA backend. */
#define LT_TUNED 256
static struct {
    pthread_mutex_t mu;
    int n;
    lt_shape s[LT_TUNED];
    cublasLtMatmulAlgo_t algo[LT_TUNED];
} lt_tuned = {PTHREAD_MUTEX_INITIALIZER, 0, {}, {}};

static void lt_drop(lt_entry *e) {
    if (e->lc) cublasLtMatrixLayoutDestroy(e->lc);
    if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
    if (e->la) cublasLtMatrixLayoutDestroy(e->la);
    if (e->op) cublasLtMatmulDescDestroy(e->op);
    memset(e, 0, sizeof *e);
}

void lt_free(smj_cuda *c) {
    smj_lt *l = c->lt;
    if (!l) return;
    for (int i = 0; i < l->n; i++) lt_drop(&l->e[i]);
    if (l->ws) cudaFree(l->ws);
    if (l->h) cublasLtDestroy(l->h);
    free(l);
    c->lt = NULL;
}

static smj_lt *lt_get(smj_cuda *c) {
    if (c->lt) return c->lt;
    smj_lt *l = (smj_lt *)calloc(1, sizeof *l);
    if (!l) return NULL;
    if (cublasLtCreate(&l->h) != CUBLAS_STATUS_SUCCESS || cudaMalloc(&l->ws, SMJ_CUDA_LT_WS) != cudaSuccess) {
        (void)cudaGetLastError();
        if (l->h) cublasLtDestroy(l->h);
        free(l);
        return NULL;
    }
    c->lt = l;
    return l;
}

/* the alignment of an operand's rows, up to LT_ALIGN bytes */
static uint32_t lt_align(const void *p, int64_t ld, int es) {
    uint64_t v = (uint64_t)(uintptr_t)p | (uint64_t)(ld * es) | LT_ALIGN;
    return (uint32_t)(v & (~v + 1));
}

/* whether the epilogue takes a bias vector; an aux matrix */
static int lt_has_bias(int epi) { return epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
static int lt_has_aux(int epi) { return epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || epi == CUBLASLT_EPILOGUE_DGELU; }

/* e's descriptors for its shape (the epilogue's pointers are set per call) */
static int lt_describe(lt_entry *e) {
    const lt_shape *s = &e->s;
    cublasOperation_t opA = s->tB ? CUBLAS_OP_T : CUBLAS_OP_N, opB = s->tA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)s->epi;
    cudaDataType_t bt = (cudaDataType_t)s->dt, xt = (cudaDataType_t)s->xt;
    int64_t ldx = s->N;
    return cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA) == 0 &&
           cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB) == 0 &&
           cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0 &&
           (!lt_has_bias(s->epi) ||
            cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) == 0) &&
           (!lt_has_aux(s->epi) ||
            (cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldx, sizeof ldx) == 0 &&
             cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &xt, sizeof xt) == 0)) &&
           cublasLtMatrixLayoutCreate(&e->la, CUDA_R_16BF, s->tB ? s->K : s->N, s->tB ? s->N : s->K, s->ldb) == 0 &&
           cublasLtMatrixLayoutCreate(&e->lb, CUDA_R_16BF, s->tA ? s->M : s->K, s->tA ? s->K : s->M, s->lda) == 0 &&
           cublasLtMatrixLayoutCreate(&e->lc, bt, s->N, s->M, s->ldc) == 0;
}

/* The algorithm for e's shape, asked of the heuristic at the shape's first
 * use. The epilogue products ask for one without a split-K reduction; the
 * plain ones may take one (cuBLASLt's reductions add the parts in a fixed
 * order: the same bits every run). With SMJ_CUDA_GEMM=tune (GEMM_TUNE, the
 * default) and the operands at hand (run, not capturing a graph), the
 * heuristic's first LT_TUNE candidates are timed on them (a warm-up, then
 * the fastest of three) and the fastest kept, a later one only when
 * LT_MARGIN faster than the choice so far, so that candidates within timing
 * noise of each other leave the heuristic's order to decide; the choice
 * goes into lt_tuned for the process. Products under LT_TUNE_MIN (a few
 * microseconds: launch-bound, and a prompt's length makes a new shape) keep
 * the heuristic's choice. Where the product accumulates into D,
 * the timing runs write a temporary buffer instead. */
static void lt_choose(smj_cuda *c, smj_lt *l, lt_entry *e, int run, const void *a, const void *b, void *D,
                      const float *alpha, const float *beta) {
    const lt_shape *s = &e->s;
    /* (recording a graph: a choice timed before is taken, nothing is timed) */
    int tune = c->gemm == GEMM_TUNE && run && s->M * s->N * s->K >= LT_TUNE_MIN, locked = tune;
    if (locked) {
        pthread_mutex_lock(&lt_tuned.mu);
        for (int i = 0; i < lt_tuned.n; i++)
            if (!memcmp(&lt_tuned.s[i], s, sizeof *s)) {
                e->algo = lt_tuned.algo[i];
                e->ok = e->tuned = 1;
                pthread_mutex_unlock(&lt_tuned.mu);
                return;
            }
        if (lt_tuned.n == LT_TUNED || c->capturing) tune = 0; /* (full: the heuristic's choice, untimed) */
    }
    cublasLtMatmulPreference_t pref = NULL;
    size_t wsb = SMJ_CUDA_LT_WS;
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE, al = s->al;
    cublasLtMatmulHeuristicResult_t res[LT_TUNE];
    int got = 0;
    e->ok = 0;
    if (cublasLtMatmulPreferenceCreate(&pref) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb) == 0 &&
        (s->epi == CUBLASLT_EPILOGUE_DEFAULT ||
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red) == 0) &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al) == 0 &&
        cublasLtMatmulAlgoGetHeuristic(l->h, e->op, e->la, e->lb, e->lc, e->lc, pref, tune ? LT_TUNE : 1, res, &got) ==
            0 &&
        got > 0) {
        e->algo = res[0].algo;
        e->ok = 1;
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    void *tmp = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    if (!e->ok || !tune ||
        (s->acc && cudaMalloc(&tmp, (size_t)(s->M * s->ldc) * (s->dt == CUDA_R_32F ? 4 : 2)) != cudaSuccess) ||
        cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess)
        got = 0; /* (nothing to time, or no room to time in: the heuristic's choice) */
    void *out = tmp ? tmp : D;
    float best = 0;
    for (int i = 0; i < got; i++) {
        float t = -1;
        for (int r = 0; r < 4; r++) {
            float ms = -1;
            if (cudaEventRecord(ev[0], c->stream) != cudaSuccess ||
                cublasLtMatmul(l->h, e->op, alpha, b, e->la, a, e->lb, beta, out, e->lc, out, e->lc, &res[i].algo, l->ws,
                               SMJ_CUDA_LT_WS, c->stream) != CUBLAS_STATUS_SUCCESS ||
                cudaEventRecord(ev[1], c->stream) != cudaSuccess || cudaEventSynchronize(ev[1]) != cudaSuccess ||
                cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess)
                break;
            if (r > 0 && (t < 0 || ms < t)) t = ms; /* run 0: the warm-up */
        }
        if (t < 0) continue;
        if (best == 0 || t < LT_MARGIN * best) {
            best = t;
            e->algo = res[i].algo;
        }
    }
    if (tune) (void)cudaGetLastError(); /* (a candidate that failed to run, or no room for tmp: passed over) */
    for (int i = 0; i < 2; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (tmp) cudaFree(tmp);
    if (tune && e->ok) {
        lt_tuned.s[lt_tuned.n] = *s;
        lt_tuned.algo[lt_tuned.n++] = e->algo;
    }
    if (locked) {
        e->tuned = !c->capturing; /* (decided, timed or not: never asked again; a recording's: at the next run) */
        pthread_mutex_unlock(&lt_tuned.mu);
    }
}

/* The cuBLASLt call for D^T [N, M] (column-major, ld ldc) = op(B)^T op(A)^T,
 * the plain matmul's operand order, with epilogue epi: DEFAULT, BIAS (+
 * bias[N]), GELU_AUX_BIAS (+ bias[N], the sum written to aux [M, N] (ld N),
 * then GELU) or DGELU (times gelu' of aux [M, N], read). D and the bias of
 * type dt (fp32, or bf16: each value rounded once), aux of type xt. acc:
 * D += the product (alpha 1 otherwise scales it). run 0: only whether
 * cuBLASLt has an algorithm for it (nothing run; D, a16, b16, aux unused).
 * Returns 1 when run (or runnable). */
static int lt_call(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16, int64_t lda,
                   const __nv_bfloat16 *b16, int64_t ldb, int64_t ldc, const void *bias, const void *aux,
                   cudaDataType_t xt, cublasLtEpilogue_t epi, int64_t M, int64_t N, int64_t K, int tA, int tB,
                   float alpha, int acc, int run) {
    /* (run 0: the buffers are not known, their row strides are) */
    uint32_t al = lt_align(a16, lda, 2), bl = lt_align(b16, ldb, 2), dl = lt_align(D, ldc, dt == CUDA_R_32F ? 4 : 2);
    al = al < bl ? al : bl;
    lt_shape s = {M, N, K, lda, ldb, ldc, tA, tB, (int)dt, (int)xt, (int)epi, acc, c->cc, c->n_sm, al < dl ? al : dl, 0u};
    float one = 1.0f, zero = 0.0f;
    const float *beta = acc ? &one : &zero;
    lt_entry *e = NULL;
    for (int i = 0; i < l->n && !e; i++)
        if (!memcmp(&l->e[i].s, &s, sizeof s)) e = &l->e[i];
    int fresh = !e;
    if (fresh) { /* a new shape */
        e = &l->e[l->n < LT_CACHE ? l->n++ : (l->next++ % LT_CACHE)];
        lt_drop(e);
        e->s = s;
    }
    int ok = (!fresh || lt_describe(e)) &&
             (!lt_has_bias(epi) ||
              cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) == 0) &&
             (!lt_has_aux(epi) ||
              cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux) == 0);
    /* (an entry made by a run-0 probe is timed at its first run) */
    if (ok && (fresh || (run && !e->tuned && c->gemm == GEMM_TUNE && !c->capturing && M * N * K >= LT_TUNE_MIN)))
        lt_choose(c, l, e, run, a16, b16, D, &alpha, beta);
    ok = ok && e->ok;
    if (ok && run) { /* (graph_trace: the product's operands and algorithm) */
        trace_mix(c, (uint64_t)(uintptr_t)a16, "cuBLASLt A, K", (int)K);
        trace_mix(c, (uint64_t)(uintptr_t)b16, "cuBLASLt B, K", (int)K);
        trace_mix(c, (uint64_t)(uintptr_t)D, "cuBLASLt D, K", (int)K);
        for (int i = 0; i < (int)(sizeof e->algo.data / sizeof e->algo.data[0]); i++)
            trace_mix(c, e->algo.data[i], "cuBLASLt algorithm", i);
    }
    if (ok && run)
        ok = cublasLtMatmul(l->h, e->op, &alpha, b16, e->la, a16, e->lb, beta, D, e->lc, D, e->lc, &e->algo, l->ws,
                            SMJ_CUDA_LT_WS, c->stream) == CUBLAS_STATUS_SUCCESS;
    return ok;
}
/* dense operands, beta 0: the epilogue products */
static int lt_run(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16,
                  const __nv_bfloat16 *b16, const void *bias, const void *aux, cudaDataType_t xt,
                  cublasLtEpilogue_t epi, int64_t M, int64_t N, int64_t K, int tA, int tB, int run) {
    return lt_call(c, l, D, dt, a16, tA ? M : K, b16, tB ? K : N, N, bias, aux, xt, epi, M, N, K, tA, tB, 1.0f, 0,
                   run);
}

/* The plain bf16 product through cuBLASLt (gemm(), SMJ_CUDA_GEMM=lt or
 * tune): row-major C [M,N] (ldc) = alpha op(A) op(B) + beta C with beta 0
 * or 1, C fp32 or bf16 (ct). Returns 0 (nothing done) where cuBLASLt has
 * no algorithm, the operands are not 16-byte aligned, or beta is another
 * value; the caller then calls cublasGemmEx. */
int lt_gemm(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
            const void *B, int64_t ldb, float beta, void *C, int64_t ldc, cudaDataType_t ct) {
    if ((beta != 0.0f && beta != 1.0f) || M < 16 || N < 16 || K < 16 || lt_align(A, lda, 2) < LT_ALIGN ||
        lt_align(B, ldb, 2) < LT_ALIGN || lt_align(C, ldc, ct == CUDA_R_32F ? 4 : 2) < LT_ALIGN)
        return 0;
    smj_lt *l = lt_get(c);
    return l && lt_call(c, l, C, ct, (const __nv_bfloat16 *)A, lda, (const __nv_bfloat16 *)B, ldb, ldc, NULL, NULL,
                        ct, CUBLASLT_EPILOGUE_DEFAULT, M, N, K, tA, tB, alpha, beta != 0.0f, 1);
}
static int lt_bias(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16,
                   const __nv_bfloat16 *b16, const void *bias, int64_t M, int64_t N, int64_t K, int tA, int tB,
                   int run) {
    return lt_run(c, l, D, dt, a16, b16, bias, NULL, dt, CUBLASLT_EPILOGUE_BIAS, M, N, K, tA, tB, run);
}

/* Whether matmul_bias takes these sizes (and the handle is there). */
static smj_lt *lt_takes(smj_cuda *c, const float *bias, int64_t M, int64_t N, int64_t K) {
    if (c->prec != PREC_BF16 || CAPTURE_NOCOPY(c) || M < 16 || N < 16 || K < 16 || M > INT32_MAX || N > INT32_MAX ||
        K > INT32_MAX || (uintptr_t)bias % 16)
        return NULL;
    return lt_get(c);
}

/* The operands' bf16 copies as matmul makes them (kept, or over bc_max cast
 * into the scratch buffer) and nb16 more bf16 values of scratch (at
 * *extra). NULL a16 on failure. */
static void lt_operands(smj_cuda *c, const float *A, const float *Bm, int64_t M, int64_t N, int64_t K, int64_t nb16,
                        const __nv_bfloat16 **a16, const __nv_bfloat16 **b16, __nv_bfloat16 **extra) {
    int64_t na = M * K, nb = K * N, oa = (na + 127) / 128 * 128;
    int64_t ns = cast_big(c, A, na) || cast_big(c, Bm, nb) ? oa + (nb + 127) / 128 * 128 : 0;
    __nv_bfloat16 *s = ns + nb16 ? (__nv_bfloat16 *)scratch(c, 2 * (size_t)(ns + nb16)) : NULL;
    *a16 = *b16 = NULL;
    *extra = s ? s + ns : NULL;
    if (ns + nb16 && !s) return;
    cast_pair(c, A, na, ns ? s : NULL, Bm, nb, ns ? s + oa : NULL, a16, b16);
    if (!*b16) *a16 = NULL;
}

/* Where a product writes output p [nc] of type dt: fp32, p itself; bf16,
 * its copy (shadow_of; bf16_only promised: the copy alone stands for it,
 * else its values unpacked after the product: *unpack = p), or, with no
 * copy to keep (sizes, SMJ_CUDA_BF16_KEEP), rounded at r and unpacked. */
static void *lt_out(smj_cuda *c, float *p, int64_t nc, cudaDataType_t dt, __nv_bfloat16 *r, float **unpack) {
    *unpack = NULL;
    if (dt == CUDA_R_32F) return p;
    __nv_bfloat16 *h = copy_room(c, p, nc) ? shadow_of(c, p, nc) : NULL;
    if (!h) { /* (r NULL: out of memory for the copy, recorded) */
        *unpack = r ? p : NULL;
        return r;
    }
    *unpack = fp32_out(c, p, nc, h);
    return h;
}

int cu_matmul_bias(const smj_exec *ex, float *Cm, const float *A, const float *Bm, const float *bias, int64_t M,
                   int64_t N, int64_t K, int tA, int tB) {
    smj_cuda *c0 = S(ex);
    smj_lt *l = lt_takes(c0, bias, M, N, K);
    /* an output bf16_only promised is the bf16 sum, as matmul makes it (see
     * there): into its copy, or with no copy to keep unpacked into C */
    int64_t nc = M * N;
    int promised = l && only_promised(c0, Cm, nc);
    cudaDataType_t dt = promised ? CUDA_R_16BF : CUDA_R_32F;
    if (!l || !lt_bias(c0, l, NULL, dt, NULL, NULL, bias, M, N, K, tA, tB, 0)) return 0; /* nothing done */
    OP_BEGIN_L("matmul_bias"); /* as matmul: the operands' kept copies stay valid */
    c->pname = prof_matmul(c, tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)", M, N, K);
    cast_overwritten(c, Cm, nc);
    fp32_in(c, bias, N);
    /* a promised output's bias in bf16 in the scratch buffer, and its
     * rounded values where it has no copy to keep */
    int round = promised && !copy_room(c, Cm, nc);
    int64_t nz = promised ? (N + 127) / 128 * 128 : 0, nr = round ? nc : 0;
    const __nv_bfloat16 *a16, *b16;
    __nv_bfloat16 *z16;
    lt_operands(c, A, Bm, M, N, K, nz + nr, &a16, &b16, &z16);
    if (a16 && promised) to_bf16(c, z16, bias, N, 0, 1);
    float *uc;
    void *dC = a16 ? lt_out(c, Cm, nc, dt, round ? z16 + nz : NULL, &uc) : NULL;
    int ok = dC && lt_bias(c, l, dC, dt, a16, b16, promised ? (const void *)z16 : bias, M, N, K, tA, tB, 1);
    if (ok && uc) bf16_to_f32(c, uc, (const __nv_bfloat16 *)dC, nc);
    if (!ok && dC) /* (its algorithm was there a moment ago: a device error) */
        record(c, SMJ_ERR_UNSUPPORTED, "matmul_bias: cuBLASLt failed on %lld x %lld x %lld", (long long)M,
               (long long)N, (long long)K);
    op_end(c);
    return 1;
}

/* matmul_bias_gelu: pre = op(A) op(B) + bias and out = GELU(pre) from
 * cuBLASLt's GELU_AUX_BIAS epilogue (the tanh form GPT-2 uses: checked by
 * test_cuda_model against it and against the erf form), taken where both
 * outputs are promised bf16_only (--fp16-activations): both written as
 * bf16, each rounded once (the bias in bf16 then, as matmul_bias takes
 * it), into their copies. Declined otherwise: with fp32 outputs the two
 * fp32 stores and the next product's cast of out cost more than gelu_fwd's
 * pass (GPT-2 124M on an H200: 449k -> 421k tok/s), and where N is not a
 * multiple of 8 or matmul_bias declines. */
int cu_matmul_bias_gelu(const smj_exec *ex, float *out, float *pre, const float *A, const float *Bm,
                        const float *bias, int64_t M, int64_t N, int64_t K, int tA, int tB) {
    smj_cuda *c0 = S(ex);
    smj_lt *l = N % 8 ? NULL : lt_takes(c0, bias, M, N, K);
    int64_t nc = M * N;
    cudaDataType_t dt = CUDA_R_16BF;
    if (!l || !only_promised(c0, out, nc) || !only_promised(c0, pre, nc) ||
        !lt_run(c0, l, NULL, dt, NULL, NULL, bias, NULL, dt, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, M, N, K, tA, tB, 0))
        return 0; /* nothing done */
    OP_BEGIN_L("matmul_bias_gelu");
    c->pname = "matmul + gelu (fwd)";
    cast_overwritten(c, out, nc);
    cast_overwritten(c, pre, nc);
    fp32_in(c, bias, N);
    int round = !copy_room(c, out, nc) || !copy_room(c, pre, nc);
    int64_t nz = (N + 127) / 128 * 128, nr = round ? (nc + 127) / 128 * 128 : 0;
    const __nv_bfloat16 *a16, *b16;
    __nv_bfloat16 *z16;
    lt_operands(c, A, Bm, M, N, K, nz + 2 * nr, &a16, &b16, &z16);
    if (a16) to_bf16(c, z16, bias, N, 0, 1);
    float *uo, *up;
    void *dO = a16 ? lt_out(c, out, nc, dt, round ? z16 + nz : NULL, &uo) : NULL;
    void *dP = a16 ? lt_out(c, pre, nc, dt, round ? z16 + nz + nr : NULL, &up) : NULL;
    int ok = dO && dP &&
             lt_run(c, l, dO, dt, a16, b16, z16, dP, dt, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, M, N, K, tA, tB, 1);
    if (ok && uo) bf16_to_f32(c, uo, (const __nv_bfloat16 *)dO, nc);
    if (ok && up) bf16_to_f32(c, up, (const __nv_bfloat16 *)dP, nc);
    if (!ok && dO && dP) /* (its algorithm was there a moment ago: a device error) */
        record(c, SMJ_ERR_UNSUPPORTED, "matmul_bias_gelu: cuBLASLt failed on %lld x %lld x %lld", (long long)M,
               (long long)N, (long long)K);
    op_end(c);
    return 1;
}

/* matmul_dgelu: C = (op(A) op(B)) gelu'(x) from cuBLASLt's DGELU epilogue,
 * then db += C's column sums (colsum_rows_add: the values C stands for,
 * per-block partials summed in order). C promised bf16_only: C as bf16,
 * x read from its exact bf16 copy (the --fp16-activations storage), else
 * as fp32 where cuBLASLt takes a bf16 C with an fp32 x, else cast to bf16
 * (x's own values where they came from 16-bit storage); not promised: fp32
 * C and x. The same values whichever way x is read where x holds bf16
 * values, so runs with and without kept copies compute the same bits. */
int cu_matmul_dgelu(const smj_exec *ex, float *Cm, float *db, const float *A, const float *Bm, const float *x,
                    int64_t M, int64_t N, int64_t K, int tA, int tB) {
    smj_cuda *c0 = S(ex);
    smj_lt *l = N % 8 ? NULL : lt_takes(c0, NULL, M, N, K);
    int64_t nc = M * N;
    int pc = l && only_promised(c0, Cm, nc);
    cudaDataType_t dt = pc ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DGELU;
    if (!l || !lt_run(c0, l, NULL, dt, NULL, NULL, NULL, NULL, dt, epi, M, N, K, tA, tB, 0))
        return 0; /* nothing done */
    OP_BEGIN_L("matmul_dgelu");
    c->pname = "matmul + gelu (dX)";
    cast_overwritten(c, Cm, nc);
    cast_written(c, db, N); /* (read too) */
    const __nv_bfloat16 *x16 = pc ? exact_copy(c, x, nc) : NULL;
    if (x16 && (uintptr_t)x16 % 16) x16 = NULL;
    if (!x16) fp32_in(c, x, nc);
    cudaDataType_t xt = x16 ? CUDA_R_16BF : CUDA_R_32F;
    int cast = pc && !x16 && !lt_run(c, l, NULL, dt, NULL, NULL, NULL, NULL, xt, epi, M, N, K, tA, tB, 0);
    if (cast) xt = CUDA_R_16BF;
    int round = pc && !copy_room(c, Cm, nc);
    int64_t nr = round ? (nc + 127) / 128 * 128 : 0, nx = cast ? nc : 0;
    const __nv_bfloat16 *a16, *b16;
    __nv_bfloat16 *r16;
    lt_operands(c, A, Bm, M, N, K, nr + nx, &a16, &b16, &r16);
    if (a16 && cast) {
        to_bf16(c, r16 + nr, x, nc, 0, 1);
        x16 = r16 + nr;
    }
    float *uc;
    void *dC = a16 ? lt_out(c, Cm, nc, dt, round ? r16 : NULL, &uc) : NULL;
    int ok = dC && lt_run(c, l, dC, dt, a16, b16, NULL, x16 ? (const void *)x16 : x, xt, epi, M, N, K, tA, tB, 1);
    if (ok && uc) bf16_to_f32(c, uc, (const __nv_bfloat16 *)dC, nc);
    /* (after the unpack: dC rounded in the scratch buffer, which the sums'
     * partials take; the unpacked values are the same) */
    if (ok) colsum_rows_add(c, db, uc ? (const void *)uc : dC, pc && !uc, M, (int)N);
    if (!ok && dC)
        record(c, SMJ_ERR_UNSUPPORTED, "matmul_dgelu: cuBLASLt failed on %lld x %lld x %lld", (long long)M,
               (long long)N, (long long)K);
    op_end(c);
    return 1;
}
