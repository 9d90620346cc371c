/* vecmath.h — vectorized exp for the CPU backend's softmax, cross-entropy and
 * SiLU. gcc does not vectorize expf without -ffast-math (which we avoid: it
 * breaks NaN detection), so the AVX-512 path computes exp itself:
 * x = n ln2 + r with |r| <= ln2/2, a degree-6 Taylor polynomial for e^r
 * (relative error < 2e-7), scaled by 2^n with scalef. NaN propagates
 * (operand order of min/max), large negative inputs flush toward 0.
 * Without AVX-512 the loops fall back to expf.
 */
#ifndef SMJ_CPU_VECMATH_H
#define SMJ_CPU_VECMATH_H
#include <math.h>
#include <stdint.h>
#ifdef __AVX512F__
#include <immintrin.h>

static inline __m512 smj_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.37626f), x);  /* NaN in x is returned as is */
    x = _mm512_max_ps(_mm512_set1_ps(-103.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

/* dst[i] = exp(src[i] - sub); returns the sum (dst may alias src). */
static inline float smj_exp_sub_sum(float *dst, const float *src, float sub, int64_t n) {
    int64_t i = 0;
    float s = 0;
#ifdef __AVX512F__
    __m512 acc = _mm512_setzero_ps(), m = _mm512_set1_ps(sub);
    for (; i + 16 <= n; i += 16) {
        __m512 e = smj_exp512(_mm512_sub_ps(_mm512_loadu_ps(src + i), m));
        _mm512_storeu_ps(dst + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = smj_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, src + i), m));
        _mm512_mask_storeu_ps(dst + i, k, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
        i = n;
    }
    s = _mm512_reduce_add_ps(acc);
#endif
    for (; i < n; i++) { dst[i] = expf(src[i] - sub); s += dst[i]; }
    return s;
}

/* dst[i] = scale * exp(src[i] - sub). */
static inline void smj_exp_sub_scale(float *dst, const float *src, float sub, float scale, int64_t n) {
    int64_t i = 0;
#ifdef __AVX512F__
    __m512 m = _mm512_set1_ps(sub), sc = _mm512_set1_ps(scale);
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(sc, smj_exp512(_mm512_sub_ps(_mm512_loadu_ps(src + i), m))));
#endif
    for (; i < n; i++) dst[i] = scale * expf(src[i] - sub);
}

/* max of x[0..n), NaN if any element is NaN. */
static inline float smj_max(const float *x, int64_t n) {
    int64_t i = 0;
    float mx = -INFINITY;
    int nan = 0;
#ifdef __AVX512F__
    __m512 acc = _mm512_set1_ps(-INFINITY);
    __mmask16 bad = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        acc = _mm512_max_ps(acc, v);
    }
    mx = _mm512_reduce_max_ps(acc);
    nan = bad != 0;
#endif
    for (; i < n; i++) { if (x[i] != x[i]) nan = 1; mx = x[i] > mx ? x[i] : mx; }
    return nan ? NAN : mx;
}

/* SiLU pieces: s = sigmoid(g) for a vector of 16 (AVX-512) */
#ifdef __AVX512F__
static inline __m512 smj_sigmoid512(__m512 g) {
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, smj_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}
#endif
#endif
