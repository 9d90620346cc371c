/* blaslt.cu — products with a fused epilogue through cuBLASLt: matmul_bias
 * (C = op(A) op(B) + bias, the bias broadcast over C's rows), the GPT-2
 * family's and biased attention's linear layers; matmul_bias_gelu and
 * matmul_dgelu (GPT-2's c_fc with its GELU, the c_proj dX product with
 * GELU's backward; below, at their definitions).
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
    int tA, tB, dt, xt, epi, ok; /* dt, xt: D's and aux's types (CUDA_R_32F or CUDA_R_16BF); epi: the epilogue */
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

/* The cuBLASLt call for D^T [N, M] (column-major, ld N) = op(B)^T op(A)^T,
 * the plain matmul's operand order, with epilogue epi: BIAS (+ bias[N]),
 * GELU_AUX_BIAS (+ bias[N], the sum written to aux [M, N] (ld N), then
 * GELU) or DGELU (times gelu' of aux [M, N], read). D and the bias of type
 * dt (fp32, or bf16: each value rounded once), aux of type xt. run 0: only whether
 * cuBLASLt has an algorithm for it (nothing run; D, a16, b16, aux unused).
 * Returns 1 when run (or runnable). */
static int lt_run(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16,
                  const __nv_bfloat16 *b16, const void *bias, const void *aux, cudaDataType_t xt,
                  cublasLtEpilogue_t epi, int64_t M, int64_t N, int64_t K, int tA, int tB, int run) {
    cublasOperation_t opA = tB ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tA ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t lda = tB ? K : N, ldb = tA ? M : K, ldx = N; /* the column-major views of B and A */
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cudaDataType_t bt = dt;
    int has_bias = epi != CUBLASLT_EPILOGUE_DGELU, has_aux = epi != CUBLASLT_EPILOGUE_BIAS;
    int ok = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB) == 0 &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) == 0 &&
             (!has_bias ||
              (cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) == 0 &&
               cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) == 0)) &&
             (!has_aux ||
              (cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux) == 0 &&
               cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldx, sizeof ldx) == 0 &&
               cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &xt, sizeof xt) == 0)) &&
             cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, tB ? K : N, tB ? N : K, lda) == 0 &&
             cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tA ? M : K, tA ? K : M, ldb) == 0 &&
             cublasLtMatrixLayoutCreate(&lc, dt, N, M, N) == 0;
    lt_entry *e = NULL;
    for (int i = 0; ok && i < l->n; i++)
        if (l->e[i].M == M && l->e[i].N == N && l->e[i].K == K && l->e[i].tA == tA && l->e[i].tB == tB &&
            l->e[i].dt == (int)dt && l->e[i].xt == (int)xt && l->e[i].epi == (int)epi)
            e = &l->e[i];
    if (ok && !e) { /* a new shape: ask the heuristic once */
        e = &l->e[l->n < LT_CACHE ? l->n++ : (l->next++ % LT_CACHE)];
        *e = lt_entry{M, N, K, tA, tB, (int)dt, (int)xt, (int)epi, 0, {}};
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
static int lt_bias(smj_cuda *c, smj_lt *l, void *D, cudaDataType_t dt, const __nv_bfloat16 *a16,
                   const __nv_bfloat16 *b16, const void *bias, int64_t M, int64_t N, int64_t K, int tA, int tB,
                   int run) {
    return lt_run(c, l, D, dt, a16, b16, bias, NULL, dt, CUBLASLT_EPILOGUE_BIAS, M, N, K, tA, tB, run);
}

/* Whether matmul_bias takes these sizes (and the handle is there). */
static smj_lt *lt_takes(smj_cuda *c, const float *bias, int64_t M, int64_t N, int64_t K) {
    if (c->prec != PREC_BF16 || c->capturing || M < 16 || N < 16 || K < 16 || M > INT32_MAX || N > INT32_MAX ||
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
    int64_t ns = na > c->bc_max || nb > c->bc_max ? oa + (nb + 127) / 128 * 128 : 0;
    __nv_bfloat16 *s = ns + nb16 ? (__nv_bfloat16 *)scratch(c, 2 * (size_t)(ns + nb16)) : NULL;
    *a16 = *b16 = NULL;
    *extra = s ? s + ns : NULL;
    if (ns + nb16 && !s) return;
    const char *name = c->pname;
    prof_phase(c, "matmul: bf16 casts");
    *a16 = cast_of(c, A, na, ns ? s : NULL);
    *b16 = cast_of(c, Bm, nb, ns ? s + oa : NULL);
    prof_phase(c, name);
    if (!*b16) *a16 = NULL;
}

/* Where a product writes output p [nc] of type dt: fp32, p itself; bf16,
 * its copy (shadow_of; bf16_only promised: the copy alone stands for it,
 * else its values unpacked after the product: *unpack = p), or, with no
 * copy to keep (sizes, SMJ_CUDA_BF16_KEEP), rounded at r and unpacked. */
static void *lt_out(smj_cuda *c, float *p, int64_t nc, cudaDataType_t dt, __nv_bfloat16 *r, float **unpack) {
    *unpack = NULL;
    if (dt == CUDA_R_32F) return p;
    __nv_bfloat16 *h = nc < SHADOW_MIN || nc > c->bc_max ? NULL : shadow_of(c, p, nc);
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
    c->pname = tA ? "matmul TN (dW)" : tB ? "matmul NT (fwd)" : "matmul NN (dX)";
    cast_overwritten(c, Cm, nc);
    fp32_in(c, bias, N);
    /* a promised output's bias in bf16 in the scratch buffer, and its
     * rounded values where it has no copy to keep */
    int round = promised && (nc < SHADOW_MIN || nc > c->bc_max);
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
    int round = nc < SHADOW_MIN || nc > c->bc_max;
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
    int round = pc && (nc < SHADOW_MIN || nc > c->bc_max);
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
