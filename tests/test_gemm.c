/* test_gemm.c — smj_sgemm against a double-precision triple loop.
 *
 * Shapes: zeros, ones, odd sizes, and sizes just below/at/above multiples of
 * the micro-tile (MR = 12/6/4, NR = 32/16/8) and of the cache blocks (KC 512,
 * MC 144, NC 1024), in all four transpose combinations, acc = 0 and 1,
 * nt = 1 and 2. Error bound per element: 1e-5 * sum_k |a_ik b_kj| (+ tiny),
 * which holds for any fp32 summation order. C is allocated with sentinel
 * padding on both sides; the sentinels must survive, and with acc = 0 the
 * prior contents of C (NaN) must not leak into the result.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"
#include "../src/cpu/gemm.h"

enum { PAD = 67 };
static const float SENTINEL = -12345.678f;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int64_t irand(int64_t n) { return (int64_t)(((frand() + 1.0f) * 0.5f) * (float)n) % n; }

/* Runs one case; returns 0 when it passed (so callers can stop early). */
static int run_case(int nt, int64_t M, int64_t N, int64_t K, int tA, int tB, int acc) {
    size_t na = (size_t)(M * K), nb = (size_t)(K * N), nc = (size_t)(M * N);
    float *A = malloc(sizeof(float) * (na + 1)), *B = malloc(sizeof(float) * (nb + 1));
    float *Cbuf = malloc(sizeof(float) * (nc + 2 * PAD)), *C = Cbuf + PAD;
    float *C0 = malloc(sizeof(float) * (nc + 1));
    double *ref = malloc(sizeof(double) * (nc + 1)), *mag = malloc(sizeof(double) * (nc + 1));
    for (size_t i = 0; i < na; i++) A[i] = frand();
    for (size_t i = 0; i < nb; i++) B[i] = frand();
    for (size_t i = 0; i < nc + 2 * PAD; i++) Cbuf[i] = SENTINEL;
    for (size_t i = 0; i < nc; i++) C[i] = C0[i] = acc ? frand() : NAN;

    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = acc ? C0[i * N + j] : 0.0, m = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a = tA ? A[k * M + i] : A[i * K + k];
                double b = tB ? B[j * K + k] : B[k * N + j];
                s += a * b;
                m += fabs(a * b);
            }
            ref[i * N + j] = s;
            mag[i * N + j] = m + (acc ? fabs(C0[i * N + j]) : 0.0);
        }

    smj_sgemm(nt, C, A, B, M, N, K, tA, tB, acc);

    int bad = 0;
    for (size_t i = 0; i < nc && !bad; i++) {
        double err = fabs((double)C[i] - ref[i]);
        if (!(err <= 1e-5 * mag[i] + 1e-30)) {
            CHECK(0, "M=%lld N=%lld K=%lld tA=%d tB=%d acc=%d nt=%d: C[%lld,%lld]=%g want %g",
                  (long long)M, (long long)N, (long long)K, tA, tB, acc, nt,
                  (long long)(i / (size_t)N), (long long)(i % (size_t)N), C[i], ref[i]);
            bad = 1;
        }
    }
    if (!bad) CHECK(1, "values");
    int guard = 1;
    for (int i = 0; i < PAD; i++)
        guard &= Cbuf[i] == SENTINEL && Cbuf[PAD + nc + (size_t)i] == SENTINEL;
    CHECK(guard, "M=%lld N=%lld K=%lld tA=%d tB=%d acc=%d nt=%d: wrote outside C", (long long)M,
          (long long)N, (long long)K, tA, tB, acc, nt);
    free(A), free(B), free(Cbuf), free(C0), free(ref), free(mag);
    return bad || !guard;
}

/* Every transpose/acc/thread combination of one shape. */
static void run_all(int64_t M, int64_t N, int64_t K) {
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (int acc = 0; acc < 2; acc++)
                for (int nt = 1; nt <= 2; nt++) run_case(nt, M, N, K, tA, tB, acc);
}

int main(void) {
    /* Degenerate and tiny. */
    static const int64_t tiny[] = {0, 1, 2, 3, 5, 17};
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
            for (int c = 0; c < 6; c++) run_all(tiny[a], tiny[b], tiny[c]);

    /* Around the micro-tile and the vector width. */
    static const int64_t edge[] = {4, 6, 7, 8, 11, 12, 13, 15, 16, 31, 32, 33, 47, 48, 49};
    for (int a = 0; a < 15; a++)
        for (int b = 0; b < 15; b += 2) run_all(edge[a], edge[b], edge[(a + b) % 15]);

    /* Thin: decode (M == 1) and matrix-vector (N == 1) with long K. */
    static const int64_t thin[] = {1, 15, 16, 17, 63, 64, 65, 130, 1000};
    for (int a = 0; a < 9; a++) {
        run_all(1, thin[a], thin[(a + 3) % 9]);
        run_all(thin[a], 1, thin[(a + 5) % 9]);
    }

    /* Around the cache blocks: KC (512), MC (144), NC (1024). */
    run_all(145, 33, 513);
    run_all(143, 65, 511);
    run_all(37, 1025, 20);
    run_all(150, 40, 1100);

    /* Random shapes. */
    for (int r = 0; r < 60; r++) {
        int64_t M = 1 + irand(90), N = 1 + irand(90), K = irand(200);
        run_case(1 + (int)irand(2), M, N, K, (int)irand(2), (int)irand(2), (int)irand(2));
    }
    return check_summary("test_gemm");
}
