/* qgemm.c — C (+)= A · W^T with W in GGML blocks (q8_0, q4_0, f16), the CPU
 * backend's qmatmul.
 *
 * Design (q8_0 / q4_0), the integer approach llama.cpp also takes:
 *
 *   1. Every row of A is rounded to 8-bit blocks of 32 values (one float
 *      scale d_a and the int8 q per block, plus the block's sum s = sum q),
 *      so a block product is an integer dot product times d_w * d_a.
 *
 *   2. Few rows (M < QG_MIN_PACK_M: decode) — memory bound: W is streamed
 *      once, in its own layout, N split in contiguous ranges over threads.
 *      Per pair of blocks (one zmm): AVX-512 VNNI vpdpbusd multiplies u8 by
 *      s8 in groups of 4 into int32 lanes (8 lanes per block), then the
 *      lanes are converted and FMA'd with the block scales into a float
 *      accumulator, reduced once per row. The u8 operand:
 *        q8_0: |w| with the sign moved onto a (the abs/sign trick),
 *        q4_0: the nibbles as they are (0..15), and the -8 offset is taken
 *              out afterwards as -8 * s_a per block (a scalar FMA).
 *
 *   3. Many rows (prompt processing) — compute bound: W is repacked on the
 *      fly, 32 rows at a time, into an interleaved layout (per block, 8
 *      steps of 64 bytes: lane r of a step holds 4 consecutive values of row
 *      r, as u8 = q + off with off = 128 (q8_0) or 8 (q4_0)) plus the 32 row
 *      scales as floats. Then one broadcast dword of A feeds a vpdpbusd for
 *      16 output columns at once: a tile of QG_R rows of A x 32 rows of W
 *      keeps its int32 block sums and float accumulators in registers; per
 *      block the correction off * s_a is subtracted, the int32 sums are
 *      converted and FMA'd with d_w * d_a. The repack (O(N K)) is amortized
 *      over all M rows of A (O(M N K) work); threads own disjoint 32-row
 *      chunks of W, each with a private repack buffer, so there are no
 *      barriers besides the one after quantizing A.
 *
 *   f16: converted on the fly with F16C (vcvtph2ps) and FMA'd in float;
 *   decode as a dot product per row, several rows of A as 4x4 tiles.
 *
 *   Without AVX-512 VNNI every path falls back to portable scalar loops
 *   with the same activation rounding (so results agree to float rounding).
 *   Results do not depend on the thread count: every output element is
 *   computed by one thread in a fixed order.
 */
#include "qgemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../gguf/gguf.h"
#include "../ops/ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__AVX512DQ__) && defined(__F16C__)
#define QG_AVX512 1
#include <immintrin.h>
#endif

#ifndef QG_MIN_PACK_M
#define QG_MIN_PACK_M 4 /* from this many rows of A, repack W (path 3) */
#endif
#define QG_R 4          /* rows of A per tile in path 3 */
#define QG_NW 32        /* rows of W per repacked chunk */
#define QG_PACK_BLOCK (QG_NW * 32 + QG_NW * 4) /* bytes per block of a chunk */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline float h2f(const uint8_t *p) {
#ifdef QG_AVX512
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
#else
    return smj_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8));
#endif
}

/* ---- activation rounding ------------------------------------------------ */

void smj_qgemm_quantize_row(const float *x, int8_t *q, float *d, int32_t *s, int64_t k) {
    for (int64_t b = 0; b < k / 32; b++, x += 32, q += 32) {
#ifdef QG_AVX512
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));  /* round half even */
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(q1));
        d[b] = db;
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
#else
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            const float v = x[j] * id;
            q[j] = (int8_t)lrintf(v);
            sum += q[j];
        }
        d[b] = db;
        s[b] = sum;
#endif
    }
}

/* ---- one row of W against one quantized row of A ------------------------ */

/* Portable block-by-block dot of W row w (from block b0 on) with the rounded
 * row (q, d, s); used as the tail of the vector loops and without AVX-512. */
static float dot_q_scalar(int wtype, const uint8_t *w, const int8_t *q, const float *d,
                          int64_t b0, int64_t KB) {
    float r = 0.0f;
    for (int64_t b = b0; b < KB; b++) {
        int32_t sum = 0;
        const int8_t *qa = q + b * 32;
        if (wtype == SMJ_WTYPE_Q8_0) {
            /* Both operands through int8_t pointers: gcc 12 vectorizes
             * "(int8_t)u8[j] * s8[j]" into vpdpbusd with the u8 unsigned. */
            const uint8_t *blk = w + b * 34;
            const int8_t *qw = (const int8_t *)(blk + 2);
            for (int j = 0; j < 32; j++) sum += qw[j] * qa[j];
            r += h2f(blk) * d[b] * (float)sum;
        } else {
            const uint8_t *blk = w + b * 18;
            for (int j = 0; j < 16; j++)
                sum += ((blk[2 + j] & 15) - 8) * qa[j] + ((blk[2 + j] >> 4) - 8) * qa[16 + j];
            r += h2f(blk) * d[b] * (float)sum;
        }
    }
    return r;
}

#ifdef QG_AVX512
/* Per-lane companions of a rounded row of A for the decode kernels (path 2),
 * built once per call. A zmm of dpbusd results holds 16 int32 lanes, each
 * the sum of 8 (q4_0) or 4 (q8_0) products; per lane, dl is the d_a of its
 * block and init the offset correction its lane starts from:
 *   q8_0, per pair of blocks (lanes 0-7 block b, 8-15 block b+1; lane l sums
 *     bytes 4l..4l+3 of the pair): W bytes enter as u8 w + 128 (w ^ 0x80),
 *     so init = -128 * (the 4 activations of the lane);
 *   q4_0, per group of 4 blocks, activations permuted to the nibble order
 *     (qp: the first 16 values of blocks 0..3, then their last 16): lane l
 *     is block l/4, values 4(l%4).. of both halves; init = -8 * (its 8 a). */
typedef struct { int8_t *qp; float *dl; int32_t *init; } lane_row;

static void build_lanes(int wtype, const int8_t *q, const float *d, int64_t KB, lane_row *r) {
    if (wtype == SMJ_WTYPE_Q8_0) {
        for (int64_t p = 0; p < KB / 2; p++)
            for (int l = 0; l < 16; l++) {
                const int8_t *a = q + p * 64 + 4 * l;
                r->dl[p * 16 + l] = d[2 * p + l / 8];
                r->init[p * 16 + l] = -128 * (a[0] + a[1] + a[2] + a[3]);
            }
    } else {
        for (int64_t g = 0; g < KB / 4; g++) {
            int8_t *o = r->qp + g * 128;
            for (int blk = 0; blk < 4; blk++) {
                memcpy(o + 16 * blk, q + (4 * g + blk) * 32, 16);
                memcpy(o + 64 + 16 * blk, q + (4 * g + blk) * 32 + 16, 16);
            }
            for (int l = 0; l < 16; l++) {
                const int8_t *lo = o + 4 * l, *hi = o + 64 + 4 * l;
                r->dl[g * 16 + l] = d[4 * g + l / 4];
                r->init[g * 16 + l] = -8 * (lo[0] + lo[1] + lo[2] + lo[3] + hi[0] + hi[1] + hi[2] + hi[3]);
            }
        }
    }
}

static float dot_q8_row(const uint8_t *w, const int8_t *q, const float *d, const lane_row *ln,
                        int64_t KB) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const __m512i hidx = _mm512_set_epi16(17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0,
                                          17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
    int64_t p = 0;
    for (; p + 2 <= KB / 2; p += 2) {
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) {
            const uint8_t *w0 = w + (p + u) * 68;
            __m512i wv = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w0 + 2))),
                _mm256_loadu_si256((const __m256i *)(w0 + 36)), 1);
            __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(ln->init + (p + u) * 16),
                                              _mm512_xor_si512(wv, x80),
                                              _mm512_loadu_si512(q + (p + u) * 64));
            __m512i raw = _mm512_loadu_si512(w0); /* d of both blocks: halves 0 and 17 */
            __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(hidx, raw)));
            __m512 sc = _mm512_mul_ps(dw, _mm512_loadu_ps(ln->dl + (p + u) * 16));
            if (u == 0) acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc0);
            else acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc1);
        }
    }
    float r = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    return r + dot_q_scalar(SMJ_WTYPE_Q8_0, w, q, d, 2 * p, KB);
}

static float dot_q4_row(const uint8_t *w, const int8_t *q, const float *d, const lane_row *ln,
                        int64_t KB) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const __m512i m15 = _mm512_set1_epi8(15);
    const __m512i hidx = _mm512_set_epi16(27, 27, 27, 27, 18, 18, 18, 18, 9, 9, 9, 9, 0, 0, 0, 0,
                                          27, 27, 27, 27, 18, 18, 18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
    int64_t g = 0;
    for (; g + 2 <= KB / 4; g += 2) {
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) {
            const uint8_t *w0 = w + (g + u) * 72;
            __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w0 + 2)));
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + 20)), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + 38)), 2);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + 56)), 3);
            __m512i lo = _mm512_and_si512(v, m15), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
            const int8_t *a = ln->qp + (g + u) * 128;
            __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(ln->init + (g + u) * 16), lo,
                                              _mm512_loadu_si512(a));
            dot = _mm512_dpbusd_epi32(dot, hi, _mm512_loadu_si512(a + 64));
            __m512i raw = _mm512_loadu_si512(w0); /* d of the 4 blocks: halves 0, 9, 18, 27 */
            __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(hidx, raw)));
            __m512 sc = _mm512_mul_ps(dw, _mm512_loadu_ps(ln->dl + (g + u) * 16));
            if (u == 0) acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc0);
            else acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc1);
        }
    }
    float r = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    return r + dot_q_scalar(SMJ_WTYPE_Q4_0, w, q, d, 4 * g, KB);
}
#endif

/* ---- f16 ------------------------------------------------------------------ */

static float dot_f16_row(const uint8_t *w, const float *a, int64_t K) {
    int64_t k = 0;
    float r = 0.0f;
#ifdef QG_AVX512
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (; k + 32 <= K; k += 32) {
        __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * k)));
        __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * k + 32)));
        acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a + k), acc0);
        acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(a + k + 16), acc1);
    }
    r = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#endif
    for (; k < K; k++) r += h2f(w + 2 * k) * a[k];
    return r;
}

#ifdef QG_AVX512
/* 4 rows of A x 4 rows of W, K a multiple of 16 handled here (k0 returned). */
static void tile_f16_4x4(const uint8_t *w, int64_t wstride, const float *A, int64_t K, float out[4][4]) {
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[4];
        for (int j = 0; j < 4; j++)
            wv[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j * wstride + 2 * k)));
        for (int i = 0; i < 4; i++) {
            __m512 av = _mm512_loadu_ps(A + i * K + k);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(av, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            float r = _mm512_reduce_add_ps(acc[i][j]);
            for (int64_t kk = k; kk < K; kk++) r += h2f(w + j * wstride + 2 * kk) * A[i * K + kk];
            out[i][j] = r;
        }
}
#endif

static void qgemm_f16(int nt, float *C, const float *A, const uint8_t *W, int64_t M, int64_t N,
                      int64_t K, int acc) {
    const int64_t rs = 2 * K;
    int64_t ngrp = (N + 3) / 4;
    int nth = (double)M * N * K < 1e5 ? 1 : nt;
    #pragma omp parallel for schedule(static) num_threads(nth)
    for (int64_t g = 0; g < ngrp; g++) {
        int64_t n0 = g * 4, nn = min64(4, N - n0);
        int64_t i = 0;
#ifdef QG_AVX512
        if (nn == 4)
            for (; i + 4 <= M; i += 4) {
                float t[4][4];
                tile_f16_4x4(W + n0 * rs, rs, A + i * K, K, t);
                for (int r = 0; r < 4; r++)
                    for (int j = 0; j < 4; j++) {
                        float *c = C + (i + r) * N + n0 + j;
                        *c = (acc ? *c : 0.0f) + t[r][j];
                    }
            }
#endif
        for (; i < M; i++)
            for (int64_t j = 0; j < nn; j++) {
                float *c = C + i * N + n0 + j;
                *c = (acc ? *c : 0.0f) + dot_f16_row(W + (n0 + j) * rs, A + i * K, K);
            }
    }
}

/* ---- path 3: repacked chunks of W --------------------------------------- */

#ifdef QG_AVX512
/* Repacks rows n0..n0+nn-1 (nn <= 32; missing rows are zero with scale 0)
 * of W into dst: per block, two groups of 16 rows, each 8 steps of 64 bytes
 * (lane r = values 4s..4s+3 of row r, as u8 q + off), then 32 float scales. */
static void repack_chunk(int wtype, const uint8_t *W, int64_t rs, int64_t n0, int nn, int64_t KB,
                         uint8_t *dst) {
    _Alignas(64) uint8_t tmp[QG_NW][32];
    const __m512i idx = _mm512_set_epi32(120, 112, 104, 96, 88, 80, 72, 64, 56, 48, 40, 32, 24, 16, 8, 0);
    const __m256i x80 = _mm256_set1_epi8((char)0x80);
    const __m128i m15 = _mm_set1_epi8(15);
    if (nn < QG_NW) memset(tmp, 0, sizeof tmp);
    for (int64_t b = 0; b < KB; b++) {
        uint8_t *o = dst + b * QG_PACK_BLOCK;
        float *ds = (float *)(o + QG_NW * 32);
        for (int r = 0; r < nn; r++) {
            const uint8_t *row = W + (n0 + r) * rs;
            if (wtype == SMJ_WTYPE_Q8_0) {
                const uint8_t *blk = row + b * 34;
                __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), x80);
                _mm256_store_si256((__m256i *)tmp[r], v);
                ds[r] = h2f(blk);
            } else {
                const uint8_t *blk = row + b * 18;
                __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2));
                _mm_store_si128((__m128i *)tmp[r], _mm_and_si128(v, m15));
                _mm_store_si128((__m128i *)(tmp[r] + 16), _mm_and_si128(_mm_srli_epi16(v, 4), m15));
                ds[r] = h2f(blk);
            }
        }
        for (int r = nn; r < QG_NW; r++) ds[r] = 0.0f;
        for (int g = 0; g < 2; g++)
            for (int s = 0; s < 8; s++) {
                __m512i v = _mm512_i32gather_epi32(idx, (const int *)((const uint8_t *)tmp[16 * g] + 4 * s), 4);
                _mm512_store_si512((__m512i *)(o + g * 512 + s * 64), v);
            }
    }
}

/* C rows i0..i0+R-1 (ldc N), columns of the chunk (ncols valid of 32) from
 * the packed chunk pk and the rounded rows of A (aq/ad/ac, row i at i*K,
 * i*KB, i*KB). ac holds off * s per block. */
static inline __attribute__((always_inline)) void tile_q(const int R, const uint8_t *pk, int64_t KB,
                                                         const int8_t *aq, const float *ad,
                                                         const int32_t *ac, int64_t K, float *C,
                                                         int64_t ldc, int ncols, int acc) {
    __m512 f[QG_R][2];
    for (int i = 0; i < R; i++) f[i][0] = f[i][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < KB; b++) {
        const uint8_t *blk = pk + b * QG_PACK_BLOCK;
        __m512i d[QG_R][2];
        for (int i = 0; i < R; i++) d[i][0] = d[i][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m512i w0 = _mm512_load_si512((const __m512i *)(blk + s * 64));
            __m512i w1 = _mm512_load_si512((const __m512i *)(blk + 512 + s * 64));
            for (int i = 0; i < R; i++) {
                int32_t a4;
                memcpy(&a4, aq + i * K + b * 32 + 4 * s, 4);
                __m512i av = _mm512_set1_epi32(a4);
                d[i][0] = _mm512_dpbusd_epi32(d[i][0], w0, av);
                d[i][1] = _mm512_dpbusd_epi32(d[i][1], w1, av);
            }
        }
        __m512 dw0 = _mm512_load_ps((const float *)(blk + 1024));
        __m512 dw1 = _mm512_load_ps((const float *)(blk + 1024 + 64));
        for (int i = 0; i < R; i++) {
            __m512i c = _mm512_set1_epi32(ac[i * KB + b]);
            __m512 da = _mm512_set1_ps(ad[i * KB + b]);
            f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(d[i][0], c)),
                                      _mm512_mul_ps(dw0, da), f[i][0]);
            f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(d[i][1], c)),
                                      _mm512_mul_ps(dw1, da), f[i][1]);
        }
    }
    __mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
    __mmask16 m1 = ncols >= 32 ? 0xffff : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
    for (int i = 0; i < R; i++) {
        float *c = C + i * ldc;
        if (acc) {
            f[i][0] = _mm512_add_ps(f[i][0], _mm512_maskz_loadu_ps(m0, c));
            f[i][1] = _mm512_add_ps(f[i][1], _mm512_maskz_loadu_ps(m1, c + 16));
        }
        _mm512_mask_storeu_ps(c, m0, f[i][0]);
        _mm512_mask_storeu_ps(c + 16, m1, f[i][1]);
    }
}

static void tile_q_any(int R, const uint8_t *pk, int64_t KB, const int8_t *aq, const float *ad,
                       const int32_t *ac, int64_t K, float *C, int64_t ldc, int ncols, int acc) {
    switch (R) {
    case 4: tile_q(4, pk, KB, aq, ad, ac, K, C, ldc, ncols, acc); break;
    case 3: tile_q(3, pk, KB, aq, ad, ac, K, C, ldc, ncols, acc); break;
    case 2: tile_q(2, pk, KB, aq, ad, ac, K, C, ldc, ncols, acc); break;
    default: tile_q(1, pk, KB, aq, ad, ac, K, C, ldc, ncols, acc); break;
    }
}
#endif

/* ---- q8_0 / q4_0 driver ---------------------------------------------------- */

/* One row of W against every row of A in path 2 (few rows). */
static void rows_dot(int wtype, const uint8_t *w, const int8_t *aq, const float *ad, const void *lanes,
                     int64_t M, int64_t K, int64_t KB, float *C, int64_t ldc, int acc) {
    for (int64_t i = 0; i < M; i++) {
#ifdef QG_AVX512
        const lane_row *ln = (const lane_row *)lanes + i;
        float r = wtype == SMJ_WTYPE_Q8_0 ? dot_q8_row(w, aq + i * K, ad + i * KB, ln, KB)
                                          : dot_q4_row(w, aq + i * K, ad + i * KB, ln, KB);
#else
        (void)lanes;
        float r = dot_q_scalar(wtype, w, aq + i * K, ad + i * KB, 0, KB);
#endif
        float *c = C + i * ldc;
        *c = (acc ? *c : 0.0f) + r;
    }
}

static void qgemm_q(int nt, float *C, const float *A, const uint8_t *W, int wtype, int64_t M,
                    int64_t N, int64_t K, int acc) {
    const int64_t KB = K / 32, rs = KB * (wtype == SMJ_WTYPE_Q8_0 ? 34 : 18);
    int pack = 0;
#ifdef QG_AVX512
    pack = M >= QG_MIN_PACK_M;
#endif
    /* one allocation: q (M K), d, s, off*s (M KB each); for path 2 the lane
     * companions (M x (KB/2 or KB/4) x 16 floats + ints, q4's permuted q) */
    const int64_t nl = pack ? 0 : (wtype == SMJ_WTYPE_Q8_0 ? KB / 2 : KB / 4) * 16;
    const int64_t qpn = !pack && wtype == SMJ_WTYPE_Q4_0 ? K : 0;
    size_t bytes = (size_t)(M * K + 12 * M * KB + 8 * M * nl + M * qpn) + 64 * 8;
    uint8_t *mem = smj_alloc(bytes);
    if (!mem) return;
    uint8_t *p = mem;
#define QG_TAKE(T, n) ((T *)(p += (((size_t)(n) * sizeof(T) + 63) & ~(size_t)63)) - \
                       (((size_t)(n) * sizeof(T) + 63) & ~(size_t)63) / sizeof(T))
    int8_t *aq = QG_TAKE(int8_t, M * K);
    float *ad = QG_TAKE(float, M * KB);
    int32_t *as = QG_TAKE(int32_t, M * KB);
    int32_t *ac = QG_TAKE(int32_t, M * KB);
    float *dl = QG_TAKE(float, M * nl);
    int32_t *init = QG_TAKE(int32_t, M * nl);
    int8_t *qp = QG_TAKE(int8_t, M * qpn);
#undef QG_TAKE
#ifdef QG_AVX512
    lane_row lanes[QG_MIN_PACK_M];
#else
    char lanes[1];
#endif
    const int nth = (double)M * N * K < 2e5 ? 1 : nt;
    const int off = wtype == SMJ_WTYPE_Q8_0 ? 128 : 8;
    #pragma omp parallel num_threads(nth)
    {
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < M; i++) {
            smj_qgemm_quantize_row(A + i * K, aq + i * K, ad + i * KB, as + i * KB, K);
            for (int64_t b = 0; b < KB; b++) ac[i * KB + b] = off * as[i * KB + b];
#ifdef QG_AVX512
            if (!pack) {
                lanes[i] = (lane_row){qp + i * qpn, dl + i * nl, init + i * nl};
                build_lanes(wtype, aq + i * K, ad + i * KB, KB, &lanes[i]);
            }
#endif
        }
        if (!pack) {
            #pragma omp for schedule(static)
            for (int64_t n = 0; n < N; n++)
                rows_dot(wtype, W + n * rs, aq, ad, lanes, M, K, KB, C + n, N, acc);
        }
#ifdef QG_AVX512
        else {
            uint8_t *pk = smj_alloc((size_t)(KB * QG_PACK_BLOCK));
            const int64_t nchunks = (N + QG_NW - 1) / QG_NW;
            #pragma omp for schedule(static)
            for (int64_t ch = 0; ch < nchunks; ch++) {
                const int64_t n0 = ch * QG_NW;
                const int nn = (int)min64(QG_NW, N - n0);
                if (!pk) { /* out of memory for the repack: the slow path */
                    for (int64_t n = n0; n < n0 + nn; n++)
                        for (int64_t i = 0; i < M; i++) {
                            float *c = C + i * N + n;
                            *c = (acc ? *c : 0.0f) + dot_q_scalar(wtype, W + n * rs, aq + i * K, ad + i * KB, 0, KB);
                        }
                    continue;
                }
                repack_chunk(wtype, W, rs, n0, nn, KB, pk);
                for (int64_t i = 0; i < M; i += QG_R) {
                    int R = (int)min64(QG_R, M - i);
                    tile_q_any(R, pk, KB, aq + i * K, ad + i * KB, ac + i * KB, K, C + i * N + n0, N,
                               nn, acc);
                }
            }
            smj_afree(pk);
        }
#endif
    }
    (void)dl; (void)init; (void)qp;
    smj_afree(mem);
}

void smj_qgemm(int nt, float *C, const float *A, const void *W, int wtype, int64_t M, int64_t N,
               int64_t K, int acc) {
    if (M <= 0 || N <= 0) return;
    if (nt < 1) nt = 1;
    if (K <= 0) {
        if (!acc) memset(C, 0, sizeof(float) * (size_t)(M * N));
        return;
    }
    switch (wtype) {
    case SMJ_WTYPE_F16: qgemm_f16(nt, C, A, W, M, N, K, acc); break;
    case SMJ_WTYPE_Q8_0:
    case SMJ_WTYPE_Q4_0:
        if (K % 32 == 0) qgemm_q(nt, C, A, W, wtype, M, N, K, acc);
        break;
    default: break;
    }
}

void smj_cpu_qmatmul(const smj_exec *ex, float *C, const float *A, const void *W, int wtype,
                     int64_t M, int64_t N, int64_t K, int acc) {
    smj_qgemm(ex->nt, C, A, W, wtype, M, N, K, acc);
}
