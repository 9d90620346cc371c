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
 * (cast_of, kept or in the scratch buffer), for shapes the blocked
 * products take (M, N, K >= 16) that cuBLASLt has an algorithm for;
 * anything else returns 0 and the caller runs matmul + its own bias add.
 * An output bf16_only promised is, as matmul makes it, the bf16 rounding
 * of the sum (product + bias, rounded once; the bias in bf16 then, the type
 * cuBLASLt's epilogue takes with a bf16 output): stored as bf16 into its
 * copy alone, or with no copy to keep (sizes, SMJ_CUDA_BF16_KEEP) the same
 * bf16 values unpacked into C. (So whether copies are kept never changes which
 * path runs or the values: test_cuda_model's kept == fresh runs stay bit
 * for bit.) Algorithms come from cuBLASLt's
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
    int tA, tB, dt, ok; /* dt: D's type (CUDA_R_32F or CUDA_R_16BF) */
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

/* The cuBLASLt call for D^T [N, M] (column-major, ld N) = op(B)^T op(A)^T
 * + bias[N], the plain matmul's operand order, D and the bias of type dt
 * (fp32, or bf16: the sum rounded once). run 0: only whether cuBLASLt has an algorithm for
 * it (nothing run; D, a16, b16 unused). Returns 1 when run (or runnable). */
static int lt_bias(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16,
                   const __nv_bfloat16 *b16, const void *bias, int64_t M, int64_t N, int64_t K, int tA, int tB,
                   int run) {
    cublasOperation_t opA = tB ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tA ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t lda = tB ? K : N, ldb = tA ? M : K; /* the column-major views of B and A */
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = dt;
    int ok = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) == 0 &&
             cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, tB ? K : N, tB ? N : K, lda) == 0 &&
             cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tA ? M : K, tA ? K : M, ldb) == 0 &&
             cublasLtMatrixLayoutCreate(&lc, dt, N, M, N) == 0;
    lt_entry *e = NULL;
    for (int i = 0; ok && i < l->n; i++)
        if (l->e[i].M == M && l->e[i].N == N && l->e[i].K == K && l->e[i].tA == tA && l->e[i].tB == tB &&
            l->e[i].dt == (int)dt)
            e = &l->e[i];
    if (ok && !e) { /* a new shape: ask the heuristic once */
        e = &l->e[l->n < LT_CACHE ? l->n++ : (l->next++ % LT_CACHE)];
        *e = lt_entry{M, N, K, tA, tB, (int)dt, 0, {}};
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
    if (ok && run)
        ok = cublasLtMatmul(l->h, op, &one, b16, la, a16, lb, &zero, D, lc, D, lc, &e->algo, l->ws, SMJ_CUDA_LT_WS,
                            c->stream) == CUBLAS_STATUS_SUCCESS;
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return ok;
}

/* Whether matmul_bias takes these sizes (and the handle is there). */
static smj_lt *lt_takes(smj_cuda *c, const float *bias, int64_t M, int64_t N, int64_t K) {
    if (c->prec != PREC_BF16 || c->capturing || M < 16 || N < 16 || K < 16 || M > INT32_MAX || N > INT32_MAX ||
        K > INT32_MAX || (uintptr_t)bias % 16)
        return NULL;
    return lt_get(c);
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
    c->pname = tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)";
    cast_overwritten(c, Cm, nc);
    fp32_in(c, bias, N);
    /* the operands' copies as matmul makes them: kept, or (over bc_max)
     * cast into the scratch buffer; a promised output's bias in bf16 there,
     * and a rounded output's bf16 values */
    int round = promised && (nc < SHADOW_MIN || nc > c->bc_max);
    int64_t na = M * K, nb = K * N, oa = (na + 127) / 128 * 128;
    int64_t ns = na > c->bc_max || nb > c->bc_max ? oa + (nb + 127) / 128 * 128 : 0;
    int64_t nz = promised ? (N + 127) / 128 * 128 : 0, nr = round ? nc : 0;
    __nv_bfloat16 *s = ns + nz + nr ? (__nv_bfloat16 *)scratch(c, 2 * (size_t)(ns + nz + nr)) : NULL;
    const char *name = c->pname;
    prof_phase(c, "matmul: bf16 casts");
    const __nv_bfloat16 *a16 = ns + nz + nr && !s ? NULL : cast_of(c, A, na, ns ? s : NULL);
    const __nv_bfloat16 *b16 = ns + nz + nr && !s ? NULL : cast_of(c, Bm, nb, ns ? s + oa : NULL);
    __nv_bfloat16 *z16 = promised && s ? s + ns : NULL;
    if (z16) to_bf16(c, z16, bias, N, 0, 1);
    prof_phase(c, name);
    int ok = a16 && b16 && (!promised || z16);
    __nv_bfloat16 *c16 = promised && !round ? shadow_of(c, Cm, nc) : NULL;
    if (ok && c16 && !fp32_out(c, Cm, nc, c16)) {
        ok = lt_bias(c, l, c16, CUDA_R_16BF, a16, b16, z16, M, N, K, tA, tB, 1);
    } else if (ok && round) {
        ok = lt_bias(c, l, s + ns + nz, CUDA_R_16BF, a16, b16, z16, M, N, K, tA, tB, 1);
        if (ok) bf16_to_f32(c, Cm, s + ns + nz, nc);
    } else if (ok) {
        if (c16) cast_written(c, Cm, nc); /* (not reached: fp32_out takes a promised output's copy) */
        ok = lt_bias(c, l, Cm, CUDA_R_32F, a16, b16, bias, M, N, K, tA, tB, 1);
    }
    if (!ok && a16 && b16) /* (its algorithm was there a moment ago: a device error) */
        record(c, SMJ_ERR_UNSUPPORTED, "matmul_bias: cuBLASLt failed on %lld x %lld x %lld", (long long)M,
               (long long)N, (long long)K);
    op_end(c);
    return 1;
}
