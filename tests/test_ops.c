/* test_ops.c — the op checker.
 *
 * Part 1 walks the op table: every op of every backend runs on seeded random
 * inputs over awkward shapes (1, odd, not multiples of any vector width) and
 * is compared with the "ref" backend (ref_impl.h over float). Outputs sit
 * between canaries that must survive; NaN/Inf in an output fails at once.
 * Tolerances: normalized max error |got - ref| / max(|ref|) <= 1e-5 for
 * element-wise ops, 1e-4 where long float sums meet (matmul, attention,
 * xent over large V).
 *
 * Part 2 checks every backward of the double-precision reference (ref64)
 * against central finite differences in double, so the oracle itself is
 * verified, not just copied: loss = sum(dout * f(x)), eps = 1e-6.
 *
 * Part 3 checks AdamW against torch's formulation written out here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/ops/ops.h"
#include "../src/hf/safetensors.h"
#include "util/check.h"

#define CANARY 1.2345e6f
#define PAD 16

static smj_rng rng;
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

static const char *cur_op, *cur_be;
static char cur_shape[128];

/* floor: the error is normalized by max(max|ref|, floor) — for outputs that
 * are a difference of larger terms (rmsnorm's dx at C = 1), floor is the
 * size of those terms. */
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
    CHECK(!bad_nan, "%s/%s %s %s: non-finite output", cur_be, cur_op, cur_shape, what);
    CHECK(!bad_canary, "%s/%s %s %s: wrote outside its output", cur_be, cur_op, cur_shape, what);
    CHECK(err <= tol, "%s/%s %s %s: normalized error %.3g > %.1g", cur_be, cur_op, cur_shape, what, err, tol);
}
static void compare(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    compare_floor(what, got, ref, n, tol, 0);
}

/* ------------------------------------------------ part 1: every op vs ref */
typedef void (*op_case)(const smj_backend *be, const smj_backend *rf, const smj_exec *ex);
static const smj_exec EX1 = {.nt = 1}; /* the reference runs single-threaded */
#define X1 (&EX1)

static void case_matmul(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    static const int64_t S[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 1, 9}, {17, 33, 65}, {64, 48, 32}, {5, 130, 3}, {2, 3, 0}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int acc = 0; acc < 2; acc++) {
                    int64_t M = S[s][0], N = S[s][1], K = S[s][2];
                    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld tA%d tB%d acc%d", (long long)M,
                             (long long)N, (long long)K, tA, tB, acc);
                    float *A = frand(M * K, 1), *B = frand(K * N, 1), *C0 = frand(M * N, 1);
                    float *C1 = fcopy(C0, M * N), *C2 = fcopy(C0, M * N);
                    be->matmul(ex, C1, A, B, M, N, K, tA, tB, acc);
                    rf->matmul(X1, C2, A, B, M, N, K, tA, tB, acc);
                    compare("C", C1, C2, M * N, 1e-5);
                    ffree(A); ffree(B); ffree(C0); ffree(C1); ffree(C2);
                }
}

static void case_embedding_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    int V = 13;
    for (int64_t N = 1; N <= 40; N += 13)
        for (int C = 1; C <= 33; C += 16) {
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
            int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
            for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
            float *w = frand((int64_t)V * C, 1), *o1 = frand(N * C, 0), *o2 = frand(N * C, 0);
            be->embedding_fwd(ex, o1, ids, w, N, C);
            rf->embedding_fwd(X1, o2, ids, w, N, C);
            compare("out", o1, o2, N * C, 0);
            free(ids); ffree(w); ffree(o1); ffree(o2);
        }
}

static void case_embedding_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    int V = 7; /* few ids, so repeats are certain */
    for (int64_t N = 1; N <= 60; N += 29)
        for (int C = 1; C <= 35; C += 17) {
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
            int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
            for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
            float *d = frand(N * C, 1), *g1 = frand((int64_t)V * C, 1), *g2 = fcopy(g1, (int64_t)V * C);
            be->embedding_bwd(ex, g1, ids, d, N, C);
            rf->embedding_bwd(X1, g2, ids, d, N, C);
            compare("dwte", g1, g2, (int64_t)V * C, 1e-6);
            free(ids); ffree(d); ffree(g1); ffree(g2);
        }
}

static void case_rmsnorm_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t N = 1; N <= 50; N += 49)
        for (int C = 1; C <= 200; C += 66) {
            snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
            float *x = frand(N * C, 2), *w = frand(C, 1), *o1 = frand(N * C, 0), *o2 = frand(N * C, 0);
            float *r1 = frand(N, 0), *r2 = frand(N, 0);
            be->rmsnorm_fwd(ex, o1, r1, x, w, N, C, 1e-5f);
            rf->rmsnorm_fwd(X1, o2, r2, x, w, N, C, 1e-5f);
            compare("out", o1, o2, N * C, 1e-5);
            compare("rstd", r1, r2, N, 1e-5);
            ffree(x); ffree(w); ffree(o1); ffree(o2); ffree(r1); ffree(r2);
        }
}

/* alias: 0 a separate sum, 1 sum = a (in place), 2 sum = b */
static void case_add_rmsnorm_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t N = 1; N <= 50; N += 49)
        for (int C = 1; C <= 200; C += 66)
            for (int alias = 0; alias < 3; alias++) {
                snprintf(cur_shape, sizeof cur_shape, "N%lld C%d alias%d", (long long)N, C, alias);
                float *a = frand(N * C, 2), *b = frand(N * C, 1), *w = frand(C, 1);
                float *a2 = fcopy(a, N * C), *b2 = fcopy(b, N * C), *s1 = frand(N * C, 0), *s2 = frand(N * C, 0);
                float *o1 = frand(N * C, 0), *o2 = frand(N * C, 0), *r1 = frand(N, 0), *r2 = frand(N, 0);
                float *d1 = alias == 1 ? a : alias == 2 ? b : s1, *d2 = alias == 1 ? a2 : alias == 2 ? b2 : s2;
                be->add_rmsnorm_fwd(ex, d1, o1, r1, a, b, w, N, C, 1e-5f);
                rf->add_rmsnorm_fwd(X1, d2, o2, r2, a2, b2, w, N, C, 1e-5f);
                compare("sum", d1, d2, N * C, 0);
                compare("out", o1, o2, N * C, 1e-5);
                compare("rstd", r1, r2, N, 1e-5);
                ffree(a); ffree(b); ffree(w); ffree(a2); ffree(b2); ffree(s1); ffree(s2);
                ffree(o1); ffree(o2); ffree(r1); ffree(r2);
            }
}

static void case_rmsnorm_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t N = 1; N <= 50; N += 49)
        for (int C = 1; C <= 200; C += 66)
            for (int acc = 0; acc < 2; acc++) {
                snprintf(cur_shape, sizeof cur_shape, "N%lld C%d acc%d", (long long)N, C, acc);
                float *x = frand(N * C, 2), *w = frand(C, 1), *o = frand(N * C, 0), *r = frand(N, 0);
                float *dy = frand(N * C, 1), *dx1 = frand(N * C, 1), *dx2 = fcopy(dx1, N * C);
                float *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C);
                rf->rmsnorm_fwd(X1, o, r, x, w, N, C, 1e-5f);
                be->rmsnorm_bwd(ex, dx1, dw1, dy, x, w, r, N, C, acc);
                rf->rmsnorm_bwd(X1, dx2, dw2, dy, x, w, r, N, C, acc);
                double terms = 0; /* |r w dy|, the size of the terms dx is the difference of */
                for (int64_t i = 0; i < N * C; i++) terms = fmax(terms, fabs(r[i / C] * w[i % C] * dy[i]));
                compare_floor("dx", dx1, dx2, N * C, 1e-5, terms);
                compare("dw", dw1, dw2, C, 1e-5);
                ffree(x); ffree(w); ffree(o); ffree(r); ffree(dy); ffree(dx1); ffree(dx2); ffree(dw1); ffree(dw2);
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

static float *cols(const float *x, int64_t n, int64_t W, int64_t c0, int64_t w) {
    float *d = frand(n * w, 0);
    for (int64_t r = 0; r < n; r++) memcpy(d + r * w, x + r * W + c0, sizeof(float) * (size_t)w);
    return d;
}

static void rope_case(const smj_backend *be, const smj_backend *rf, const smj_exec *ex, int bwd) {
    static const int S[][5] = {{1, 1, 1, 2, 0}, {2, 5, 3, 8, 0}, {1, 3, 2, 18, 7}, {3, 9, 1, 64, 2}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int B = S[s][0], T = S[s][1], NH = S[s][2], HS = S[s][3], p0 = S[s][4];
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d HS%d pos0 %d", B, T, NH, HS, p0);
        float *cs, *sn;
        rope_tables(T + p0, HS, &cs, &sn);
        int64_t n = (int64_t)B * T * NH * HS;
        float *x1 = frand(n, 1), *x2 = fcopy(x1, n), *x0 = fcopy(x1, n);
        (bwd ? be->rope_bwd : be->rope_fwd)(ex, x1, cs, sn, B, T, NH, HS, p0, 0);
        (bwd ? rf->rope_bwd : rf->rope_fwd)(X1, x2, cs, sn, B, T, NH, HS, p0, 0);
        compare("x", x1, x2, n, 1e-6);
        /* the same heads in rows of width W (the q|k columns of a fused
         * q|k|v): the reference strided equals it dense bit for bit, the
         * backend within 1e-6; the columns past the heads untouched */
        int64_t N = (int64_t)B * T, D = (int64_t)NH * HS, W = D + HS + 3;
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d HS%d pos0 %d rows %lld apart", B, T, NH, HS, p0,
                 (long long)W);
        for (int pass = 0; pass < 2; pass++) {
            const smj_backend *b = pass ? be : rf;
            float *g = frand(N * W, 1);
            for (int64_t r = 0; r < N; r++)
                for (int64_t c = 0; c < W; c++) g[r * W + c] = c < D ? x0[r * D + c] : 5.0f;
            (bwd ? b->rope_bwd : b->rope_fwd)(pass ? ex : X1, g, cs, sn, B, T, NH, HS, p0, W);
            float *gx = cols(g, N, W, 0, D);
            int64_t pad = 0;
            for (int64_t r = 0; r < N; r++)
                for (int64_t c = D; c < W; c++) pad += g[r * W + c] != 5.0f;
            CHECK(pad == 0, "%s/rope %s: wrote %lld values past the heads", pass ? "backend" : "ref", cur_shape,
                  (long long)pad);
            if (pass) compare("x (strided)", gx, x2, N * D, 1e-6);
            else CHECK(memcmp(gx, x2, sizeof(float) * (size_t)(N * D)) == 0, "ref/rope %s: differs", cur_shape);
            ffree(g); ffree(gx);
        }
        ffree(cs); ffree(sn); ffree(x0); ffree(x1); ffree(x2);
    }
}
static void case_rope_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) { rope_case(be, rf, ex, 0); }
static void case_rope_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) { rope_case(be, rf, ex, 1); }

/* B, Tq, Tk, NH, NKV, HS, extra kv stride */
static const int ATT[][7] = {{1, 1, 1, 1, 1, 2, 0},  {2, 5, 5, 4, 2, 8, 0},   {1, 17, 17, 3, 1, 18, 0},
                             {2, 33, 33, 2, 2, 64, 0}, {1, 1, 9, 4, 1, 8, 0},  {2, 3, 40, 6, 3, 16, 24},
                             /* more than one 128-query block; a prefill chunk after a cached prefix */
                             {1, 300, 300, 4, 2, 16, 0}, {2, 70, 100, 4, 2, 8, 12}};

/* Row strides: q, k, v as column ranges of one fused buffer [B*T, W], W =
 * (NH + 2 NKV) HS + pad (the pad columns hold 5.0 and must stay so), dq,
 * dk, dv into another such buffer. The strided results equal the dense
 * ones computed from the extracted q, k, v (the reference bit for bit, the
 * backend within 1e-5 of the reference). */
static const int ATT_RS[][6] = {{2, 33, 4, 2, 16, 3}, {1, 300, 4, 1, 8, 0}, {2, 20, 3, 3, 8, 1}}; /* B, T, NH, NKV, HS, pad */
/* columns [c0, c0 + w) of n rows W apart -> dense [n, w] */
static void attention_strided(const smj_backend *be, const smj_backend *rf, const smj_exec *ex, int bwd) {
    for (size_t s = 0; s < sizeof ATT_RS / sizeof ATT_RS[0]; s++) {
        int B = ATT_RS[s][0], T = ATT_RS[s][1], NH = ATT_RS[s][2], NKV = ATT_RS[s][3], HS = ATT_RS[s][4];
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, W = QD + 2 * KD + ATT_RS[s][5], N = (int64_t)B * T;
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d rows %lld apart", B, T, NH, NKV, HS,
                 (long long)W);
        float *qkv = frand(N * W, 1);
        for (int64_t r = 0; r < N; r++)
            for (int64_t c = QD + 2 * KD; c < W; c++) qkv[r * W + c] = 5.0f;
        float *q = cols(qkv, N, W, 0, QD), *k = cols(qkv, N, W, QD, KD), *v = cols(qkv, N, W, QD + KD, KD);
        float *o1 = frand(N * QD, 0), *o2 = frand(N * QD, 0), *l1 = frand((int64_t)B * NH * T, 0),
              *l2 = frand((int64_t)B * NH * T, 0);
        float sc = 1.0f / sqrtf((float)HS);
        rf->attention_fwd(X1, o2, l2, q, k, v, B, T, T, NH, NKV, HS, 0, 0, T * KD, sc);
        if (!bwd) {
            float *o3 = frand(N * QD, 0), *l3 = frand((int64_t)B * NH * T, 0);
            rf->attention_fwd(X1, o3, l3, qkv, qkv + QD, qkv + QD + KD, B, T, T, NH, NKV, HS, W, W, T * W, sc);
            be->attention_fwd(ex, o1, l1, qkv, qkv + QD, qkv + QD + KD, B, T, T, NH, NKV, HS, W, W, T * W, sc);
            CHECK(memcmp(o3, o2, sizeof(float) * (size_t)(N * QD)) == 0 &&
                      memcmp(l3, l2, sizeof(float) * (size_t)(B * NH * T)) == 0,
                  "ref/attention_fwd %s: strided rows differ from dense ones", cur_shape);
            compare("out (strided)", o1, o2, N * QD, 1e-5);
            compare("lse (strided)", l1, l2, (int64_t)B * NH * T, 1e-5);
            ffree(o3); ffree(l3);
        } else {
            float *d = frand(N * QD, 1), *dq = frand(N * QD, 0), *dk = frand(N * KD, 0), *dv = frand(N * KD, 0);
            rf->attention_bwd(X1, dq, dk, dv, d, o2, l2, q, k, v, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
            /* the reference, then the backend; inputs in qkv's rows, then
             * dense with only the gradients in fused rows */
            for (int pass = 0; pass < 4; pass++) {
                float *g = frand(N * W, 0);
                for (int64_t i = 0; i < N * W; i++) g[i] = 5.0f;
                int dense_in = pass >= 2;
                const float *iq = dense_in ? q : qkv, *ik = dense_in ? k : qkv + QD, *iv = dense_in ? v : qkv + QD + KD;
                (pass & 1 ? be : rf)->attention_bwd(pass & 1 ? ex : X1, g, g + QD, g + QD + KD, d, o2, l2, iq, ik, iv,
                                                    B, T, NH, NKV, HS, dense_in ? 0 : W, dense_in ? 0 : W,
                                                    dense_in ? W : 0, dense_in ? W : 0, sc);
                float *gq = cols(g, N, W, 0, QD), *gk = cols(g, N, W, QD, KD), *gv = cols(g, N, W, QD + KD, KD);
                int64_t pad = 0;
                for (int64_t r = 0; r < N; r++)
                    for (int64_t c = QD + 2 * KD; c < W; c++) pad += g[r * W + c] != 5.0f;
                CHECK(pad == 0, "%s/attention_bwd %s%s: wrote %lld values outside dq, dk, dv", pass & 1 ? "cpu" : "ref",
                      cur_shape, dense_in ? " (dense inputs)" : "", (long long)pad);
                if (!(pass & 1)) {
                    CHECK(memcmp(gq, dq, sizeof(float) * (size_t)(N * QD)) == 0 &&
                              memcmp(gk, dk, sizeof(float) * (size_t)(N * KD)) == 0 &&
                              memcmp(gv, dv, sizeof(float) * (size_t)(N * KD)) == 0,
                          "ref/attention_bwd %s%s: strided rows differ from dense ones", cur_shape,
                          dense_in ? " (dense inputs)" : "");
                } else {
                    compare("dq (strided)", gq, dq, N * QD, 1e-5);
                    compare("dk (strided)", gk, dk, N * KD, 1e-5);
                    compare("dv (strided)", gv, dv, N * KD, 1e-5);
                }
                ffree(g); ffree(gq); ffree(gk); ffree(gv);
            }
            ffree(d); ffree(dq); ffree(dk); ffree(dv);
        }
        ffree(qkv); ffree(q); ffree(k); ffree(v); ffree(o1); ffree(o2); ffree(l1); ffree(l2);
    }
}

static void case_attention_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        int B = ATT[s][0], Tq = ATT[s][1], Tk = ATT[s][2], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        int64_t bs = (int64_t)Tk * NKV * HS + ATT[s][6];
        snprintf(cur_shape, sizeof cur_shape, "B%d Tq%d Tk%d NH%d NKV%d HS%d", B, Tq, Tk, NH, NKV, HS);
        int64_t nq = (int64_t)B * Tq * NH * HS;
        float *q = frand(nq, 1), *k = frand(B * bs, 1), *v = frand(B * bs, 1);
        float *o1 = frand(nq, 0), *o2 = frand(nq, 0), *l1 = frand((int64_t)B * NH * Tq, 0), *l2 = frand((int64_t)B * NH * Tq, 0);
        float sc = 1.0f / sqrtf((float)HS);
        be->attention_fwd(ex, o1, l1, q, k, v, B, Tq, Tk, NH, NKV, HS, 0, 0, bs, sc);
        rf->attention_fwd(X1, o2, l2, q, k, v, B, Tq, Tk, NH, NKV, HS, 0, 0, bs, sc);
        compare("out", o1, o2, nq, 1e-5);
        compare("lse", l1, l2, (int64_t)B * NH * Tq, 1e-5);
        ffree(q); ffree(k); ffree(v); ffree(o1); ffree(o2); ffree(l1); ffree(l2);
    }    attention_strided(be, rf, ex, 0);
}

static void case_attention_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t s = 0; s < sizeof ATT / sizeof ATT[0]; s++) {
        if (ATT[s][1] != ATT[s][2] || ATT[s][6]) continue; /* backward is for training: Tq == Tk, contiguous */
        int B = ATT[s][0], T = ATT[s][1], NH = ATT[s][3], NKV = ATT[s][4], HS = ATT[s][5];
        snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
        int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
        float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *o = frand(nq, 0), *l = frand((int64_t)B * NH * T, 0);
        float sc = 1.0f / sqrtf((float)HS);
        rf->attention_fwd(X1, o, l, q, k, v, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, sc);
        float *d = frand(nq, 1);
        float *dq1 = frand(nq, 0), *dk1 = frand(nk, 0), *dv1 = frand(nk, 0);
        float *dq2 = frand(nq, 0), *dk2 = frand(nk, 0), *dv2 = frand(nk, 0);
        be->attention_bwd(ex, dq1, dk1, dv1, d, o, l, q, k, v, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
        rf->attention_bwd(X1, dq2, dk2, dv2, d, o, l, q, k, v, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
        compare("dq", dq1, dq2, nq, 1e-5);
        compare("dk", dk1, dk2, nk, 1e-5);
        compare("dv", dv1, dv2, nk, 1e-5);
        ffree(q); ffree(k); ffree(v); ffree(o); ffree(l); ffree(d);
        ffree(dq1); ffree(dk1); ffree(dv1); ffree(dq2); ffree(dk2); ffree(dv2);
    }    attention_strided(be, rf, ex, 1);
}

/* SwiGLU over N rows of H: gate and up the two halves of one fused
 * [N, 2H] (+ pad) tensor, or two tensors with rows ld apart; against the
 * reference on dense copies (bit for bit for the reference itself, 1e-6 for
 * the backend); the backward's outputs land at the same places, pads
 * untouched. */
static void swiglu_rows(const smj_backend *be, const smj_backend *rf, const smj_exec *ex, int bwd) {
    static const int S[][3] = {{1, 8, 0}, {5, 16, 0}, {7, 24, 3}, {3, 13, 5}, {64, 40, 0}}; /* N, H, pad */
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
        for (int fused = 0; fused < 2; fused++) {
            int64_t N = S[s][0], H = S[s][1], ld = (fused ? 2 * H : H) + S[s][2], n = N * H;
            snprintf(cur_shape, sizeof cur_shape, "N%lld H%lld rows %lld apart%s", (long long)N, (long long)H,
                     (long long)ld, fused ? " (gate|up fused)" : "");
            float *gu = frand(N * ld + (fused ? 0 : N * ld), 2);
            float *g = gu, *u = fused ? gu + H : gu + N * ld;
            float *gd = cols(g, N, ld, 0, H), *ud = cols(u, N, ld, 0, H), *d = frand(n, 1);
            for (int pass = 0; pass < 2; pass++) {
                const smj_backend *b = pass ? be : rf;
                const smj_exec *e = pass ? ex : X1;
                if (!bwd) {
                    float *o = frand(n, 0), *od = frand(n, 0);
                    rf->swiglu_fwd(X1, od, gd, ud, N, (int)H, 0);
                    b->swiglu_fwd(e, o, g, u, N, (int)H, ld);
                    if (pass) compare("out (rows)", o, od, n, 1e-6);
                    else CHECK(memcmp(o, od, sizeof(float) * (size_t)n) == 0, "ref/swiglu_fwd %s: differs", cur_shape);
                    ffree(o); ffree(od);
                    continue;
                }
                float *ad = frand(n, 0), *bd = frand(n, 0);
                rf->swiglu_bwd(X1, ad, bd, d, gd, ud, N, (int)H, 0);
                int64_t tot = N * ld * (fused ? 1 : 2);
                float *o = frand(tot, 0);
                for (int64_t i = 0; i < tot; i++) o[i] = 5.0f;
                float *og = o, *ou = o + (u - g);
                b->swiglu_bwd(e, og, ou, d, g, u, N, (int)H, ld);
                float *a = cols(og, N, ld, 0, H), *bb = cols(ou, N, ld, 0, H);
                int64_t pad = 0;
                for (int64_t r = 0; r < tot / ld; r++)
                    for (int64_t c = fused ? 2 * H : H; c < ld; c++) pad += o[r * ld + c] != 5.0f;
                CHECK(pad == 0, "%s/swiglu_bwd %s: wrote %lld values outside dgate, dup", pass ? "backend" : "ref",
                      cur_shape, (long long)pad);
                if (pass) {
                    compare("dgate (rows)", a, ad, n, 1e-6);
                    compare("dup (rows)", bb, bd, n, 1e-6);
                } else {
                    CHECK(memcmp(a, ad, sizeof(float) * (size_t)n) == 0 && memcmp(bb, bd, sizeof(float) * (size_t)n) == 0,
                          "ref/swiglu_bwd %s: differs", cur_shape);
                }
                ffree(o); ffree(a); ffree(bb); ffree(ad); ffree(bd);
            }
            ffree(gu); ffree(gd); ffree(ud); ffree(d);
        }
}

static void case_swiglu_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *o1 = frand(n, 0), *o2 = frand(n, 0);
        be->swiglu_fwd(ex, o1, g, u, 1, (int)n, 0);
        rf->swiglu_fwd(X1, o2, g, u, 1, (int)n, 0);
        compare("out", o1, o2, n, 1e-6);
        ffree(g); ffree(u); ffree(o1); ffree(o2);
    }
    swiglu_rows(be, rf, ex, 0);
}

static void case_swiglu_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1);
        float *a1 = frand(n, 0), *b1 = frand(n, 0), *a2 = frand(n, 0), *b2 = frand(n, 0);
        be->swiglu_bwd(ex, a1, b1, d, g, u, 1, (int)n, 0);
        rf->swiglu_bwd(X1, a2, b2, d, g, u, 1, (int)n, 0);
        compare("dgate", a1, a2, n, 1e-6);
        compare("dup", b1, b2, n, 1e-6);
        ffree(g); ffree(u); ffree(d); ffree(a1); ffree(b1); ffree(a2); ffree(b2);
    }
    swiglu_rows(be, rf, ex, 1);
}

static void case_add(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *a = frand(n, 1), *b = frand(n, 1), *o1 = frand(n, 0), *o2 = frand(n, 0);
        be->add(ex, o1, a, b, n);
        rf->add(X1, o2, a, b, n);
        compare("out", o1, o2, n, 0);
        be->add(ex, a, a, b, n); /* aliasing allowed */
        compare("in place", a, o2, n, 0);
        ffree(a); ffree(b); ffree(o1); ffree(o2);
    }
}

static int32_t *targets_for(int64_t N, int V) {
    int32_t *t = malloc(sizeof(int32_t) * (size_t)N);
    for (int64_t i = 0; i < N; i++) t[i] = i % 5 == 3 ? -1 : (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
    return t;
}

/* Cross-entropy shapes {N, V, ld}: rows ld >= V apart (a padded head) */
static const int XENT_S[][3] = {{1, 1, 1}, {1, 7, 7}, {1, 7, 8}, {9, 300, 300}, {9, 300, 320}, {4, 5000, 5000},
                                {3, 4097, 4160}};
/* logits [N, ld]: the pad columns 40, which would swamp any sum that read them */
static float *xent_logits(int64_t N, int V, int ld) {
    float *lg = frand(N * ld, 8);
    for (int64_t i = 0; i < N * ld; i++) if (i % ld >= V) lg[i] = 40.0f;
    return lg;
}

static void case_xent_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t s = 0; s < sizeof XENT_S / sizeof XENT_S[0]; s++) {
        int64_t N = XENT_S[s][0]; int V = XENT_S[s][1], ld = XENT_S[s][2];
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d", (long long)N, V, ld);
        float *lg = xent_logits(N, V, ld), *l1 = frand(N, 0), *l2 = frand(N, 0), *z1 = frand(N, 0), *z2 = frand(N, 0);
        int32_t *t = targets_for(N, V);
        be->xent_fwd(ex, l1, z1, lg, t, N, V, ld);
        rf->xent_fwd(X1, l2, z2, lg, t, N, V, ld);
        compare("losses", l1, l2, N, 1e-5);
        compare("lse", z1, z2, N, 1e-5);
        ffree(lg); ffree(l1); ffree(l2); ffree(z1); ffree(z2); free(t);
    }
}

/* (the pad columns of dlogits must come out 0: the outputs start as noise) */
static void case_xent_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t s = 0; s < sizeof XENT_S / sizeof XENT_S[0]; s++) {
        int64_t N = XENT_S[s][0]; int V = XENT_S[s][1], ld = XENT_S[s][2];
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d", (long long)N, V, ld);
        float *lg = xent_logits(N, V, ld), *l = frand(N, 0), *z = frand(N, 0);
        int32_t *t = targets_for(N, V);
        rf->xent_fwd(X1, l, z, lg, t, N, V, ld);
        float *d1 = frand(N * ld, 1), *d2 = frand(N * ld, 1), *inplace = fcopy(lg, N * ld);
        be->xent_bwd(ex, d1, lg, z, t, 0.37f, N, V, ld);
        rf->xent_bwd(X1, d2, lg, z, t, 0.37f, N, V, ld);
        compare("dlogits", d1, d2, N * ld, 1e-6);
        be->xent_bwd(ex, inplace, inplace, z, t, 0.37f, N, V, ld);
        compare("dlogits in place", inplace, d2, N * ld, 1e-6);
        ffree(lg); ffree(l); ffree(z); ffree(d1); ffree(d2); ffree(inplace); free(t);
    }
}

/* adamw against the reference, with and without a gradient scale gs; with
 * one, bit for bit the backend's scale of g then adamw with gs = 1 (the
 * trainer's clipping before gs existed), g left as it was */
static void case_adamw(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 3000; n = n * 11 + 2)
        for (int64_t t = 1; t <= 1000; t *= 31)
            for (int k = 0; k < 2; k++) {
                const float gs = k ? 0.37f : 1.0f;
                snprintf(cur_shape, sizeof cur_shape, "n%lld t%lld gs %g", (long long)n, (long long)t, gs);
                float *p1 = frand(n, 1), *m1 = frand(n, 0.1f), *v1 = frand(n, 0.01f), *g = frand(n, 1);
                for (int64_t i = 0; i < n; i++) v1[i] = fabsf(v1[i]);
                float *p2 = fcopy(p1, n), *m2 = fcopy(m1, n), *v2 = fcopy(v1, n);
                float *p3 = fcopy(p1, n), *m3 = fcopy(m1, n), *v3 = fcopy(v1, n), *g3 = fcopy(g, n), *g0 = fcopy(g, n);
                be->adamw(ex, p1, m1, v1, g, gs, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
                rf->adamw(X1, p2, m2, v2, g, gs, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
                compare("p", p1, p2, n, 1e-6);
                compare("m", m1, m2, n, 1e-6);
                compare("v", v1, v2, n, 1e-6);
                be->scale(ex, g3, gs, n);
                be->adamw(ex, p3, m3, v3, g3, 1.0f, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
                CHECK(memcmp(p1, p3, sizeof(float) * (size_t)n) == 0 && memcmp(m1, m3, sizeof(float) * (size_t)n) == 0 &&
                          memcmp(v1, v3, sizeof(float) * (size_t)n) == 0,
                      "adamw %s: differs from scale then adamw", cur_shape);
                CHECK(memcmp(g, g0, sizeof(float) * (size_t)n) == 0, "adamw %s: wrote its gradient", cur_shape);
                ffree(p1); ffree(m1); ffree(v1); ffree(g); ffree(p2); ffree(m2); ffree(v2);
                ffree(p3); ffree(m3); ffree(v3); ffree(g3); ffree(g0);
            }
}

static void case_sumsq(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 0; n <= 100000; n = n * 13 + 1) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 3);
        double a = be->sumsq(ex, x, n), b = rf->sumsq(X1, x, n);
        CHECK(fabs(a - b) <= 1e-12 * (b + 1), "%s/sumsq %s: %.17g vs %.17g", cur_be, cur_shape, a, b);
        if (n > 2) {
            x[n / 2] = NAN;
            CHECK(isnan(be->sumsq(ex, x, n)), "%s/sumsq %s: NaN not propagated", cur_be, cur_shape);
            x[n / 2] = INFINITY;
            CHECK(isinf(be->sumsq(ex, x, n)), "%s/sumsq %s: Inf not propagated", cur_be, cur_shape);
        }
        ffree(x);
    }
}

static void case_scale(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *a = frand(n, 1), *b = fcopy(a, n);
        be->scale(ex, a, 0.3f, n);
        rf->scale(X1, b, 0.3f, n);
        compare("x", a, b, n, 0);
        ffree(a); ffree(b);
    }
}

/* LayerNorm shapes: the GPT-2 width (768) and awkward ones; N rows. */
static const uint16_t LN_C[] = {1, 3, 17, 768}, LN_N[] = {1, 5, 64}; /* unsigned: no size warnings */

static void case_layernorm_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t ci = 0; ci < sizeof LN_C / sizeof LN_C[0]; ci++)
        for (size_t ni = 0; ni < sizeof LN_N / sizeof LN_N[0]; ni++)
            for (int bias = 0; bias < 2; bias++) {
                int64_t N = LN_N[ni]; int C = LN_C[ci];
                snprintf(cur_shape, sizeof cur_shape, "N%lld C%d bias%d", (long long)N, C, bias);
                /* an offset mean, as in a residual stream */
                float *x = frand(N * C, 2), *w = frand(C, 1), *b = bias ? frand(C, 1) : NULL;
                for (int64_t i = 0; i < N * C; i++) x[i] += 0.5f;
                float *o1 = frand(N * C, 0), *o2 = frand(N * C, 0);
                float *m1 = frand(N, 0), *m2 = frand(N, 0), *r1 = frand(N, 0), *r2 = frand(N, 0);
                be->layernorm_fwd(ex, o1, m1, r1, x, w, b, N, C, 1e-5f);
                rf->layernorm_fwd(X1, o2, m2, r2, x, w, b, N, C, 1e-5f);
                compare("out", o1, o2, N * C, 1e-5);
                compare("mean", m1, m2, N, 1e-5);
                compare("rstd", r1, r2, N, 1e-5);
                ffree(x); ffree(w); ffree(b); ffree(o1); ffree(o2); ffree(m1); ffree(m2); ffree(r1); ffree(r2);
            }
}

/* alias: 0 a separate sum, 1 sum = a (in place), 2 sum = b; with and
 * without the bias */
static void case_add_layernorm_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t ci = 0; ci < sizeof LN_C / sizeof LN_C[0]; ci++)
        for (size_t ni = 0; ni < sizeof LN_N / sizeof LN_N[0]; ni++)
            for (int k = 0; k < 6; k++) {
                int64_t N = LN_N[ni]; int C = LN_C[ci], alias = k % 3, bias = k / 3;
                snprintf(cur_shape, sizeof cur_shape, "N%lld C%d alias%d bias%d", (long long)N, C, alias, bias);
                float *a = frand(N * C, 2), *b = frand(N * C, 1), *w = frand(C, 1), *bb = bias ? frand(C, 1) : NULL;
                for (int64_t i = 0; i < N * C; i++) a[i] += 0.5f; /* an offset mean, as in a residual stream */
                float *a2 = fcopy(a, N * C), *b2 = fcopy(b, N * C), *s1 = frand(N * C, 0), *s2 = frand(N * C, 0);
                float *o1 = frand(N * C, 0), *o2 = frand(N * C, 0);
                float *m1 = frand(N, 0), *m2 = frand(N, 0), *r1 = frand(N, 0), *r2 = frand(N, 0);
                float *d1 = alias == 1 ? a : alias == 2 ? b : s1, *d2 = alias == 1 ? a2 : alias == 2 ? b2 : s2;
                be->add_layernorm_fwd(ex, d1, o1, m1, r1, a, b, w, bb, N, C, 1e-5f);
                rf->add_layernorm_fwd(X1, d2, o2, m2, r2, a2, b2, w, bb, N, C, 1e-5f);
                compare("sum", d1, d2, N * C, 0);
                compare("out", o1, o2, N * C, 1e-5);
                compare("mean", m1, m2, N, 1e-5);
                compare("rstd", r1, r2, N, 1e-5);
                ffree(a); ffree(b); ffree(w); ffree(bb); ffree(a2); ffree(b2); ffree(s1); ffree(s2);
                ffree(o1); ffree(o2); ffree(m1); ffree(m2); ffree(r1); ffree(r2);
            }
}

static void case_layernorm_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (size_t ci = 0; ci < sizeof LN_C / sizeof LN_C[0]; ci++)
        for (size_t ni = 0; ni < sizeof LN_N / sizeof LN_N[0]; ni++)
            for (int bias = 0; bias < 2; bias++) {
                int64_t N = LN_N[ni]; int C = LN_C[ci];
                int acc = bias; /* (both with and without: dx accumulated or written) */
                snprintf(cur_shape, sizeof cur_shape, "N%lld C%d bias%d acc%d", (long long)N, C, bias, acc);
                float *x = frand(N * C, 2), *w = frand(C, 1), *b = frand(C, 1), *o = frand(N * C, 0);
                float *m = frand(N, 0), *r = frand(N, 0);
                rf->layernorm_fwd(X1, o, m, r, x, w, b, N, C, 1e-5f);
                float *dy = frand(N * C, 1), *dx1 = frand(N * C, 1), *dx2 = fcopy(dx1, N * C);
                float *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C), *db1 = frand(C, 1), *db2 = fcopy(db1, C);
                be->layernorm_bwd(ex, dx1, dw1, bias ? db1 : NULL, dy, x, w, m, r, N, C, acc);
                rf->layernorm_bwd(X1, dx2, dw2, bias ? db2 : NULL, dy, x, w, m, r, N, C, acc);
                double terms = 0; /* |r w dy|: dx is a difference of terms of this size */
                for (int64_t i = 0; i < N * C; i++) terms = fmax(terms, fabs(r[i / C] * w[i % C] * dy[i]));
                compare_floor("dx", dx1, dx2, N * C, 1e-5, terms);
                compare("dw", dw1, dw2, C, 1e-5);
                compare("db", db1, db2, C, 1e-5); /* unchanged without bias */
                ffree(x); ffree(w); ffree(b); ffree(o); ffree(m); ffree(r); ffree(dy); ffree(dx1); ffree(dx2);
                ffree(dw1); ffree(dw2); ffree(db1); ffree(db2);
            }
}

/* Special inputs of GELU: a dense grid over [-12, 12] checked element by
 * element: relative error <= 1e-6 for x >= -2, absolute <= 1e-7 below (there
 * |gelu| < 0.05 and the condition number |x gelu'/gelu| grows past 4, so no
 * float evaluation keeps 1e-6 relative; the double reference's 1 + tanh
 * cancels too); gelu' absolute <= 1e-6 (it crosses 0). Then large |x|
 * (x^3 and exp(-2u) would overflow float), 0, -0 and NaN. */
static void gelu_special(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    enum { G = 24001, S = 14 };
    static const float big[S] = {20, -20, 50, -50, 1e3f, -1e3f, 1e10f, -1e10f, 1e20f, -1e20f, 3e38f, -3e38f, 10.5f, -10.5f};
    int64_t n = G + S + 3;
    float *x = frand(n, 0), *d = frand(n, 0);
    for (int64_t i = 0; i < G; i++) x[i] = -12.0f + 24.0f * (float)i / (G - 1); /* step 1e-3 */
    for (int i = 0; i < S; i++) x[G + i] = big[i];
    x[G + S] = NAN; x[G + S + 1] = 0.0f; x[G + S + 2] = -0.0f;
    for (int64_t i = 0; i < n; i++) d[i] = 1.0f;
    float *o1 = frand(n, 0), *o2 = frand(n, 0), *g1 = frand(n, 0), *g2 = frand(n, 0);
    be->gelu_fwd(ex, o1, x, n);
    rf->gelu_fwd(X1, o2, x, n);
    be->gelu_bwd(ex, g1, d, x, n);
    rf->gelu_bwd(X1, g2, d, x, n);
    double worst = 0, worst_d = 0;
    float wx = 0, wxd = 0;
    for (int64_t i = 0; i < G; i++) {
        double e = fabs((double)o1[i] - o2[i]) / (x[i] >= -2 ? fmax(fabs(o2[i]), 1e-30) : 0.1);
        double ed = fabs((double)g1[i] - g2[i]); /* gelu' crosses 0: absolute (|gelu'| <= 1.13) */
        if (e > worst) { worst = e; wx = x[i]; }
        if (ed > worst_d) { worst_d = ed; wxd = x[i]; }
    }
    snprintf(cur_shape, sizeof cur_shape, "grid [-12, 12]");
    CHECK(worst <= 1e-6, "%s/gelu_fwd %s: error %.3g at x = %.9g (relative; absolute * 10 below -2)", cur_be,
          cur_shape, worst, wx);
    CHECK(worst_d <= 1e-6, "%s/gelu_bwd %s: error %.3g at x = %.9g", cur_be, cur_shape, worst_d, wxd);
    for (int i = 0; i < S; i++) {
        float xi = x[G + i];
        CHECK(fabs((double)o1[G + i] - o2[G + i]) <= 1e-6 * fabs(o2[G + i]) + 1e-30,
              "%s/gelu_fwd x = %g: %.9g vs ref %.9g", cur_be, xi, o1[G + i], o2[G + i]);
        CHECK(fabs((double)g1[G + i] - g2[G + i]) <= 1e-6, "%s/gelu_bwd x = %g: %.9g vs ref %.9g", cur_be, xi,
              g1[G + i], g2[G + i]);
    }
    CHECK(isnan(o1[G + S]) && isnan(g1[G + S]), "%s/gelu NaN not propagated (%g, %g)", cur_be, o1[G + S], g1[G + S]);
    CHECK(o1[G + S + 1] == 0 && o1[G + S + 2] == 0 && g1[G + S + 1] == 0.5f && g1[G + S + 2] == 0.5f,
          "%s/gelu at 0: %g %g, gelu' %g %g", cur_be, o1[G + S + 1], o1[G + S + 2], g1[G + S + 1], g1[G + S + 2]);
    ffree(x); ffree(d); ffree(o1); ffree(o2); ffree(g1); ffree(g2);
}

static void case_gelu_fwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 6), *o1 = frand(n, 0), *o2 = frand(n, 0);
        be->gelu_fwd(ex, o1, x, n);
        rf->gelu_fwd(X1, o2, x, n);
        compare("out", o1, o2, n, 1e-6);
        ffree(x); ffree(o1); ffree(o2);
    }
    gelu_special(be, rf, ex);
}

static void case_gelu_bwd(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    for (int64_t n = 1; n <= 1000; n = n * 7 + 3) {
        snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
        float *x = frand(n, 6), *d = frand(n, 1), *g1 = frand(n, 0), *g2 = frand(n, 0);
        be->gelu_bwd(ex, g1, d, x, n);
        rf->gelu_bwd(X1, g2, d, x, n);
        /* floor 1: dout and gelu' are O(1), so a lone value near a zero of
         * gelu' (x ~ -0.75) is judged against that scale, not its own */
        compare_floor("dx", g1, g2, n, 1e-6, 1.0);
        ffree(x); ffree(d); ffree(g1); ffree(g2);
    }
}

/* bf16 storage: bit for bit the reference, the safetensors writer's
 * rounding (another implementation) and values worked out by hand, on the
 * special values of bf16_test_inputs and random ones, aligned and not; the
 * canaries around the output must survive. */
static const uint16_t BF16_CANARY = 0xBEEF;
static uint16_t *u16buf(int64_t n) {
    uint16_t *p = malloc(sizeof(uint16_t) * (size_t)(n + 2 * PAD));
    for (int64_t i = 0; i < n + 2 * PAD; i++) p[i] = BF16_CANARY;
    return p + PAD;
}
static void u16free(uint16_t *p) { if (p) free(p - PAD); }
static int u16canaries_ok(const uint16_t *p, int64_t n) {
    for (int i = 1; i <= PAD; i++) if (p[-i] != BF16_CANARY || p[n + i - 1] != BF16_CANARY) return 0;
    return 1;
}

static void case_bf16_pack(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    static const uint32_t hand_in[] = {0x3F808000u, 0x3F818000u, 0x7F7F8000u, 0x00018000u, 0x00008000u,
                                       0x40490FDBu, 0x3EAAAAABu, 0x7FC00000u};
    static const uint16_t hand_out[] = {0x3F80, 0x3F82, 0x7F80, 0x0002, 0x0000, 0x4049, 0x3EAB, 0x7FC0};
    for (int k = 0; k < (int)(sizeof hand_in / sizeof hand_in[0]); k++) {
        float f;
        uint16_t o = 0;
        memcpy(&f, &hand_in[k], 4);
        be->bf16_pack(ex, &o, &f, 1);
        CHECK(o == hand_out[k], "%s/bf16_pack 0x%08x -> 0x%04x, want 0x%04x", cur_be, hand_in[k], o, hand_out[k]);
    }
    for (int64_t n = 1; n <= 5000; n = n * 5 + 3)
        for (int off = 0; off < 2; off++) {
            snprintf(cur_shape, sizeof cur_shape, "n%lld offset%d", (long long)n, off);
            float *x = frand(n + 1, 0);
            bf16_test_inputs(x + off, n, (uint64_t)n);
            uint16_t *o1 = u16buf(n + 1), *o2 = u16buf(n + 1);
            be->bf16_pack(ex, o1 + off, x + off, n);
            rf->bf16_pack(X1, o2 + off, x + off, n);
            int64_t bad = 0, badw = 0;
            for (int64_t i = off; i < n + off; i++) {
                bad += o1[i] != o2[i];
                badw += o2[i] != smj_f32_to_bf16(x[i]);
            }
            CHECK(bad == 0, "%s/bf16_pack %s: %lld values differ from ref", cur_be, cur_shape, (long long)bad);
            CHECK(badw == 0, "ref/bf16_pack %s: %lld values differ from smj_f32_to_bf16", cur_shape, (long long)badw);
            CHECK(u16canaries_ok(o1, n + 1) && o1[off ? 0 : n] == BF16_CANARY, "%s/bf16_pack %s: wrote outside its output",
                  cur_be, cur_shape);
            ffree(x); u16free(o1); u16free(o2);
        }
}

/* Every one of the 65536 bf16 values: unpack gives smj_bf16_to_f32's bits,
 * and packing that back gives the value again (a NaN comes back quiet). */
static void case_bf16_unpack(const smj_backend *be, const smj_backend *rf, const smj_exec *ex) {
    (void)rf;
    int64_t n = 65536;
    for (int off = 0; off < 2; off++) {
        snprintf(cur_shape, sizeof cur_shape, "all 65536 offset%d", off);
        uint16_t *h = u16buf(n + 1), *back = u16buf(n + 1);
        for (int64_t i = 0; i < n; i++) h[i + off] = (uint16_t)i;
        float *f = frand(n + 1, 0);
        be->bf16_unpack(ex, f + off, h + off, n);
        be->bf16_pack(ex, back + off, f + off, n);
        int64_t bad = 0, badrt = 0;
        for (int64_t i = 0; i < n; i++) {
            float want = smj_bf16_to_f32((uint16_t)i);
            bad += memcmp(&want, f + off + i, 4) != 0;
            int nan = (i & 0x7FFF) > 0x7F80;
            badrt += back[i + off] != (nan ? (uint16_t)(i | 0x40) : (uint16_t)i);
        }
        CHECK(bad == 0, "%s/bf16_unpack %s: %lld values wrong", cur_be, cur_shape, (long long)bad);
        CHECK(badrt == 0, "%s/bf16_unpack %s: %lld values do not pack back to themselves", cur_be, cur_shape,
              (long long)badrt);
        CHECK(f[off ? 0 : n] == 0 && f[-1] == CANARY && f[n + 1] == CANARY,
              "%s/bf16_unpack %s: wrote outside its output", cur_be, cur_shape);
        u16free(h); u16free(back); ffree(f);
    }
}

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
_Static_assert(sizeof CASES / sizeof CASES[0] == SMJ_OP_COUNT, "every op needs a checker case");

/* ------------------------------------------------ part 2: finite differences */

static double *drand(int64_t n, double scale) {
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = scale * (2.0 * smj_rng_uniform(&rng) - 1.0);
    return p;
}
static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Checks analytic grad g of loss(x) at every coordinate of x (n small). */
typedef double (*loss_fn)(void *ctx);
static void fd_check(const char *name, double *x, const double *g, int64_t n, loss_fn f, void *ctx) {
    const double eps = 1e-6;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double old = x[i];
        x[i] = old + eps; double lp = f(ctx);
        x[i] = old - eps; double lm = f(ctx);
        x[i] = old;
        double num = (lp - lm) / (2 * eps), e = fabs(num - g[i]) / fmax(fabs(num) + fabs(g[i]), 1e-3);
        if (e > worst) worst = e;
    }
    CHECK(worst < 1e-6, "finite differences %s: worst relative error %.3g", name, worst);
}

typedef struct {
    int64_t N; int C, V, B, T, NH, NKV, HS;
    double *x, *w, *y, *dout, *aux, *aux2, *cs, *sn, *q, *k, *v, *b;
    int32_t *ids;
} fdc;

static double L_rms(void *p) {
    fdc *c = p;
    smj_ref64_ops.rmsnorm_fwd(X1, c->y, c->aux, c->x, c->w, c->N, c->C, 1e-5f);
    return dot(c->y, c->dout, c->N * c->C);
}
static double L_swiglu(void *p) {
    fdc *c = p;
    smj_ref64_ops.swiglu_fwd(X1, c->y, c->x, c->w, 1, (int)c->N, 0);
    return dot(c->y, c->dout, c->N);
}
static double L_rope(void *p) {
    fdc *c = p;
    int64_t n = (int64_t)c->B * c->T * c->NH * c->HS;
    memcpy(c->y, c->x, sizeof(double) * (size_t)n);
    smj_ref64_ops.rope_fwd(X1, c->y, c->cs, c->sn, c->B, c->T, c->NH, c->HS, 1, 0);
    return dot(c->y, c->dout, n);
}
static double L_att(void *p) {
    fdc *c = p;
    smj_ref64_ops.attention_fwd(X1, c->y, c->aux, c->q, c->k, c->v, c->B, c->T, c->T, c->NH, c->NKV, c->HS, 0, 0,
                                (int64_t)c->T * c->NKV * c->HS, 0.7f);
    return dot(c->y, c->dout, (int64_t)c->B * c->T * c->NH * c->HS);
}
static double L_xent(void *p) {
    fdc *c = p;
    smj_ref64_ops.xent_fwd(X1, c->y, c->aux, c->x, c->ids, c->N, c->V, c->V + 2); /* (rows padded by 2) */
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += c->y[i];
    return s * 0.37;
}
static double L_emb(void *p) {
    fdc *c = p;
    smj_ref64_ops.embedding_fwd(X1, c->y, c->ids, c->w, c->N, c->C);
    return dot(c->y, c->dout, c->N * c->C);
}
static double L_mm(void *p) { /* y = x[N,C] · w[V,C]^T */
    fdc *c = p;
    smj_ref64_ops.matmul(X1, c->y, c->x, c->w, c->N, c->V, c->C, 0, 1, 0);
    return dot(c->y, c->dout, c->N * c->V);
}

static double L_ln(void *p) { /* aux = mean, aux2 = rstd, b = bias */
    fdc *c = p;
    smj_ref64_ops.layernorm_fwd(X1, c->y, c->aux, c->aux2, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return dot(c->y, c->dout, c->N * c->C);
}
static double L_gelu(void *p) {
    fdc *c = p;
    smj_ref64_ops.gelu_fwd(X1, c->y, c->x, c->N);
    return dot(c->y, c->dout, c->N);
}

static void finite_differences(void) {
    const smj_ref64 *R = &smj_ref64_ops;
    { /* rmsnorm */
        fdc c = {.N = 3, .C = 7};
        c.x = drand(21, 2); c.w = drand(7, 1); c.y = drand(21, 0); c.aux = drand(3, 0); c.dout = drand(21, 1);
        double *dx = drand(21, 0), *dw = calloc(7, sizeof(double));
        L_rms(&c);
        R->rmsnorm_bwd(X1, dx, dw, c.dout, c.x, c.w, c.aux, 3, 7, 0);
        fd_check("rmsnorm dx", c.x, dx, 21, L_rms, &c);
        fd_check("rmsnorm dw", c.w, dw, 7, L_rms, &c);
        free(c.x); free(c.w); free(c.y); free(c.aux); free(c.dout); free(dx); free(dw);
    }
    { /* swiglu: x = gate, w = up */
        fdc c = {.N = 11};
        c.x = drand(11, 5); c.w = drand(11, 2); c.y = drand(11, 0); c.dout = drand(11, 1);
        double *dg = drand(11, 0), *du = drand(11, 0);
        R->swiglu_bwd(X1, dg, du, c.dout, c.x, c.w, 1, 11, 0);
        fd_check("swiglu dgate", c.x, dg, 11, L_swiglu, &c);
        fd_check("swiglu dup", c.w, du, 11, L_swiglu, &c);
        free(c.x); free(c.w); free(c.y); free(c.dout); free(dg); free(du);
    }
    { /* rope (pos0 = 1) */
        fdc c = {.B = 2, .T = 3, .NH = 2, .HS = 6};
        int64_t n = 72;
        c.x = drand(n, 1); c.y = drand(n, 0); c.dout = drand(n, 1);
        c.cs = drand(4 * 3, 0); c.sn = drand(4 * 3, 0);
        for (int p = 0; p < 4; p++) for (int i = 0; i < 3; i++) {
            double a = p * pow(100.0, -2.0 * i / 6); c.cs[p * 3 + i] = cos(a); c.sn[p * 3 + i] = sin(a);
        }
        double *g = drand(n, 0);
        memcpy(g, c.dout, sizeof(double) * (size_t)n);
        R->rope_bwd(X1, g, c.cs, c.sn, 2, 3, 2, 6, 1, 0);
        fd_check("rope", c.x, g, n, L_rope, &c);
        free(c.x); free(c.y); free(c.dout); free(c.cs); free(c.sn); free(g);
    }
    { /* attention with GQA */
        fdc c = {.B = 2, .T = 4, .NH = 4, .NKV = 2, .HS = 3};
        int64_t nq = 2 * 4 * 4 * 3, nk = 2 * 4 * 2 * 3;
        c.q = drand(nq, 1); c.k = drand(nk, 1); c.v = drand(nk, 1);
        c.y = drand(nq, 0); c.aux = drand(2 * 4 * 4, 0); c.dout = drand(nq, 1);
        L_att(&c);
        double *dq = drand(nq, 0), *dk = drand(nk, 0), *dv = drand(nk, 0);
        R->attention_bwd(X1, dq, dk, dv, c.dout, c.y, c.aux, c.q, c.k, c.v, 2, 4, 4, 2, 3, 0, 0, 0, 0, 0.7f);
        fd_check("attention dq", c.q, dq, nq, L_att, &c);
        fd_check("attention dk", c.k, dk, nk, L_att, &c);
        fd_check("attention dv", c.v, dv, nk, L_att, &c);
        free(c.q); free(c.k); free(c.v); free(c.y); free(c.aux); free(c.dout); free(dq); free(dk); free(dv);
    }
    { /* cross-entropy with an ignored row, rows 8 apart (the pad's gradient: 0) */
        fdc c = {.N = 4, .V = 6};
        c.x = drand(32, 3); c.y = drand(4, 0); c.aux = drand(4, 0);
        int32_t ids[4] = {1, -1, 5, 0};
        c.ids = ids;
        L_xent(&c);
        double *d = drand(32, 1);
        R->xent_bwd(X1, d, c.x, c.aux, ids, 0.37f, 4, 6, 8);
        fd_check("xent", c.x, d, 32, L_xent, &c);
        free(c.x); free(c.y); free(c.aux); free(d);
    }
    { /* embedding with a repeated id */
        fdc c = {.N = 5, .C = 3};
        int32_t ids[5] = {2, 0, 2, 3, 2};
        c.ids = ids; c.w = drand(12, 1); c.y = drand(15, 0); c.dout = drand(15, 1);
        double *dw = calloc(12, sizeof(double));
        R->embedding_bwd(X1, dw, ids, c.dout, 5, 3);
        fd_check("embedding", c.w, dw, 12, L_emb, &c);
        free(c.w); free(c.y); free(c.dout); free(dw);
    }
    { /* linear layer through matmul's transpose flags: dx = dy·W, dW = dy^T·x */
        fdc c = {.N = 3, .C = 4, .V = 5};
        c.x = drand(12, 1); c.w = drand(20, 1); c.y = drand(15, 0); c.dout = drand(15, 1);
        double *dx = drand(12, 0), *dw = drand(20, 0);
        R->matmul(X1, dx, c.dout, c.w, 3, 4, 5, 0, 0, 0);
        R->matmul(X1, dw, c.dout, c.x, 5, 4, 3, 1, 0, 0);
        fd_check("matmul dx", c.x, dx, 12, L_mm, &c);
        fd_check("matmul dW", c.w, dw, 20, L_mm, &c);
        free(c.x); free(c.w); free(c.y); free(c.dout); free(dx); free(dw);
    }
    { /* layernorm with bias (dw, db accumulate onto nonzero values), then without */
        fdc c = {.N = 3, .C = 7};
        c.x = drand(21, 2); c.w = drand(7, 1); c.b = drand(7, 1); c.y = drand(21, 0); c.dout = drand(21, 1);
        c.aux = drand(3, 0); c.aux2 = drand(3, 0);
        for (int i = 0; i < 21; i++) c.x[i] += 0.7;
        double *dx = drand(21, 0), *dw = drand(7, 1), *db = drand(7, 1), *dw0 = drand(7, 0), *db0 = drand(7, 0);
        memcpy(dw0, dw, sizeof(double) * 7);
        memcpy(db0, db, sizeof(double) * 7);
        L_ln(&c);
        R->layernorm_bwd(X1, dx, dw, db, c.dout, c.x, c.w, c.aux, c.aux2, 3, 7, 0);
        for (int i = 0; i < 7; i++) { dw[i] -= dw0[i]; db[i] -= db0[i]; }
        fd_check("layernorm dx", c.x, dx, 21, L_ln, &c);
        fd_check("layernorm dw", c.w, dw, 7, L_ln, &c);
        fd_check("layernorm db", c.b, db, 7, L_ln, &c);
        free(c.b);
        c.b = NULL;
        double *dw2 = calloc(7, sizeof(double));
        L_ln(&c);
        R->layernorm_bwd(X1, dx, dw2, NULL, c.dout, c.x, c.w, c.aux, c.aux2, 3, 7, 0);
        fd_check("layernorm dx (no bias)", c.x, dx, 21, L_ln, &c);
        fd_check("layernorm dw (no bias)", c.w, dw2, 7, L_ln, &c);
        free(c.x); free(c.w); free(c.y); free(c.dout); free(c.aux); free(c.aux2);
        free(dx); free(dw); free(db); free(dw0); free(db0); free(dw2);
    }
    { /* gelu over [-5, 5] */
        fdc c = {.N = 23};
        c.x = drand(23, 5); c.y = drand(23, 0); c.dout = drand(23, 1);
        double *dx = drand(23, 0);
        R->gelu_bwd(X1, dx, c.dout, c.x, 23);
        fd_check("gelu dx", c.x, dx, 23, L_gelu, &c);
        free(c.x); free(c.y); free(c.dout); free(dx);
    }
}

/* ------------------------------------------------ part 3: AdamW vs torch's formula */
static void adamw_vs_torch(void) {
    /* torch.optim.AdamW: p *= 1 - lr*wd; m,v update; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
    float p = 0.5f, m = 0, v = 0;
    double tp = 0.5, tm = 0, tv = 0;
    for (int t = 1; t <= 20; t++) {
        float g = (float)sin(t * 1.3);
        smj_backend_ref.adamw(X1, &p, &m, &v, &g, 1.0f, 1, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        tp *= 1 - 1e-2 * 0.1;
        tm = 0.9 * tm + 0.1 * g;
        tv = 0.95 * tv + 0.05 * (double)g * g;
        tp -= 1e-2 / (1 - pow(0.9, t)) * tm / (sqrt(tv) / sqrt(1 - pow(0.95, t)) + 1e-8);
    }
    CHECK(fabs(p - tp) < 1e-6, "adamw after 20 steps: %.9g vs torch formula %.9g", p, tp);
}

int main(void) {
    smj_rng_seed(&rng, 42);
    const smj_backend *backends[] = {&smj_backend_cpu};
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++)
        for (int nt = 1; nt <= 2; nt++)
            for (int op = 0; op < SMJ_OP_COUNT; op++) {
                cur_be = backends[b]->name;
                cur_op = NAMES[op];
                long before = check_failed;
                smj_exec ex = {.nt = nt};
                CASES[op](backends[b], &smj_backend_ref, &ex);
                printf("%-4s %-14s threads=%d %s\n", cur_be, cur_op, nt, check_failed == before ? "ok" : "FAILED");
            }
    finite_differences();
    adamw_vs_torch();
    return check_summary("test_ops");
}
