/* ref_impl.h — the scalar reference of every op, written once over an
 * element type. Included by ref.c with REAL=float (the "ref" backend, the
 * oracle the optimized backends are checked against) and by ref64.c with
 * REAL=double (used by the finite-difference gradient checker).
 *
 * Deliberately plain: no SIMD, no threads, sums in double. Never optimize
 * this file; its only job is to be obviously right.
 */
#ifndef REAL
#error "define REAL and RP(name) before including ref_impl.h"
#endif
#include <math.h>
#include <string.h>

static void RP(matmul)(const smj_exec *ex, REAL *C, const REAL *A, const REAL *B, int64_t M, int64_t N,
                       int64_t K, int tA, int tB, int acc) {
    (void)ex;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = tA ? A[k * M + i] : A[i * K + k];
                double b = tB ? B[j * K + k] : B[k * N + j];
                s += a * b;
            }
            C[i * N + j] = (REAL)((acc ? (double)C[i * N + j] : 0.0) + s);
        }
}

static void RP(embedding_fwd)(const smj_exec *ex, REAL *out, const int32_t *ids, const REAL *wte, int64_t N, int C) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) memcpy(out + n * C, wte + (int64_t)ids[n] * C, sizeof(REAL) * C);
}

static void RP(embedding_bwd)(const smj_exec *ex, REAL *dwte, const int32_t *ids, const REAL *dout, int64_t N, int C) {
    (void)ex;
    for (int64_t n = 0; n < N; n++)
        for (int c = 0; c < C; c++) dwte[(int64_t)ids[n] * C + c] += dout[n * C + c];
}

static void RP(rmsnorm_fwd)(const smj_exec *ex, REAL *out, REAL *rstd, const REAL *x, const REAL *w, int64_t N,
                            int C, float eps) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        const REAL *xr = x + n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        REAL r = (REAL)(1.0 / sqrt(ss / C + eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) out[n * C + c] = (REAL)(xr[c] * r) * w[c];
    }
}

static void RP(add_rmsnorm_fwd)(const smj_exec *ex, REAL *sum, REAL *out, REAL *rstd, const REAL *a, const REAL *b,
                                const REAL *w, int64_t N, int C, float eps) {
    for (int64_t i = 0; i < N * C; i++) sum[i] = a[i] + b[i];
    RP(rmsnorm_fwd)(ex, out, rstd, sum, w, N, C, eps);
}

/* y_c = w_c x_c r, r = (mean x^2 + eps)^-1/2:
 * dx_c = r (w_c dy_c) - r^3 x_c mean_j(w_j dy_j x_j);  dw_c += dy_c x_c r. */
static void RP(rmsnorm_bwd)(const smj_exec *ex, REAL *dx, REAL *dw, const REAL *dout, const REAL *x,
                            const REAL *w, const REAL *rstd, int64_t N, int C, int acc) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        const REAL *xr = x + n * C, *dy = dout + n * C;
        double r = rstd[n], dot = 0;
        for (int c = 0; c < C; c++) dot += (double)w[c] * dy[c] * xr[c];
        dot /= C;
        for (int c = 0; c < C; c++) {
            dx[n * C + c] = (REAL)((acc ? (double)dx[n * C + c] : 0.0) + (r * w[c] * dy[c] - r * r * r * xr[c] * dot));
            dw[c] += (REAL)(dy[c] * xr[c] * r);
        }
    }
}

static void RP(rope_apply)(REAL *x, const REAL *cos, const REAL *sin, int B, int T, int NH, int HS,
                           int pos0, int64_t rs, double sgn) {
    int h2 = HS / 2;
    if (!rs) rs = (int64_t)NH * HS;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                REAL *v = x + ((int64_t)b * T + t) * rs + (int64_t)h * HS;
                const REAL *cr = cos + (int64_t)(pos0 + t) * h2, *sr = sin + (int64_t)(pos0 + t) * h2;
                for (int i = 0; i < h2; i++) {
                    double a = v[i], c = v[i + h2], co = cr[i], si = sgn * sr[i];
                    v[i] = (REAL)(a * co - c * si);
                    v[i + h2] = (REAL)(c * co + a * si);
                }
            }
}
static void RP(rope_fwd)(const smj_exec *ex, REAL *x, const REAL *cos, const REAL *sin, int B, int T, int NH,
                         int HS, int pos0, int64_t rs) {
    (void)ex;
    RP(rope_apply)(x, cos, sin, B, T, NH, HS, pos0, rs, 1.0);
}
static void RP(rope_bwd)(const smj_exec *ex, REAL *dx, const REAL *cos, const REAL *sin, int B, int T, int NH,
                         int HS, int pos0, int64_t rs) {
    (void)ex;
    RP(rope_apply)(dx, cos, sin, B, T, NH, HS, pos0, rs, -1.0);
}

static void RP(attention_fwd)(const smj_exec *ex, REAL *out, REAL *lse, const REAL *q, const REAL *k,
                              const REAL *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs,
                              int64_t kv_rs, int64_t kv_bstride, float scale) {
    (void)ex;
    int grp = NH / NKV;
    int64_t qrs = q_rs ? q_rs : (int64_t)NH * HS, krs = kv_rs ? kv_rs : (int64_t)NKV * HS;
    double *s = malloc(sizeof(double) * (size_t)Tk);
    if (!s) return;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < Tq; t++) {
                const REAL *qr = q + ((int64_t)b * Tq + t) * qrs + (int64_t)h * HS;
                const REAL *kb = k + b * kv_bstride + (int64_t)(h / grp) * HS;
                const REAL *vb = v + b * kv_bstride + (int64_t)(h / grp) * HS;
                int last = Tk - Tq + t;
                double mx = -INFINITY;
                for (int j = 0; j <= last; j++) {
                    double d = 0;
                    for (int i = 0; i < HS; i++) d += (double)qr[i] * kb[(int64_t)j * krs + i];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0;
                for (int j = 0; j <= last; j++) sum += exp(s[j] - mx);
                REAL *o = out + (((int64_t)b * Tq + t) * NH + h) * HS;
                for (int i = 0; i < HS; i++) {
                    double acc = 0;
                    for (int j = 0; j <= last; j++) acc += exp(s[j] - mx) / sum * vb[(int64_t)j * krs + i];
                    o[i] = (REAL)acc;
                }
                lse[((int64_t)b * NH + h) * Tq + t] = (REAL)(mx + log(sum));
            }
    free(s);
}

/* p_j = exp(s_j - lse); dp_j = dout.v_j; ds_j = p_j (dp_j - dout.out);
 * dq = scale sum_j ds_j k_j; dk_j += scale ds_j q; dv_j += p_j dout. */
static void RP(attention_bwd)(const smj_exec *ex, REAL *dq, REAL *dk, REAL *dv, const REAL *dout,
                              const REAL *out, const REAL *lse, const REAL *q, const REAL *k,
                              const REAL *v, int B, int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                              int64_t dq_rs, int64_t dkv_rs, float scale) {
    (void)ex;
    int grp = NH / NKV;
    /* dk, dv summed densely ([B, T, NKV, HS], rs), written at dkv_rs */
    int64_t kvn = (int64_t)B * T * NKV * HS, rs = (int64_t)NKV * HS, ors = (int64_t)NH * HS;
    int64_t qrs = q_rs ? q_rs : ors, krs = kv_rs ? kv_rs : rs, dqrs = dq_rs ? dq_rs : qrs, dkrs = dkv_rs ? dkv_rs : krs;
    double *dkd = calloc((size_t)kvn, sizeof(double)), *dvd = calloc((size_t)kvn, sizeof(double));
    if (!dkd || !dvd) { free(dkd); free(dvd); return; }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                int64_t qo = ((int64_t)b * T + t) * qrs + (int64_t)h * HS, oo = ((int64_t)b * T + t) * ors + (int64_t)h * HS;
                int64_t ko = (int64_t)b * T * krs + (int64_t)(h / grp) * HS, kd = (int64_t)b * T * rs + (int64_t)(h / grp) * HS;
                double D = 0, L = lse[((int64_t)b * NH + h) * T + t];
                for (int i = 0; i < HS; i++) D += (double)dout[oo + i] * out[oo + i];
                double *dqa = calloc((size_t)HS, sizeof(double));
                if (!dqa) continue;
                for (int j = 0; j <= t; j++) {
                    double sc = 0, dp = 0;
                    for (int i = 0; i < HS; i++) {
                        sc += (double)q[qo + i] * k[ko + j * krs + i];
                        dp += (double)dout[oo + i] * v[ko + j * krs + i];
                    }
                    double p = exp(sc * scale - L), ds = p * (dp - D);
                    for (int i = 0; i < HS; i++) {
                        dqa[i] += scale * ds * k[ko + j * krs + i];
                        dkd[kd + j * rs + i] += scale * ds * q[qo + i];
                        dvd[kd + j * rs + i] += p * dout[oo + i];
                    }
                }
                for (int i = 0; i < HS; i++) dq[((int64_t)b * T + t) * dqrs + (int64_t)h * HS + i] = (REAL)dqa[i];
                free(dqa);
            }
    for (int64_t r = 0; r < (int64_t)B * T; r++)
        for (int64_t i = 0; i < rs; i++) {
            dk[r * dkrs + i] = (REAL)dkd[r * rs + i];
            dv[r * dkrs + i] = (REAL)dvd[r * rs + i];
        }
    free(dkd);
    free(dvd);
}

static void RP(swiglu_fwd)(const smj_exec *ex, REAL *out, const REAL *gate, const REAL *up, int64_t N, int H,
                           int64_t ld) {
    (void)ex;
    if (!ld) ld = H;
    for (int64_t r = 0; r < N; r++)
        for (int j = 0; j < H; j++) {
            double g = gate[r * ld + j];
            out[r * H + j] = (REAL)(g / (1.0 + exp(-g)) * up[r * ld + j]);
        }
}
/* silu(g) = g s(g); silu'(g) = s(g) (1 + g (1 - s(g))). */
static void RP(swiglu_bwd)(const smj_exec *ex, REAL *dgate, REAL *dup, const REAL *dout, const REAL *gate,
                           const REAL *up, int64_t N, int H, int64_t ld) {
    (void)ex;
    if (!ld) ld = H;
    for (int64_t r = 0; r < N; r++)
        for (int j = 0; j < H; j++) {
            int64_t i = r * ld + j;
            double g = gate[i], s = 1.0 / (1.0 + exp(-g)), d = dout[r * H + j];
            dgate[i] = (REAL)(d * up[i] * s * (1.0 + g * (1.0 - s)));
            dup[i] = (REAL)(d * g * s);
        }
}

static void RP(add)(const smj_exec *ex, REAL *out, const REAL *a, const REAL *b, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void RP(xent_fwd)(const smj_exec *ex, REAL *losses, REAL *lse, const REAL *logits, const int32_t *targets,
                         int64_t N, int V, int ld) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        const REAL *l = logits + n * ld;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) if (l[j] > mx) mx = l[j];
        for (int j = 0; j < V; j++) s += exp(l[j] - mx);
        double z = mx + log(s);
        lse[n] = (REAL)z;
        losses[n] = targets[n] < 0 ? 0 : (REAL)(z - l[targets[n]]);
    }
}

static void RP(xent_bwd)(const smj_exec *ex, REAL *dlogits, const REAL *logits, const REAL *lse,
                         const int32_t *targets, float dloss, int64_t N, int V, int ld) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        for (int j = 0; j < V; j++) {
            double p = targets[n] < 0 ? 0 : exp((double)logits[n * ld + j] - lse[n]);
            dlogits[n * ld + j] = (REAL)(dloss * (p - (j == targets[n])));
        }
        for (int j = V; j < ld; j++) dlogits[n * ld + j] = 0;
    }
}

static void RP(adamw)(const smj_exec *ex, REAL *p, REAL *m, REAL *v, const REAL *g, float gs, int64_t n, float lr,
                      float b1, float b2, float eps, float wd, int64_t t) {
    (void)ex;
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    for (int64_t i = 0; i < n; i++) {
        const REAL gr = (REAL)(g[i] * gs); /* (as scale rounds it) */
        double mi = b1 * (double)m[i] + (1.0 - b1) * gr;
        double vi = b2 * (double)v[i] + (1.0 - b2) * (double)gr * gr;
        m[i] = (REAL)mi;
        v[i] = (REAL)vi;
        p[i] = (REAL)(p[i] - lr * (mi / bc1 / (sqrt(vi / bc2) + eps) + wd * (double)p[i]));
    }
}

static double RP(sumsq)(const smj_exec *ex, const REAL *x, int64_t n) {
    (void)ex;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

static void RP(scale)(const smj_exec *ex, REAL *x, float s, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* Two passes per row in double: the mean, then the biased variance. */
static void RP(layernorm_fwd)(const smj_exec *ex, REAL *out, REAL *mean, REAL *rstd, const REAL *x, const REAL *w,
                              const REAL *b, int64_t N, int C, float eps) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        const REAL *xr = x + n * C;
        double m = 0, var = 0;
        for (int c = 0; c < C; c++) m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++) var += ((double)xr[c] - m) * ((double)xr[c] - m);
        double r = 1.0 / sqrt(var / C + eps);
        mean[n] = (REAL)m;
        rstd[n] = (REAL)r;
        for (int c = 0; c < C; c++)
            out[n * C + c] = (REAL)(((double)xr[c] - m) * r * w[c] + (b ? (double)b[c] : 0.0));
    }
}

static void RP(add_layernorm_fwd)(const smj_exec *ex, REAL *sum, REAL *out, REAL *mean, REAL *rstd, const REAL *a,
                                  const REAL *b, const REAL *w, const REAL *bias, int64_t N, int C, float eps) {
    for (int64_t i = 0; i < N * C; i++) sum[i] = a[i] + b[i];
    RP(layernorm_fwd)(ex, out, mean, rstd, sum, w, bias, N, C, eps);
}

/* xh_c = (x_c - mean) r, g_c = w_c dy_c:
 * dx_c = r (g_c - mean_j g_j - xh_c mean_j(g_j xh_j));  dw_c += dy_c xh_c;  db_c += dy_c. */
static void RP(layernorm_bwd)(const smj_exec *ex, REAL *dx, REAL *dw, REAL *db, const REAL *dout, const REAL *x,
                              const REAL *w, const REAL *mean, const REAL *rstd, int64_t N, int C, int acc) {
    (void)ex;
    for (int64_t n = 0; n < N; n++) {
        const REAL *xr = x + n * C, *dy = dout + n * C;
        double m = mean[n], r = rstd[n], sg = 0, sgx = 0;
        for (int c = 0; c < C; c++) {
            double g = (double)w[c] * dy[c];
            sg += g;
            sgx += g * ((double)xr[c] - m) * r;
        }
        sg /= C;
        sgx /= C;
        for (int c = 0; c < C; c++) {
            double xh = ((double)xr[c] - m) * r;
            dx[n * C + c] = (REAL)((acc ? (double)dx[n * C + c] : 0.0) + r * ((double)w[c] * dy[c] - sg - xh * sgx));
            dw[c] += (REAL)(dy[c] * xh);
            if (db) db[c] += dy[c];
        }
    }
}

/* u = sqrt(2/pi) (x + 0.044715 x^3); gelu = 0.5 x (1 + tanh u);
 * gelu' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2). */
static void RP(gelu_fwd)(const smj_exec *ex, REAL *out, const REAL *x, int64_t n) {
    (void)ex;
    const double k = 0.79788456080286535588; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        out[i] = (REAL)(0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v))));
    }
}
static void RP(gelu_bwd)(const smj_exec *ex, REAL *dx, const REAL *dout, const REAL *x, int64_t n) {
    (void)ex;
    const double k = 0.79788456080286535588;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], t = tanh(k * (v + 0.044715 * v * v * v));
        double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * v * v);
        dx[i] = (REAL)(dout[i] * d);
    }
}

/* bf16 keeps the top 16 bits of the fp32. Rounding to nearest: the dropped
 * low half decides (above half way up, below down, exactly half way to the
 * even one); rounding up in magnitude may carry into the exponent, which is
 * right (up to Inf). NaN: the truncated bits with the quiet bit set. */
static void RP(bf16_pack)(const smj_exec *ex, uint16_t *out, const REAL *x, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) {
        float f = (float)x[i];
        uint32_t b;
        memcpy(&b, &f, 4);
        uint16_t kept = (uint16_t)(b >> 16);
        uint32_t dropped = b & 0xFFFFu;
        if (isnan(f)) kept |= 0x40;
        else if (dropped > 0x8000u || (dropped == 0x8000u && (kept & 1))) kept++;
        out[i] = kept;
    }
}
static void RP(bf16_unpack)(const smj_exec *ex, REAL *out, const uint16_t *x, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)x[i] << 16;
        float f;
        memcpy(&f, &b, 4);
        out[i] = (REAL)f;
    }
}
