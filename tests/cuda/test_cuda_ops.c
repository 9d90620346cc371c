/* test_cuda_ops.c — the op checker for the CUDA backend (built with CUDA=1).
 *
 * Every op of the op table runs on the GPU over seeded random inputs (the
 * awkward shapes of tests/test_ops.c plus larger ones that cross the
 * kernels' tiles: several attention tiles, head sizes up to 256, V =
 * 131072) and is compared with the "ref" backend on the host (cuda_check.h:
 * canaries, normalized errors, the SKIP rule).
 *
 * Tolerances (normalized max error |got - ref| / max|ref|, as test_ops.c):
 *   matmul (cuBLAS SGEMM, fp32, no TF32)       1e-5
 *   attention fwd/bwd, rmsnorm, xent fwd       1e-5 (add_rmsnorm_fwd's sum 0)
 *   rope, swiglu, adamw, xent_bwd              1e-6
 *   layernorm fwd/bwd                          1e-5
 *   gelu fwd/bwd (compensated float u)         1e-6
 *   embedding fwd/bwd, add, scale              0 (bit-identical)
 *   sumsq                                      1e-12 relative
 * With SMJ_CUDA_MATMUL=bf16|bf16x (products with bf16 operands, fp32
 * accumulation; attention's products too) the products get the bf16 rule
 * k * 2^-8 (normalized, i.e. abs = k * 2^-8 * max|ref|): matmul and
 * attention fwd k = 4, attention bwd k = 8 (dS is rounded to bf16 once
 * more); with tf32, k * 2^-10, same k. SMJ_CUDA_ATTN=fused checks the
 * fused fp32 attention kernels instead of the cuBLAS path (Tq >= 16),
 * SMJ_CUDA_ATTN=mma the mma.sync flash kernels on a Hopper GPU (whose
 * default is the wgmma ones).
 * Then: the ops said to be deterministic give bit-identical results on a
 * second run, and the error rule (docs/CUDA.md): an op that fails records
 * the error, sumsq returns NaN and smj_ctx_status reports it.
 * Then the optional ops attention_bwd_rope, attention_bwd_bias, gelu_bwd_bias,
 * adamw_runs, grad_ctl and xent_fwd_bwd against the ops they stand for; in bf16 mode
 * the products whose algorithm is timed (blaslt.cu): a second context's the
 * same bits, cublasGemmEx's within the bf16 rule, more large shapes than
 * the process keeps timed choices for. The other
 * optional ops have their own programs: test_cuda_decode.c (decoding,
 * qmatmul) and test_cuda_bf16.c (bf16 copies: bind, home, promised outputs).
 */
#include "cuda_check.h"
#include "../../src/hf/safetensors.h"

/* ------------------------------------------------------------ cases */

/* ------------------------------------------------------------ cases */

static void case_matmul(void) {
    static const int64_t S[][3] = {{1, 1, 1},   {1, 7, 5},      {3, 1, 9},     {17, 33, 65}, {64, 48, 32},
                                   {5, 130, 3}, {2, 3, 0},      {300, 257, 513}, {1, 4099, 64}, {64, 33, 1000},
                                   /* a few rows against a weight (decoding's NT products, K % 4 == 0) */
                                   {1, 2048, 768}, {2, 1000, 12}, {3, 130, 256}, {4, 33, 768}, {5, 64, 64},
                                   /* A · B through a [K, N] weight (GPT-2's decoding, N % 4 == 0), split over K */
                                   {1, 2304, 768}, {1, 768, 3072}, {2, 3072, 768}, {4, 8, 4096}, {3, 132, 5},
                                   /* large enough for bf16 mode to time cuBLASLt's candidates (blaslt.cu's
                                      LT_TUNE_MIN; acc: the timing must leave C alone) */
                                   {1024, 1024, 1024}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int acc = 0; acc < 2; acc++) {
                    int64_t M = S[s][0], N = S[s][1], K = S[s][2];
                    /* (the large shape in bf16 mode alone, as the forward's NT and the weight gradients'
                       accumulating TN: the reference takes seconds on it) */
                    const char *mm = getenv("SMJ_CUDA_MATMUL");
                    if (M * N * K >= (1 << 30) && !(mm && !strcmp(mm, "bf16") && tA != tB && tA == acc)) continue;
                    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld tA%d tB%d acc%d", (long long)M,
                             (long long)N, (long long)K, tA, tB, acc);
                    float *A = frand(M * K, 1), *B = frand(K * N, 1), *C0 = frand(M * N, 1), *C2 = fcopy(C0, M * N);
                    float *dA = dup_d(A, M * K), *dB = dup_d(B, K * N), *dC = dup_d(C0, M * N);
                    be->matmul(ex, dC, dA, dB, M, N, K, tA, tB, acc);
                    rf->matmul(X1, C2, A, B, M, N, K, tA, tB, acc);
                    compare_d("C", dC, C2, M * N, TOL_MM);
                    dfree(dA); dfree(dB); dfree(dC);
                    ffree(A); ffree(B); ffree(C0); ffree(C2);
                }
}

static void case_embedding_fwd(void) {
    static const int S[][3] = {{1, 1, 13}, {14, 17, 13}, {40, 33, 13}, {3000, 768, 1000}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int64_t N = S[s][0]; int C = S[s][1], V = S[s][2];
        snprintf(cur_shape, sizeof cur_shape, "N%lld C%d V%d", (long long)N, C, V);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
        float *w = frand((int64_t)V * C, 1), *o1 = frand(N * C, 0), *o2 = frand(N * C, 0);
        float *dw = dup_d(w, (int64_t)V * C), *d1 = dup_d(o1, N * C);
        int32_t *di = ids_d(ids, N);
        be->embedding_fwd(ex, d1, di, dw, N, C);
        rf->embedding_fwd(X1, o2, ids, w, N, C);
        compare_d("out", d1, o2, N * C, 0);
        be->free(di); dfree(dw); dfree(d1);
        free(ids); ffree(w); ffree(o1); ffree(o2);
    }
}

static void embedding_bwd_once(int64_t N, int C, int V, int determinism) {
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%d V%d", (long long)N, C, V);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
    float *d = frand(N * C, 1), *g1 = frand((int64_t)V * C, 1), *g2 = fcopy(g1, (int64_t)V * C);
    float *dd = dup_d(d, N * C), *dg = dup_d(g1, (int64_t)V * C), *dg2 = dup_d(g1, (int64_t)V * C);
    int32_t *di = ids_d(ids, N);
    be->embedding_bwd(ex, dg, di, dd, N, C);
    rf->embedding_bwd(X1, g2, ids, d, N, C);
    compare_d("dwte", dg, g2, (int64_t)V * C, 0);
    if (determinism) {
        be->embedding_bwd(ex, dg2, di, dd, N, C);
        float *a = get_h(dg, (int64_t)V * C), *b = get_h(dg2, (int64_t)V * C);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)V * C) == 0, "embedding_bwd %s: two runs differ", cur_shape);
        ffree(a); ffree(b);
    }
    be->free(di); dfree(dd); dfree(dg); dfree(dg2);
    free(ids); ffree(d); ffree(g1); ffree(g2);
}
static void case_embedding_bwd(void) {
    for (int64_t N = 1; N <= 60; N += 29)
        for (int C = 1; C <= 35; C += 17) embedding_bwd_once(N, C, 7, 0);
    embedding_bwd_once(5000, 100, 50, 1);
    embedding_bwd_once(16384, 768, 32768, 1);
}

static const int RMS[][2] = {{1, 1}, {1, 67}, {1, 133}, {1, 199}, {50, 1}, {50, 67}, {50, 133}, {50, 199},
                             {3000, 768}, {12000, 64}, {7, 4096},
                             /* rmsnorm_bwd's rows in registers: 2 and 8 float4 a lane, and just past them */
                             {33, 256}, {20, 1024}, {9, 1028},
                             /* a block per row for few rows (decoding) */
                             {1, 768}, {1, 257}, {100, 300}};

static void case_rmsnorm_fwd(void) {
    for (size_t s = 0; s < sizeof RMS / sizeof RMS[0]; s++) {
        int64_t N = RMS[s][0]; int C = RMS[s][1];
        snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
        float *x = frand(N * C, 2), *w = frand(C, 1), *o2 = frand(N * C, 0), *r2 = frand(N, 0);
        float *dx = dup_d(x, N * C), *dw = dup_d(w, C), *d1 = dup_d(o2, N * C), *dr = dup_d(r2, N);
        be->rmsnorm_fwd(ex, d1, dr, dx, dw, N, C, 1e-5f);
        rf->rmsnorm_fwd(X1, o2, r2, x, w, N, C, 1e-5f);
        compare_d("out", d1, o2, N * C, 1e-5);
        compare_d("rstd", dr, r2, N, 1e-5);
        dfree(dx); dfree(dw); dfree(d1); dfree(dr);
        ffree(x); ffree(w); ffree(o2); ffree(r2);
    }
}

/* alias: 0 a separate sum, 1 sum = a (in place), 2 sum = b */
static void case_add_rmsnorm_fwd(void) {
    for (size_t s = 0; s < 3 * sizeof RMS / sizeof RMS[0]; s++) {
        int64_t N = RMS[s / 3][0]; int C = RMS[s / 3][1], alias = (int)(s % 3);
        snprintf(cur_shape, sizeof cur_shape, "N%lld C%d alias%d", (long long)N, C, alias);
        float *a = frand(N * C, 2), *b = frand(N * C, 1), *w = frand(C, 1), *s2 = frand(N * C, 0);
        float *o2 = frand(N * C, 0), *r2 = frand(N, 0);
        float *Da = dup_d(a, N * C), *Db = dup_d(b, N * C), *Dw = dup_d(w, C), *Ds = dup_d(s2, N * C);
        float *Do = dup_d(o2, N * C), *Dr = dup_d(r2, N);
        float *Dsum = alias == 1 ? Da : alias == 2 ? Db : Ds, *sum = alias == 1 ? a : alias == 2 ? b : s2;
        be->add_rmsnorm_fwd(ex, Dsum, Do, Dr, Da, Db, Dw, N, C, 1e-5f);
        rf->add_rmsnorm_fwd(X1, sum, o2, r2, a, b, w, N, C, 1e-5f);
        compare_d("sum", Dsum, sum, N * C, 0);
        compare_d("out", Do, o2, N * C, 1e-5);
        compare_d("rstd", Dr, r2, N, 1e-5);
        dfree(Da); dfree(Db); dfree(Dw); dfree(Ds); dfree(Do); dfree(Dr);
        ffree(a); ffree(b); ffree(w); ffree(s2); ffree(o2); ffree(r2);
    }
}

static void case_rmsnorm_bwd(void) {
    for (size_t s = 0; s < 2 * sizeof RMS / sizeof RMS[0]; s++) {
        int64_t N = RMS[s / 2][0]; int C = RMS[s / 2][1], acc = (int)(s % 2);
        snprintf(cur_shape, sizeof cur_shape, "N%lld C%d acc%d", (long long)N, C, acc);
        float *x = frand(N * C, 2), *w = frand(C, 1), *o = frand(N * C, 0), *r = frand(N, 0);
        float *dy = frand(N * C, 1), *dx2 = frand(N * C, 1), *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C);
        rf->rmsnorm_fwd(X1, o, r, x, w, N, C, 1e-5f);
        float *Dx = dup_d(x, N * C), *Dw = dup_d(w, C), *Dr = dup_d(r, N), *Ddy = dup_d(dy, N * C);
        float *Ddx = dup_d(dx2, N * C), *Ddw = dup_d(dw1, C), *Ddw2 = dup_d(dw1, C), *Ddx2 = dup_d(dx2, N * C);
        be->rmsnorm_bwd(ex, Ddx, Ddw, Ddy, Dx, Dw, Dr, N, C, acc);
        rf->rmsnorm_bwd(X1, dx2, dw2, dy, x, w, r, N, C, acc);
        double terms = 0;
        for (int64_t i = 0; i < N * C; i++) terms = fmax(terms, fabs(r[i / C] * w[i % C] * dy[i]));
        float *hdx = get_h(Ddx, N * C);
        compare_floor("dx", hdx, dx2, N * C, 1e-5, terms);
        compare_d("dw", Ddw, dw2, C, 1e-5);
        /* determinism of the dw reduction */
        be->rmsnorm_bwd(ex, Ddx2, Ddw2, Ddy, Dx, Dw, Dr, N, C, acc);
        float *a = get_h(Ddw, C), *b = get_h(Ddw2, C), *hdx2 = get_h(Ddx2, N * C);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)C) == 0 && memcmp(hdx, hdx2, sizeof(float) * (size_t)(N * C)) == 0,
              "rmsnorm_bwd %s: two runs differ", cur_shape);
        ffree(a); ffree(b); ffree(hdx); ffree(hdx2);
        dfree(Dx); dfree(Dw); dfree(Dr); dfree(Ddy); dfree(Ddx); dfree(Ddw); dfree(Ddw2); dfree(Ddx2);
        ffree(x); ffree(w); ffree(o); ffree(r); ffree(dy); ffree(dx2); ffree(dw1); ffree(dw2);
    }
}

static float *cols_h(const float *x, int64_t n, int64_t W, int64_t c0, int64_t w) {
    float *d = frand(n * w, 0);
    for (int64_t r = 0; r < n; r++) memcpy(d + r * w, x + r * W + c0, sizeof(float) * (size_t)w);
    return d;
}

static void rope_case(int bwd) {
    static const int S[][5] = {{1, 1, 1, 2, 0}, {2, 5, 3, 8, 0}, {1, 3, 2, 18, 7}, {3, 9, 1, 64, 2}, {2, 100, 12, 64, 5}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int B = S[s][0], T = S[s][1], NH = S[s][2], HS = S[s][3], p0 = S[s][4];
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d HS%d pos0 %d", B, T, NH, HS, p0);
        float *cs, *sn;
        rope_tables(T + p0, HS, &cs, &sn);
        int64_t n = (int64_t)B * T * NH * HS, nt = (int64_t)(T + p0) * (HS / 2);
        float *x1 = frand(n, 1), *x2 = fcopy(x1, n);
        float *dc = dup_d(cs, nt), *ds = dup_d(sn, nt), *dx = dup_d(x1, n);
        (bwd ? be->rope_bwd : be->rope_fwd)(ex, dx, dc, ds, B, T, NH, HS, p0, 0);
        (bwd ? rf->rope_bwd : rf->rope_fwd)(X1, x2, cs, sn, B, T, NH, HS, p0, 0);
        compare_d("x", dx, x2, n, 1e-6);
        /* the heads in rows of W (the q|k columns of q|k|v), the columns past them untouched */
        int64_t N = (int64_t)B * T, D = (int64_t)NH * HS, W = D + 2 * HS + 4;
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d HS%d pos0 %d rows %lld apart", B, T, NH, HS, p0,
                 (long long)W);
        float *r = frand(N * W, 0);
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = 0; c < W; c++) r[i * W + c] = c < D ? x1[i * D + c] : 5.0f;
        float *dr = dup_d(r, N * W);
        (bwd ? be->rope_bwd : be->rope_fwd)(ex, dr, dc, ds, B, T, NH, HS, p0, W);
        float *h = get_h(dr, N * W), *hx = cols_h(h, N, W, 0, D);
        int64_t pad = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = D; c < W; c++) pad += h[i * W + c] != 5.0f;
        CHECK(pad == 0, "%s %s: wrote %lld values past the heads", bwd ? "rope_bwd" : "rope_fwd", cur_shape,
              (long long)pad);
        compare("x (rows)", hx, x2, N * D, 1e-6);
        dfree(dr); ffree(r); ffree(h); ffree(hx);
        dfree(dc); dfree(ds); dfree(dx);
        ffree(cs); ffree(sn); ffree(x1); ffree(x2);
    }
}
static void case_rope_fwd(void) { rope_case(0); }
static void case_rope_bwd(void) { rope_case(1); }

/* B, Tq, Tk, NH, NKV, HS, extra kv stride */
static const int ATT[][7] = {{1, 1, 1, 1, 1, 2, 0},    {2, 5, 5, 4, 2, 8, 0},      {1, 17, 17, 3, 1, 18, 0},
                             {2, 33, 33, 2, 2, 64, 0}, {1, 1, 9, 4, 1, 8, 0},      {2, 3, 40, 6, 3, 16, 24},
                             {2, 100, 100, 4, 2, 64, 0}, {1, 70, 70, 2, 1, 128, 0}, {1, 40, 40, 2, 2, 256, 0},
                             {1, 1, 300, 4, 2, 64, 0}, {1, 5, 77, 6, 2, 32, 10},   {1, 64, 64, 3, 3, 30, 0},
                             {1, 65, 65, 12, 12, 96, 0}, {1, 200, 200, 2, 1, 200, 0},
                             /* tensor-core flash attention in bf16 mode: HS 64/128, Tq >= 16, tiles of 64 */
                             {1, 16, 16, 2, 1, 64, 0},   {2, 300, 300, 4, 1, 64, 0}, {1, 129, 129, 2, 2, 128, 0},
                             {2, 256, 256, 2, 2, 128, 0}, {1, 40, 100, 4, 2, 64, 12}, {1, 77, 200, 2, 1, 128, 0},
                             {1, 520, 600, 3, 3, 64, 0}, /* (Hopper's wgmma forward: blocks of 128 over an offset) */
                             /* Hopper's blocks of 128 queries / keys: exactly one, one and a row, GQA 3:1 */
                             {1, 128, 128, 6, 2, 64, 0}, {2, 129, 129, 3, 3, 64, 0}, {1, 255, 255, 6, 2, 64, 0},
                             /* many key tiles a query tile (16) */
                             {2, 1000, 1000, 4, 2, 64, 0},
                             /* Hopper's persistent forward: more work tiles (192 queries) than SMs, so each block
                              * takes several in turn (Q buffers and K/V stages reused); 288 tiles, GQA 4:1, the
                              * partial tile's rows from -184 (a warpgroup straddling row 0); then over an offset */
                             {9, 200, 200, 16, 4, 64, 0}, {36, 70, 160, 8, 2, 64, 0},
                             /* decoding (Tq = 1, keys split in chunks of 64): one chunk, a 1-key tail, many
                              * chunks, odd head sizes, GQA, batches with a longer cache stride */
                             {1, 1, 64, 12, 12, 128, 0}, {1, 1, 65, 3, 1, 5, 0}, {2, 1, 1000, 6, 2, 64, 40},
                             {3, 1, 129, 4, 4, 80, 7},   {1, 1, 2049, 2, 2, 256, 0}, {1, 1, 2, 8, 8, 33, 0}};

/* Row strides: q, k, v as column ranges of one fused [B*T, W] buffer (W =
 * (NH + 2 NKV) HS + pad, the pad columns 5.0 and left so), dq, dk, dv into
 * another; against the reference on the dense q, k, v (B, T, NH, NKV, HS,
 * pad; head size 64: the flash path in bf16 mode). */
static const int ATT_RS[][6] = {{2, 33, 4, 2, 16, 3}, {1, 300, 4, 2, 64, 4}, {1, 100, 2, 1, 64, 3},
                                {2, 20, 3, 3, 8, 1}}; /* (64, 4: flash reads the rows; 64, 3: odd rows, copied) */
static void attention_strided(int bwd) {
    for (size_t s = 0; s < sizeof ATT_RS / sizeof ATT_RS[0]; s++) {
        int B = ATT_RS[s][0], T = ATT_RS[s][1], NH = ATT_RS[s][2], NKV = ATT_RS[s][3], HS = ATT_RS[s][4];
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, W = QD + 2 * KD + ATT_RS[s][5], N = (int64_t)B * T;
        int64_t nl = (int64_t)B * NH * T;
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d rows %lld apart", B, T, NH, NKV, HS,
                 (long long)W);
        float *qkv = frand(N * W, 1);
        for (int64_t r = 0; r < N; r++)
            for (int64_t c = QD + 2 * KD; c < W; c++) qkv[r * W + c] = 5.0f;
        float *q = cols_h(qkv, N, W, 0, QD), *k = cols_h(qkv, N, W, QD, KD), *v = cols_h(qkv, N, W, QD + KD, KD);
        float *o = frand(N * QD, 0), *l = frand(nl, 0), sc = 1.0f / sqrtf((float)HS);
        rf->attention_fwd(X1, o, l, q, k, v, B, T, T, NH, NKV, HS, 0, 0, T * KD, sc);
        float *D = dup_d(qkv, N * W);
        if (!bwd) {
            float *Do = dup_d(o, N * QD), *Dl = dup_d(l, nl);
            be->attention_fwd(ex, Do, Dl, D, D + QD, D + QD + KD, B, T, T, NH, NKV, HS, W, W, T * W, sc);
            compare_d("out (strided)", Do, o, N * QD, TOL_ATTF);
            compare_d("lse (strided)", Dl, l, nl, TOL_ATTF);
            dfree(Do); dfree(Dl);
        } else {
            float *d = frand(N * QD, 1), *dq = frand(N * QD, 0), *dk = frand(N * KD, 0), *dv = frand(N * KD, 0);
            rf->attention_bwd(X1, dq, dk, dv, d, o, l, q, k, v, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
            float *g = frand(N * W, 0);
            for (int64_t i = 0; i < N * W; i++) g[i] = 5.0f;
            float *Dd = dup_d(d, N * QD), *Do = dup_d(o, N * QD), *Dl = dup_d(l, nl);
            float *Dq = dup_d(q, N * QD), *Dk = dup_d(k, N * KD), *Dv = dup_d(v, N * KD);
            for (int dense_in = 0; dense_in < 2; dense_in++) { /* inputs in qkv's rows, or dense (only dq|dk|dv fused) */
                float *Dg = dup_d(g, N * W);
                if (dense_in)
                    be->attention_bwd(ex, Dg, Dg + QD, Dg + QD + KD, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0,
                                      W, W, sc);
                else
                    be->attention_bwd(ex, Dg, Dg + QD, Dg + QD + KD, Dd, Do, Dl, D, D + QD, D + QD + KD, B, T, NH, NKV,
                                      HS, W, W, 0, 0, sc);
                float *h = get_h(Dg, N * W);
                float *gq = cols_h(h, N, W, 0, QD), *gk = cols_h(h, N, W, QD, KD), *gv = cols_h(h, N, W, QD + KD, KD);
                int64_t pad = 0;
                for (int64_t r = 0; r < N; r++)
                    for (int64_t c = QD + 2 * KD; c < W; c++) pad += h[r * W + c] != 5.0f;
                CHECK(pad == 0, "cuda/attention_bwd %s%s: wrote %lld values outside dq, dk, dv", cur_shape,
                      dense_in ? " (dense inputs)" : "", (long long)pad);
                compare("dq (strided)", gq, dq, N * QD, TOL_ATTB);
                compare("dk (strided)", gk, dk, N * KD, TOL_ATTB);
                compare("dv (strided)", gv, dv, N * KD, TOL_ATTB);
                dfree(Dg);
                ffree(h); ffree(gq); ffree(gk); ffree(gv);
            }
            dfree(Dd); dfree(Do); dfree(Dl); dfree(Dq); dfree(Dk); dfree(Dv);
            ffree(g); ffree(d); ffree(dq); ffree(dk); ffree(dv);
        }
        dfree(D);
        ffree(qkv); ffree(q); ffree(k); ffree(v); ffree(o); ffree(l);
    }
}

static void case_attention_fwd(void) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        int B = ATT[s][0], Tq = ATT[s][1], Tk = ATT[s][2], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        int64_t bs = (int64_t)Tk * NKV * HS + ATT[s][6];
        snprintf(cur_shape, sizeof cur_shape, "B%d Tq%d Tk%d NH%d NKV%d HS%d", B, Tq, Tk, NH, NKV, HS);
        int64_t nq = (int64_t)B * Tq * NH * HS, nl = (int64_t)B * NH * Tq;
        float *q = frand(nq, 1), *k = frand(B * bs, 1), *v = frand(B * bs, 1), *o2 = frand(nq, 0), *l2 = frand(nl, 0);
        float *dq = dup_d(q, nq), *dk = dup_d(k, B * bs), *dv = dup_d(v, B * bs), *d1 = dup_d(o2, nq), *dl = dup_d(l2, nl);
        float sc = 1.0f / sqrtf((float)HS);
        be->attention_fwd(ex, d1, dl, dq, dk, dv, B, Tq, Tk, NH, NKV, HS, 0, 0, bs, sc);
        rf->attention_fwd(X1, o2, l2, q, k, v, B, Tq, Tk, NH, NKV, HS, 0, 0, bs, sc);
        compare_d("out", d1, o2, nq, TOL_ATTF);
        compare_d("lse", dl, l2, nl, TOL_ATTF);
        dfree(dq); dfree(dk); dfree(dv); dfree(d1); dfree(dl);
        ffree(q); ffree(k); ffree(v); ffree(o2); ffree(l2);
    }    attention_strided(0);
}

static void case_attention_bwd(void) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        if (ATT[s][1] != ATT[s][2] || ATT[s][6]) continue;
        int B = ATT[s][0], T = ATT[s][1], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
        int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS, nl = (int64_t)B * NH * T;
        float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *o = frand(nq, 0), *l = frand(nl, 0);
        float sc = 1.0f / sqrtf((float)HS);
        rf->attention_fwd(X1, o, l, q, k, v, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, sc);
        float *d = frand(nq, 1), *dq2 = frand(nq, 0), *dk2 = frand(nk, 0), *dv2 = frand(nk, 0);
        float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Do = dup_d(o, nq), *Dl = dup_d(l, nl);
        float *Dd = dup_d(d, nq), *Ddq = dup_d(dq2, nq), *Ddk = dup_d(dk2, nk), *Ddv = dup_d(dv2, nk);
        be->attention_bwd(ex, Ddq, Ddk, Ddv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
        rf->attention_bwd(X1, dq2, dk2, dv2, d, o, l, q, k, v, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
        compare_d("dq", Ddq, dq2, nq, TOL_ATTB);
        compare_d("dk", Ddk, dk2, nk, TOL_ATTB);
        compare_d("dv", Ddv, dv2, nk, TOL_ATTB);
        /* determinism */
        float *a = get_h(Ddk, nk), *qa = get_h(Ddq, nq);
        be->attention_bwd(ex, Ddq, Ddk, Ddv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
        float *b = get_h(Ddk, nk), *qb = get_h(Ddq, nq);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)nk) == 0, "attention_bwd %s: two runs differ", cur_shape);
        CHECK(memcmp(qa, qb, sizeof(float) * (size_t)nq) == 0, "attention_bwd %s: two runs' dq differ", cur_shape);
        ffree(a); ffree(b); ffree(qa); ffree(qb);
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Do); dfree(Dl); dfree(Dd); dfree(Ddq); dfree(Ddk); dfree(Ddv);
        ffree(q); ffree(k); ffree(v); ffree(o); ffree(l); ffree(d); ffree(dq2); ffree(dk2); ffree(dv2);
    }
    attention_strided(1);
}

static const int64_t EW[] = {1, 10, 73, 514, 3601, 1000003};

/* N, H, pad: gate|up one fused [N, 2H + pad] tensor, and two tensors with
 * rows H + pad apart; against the reference on dense copies, pads untouched */
static const int SW_ROWS[][3] = {{1, 8, 0}, {7, 24, 3}, {3, 13, 5}, {64, 40, 0}, {512, 2048, 0}};
static void swiglu_rows(int bwd) {
    for (size_t s = 0; s < sizeof SW_ROWS / sizeof SW_ROWS[0]; s++)
        for (int fused = 0; fused < 2; fused++) {
            int64_t N = SW_ROWS[s][0], H = SW_ROWS[s][1], ld = (fused ? 2 * H : H) + SW_ROWS[s][2], n = N * H;
            int64_t tot = N * ld * (fused ? 1 : 2), uo = fused ? H : N * ld;
            snprintf(cur_shape, sizeof cur_shape, "N%lld H%lld rows %lld apart%s", (long long)N, (long long)H,
                     (long long)ld, fused ? " (gate|up fused)" : "");
            float *gu = frand(tot, 2), *d = frand(n, 1);
            float *gd = cols_h(gu, N, ld, 0, H), *ud = cols_h(gu + uo, N, ld, 0, H);
            float *Dgu = dup_d(gu, tot), *Dd = dup_d(d, n);
            if (!bwd) {
                float *o = frand(n, 0), *Do = dup_d(o, n);
                be->swiglu_fwd(ex, Do, Dgu, Dgu + uo, N, (int)H, ld);
                rf->swiglu_fwd(X1, o, gd, ud, N, (int)H, 0);
                compare_d("out (rows)", Do, o, n, 1e-6);
                ffree(o); dfree(Do);
            } else {
                float *a = frand(n, 0), *b = frand(n, 0), *f = frand(tot, 0);
                for (int64_t i = 0; i < tot; i++) f[i] = 5.0f;
                float *Df = dup_d(f, tot);
                be->swiglu_bwd(ex, Df, Df + uo, Dd, Dgu, Dgu + uo, N, (int)H, ld);
                rf->swiglu_bwd(X1, a, b, d, gd, ud, N, (int)H, 0);
                float *h = get_h(Df, tot), *ha = cols_h(h, N, ld, 0, H), *hb = cols_h(h + uo, N, ld, 0, H);
                int64_t pad = 0;
                for (int64_t r = 0; r < tot / ld; r++)
                    for (int64_t c = fused ? 2 * H : H; c < ld; c++) pad += h[r * ld + c] != 5.0f;
                CHECK(pad == 0, "swiglu_bwd %s: wrote %lld values outside dgate, dup", cur_shape, (long long)pad);
                compare("dgate (rows)", ha, a, n, 1e-6);
                compare("dup (rows)", hb, b, n, 1e-6);
                ffree(a); ffree(b); ffree(f); dfree(Df); ffree(h); ffree(ha); ffree(hb);
            }
            ffree(gu); ffree(d); ffree(gd); ffree(ud); dfree(Dgu); dfree(Dd);
        }
}

static void case_swiglu_fwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *o2 = frand(n, 0);
        float *dg = dup_d(g, n), *du = dup_d(u, n), *d1 = dup_d(o2, n);
        be->swiglu_fwd(ex, d1, dg, du, 1, (int)n, 0);
        rf->swiglu_fwd(X1, o2, g, u, 1, (int)n, 0);
        compare_d("out", d1, o2, n, 1e-6);
        dfree(dg); dfree(du); dfree(d1); ffree(g); ffree(u); ffree(o2);
    }
    swiglu_rows(0);
}

static void case_swiglu_bwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *a2 = frand(n, 0), *b2 = frand(n, 0);
        float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n), *Da = dup_d(a2, n), *Db = dup_d(b2, n);
        be->swiglu_bwd(ex, Da, Db, Dd, Dg, Du, 1, (int)n, 0);
        rf->swiglu_bwd(X1, a2, b2, d, g, u, 1, (int)n, 0);
        compare_d("dgate", Da, a2, n, 1e-6);
        compare_d("dup", Db, b2, n, 1e-6);
        dfree(Dg); dfree(Du); dfree(Dd); dfree(Da); dfree(Db);
        ffree(g); ffree(u); ffree(d); ffree(a2); ffree(b2);
    }
    swiglu_rows(1);
}

static void case_add(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *a = frand(n, 1), *b = frand(n, 1), *o2 = frand(n, 0);
        float *Da = dup_d(a, n), *Db = dup_d(b, n), *Do = dup_d(o2, n);
        be->add(ex, Do, Da, Db, n);
        rf->add(X1, o2, a, b, n);
        compare_d("out", Do, o2, n, 0);
        be->add(ex, Da, Da, Db, n);
        compare_d("in place", Da, o2, n, 0);
        dfree(Da); dfree(Db); dfree(Do); ffree(a); ffree(b); ffree(o2);
    }
}

/* {N, V, ld}: rows ld >= V apart (the padded LM head: GPT-2's 50,257 in 50,304) */
static const int XE[][3] = {{1, 1, 1}, {1, 7, 7}, {1, 7, 8}, {9, 300, 300}, {9, 300, 320}, {4, 5000, 5000},
                            {17, 32768, 32768}, {3, 131072, 131072}, {70, 4099, 4099}, {70, 4099, 4160}, {5, 50257, 50304}};
/* logits [N, ld], the pad columns 40 (they would swamp any sum that read them) */
static float *xent_logits(int64_t N, int V, int ld) {
    float *lg = frand(N * ld, 8);
    for (int64_t i = 0; i < N * ld; i++) if (i % ld >= V) lg[i] = 40.0f;
    return lg;
}

/* the shapes of XE, then rows with masked (-inf) logits: a leading half,
 * every other one (V % 4 == 0 and not) */
static void case_xent_fwd(void) {
    int nx = (int)(sizeof XE / sizeof XE[0]);
    for (int s = 0; s < nx + 2; s++) {
        int64_t N = s < nx ? XE[s][0] : 3; int V = s < nx ? XE[s][1] : s == nx ? 4096 : 4099;
        int ld = s < nx ? XE[s][2] : V;
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d%s", (long long)N, V, ld, s < nx ? "" : " masked");
        float *lg = xent_logits(N, V, ld), *l2 = frand(N, 0), *z2 = frand(N, 0);
        if (s >= nx) {
            for (int j = 0; j < V / 2; j++) lg[j] = -INFINITY;
            for (int j = 0; j < V; j += 2) lg[V + j] = -INFINITY;
        }
        int32_t *t = targets_for(N, V);
        if (s >= nx) { t[0] = V - 1; t[1] = 1; } /* targets on unmasked logits: finite losses */
        int32_t *Dt = ids_d(t, N);
        float *Dlg = dup_d(lg, N * ld), *Dl = dup_d(l2, N), *Dz = dup_d(z2, N);
        be->xent_fwd(ex, Dl, Dz, Dlg, Dt, N, V, ld);
        rf->xent_fwd(X1, l2, z2, lg, t, N, V, ld);
        compare_d("losses", Dl, l2, N, 1e-5);
        compare_d("lse", Dz, z2, N, 1e-5);
        be->free(Dt); dfree(Dlg); dfree(Dl); dfree(Dz);
        ffree(lg); ffree(l2); ffree(z2); free(t);
    }
}

/* (dlogits start as noise: the pad columns must come out 0) */
static void case_xent_bwd(void) {
    for (size_t s = 0; s < sizeof XE / sizeof XE[0]; s++) {
        int64_t N = XE[s][0]; int V = XE[s][1], ld = XE[s][2];
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d", (long long)N, V, ld);
        float *lg = xent_logits(N, V, ld), *l = frand(N, 0), *z = frand(N, 0), *d2 = frand(N * ld, 1);
        int32_t *t = targets_for(N, V), *Dt = ids_d(t, N);
        rf->xent_fwd(X1, l, z, lg, t, N, V, ld);
        float *Dlg = dup_d(lg, N * ld), *Dz = dup_d(z, N), *Dd = dup_d(d2, N * ld);
        be->xent_bwd(ex, Dd, Dlg, Dz, Dt, 0.37f, N, V, ld);
        rf->xent_bwd(X1, d2, lg, z, t, 0.37f, N, V, ld);
        compare_d("dlogits", Dd, d2, N * ld, 1e-6);
        be->xent_bwd(ex, Dlg, Dlg, Dz, Dt, 0.37f, N, V, ld);
        compare_d("dlogits in place", Dlg, d2, N * ld, 1e-6);
        be->free(Dt); dfree(Dlg); dfree(Dz); dfree(Dd);
        ffree(lg); ffree(l); ffree(z); ffree(d2); free(t);
    }
}

static void case_adamw(void) {
    for (int64_t n = 1; n <= 400000; n = n * 11 + 2)
        for (int64_t t = 1; t <= 1000; t *= 31) {
            snprintf(cur_shape, sizeof cur_shape, "n%lld t%lld", (long long)n, (long long)t);
            float *p1 = frand(n, 1), *m1 = frand(n, 0.1f), *v1 = frand(n, 0.01f), *g = frand(n, 1);
            for (int64_t i = 0; i < n; i++) v1[i] = fabsf(v1[i]);
            float *Dp = dup_d(p1, n), *Dm = dup_d(m1, n), *Dv = dup_d(v1, n), *Dg = dup_d(g, n);
            const float gs = t == 31 ? 0.37f : 1.0f; /* (a clipping coefficient at one t) */
            be->adamw(ex, Dp, Dm, Dv, Dg, gs, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
            rf->adamw(X1, p1, m1, v1, g, gs, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
            compare_d("p", Dp, p1, n, 1e-6);
            compare_d("m", Dm, m1, n, 1e-6);
            compare_d("v", Dv, v1, n, 1e-6);
            dfree(Dp); dfree(Dm); dfree(Dv); dfree(Dg);
            ffree(p1); ffree(m1); ffree(v1); ffree(g);
        }
}

static void case_sumsq(void) {
    for (int64_t n = 0; n <= 30000000; n = n * 13 + 1) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 3), *Dx = dup_d(x, n);
        double a = be->sumsq(ex, Dx, n), b = rf->sumsq(X1, x, n), a2 = be->sumsq(ex, Dx, n);
        CHECK(fabs(a - b) <= 1e-12 * (b + 1), "cuda/sumsq %s: %.17g vs %.17g", cur_shape, a, b);
        CHECK(memcmp(&a, &a2, sizeof a) == 0, "cuda/sumsq %s: two runs differ", cur_shape);
        if (n > 2) {
            float bad = NAN;
            be->upload(Dx + n / 2, &bad, sizeof bad);
            CHECK(isnan(be->sumsq(ex, Dx, n)), "cuda/sumsq %s: NaN not propagated", cur_shape);
            bad = INFINITY;
            be->upload(Dx + n / 2, &bad, sizeof bad);
            CHECK(isinf(be->sumsq(ex, Dx, n)), "cuda/sumsq %s: Inf not propagated", cur_shape);
        }
        dfree(Dx);
        ffree(x);
    }
}

static void case_scale(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *a = frand(n, 1), *Da = dup_d(a, n);
        be->scale(ex, Da, 0.3f, n);
        rf->scale(X1, a, 0.3f, n);
        compare_d("x", Da, a, n, 0);
        dfree(Da); ffree(a);
    }
}

/* LayerNorm: the shapes of tests/test_ops.c (C = 1, 3, 17, 768; N = 1, 5,
 * 64) plus larger ones (GPT-2 small/XL widths, many rows, wide rows). */
static const uint16_t LN[][2] = {{1, 1},   {5, 1},   {64, 1},   {1, 3},    {5, 3},      {64, 3},    {1, 17}, {5, 17},
                            {64, 17}, {1, 768}, {5, 768},  {64, 768}, {3000, 768}, {512, 1600}, {12000, 64}, {7, 4096}};

static void case_layernorm_fwd(void) {
    for (size_t s = 0; s < sizeof LN / sizeof LN[0]; s++)
        for (int bias = 0; bias < 2; bias++) {
            int64_t N = LN[s][0]; int C = LN[s][1];
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d bias%d", (long long)N, C, bias);
            float *x = frand(N * C, 2), *w = frand(C, 1), *b = frand(C, 1);
            for (int64_t i = 0; i < N * C; i++) x[i] += 0.5f; /* an offset mean, as in a residual stream */
            float *o2 = frand(N * C, 0), *m2 = frand(N, 0), *r2 = frand(N, 0);
            float *Dx = dup_d(x, N * C), *Dw = dup_d(w, C), *Db = dup_d(b, C);
            float *Do = dup_d(o2, N * C), *Dm = dup_d(m2, N), *Dr = dup_d(r2, N);
            be->layernorm_fwd(ex, Do, Dm, Dr, Dx, Dw, bias ? Db : NULL, N, C, 1e-5f);
            rf->layernorm_fwd(X1, o2, m2, r2, x, w, bias ? b : NULL, N, C, 1e-5f);
            compare_d("out", Do, o2, N * C, 1e-5);
            compare_d("mean", Dm, m2, N, 1e-5);
            compare_d("rstd", Dr, r2, N, 1e-5);
            dfree(Dx); dfree(Dw); dfree(Db); dfree(Do); dfree(Dm); dfree(Dr);
            ffree(x); ffree(w); ffree(b); ffree(o2); ffree(m2); ffree(r2);
        }
}

/* alias: 0 a separate sum, 1 sum = a (in place), 2 sum = b; with and
 * without the bias (the wide rows and the few long ones take the add, then
 * layernorm_fwd) */
static void case_add_layernorm_fwd(void) {
    for (size_t s = 0; s < sizeof LN / sizeof LN[0]; s++)
        for (int k = 0; k < 6; k++) {
            int64_t N = LN[s][0]; int C = LN[s][1], alias = k % 3, bias = k / 3;
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d alias%d bias%d", (long long)N, C, alias, bias);
            float *a = frand(N * C, 2), *b = frand(N * C, 1), *w = frand(C, 1), *bb = frand(C, 1);
            for (int64_t i = 0; i < N * C; i++) a[i] += 0.5f; /* an offset mean, as in a residual stream */
            float *s2 = frand(N * C, 0), *o2 = frand(N * C, 0), *m2 = frand(N, 0), *r2 = frand(N, 0);
            float *Da = dup_d(a, N * C), *Db = dup_d(b, N * C), *Dw = dup_d(w, C), *Dbb = dup_d(bb, C);
            float *Ds = dup_d(s2, N * C), *Do = dup_d(o2, N * C), *Dm = dup_d(m2, N), *Dr = dup_d(r2, N);
            float *Dsum = alias == 1 ? Da : alias == 2 ? Db : Ds, *sum = alias == 1 ? a : alias == 2 ? b : s2;
            be->add_layernorm_fwd(ex, Dsum, Do, Dm, Dr, Da, Db, Dw, bias ? Dbb : NULL, N, C, 1e-5f);
            rf->add_layernorm_fwd(X1, sum, o2, m2, r2, a, b, w, bias ? bb : NULL, N, C, 1e-5f);
            compare_d("sum", Dsum, sum, N * C, 0);
            compare_d("out", Do, o2, N * C, 1e-5);
            compare_d("mean", Dm, m2, N, 1e-5);
            compare_d("rstd", Dr, r2, N, 1e-5);
            dfree(Da); dfree(Db); dfree(Dw); dfree(Dbb); dfree(Ds); dfree(Do); dfree(Dm); dfree(Dr);
            ffree(a); ffree(b); ffree(w); ffree(bb); ffree(s2); ffree(o2); ffree(m2); ffree(r2);
        }
}

static void case_layernorm_bwd(void) {
    for (size_t s = 0; s < sizeof LN / sizeof LN[0]; s++)
        for (int bias = 0; bias < 2; bias++) {
            int64_t N = LN[s][0]; int C = LN[s][1];
            int acc = bias; /* (dx accumulated with the bias, written without) */
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d bias%d acc%d", (long long)N, C, bias, acc);
            float *x = frand(N * C, 2), *w = frand(C, 1), *b = frand(C, 1), *o = frand(N * C, 0);
            float *m = frand(N, 0), *r = frand(N, 0);
            rf->layernorm_fwd(X1, o, m, r, x, w, b, N, C, 1e-5f);
            float *dy = frand(N * C, 1), *dx2 = frand(N * C, 1);
            float *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C), *db1 = frand(C, 1), *db2 = fcopy(db1, C);
            float *Dx = dup_d(x, N * C), *Dw = dup_d(w, C), *Dm = dup_d(m, N), *Dr = dup_d(r, N), *Ddy = dup_d(dy, N * C);
            float *Ddx = dup_d(dx2, N * C), *Ddx2 = dup_d(dx2, N * C);
            float *Ddw = dup_d(dw1, C), *Ddw2 = dup_d(dw1, C), *Ddb = dup_d(db1, C), *Ddb2 = dup_d(db1, C);
            be->layernorm_bwd(ex, Ddx, Ddw, bias ? Ddb : NULL, Ddy, Dx, Dw, Dm, Dr, N, C, acc);
            rf->layernorm_bwd(X1, dx2, dw2, bias ? db2 : NULL, dy, x, w, m, r, N, C, acc);
            double terms = 0; /* |r w dy|: dx is a difference of terms of this size */
            for (int64_t i = 0; i < N * C; i++) terms = fmax(terms, fabs(r[i / C] * w[i % C] * dy[i]));
            float *hdx = get_h(Ddx, N * C);
            compare_floor("dx", hdx, dx2, N * C, 1e-5, terms);
            compare_d("dw", Ddw, dw2, C, 1e-5);
            compare_d("db", Ddb, db2, C, 1e-5); /* unchanged without bias */
            /* determinism of the dw/db reductions */
            be->layernorm_bwd(ex, Ddx2, Ddw2, bias ? Ddb2 : NULL, Ddy, Dx, Dw, Dm, Dr, N, C, acc);
            float *a = get_h(Ddw, C), *a2 = get_h(Ddw2, C), *c1 = get_h(Ddb, C), *c2 = get_h(Ddb2, C);
            float *hdx2 = get_h(Ddx2, N * C);
            CHECK(memcmp(a, a2, sizeof(float) * (size_t)C) == 0 && memcmp(c1, c2, sizeof(float) * (size_t)C) == 0 &&
                      memcmp(hdx, hdx2, sizeof(float) * (size_t)(N * C)) == 0,
                  "layernorm_bwd %s: two runs differ", cur_shape);
            ffree(a); ffree(a2); ffree(c1); ffree(c2); ffree(hdx); ffree(hdx2);
            dfree(Dx); dfree(Dw); dfree(Dm); dfree(Dr); dfree(Ddy); dfree(Ddx); dfree(Ddx2);
            dfree(Ddw); dfree(Ddw2); dfree(Ddb); dfree(Ddb2);
            ffree(x); ffree(w); ffree(b); ffree(o); ffree(m); ffree(r); ffree(dy); ffree(dx2);
            ffree(dw1); ffree(dw2); ffree(db1); ffree(db2);
        }
}

/* GELU (tanh form): the device takes -2u as a float pair (hi, lo) and the
 * rest in float, as v·σ(2u) (no 1 + tanh u to cancel), 2^t and the
 * reciprocal from the special function unit: 5.0e-7 relative (gelu' 3.3e-7
 * absolute) at worst against the reference's double tanh form over every
 * 7th float in [-12, 12] on the host, with the unit's results emulated at
 * their error bounds (2 ulp, 1 ulp) in either direction, so 1e-6 holds.
 * Random inputs over [-6, 6], then a grid over [-12, 12] with large |x|,
 * 0 and NaN appended: element-wise, relative 1e-6 for x >= -2, absolute
 * 1e-7 below; gelu' absolute 1e-6. */
static void case_gelu_fwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 6), *o2 = frand(n, 0), *Dx = dup_d(x, n), *Do = dup_d(o2, n);
        be->gelu_fwd(ex, Do, Dx, n);
        rf->gelu_fwd(X1, o2, x, n);
        compare_d("out", Do, o2, n, 1e-6);
        dfree(Dx); dfree(Do); ffree(x); ffree(o2);
    }
}

static void case_gelu_bwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 6), *d = frand(n, 1), *g2 = frand(n, 0);
        float *Dx = dup_d(x, n), *Dd = dup_d(d, n), *Dg = dup_d(g2, n);
        be->gelu_bwd(ex, Dg, Dd, Dx, n);
        rf->gelu_bwd(X1, g2, d, x, n);
        compare_d("dx", Dg, g2, n, 1e-6);
        dfree(Dx); dfree(Dd); dfree(Dg); ffree(x); ffree(d); ffree(g2);
    }
    /* special inputs, forward and backward together */
    enum { G = 24001, S = 14 };
    static const float big[S] = {20, -20, 50, -50, 1e3f, -1e3f, 1e10f, -1e10f, 1e20f, -1e20f, 3e38f, -3e38f, 10.5f, -10.5f};
    int64_t n = G + S + 2;
    float *x = frand(n, 0), *d = frand(n, 0), *o2 = frand(n, 0), *g2 = frand(n, 0);
    for (int64_t i = 0; i < G; i++) x[i] = -12.0f + 24.0f * (float)i / (G - 1);
    for (int i = 0; i < S; i++) x[G + i] = big[i];
    x[G + S] = 0.0f; x[G + S + 1] = NAN;
    for (int64_t i = 0; i < n; i++) d[i] = 1.0f;
    float *Dx = dup_d(x, n), *Dd = dup_d(d, n), *Do = dup_d(o2, n), *Dg = dup_d(g2, n);
    be->gelu_fwd(ex, Do, Dx, n);
    be->gelu_bwd(ex, Dg, Dd, Dx, n);
    rf->gelu_fwd(X1, o2, x, n);
    rf->gelu_bwd(X1, g2, d, x, n);
    float *o1 = get_h(Do, n), *g1 = get_h(Dg, n);
    double worst = 0, worst_d = 0;
    float wx = 0, wxd = 0;
    for (int64_t i = 0; i < G + S + 1; i++) {
        double e = fabs((double)o1[i] - o2[i]) / (x[i] >= -2 ? fmax(fabs(o2[i]), 1e-30) : 0.1);
        double ed = fabs((double)g1[i] - g2[i]);
        if (!(e <= worst)) { worst = e; wx = x[i]; }
        if (!(ed <= worst_d)) { worst_d = ed; wxd = x[i]; }
    }
    snprintf(cur_shape, sizeof cur_shape, "grid [-12, 12], large |x|");
    CHECK(worst <= 1e-6, "cuda/gelu_fwd %s: error %.3g at x = %.9g", cur_shape, worst, wx);
    CHECK(worst_d <= 1e-6, "cuda/gelu_bwd %s: error %.3g at x = %.9g", cur_shape, worst_d, wxd);
    CHECK(isnan(o1[G + S + 1]) && isnan(g1[G + S + 1]), "cuda/gelu: NaN not propagated (%g, %g)", o1[G + S + 1],
          g1[G + S + 1]);
    ffree(o1); ffree(g1);
    dfree(Dx); dfree(Dd); dfree(Do); dfree(Dg);
    ffree(x); ffree(d); ffree(o2); ffree(g2);
}

/* bf16 storage: bit for bit the reference on bf16_test_inputs (special
 * values, random bits, magnitudes 1e-30..1e30), on sizes that exercise the
 * four-wide and the scalar paths, aligned and one element off; every bf16
 * value unpacks to smj_bf16_to_f32's bits and packs back to itself. */
static void case_bf16_pack(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++)
        for (int off = 0; off < 2; off++) {
            int64_t n = EW[s];
            snprintf(cur_shape, sizeof cur_shape, "n%lld offset%d", (long long)n, off);
            float *x = frand(n + 1, 0);
            bf16_test_inputs(x + off, n, (uint64_t)n);
            uint16_t *want = malloc(sizeof(uint16_t) * (size_t)(n + 2)), *got = malloc(sizeof(uint16_t) * (size_t)(n + 2));
            rf->bf16_pack(X1, want, x + off, n);
            float *Dx = dup_d(x, n + 1);
            uint16_t *Do = u16_d(n);
            be->bf16_pack(ex, Do + off, Dx + off, n);
            be->download(got, Do, sizeof(uint16_t) * (size_t)(n + 2));
            int64_t bad = 0;
            for (int64_t i = 0; i < n; i++) bad += got[i + off] != want[i];
            CHECK(bad == 0, "cuda/bf16_pack %s: %lld values differ from ref", cur_shape, (long long)bad);
            CHECK(got[off ? 0 : n] == 0 && got[n + 1] == 0, "cuda/bf16_pack %s: wrote outside its output", cur_shape);
            be->free(Do); dfree(Dx); ffree(x); free(want); free(got);
        }
}
static void case_bf16_unpack(void) {
    int64_t n = 65536;
    for (int off = 0; off < 2; off++) {
        snprintf(cur_shape, sizeof cur_shape, "all 65536 offset%d", off);
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n + 2)), *back = malloc(sizeof(uint16_t) * (size_t)(n + 2));
        for (int64_t i = 0; i < n + 2; i++) h[i] = (uint16_t)(i - off);
        uint16_t *Dh = u16_d(n), *Db = u16_d(n);
        be->upload(Dh, h, sizeof(uint16_t) * (size_t)(n + 2));
        float *f = frand(n + 1, 0), *Df = dup_d(f, n + 1);
        be->bf16_unpack(ex, Df + off, Dh + off, n);
        be->bf16_pack(ex, Db + off, Df + off, n);
        float *g = get_h(Df, n + 1);
        be->download(back, Db, sizeof(uint16_t) * (size_t)(n + 2));
        int64_t bad = 0, badrt = 0;
        for (int64_t i = 0; i < n; i++) {
            float want = smj_bf16_to_f32((uint16_t)i);
            bad += memcmp(&want, g + off + i, 4) != 0;
            int nan = (i & 0x7FFF) > 0x7F80;
            badrt += back[i + off] != (nan ? (uint16_t)(i | 0x40) : (uint16_t)i);
        }
        CHECK(bad == 0, "cuda/bf16_unpack %s: %lld values wrong", cur_shape, (long long)bad);
        CHECK(badrt == 0, "cuda/bf16_unpack %s: %lld values do not pack back to themselves", cur_shape, (long long)badrt);
        CHECK(g[off ? 0 : n] == 0 && g[-1] == CANARY && g[n + 1] == CANARY, "cuda/bf16_unpack %s: wrote outside its output",
              cur_shape);
        be->free(Dh); be->free(Db); dfree(Df); ffree(f); ffree(g); free(h); free(back);
    }
}

typedef void (*op_case)(void);
static const op_case CASES[] = {
#define SMJ_OP_CASE(n) case_##n,
    SMJ_OPS(SMJ_OP_CASE)
#undef SMJ_OP_CASE
};
static const char *const NAMES[] = {
#define SMJ_OP_NAME(n) #n,
    SMJ_OPS(SMJ_OP_NAME)
#undef SMJ_OP_NAME
};
_Static_assert(sizeof CASES / sizeof CASES[0] == SMJ_OP_COUNT, "every op needs a CUDA checker case");

/* attention_bwd_rope (optional op): where the backend takes it, bit for bit
 * attention_bwd then rope_bwd on dq and dk (the same kernels, the rotation
 * in their epilogues), with dense gradients and with dq|dk|dv the column
 * ranges of one fused tensor; where it declines, nothing written. */
static void check_attention_bwd_rope(void) {
    cur_op = "attention_bwd_rope";
    long before = check_failed;
    int taken = 0, calls = 0;
    static const int S[][5] = {{2, 100, 4, 2, 64}, {1, 300, 4, 4, 64}, {2, 129, 6, 2, 64}, {1, 64, 2, 1, 128}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int B = S[s][0], T = S[s][1], NH = S[s][2], NKV = S[s][3], HS = S[s][4];
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, N = (int64_t)B * T, W = QD + 2 * KD;
        int64_t nq = N * QD, nk = N * KD, nl = (int64_t)B * NH * T, nt = (int64_t)T * (HS / 2);
        float sc = 1.0f / sqrtf((float)HS), *cs, *sn;
        rope_tables(T, HS, &cs, &sn);
        float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *d = frand(nq, 1);
        float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Dd = dup_d(d, nq), *Do = dup_d(d, nq),
              *Dl = dup_d(d, nl), *Dc = dup_d(cs, nt), *Ds = dup_d(sn, nt);
        be->attention_fwd(ex, Do, Dl, Dq, Dk, Dv, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * KD, sc);
        for (int fused = 0; fused < 2; fused++) {
            snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d%s", B, T, NH, NKV, HS,
                     fused ? " (dq|dk|dv fused)" : "");
            int64_t tot = N * W, rs = fused ? W : 0;
            float *j = frand(tot, 0);
            for (int64_t i = 0; i < tot; i++) j[i] = 5.0f;
            float *A = dup_d(j, tot), *Bt = dup_d(j, tot);
            float *ak = fused ? A + QD : A + nq, *av = fused ? A + QD + KD : A + nq + nk;
            float *bk = fused ? Bt + QD : Bt + nq, *bv = fused ? Bt + QD + KD : Bt + nq + nk;
            int r = be->attention_bwd_rope(ex, A, ak, av, Dd, Do, Dl, Dq, Dk, Dv, Dc, Ds, B, T, NH, NKV, HS, 0, 0, rs,
                                           rs, sc);
            float *ha = get_h(A, tot);
            if (r) {
                be->attention_bwd(ex, Bt, bk, bv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0, rs, rs, sc);
                be->rope_bwd(ex, Bt, Dc, Ds, B, T, NH, HS, 0, rs);
                be->rope_bwd(ex, bk, Dc, Ds, B, T, NKV, HS, 0, rs);
                float *hb = get_h(Bt, tot);
                CHECK(memcmp(ha, hb, sizeof(float) * (size_t)tot) == 0,
                      "cuda/attention_bwd_rope %s: differs from attention_bwd then rope_bwd", cur_shape);
                ffree(hb);
                taken++;
            } else {
                int64_t w = 0;
                for (int64_t i = 0; i < tot; i++) w += ha[i] != 5.0f;
                CHECK(w == 0, "cuda/attention_bwd_rope %s: declined but wrote %lld values", cur_shape, (long long)w);
            }
            calls++;
            ffree(ha); ffree(j); dfree(A); dfree(Bt);
        }
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Dd); dfree(Do); dfree(Dl); dfree(Dc); dfree(Ds);
        ffree(q); ffree(k); ffree(v); ffree(d); ffree(cs); ffree(sn);
    }
    printf("cuda %-14s %-6s taken for %d of %d calls (where taken: attention_bwd + rope_bwd bit for bit)\n",
           "attn_bwd_rope", check_failed == before ? "ok" : "FAILED", taken, calls);
}

/* attention_bwd_bias (optional op): where the backend takes it, the
 * gradients bit for bit attention_bwd's (the same kernels) and db += their
 * column sums within float summation error of double sums of those
 * gradients; dense gradients and dq|dk|dv as one fused tensor; where it
 * declines, nothing written. */
static void check_attention_bwd_bias(void) {
    cur_op = "attention_bwd_bias";
    long before = check_failed;
    int taken = 0, calls = 0;
    static const int S[][5] = {{2, 100, 4, 2, 64}, {1, 300, 4, 4, 64}, {2, 129, 6, 2, 64}, {1, 64, 2, 1, 128}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int B = S[s][0], T = S[s][1], NH = S[s][2], NKV = S[s][3], HS = S[s][4];
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, N = (int64_t)B * T, W = QD + 2 * KD;
        int64_t nq = N * QD, nk = N * KD, nl = (int64_t)B * NH * T;
        float sc = 1.0f / sqrtf((float)HS);
        float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *d = frand(nq, 1), *b = frand(W, 1);
        float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Dd = dup_d(d, nq), *Do = dup_d(d, nq),
              *Dl = dup_d(d, nl);
        be->attention_fwd(ex, Do, Dl, Dq, Dk, Dv, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * KD, sc);
        for (int fused = 0; fused < 2; fused++) {
            snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d%s", B, T, NH, NKV, HS,
                     fused ? " (dq|dk|dv fused)" : "");
            int64_t tot = N * W, rs = fused ? W : 0;
            float *j = frand(tot, 0);
            for (int64_t i = 0; i < tot; i++) j[i] = 5.0f;
            float *A = dup_d(j, tot), *Bt = dup_d(j, tot), *Db = dup_d(b, W);
            float *ak = fused ? A + QD : A + nq, *av = fused ? A + QD + KD : A + nq + nk;
            float *bk = fused ? Bt + QD : Bt + nq, *bv = fused ? Bt + QD + KD : Bt + nq + nk;
            int r = be->attention_bwd_bias(ex, A, ak, av, Db, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0, rs, rs,
                                           sc);
            float *ha = get_h(A, tot), *hb = get_h(Db, W);
            if (r) {
                be->attention_bwd(ex, Bt, bk, bv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, 0, 0, rs, rs, sc);
                float *h2 = get_h(Bt, tot);
                CHECK(memcmp(ha, h2, sizeof(float) * (size_t)tot) == 0,
                      "cuda/attention_bwd_bias %s: gradients differ from attention_bwd's", cur_shape);
                /* the gradients' rows: dense [N, QD], [N, KD], [N, KD] one after the other, or rows of W */
                const int64_t off[3] = {0, fused ? QD : nq, fused ? QD + KD : nq + nk}, wd[3] = {QD, KD, KD},
                              at[3] = {0, QD, QD + KD};
                double worst = 0;
                for (int g = 0; g < 3; g++) {
                    int64_t st = fused ? W : wd[g];
                    for (int64_t c2 = 0; c2 < wd[g]; c2++) {
                        double sum = b[at[g] + c2], mag = fabs((double)b[at[g] + c2]);
                        for (int64_t i = 0; i < N; i++) {
                            double x = h2[off[g] + i * st + c2];
                            sum += x;
                            mag += fabs(x);
                        }
                        double e = fabs((double)hb[at[g] + c2] - sum) / fmax(mag, 1e-30);
                        if (!(e <= worst)) worst = e;
                    }
                }
                CHECK(worst <= 1e-6, "cuda/attention_bwd_bias %s: db error %.3g (of the column's magnitude)",
                      cur_shape, worst);
                if (worst > op_worst) op_worst = worst;
                ffree(h2);
                taken++;
            } else {
                int64_t w = 0;
                for (int64_t i = 0; i < tot; i++) w += ha[i] != 5.0f;
                for (int64_t i = 0; i < W; i++) w += hb[i] != b[i];
                CHECK(w == 0, "cuda/attention_bwd_bias %s: declined but wrote %lld values", cur_shape, (long long)w);
            }
            calls++;
            ffree(ha); ffree(hb); ffree(j); dfree(A); dfree(Bt); dfree(Db);
        }
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Dd); dfree(Do); dfree(Dl);
        ffree(q); ffree(k); ffree(v); ffree(d); ffree(b);
    }
    printf("cuda %-14s %-6s taken for %d of %d calls (gradients as attention_bwd's bit for bit, db to their sums)\n",
           "attn_bwd_bias", check_failed == before ? "ok" : "FAILED", taken, calls);
}

/* gelu_bwd_bias (optional op): where the backend takes it, dx as gelu_bwd's
 * (the same kernels' arithmetic: bit for bit) and db += its column sums
 * within float summation error of the reference's double sums; where it
 * declines (rows not in fours), nothing written. */
static void check_gelu_bwd_bias(void) {
    cur_op = "gelu_bwd_bias";
    long before = check_failed;
    int taken = 0, calls = 0;
    static const int S[][2] = {{1, 4}, {7, 12}, {64, 3072}, {300, 768}, {1000, 100}, {5, 6}, {3, 1}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int64_t N = S[s][0], n = N * S[s][1];
        int H = S[s][1];
        snprintf(cur_shape, sizeof cur_shape, "N%lld H%d", (long long)N, H);
        float *x = frand(n, 6), *d = frand(n, 1), *g = frand(n, 0), *b = frand(H, 1), *g2 = frand(n, 0);
        for (int64_t i = 0; i < n; i++) g[i] = 5.0f;
        float *Dx = dup_d(x, n), *Dd = dup_d(d, n), *Dg = dup_d(g, n), *Db = dup_d(b, H), *Dg2 = dup_d(g, n);
        int r = be->gelu_bwd_bias(ex, Dg, Db, Dd, Dx, N, H);
        float *hg = get_h(Dg, n), *hb = get_h(Db, H);
        if (r) {
            be->gelu_bwd(ex, Dg2, Dd, Dx, n);
            float *h2 = get_h(Dg2, n);
            CHECK(memcmp(hg, h2, sizeof(float) * (size_t)n) == 0, "cuda/gelu_bwd_bias %s: dx differs from gelu_bwd's",
                  cur_shape);
            float *b2 = fcopy(b, H);
            rf->gelu_bwd_bias(X1, g2, b2, d, x, N, H);
            double worst = 0;
            for (int j = 0; j < H; j++) {
                double mag = fabs((double)b[j]);
                for (int64_t i = 0; i < N; i++) mag += fabs((double)g2[i * H + j]);
                double e = fabs((double)hb[j] - b2[j]) / fmax(mag, 1e-30);
                if (!(e <= worst)) worst = e;
            }
            CHECK(worst <= 1e-6, "cuda/gelu_bwd_bias %s: db error %.3g (of the column's magnitude)", cur_shape, worst);
            if (worst > op_worst) op_worst = worst;
            ffree(h2); ffree(b2);
            taken++;
        } else {
            int64_t w = 0;
            for (int64_t i = 0; i < n; i++) w += hg[i] != 5.0f;
            for (int j = 0; j < H; j++) w += hb[j] != b[j];
            CHECK(w == 0, "cuda/gelu_bwd_bias %s: declined but wrote %lld values", cur_shape, (long long)w);
        }
        calls++;
        ffree(hg); ffree(hb);
        dfree(Dx); dfree(Dd); dfree(Dg); dfree(Db); dfree(Dg2);
        ffree(x); ffree(d); ffree(g); ffree(b); ffree(g2);
    }
    CHECK(taken >= 5, "cuda/gelu_bwd_bias: taken for %d of %d calls, want the five with rows in fours", taken, calls);
    printf("cuda %-14s %-6s taken for %d of %d calls (dx as gelu_bwd's bit for bit, db to the reference)\n",
           "gelu_bwd_bias", check_failed == before ? "ok" : "FAILED", taken, calls);
}

/* adamw_runs (optional op): where the backend takes the runs, p, m, v bit
 * for bit adamw per run (the same arithmetic) and within adamw's limits of
 * the reference; runs out of order, at odd offsets, shorter and longer than
 * a block's share, with and without decay; too many runs: declined,
 * nothing written. */
static void check_adamw_runs(void) {
    cur_op = "adamw_runs";
    long before = check_failed;
    const int64_t n = 300001;
    static const int64_t RO[][2] = {{100, 7}, {0, 100}, {107, 4096}, {4203, 4097}, {8300, 70000}, {78301, 3},
                                    {78304, 200000}, {278304, 21697}};
    const int nr = (int)(sizeof RO / sizeof RO[0]);
    int64_t off[8], len[8];
    unsigned char dec[8];
    for (int r = 0; r < nr; r++) off[r] = RO[r][0], len[r] = RO[r][1], dec[r] = (unsigned char)(r % 2);
    int taken = 0;
    for (int64_t t = 1; t <= 1000; t *= 31) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld, %d runs, t%lld", (long long)n, nr, (long long)t);
        float *p = frand(n, 1), *m = frand(n, 0.1f), *v = frand(n, 0.01f), *g = frand(n, 1);
        for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *Dp = dup_d(p, n), *Dm = dup_d(m, n), *Dv = dup_d(v, n), *Dg = dup_d(g, n);
        float *Ep = dup_d(p, n), *Em = dup_d(m, n), *Ev = dup_d(v, n);
        const float gs = t == 31 ? 0.37f : 1.0f;
        int r0 = be->adamw_runs(ex, Dp, Dm, Dv, Dg, gs, NULL, off, len, dec, nr, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        CHECK(r0, "cuda/adamw_runs %s: declined", cur_shape);
        if (!r0) continue;
        taken++;
        /* with a control block (grad_ctl's): its gs, lr and t, the arguments
         * ignored; then a block saying skip: nothing changes */
        float *Cp = dup_d(p, n), *Cm = dup_d(m, n), *Cv = dup_d(v, n);
        smj_step_ctl hc, *Dc = be->alloc(sizeof hc);
        smj_step_ctl_set(&hc, 1e-3f, 0.9f, 0.95f, t);
        hc.gs = gs;
        be->upload(Dc, &hc, sizeof hc);
        CHECK(be->adamw_runs(ex, Cp, Cm, Cv, Dg, 0.5f, Dc, off, len, dec, nr, 7.0f, 0.9f, 0.95f, 1e-8f, 0.1f, t + 5),
              "cuda/adamw_runs %s: declined with a control block", cur_shape);
        for (int r = 0; r < nr; r++) {
            int64_t o = off[r];
            be->adamw(ex, Ep + o, Em + o, Ev + o, Dg + o, gs, len[r], 1e-3f, 0.9f, 0.95f, 1e-8f, dec[r] ? 0.1f : 0.0f, t);
            rf->adamw(X1, p + o, m + o, v + o, g + o, gs, len[r], 1e-3f, 0.9f, 0.95f, 1e-8f, dec[r] ? 0.1f : 0.0f, t);
        }
        const float *got[3] = {Dp, Dm, Dv}, *per[3] = {Ep, Em, Ev}, *ctl[3] = {Cp, Cm, Cv};
        for (int k = 0; k < 3; k++) {
            float *a = get_h(got[k], n), *b = get_h(per[k], n), *c = get_h(ctl[k], n);
            CHECK(memcmp(a - PAD, b - PAD, sizeof(float) * (size_t)(n + 2 * PAD)) == 0,
                  "cuda/adamw_runs %s: %s differs from adamw per run", cur_shape, k == 0 ? "p" : k == 1 ? "m" : "v");
            CHECK(memcmp(c - PAD, b - PAD, sizeof(float) * (size_t)(n + 2 * PAD)) == 0,
                  "cuda/adamw_runs %s: %s with a control block differs from adamw per run", cur_shape,
                  k == 0 ? "p" : k == 1 ? "m" : "v");
            ffree(a); ffree(b); ffree(c);
        }
        hc.skip = 1;
        be->upload(Dc, &hc, sizeof hc);
        float *p1 = get_h(Cp, n);
        be->adamw_runs(ex, Cp, Cm, Cv, Dg, gs, Dc, off, len, dec, nr, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        float *p2 = get_h(Cp, n);
        CHECK(memcmp(p1 - PAD, p2 - PAD, sizeof(float) * (size_t)(n + 2 * PAD)) == 0,
              "cuda/adamw_runs %s: a control block saying skip, but p changed", cur_shape);
        ffree(p1); ffree(p2);
        be->free(Dc);
        dfree(Cp); dfree(Cm); dfree(Cv);
        compare_d("p", Dp, p, n, 1e-6);
        compare_d("m", Dm, m, n, 1e-6);
        compare_d("v", Dv, v, n, 1e-6);
        dfree(Dp); dfree(Dm); dfree(Dv); dfree(Dg); dfree(Ep); dfree(Em); dfree(Ev);
        ffree(p); ffree(m); ffree(v); ffree(g);
    }
    /* more runs than the backend takes: declined, nothing written */
    enum { MANY = 100000 };
    int64_t *mo = malloc(sizeof(int64_t) * MANY), *ml = malloc(sizeof(int64_t) * MANY);
    unsigned char *md = calloc(MANY, 1);
    for (int r = 0; r < MANY; r++) mo[r] = 3 * r, ml[r] = 3;
    float *p = frand(3 * MANY, 1), *Dp = dup_d(p, 3 * MANY);
    int r1 = be->adamw_runs(ex, Dp, Dp, Dp, Dp, 1.0f, NULL, mo, ml, md, MANY, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1);
    if (!r1) {
        float *a = get_h(Dp, 3 * MANY);
        CHECK(memcmp(a, p, sizeof(float) * 3 * MANY) == 0, "cuda/adamw_runs: declined %d runs but wrote", MANY);
        ffree(a);
    }
    dfree(Dp); ffree(p); free(mo); free(ml); free(md);
    printf("cuda %-14s %-6s taken for %d of 3 calls (as adamw per run bit for bit, to the reference); %d runs %s\n",
           "adamw_runs", check_failed == before ? "ok" : "FAILED", taken, MANY, r1 ? "taken" : "declined");
}

/* grad_ctl (optional op): sumsq the same bits as the sumsq op's, the
 * losses' sum the reference's within 1e-12, the decision as the trainer's
 * host path takes it from that sum (clipping
 * coefficient, skip on a NaN/Inf gradient or loss only with skipping on),
 * the fields it does not own untouched; against the reference's. */
static void check_grad_ctl(void) {
    cur_op = "grad_ctl";
    long before = check_failed;
    static const int64_t NS[] = {0, 1, 7, 4097, 300001, 3000017};
    int cases = 0;
    for (int ni = 0; ni < (int)(sizeof NS / sizeof NS[0]); ni++)
        for (int kind = 0; kind < 5; kind++) { /* 0 no clip, 1 clip, 2 NaN grad, 3 Inf loss, 4 NaN grad, no skipping */
            const int64_t n = NS[ni], nl = 1000;
            if (n == 0 && kind == 2) continue;
            snprintf(cur_shape, sizeof cur_shape, "n%lld, case %d", (long long)n, kind);
            float *g = frand(n, 1), *l = frand(nl, 5);
            if ((kind == 2 || kind == 4) && n) g[n / 2] = NAN;
            if (kind == 3) l[nl - 1] = INFINITY;
            const float clip = kind == 1 ? 0.5f : kind == 0 ? 1e30f : 1.0f;
            const int skipping = kind != 4;
            float *Dg = dup_d(g, n), *Dl = dup_d(l, nl);
            smj_step_ctl hc, got, ref, *Dc = be->alloc(sizeof hc);
            smj_step_ctl_set(&hc, 3e-4f, 0.9f, 0.95f, 17);
            hc.skip = 5; /* (overwritten) */
            be->upload(Dc, &hc, sizeof hc);
            be->grad_ctl(ex, Dc, Dg, n, Dl, nl, clip, skipping);
            be->download(&got, Dc, sizeof got);
            ref = hc;
            rf->grad_ctl(X1, &ref, g, n, l, nl, clip, skipping);
            const double s = be->sumsq(ex, Dg, n), norm = sqrt(got.sumsq);
            CHECK(memcmp(&got.sumsq, &s, sizeof s) == 0, "cuda/grad_ctl %s: sumsq %.17g, the sumsq op %.17g", cur_shape,
                  got.sumsq, s);
            CHECK(isnan(s) ? isnan(ref.sumsq) : fabs(got.sumsq - ref.sumsq) <= 1e-12 * (ref.sumsq + 1),
                  "cuda/grad_ctl %s: sumsq %.17g vs the reference's %.17g", cur_shape, got.sumsq, ref.sumsq);
            CHECK(kind == 3 ? isinf(got.loss_sum) && isinf(ref.loss_sum)
                            : fabs(got.loss_sum - ref.loss_sum) <= 1e-12 * (fabs(ref.loss_sum) + 1),
                  "cuda/grad_ctl %s: loss_sum %.17g vs the reference's %.17g", cur_shape, got.loss_sum, ref.loss_sum);
            float gs = 1.0f;
            if (clip > 0 && norm > clip) {
                float coef = (float)(clip / (norm + 1e-6));
                if (coef < 1.0f) gs = coef;
            }
            const int want_skip = skipping && (kind == 2 || kind == 3) && (kind != 2 || n > 0);
            CHECK(got.skip == want_skip && ref.skip == want_skip, "cuda/grad_ctl %s: skip %d (reference %d), want %d",
                  cur_shape, got.skip, ref.skip, want_skip);
            CHECK(want_skip || kind == 4 || memcmp(&got.gs, &gs, sizeof gs) == 0,
                  "cuda/grad_ctl %s: gs %.9g, the host rule %.9g", cur_shape, got.gs, gs);
            CHECK(kind != 1 || n < 7 || (got.gs < 1.0f && fabsf(got.gs - ref.gs) <= 1e-6f * ref.gs),
                  "cuda/grad_ctl %s: gs %.9g vs the reference's %.9g", cur_shape, got.gs, ref.gs);
            CHECK(got.t == hc.t && got.lr == hc.lr && got.bc1 == hc.bc1 && got.sbc2 == hc.sbc2,
                  "cuda/grad_ctl %s: wrote fields it does not own", cur_shape);
            cases++;
            be->free(Dc);
            dfree(Dg); dfree(Dl); ffree(g); ffree(l);
        }
    printf("cuda %-14s %-6s %d cases (sumsq as the op's bits, the trainer's rule, the reference's decision)\n",
           "grad_ctl", check_failed == before ? "ok" : "FAILED", cases);
}

/* xent_fwd_bwd (optional op): where the backend takes the rows, losses,
 * lse and dlogits bit for bit those of xent_fwd then xent_bwd (the same
 * threads, the same order), in place too, and within those ops' limits of
 * the reference; rows not in fours: declined, nothing written. The shapes
 * of XE and rows with masked logits. */
static void check_xent_fwd_bwd(void) {
    cur_op = "xent_fwd_bwd";
    long before = check_failed;
    int nx = (int)(sizeof XE / sizeof XE[0]), taken = 0, declined = 0, want = 0;
    for (int s = 0; s < nx + 2; s++) {
        int64_t N = s < nx ? XE[s][0] : 3; int V = s < nx ? XE[s][1] : s == nx ? 4096 : 4099;
        int ld = s < nx ? XE[s][2] : V;
        int64_t n = N * ld;
        want += ld % 4 == 0;
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d%s", (long long)N, V, ld, s < nx ? "" : " masked");
        float *lg = xent_logits(N, V, ld), *l = frand(N, 0), *z = frand(N, 0), *d = frand(n, 1);
        if (s >= nx) {
            for (int j = 0; j < V / 2; j++) lg[j] = -INFINITY;
            for (int j = 0; j < V; j += 2) lg[ld + j] = -INFINITY;
        }
        int32_t *t = targets_for(N, V), *Dt = ids_d(t, N);
        if (s >= nx) { t[0] = V - 1; t[1] = 1; be->upload(Dt, t, sizeof(int32_t) * (size_t)N); }
        float *Dlg = dup_d(lg, n), *Dl = dup_d(l, N), *Dz = dup_d(z, N), *Dd = dup_d(d, n);
        float *El = dup_d(l, N), *Ez = dup_d(z, N), *Ed = dup_d(d, n), *Dip = dup_d(lg, n);
        int r = be->xent_fwd_bwd(ex, Dl, Dz, Dd, Dlg, Dt, 0.37f, N, V, ld);
        if (r) {
            taken++;
            be->xent_fwd(ex, El, Ez, Dlg, Dt, N, V, ld);
            be->xent_bwd(ex, Ed, Dlg, Ez, Dt, 0.37f, N, V, ld);
            int ip = be->xent_fwd_bwd(ex, Dl, Dz, Dip, Dip, Dt, 0.37f, N, V, ld); /* in place (the same outputs again) */
            CHECK(ip, "cuda/xent_fwd_bwd %s: taken, then declined in place", cur_shape);
            const float *got[4] = {Dl, Dz, Dd, Dip}, *two[4] = {El, Ez, Ed, Ed};
            const int64_t len[4] = {N, N, n, n};
            const char *what[4] = {"losses", "lse", "dlogits", "dlogits in place"};
            for (int k = 0; k < 4; k++) {
                float *a = get_h(got[k], len[k]), *b = get_h(two[k], len[k]);
                CHECK(memcmp(a - PAD, b - PAD, sizeof(float) * (size_t)(len[k] + 2 * PAD)) == 0,
                      "cuda/xent_fwd_bwd %s: %s differ from xent_fwd then xent_bwd", cur_shape, what[k]);
                ffree(a); ffree(b);
            }
            rf->xent_fwd(X1, l, z, lg, t, N, V, ld);
            rf->xent_bwd(X1, d, lg, z, t, 0.37f, N, V, ld);
            compare_d("losses", Dl, l, N, 1e-5);
            compare_d("lse", Dz, z, N, 1e-5);
            compare_d("dlogits", Dd, d, n, 1e-6);
        } else {
            declined++;
            const float *got[3] = {Dl, Dz, Dd}, *was[3] = {l, z, d};
            const int64_t len[3] = {N, N, n};
            for (int k = 0; k < 3; k++) {
                float *a = get_h(got[k], len[k]);
                CHECK(memcmp(a - PAD, was[k] - PAD, sizeof(float) * (size_t)(len[k] + 2 * PAD)) == 0,
                      "cuda/xent_fwd_bwd %s: declined but wrote", cur_shape);
                ffree(a);
            }
        }
        be->free(Dt); dfree(Dlg); dfree(Dl); dfree(Dz); dfree(Dd); dfree(El); dfree(Ez); dfree(Ed); dfree(Dip);
        ffree(lg); ffree(l); ffree(z); ffree(d); free(t);
    }
    CHECK(taken == want, "cuda/xent_fwd_bwd: taken for %d of %d shapes, want the %d with rows in fours", taken,
          nx + 2, want);
    printf("cuda %-14s %-6s taken for %d of %d shapes (as xent_fwd then xent_bwd bit for bit, to the reference), "
           "%d declined\n", "xent_fwd_bwd", check_failed == before ? "ok" : "FAILED", taken, nx + 2, declined);
}

/* bf16 mode, SMJ_CUDA_GEMM=tune (the default): a product's algorithm, timed
 * by the first context that meets its shape, is the one every context of
 * the process uses (blaslt.cu's lt_tuned): a second context computes the same
 * bits. And within the bf16 rule of SMJ_CUDA_GEMM=ex's cublasGemmEx. */
static void check_gemm_contexts(smj_ctx *ctx) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    if (!mm || strcmp(mm, "bf16") != 0) return;
    cur_op = "matmul (contexts)";
    long before = check_failed;
    const int64_t M = 2048, N = 1536, K = 768; /* (a shape case_matmul has not tuned) */
    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld tA0 tB1 acc1", (long long)M, (long long)N, (long long)K);
    float *A = frand(M * K, 1), *B = frand(K * N, 1), *C0 = frand(M * N, 1), *C2 = fcopy(C0, M * N);
    float *out[3] = {NULL, NULL, NULL};
    const char *mode[3] = {NULL, NULL, "ex"};
    for (int k = 0; k < 3; k++) {
        if (mode[k]) setenv("SMJ_CUDA_GEMM", mode[k], 1); /* read when a context is made */
        smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_CUDA, .bf16_matmul = 1};
        smj_ctx *c2 = k ? smj_ctx_create(&o) : ctx;
        if (mode[k]) unsetenv("SMJ_CUDA_GEMM");
        if (!c2 || smj_ctx_status(c2) != SMJ_OK) {
            CHECK(0, "cuda/matmul: a second context: %s", c2 ? smj_ctx_error(c2) : "out of memory");
            smj_ctx_free(c2);
            break;
        }
        const smj_backend *b2 = c2->backend;
        float *dA = dup_d(A, M * K), *dB = dup_d(B, K * N), *dC = dup_d(C0, M * N);
        b2->matmul(&c2->exec, dC, dA, dB, M, N, K, 0, 1, 1);
        out[k] = get_h(dC, M * N);
        cuda_check_status(c2, "matmul (contexts)");
        dfree(dA); dfree(dB); dfree(dC);
        if (k) smj_ctx_free(c2);
    }
    rf->matmul(X1, C2, A, B, M, N, K, 0, 1, 1);
    if (out[0] && out[1] && out[2]) {
        CHECK(memcmp(out[0], out[1], sizeof(float) * (size_t)(M * N)) == 0,
              "cuda/matmul %s: two contexts' products differ (the timed algorithm is not shared)", cur_shape);
        compare_floor("C (tuned)", out[0], C2, M * N, TOL_MM, 0);
        compare_floor("C (cublasGemmEx)", out[2], C2, M * N, TOL_MM, 0);
    }
    for (int k = 0; k < 3; k++) ffree(out[k]);
    ffree(A); ffree(B); ffree(C0); ffree(C2);
    printf("cuda %-14s %-6s a second context's product the same bits; tuned and cublasGemmEx within the bf16 rule\n",
           "matmul (ctx)", check_failed == before ? "ok" : "FAILED");
}

/* bf16 mode: more large shapes than the process keeps timed choices for
 * (blaslt.cu's LT_TUNED, 256): the products past it take the heuristic's
 * choice untimed and still compute the right values (and nothing waits on
 * the table's lock). */
static void check_gemm_many_shapes(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    if (!mm || strcmp(mm, "bf16") != 0) return;
    cur_op = "matmul (shapes)";
    long before = check_failed;
    const int n = 300;
    const int64_t M = 1024, N = 64, K0 = 16384, KM = K0 + 16 * (n - 1); /* M N K >= 2^30: timed */
    float *A = frand(M * KM, 1), *B = frand(KM * N, 1), *C = frand(M * N, 0);
    float *dA = dup_d(A, M * KM), *dB = dup_d(B, KM * N), *dC = dup_d(C, M * N);
    int64_t K = K0;
    for (int i = 0; i < n; i++) { /* A [M, K] with row stride K: a new shape each time */
        K = K0 + 16 * i;
        be->matmul(ex, dC, dA, dB, M, N, K, 0, 1, 0);
    }
    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld (shape %d)", (long long)M, (long long)N, (long long)K, n);
    rf->matmul(X1, C, A, B, M, N, K, 0, 1, 0);
    compare_d("C", dC, C, M * N, TOL_MM);
    dfree(dA); dfree(dB); dfree(dC);
    ffree(A); ffree(B); ffree(C);
    printf("cuda %-14s %-6s %d large shapes, the last one past the timed choices' table to the reference\n",
           "matmul (many)", check_failed == before ? "ok" : "FAILED", n);
}

/* bf16 mode: gemm_sm90.cu's own product (the forward's A · B^T with a bf16
 * output, Hopper sm_90a) in a context with SMJ_CUDA_OWN_GEMM=2 (every shape
 * it can take), its output promised bf16 (bf16_only) as the trainer's
 * forward products are: tiles cut by M, N and K (the copy engine's zero
 * fill and clipped stores), several tiles an SM (the persistent loop), K
 * under one 64-wide slice; against the reference within the bf16 rule and
 * against cuBLASLt's product (SMJ_CUDA_OWN_GEMM=0) within one bf16 step of
 * the output. Taken-ness from the context's profile (on a Hopper GPU the
 * line must say "taken for 7 of 8"); elsewhere it declines and the
 * products stay right. */
static int own_product(smj_ctx *cx, float *out, const float *A, const float *B, int64_t M, int64_t N, int64_t K,
                       long *calls) {
    const smj_backend *b2 = cx->backend;
    const smj_exec *e2 = &cx->exec;
    float *dA = dup_d(A, M * K), *dB = dup_d(B, K * N), *dC = dup_d(out, M * N), *dZ = dup_d(out, M * N);
    float *dS = dup_d(out, M * N);
    b2->scale(e2, dZ, 0.0f, M * N);
    smj_ctx_profile(cx, 1);
    b2->bf16_only(e2, dC, M * N);
    b2->matmul(e2, dC, dA, dB, M, N, K, 0, 1, 0);
    b2->add(e2, dS, dC, dZ, M * N); /* a 32-bit read of the promised output: its bf16 values */
    b2->bf16_drop(e2, NULL, 0);
    smj_profile_row rows[64];
    int n = smj_ctx_profile_rows(cx, rows, 64);
    smj_ctx_profile(cx, 0);
    *calls = 0;
    for (int i = 0; i < n && i < 64; i++)
        if (strcmp(rows[i].name, "matmul NT (fwd, own)") == 0) *calls += rows[i].calls;
    b2->download(out - PAD, dS - PAD, sizeof(float) * (size_t)(M * N + 2 * PAD));
    dfree(dA); dfree(dB); dfree(dC); dfree(dZ); dfree(dS);
    return smj_ctx_status(cx) == SMJ_OK;
}
static void check_gemm_own(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    if (!mm || strcmp(mm, "bf16") != 0) return;
    cur_op = "matmul (own)";
    long before = check_failed;
    static const int64_t S[][3] = {{128, 256, 64}, {16, 8, 16},    {200, 264, 72},   {129, 520, 136},
                                   {333, 88, 1000}, {64, 256, 8 * 3 * 5}, {2048, 2304, 768}, {50, 13, 40}};
    const int ns = (int)(sizeof S / sizeof S[0]);
    smj_ctx *cx[2] = {NULL, NULL};
    const char *mode[2] = {"2", "0"};
    for (int k = 0; k < 2; k++) {
        setenv("SMJ_CUDA_OWN_GEMM", mode[k], 1); /* read when a context is made */
        smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_CUDA, .bf16_matmul = 1};
        cx[k] = smj_ctx_create(&o);
        unsetenv("SMJ_CUDA_OWN_GEMM");
        if (!cx[k] || smj_ctx_status(cx[k]) != SMJ_OK) {
            CHECK(0, "cuda/matmul (own): a context with SMJ_CUDA_OWN_GEMM=%s: %s", mode[k],
                  cx[k] ? smj_ctx_error(cx[k]) : "out of memory");
            smj_ctx_free(cx[0]); smj_ctx_free(cx[1]);
            return;
        }
    }
    long calls[8] = {0}, lcalls = 0;
    for (int i = 0; i < ns; i++) {
        const int64_t M = S[i][0], N = S[i][1], K = S[i][2];
        snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld", (long long)M, (long long)N, (long long)K);
        float *A = frand(M * K, 1), *B = frand(K * N, 1), *R = frand(M * N, 0), *O = frand(M * N, 0),
              *L = frand(M * N, 0);
        long lc = 0;
        int ok = own_product(cx[0], O, A, B, M, N, K, &calls[i]) && own_product(cx[1], L, A, B, M, N, K, &lc);
        CHECK(ok, "cuda/matmul (own) %s: device error: %s", cur_shape, smj_ctx_error(cx[0]));
        lcalls += lc;
        rf->matmul(X1, R, A, B, M, N, K, 0, 1, 0);
        compare_floor("C (own, bf16 out)", O, R, M * N, TOL_MM, 0);
        double worst = 0, mx = 1e-30;
        for (int64_t j = 0; j < M * N; j++) mx = fmax(mx, fabs(L[j]));
        for (int64_t j = 0; j < M * N; j++) worst = fmax(worst, fabs((double)O[j] - L[j]) / mx);
        CHECK(worst <= 1.0 / 128, "cuda/matmul (own) %s: %.3g (normalized) from cuBLASLt's bf16 product", cur_shape,
              worst);
        ffree(A); ffree(B); ffree(R); ffree(O); ffree(L);
    }
    /* where it runs at all (a Hopper GPU, a build for sm_90a) it takes every
     * shape whose rows TMA can address (ldc = N a multiple of 8), once */
    int taken = 0, want = 0, runs = 0;
    for (int i = 0; i < ns; i++) runs |= calls[i] > 0;
    for (int i = 0; i < ns; i++) {
        const int takes = runs && S[i][1] % 8 == 0;
        want += takes;
        taken += calls[i] > 0;
        CHECK(calls[i] == takes, "cuda/matmul (own) M%lld N%lld K%lld: taken %ld times, want %d",
              (long long)S[i][0], (long long)S[i][1], (long long)S[i][2], calls[i], takes);
    }
    CHECK(lcalls == 0, "cuda/matmul (own): taken %ld times with SMJ_CUDA_OWN_GEMM=0", lcalls);
    smj_ctx_free(cx[0]);
    smj_ctx_free(cx[1]);
    printf("cuda %-14s %-6s taken for %d of %d shapes (want %d), to the reference and cuBLASLt's\n", "matmul (own)",
           check_failed == before ? "ok" : "FAILED", taken, ns, want);
}

int main(void) {
    smj_ctx *ctx = cuda_check_open();
    if (!ctx) return cuda_check_skip();
    for (int op = 0; op < SMJ_OP_COUNT; op++) {
        cur_op = NAMES[op];
        long before = check_failed;
        op_worst = 0;
        CASES[op]();
        cuda_check_status(ctx, cur_op);
        printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED",
               op_worst);
        fflush(stdout);
    }
    check_attention_bwd_rope();
    cuda_check_status(ctx, "attention_bwd_rope");
    check_attention_bwd_bias();
    cuda_check_status(ctx, "attention_bwd_bias");
    check_gelu_bwd_bias();
    cuda_check_status(ctx, "gelu_bwd_bias");
    check_adamw_runs();
    check_grad_ctl();
    cuda_check_status(ctx, "adamw_runs");
    check_xent_fwd_bwd();
    cuda_check_status(ctx, "xent_fwd_bwd");
    check_gemm_contexts(ctx);
    check_gemm_many_shapes();
    check_gemm_own();
    cuda_check_status(ctx, "matmul (shapes)");
    /* The error rule: a failing op records its error; sumsq then returns
     * NaN and smj_ctx_status names the op. (A head size over 256 is refused
     * by attention_fwd without touching the device.) */
    {
        float *q = be->alloc(4096), *l = be->alloc(4096);
        be->attention_fwd(ex, q, l, q, q, q, 1, 1, 1, 1, 1, 300, 0, 0, 300, 1.0f);
        double s = be->sumsq(ex, q, 4);
        smj_status st = smj_ctx_status(ctx);
        CHECK(isnan(s), "after a failed op sumsq returned %g, want NaN", s);
        CHECK(st == SMJ_ERR_UNSUPPORTED && strstr(smj_ctx_error(ctx), "attention_fwd"),
              "after a failed op: status %s, message '%s'", smj_status_str(st), smj_ctx_error(ctx));
        printf("error rule: status '%s', message '%s'\n", smj_status_str(st), smj_ctx_error(ctx));
        be->free(q);
        be->free(l);
    }
    smj_ctx_free(ctx);
    return check_summary("test_cuda_ops");
}
