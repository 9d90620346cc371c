/* test_cuda_ops.c — the op checker for the CUDA backend (built with CUDA=1).
 *
 * Every op runs on the GPU over seeded random inputs (the awkward shapes of
 * tests/test_ops.c plus larger ones that cross the kernels' tiles: several
 * attention tiles, head sizes up to 256, KV-cache decoding, V = 131072) and
 * is compared with the "ref" backend on the host. Inputs are uploaded,
 * outputs downloaded together with PAD canaries on each side, which must
 * survive; a non-finite output fails at once.
 *
 * Tolerances (normalized max error |got - ref| / max|ref|, as test_ops.c):
 *   matmul (cuBLAS SGEMM, fp32, no TF32)       1e-5
 *   attention fwd/bwd, rmsnorm, xent fwd       1e-5 (add_rmsnorm_fwd's sum 0)
 *   rope, swiglu, adamw, xent_bwd              1e-6
 *   layernorm fwd/bwd                          1e-5
 *   gelu fwd/bwd (u in double on the device)   1e-6
 *   embedding fwd/bwd, add, scale              0 (bit-identical)
 *   sumsq                                      1e-12 relative
 * With SMJ_CUDA_MATMUL=bf16|bf16x (products with bf16 operands, fp32
 * accumulation; attention's products too) the products get the bf16 rule
 * k * 2^-8 (normalized, i.e. abs = k * 2^-8 * max|ref|): matmul and
 * attention fwd k = 4, attention bwd k = 8 (dS is rounded to bf16 once
 * more); with tf32, k * 2^-10, same k. SMJ_CUDA_ATTN=fused checks the
 * fused fp32 attention kernels instead of the cuBLAS path (Tq >= 16).
 * The optional decode ops: decode_attention against the reference's
 * definition and bit for bit against this backend's rope_fwd +
 * attention_fwd; decode_block (f32 and bf16 weights, positions outside the
 * cache, a second launch bit for bit) and decode_linear against the
 * reference's definitions within 2e-5; decode_argmax's choice (ties, NaN,
 * infinities) equal to the reference's scan. qmatmul (f16, q8_0, q4_0)
 * against the reference's exact dequantization: 1e-5 for M <= 8, the
 * matmul's tolerance above (dequantize + matmul). bf16_bind: ops reading a
 * bound tensor give bit for bit what they give on its values in 32 bits;
 * bf16_home: the named storage holds the reference's pack; bf16_only:
 * promised outputs read through products as the plain ones do, in 32 bits
 * as their bf16 rounding (check_bf16_*).
 * Then: the ops said to be deterministic give bit-identical results on a
 * second run, and the error rule (docs/CUDA.md): an op that fails records
 * the error, sumsq returns NaN and smj_ctx_status reports it.
 *
 * Without a usable GPU the program prints SKIP and exits 0, unless
 * SMJ_CUDA_REQUIRE=1 (tests/cuda/run.sh sets it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/ops/ops.h"
#include "../../src/hf/safetensors.h"
#include "../../src/gguf/gguf.h"
#include "../util/check.h"

#define CANARY 1.2345e6f
#define PAD 16

static smj_rng rng;
static const smj_backend *be;
static const smj_exec *ex;
static const smj_exec EX1 = {.nt = 1};
#define X1 (&EX1)
static const smj_backend *rf = &smj_backend_ref;

static float *frand(int64_t n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)(n + 2 * PAD));
    for (int64_t i = 0; i < n + 2 * PAD; i++) p[i] = CANARY;
    for (int64_t i = 0; i < n; i++) p[PAD + i] = scale * (2.0f * (float)smj_rng_uniform(&rng) - 1.0f);
    return p + PAD;
}
static float *fcopy(const float *x, int64_t n) {
    float *p = frand(n, 0);
    memcpy(p, x, sizeof(float) * (size_t)n);
    return p;
}
static void ffree(float *p) { if (p) free(p - PAD); }

/* device copy of a host buffer, canaries included */
static float *dup_d(const float *h, int64_t n) {
    float *d = be->alloc(sizeof(float) * (size_t)(n + 2 * PAD));
    be->upload(d, h - PAD, sizeof(float) * (size_t)(n + 2 * PAD));
    return d + PAD;
}
/* a new host buffer holding device buffer d (canaries included) */
static float *get_h(const float *d, int64_t n) {
    float *h = frand(n, 0);
    be->download(h - PAD, d - PAD, sizeof(float) * (size_t)(n + 2 * PAD));
    return h;
}
static void dfree(float *d) { if (d) be->free(d - PAD); }
static int32_t *ids_d(const int32_t *h, int64_t n) {
    int32_t *d = be->alloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    be->upload(d, h, sizeof(int32_t) * (size_t)n);
    return d;
}

static double TOL_MM = 1e-5, TOL_ATTF = 1e-5, TOL_ATTB = 1e-5; /* by SMJ_CUDA_MATMUL */
static const char *cur_op;
static char cur_shape[160];
static double op_worst; /* the current op's largest normalized error (printed) */

static void compare_floor(const char *what, const float *got, const float *ref, int64_t n, double tol, double floor) {
    double mx = floor > 1e-6 ? floor : 1e-6, err = 0;
    int bad_nan = 0, bad_canary = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        if (!isfinite(got[i]) && isfinite(ref[i])) bad_nan = 1;
    }
    for (int i = 1; i <= PAD; i++) bad_canary |= got[-i] != CANARY || got[n + i - 1] != CANARY;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / mx;
        if (e > err) err = e;
    }
    CHECK(!bad_nan, "cuda/%s %s %s: non-finite output", cur_op, cur_shape, what);
    CHECK(!bad_canary, "cuda/%s %s %s: wrote outside its output", cur_op, cur_shape, what);
    CHECK(err <= tol, "cuda/%s %s %s: normalized error %.3g > %.1g", cur_op, cur_shape, what, err, tol);
    if (err > op_worst) op_worst = err;
}
static void compare(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    compare_floor(what, got, ref, n, tol, 0);
}
/* downloads d and compares it with ref */
static void compare_d(const char *what, const float *d, const float *ref, int64_t n, double tol) {
    float *h = get_h(d, n);
    compare(what, h, ref, n, tol);
    ffree(h);
}

/* ------------------------------------------------------------ cases */

static void case_matmul(void) {
    static const int64_t S[][3] = {{1, 1, 1},   {1, 7, 5},      {3, 1, 9},     {17, 33, 65}, {64, 48, 32},
                                   {5, 130, 3}, {2, 3, 0},      {300, 257, 513}, {1, 4099, 64}, {64, 33, 1000},
                                   /* a few rows against a weight (decoding's NT products, K % 4 == 0) */
                                   {1, 2048, 768}, {2, 1000, 12}, {3, 130, 256}, {4, 33, 768}, {5, 64, 64},
                                   /* A · B through a [K, N] weight (GPT-2's decoding, N % 4 == 0), split over K */
                                   {1, 2304, 768}, {1, 768, 3072}, {2, 3072, 768}, {4, 8, 4096}, {3, 132, 5}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int acc = 0; acc < 2; acc++) {
                    int64_t M = S[s][0], N = S[s][1], K = S[s][2];
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

static void rope_tables(int maxT, int HS, float **cs, float **sn) {
    int h2 = HS / 2;
    *cs = frand((int64_t)maxT * h2, 0);
    *sn = frand((int64_t)maxT * h2, 0);
    for (int p = 0; p < maxT; p++)
        for (int i = 0; i < h2; i++) {
            double a = p * pow(10000.0, -2.0 * i / HS);
            (*cs)[p * h2 + i] = (float)cos(a);
            (*sn)[p * h2 + i] = (float)sin(a);
        }
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
        (bwd ? be->rope_bwd : be->rope_fwd)(ex, dx, dc, ds, B, T, NH, HS, p0);
        (bwd ? rf->rope_bwd : rf->rope_fwd)(X1, x2, cs, sn, B, T, NH, HS, p0);
        compare_d("x", dx, x2, n, 1e-6);
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
                             /* decoding (Tq = 1, keys split in chunks of 64): one chunk, a 1-key tail, many
                              * chunks, odd head sizes, GQA, batches with a longer cache stride */
                             {1, 1, 64, 12, 12, 128, 0}, {1, 1, 65, 3, 1, 5, 0}, {2, 1, 1000, 6, 2, 64, 40},
                             {3, 1, 129, 4, 4, 80, 7},   {1, 1, 2049, 2, 2, 256, 0}, {1, 1, 2, 8, 8, 33, 0}};

static void case_attention_fwd(void) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        int B = ATT[s][0], Tq = ATT[s][1], Tk = ATT[s][2], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        int64_t bs = (int64_t)Tk * NKV * HS + ATT[s][6];
        snprintf(cur_shape, sizeof cur_shape, "B%d Tq%d Tk%d NH%d NKV%d HS%d", B, Tq, Tk, NH, NKV, HS);
        int64_t nq = (int64_t)B * Tq * NH * HS, nl = (int64_t)B * NH * Tq;
        float *q = frand(nq, 1), *k = frand(B * bs, 1), *v = frand(B * bs, 1), *o2 = frand(nq, 0), *l2 = frand(nl, 0);
        float *dq = dup_d(q, nq), *dk = dup_d(k, B * bs), *dv = dup_d(v, B * bs), *d1 = dup_d(o2, nq), *dl = dup_d(l2, nl);
        float sc = 1.0f / sqrtf((float)HS);
        be->attention_fwd(ex, d1, dl, dq, dk, dv, B, Tq, Tk, NH, NKV, HS, bs, sc);
        rf->attention_fwd(X1, o2, l2, q, k, v, B, Tq, Tk, NH, NKV, HS, bs, sc);
        compare_d("out", d1, o2, nq, TOL_ATTF);
        compare_d("lse", dl, l2, nl, TOL_ATTF);
        dfree(dq); dfree(dk); dfree(dv); dfree(d1); dfree(dl);
        ffree(q); ffree(k); ffree(v); ffree(o2); ffree(l2);
    }
}

static void case_attention_bwd(void) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        if (ATT[s][1] != ATT[s][2] || ATT[s][6]) continue;
        int B = ATT[s][0], T = ATT[s][1], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
        int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS, nl = (int64_t)B * NH * T;
        float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *o = frand(nq, 0), *l = frand(nl, 0);
        float sc = 1.0f / sqrtf((float)HS);
        rf->attention_fwd(X1, o, l, q, k, v, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, sc);
        float *d = frand(nq, 1), *dq2 = frand(nq, 0), *dk2 = frand(nk, 0), *dv2 = frand(nk, 0);
        float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Do = dup_d(o, nq), *Dl = dup_d(l, nl);
        float *Dd = dup_d(d, nq), *Ddq = dup_d(dq2, nq), *Ddk = dup_d(dk2, nk), *Ddv = dup_d(dv2, nk);
        be->attention_bwd(ex, Ddq, Ddk, Ddv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, sc);
        rf->attention_bwd(X1, dq2, dk2, dv2, d, o, l, q, k, v, B, T, NH, NKV, HS, sc);
        compare_d("dq", Ddq, dq2, nq, TOL_ATTB);
        compare_d("dk", Ddk, dk2, nk, TOL_ATTB);
        compare_d("dv", Ddv, dv2, nk, TOL_ATTB);
        /* determinism */
        float *a = get_h(Ddk, nk);
        be->attention_bwd(ex, Ddq, Ddk, Ddv, Dd, Do, Dl, Dq, Dk, Dv, B, T, NH, NKV, HS, sc);
        float *b = get_h(Ddk, nk);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)nk) == 0, "attention_bwd %s: two runs differ", cur_shape);
        ffree(a); ffree(b);
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Do); dfree(Dl); dfree(Dd); dfree(Ddq); dfree(Ddk); dfree(Ddv);
        ffree(q); ffree(k); ffree(v); ffree(o); ffree(l); ffree(d); ffree(dq2); ffree(dk2); ffree(dv2);
    }
}

static const int64_t EW[] = {1, 10, 73, 514, 3601, 1000003};

static void case_swiglu_fwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *o2 = frand(n, 0);
        float *dg = dup_d(g, n), *du = dup_d(u, n), *d1 = dup_d(o2, n);
        be->swiglu_fwd(ex, d1, dg, du, n);
        rf->swiglu_fwd(X1, o2, g, u, n);
        compare_d("out", d1, o2, n, 1e-6);
        dfree(dg); dfree(du); dfree(d1); ffree(g); ffree(u); ffree(o2);
    }
}

static void case_swiglu_bwd(void) {
    for (size_t s = 0; s < sizeof EW / sizeof EW[0]; s++) {
        int64_t n = EW[s];
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *a2 = frand(n, 0), *b2 = frand(n, 0);
        float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n), *Da = dup_d(a2, n), *Db = dup_d(b2, n);
        be->swiglu_bwd(ex, Da, Db, Dd, Dg, Du, n);
        rf->swiglu_bwd(X1, a2, b2, d, g, u, n);
        compare_d("dgate", Da, a2, n, 1e-6);
        compare_d("dup", Db, b2, n, 1e-6);
        dfree(Dg); dfree(Du); dfree(Dd); dfree(Da); dfree(Db);
        ffree(g); ffree(u); ffree(d); ffree(a2); ffree(b2);
    }
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

static int32_t *targets_for(int64_t N, int V) {
    int32_t *t = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    for (int64_t i = 0; i < N; i++) t[i] = i % 5 == 3 ? -1 : (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
    return t;
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
            be->adamw(ex, Dp, Dm, Dv, Dg, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
            rf->adamw(X1, p1, m1, v1, g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
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

/* GELU (tanh form): the device takes u in double and the rest in float,
 * as v·σ(2u) (no 1 + tanh u to cancel): ~5e-7 relative at worst against
 * the reference's double tanh form, so 1e-6 holds everywhere.
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
static uint16_t *u16_d(int64_t n) {
    uint16_t *d = be->alloc(sizeof(uint16_t) * (size_t)(n + 2));
    be->zero(d, sizeof(uint16_t) * (size_t)(n + 2));
    return d;
}
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

/* bf16_home / bf16_bind (optional ops), checked against their definitions.
 * Bind: a bound tensor (fp32 storage left holding other values) reads as
 * its unpacked values in every op that reads it: swiglu_bwd, rmsnorm_bwd,
 * attention_bwd and matmul give bit for bit the results they give after
 * bf16_unpack, an op that needs the fp32 values (add) sees them, and ending
 * the bindings (or unpacking over one) leaves later writes alone. Home:
 * no value changes, and after the op and bf16_pack the storage holds the
 * reference's pack; in bf16 mode (copies kept) the op itself wrote it there
 * (before the pack), and a home serves only the next op. */
static const float JUNK = 7.0f;
/* bf16 mode with copies kept: bound tensors stay unwritten, homes are used */
static int copies_kept(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    return mm && strcmp(mm, "bf16") == 0 && !getenv("SMJ_CUDA_BF16_KEEP");
}
/* whether device tensor D (n > 0) still holds JUNK everywhere */
static int still_junk(const float *D, int64_t n) {
    float *h = get_h(D, n);
    int64_t j = 0;
    while (j < n && h[j] == JUNK) j++;
    ffree(h);
    return j == n;
}
static uint16_t *pack_d(const float *Dx, int64_t n) { /* device bf16 storage of a device tensor */
    uint16_t *d = u16_d(n);
    float *h = get_h(Dx, n);
    uint16_t *p = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, p, h, n);
    be->upload(d, p, sizeof(uint16_t) * (size_t)n);
    free(p); ffree(h);
    return d;
}
static float *junk_d(int64_t n) {
    float *h = frand(n, 0);
    for (int64_t i = 0; i < n; i++) h[i] = JUNK;
    float *d = dup_d(h, n);
    ffree(h);
    return d;
}
static void same_d(const char *what, const float *Da, const float *Db, int64_t n) {
    float *a = get_h(Da, n), *b = get_h(Db, n);
    CHECK(memcmp(a - PAD, b - PAD, sizeof(float) * (size_t)(n + 2 * PAD)) == 0,
          "cuda/bf16_bind %s: results differ from the unpacked tensors'", what);
    ffree(a); ffree(b);
}
/* the values of bf16 storage H as floats */
static float *unpacked_h(const uint16_t *H, int64_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    be->download(h, H, sizeof(uint16_t) * (size_t)n);
    float *f = frand(n, 0);
    rf->bf16_unpack(X1, f, h, n);
    free(h);
    return f;
}
/* tensors for H's values: A uploaded (ops read it in 32 bits), B to bind
 * (after every upload: a host write makes kept copies stale) */
static void bound_pair(const uint16_t *H, int64_t n, float **A, float **B) {
    float *f = unpacked_h(H, n);
    *A = dup_d(f, n);
    *B = junk_d(n);
    ffree(f);
}

static void check_bf16_bind(void) {
    cur_op = "bf16_bind";
    long before = check_failed;
    /* swiglu_bwd and matmul reading bound gate / up */
    int64_t n = 3 * 8192, K = 256, M = n / K, NW = 96;
    float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *w = frand(NW * K, 1), *z = frand(n, 0);
    float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n), *Dw = dup_d(w, NW * K), *Dz = dup_d(z, n);
    uint16_t *G16 = pack_d(Dg, n), *U16 = pack_d(Du, n);
    float *Ga, *Gb, *Ua, *Ub, *Xa = junk_d(n), *Xb = junk_d(n), *Ya = junk_d(n), *Yb = junk_d(n);
    float *Ca = junk_d(M * NW), *Cb = junk_d(M * NW);
    bound_pair(G16, n, &Ga, &Gb);
    bound_pair(U16, n, &Ua, &Ub);
    float *R = junk_d(n);
    be->bf16_bind(ex, Gb, G16, n);
    be->bf16_bind(ex, Ub, U16, n);
    snprintf(cur_shape, sizeof cur_shape, "swiglu_bwd n%lld", (long long)n);
    be->swiglu_bwd(ex, Xa, Ya, Dd, Ga, Ua, n);
    be->swiglu_bwd(ex, Xb, Yb, Dd, Gb, Ub, n);
    same_d("swiglu_bwd dgate", Xa, Xb, n);
    same_d("swiglu_bwd dup", Ya, Yb, n);
    be->matmul(ex, Ca, Ga, Dw, M, NW, K, 0, 1, 0);
    be->matmul(ex, Cb, Gb, Dw, M, NW, K, 0, 1, 0);
    same_d("matmul", Ca, Cb, M * NW);
    if (copies_kept())
        CHECK(still_junk(Gb, n) && still_junk(Ub, n), "cuda/bf16_bind: swiglu_bwd / matmul wrote a bound input");
    be->add(ex, Xb, Ub, Dz, n); /* reads Ub in 32 bits */
    same_d("add (fp32 values)", Ua, Xb, n);
    same_d("the bound tensor itself after an op read it", Ua, Ub, n);
    /* ending the bindings, and an unpack over a bound tensor: no later write */
    be->bf16_bind(ex, R, G16, n);
    be->bf16_drop(ex, NULL, 0);
    be->upload(R, u, sizeof(float) * (size_t)n);
    be->add(ex, Xb, R, Dz, n);
    same_d("ended binding", Du, Xb, n);
    be->bf16_bind(ex, R, G16, n);
    be->bf16_unpack(ex, R, U16, n);
    be->add(ex, Xb, R, Dz, n);
    same_d("unpack over a bound tensor", Ua, Xb, n);
    be->bf16_drop(ex, NULL, 0);
    dfree(Ga); dfree(Gb); dfree(Ua); dfree(Ub); dfree(Xa); dfree(Xb); dfree(Ya); dfree(Yb); dfree(Ca); dfree(Cb);
    dfree(Dg); dfree(Du); dfree(Dd); dfree(Dw); dfree(Dz); dfree(R);
    be->free(G16); be->free(U16);
    ffree(g); ffree(u); ffree(d); ffree(w); ffree(z);

    /* rmsnorm_bwd reading a bound x */
    int64_t N = 48; int C = 768;
    snprintf(cur_shape, sizeof cur_shape, "rmsnorm_bwd N%lld C%d", (long long)N, C);
    float *x = frand(N * C, 2), *wn = frand(C, 1), *dy = frand(N * C, 1), *r = frand(N, 0), *o = frand(N * C, 0);
    float *Dx0 = dup_d(x, N * C), *Dwn = dup_d(wn, C), *Ddy = dup_d(dy, N * C), *Dr = dup_d(r, N), *Do = dup_d(o, N * C);
    uint16_t *X16 = pack_d(Dx0, N * C);
    float *Xa2, *Xb2, *dxa = junk_d(N * C), *dxb = junk_d(N * C), *dwa = dup_d(wn, C), *dwb = dup_d(wn, C);
    bound_pair(X16, N * C, &Xa2, &Xb2);
    be->rmsnorm_fwd(ex, Do, Dr, Xa2, Dwn, N, C, 1e-5f);
    be->bf16_bind(ex, Xb2, X16, N * C);
    be->rmsnorm_bwd(ex, dxa, dwa, Ddy, Xa2, Dwn, Dr, N, C, 0);
    be->rmsnorm_bwd(ex, dxb, dwb, Ddy, Xb2, Dwn, Dr, N, C, 0);
    same_d("rmsnorm_bwd dx", dxa, dxb, N * C);
    same_d("rmsnorm_bwd dw", dwa, dwb, C);
    if (copies_kept()) CHECK(still_junk(Xb2, N * C), "cuda/bf16_bind: rmsnorm_bwd wrote its bound input");
    be->bf16_drop(ex, NULL, 0);
    dfree(Dx0); dfree(Dwn); dfree(Ddy); dfree(Dr); dfree(Do); dfree(Xa2); dfree(Xb2); dfree(dxa); dfree(dxb);
    dfree(dwa); dfree(dwb); be->free(X16);
    ffree(x); ffree(wn); ffree(dy); ffree(r); ffree(o);

    /* attention_bwd reading bound q, k, v, out (the flash path in bf16 mode) */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    snprintf(cur_shape, sizeof cur_shape, "attention_bwd B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS, nl = (int64_t)B * NH * T;
    float sc = 1.0f / sqrtf((float)HS);
    float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *dout = frand(nq, 1);
    float *Dq0 = dup_d(q, nq), *Dk0 = dup_d(k, nk), *Dv0 = dup_d(v, nk), *Ddo = dup_d(dout, nq);
    uint16_t *Q16 = pack_d(Dq0, nq), *K16 = pack_d(Dk0, nk), *V16 = pack_d(Dv0, nk);
    float *Qa, *Qb, *Ka, *Kb, *Va, *Vb, *Oa, *Ob, *O0 = junk_d(nq), *L = junk_d(nl);
    bound_pair(Q16, nq, &Qa, &Qb);
    bound_pair(K16, nk, &Ka, &Kb);
    bound_pair(V16, nk, &Va, &Vb);
    be->attention_fwd(ex, O0, L, Qa, Ka, Va, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, sc);
    uint16_t *O16 = pack_d(O0, nq);
    bound_pair(O16, nq, &Oa, &Ob);
    float *r1[3] = {junk_d(nq), junk_d(nk), junk_d(nk)}, *r2[3] = {junk_d(nq), junk_d(nk), junk_d(nk)};
    be->bf16_bind(ex, Qb, Q16, nq);
    be->bf16_bind(ex, Kb, K16, nk);
    be->bf16_bind(ex, Vb, V16, nk);
    be->bf16_bind(ex, Ob, O16, nq);
    be->attention_bwd(ex, r1[0], r1[1], r1[2], Ddo, Oa, L, Qa, Ka, Va, B, T, NH, NKV, HS, sc);
    be->attention_bwd(ex, r2[0], r2[1], r2[2], Ddo, Ob, L, Qb, Kb, Vb, B, T, NH, NKV, HS, sc);
    same_d("attention_bwd dq", r1[0], r2[0], nq);
    same_d("attention_bwd dk", r1[1], r2[1], nk);
    same_d("attention_bwd dv", r1[2], r2[2], nk);
    if (copies_kept())
        CHECK(still_junk(Qb, nq) && still_junk(Kb, nk) && still_junk(Vb, nk) && still_junk(Ob, nq),
              "cuda/bf16_bind: attention_bwd wrote a bound input");
    be->bf16_drop(ex, NULL, 0);
    for (int i = 0; i < 3; i++) { dfree(r1[i]); dfree(r2[i]); }
    dfree(Qa); dfree(Qb); dfree(Ka); dfree(Kb); dfree(Va); dfree(Vb); dfree(Oa); dfree(Ob); dfree(O0); dfree(L);
    dfree(Dq0); dfree(Dk0); dfree(Dv0); dfree(Ddo);
    be->free(Q16); be->free(K16); be->free(V16); be->free(O16);
    ffree(q); ffree(k); ffree(v); ffree(dout);
    printf("cuda %-14s %-6s bound tensors read bit for bit as unpacked ones\n", "bf16_bind",
           check_failed == before ? "ok" : "FAILED");
}

/* bf16_only: the promised output reads, through products, bit for bit as
 * the plain output does; in bf16 mode (copies kept) its fp32 storage stays
 * unwritten and an op that reads it in 32 bits sees the bf16-rounded
 * values; bf16_drop leaves later writes alone. Outputs of swiglu_bwd,
 * xent_bwd, rope_bwd (in place) and attention_bwd's dv (flash). */
static float *oc_w, *oc_a, *oc_b, *oc_z, *oc_s; /* made before the ops: a host write would end the copies */
enum { OC_NW = 48, OC_N = 4 * 8192 };
/* before: the promised output's storage before the op (an in-place op's
 * input), NULL: JUNK */
static void only_check(const char *what, const float *Dplain, float *Donly, int64_t n, const float *before) {
    int64_t K = 64, M = n / K, NW = OC_NW;
    float *Ca = oc_a, *Cb = oc_b, *Dz = oc_z, *S = oc_s, *Dw = oc_w;
    if (copies_kept()) {
        float *h = get_h(Donly, n);
        int same = before ? memcmp(h, before, sizeof(float) * (size_t)n) == 0 : still_junk(Donly, n);
        CHECK(same, "cuda/bf16_only %s: the fp32 values were written", what);
        ffree(h);
    }
    be->matmul(ex, Ca, Dplain, Dw, M, NW, K, 0, 1, 0);
    be->matmul(ex, Cb, Donly, Dw, M, NW, K, 0, 1, 0);
    char buf[96];
    snprintf(buf, sizeof buf, "%s: its product", what);
    same_d(buf, Ca, Cb, M * NW);
    be->add(ex, S, Donly, Dz, n); /* a 32-bit read: the rounded values */
    float *p = get_h(Dplain, n), *g = get_h(S, n);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, h, p, n);
    if (copies_kept()) rf->bf16_unpack(X1, p, h, n);
    CHECK(memcmp(p, g, sizeof(float) * (size_t)n) == 0, "cuda/bf16_only %s: a 32-bit read differs from the %s values",
          what, copies_kept() ? "rounded" : "plain");
    free(h); ffree(p); ffree(g);
}

static void check_bf16_only(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N;
    float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *w = frand(OC_NW * 64, 1);
    float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n);
    float *A1 = junk_d(n), *A2 = junk_d(n), *B1 = junk_d(n), *B2 = junk_d(n), *B3 = junk_d(n), *B4 = junk_d(n);
    oc_w = dup_d(w, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
    be->swiglu_bwd(ex, A1, A2, Dd, Dg, Du, n);
    be->bf16_only(ex, B1, n);
    be->swiglu_bwd(ex, B1, B2, Dd, Dg, Du, n);
    only_check("swiglu_bwd dgate", A1, B1, n, NULL);
    be->bf16_only(ex, B4, n);
    be->swiglu_bwd(ex, B3, B4, Dd, Dg, Du, n);
    only_check("swiglu_bwd dup", A2, B4, n, NULL);
    /* xent_bwd in place over logits, 8 rows of 4096 */
    int64_t R = 8, V = n / R;
    int32_t *t = targets_for(R, (int)V), *Dt = ids_d(t, R);
    float *Dl = junk_d(R), *Dz = junk_d(R), *L1 = dup_d(g, n), *L2 = dup_d(g, n);
    be->xent_fwd(ex, Dz, Dl, L1, Dt, R, (int)V, (int)V);
    be->xent_bwd(ex, L1, L1, Dl, Dt, 0.5f, R, (int)V, (int)V);
    be->bf16_only(ex, L2, n);
    be->xent_bwd(ex, L2, L2, Dl, Dt, 0.5f, R, (int)V, (int)V);
    only_check("xent_bwd", L1, L2, n, g);
    /* rope_bwd in place: 64 rows of 8 heads of 64 */
    float *cs, *sn;
    rope_tables(64, 64, &cs, &sn);
    float *Dc = dup_d(cs, 64 * 32), *Ds = dup_d(sn, 64 * 32), *X1d = dup_d(d, n), *X2d = dup_d(d, n);
    be->rope_bwd(ex, X1d, Dc, Ds, 1, 64, 8, 64, 0);
    be->bf16_only(ex, X2d, n);
    be->rope_bwd(ex, X2d, Dc, Ds, 1, 64, 8, 64, 0);
    only_check("rope_bwd (in place)", X1d, X2d, n, d);
    /* attention_bwd's dv (flash in bf16 mode): B 2, T 64, 4 heads (2 KV) of 64 */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *Q = dup_d(g, nq), *Kd = dup_d(u, nk), *Vd = dup_d(d, nk), *O = junk_d(nq), *Lse = junk_d((int64_t)B * NH * T);
    float *dO = dup_d(u, nq), *r[6];
    for (int i = 0; i < 6; i++) r[i] = junk_d(i % 3 == 0 ? nq : nk);
    be->attention_fwd(ex, O, Lse, Q, Kd, Vd, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, 0.125f);
    be->attention_bwd(ex, r[0], r[1], r[2], dO, O, Lse, Q, Kd, Vd, B, T, NH, NKV, HS, 0.125f);
    be->bf16_only(ex, r[5], nk);
    be->attention_bwd(ex, r[3], r[4], r[5], dO, O, Lse, Q, Kd, Vd, B, T, NH, NKV, HS, 0.125f);
    only_check("attention_bwd dv", r[2], r[5], nk, NULL);
    /* a dropped promise leaves a later write alone */
    float *P = junk_d(n), *Z = junk_d(n), *S = junk_d(n);
    be->scale(ex, Z, 0.0f, n);
    be->bf16_only(ex, P, n);
    be->bf16_only(ex, B2, n);
    be->swiglu_bwd(ex, P, B2, Dd, Dg, Du, n);
    be->bf16_drop(ex, P, n);
    be->upload(P, d, sizeof(float) * (size_t)n);
    be->add(ex, S, P, Z, n);
    same_d("dropped bf16-only tensor, then written", Dd, S, n);
    be->bf16_drop(ex, NULL, 0);
    for (int i = 0; i < 6; i++) dfree(r[i]);
    dfree(Q); dfree(Kd); dfree(Vd); dfree(O); dfree(Lse); dfree(dO); dfree(P); dfree(Z); dfree(S);
    dfree(Dc); dfree(Ds); dfree(X1d); dfree(X2d); ffree(cs); ffree(sn);
    dfree(Dl); dfree(Dz); dfree(L1); dfree(L2); be->free(Dt); free(t);
    dfree(Dg); dfree(Du); dfree(Dd); dfree(A1); dfree(A2); dfree(B1); dfree(B2); dfree(B3); dfree(B4);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    ffree(g); ffree(u); ffree(d); ffree(w);
    printf("cuda %-14s %-6s promised outputs read as the plain ones through products%s\n", "bf16_only",
           check_failed == before ? "ok" : "FAILED", copies_kept() ? ", unwritten in 32 bits" : "");
}

/* bf16_only on the forward's outputs and on products (bf16 mode).
 * rmsnorm_fwd, add_rmsnorm_fwd and attention_fwd (flash): promised outputs
 * read as the plain ones through products (only_check). A product's
 * promised output is the bf16 product: in 32 bits, bf16 values within one
 * bf16 rounding of the fp32 product, its fp32 storage unwritten while
 * copies are kept; swiglu_fwd reading promised gate / up and swiglu_bwd a
 * promised dout give, bit for bit, what they give on fp32 tensors holding
 * the same values, without writing the promised tensors' fp32 storage. */
static int bf16_mode(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    return mm && strcmp(mm, "bf16") == 0;
}
static void check_bf16_only_fwd(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N, N = 512;
    int C = (int)(n / N);
    float *x = frand(n, 2), *y = frand(n, 1), *w = frand(C, 1), *wm = frand(OC_NW * 64, 1);
    float *Dx = dup_d(x, n), *Dy = dup_d(y, n), *Dw = dup_d(w, C), *R = junk_d(N), *S1 = junk_d(n), *S2 = junk_d(n);
    float *O1 = junk_d(n), *O2 = junk_d(n);
    oc_w = dup_d(wm, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
    be->rmsnorm_fwd(ex, O1, R, Dx, Dw, N, C, 1e-5f);
    be->bf16_only(ex, O2, n);
    be->rmsnorm_fwd(ex, O2, R, Dx, Dw, N, C, 1e-5f);
    only_check("rmsnorm_fwd", O1, O2, n, NULL);
    dfree(O2);
    O2 = junk_d(n);
    be->add_rmsnorm_fwd(ex, S1, O1, R, Dx, Dy, Dw, N, C, 1e-5f);
    be->bf16_only(ex, O2, n);
    be->add_rmsnorm_fwd(ex, S2, O2, R, Dx, Dy, Dw, N, C, 1e-5f);
    only_check("add_rmsnorm_fwd", O1, O2, n, NULL);
    same_d("add_rmsnorm_fwd sum (beside a promised out)", S1, S2, n);
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *L = junk_d((int64_t)B * NH * T), *A1 = junk_d(nq), *A2 = junk_d(nq);
    snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    be->attention_fwd(ex, A1, L, Dx, Dy, Dy + nk, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, 0.125f);
    be->bf16_only(ex, A2, nq);
    be->attention_fwd(ex, A2, L, Dx, Dy, Dy + nk, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, 0.125f);
    only_check("attention_fwd", A1, A2, nq, NULL);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    dfree(Dx); dfree(Dy); dfree(Dw); dfree(R); dfree(S1); dfree(S2); dfree(O1); dfree(O2); dfree(L); dfree(A1);
    dfree(A2);
    ffree(x); ffree(y); ffree(w); ffree(wm);

    /* products: gate, up = X Wg^T, X Wu^T [M,H]; swiglu forward and backward */
    int64_t M = 256, K = 128, H = 512, nh = M * H;
    float *xa = frand(M * K, 1), *wg = frand(H * K, 1), *wu = frand(H * K, 1), *wd = frand(H * K, 1);
    float *Xa = dup_d(xa, M * K), *Wg = dup_d(wg, H * K), *Wu = dup_d(wu, H * K), *Wd = dup_d(wd, H * K);
    float *G1 = junk_d(nh), *G2 = junk_d(nh), *U2 = junk_d(nh), *D2 = junk_d(nh), *Z = junk_d(nh);
    float *Ga = junk_d(nh), *Ua = junk_d(nh), *Da = junk_d(nh), *F1 = junk_d(nh), *F2 = junk_d(nh);
    float *P[4];
    for (int i = 0; i < 4; i++) P[i] = junk_d(nh);
    be->scale(ex, Z, 0.0f, nh);
    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld", (long long)M, (long long)H, (long long)K);
    be->matmul(ex, G1, Xa, Wg, M, H, K, 0, 1, 0);
    be->bf16_only(ex, G2, nh);
    be->matmul(ex, G2, Xa, Wg, M, H, K, 0, 1, 0);
    be->bf16_only(ex, U2, nh);
    be->matmul(ex, U2, Xa, Wu, M, H, K, 0, 1, 0);
    be->bf16_only(ex, D2, nh);
    be->matmul(ex, D2, Xa, Wd, M, H, K, 0, 1, 0);
    be->swiglu_fwd(ex, F2, G2, U2, nh);
    be->swiglu_bwd(ex, P[2], P[3], D2, G2, U2, nh);
    if (copies_kept())
        CHECK(still_junk(G2, nh) && still_junk(U2, nh) && still_junk(D2, nh),
              "cuda/bf16_only: a promised product output's fp32 values were written (by it or by swiglu)");
    be->add(ex, Ga, G2, Z, nh); /* 32-bit reads */
    be->add(ex, Ua, U2, Z, nh);
    be->add(ex, Da, D2, Z, nh);
    be->swiglu_fwd(ex, F1, Ga, Ua, nh);
    be->swiglu_bwd(ex, P[0], P[1], Da, Ga, Ua, nh);
    same_d("swiglu_fwd on promised gate / up", F1, F2, nh);
    same_d("swiglu_bwd dgate on a promised dout", P[0], P[2], nh);
    same_d("swiglu_bwd dup on a promised dout", P[1], P[3], nh);
    float *g1 = get_h(G1, nh), *ga = get_h(Ga, nh);
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < nh; i++) {
        uint32_t u;
        memcpy(&u, &ga[i], 4);
        double e = fabs((double)ga[i] - g1[i]);
        if (bf16_mode() && ((u & 0xffffu) || e > fabs((double)g1[i]) / 256 * 1.001 + 1e-30)) bad++;
        if (!bf16_mode() && ga[i] != g1[i]) bad++;
        if (e > worst) worst = e;
    }
    CHECK(bad == 0, "cuda/bf16_only matmul: %lld of %lld promised values are not %s (worst |diff| %.3g)",
          (long long)bad, (long long)nh, bf16_mode() ? "the product's bf16 rounding" : "the plain product", worst);
    ffree(g1); ffree(ga);
    /* rope_fwd on a promised product output (q [1, 256, 8 heads of 64]):
     * rotated in its copy in place, the fp32 storage unwritten; reads as
     * the bf16 rounding of the rotation of the product's values */
    float *cs, *sn;
    rope_tables(256, 64, &cs, &sn);
    float *Dc = dup_d(cs, 256 * 32), *Ds = dup_d(sn, 256 * 32), *Q2 = junk_d(nh), *Qr = junk_d(nh);
    be->bf16_only(ex, Q2, nh);
    be->matmul(ex, Q2, Xa, Wg, M, H, K, 0, 1, 0); /* the same values as G2's */
    be->bf16_only(ex, Q2, nh);
    be->rope_fwd(ex, Q2, Dc, Ds, 1, 256, 8, 64, 0);
    if (copies_kept()) CHECK(still_junk(Q2, nh), "cuda/bf16_only: rope_fwd wrote a promised input's fp32 values");
    be->add(ex, Qr, Q2, Z, nh);
    be->rope_fwd(ex, Ga, Dc, Ds, 1, 256, 8, 64, 0); /* plain, on the product's values */
    float *want = get_h(Ga, nh), *got = get_h(Qr, nh);
    if (copies_kept()) {
        uint16_t *h16 = malloc(sizeof(uint16_t) * (size_t)nh);
        rf->bf16_pack(X1, h16, want, nh);
        rf->bf16_unpack(X1, want, h16, nh);
        free(h16);
    }
    CHECK(memcmp(want, got, sizeof(float) * (size_t)nh) == 0,
          "cuda/bf16_only: rope_fwd on a promised product output differs from the %s rotation",
          copies_kept() ? "rounded" : "plain");
    ffree(want); ffree(got); ffree(cs); ffree(sn);
    dfree(Dc); dfree(Ds); dfree(Q2); dfree(Qr);
    /* attention_bwd (flash in bf16 mode) reading a promised dO, the product
     * [128, 256] of B 2, T 64, 4 heads (2 KV) of 64; q, k, v from earlier
     * outputs (buffers made before the product: uploads end kept copies) */
    float *O = junk_d(nq), *Lb = junk_d((int64_t)B * NH * T), *dO2 = junk_d(nq), *dOa = junk_d(nq), *r[6];
    for (int i = 0; i < 6; i++) r[i] = junk_d(i % 3 == 0 ? nq : nk);
    snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    be->attention_fwd(ex, O, Lb, G1, F1, F1 + nk, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, 0.125f);
    be->bf16_only(ex, dO2, nq);
    be->matmul(ex, dO2, Xa, Wg, B * T, NH * HS, K, 0, 1, 0);
    be->attention_bwd(ex, r[3], r[4], r[5], dO2, O, Lb, G1, F1, F1 + nk, B, T, NH, NKV, HS, 0.125f);
    if (copies_kept()) CHECK(still_junk(dO2, nq), "cuda/bf16_only: attention_bwd wrote a promised dO's fp32 values");
    be->add(ex, dOa, dO2, Z, nq);
    be->attention_bwd(ex, r[0], r[1], r[2], dOa, O, Lb, G1, F1, F1 + nk, B, T, NH, NKV, HS, 0.125f);
    same_d("attention_bwd dq on a promised dO", r[0], r[3], nq);
    same_d("attention_bwd dk on a promised dO", r[1], r[4], nk);
    same_d("attention_bwd dv on a promised dO", r[2], r[5], nk);
    for (int i = 0; i < 6; i++) dfree(r[i]);
    dfree(O); dfree(Lb); dfree(dO2); dfree(dOa);
    for (int i = 0; i < 4; i++) dfree(P[i]);
    dfree(Xa); dfree(Wg); dfree(Wu); dfree(Wd); dfree(G1); dfree(G2); dfree(U2); dfree(D2); dfree(Z); dfree(Ga);
    dfree(Ua); dfree(Da); dfree(F1); dfree(F2);
    ffree(xa); ffree(wg); ffree(wu); ffree(wd);
    printf("cuda %-14s %-6s forward outputs, bf16 products and the ops reading them\n", "bf16_only",
           check_failed == before ? "ok" : "FAILED");
}

/* H after the op that was told to write D's copy there, then after the
 * pack: the reference's pack of D (before the pack only when `kept`). */
static int home_kept;
static void home_check(const char *what, uint16_t *H, const float *D, int64_t n) {
    float *f = get_h(D, n);
    uint16_t *want = malloc(sizeof(uint16_t) * (size_t)n), *got = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, want, f, n);
    be->download(got, H, sizeof(uint16_t) * (size_t)n);
    if (home_kept)
        CHECK(memcmp(got, want, sizeof(uint16_t) * (size_t)n) == 0, "cuda/bf16_home %s: the op did not write its copy",
              what);
    be->bf16_pack(ex, H, D, n);
    be->download(got, H, sizeof(uint16_t) * (size_t)n);
    CHECK(memcmp(got, want, sizeof(uint16_t) * (size_t)n) == 0, "cuda/bf16_home %s: storage differs from the pack",
          what);
    free(want); free(got); ffree(f);
}

static void check_bf16_home(void) {
    cur_op = "bf16_home";
    long before = check_failed;
    home_kept = copies_kept();
    int64_t N = 512; int C = 768, H = 2048; /* rows enough for the training kernels (few rows: decoding's) */
    int64_t nc = N * C, nh = N * H;
    float *a = frand(nc, 2), *b = frand(nc, 1), *w = frand(C, 1), *g = frand(nh, 4), *u = frand(nh, 2);
    float *Da = dup_d(a, nc), *Db = dup_d(b, nc), *Dw = dup_d(w, C), *Dg = dup_d(g, nh), *Du = dup_d(u, nh);
    float *Ds = junk_d(nc), *Dn = junk_d(nc), *Dr = junk_d(N), *Dh = junk_d(nh), *Dy = junk_d(nc);
    uint16_t *Hs = u16_d(nc), *Hn = u16_d(nc), *Hg = u16_d(nh), *Hu = u16_d(nh), *Hh = u16_d(nh), *Hy = u16_d(nc);
    float *sum = frand(nc, 0), *out = frand(nc, 0), *rs = frand(N, 0);
    rf->add_rmsnorm_fwd(X1, sum, out, rs, a, b, w, N, C, 1e-5f);
    be->bf16_home(ex, Ds, Hs, nc);
    be->bf16_home(ex, Dn, Hn, nc);
    be->add_rmsnorm_fwd(ex, Ds, Dn, Dr, Da, Db, Dw, N, C, 1e-5f);
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
    compare_d("sum (with homes)", Ds, sum, nc, 0);
    compare_d("out (with homes)", Dn, out, nc, 1e-5);
    home_check("add_rmsnorm_fwd sum", Hs, Ds, nc);
    home_check("add_rmsnorm_fwd out", Hn, Dn, nc);
    be->bf16_home(ex, Dg, Hg, nh);
    be->bf16_home(ex, Du, Hu, nh);
    be->bf16_home(ex, Dh, Hh, nh);
    be->swiglu_fwd(ex, Dh, Dg, Du, nh);
    home_check("swiglu_fwd gate (an input)", Hg, Dg, nh);
    home_check("swiglu_fwd up (an input)", Hu, Du, nh);
    home_check("swiglu_fwd out", Hh, Dh, nh);
    be->bf16_home(ex, Dy, Hy, nc);
    be->add(ex, Dy, Da, Db, nc);
    home_check("add out", Hy, Dy, nc);
    /* a home serves the next op only: here scale, so rmsnorm's copy goes elsewhere */
    uint16_t *H0 = u16_d(nc), *zero = calloc((size_t)nc + 2, sizeof(uint16_t)), *got = malloc(sizeof(uint16_t) * (size_t)(nc + 2));
    be->bf16_home(ex, Dn, H0, nc);
    be->scale(ex, Dw, 1.0f, C);
    be->rmsnorm_fwd(ex, Dn, Dr, Da, Dw, N, C, 1e-5f);
    be->download(got, H0, sizeof(uint16_t) * (size_t)(nc + 2));
    CHECK(memcmp(got, zero, sizeof(uint16_t) * (size_t)(nc + 2)) == 0, "cuda/bf16_home: a home outlived its op");
    /* attention_fwd: out's copy and v's cast (flash, bf16 mode) */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1);
    float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Do = junk_d(nq), *Dl = junk_d((int64_t)B * NH * T);
    uint16_t *Ho = u16_d(nq), *Hv = u16_d(nk);
    be->bf16_home(ex, Do, Ho, nq);
    be->bf16_home(ex, Dv, Hv, nk);
    be->attention_fwd(ex, Do, Dl, Dq, Dk, Dv, B, T, T, NH, NKV, HS, (int64_t)T * NKV * HS, 1.0f / 8);
    home_check("attention_fwd out", Ho, Do, nq);
    home_check("attention_fwd v (an input)", Hv, Dv, nk);
    dfree(Da); dfree(Db); dfree(Dw); dfree(Dg); dfree(Du); dfree(Ds); dfree(Dn); dfree(Dr); dfree(Dh); dfree(Dy);
    dfree(Dq); dfree(Dk); dfree(Dv); dfree(Do); dfree(Dl);
    be->free(Hs); be->free(Hn); be->free(Hg); be->free(Hu); be->free(Hh); be->free(Hy); be->free(H0);
    be->free(Ho); be->free(Hv);
    free(zero); free(got);
    ffree(a); ffree(b); ffree(w); ffree(g); ffree(u); ffree(sum); ffree(out); ffree(rs); ffree(q); ffree(k); ffree(v);
    printf("cuda %-14s %-6s copies written where named%s\n", "bf16_home", check_failed == before ? "ok" : "FAILED",
           home_kept ? " (checked before the pack)" : " (bf16 copies not kept in this mode: values only)");
}

/* decode_attention (optional op) against the reference's definition (rope_fwd
 * at position p, the cache rows written, attention_fwd over rows 0..p); and
 * bit for bit against the same steps done with this backend's own
 * rope_fwd + attention_fwd (the decoding path it replaces). */
static void check_decode_attention(void) {
    static const int S[][6] = {/* NH, NKV, HS, cap, p, rope */
                               {4, 2, 64, 100, 0, 1},     {4, 2, 64, 100, 99, 1},   {12, 12, 64, 1024, 700, 1},
                               {3, 1, 17, 50, 33, 0},     {8, 2, 128, 2049, 2048, 1}, {2, 2, 256, 40, 5, 1},
                               {6, 3, 32, 33, 32, 1},     {1, 1, 2, 7, 3, 1}};
    cur_op = "decode_attention";
    op_worst = 0;
    long before = check_failed;
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int NH = S[c][0], NKV = S[c][1], HS = S[c][2], cap = S[c][3], p = S[c][4], rope = S[c][5];
        snprintf(cur_shape, sizeof cur_shape, "NH%d NKV%d HS%d cap%d p%d%s", NH, NKV, HS, cap, p, rope ? "" : " no rope");
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, nc = (int64_t)cap * KD;
        float sc = 1.0f / sqrtf((float)HS), *cs = NULL, *sn = NULL;
        if (rope) rope_tables(cap, HS, &cs, &sn);
        float *q = frand(QD, 1), *k = frand(KD, 1), *v = frand(KD, 1), *kc = frand(nc, 1), *vc = frand(nc, 1);
        float *o = frand(QD, 0);
        float *Dq = dup_d(q, QD), *Dk = dup_d(k, KD), *Dv = dup_d(v, KD), *Dkc = dup_d(kc, nc), *Dvc = dup_d(vc, nc);
        float *Do = dup_d(o, QD), *Dcs = rope ? dup_d(cs, (int64_t)cap * (HS / 2)) : NULL;
        float *Dsn = rope ? dup_d(sn, (int64_t)cap * (HS / 2)) : NULL;
        int32_t *Dp = ids_d(&p, 1);
        /* the same steps through this backend's rope_fwd and attention_fwd */
        float *Eq = dup_d(q, QD), *Ek = dup_d(k, KD), *Ekc = dup_d(kc, nc), *Evc = dup_d(vc, nc), *Eo = dup_d(o, QD);
        float *El = dup_d(o, NH);
        be->decode_attention(ex, Do, Dq, Dk, Dv, Dkc, Dvc, Dcs, Dsn, Dp, NH, NKV, HS, cap, sc);
        rf->decode_attention(X1, o, q, k, v, kc, vc, cs, sn, &p, NH, NKV, HS, cap, sc);
        compare_d("out", Do, o, QD, 1e-5);
        compare_d("q rotated", Dq, q, QD, 1e-6);
        compare_d("k rotated", Dk, k, KD, 1e-6);
        compare_d("key cache", Dkc, kc, nc, 1e-6);
        compare_d("value cache", Dvc, vc, nc, 0);
        if (rope) {
            be->rope_fwd(ex, Eq, Dcs, Dsn, 1, 1, NH, HS, p);
            be->rope_fwd(ex, Ek, Dcs, Dsn, 1, 1, NKV, HS, p);
        }
        float *hk = get_h(Ek, KD), *hv = get_h(Dv, KD);
        be->upload(Ekc + p * KD, hk, sizeof(float) * (size_t)KD);
        be->upload(Evc + p * KD, hv, sizeof(float) * (size_t)KD);
        be->attention_fwd(ex, Eo, El, Eq, Ekc, Evc, 1, 1, p + 1, NH, NKV, HS, nc, sc);
        float *a = get_h(Do, QD), *b = get_h(Eo, QD), *ka = get_h(Dkc, nc), *kb = get_h(Ekc, nc);
        const char *am = getenv("SMJ_CUDA_ATTN"); /* the other attention kernels are not the decode path */
        if (!am || !*am)
            CHECK(memcmp(a, b, sizeof(float) * (size_t)QD) == 0 && memcmp(ka, kb, sizeof(float) * (size_t)nc) == 0,
                  "cuda/decode_attention %s: differs from rope_fwd + attention_fwd on the device", cur_shape);
        ffree(a); ffree(b); ffree(ka); ffree(kb); ffree(hk); ffree(hv);
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Dkc); dfree(Dvc); dfree(Do); dfree(Dcs); dfree(Dsn); be->free(Dp);
        dfree(Eq); dfree(Ek); dfree(Ekc); dfree(Evc); dfree(Eo); dfree(El);
        ffree(q); ffree(k); ffree(v); ffree(kc); ffree(vc); ffree(o); ffree(cs); ffree(sn);
    }
    printf("cuda %-14s %-6s worst normalized error %.3g (bit-identical to rope_fwd + attention_fwd)\n", cur_op,
           check_failed == before ? "ok" : "FAILED", op_worst);
}

/* Weights for the decode ops: host f32 values w [n] (bf16: rounded to bf16
 * in place, the host copy *h16 the bf16 bits), and the device copy. */
static void *dec_weight(float *w, int64_t n, int bf, uint16_t **h16) {
    *h16 = NULL;
    if (!bf) return dup_d(w, n);
    *h16 = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        (*h16)[i] = smj_f32_to_bf16(w[i]);
        w[i] = smj_bf16_to_f32((*h16)[i]);
    }
    void *d = be->alloc(sizeof(uint16_t) * (size_t)n);
    be->upload(d, *h16, sizeof(uint16_t) * (size_t)n);
    return d;
}
static void dec_weight_free(void *d, int bf) {
    if (bf) be->free(d);
    else dfree(d);
}

/* decode_block against the reference's definition (the ops one by one),
 * f32 and bf16 weights; the same launch twice gives the same bits (the
 * barrier and the per-head counters reset themselves); a position outside
 * the cache changes nothing. */
static void check_decode_block(void) {
    static const int S[][8] = {/* C, NH, NKV, HS, H, cap, p, rope */
                               {768, 12, 12, 64, 2048, 1024, 700, 1}, {64, 4, 2, 16, 96, 100, 0, 1},
                               {40, 2, 1, 20, 70, 50, 49, 0},          {128, 2, 2, 128, 256, 300, 299, 1},
                               {256, 1, 1, 256, 512, 40, 7, 1},         {512, 64, 8, 8, 128, 2000, 1999, 1},
                               {30, 2, 2, 14, 50, 20, 10, 1},           {96, 6, 3, 16, 200, 4100, 4000, 1}};
    cur_op = "decode_block";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int bf = 0; bf < 2; bf++) {
            int C = S[t][0], NH = S[t][1], NKV = S[t][2], HS = S[t][3], H = S[t][4], cap = S[t][5], p = S[t][6];
            int rope = S[t][7];
            snprintf(cur_shape, sizeof cur_shape, "C%d NH%d NKV%d HS%d H%d cap%d p%d%s %s", C, NH, NKV, HS, H, cap, p,
                     rope ? "" : " no rope", bf ? "bf16" : "f32");
            int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, nc = (int64_t)cap * KD;
            int64_t n[7] = {QD * C, KD * C, KD * C, C * QD, (int64_t)H * C, (int64_t)H * C, (int64_t)C * H};
            float *wh[7], *cs = NULL, *sn = NULL;
            void *wd[7];
            uint16_t *w16[7];
            for (int i = 0; i < 7; i++) {
                wh[i] = frand(n[i], 1.0f / sqrtf((float)(i == 3 ? QD : i == 6 ? H : C)));
                wd[i] = dec_weight(wh[i], n[i], bf, &w16[i]);
            }
            float *n1 = frand(C, 0.5f), *n2 = frand(C, 0.5f);
            for (int i = 0; i < C; i++) { n1[i] += 1; n2[i] += 1; }
            if (rope) rope_tables(cap, HS, &cs, &sn);
            float *x = frand(C, 1), *y = frand(C, 1), *kc = frand(nc, 1), *vc = frand(nc, 1);
            float *y0 = fcopy(y, C), *kc0 = fcopy(kc, nc), *vc0 = fcopy(vc, nc);
            float *Dx = dup_d(x, C), *Dy = dup_d(y, C), *Dkc = dup_d(kc, nc), *Dvc = dup_d(vc, nc);
            float *Dn1 = dup_d(n1, C), *Dn2 = dup_d(n2, C);
            float *Dcs = rope ? dup_d(cs, (int64_t)cap * (HS / 2)) : NULL, *Dsn = rope ? dup_d(sn, (int64_t)cap * (HS / 2)) : NULL;
            int wt = bf ? SMJ_WTYPE_BF16 : SMJ_WTYPE_F32;
            smj_block_weights Wd = {Dn1, Dn2, wd[0], wd[1], wd[2], wd[3], wd[4], wd[5], wd[6], wt};
            smj_block_weights Wh = {n1, n2, bf ? (void *)w16[0] : wh[0], bf ? (void *)w16[1] : wh[1],
                                    bf ? (void *)w16[2] : wh[2], bf ? (void *)w16[3] : wh[3],
                                    bf ? (void *)w16[4] : wh[4], bf ? (void *)w16[5] : wh[5],
                                    bf ? (void *)w16[6] : wh[6], wt};
            float sc = 1.0f / sqrtf((float)HS), eps = 1e-5f;
            int bad = cap, neg = -1;
            int32_t *Dp = ids_d(&p, 1), *Dbad = ids_d(&bad, 1), *Dneg = ids_d(&neg, 1);
            /* outside the cache: nothing happens */
            int r1 = be->decode_block(ex, Dy, Dx, &Wd, Dkc, Dvc, Dcs, Dsn, Dbad, C, NH, NKV, HS, H, cap, eps, sc);
            be->decode_block(ex, Dy, Dx, &Wd, Dkc, Dvc, Dcs, Dsn, Dneg, C, NH, NKV, HS, H, cap, eps, sc);
            CHECK(r1 == 1, "cuda/decode_block %s: declined", cur_shape);
            compare_d("y, position outside the cache", Dy, y0, C, 0);
            compare_d("key cache, position outside the cache", Dkc, kc0, nc, 0);
            compare_d("value cache, position outside the cache", Dvc, vc0, nc, 0);
            be->decode_block(ex, Dy, Dx, &Wd, Dkc, Dvc, Dcs, Dsn, Dp, C, NH, NKV, HS, H, cap, eps, sc);
            rf->decode_block(X1, y, x, &Wh, kc, vc, cs, sn, &p, C, NH, NKV, HS, H, cap, eps, sc);
            float *y1 = get_h(Dy, C);
            compare("y", y1, y, C, 2e-5);
            compare_d("key cache", Dkc, kc, nc, 2e-5);
            compare_d("value cache", Dvc, vc, nc, 2e-5);
            be->decode_block(ex, Dy, Dx, &Wd, Dkc, Dvc, Dcs, Dsn, Dp, C, NH, NKV, HS, H, cap, eps, sc);
            float *y2 = get_h(Dy, C);
            CHECK(memcmp(y1, y2, sizeof(float) * (size_t)C) == 0, "cuda/decode_block %s: a second launch differs",
                  cur_shape);
            ffree(y1); ffree(y2);
            for (int i = 0; i < 7; i++) { dec_weight_free(wd[i], bf); ffree(wh[i]); free(w16[i]); }
            dfree(Dx); dfree(Dy); dfree(Dkc); dfree(Dvc); dfree(Dn1); dfree(Dn2); dfree(Dcs); dfree(Dsn);
            be->free(Dp); be->free(Dbad); be->free(Dneg);
            ffree(n1); ffree(n2); ffree(cs); ffree(sn); ffree(x); ffree(y); ffree(kc); ffree(vc);
            ffree(y0); ffree(kc0); ffree(vc0);
        }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
}

/* decode_linear against the reference: rmsnorm (or none) and the product,
 * f32 and bf16 weights. */
static void check_decode_linear(void) {
    static const int S[][3] = {{32768, 768, 1}, {1000, 30, 1}, {5, 4096, 0}, {1, 7, 1}, {300, 64, 0}};
    cur_op = "decode_linear";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int bf = 0; bf < 2; bf++) {
            int N = S[t][0], K = S[t][1], nrm = S[t][2];
            snprintf(cur_shape, sizeof cur_shape, "N%d K%d%s %s", N, K, nrm ? " norm" : "", bf ? "bf16" : "f32");
            float *w = frand((int64_t)N * K, 1.0f / sqrtf((float)K)), *x = frand(K, 1), *g = frand(K, 1);
            float *out = frand(N, 0);
            uint16_t *w16;
            void *Dw = dec_weight(w, (int64_t)N * K, bf, &w16);
            float *Dx = dup_d(x, K), *Dg = dup_d(g, K), *Do = dup_d(out, N);
            int wt = bf ? SMJ_WTYPE_BF16 : SMJ_WTYPE_F32;
            be->decode_linear(ex, Do, Dx, nrm ? Dg : NULL, Dw, wt, N, K, 1e-5f);
            rf->decode_linear(X1, out, x, nrm ? g : NULL, bf ? (void *)w16 : w, wt, N, K, 1e-5f);
            compare_d("out", Do, out, N, 2e-5);
            dec_weight_free(Dw, bf);
            free(w16);
            dfree(Dx); dfree(Dg); dfree(Do);
            ffree(w); ffree(x); ffree(g); ffree(out);
        }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
}

/* decode_argmax against the reference's scan: random logits with ties,
 * NaNs and infinities planted, V up to 131072. */
static void check_decode_argmax(void) {
    static const int S[] = {1, 2, 5, 1000, 32768, 131072};
    cur_op = "decode_argmax";
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int kind = 0; kind < 5; kind++) {
            int V = S[t];
            float *l = frand(V, 1);
            if (kind == 1) for (int i = 0; i < V; i += 3) l[i] = NAN;            /* NaNs, l[0] among them */
            if (kind == 2) for (int i = 1; i < V; i += 2) l[i] = NAN;            /* NaNs after a number */
            if (kind == 3) for (int i = 0; i < V; i++) l[i] = (float)(i % 7) - 3; /* ties: the first max */
            if (kind == 4) for (int i = 0; i < V; i++) l[i] = i % 5 == 2 ? INFINITY : -INFINITY;
            int32_t hist0[4] = {-7, -7, -7, -7}, pos = 1, next, hist[4], dpos;
            float *Dl = dup_d(l, V);
            int32_t *Dn = ids_d(hist0, 1), *Dh = ids_d(hist0, 4), *Dp = ids_d(&pos, 1);
            be->decode_argmax(ex, Dn, Dh, Dp, Dl, V);
            memcpy(hist, hist0, sizeof hist);
            rf->decode_argmax(X1, &next, hist, &pos, l, V);
            int32_t gn, gh[4];
            be->download(&gn, Dn, sizeof gn);
            be->download(gh, Dh, sizeof gh);
            be->download(&dpos, Dp, sizeof dpos);
            CHECK(gn == next && memcmp(gh, hist, sizeof gh) == 0 && dpos == pos,
                  "cuda/decode_argmax V%d case %d: id %d, want %d (position %d, want %d)", V, kind, gn, next, dpos,
                  pos);
            dfree(Dl); be->free(Dn); be->free(Dh); be->free(Dp);
            ffree(l);
        }
    printf("cuda %-14s %-6s the reference's choice on every case\n", cur_op, check_failed == before ? "ok" : "FAILED");
}

/* qmatmul (GGML blocks) against the reference (W dequantized exactly, sums
 * in double): the few-row kernel (M <= 8) and dequantize + matmul above
 * (whose tolerance is the matmul's: bf16 operands in bf16 mode). */
static void check_qmatmul(void) {
    static const int64_t S[][3] = {{1, 33, 64},  {3, 130, 96},  {4, 1, 32},     {8, 7, 320},
                                   {9, 50, 64},  {64, 100, 128}, {1, 4096, 4096}, {200, 300, 256}};
    static const int types[3] = {SMJ_WTYPE_F16, SMJ_WTYPE_Q8_0, SMJ_WTYPE_Q4_0};
    cur_op = "qmatmul";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0] + 1; t++)
        for (int ty = 0; ty < 3; ty++)
            for (int acc = 0; acc < 2; acc++) {
                int wt = types[ty];
                int64_t M = t < 8 ? S[t][0] : 5, N = t < 8 ? S[t][1] : 40, K = t < 8 ? S[t][2] : 70;
                if (t == 8 && wt != SMJ_WTYPE_F16) continue; /* K % 32 != 0: f16 only */
                snprintf(cur_shape, sizeof cur_shape, "%s M%lld N%lld K%lld acc%d",
                         wt == SMJ_WTYPE_F16 ? "f16" : wt == SMJ_WTYPE_Q8_0 ? "q8_0" : "q4_0", (long long)M,
                         (long long)N, (long long)K, acc);
                int64_t rb = wt == SMJ_WTYPE_F16 ? 2 * K : wt == SMJ_WTYPE_Q8_0 ? K / 32 * 34 : K / 32 * 18;
                float *wf = frand(N * K, 1), *A = frand(M * K, 1), *C0 = frand(M * N, 1), *C2 = fcopy(C0, M * N);
                uint8_t *W = malloc((size_t)(N * rb));
                for (int64_t n = 0; n < N; n++) {
                    if (wt == SMJ_WTYPE_F16) smj_quantize_f16(wf + n * K, W + n * rb, K);
                    else if (wt == SMJ_WTYPE_Q8_0) smj_quantize_q8_0(wf + n * K, W + n * rb, K);
                    else smj_quantize_q4_0(wf + n * K, W + n * rb, K);
                }
                void *DW = be->alloc((size_t)(N * rb));
                be->upload(DW, W, (size_t)(N * rb));
                float *DA = dup_d(A, M * K), *DC = dup_d(C0, M * N);
                be->qmatmul(ex, DC, DA, DW, wt, M, N, K, acc);
                rf->qmatmul(X1, C2, A, W, wt, M, N, K, acc);
                compare_d("C", DC, C2, M * N, M > 8 ? TOL_MM : 1e-5);
                be->free(DW);
                dfree(DA); dfree(DC);
                free(W);
                ffree(wf); ffree(A); ffree(C0); ffree(C2);
            }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
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

int main(void) {
    smj_rng_seed(&rng, 42);
    smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_CUDA};
    smj_ctx *ctx = smj_ctx_create(&o);
    if (!ctx || smj_ctx_status(ctx) != SMJ_OK) {
        const char *req = getenv("SMJ_CUDA_REQUIRE");
        printf("SKIP: no CUDA backend: %s\n", ctx ? smj_ctx_error(ctx) : "out of memory");
        smj_ctx_free(ctx);
        return req && *req == '1' ? 1 : 0;
    }
    be = ctx->backend;
    ex = &ctx->exec;
    const char *mm = getenv("SMJ_CUDA_MATMUL"), *tf = getenv("SMJ_CUDA_TF32");
    double unit = 0;
    if (mm && (strcmp(mm, "bf16") == 0 || strcmp(mm, "bf16x") == 0)) unit = 1.0 / 256;
    else if ((mm && strcmp(mm, "tf32") == 0) || (!mm && tf && *tf == '1')) unit = 1.0 / 1024;
    if (unit > 0) { TOL_MM = TOL_ATTF = 4 * unit; TOL_ATTB = 8 * unit; }
    printf("mode: matmul %s, attention %s; tolerances matmul %.3g, attention fwd %.3g, bwd %.3g\n",
           mm && *mm ? mm : "fp32", getenv("SMJ_CUDA_ATTN") ? getenv("SMJ_CUDA_ATTN") : "auto", TOL_MM, TOL_ATTF,
           TOL_ATTB);
    for (int op = 0; op < SMJ_OP_COUNT; op++) {
        cur_op = NAMES[op];
        long before = check_failed;
        op_worst = 0;
        CASES[op]();
        smj_status st = smj_ctx_status(ctx);
        CHECK(st == SMJ_OK, "cuda/%s: device error: %s", cur_op, smj_ctx_error(ctx));
        printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED",
               op_worst);
        fflush(stdout);
    }
    check_decode_attention();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/decode_attention: device error: %s", smj_ctx_error(ctx));
    check_decode_block();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/decode_block: device error: %s", smj_ctx_error(ctx));
    check_decode_linear();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/decode_linear: device error: %s", smj_ctx_error(ctx));
    check_decode_argmax();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/decode_argmax: device error: %s", smj_ctx_error(ctx));
    check_qmatmul();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/qmatmul: device error: %s", smj_ctx_error(ctx));
    check_bf16_bind();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/bf16_bind: device error: %s", smj_ctx_error(ctx));
    check_bf16_home();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/bf16_home: device error: %s", smj_ctx_error(ctx));
    check_bf16_only();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/bf16_only: device error: %s", smj_ctx_error(ctx));
    check_bf16_only_fwd();
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/bf16_only: device error: %s", smj_ctx_error(ctx));
    /* The error rule: a failing op records its error; sumsq then returns
     * NaN and smj_ctx_status names the op. (A head size over 256 is refused
     * by attention_fwd without touching the device.) */
    {
        float *q = be->alloc(4096), *l = be->alloc(4096);
        be->attention_fwd(ex, q, l, q, q, q, 1, 1, 1, 1, 1, 300, 300, 1.0f);
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
