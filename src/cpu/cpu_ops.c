/* cpu_ops.c — the "cpu" backend: the op table with OpenMP threads and loops
 * written so gcc vectorizes them (-O3 -march=native); matmul is smj_sgemm
 * (gemm.c). Every op here is checked against ref_impl.h by tests/test_ops.c.
 *
 * Parallel split: rows (N) for row-wise ops, (batch, kv-head) for attention so
 * that GQA's shared dk/dv need no atomics, chunks for element-wise ops.
 * Reductions that feed decisions (sumsq) use double and a fixed split, so
 * results do not depend on scheduling: every op is deterministic for a given
 * thread count.
 */
#include <math.h>
#include <string.h>
#include "../ops/ops.h"
#include "attention.h"
#include "gemm.h"
#include "qgemm.h"
#include "vecmath.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define OMP_FOR _Pragma("omp parallel for schedule(static) num_threads(ex->nt)")

static void cpu_matmul(const smj_exec *ex, float *C, const float *A, const float *B, int64_t M, int64_t N,
                       int64_t K, int tA, int tB, int acc) {
    smj_sgemm(ex->nt, C, A, B, M, N, K, tA, tB, acc);
}

static void cpu_embedding_fwd(const smj_exec *ex, float *out, const int32_t *ids, const float *wte, int64_t N, int C) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) memcpy(out + n * C, wte + (int64_t)ids[n] * C, sizeof(float) * C);
}

/* Threads own disjoint column ranges, so repeated ids need no atomics and the
 * sum order per element is the row order (deterministic). */
static void cpu_embedding_bwd(const smj_exec *ex, float *dwte, const int32_t *ids, const float *dout, int64_t N, int C) {
    #pragma omp parallel num_threads(ex->nt)
    {
        int nth = 1, me = 0;
#ifdef _OPENMP
        nth = omp_get_num_threads(); me = omp_get_thread_num();
#endif
        int c0 = (int)((int64_t)C * me / nth), c1 = (int)((int64_t)C * (me + 1) / nth);
        for (int64_t n = 0; n < N; n++) {
            float *d = dwte + (int64_t)ids[n] * C;
            const float *s = dout + n * C;
            for (int c = c0; c < c1; c++) d[c] += s[c];
        }
    }
}

static void cpu_rmsnorm_fwd(const smj_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                            int C, float eps) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float ss = 0;
        #pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        rstd[n] = r;
        float *o = out + n * C;
        for (int c = 0; c < C; c++) o[c] = (xr[c] * r) * w[c];
    }
}

/* A row at a time: the sum, its squares, then the norm (the row stays in cache). */
static void cpu_add_rmsnorm_fwd(const smj_exec *ex, float *sum, float *out, float *rstd, const float *a,
                                const float *b, const float *w, int64_t N, int C, float eps) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) {
        const float *ar = a + n * C, *br = b + n * C;
        float *s = sum + n * C, ss = 0;
        #pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) {
            float v = ar[c] + br[c];
            s[c] = v;
            ss += v * v;
        }
        float r = 1.0f / sqrtf(ss / C + eps);
        rstd[n] = r;
        float *o = out + n * C;
        for (int c = 0; c < C; c++) o[c] = (s[c] * r) * w[c];
    }
}

/* dw is reduced per thread into private rows, then summed in thread order. */
static void cpu_rmsnorm_bwd(const smj_exec *ex, float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int64_t N, int C, int acc) {
    float *part = calloc((size_t)ex->nt * C, sizeof(float));
    if (!part) return;
    #pragma omp parallel num_threads(ex->nt)
    {
        int me = 0, nth = 1;
#ifdef _OPENMP
        me = omp_get_thread_num(); nth = omp_get_num_threads();
#endif
        float *pw = part + (int64_t)me * C;
        int64_t n0 = N * me / nth, n1 = N * (me + 1) / nth;
        for (int64_t n = n0; n < n1; n++) {
            const float *xr = x + n * C, *dy = dout + n * C;
            float r = rstd[n], dot = 0;
            #pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++) dot += w[c] * dy[c] * xr[c];
            dot /= C;
            float r3 = r * r * r * dot;
            float *d = dx + n * C;
            if (acc) {
                for (int c = 0; c < C; c++) d[c] += r * w[c] * dy[c] - r3 * xr[c];
            } else {
                for (int c = 0; c < C; c++) d[c] = r * w[c] * dy[c] - r3 * xr[c];
            }
            for (int c = 0; c < C; c++) pw[c] += dy[c] * xr[c] * r;
        }
    }
    for (int i = 0; i < ex->nt; i++)
        for (int c = 0; c < C; c++) dw[c] += part[(int64_t)i * C + c];
    free(part);
}

static void rope_apply(const smj_exec *ex, float *x, const float *cos, const float *sin, int B, int T, int NH,
                       int HS, int pos0, int64_t rs, float sgn) {
    int h2 = HS / 2;
    int64_t rows = (int64_t)B * T;
    if (!rs) rs = (int64_t)NH * HS;
    OMP_FOR
    for (int64_t r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *cr = cos + (int64_t)(pos0 + t) * h2, *sr = sin + (int64_t)(pos0 + t) * h2;
        for (int h = 0; h < NH; h++) {
            float *v = x + r * rs + (int64_t)h * HS;
            for (int i = 0; i < h2; i++) {
                float a = v[i], c = v[i + h2], si = sgn * sr[i];
                v[i] = a * cr[i] - c * si;
                v[i + h2] = c * cr[i] + a * si;
            }
        }
    }
}
static void cpu_rope_fwd(const smj_exec *ex, float *x, const float *cos, const float *sin, int B, int T, int NH,
                         int HS, int pos0, int64_t rs) {
    rope_apply(ex, x, cos, sin, B, T, NH, HS, pos0, rs, 1.0f);
}
static void cpu_rope_bwd(const smj_exec *ex, float *dx, const float *cos, const float *sin, int B, int T, int NH,
                         int HS, int pos0, int64_t rs) {
    rope_apply(ex, dx, cos, sin, B, T, NH, HS, pos0, rs, -1.0f);
}

static void cpu_attention_fwd(const smj_exec *ex, float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs,
                              int64_t kv_rs, int64_t kv_bstride, float scale) {
    smj_cpu_attention_fwd(ex->nt, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, q_rs, kv_rs, kv_bstride, scale);
}

static void cpu_attention_bwd(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout,
                              const float *out, const float *lse, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                              int64_t dq_rs, int64_t dkv_rs, float scale) {
    smj_cpu_attention_bwd(ex->nt, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, q_rs, kv_rs, dq_rs, dkv_rs,
                          scale);
}

/* Element-wise ops run over 64 fixed chunks so the vector loop sees long runs. */
#define CHUNKS 64
#define CHUNK_LOOP(n, ...) \
    _Pragma("omp parallel for schedule(static) num_threads(ex->nt)") \
    for (int ch = 0; ch < CHUNKS; ch++) { int64_t i0 = (n) * ch / CHUNKS, i1 = (n) * (ch + 1) / CHUNKS; __VA_ARGS__ }

/* SwiGLU over [i0, i1) of dense out / dout and gate, up (the same offsets). */
static void swiglu_fwd_run(float *out, const float *gate, const float *up, int64_t i0, int64_t i1) {
    int64_t i = i0;
#ifdef __AVX512F__
    for (; i + 16 <= i1; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(g, smj_sigmoid512(g)), _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < i1; i++) { float g = gate[i]; out[i] = g / (1.0f + expf(-g)) * up[i]; }
}
static void swiglu_bwd_run(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                           int64_t i0, int64_t i1) {
    int64_t i = i0;
#ifdef __AVX512F__
    __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= i1; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i), s = smj_sigmoid512(g), d = _mm512_loadu_ps(dout + i);
        __m512 t = _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one);             /* 1 + g (1 - s) */
        _mm512_storeu_ps(dgate + i, _mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(up + i)), _mm512_mul_ps(s, t)));
        _mm512_storeu_ps(dup + i, _mm512_mul_ps(d, _mm512_mul_ps(g, s)));
    }
#endif
    for (; i < i1; i++) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}
/* Dense operands: one run over N*H in chunks; rows ld apart: a run a row. */
static void cpu_swiglu_fwd(const smj_exec *ex, float *out, const float *gate, const float *up, int64_t N, int H,
                           int64_t ld) {
    if (!ld || ld == H) {
        CHUNK_LOOP(N * H, { swiglu_fwd_run(out, gate, up, i0, i1); })
        return;
    }
    OMP_FOR
    for (int64_t r = 0; r < N; r++) swiglu_fwd_run(out + r * H, gate + r * ld, up + r * ld, 0, H);
}
static void cpu_swiglu_bwd(const smj_exec *ex, float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, int64_t N, int H, int64_t ld) {
    if (!ld || ld == H) {
        CHUNK_LOOP(N * H, { swiglu_bwd_run(dgate, dup, dout, gate, up, i0, i1); })
        return;
    }
    OMP_FOR
    for (int64_t r = 0; r < N; r++)
        swiglu_bwd_run(dgate + r * ld, dup + r * ld, dout + r * H, gate + r * ld, up + r * ld, 0, H);
}

static void cpu_add(const smj_exec *ex, float *out, const float *a, const float *b, int64_t n) {
    OMP_FOR
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_xent_fwd(const smj_exec *ex, float *losses, float *lse, const float *logits, const int32_t *targets,
                         int64_t N, int V, int ld) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) {
        const float *l = logits + n * ld;
        float mx = smj_max(l, V), s = 0;
        /* exp into the per-row tail of nothing: compute the sum without storing */
        {
            float buf[256];
            for (int j0 = 0; j0 < V; j0 += 256) {
                int len = V - j0 < 256 ? V - j0 : 256;
                s += smj_exp_sub_sum(buf, l + j0, mx, len);
            }
        }
        float z = mx + logf(s);
        lse[n] = z;
        losses[n] = targets[n] < 0 ? 0.0f : z - l[targets[n]];
    }
}

static void cpu_xent_bwd(const smj_exec *ex, float *dlogits, const float *logits, const float *lse,
                         const int32_t *targets, float dloss, int64_t N, int V, int ld) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * ld;
        const float *l = logits + n * ld;
        int tg = targets[n];
        memset(d + V, 0, sizeof(float) * (size_t)(ld - V));
        if (tg < 0) { memset(d, 0, sizeof(float) * V); continue; }
        float z = lse[n];
        float ltg = l[tg]; /* read before d (which may alias l) is written */
        smj_exp_sub_scale(d, l, z, dloss, V);
        d[tg] = dloss * expf(ltg - z) - dloss;
    }
}

static void cpu_adamw(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, int64_t n,
                      float lr, float b1, float b2, float eps, float wd, int64_t t) {
    float bc1 = (float)(1.0 - pow(b1, (double)t)), bc2 = (float)(1.0 - pow(b2, (double)t));
    float sbc2 = sqrtf(bc2);
    OMP_FOR
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gs;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * ((mi / bc1) / (sqrtf(vi) / sbc2 + eps) + wd * p[i]);
    }
}

/* Fixed 64 chunks summed in order: the result does not depend on nt. */
static double cpu_sumsq(const smj_exec *ex, const float *x, int64_t n) {
    enum { CH = 64 };
    double part[CH];
    #pragma omp parallel for schedule(static) num_threads(ex->nt)
    for (int c = 0; c < CH; c++) {
        int64_t i0 = n * c / CH, i1 = n * (c + 1) / CH;
        double s = 0;
        for (int64_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < CH; c++) s += part[c];
    return s;
}

static void cpu_scale(const smj_exec *ex, float *x, float s, int64_t n) {
    OMP_FOR
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* LayerNorm of one row, two passes (mean, then the variance of the
 * deviations: no cancellation when |mean| >> std). */
static void ln_row(float *o, float *mean, float *rstd, const float *xr, const float *w, const float *b, int C,
                   float eps) {
    float s = 0, v = 0;
    #pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += xr[c];
    float m = s / C;
    #pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    float r = 1.0f / sqrtf(v / C + eps);
    *mean = m;
    *rstd = r;
    if (b)
        for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c] + b[c];
    else
        for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c];
}
static void cpu_layernorm_fwd(const smj_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, int64_t N, int C, float eps) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) ln_row(out + n * C, mean + n, rstd + n, x + n * C, w, b, C, eps);
}
/* A row at a time: the sum, then its norm (the row stays in cache). */
static void cpu_add_layernorm_fwd(const smj_exec *ex, float *sum, float *out, float *mean, float *rstd, const float *a,
                                  const float *b, const float *w, const float *bias, int64_t N, int C, float eps) {
    OMP_FOR
    for (int64_t n = 0; n < N; n++) {
        const float *ar = a + n * C, *br = b + n * C;
        float *s = sum + n * C;
        for (int c = 0; c < C; c++) s[c] = ar[c] + br[c];
        ln_row(out + n * C, mean + n, rstd + n, s, w, bias, C, eps);
    }
}

/* dw and db are reduced per thread into private rows, then summed in thread
 * order (as rmsnorm_bwd): deterministic for a given thread count. */
static void cpu_layernorm_bwd(const smj_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                              const float *w, const float *mean, const float *rstd, int64_t N, int C, int acc) {
    float *part = calloc((size_t)ex->nt * 2 * C, sizeof(float));
    if (!part) return;
    #pragma omp parallel num_threads(ex->nt)
    {
        int me = 0, nth = 1;
#ifdef _OPENMP
        me = omp_get_thread_num(); nth = omp_get_num_threads();
#endif
        float *pw = part + (int64_t)me * 2 * C, *pb = pw + C;
        int64_t n0 = N * me / nth, n1 = N * (me + 1) / nth;
        for (int64_t n = n0; n < n1; n++) {
            const float *xr = x + n * C, *dy = dout + n * C;
            float m = mean[n], r = rstd[n], sg = 0, sgx = 0;
            #pragma omp simd reduction(+ : sg, sgx)
            for (int c = 0; c < C; c++) {
                float g = w[c] * dy[c];
                sg += g;
                sgx += g * ((xr[c] - m) * r);
            }
            sg /= C;
            sgx /= C;
            float *d = dx + n * C;
            for (int c = 0; c < C; c++) {
                float xh = (xr[c] - m) * r;
                d[c] = (acc ? d[c] : 0.0f) + r * (w[c] * dy[c] - sg - xh * sgx);
                pw[c] += dy[c] * xh;
                pb[c] += dy[c];
            }
        }
    }
    for (int i = 0; i < ex->nt; i++) {
        const float *pw = part + (int64_t)i * 2 * C;
        for (int c = 0; c < C; c++) dw[c] += pw[c];
        if (db)
            for (int c = 0; c < C; c++) db[c] += pw[C + c];
    }
    free(part);
}

/* GELU, tanh form. 0.5 (1 + tanh u) = 1 / (1 + e), e = exp(-2u), so
 * gelu(x) = x s with s = 1 / (1 + exp(-2u)): no cancellation where
 * 1 + tanh u is tiny (x < 0), and tanh needs no formula of its own (the
 * AVX-512 exp of vecmath.h, relative error < 2e-7). gelu'(x) =
 * s + 2 x s (1 - s) u' with 1 - s = e s (exact, no cancellation either) and
 * u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2). Large |x|: x is clamped to
 * [-20, 20] inside u and u' (so x^3 and x^2 never overflow; at +20 s is 1 in
 * float already) and s is set to 0 where -2u > 88 (x < -10.05: the true s
 * is below 6e-39 there), so e never overflows. NaN propagates: the clamps
 * return x when it is NaN and the comparison is false for NaN. */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

static inline float gelu_s(float x, float *xc_out, float *es) {
    float xc = x > 20.0f ? 20.0f : x < -20.0f ? -20.0f : x;
    float v = -2.0f * GELU_K * xc * (1.0f + GELU_C * xc * xc);
    int big = v > 88.0f;
    float e = expf(big ? 88.0f : v), s = big ? 0.0f : 1.0f / (1.0f + e);
    *xc_out = xc;
    *es = e * s;
    return s;
}
#ifdef __AVX512F__
static inline __m512 gelu_s512(__m512 x, __m512 *xc_out, __m512 *es) {
    /* min/max return their second operand (x) when either is NaN */
    __m512 xc = _mm512_max_ps(_mm512_set1_ps(-20.0f), _mm512_min_ps(_mm512_set1_ps(20.0f), x));
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f * GELU_K), xc),
                             _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(GELU_C), xc), xc, _mm512_set1_ps(1.0f)));
    __mmask16 big = _mm512_cmp_ps_mask(v, _mm512_set1_ps(88.0f), _CMP_GT_OQ);
    __m512 e = smj_exp512(v);
    __m512 s = _mm512_maskz_div_ps((__mmask16)~big, _mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    *xc_out = xc;
    *es = _mm512_mul_ps(e, s);
    return s;
}
#endif

static void cpu_gelu_fwd(const smj_exec *ex, float *out, const float *x, int64_t n) {
    CHUNK_LOOP(n, {
        int64_t i = i0;
#ifdef __AVX512F__
        for (; i + 16 <= i1; i += 16) {
            __m512 xv = _mm512_loadu_ps(x + i), xc, es;
            _mm512_storeu_ps(out + i, _mm512_mul_ps(xv, gelu_s512(xv, &xc, &es)));
        }
#endif
        for (; i < i1; i++) {
            float xc, es;
            out[i] = x[i] * gelu_s(x[i], &xc, &es);
        }
    })
}
static void cpu_gelu_bwd(const smj_exec *ex, float *dx, const float *dout, const float *x, int64_t n) {
    CHUNK_LOOP(n, {
        int64_t i = i0;
#ifdef __AVX512F__
        for (; i + 16 <= i1; i += 16) {
            __m512 xc, es, s = gelu_s512(_mm512_loadu_ps(x + i), &xc, &es);
            __m512 up = _mm512_mul_ps(_mm512_set1_ps(2.0f * GELU_K),
                                      _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(3.0f * GELU_C), xc), xc,
                                                      _mm512_set1_ps(1.0f))); /* 2 u' */
            __m512 d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(xc, es), s), up, s);
            _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(dout + i), d));
        }
#endif
        for (; i < i1; i++) {
            float xc, es, s = gelu_s(x[i], &xc, &es);
            float up = 2.0f * GELU_K * (1.0f + 3.0f * GELU_C * xc * xc);
            dx[i] = dout[i] * (s + xc * es * s * up);
        }
    })
}

/* bf16 by integer rounding (add 0x7FFF + the last kept bit, keep the top
 * half: nearest, ties to even), branch-free so it vectorizes; NaN gets the
 * quiet bit. Not VCVTNEPS2BF16, which flushes subnormals to zero. */
static void cpu_bf16_pack(const smj_exec *ex, uint16_t *out, const float *x, int64_t n) {
    OMP_FOR
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, 4);
        uint32_t r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
        out[i] = (uint16_t)((b & 0x7FFFFFFFu) > 0x7F800000u ? (b >> 16) | 0x40u : r);
    }
}

static void cpu_bf16_unpack(const smj_exec *ex, float *out, const uint16_t *x, int64_t n) {
    OMP_FOR
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)x[i] << 16;
        memcpy(out + i, &b, 4);
    }
}

static void *host_alloc(size_t n) { return smj_alloc(n); }
static void host_free(void *p) { smj_afree(p); }
static void host_copy(void *d, const void *s, size_t n) { if (n) memcpy(d, s, n); }
static void host_zero(void *p, size_t n) { if (n) memset(p, 0, n); }

const smj_backend smj_backend_cpu = {
    .name = "cpu",
    .alloc = host_alloc, .free = host_free, .upload = host_copy, .download = host_copy, .zero = host_zero,
#define SMJ_OP_SET(n) .n = cpu_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
    .qmatmul = smj_cpu_qmatmul,
};
