/* gemm.c — single-precision matrix multiply for the CPU backend.
 *
 * Design (Goto/BLIS-style, written for row-major C):
 *
 *   for jc over N in steps of NC            B panel  [kc x nc] -> L3
 *     for pc over K in equal steps <= KC     (no thin tail step)
 *       pack op(B)[pc.., jc..] into NR-column micro-panels (k-major, zero-padded)
 *       for ic over M in steps of MC        A block  [mc x kc] -> L2
 *         pack op(A)[ic.., pc..] into MR-row micro-panels (k-major, zero-padded)
 *         for jr over nc in steps of NR     B micro-panel [kc x NR]
 *           for ir over mc in steps of MR   A micro-panel [MR x kc]
 *             micro-kernel: C[MR x NR] (+)= A-panel · B-panel
 *
 *   Packing absorbs the transposes: the micro-kernel only ever sees two
 *   contiguous, zero-padded panels, so all four (transA, transB) combinations
 *   run the same kernel. Edge tiles are computed in full from the padded
 *   panels and stored with a column mask and a row count, so nothing outside
 *   C[M,N] is read or written.
 *
 *   The micro-kernel keeps an MR x NR tile of C in registers: for each k it
 *   loads NR/VL vectors of B and broadcasts MR scalars of A, one FMA per
 *   (row, vector). AVX-512: 12 x 32 (24 zmm accumulators); AVX2+FMA: 6 x 16
 *   (12 ymm); otherwise a portable scalar 4 x 8 kernel.
 *
 *   Threads: C is cut into nt disjoint rectangles on MR/NR tile boundaries
 *   (the grid minimizing the busiest thread's kernel + packing work); each
 *   thread runs the loop nest above on its rectangle with private pack
 *   buffers. No barriers, no shared mutable state.
 *
 *   Packing walks the source along its contiguous dimension: row copies
 *   spanning all panels when the source already runs along the panel's
 *   width, 16x16 in-register transposes (AVX-512) when it runs along k.
 *
 *   Blocking was tuned on a 2-core Zen 4 (32 KiB L1d, 1 MiB L2 per core,
 *   32 MiB L3): 12x32 / KC 512 / MC 144 / NC 1024 gives ~105 GFLOP/s on one
 *   core and 200-220 on two, at or above OpenBLAS 0.3.21; 8x32 and 14x32
 *   tiles, KC 256/384 and MC 96/240 measured within noise of it.
 *
 *   Thin cases (M == 1 or N == 1: decode, gemv) skip packing: they are
 *   memory bound, so they stream the matrix once with dot-product or axpy
 *   kernels, split over threads by output element.
 *
 *   With -DSMJ_USE_OPENBLAS everything is forwarded to cblas_sgemm.
 *
 *   K == 0 gives C = acc ? C : 0. All index arithmetic is int64_t.
 */
#include "gemm.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifdef SMJ_USE_OPENBLAS
#include <cblas.h>
#endif

/* ---- blocking parameters ------------------------------------------------
 * MR x NR: register tile. KC: depth of one rank-kc update (A micro-panel of
 * MR*KC floats, B micro-panel of KC*NR floats, both streamed from L2).
 * MC: rows of the packed A block (MC*KC*4 bytes kept in the 1 MiB L2).
 * NC: columns of the packed B panel (KC*NC*4 bytes, in L3); it also bounds
 * the strip of C revisited for each kc step so that it stays in L3.
 * Overridable with -D for tuning (bench/gemm_bench.sh). */
#if defined(__AVX512F__)
#ifndef SMJ_MR
#define SMJ_MR 12
#endif
#define SMJ_NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#define SMJ_MR 6
#define SMJ_NR 16
#else
#define SMJ_MR 4
#define SMJ_NR 8
#endif
#ifndef SMJ_KC
#define SMJ_KC 512
#endif
#ifndef SMJ_MC
#define SMJ_MC 144
#endif
#ifndef SMJ_NC
#define SMJ_NC 1024
#endif

/* Thin (M or N == 1) products below this many flops run on one thread. */
#ifndef SMJ_THIN_MT_FLOPS
#define SMJ_THIN_MT_FLOPS 5e4
#endif

enum { MR = SMJ_MR, NR = SMJ_NR, KC = SMJ_KC, MC = (SMJ_MC / SMJ_MR) * SMJ_MR,
       NC = (SMJ_NC / SMJ_NR) * SMJ_NR };

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- micro-kernels ------------------------------------------------------ */

/* C[mr x nr] (ldc) = (beta ? C : 0) + a·b, where a is an MR-row micro-panel
 * (kc steps of MR floats) and b an NR-column micro-panel (kc steps of NR
 * floats); b is 64-byte aligned. Requires 1 <= mr <= MR, 1 <= nr <= NR,
 * kc >= 1. Rows >= mr and columns >= nr of C are never touched. */
static void kernel(int64_t kc, const float *restrict a, const float *restrict b,
                   float *restrict c, int64_t ldc, int mr, int nr, int beta);

#if defined(__AVX512F__)
static void kernel(int64_t kc, const float *restrict a, const float *restrict b,
                   float *restrict c, int64_t ldc, int mr, int nr, int beta) {
    __m512 acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int i = 0; i < mr; i++) {              /* warm the C tile for the final update */
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;
        if (beta) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(m0, ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, m0, acc[i][0]);
        _mm512_mask_storeu_ps(ci + 16, m1, acc[i][1]);
    }
}
#elif defined(__AVX2__) && defined(__FMA__)
static void kernel(int64_t kc, const float *restrict a, const float *restrict b,
                   float *restrict c, int64_t ldc, int mr, int nr, int beta) {
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    if (nr == NR) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            if (i >= mr) break;
            float *ci = c + i * ldc;
            if (beta) {
                acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
            }
            _mm256_storeu_ps(ci, acc[i][0]);
            _mm256_storeu_ps(ci + 8, acc[i][1]);
        }
    } else {                                    /* edge tile: spill and copy */
        _Alignas(32) float t[MR][NR];
        for (int i = 0; i < MR; i++) {
            _mm256_store_ps(t[i], acc[i][0]);
            _mm256_store_ps(t[i] + 8, acc[i][1]);
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                c[i * ldc + j] = (beta ? c[i * ldc + j] : 0.0f) + t[i][j];
    }
}
#else
static void kernel(int64_t kc, const float *restrict a, const float *restrict b,
                   float *restrict c, int64_t ldc, int mr, int nr, int beta) {
    float t[MR][NR] = {{0}};
    for (int64_t k = 0; k < kc; k++) {
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) t[i][j] += a[i] * b[j];
        a += MR;
        b += NR;
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = (beta ? c[i * ldc + j] : 0.0f) + t[i][j];
}
#endif

/* ---- packing ------------------------------------------------------------ */

#if defined(__AVX512F__)
/* Transposes an r x 16 block (r <= 16 rows of 16 floats, row stride lds)
 * into 16 rows of r floats: d[k*ldd + j] = s[j*lds + k] for j < r, k < 16.
 * Only those r floats of each destination row are written. */
static void transpose16(float *restrict d, int64_t ldd, const float *restrict s, int64_t lds, int r) {
    __m512 x[16], t[16];
    for (int j = 0; j < 16; j++) x[j] = j < r ? _mm512_loadu_ps(s + j * lds) : _mm512_setzero_ps();
    /* stage 1: interleave 32-bit elements of row pairs */
    for (int j = 0; j < 16; j += 2) {
        t[j] = _mm512_unpacklo_ps(x[j], x[j + 1]);
        t[j + 1] = _mm512_unpackhi_ps(x[j], x[j + 1]);
    }
    /* stage 2: interleave 64-bit pairs; now x[4q + p] holds, in each 128-bit
     * lane L, column 4L + p of rows 4q .. 4q+3 */
    for (int j = 0; j < 16; j += 4) {
        __m512d t0 = _mm512_castps_pd(t[j]), t1 = _mm512_castps_pd(t[j + 1]);
        __m512d t2 = _mm512_castps_pd(t[j + 2]), t3 = _mm512_castps_pd(t[j + 3]);
        x[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        x[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        x[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        x[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    /* stage 3: gather lane L of the four row quads into output row 4L + p */
    for (int p = 0; p < 4; p++) {
        __m512 a0 = _mm512_shuffle_f32x4(x[p], x[4 + p], 0x44);       /* lanes 0,1 | 0,1 */
        __m512 a1 = _mm512_shuffle_f32x4(x[p], x[4 + p], 0xee);       /* lanes 2,3 | 2,3 */
        __m512 b0 = _mm512_shuffle_f32x4(x[8 + p], x[12 + p], 0x44);
        __m512 b1 = _mm512_shuffle_f32x4(x[8 + p], x[12 + p], 0xee);
        t[p] = _mm512_shuffle_f32x4(a0, b0, 0x88);                    /* lane 0 of each quad */
        t[4 + p] = _mm512_shuffle_f32x4(a0, b0, 0xdd);                /* lane 1 */
        t[8 + p] = _mm512_shuffle_f32x4(a1, b1, 0x88);                /* lane 2 */
        t[12 + p] = _mm512_shuffle_f32x4(a1, b1, 0xdd);               /* lane 3 */
    }
    __mmask16 m = r >= 16 ? 0xffff : (__mmask16)((1u << r) - 1);
    for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(d + k * ldd, m, t[k]);
}
#endif

/* Packs op(A)[i0 : i0+mc, k0 : k0+kc] into dst as ceil(mc/MR) micro-panels,
 * each kc steps of MR floats (rows past mc are zero). op(A) is [M,K]; A is
 * stored [M,K] (lda = K) or, when tA, [K,M] (lda = M). */
static void pack_a(float *restrict dst, const float *restrict A, int64_t lda, int tA,
                   int64_t i0, int64_t mc, int64_t k0, int64_t kc) {
    if (tA) {           /* source rows run along i: walk each row once, across all panels */
        for (int64_t k = 0; k < kc; k++) {
            const float *s = A + (k0 + k) * lda + i0;
            for (int64_t ir = 0; ir < mc; ir += MR) {
                float *d = dst + ir * kc + k * MR;
                int m = (int)min64(MR, mc - ir), i = 0;
#if defined(__AVX512F__)
                if (MR <= 16) {                 /* one masked move, zero-filling the pad */
                    __mmask16 mk = (__mmask16)((1u << m) - 1), all = (__mmask16)((1u << MR) - 1);
                    _mm512_mask_storeu_ps(d, all, _mm512_maskz_loadu_ps(mk, s + ir));
                    continue;
                }
#endif
                for (; i < m; i++) d[i] = s[ir + i];
                for (; i < MR; i++) d[i] = 0.0f;
            }
        }
        return;
    }
    for (int64_t ir = 0; ir < mc; ir += MR) {
        int m = (int)min64(MR, mc - ir);
        float *d = dst + ir * kc;
        const float *s = A + (i0 + ir) * lda + k0; /* transpose MR rows into k-major */
        int64_t k = 0;
#if defined(__AVX512F__)
        if (m == MR)
            for (; k + 16 <= kc; k += 16) transpose16(d + k * MR, MR, s + k, lda, MR);
#endif
        for (int i = 0; i < m; i++)
            for (int64_t kk = k; kk < kc; kk++) d[kk * MR + i] = s[i * lda + kk];
        for (int i = m; i < MR; i++)
            for (int64_t kk = k; kk < kc; kk++) d[kk * MR + i] = 0.0f;
    }
}

static void pack_b(float *restrict dst, const float *restrict B, int64_t ldb, int tB,
                   int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    if (!tB) {          /* source rows run along j: walk each row once, across all panels */
        for (int64_t k = 0; k < kc; k++) {
            const float *s = B + (k0 + k) * ldb + j0;
            for (int64_t jr = 0; jr < nc; jr += NR) {
                float *d = dst + jr * kc + k * NR;
                int n = (int)min64(NR, nc - jr), j = 0;
                if (n == NR) {
                    memcpy(d, s + jr, sizeof(float) * NR);
                    continue;
                }
                for (; j < n; j++) d[j] = s[jr + j];
                for (; j < NR; j++) d[j] = 0.0f;
            }
        }
        return;
    }
    for (int64_t jr = 0; jr < nc; jr += NR) {
        int n = (int)min64(NR, nc - jr);
        float *d = dst + jr * kc;
        const float *s = B + (j0 + jr) * ldb + k0;  /* tB: transpose NR rows */
        int64_t k = 0;
#if defined(__AVX512F__)
        if (n == NR)
            for (; k + 16 <= kc; k += 16)
                for (int j = 0; j < NR; j += 16) transpose16(d + k * NR + j, NR, s + j * ldb + k, ldb, 16);
#endif
        for (int j = 0; j < n; j++)
            for (int64_t kk = k; kk < kc; kk++) d[kk * NR + j] = s[j * ldb + kk];
        for (int j = n; j < NR; j++)
            for (int64_t kk = k; kk < kc; kk++) d[kk * NR + j] = 0.0f;
    }
}

/* ---- blocked driver ----------------------------------------------------- */

/* Scratch of one thread: a packed A block and a packed B panel. */
typedef struct { float *a, *b; } packbuf;

/* The loop nest of the header comment on the sub-problem C[i0:i1, j0:j1],
 * single-threaded. K >= 1. C is the whole [M,N] output (ldc = N). */
static void gemm_block(packbuf pb, float *C, const float *A, const float *B, int64_t M, int64_t N,
                       int64_t K, int tA, int tB, int acc, int64_t i0, int64_t i1, int64_t j0,
                       int64_t j1) {
    int64_t lda = tA ? M : K, ldb = tB ? K : N;
    /* Equal kc steps, a multiple of 8, no longer than KC: avoids a thin tail. */
    int64_t kblocks = cdiv(K, KC), kstep = (cdiv(K, kblocks) + 7) / 8 * 8;
    for (int64_t jc = j0; jc < j1; jc += NC) {
        int64_t nc = min64(NC, j1 - jc);
        for (int64_t pc = 0; pc < K; pc += kstep) {
            int64_t kc = min64(kstep, K - pc);
            int beta = acc || pc > 0;
            pack_b(pb.b, B, ldb, tB, pc, kc, jc, nc);
            for (int64_t ic = i0; ic < i1; ic += MC) {
                int64_t mc = min64(MC, i1 - ic);
                pack_a(pb.a, A, lda, tA, ic, mc, pc, kc);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int nr = (int)min64(NR, nc - jr);
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = (int)min64(MR, mc - ir);
                        kernel(kc, pb.a + ir * kc, pb.b + jr * kc, C + (ic + ir) * N + jc + jr, N,
                               mr, nr, beta);
                    }
                }
            }
        }
    }
}

/* ---- thin (gemv-like) paths --------------------------------------------- */

/* y[j] = (beta ? y[j] : 0) + sum_k W[j*ldw + k] * x[k] for j in [j0, j1):
 * one dot product per output, four rows at a time so x is loaded once per
 * four rows and several loads are in flight. */
static void gemv_dot(float *restrict y, const float *restrict W, int64_t ldw,
                     const float *restrict x, int64_t K, int beta, int64_t j0, int64_t j1) {
    int64_t j = j0;
#if defined(__AVX512F__)
    for (; j + 4 <= j1; j += 4) {
        const float *w0 = W + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        __m512 t0 = s0, t1 = s0, t2 = s0, t3 = s0;
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512 xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xa, s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xa, s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xa, s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xa, s3);
            t0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), xb, t0);
            t1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), xb, t1);
            t2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k + 16), xb, t2);
            t3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k + 16), xb, t3);
        }
        for (; k < K; k += 16) {
            __mmask16 m = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
            __m512 xa = _mm512_maskz_loadu_ps(m, x + k);
            s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + k), xa, s0);
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + k), xa, s1);
            s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + k), xa, s2);
            s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + k), xa, s3);
        }
        /* four horizontal sums at once: fold 512 -> 256 bits, then hadd */
        s0 = _mm512_add_ps(s0, t0), s1 = _mm512_add_ps(s1, t1);
        s2 = _mm512_add_ps(s2, t2), s3 = _mm512_add_ps(s3, t3);
        __m256 h0 = _mm256_add_ps(_mm512_castps512_ps256(s0), _mm512_extractf32x8_ps(s0, 1));
        __m256 h1 = _mm256_add_ps(_mm512_castps512_ps256(s1), _mm512_extractf32x8_ps(s1, 1));
        __m256 h2 = _mm256_add_ps(_mm512_castps512_ps256(s2), _mm512_extractf32x8_ps(s2, 1));
        __m256 h3 = _mm256_add_ps(_mm512_castps512_ps256(s3), _mm512_extractf32x8_ps(s3, 1));
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(h0, h1), _mm256_hadd_ps(h2, h3));
        __m128 r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        if (beta) r = _mm_add_ps(r, _mm_loadu_ps(y + j));
        _mm_storeu_ps(y + j, r);
    }
#endif
    for (; j < j1; j++) {
        const float *w = W + j * ldw;
        float s = 0.0f;
        for (int64_t k = 0; k < K; k++) s += w[k] * x[k];
        y[j] = (beta ? y[j] : 0.0f) + s;
    }
}

/* y[j] = (beta ? y[j] : 0) + sum_k x[k] * W[k*ldw + j] for j in [j0, j1):
 * a strip of y at a time held in registers while all K rows stream by. */
static void gemv_axpy(float *restrict y, const float *restrict W, int64_t ldw,
                      const float *restrict x, int64_t K, int beta, int64_t j0, int64_t j1) {
    enum { STRIP = 128 };
    int64_t js = j0;
#if defined(__AVX512F__)
    for (; js + STRIP <= j1; js += STRIP) {    /* 8 zmm accumulators in registers */
        __m512 s[8];
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++)
            s[v] = beta ? _mm512_loadu_ps(y + js + 16 * v) : _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k++) {
            const float *w = W + k * ldw + js;
            __m512 xk = _mm512_set1_ps(x[k]);
#pragma GCC unroll 8
            for (int v = 0; v < 8; v++) s[v] = _mm512_fmadd_ps(xk, _mm512_loadu_ps(w + 16 * v), s[v]);
        }
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) _mm512_storeu_ps(y + js + 16 * v, s[v]);
    }
#endif
    for (; js < j1; js += STRIP) {
        int64_t n = min64(STRIP, j1 - js);
        float s[STRIP];
        for (int64_t j = 0; j < n; j++) s[j] = beta ? y[js + j] : 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float *w = W + k * ldw + js;
            float xk = x[k];
#pragma GCC ivdep
            for (int64_t j = 0; j < n; j++) s[j] += xk * w[j];
        }
        memcpy(y + js, s, sizeof(float) * (size_t)n);
    }
}

/* Plain loops, used only when the pack buffers cannot be allocated. */
static void gemm_naive(float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K,
                       int tA, int tB, int acc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++)
                s += (tA ? A[k * M + i] : A[i * K + k]) * (tB ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = (acc ? C[i * N + j] : 0.0f) + s;
        }
}

/* ---- entry -------------------------------------------------------------- */

/* Chooses a pm x pn grid of thread rectangles (pm*pn <= nt) over the
 * mt x ntl tiles of C, minimizing the busiest thread's estimated time: its
 * padded tile area (16 FMA lanes per cycle) plus its packing work (about a
 * float per cycle: its A rows once per NC-wide column block, its B columns
 * once), both per unit of K. */
static void choose_grid(int nt, int64_t mt, int64_t ntl, int *pm, int *pn) {
    double best = -1;
    *pm = *pn = 1;
    for (int a = 1; a <= nt; a++) {
        int b = nt / a;
        if (a > mt || b > ntl) continue;
        double rows = (double)(cdiv(mt, a) * MR), cols = (double)(cdiv(ntl, b) * NR);
        double cost = rows * cols / 16.0 + rows * (double)cdiv((int64_t)cols, NC) + cols;
        if (best < 0 || cost < best) {
            best = cost;
            *pm = a;
            *pn = b;
        }
    }
}

void smj_sgemm(int nt, float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K,
               int transA, int transB, int acc) {
    if (M <= 0 || N <= 0) return;
    if (nt < 1) nt = 1;
    if (K <= 0) {
        if (!acc)
            for (int64_t i = 0; i < M; i++) memset(C + i * N, 0, sizeof(float) * (size_t)N);
        return;
    }
#ifdef SMJ_USE_OPENBLAS
    if (openblas_get_num_threads() != nt) openblas_set_num_threads(nt);
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A,
                (int)(transA ? M : K), B, (int)(transB ? K : N), acc ? 1.0f : 0.0f, C, (int)N);
    return;
#endif
    double flops = 2.0 * (double)M * (double)N * (double)K;

    if (M == 1 || N == 1) {
        /* y = one row (M == 1) or one column (N == 1) of C, contiguous either
         * way; x is the vector operand, W the matrix one. */
        int64_t len = M == 1 ? N : M;
        const float *x = M == 1 ? A : B, *W = M == 1 ? B : A;
        int dot = M == 1 ? transB : !transA;    /* W's rows run along k? */
        int64_t ldw = dot ? K : len;
        if ((double)len < 64.0 * nt || flops < SMJ_THIN_MT_FLOPS) nt = 1;
        if (nt == 1) {
            (dot ? gemv_dot : gemv_axpy)(C, W, ldw, x, K, acc, 0, len);
            return;
        }
        #pragma omp parallel num_threads(nt)
        {
            int t = 0, T = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            T = omp_get_num_threads();
#endif
            int64_t per = (cdiv(len, T) + 15) / 16 * 16;
            int64_t j0 = min64(len, t * per), j1 = min64(len, j0 + per);
            if (dot)
                gemv_dot(C, W, ldw, x, K, acc, j0, j1);
            else
                gemv_axpy(C, W, ldw, x, K, acc, j0, j1);
        }
        return;
    }

    if (flops < 2e5) nt = 1;                    /* not worth waking a team */
    int64_t mt = cdiv(M, MR), ntl = cdiv(N, NR);
    int pm, pn;
    choose_grid(nt, mt, ntl, &pm, &pn);
    nt = pm * pn;
    int64_t kmax = min64(K, KC) + 8;
    size_t abytes = sizeof(float) * (size_t)(min64(MC, cdiv(M, MR) * MR) * kmax);
    size_t bbytes = sizeof(float) * (size_t)(min64(NC, cdiv(N, NR) * NR) * kmax);
    abytes = (abytes + 63) / 64 * 64;
    bbytes = (bbytes + 63) / 64 * 64;
    float *scratch = aligned_alloc(64, (abytes + bbytes) * (size_t)nt);
    if (!scratch) {                             /* out of memory: slow but correct */
        gemm_naive(C, A, B, M, N, K, transA, transB, acc);
        return;
    }
    #pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        char *base = (char *)scratch + (abytes + bbytes) * (size_t)t;
        packbuf pb = { (float *)base, (float *)(base + abytes) };
        if (T == nt) {
            int tm = t / pn, tn = t % pn;
            int64_t rm = cdiv(mt, pm), rn = cdiv(ntl, pn);
            int64_t i0 = min64(M, tm * rm * MR), i1 = min64(M, i0 + rm * MR);
            int64_t j0 = min64(N, tn * rn * NR), j1 = min64(N, j0 + rn * NR);
            if (i0 < i1 && j0 < j1)
                gemm_block(pb, C, A, B, M, N, K, transA, transB, acc, i0, i1, j0, j1);
        } else if (t == 0) {                    /* got a smaller team than asked */
            gemm_block(pb, C, A, B, M, N, K, transA, transB, acc, 0, M, 0, N);
        }
    }
    free(scratch);
}
