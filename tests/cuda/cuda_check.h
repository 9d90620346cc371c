/* cuda_check.h — what the CUDA device tests share (tests/cuda/test_cuda_*.c):
 * the backend under test and the "ref" backend, seeded random inputs with
 * PAD canaries on each side (which must survive every op), uploads and
 * downloads, the normalized-error comparison (|got - ref| / max|ref|, as
 * tests/test_ops.c) and the context opening with the SKIP rule: without a
 * usable GPU a program prints SKIP and exits 0, unless SMJ_CUDA_REQUIRE=1
 * (tests/cuda/run.sh sets it). The tolerances of products and attention
 * follow SMJ_CUDA_MATMUL (cuda_check_open). Header-only: each test program
 * is one translation unit. */
#ifndef SMJ_TESTS_CUDA_CHECK_H
#define SMJ_TESTS_CUDA_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/ops/ops.h"
#include "../util/check.h"

#define CANARY 1.2345e6f
#define PAD 16

static smj_rng rng;
static const smj_backend *be;
static const smj_exec *ex;
static const smj_exec EX1 = {.nt = 1};
#define X1 (&EX1)
static const smj_backend *rf __attribute__((unused)) = &smj_backend_ref;

static inline float *frand(int64_t n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)(n + 2 * PAD));
    for (int64_t i = 0; i < n + 2 * PAD; i++) p[i] = CANARY;
    for (int64_t i = 0; i < n; i++) p[PAD + i] = scale * (2.0f * (float)smj_rng_uniform(&rng) - 1.0f);
    return p + PAD;
}
static inline float *fcopy(const float *x, int64_t n) {
    float *p = frand(n, 0);
    memcpy(p, x, sizeof(float) * (size_t)n);
    return p;
}
static inline void ffree(float *p) { if (p) free(p - PAD); }

/* device copy of a host buffer, canaries included */
static inline float *dup_d(const float *h, int64_t n) {
    float *d = be->alloc(sizeof(float) * (size_t)(n + 2 * PAD));
    be->upload(d, h - PAD, sizeof(float) * (size_t)(n + 2 * PAD));
    return d + PAD;
}
/* a new host buffer holding device buffer d (canaries included) */
static inline float *get_h(const float *d, int64_t n) {
    float *h = frand(n, 0);
    be->download(h - PAD, d - PAD, sizeof(float) * (size_t)(n + 2 * PAD));
    return h;
}
static inline void dfree(float *d) { if (d) be->free(d - PAD); }
static inline int32_t *ids_d(const int32_t *h, int64_t n) {
    int32_t *d = be->alloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    be->upload(d, h, sizeof(int32_t) * (size_t)n);
    return d;
}

static double TOL_MM = 1e-5, TOL_ATTF = 1e-5, TOL_ATTB = 1e-5; /* by SMJ_CUDA_MATMUL */
static const char *cur_op;
static char cur_shape[160];
static double op_worst; /* the current op's largest normalized error (printed) */

static inline void compare_floor(const char *what, const float *got, const float *ref, int64_t n, double tol, double floor) {
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
static inline void compare(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    compare_floor(what, got, ref, n, tol, 0);
}
/* downloads d and compares it with ref */
static inline void compare_d(const char *what, const float *d, const float *ref, int64_t n, double tol) {
    float *h = get_h(d, n);
    compare(what, h, ref, n, tol);
    ffree(h);
}


/* n bf16 values on the device (zeroed, two spare) */
static inline uint16_t *u16_d(int64_t n) {
    uint16_t *d = be->alloc(sizeof(uint16_t) * (size_t)(n + 2));
    be->zero(d, sizeof(uint16_t) * (size_t)(n + 2));
    return d;
}

/* RoPE tables for positions 0..maxT-1 (base 10000) */
static inline void rope_tables(int maxT, int HS, float **cs, float **sn) {
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
/* N cross-entropy targets below V, every fifth -1 (ignored) */
static inline int32_t *targets_for(int64_t N, int V) {
    int32_t *t = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    for (int64_t i = 0; i < N; i++) t[i] = i % 5 == 3 ? -1 : (int32_t)(smj_rng_u64(&rng) % (uint64_t)V);
    return t;
}

/* Opens the CUDA context for program prog and sets be, ex and the
 * tolerances; NULL (after printing SKIP) without a usable GPU, when the
 * caller returns cuda_check_skip(). */
static inline smj_ctx *cuda_check_open(void) {
    smj_rng_seed(&rng, 42);
    smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_CUDA};
    smj_ctx *ctx = smj_ctx_create(&o);
    if (!ctx || smj_ctx_status(ctx) != SMJ_OK) {
        printf("SKIP: no CUDA backend: %s\n", ctx ? smj_ctx_error(ctx) : "out of memory");
        smj_ctx_free(ctx);
        return NULL;
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
    return ctx;
}
/* exit status without a GPU: 1 when SMJ_CUDA_REQUIRE=1, else 0 */
static inline int cuda_check_skip(void) {
    const char *req = getenv("SMJ_CUDA_REQUIRE");
    return req && *req == '1' ? 1 : 0;
}
/* after a group of checks: the context reports no device error */
static inline void cuda_check_status(smj_ctx *ctx, const char *what) {
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "cuda/%s: device error: %s", what, smj_ctx_error(ctx));
}

#endif
