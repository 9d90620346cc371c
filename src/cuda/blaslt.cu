/* blaslt.cu — products with a fused epilogue through cuBLASLt: matmul_bias
 * (C = op(A) op(B) + bias, the bias broadcast over C's rows), the GPT-2
 * family's and biased attention's linear layers.
 *
 * Without it the model adds the bias as a second product over a ones
 * vector (K = 1), which reads and writes all of C in fp32 again: on GPT-2
 * 124M (B = 32, T = 1024) ~1.8 GB a layer. cuBLASLt's BIAS epilogue adds it
 * to the fp32 accumulator before the one store: the same rounding (one,
 * of the exact product plus the bias) as the two-product path.
 *
 * Taken only in bf16 mode, on the operand copies the plain matmul uses
 * (cast_of, kept or in the scratch buffer), for an fp32 C that no
 * bf16_only promise covers and shapes the blocked products take (M, N, K
 * >= 16); anything else returns 0 and the caller runs matmul + its own
 * bias add. (So whether copies are kept never changes which path runs:
 * test_cuda_model's kept == fresh runs stay bit for bit.) Algorithms come from cuBLASLt's
 * heuristic, kept per shape (LT_CACHE entries); the workspace is the
 * backend's (SMJ_CUDA_LT_WS, allocated at the first use). Deterministic:
 * the heuristic's first choice for a shape is fixed for the process and
 * cuBLASLt's algorithms without split-K reduction schemes do not vary run
 * to run (the preference asks for no reduction scheme).
 */
#include "cuda_common.cuh"
#include <cublasLt.h>

#define LT_CACHE 32

struct lt_entry {
    int64_t M, N, K;
    int tA, tB, ok;
    cublasLtMatmulAlgo_t algo;
};

struct smj_lt {
    cublasLtHandle_t h;
    void *ws;
    lt_entry e[LT_CACHE];
    int n, next;
};

void lt_free(smj_cuda *c) {
    smj_lt *l = c->lt;
    if (!l) return;
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

/* The cuBLASLt call for C^T [N, M] (column-major, ld N) = op(B)^T op(A)^T
 * + bias[N], the plain matmul's operand order. Returns 1 when run. */
static int lt_bias(smj_cuda *c, smj_lt *l, float *C, const __nv_bfloat16 *a16, const __nv_bfloat16 *b16,
                   const float *bias, int64_t M, int64_t N, int64_t K, int tA, int tB) {
    cublasOperation_t opA = tB ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tA ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t lda = tB ? K : N, ldb = tA ? M : K; /* the column-major views of B and A */
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = CUDA_R_32F;
    int ok = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) == 0 &&
             cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, tB ? K : N, tB ? N : K, lda) == 0 &&
             cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tA ? M : K, tA ? K : M, ldb) == 0 &&
             cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, N, M, N) == 0;
    lt_entry *e = NULL;
    for (int i = 0; ok && i < l->n; i++)
        if (l->e[i].M == M && l->e[i].N == N && l->e[i].K == K && l->e[i].tA == tA && l->e[i].tB == tB) e = &l->e[i];
    if (ok && !e) { /* a new shape: ask the heuristic once */
        e = &l->e[l->n < LT_CACHE ? l->n++ : (l->next++ % LT_CACHE)];
        *e = lt_entry{M, N, K, tA, tB, 0, {}};
        cublasLtMatmulPreference_t pref = NULL;
        size_t wsb = SMJ_CUDA_LT_WS;
        uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE;
        cublasLtMatmulHeuristicResult_t res;
        int got = 0;
        if (cublasLtMatmulPreferenceCreate(&pref) == 0 &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb) == 0 &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red) == 0 &&
            cublasLtMatmulAlgoGetHeuristic(l->h, op, la, lb, lc, lc, pref, 1, &res, &got) == 0 && got > 0) {
            e->algo = res.algo;
            e->ok = 1;
        }
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
    }
    ok = ok && e && e->ok;
    float one = 1.0f, zero = 0.0f;
    if (ok)
        ok = cublasLtMatmul(l->h, op, &one, b16, la, a16, lb, &zero, C, lc, C, lc, &e->algo, l->ws, SMJ_CUDA_LT_WS,
                            c->stream) == CUBLAS_STATUS_SUCCESS;
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return ok;
}

/* Whether matmul_bias takes these sizes (and the handle is there). */
static smj_lt *lt_takes(smj_cuda *c, float *Cm, const float *bias, int64_t M, int64_t N, int64_t K) {
    if (c->prec != PREC_BF16 || c->capturing || M < 16 || N < 16 || K < 16 || M > INT32_MAX || N > INT32_MAX ||
        K > INT32_MAX || only_promised(c, Cm, M * N) || (uintptr_t)bias % 16)
        return NULL;
    return lt_get(c);
}

int cu_matmul_bias(const smj_exec *ex, float *Cm, const float *A, const float *Bm, const float *bias, int64_t M,
                   int64_t N, int64_t K, int tA, int tB) {
    smj_lt *l = lt_takes(S(ex), Cm, bias, M, N, K);
    if (!l) return 0;
    OP_BEGIN_L("matmul_bias"); /* as matmul: the operands' kept copies stay valid */
    c->pname = tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)";
    cast_overwritten(c, Cm, M * N);
    fp32_in(c, bias, N);
    /* the operands' copies as matmul makes them: kept, or (over bc_max)
     * cast into the scratch buffer */
    int64_t na = M * K, nb = K * N, oa = (na + 127) / 128 * 128;
    int64_t ns = na > c->bc_max || nb > c->bc_max ? oa + nb : 0;
    __nv_bfloat16 *s = ns ? (__nv_bfloat16 *)scratch(c, 2 * (size_t)ns) : NULL;
    const char *name = c->pname;
    prof_phase(c, "matmul: bf16 casts");
    const __nv_bfloat16 *a16 = ns && !s ? NULL : cast_of(c, A, na, ns ? s : NULL);
    const __nv_bfloat16 *b16 = ns && !s ? NULL : cast_of(c, Bm, nb, ns ? s + oa : NULL);
    prof_phase(c, name);
    int ok = a16 && b16 && lt_bias(c, l, Cm, a16, b16, bias, M, N, K, tA, tB);
    op_end(c);
    return ok;
}
