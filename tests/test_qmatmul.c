/* test_qmatmul.c — the optional qmatmul op: the CPU backend (src/cpu/qgemm.c)
 * against references, for f16, q8_0 and q4_0 weights.
 *
 * Shapes: M = 1, 3, 4, 5, 17, 128 (both the decode path and the repacked
 * path with row tails), N odd / below and above the 32-row chunk, K = 32 ..
 * 544 (odd block counts), acc 0 and 1, 1 and 2 threads. Outputs sit between
 * canaries that must survive. Tolerances, as normalized max error
 * |got - ref| / max|ref|:
 *   tight 1e-5 — against a double-precision reference that rounds A exactly
 *     as the backend does (smj_qgemm_quantize_row) for q8_0/q4_0, and
 *     against the exact product for f16 (f16 keeps A in float): what is left
 *     is float summation order;
 *   loose 3e-2 — q8_0/q4_0 against the exact product of A and the
 *     dequantized W (the "ref" backend's qmatmul, in double): the error of
 *     rounding A to 8 bits per block of 32 (at most 1/254 of the block's
 *     max per value), as in llama.cpp.
 * Also: the rounding of A itself against a scalar restatement of its rule,
 * values -128 in q8_0 weights and all-zero blocks (scale 0), bitwise equal
 * results for 1 and 2 threads, and that both backends fill the op.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/cpu/qgemm.h"
#include "../src/gguf/gguf.h"
#include "../src/ops/ops.h"
#include "util/check.h"

#define CANARY 1.2345e6f
#define PAD 16

static smj_rng rng;

static float urand(void) { return 2.0f * (float)smj_rng_uniform(&rng) - 1.0f; }

static int64_t row_bytes(int wtype, int64_t K) {
    return wtype == SMJ_WTYPE_F16 ? 2 * K : wtype == SMJ_WTYPE_Q8_0 ? K / 32 * 34 : K / 32 * 18;
}
static const char *wname(int wtype) {
    return wtype == SMJ_WTYPE_F16 ? "f16" : wtype == SMJ_WTYPE_Q8_0 ? "q8_0" : "q4_0";
}

/* Random weights in wtype, with a few edge blocks: an all-zero block (scale
 * 0) and, for q8_0, raw values -128. */
static uint8_t *make_w(int wtype, int64_t N, int64_t K) {
    int64_t rs = row_bytes(wtype, K);
    uint8_t *w = malloc((size_t)(rs * N));
    float *row = malloc(sizeof(float) * (size_t)K);
    for (int64_t n = 0; n < N; n++) {
        float sc = 0.05f + (float)smj_rng_uniform(&rng);
        for (int64_t k = 0; k < K; k++) row[k] = sc * urand();
        if (n % 5 == 2) memset(row, 0, sizeof(float) * 32);
        if (wtype == SMJ_WTYPE_F16) smj_quantize_f16(row, w + n * rs, K);
        else if (wtype == SMJ_WTYPE_Q8_0) smj_quantize_q8_0(row, w + n * rs, K);
        else smj_quantize_q4_0(row, w + n * rs, K);
        if (wtype == SMJ_WTYPE_Q8_0 && n % 3 == 1) {
            uint8_t *blk = w + n * rs + (K / 32 - 1) * 34;
            blk[2] = 0x80;
            blk[2 + 31] = 0x80;
        }
    }
    free(row);
    return w;
}

/* Normalized max error with canary and finiteness checks on got. */
static void compare(const char *what, const char *shape, const float *got, const float *ref, int64_t n,
                    double tol) {
    double mx = 1e-6, err = 0;
    int bad = 0, can = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        if (!isfinite(got[i])) bad = 1;
    }
    for (int i = 1; i <= PAD; i++) can |= got[-i] != CANARY || got[n + i - 1] != CANARY;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / mx;
        if (e > err) err = e;
    }
    CHECK(!bad, "%s %s: non-finite output", what, shape);
    CHECK(!can, "%s %s: wrote outside C", what, shape);
    CHECK(err <= tol, "%s %s: normalized error %.3g > %.1g", what, shape, err, tol);
}

/* C (+)= quantized(A) · W^T in double, A rounded as the backend rounds it. */
static void ref_quantized_a(float *C, const float *A, const uint8_t *W, int wtype, int64_t M, int64_t N,
                            int64_t K, int acc) {
    int64_t KB = K / 32, rs = row_bytes(wtype, K);
    int8_t *q = malloc((size_t)K);
    float *d = malloc(sizeof(float) * (size_t)KB);
    int32_t *s = malloc(sizeof(int32_t) * (size_t)KB);
    float *w = malloc(sizeof(float) * 32);
    for (int64_t i = 0; i < M; i++) {
        smj_qgemm_quantize_row(A + i * K, q, d, s, K);
        for (int64_t n = 0; n < N; n++) {
            double sum = 0;
            for (int64_t b = 0; b < KB; b++) {
                const uint8_t *blk = W + n * rs + b * (wtype == SMJ_WTYPE_Q8_0 ? 34 : 18);
                double dw = smj_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8));
                int64_t isum = 0;
                for (int j = 0; j < 32; j++) {
                    volatile int qw = wtype == SMJ_WTYPE_Q8_0 ? ((const int8_t *)blk)[2 + j]
                                    : (j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4)) - 8;
                    isum += (int64_t)qw * q[b * 32 + j];
                }
                sum += dw * (double)d[b] * (double)isum;
            }
            float *c = C + i * N + n;
            *c = (float)((acc ? (double)*c : 0.0) + sum);
        }
    }
    free(q); free(d); free(s); free(w);
}

static float *buf(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n + 2 * PAD));
    for (int64_t i = 0; i < n + 2 * PAD; i++) p[i] = CANARY;
    return p + PAD;
}

static void check_shape(int wtype, int64_t M, int64_t N, int64_t K) {
    uint8_t *W = make_w(wtype, N, K);
    float *A = malloc(sizeof(float) * (size_t)(M * K));
    for (int64_t i = 0; i < M * K; i++) A[i] = urand() * (i % 97 == 3 ? 3.0f : 1.0f);
    float *C0 = buf(M * N), *exact = buf(M * N), *tight = buf(M * N), *got[2] = {buf(M * N), buf(M * N)};
    for (int64_t i = 0; i < M * N; i++) C0[i] = urand();
    for (int acc = 0; acc < 2; acc++) {
        char shape[128];
        snprintf(shape, sizeof shape, "%s M=%lld N=%lld K=%lld acc=%d", wname(wtype), (long long)M,
                 (long long)N, (long long)K, acc);
        smj_exec ex1 = {.nt = 1};
        memcpy(exact, C0, sizeof(float) * (size_t)(M * N));
        smj_backend_ref.qmatmul(&ex1, exact, A, W, wtype, M, N, K, acc);
        if (wtype == SMJ_WTYPE_F16) {
            memcpy(tight, exact, sizeof(float) * (size_t)(M * N));
        } else {
            memcpy(tight, C0, sizeof(float) * (size_t)(M * N));
            ref_quantized_a(tight, A, W, wtype, M, N, K, acc);
        }
        for (int t = 0; t < 2; t++) {
            smj_exec ex = {.nt = t + 1};
            memcpy(got[t], C0, sizeof(float) * (size_t)(M * N));
            smj_backend_cpu.qmatmul(&ex, got[t], A, W, wtype, M, N, K, acc);
            char s2[160];
            snprintf(s2, sizeof s2, "%s nt=%d", shape, t + 1);
            compare("cpu vs quantized-A reference", s2, got[t], tight, M * N, 1e-5);
            compare("cpu vs exact product", s2, got[t], exact, M * N, 3e-2);
        }
        CHECK(memcmp(got[0], got[1], sizeof(float) * (size_t)(M * N)) == 0, "%s: nt=1 and nt=2 differ", shape);
    }
    free(W); free(A);
    free(C0 - PAD); free(exact - PAD); free(tight - PAD); free(got[0] - PAD); free(got[1] - PAD);
}

/* The rounding of A against its rule restated in scalar code. */
static void check_quantize_row(void) {
    const int64_t K = 32 * 9;
    float x[32 * 9];
    for (int i = 0; i < K; i++) x[i] = urand() * (i < 32 ? 0.0f : i < 64 ? 1e-30f : 3.0f);
    x[100] = 127.5f;  /* a block whose max lands exactly on the range */
    for (int i = 160; i < 192; i++) x[i] = (float)(i - 176) * 0.5f; /* ties to even */
    int8_t q[32 * 9];
    float d[9];
    int32_t s[9];
    smj_qgemm_quantize_row(x, q, d, s, K);
    int bad = 0;
    for (int b = 0; b < 9; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            volatile float v = x[b * 32 + j] * id;
            int qq = (int)lrintf(v);
            bad |= qq != q[b * 32 + j] || qq < -127 || qq > 127;
            sum += qq;
        }
        bad |= d[b] != db || s[b] != sum;
    }
    CHECK(!bad, "smj_qgemm_quantize_row differs from its rule");
}

int main(void) {
    smj_rng_seed(&rng, 20240611);
    CHECK(smj_backend_ref.qmatmul != NULL, "ref backend lacks qmatmul");
    CHECK(smj_backend_cpu.qmatmul != NULL, "cpu backend lacks qmatmul");
    check_quantize_row();
    const int wtypes[3] = {SMJ_WTYPE_Q8_0, SMJ_WTYPE_Q4_0, SMJ_WTYPE_F16};
    const int64_t Ms[] = {1, 3, 4, 5, 17, 128};
    const int64_t Ns[] = {1, 7, 33, 67};
    const int64_t Ks[] = {32, 96, 544};
    for (int t = 0; t < 3; t++)
        for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
            for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
                for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) {
                    if (Ms[a] == 128 && Ks[c] == 544 && Ns[b] != 67) continue;
                    check_shape(wtypes[t], Ms[a], Ns[b], Ks[c]);
                }
    /* a wider one: several 32-row chunks split over threads */
    check_shape(SMJ_WTYPE_Q8_0, 9, 301, 256);
    check_shape(SMJ_WTYPE_Q4_0, 9, 301, 256);
    /* K = 0: C = acc ? C : 0 */
    float c[3] = {1, 2, 3};
    smj_exec ex = {.nt = 2};
    smj_backend_cpu.qmatmul(&ex, c, NULL, NULL, SMJ_WTYPE_Q8_0, 1, 3, 0, 1);
    CHECK(c[0] == 1 && c[2] == 3, "K = 0 with acc changed C");
    smj_backend_cpu.qmatmul(&ex, c, NULL, NULL, SMJ_WTYPE_Q8_0, 1, 3, 0, 0);
    CHECK(c[0] == 0 && c[2] == 0, "K = 0 without acc did not zero C");
    return check_summary("test_qmatmul");
}
