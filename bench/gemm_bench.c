/* gemm_bench.c — GFLOP/s of smj_sgemm on the training shapes, side by side
 * with OpenBLAS's cblas_sgemm when libopenblas.so.0 can be dlopen'ed.
 *
 *   gemm_bench [nt [preset|all|square|decode]]     (defaults: 2 all)
 *   gemm_bench nt M N K tA tB acc                  (one shape)
 *
 * Shapes, for the presets tiny/small/medium (dim d = 128/256/512, FFN hidden
 * h = 512/768/1536, vocab V = 8192) at T = 2048/2048/1024 tokens:
 *   forward   (0,1): T x d x d, T x h x d, T x d x h, T x V x d
 *   input-grad(0,0): T x d x d, T x d x h, T x h x d, T x d x V
 *   weight-grad(1,0, acc): d x d x T, h x d x T, d x h x T, V x d x T
 *   decode    (0,1): 1 x V x d, 1 x h x d, 1 x d x h
 * plus the square 2048^3. Each timing is the best of repeated runs (~0.1 s
 * after a warm-up call), over three rounds alternating the two libraries;
 * both get the same inputs and nt threads. The outputs are also compared
 * (max difference relative to the largest |C|).
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cpu/gemm.h"

typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc);
typedef void (*set_threads_fn)(int);

static cblas_sgemm_fn ob_sgemm;
static set_threads_fn ob_set_threads;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sleeps 0.2 s so the other library's idle worker threads stop spinning
 * (OpenBLAS's workers busy-wait ~0.1 s after a call, GOMP's a few ms) and
 * do not steal a core from the next timing. */
static void settle(void) {
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
}

/* Calls library lib (0 = smedjan, 1 = OpenBLAS) once. */
static void call(int lib, int nt, float *C, const float *A, const float *B, int64_t M, int64_t N,
                 int64_t K, int tA, int tB, int acc) {
    if (lib == 0) {
        smj_sgemm(nt, C, A, B, M, N, K, tA, tB, acc);
    } else {
        /* CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 */
        ob_sgemm(101, tA ? 112 : 111, tB ? 112 : 111, (int)M, (int)N, (int)K, 1.0f, A,
                 (int)(tA ? M : K), B, (int)(tB ? K : N), acc ? 1.0f : 0.0f, C, (int)N);
    }
}

/* Best GFLOP/s of library lib on one shape over repeats lasting ~0.1 s. */
static double timeit(int lib, int nt, float *C, const float *A, const float *B, int64_t M,
                     int64_t N, int64_t K, int tA, int tB, int acc) {
    double flop = 2.0 * (double)M * (double)N * (double)K, best = 1e30, total = 0;
    call(lib, nt, C, A, B, M, N, K, tA, tB, acc);
    for (int r = 0; r < 1000 && (total < 0.1 || r < 2); r++) {
        double t0 = now();
        call(lib, nt, C, A, B, M, N, K, tA, tB, acc);
        double dt = now() - t0;
        total += dt;
        if (dt < best) best = dt;
    }
    return flop / best * 1e-9;
}

static void bench(const char *tag, int nt, int64_t M, int64_t N, int64_t K, int tA, int tB,
                  int acc) {
    size_t na = (size_t)(M * K), nb = (size_t)(K * N), nc = (size_t)(M * N);
    float *A = aligned_alloc(64, (na * 4 + 63) / 64 * 64), *B = aligned_alloc(64, (nb * 4 + 63) / 64 * 64);
    float *C = aligned_alloc(64, (nc * 4 + 63) / 64 * 64), *C2 = aligned_alloc(64, (nc * 4 + 63) / 64 * 64);
    srand(1);
    for (size_t i = 0; i < na; i++) A[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < nb; i++) B[i] = (float)rand() / RAND_MAX - 0.5f;
    memset(C, 0, nc * 4);
    memset(C2, 0, nc * 4);
    /* Alternate the libraries for a few rounds and keep each one's best, so
     * a burst of load from other processes does not decide the ratio. */
    double ours = 0, theirs = 0;
    for (int round = 0; round < 3; round++) {
        ours = fmax(ours, timeit(0, nt, C, A, B, M, N, K, tA, tB, acc));
        if (!ob_sgemm) continue;
        settle();
        theirs = fmax(theirs, timeit(1, nt, C2, A, B, M, N, K, tA, tB, acc));
        settle();
    }
    printf("%-10s %5lld %5lld %5lld  (%d,%d)%s  smedjan %7.1f", tag, (long long)M, (long long)N,
           (long long)K, tA, tB, acc ? "+" : " ", ours);
    if (ob_sgemm) {
        /* same inputs, one fresh call each with acc = 0, then compare */
        call(0, nt, C, A, B, M, N, K, tA, tB, 0);
        call(1, nt, C2, A, B, M, N, K, tA, tB, 0);
        double md = 0, mx = 0;
        for (size_t i = 0; i < nc; i++) {
            md = fmax(md, fabs((double)C[i] - C2[i]));
            mx = fmax(mx, fabs((double)C2[i]));
        }
        printf("  openblas %7.1f  ratio %5.2f  (maxdiff %.1e)", theirs, ours / theirs,
               mx > 0 ? md / mx : md);
    }
    printf("\n");
    fflush(stdout);
    free(A), free(B), free(C), free(C2);
}

static void preset(const char *name, int nt, int64_t T, int64_t d, int64_t h) {
    const int64_t V = 8192;
    char tag[32];
    snprintf(tag, sizeof tag, "%s", name);
    bench(tag, nt, T, d, d, 0, 1, 0);
    bench(tag, nt, T, h, d, 0, 1, 0);
    bench(tag, nt, T, d, h, 0, 1, 0);
    bench(tag, nt, T, V, d, 0, 1, 0);
    bench(tag, nt, T, d, d, 0, 0, 0);
    bench(tag, nt, T, d, h, 0, 0, 0);
    bench(tag, nt, T, h, d, 0, 0, 0);
    bench(tag, nt, T, d, V, 0, 0, 0);
    bench(tag, nt, d, d, T, 1, 0, 1);
    bench(tag, nt, h, d, T, 1, 0, 1);
    bench(tag, nt, d, h, T, 1, 0, 1);
    bench(tag, nt, V, d, T, 1, 0, 1);
}

static void decode(int nt, int64_t d, int64_t h) {
    bench("decode", nt, 1, 8192, d, 0, 1, 0);
    bench("decode", nt, 1, h, d, 0, 1, 0);
    bench("decode", nt, 1, d, h, 0, 1, 0);
    bench("decode", nt, 1, d, h, 0, 0, 0);
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    const char *which = argc > 2 ? argv[2] : "all";
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        ob_sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
        ob_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
        if (ob_set_threads) ob_set_threads(nt);
    }
    printf("# GFLOP/s, %d thread(s), best of repeats; OpenBLAS %s\n", nt,
           ob_sgemm ? "loaded (libopenblas.so.0)" : "not available");
    printf("# shape      M     N     K   (tA,tB)[+ = acc]\n");
    if (argc == 8) {
        bench("custom", nt, atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoi(argv[5]),
              atoi(argv[6]), atoi(argv[7]));
        return 0;
    }
    int all = strcmp(which, "all") == 0;
    if (all || !strcmp(which, "tiny")) preset("tiny", nt, 2048, 128, 512);
    if (all || !strcmp(which, "small")) preset("small", nt, 2048, 256, 768);
    if (all || !strcmp(which, "medium")) preset("medium", nt, 1024, 512, 1536);
    if (all || !strcmp(which, "decode")) {
        decode(nt, 512, 1536);
        decode(nt, 128, 512);
    }
    if (all || !strcmp(which, "square")) bench("square", nt, 2048, 2048, 2048, 0, 0, 0);
    return 0;
}
