/* ref.c — the "ref" backend: ref_impl.h over float, host memory. */
#include <stdlib.h>
#include <string.h>
#include "ops.h"
#include "../gguf/gguf.h"
#define REAL float
#define RP(n) ref_##n
#include "ref_impl.h"

static void *host_alloc(size_t n) { return smj_alloc(n); }
static void host_free(void *p) { smj_afree(p); }
static void host_copy(void *d, const void *s, size_t n) { if (n) memcpy(d, s, n); }
static void host_zero(void *p, size_t n) { if (n) memset(p, 0, n); }

#define SMJ_HOST_MEMORY .alloc = host_alloc, .free = host_free, .upload = host_copy, \
    .download = host_copy, .zero = host_zero

/* qmatmul (optional op): every block of W is dequantized exactly (the half
 * scale times the integer value) and the products are summed in double. */
static void ref_qmatmul(const smj_exec *ex, float *C, const float *A, const void *Wq, int wtype,
                        int64_t M, int64_t N, int64_t K, int acc) {
    (void)ex;
    const uint8_t *W = Wq;
    int64_t rs = wtype == SMJ_WTYPE_F16 ? 2 * K : wtype == SMJ_WTYPE_Q8_0 ? K / 32 * 34
               : wtype == SMJ_WTYPE_Q4_0 ? K / 32 * 18 : -1;
    if (rs < 0 || (wtype != SMJ_WTYPE_F16 && K % 32)) return;
    double *w = malloc(sizeof(double) * (size_t)(K > 0 ? K : 1));
    if (!w) return;
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *row = W + n * rs;
        for (int64_t k = 0; k < K; k++) {
            if (wtype == SMJ_WTYPE_F16) {
                w[k] = smj_fp16_to_fp32((uint16_t)(row[2 * k] | row[2 * k + 1] << 8));
            } else if (wtype == SMJ_WTYPE_Q8_0) {
                const uint8_t *blk = row + k / 32 * 34;
                w[k] = (double)smj_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8)) * (int8_t)blk[2 + k % 32];
            } else {
                const uint8_t *blk = row + k / 32 * 18;
                int j = (int)(k % 32), q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
                w[k] = (double)smj_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8)) * (q - 8);
            }
        }
        for (int64_t i = 0; i < M; i++) {
            double sum = 0;
            for (int64_t k = 0; k < K; k++) sum += (double)A[i * K + k] * w[k];
            float *c = C + i * N + n;
            *c = (float)((acc ? (double)*c : 0.0) + sum);
        }
    }
    free(w);
}

/* decode_attention (optional op): the definition in terms of the other
 * ops, on host memory: rope_fwd at position p, the cache rows written, then
 * attention_fwd of the one query over rows 0..p. The CUDA backend's own
 * kernels are checked against this. */
static void ref_decode_attention(const smj_exec *ex, float *out, float *q, float *k, const float *v, float *kc,
                                 float *vc, const float *cos, const float *sin, const int32_t *pos, int NH, int NKV,
                                 int HS, int cap, float scale) {
    int p = *pos;
    int64_t KD = (int64_t)NKV * HS;
    if (p < 0 || p >= cap) return;
    float *lse = malloc(sizeof(float) * (size_t)NH);
    if (!lse) return;
    if (cos) {
        ref_rope_fwd(ex, q, cos, sin, 1, 1, NH, HS, p, 0);
        ref_rope_fwd(ex, k, cos, sin, 1, 1, NKV, HS, p, 0);
    }
    memcpy(kc + p * KD, k, sizeof(float) * (size_t)KD);
    memcpy(vc + p * KD, v, sizeof(float) * (size_t)KD);
    ref_attention_fwd(ex, out, lse, q, kc, vc, 1, 1, p + 1, NH, NKV, HS, 0, 0, (int64_t)cap * KD, scale);
    free(lse);
}

/* A decode op's weight [n] as f32: w itself, or its bf16 values unpacked
 * into tmp. */
static const float *ref_weight(const void *w, int wtype, int64_t n, float *tmp) {
    if (wtype == SMJ_WTYPE_F32) return w;
    ref_bf16_unpack(NULL, tmp, w, n);
    return tmp;
}

/* decode_block (optional op): its definition, the ops one by one as
 * llama.c's and gpt2.c's blocks run them for one token (bit for bit the
 * same on f32 weights), one block (ref_decode_one) after another. */
static void ref_dec_norm(const smj_exec *ex, float *out, float *stats, const float *x, const float *w,
                         const float *b, int C, float eps) {
    if (b) ref_layernorm_fwd(ex, out, stats, stats + 1, x, w, b, 1, C, eps);
    else ref_rmsnorm_fwd(ex, out, stats, x, w, 1, C, eps);
}
/* out[N] = W[N,K] · in (+ b) */
static void ref_dec_linear(const smj_exec *ex, float *out, const float *in, const void *W, int wtype,
                           const float *b, int64_t N, int64_t K, float *tmp) {
    ref_matmul(ex, out, in, ref_weight(W, wtype, N * K, tmp), 1, N, K, 0, 1, 0);
    if (b) ref_add(ex, out, out, b, N);
}
static void ref_decode_one(const smj_exec *ex, float *y, const float *x, const smj_block_weights *w, float *kc,
                           float *vc, const float *cos, const float *sin, const int32_t *pos, int C, int NH,
                           int NKV, int HS, int H, int cap, float eps, float scale, float *buf) {
    int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS;
    float *n1 = buf, *r = n1 + C, *n2 = r + C, *t = n2 + C, *q = t + C, *att = q + QD, *k = att + QD, *v = k + KD;
    float *g = v + KD, *u = g + H, *hs = u + H, *stats = hs + H, *tmp = stats + 2;
    int wt = w->wtype;
    ref_dec_norm(ex, n1, stats, x, w->attn_norm, w->attn_norm_b, C, eps);
    ref_dec_linear(ex, q, n1, w->wq, wt, w->bq, QD, C, tmp);
    ref_dec_linear(ex, k, n1, w->wk, wt, w->bk, KD, C, tmp);
    ref_dec_linear(ex, v, n1, w->wv, wt, w->bv, KD, C, tmp);
    ref_decode_attention(ex, att, q, k, v, kc, vc, cos, sin, pos, NH, NKV, HS, cap, scale);
    ref_dec_linear(ex, t, att, w->wo, wt, w->bo, C, QD, tmp);
    ref_add(ex, r, x, t, C);
    ref_dec_norm(ex, n2, stats, r, w->ffn_norm, w->ffn_norm_b, C, eps);
    ref_dec_linear(ex, u, n2, w->wup, wt, w->bup, H, C, tmp);
    if (w->wgate) {
        ref_dec_linear(ex, g, n2, w->wgate, wt, NULL, H, C, tmp);
        ref_swiglu_fwd(ex, hs, g, u, 1, H, 0);
    } else {
        ref_gelu_fwd(ex, hs, u, H);
    }
    ref_dec_linear(ex, t, hs, w->wdown, wt, w->bdown, C, H, tmp);
    ref_add(ex, y, r, t, C);
}

/* w's pointers moved by o elements (es bytes each for the linear weights) */
static smj_block_weights ref_dec_layer(const smj_block_weights *w, int64_t o, size_t es) {
#define F(p) ((p) ? (p) + o : NULL)
#define B(p) ((p) ? (const void *)((const char *)(p) + o * (int64_t)es) : NULL)
    smj_block_weights l = {F(w->attn_norm), F(w->ffn_norm), B(w->wq), B(w->wk), B(w->wv), B(w->wo),
                           B(w->wgate), B(w->wup), B(w->wdown), w->wtype, F(w->attn_norm_b), F(w->ffn_norm_b),
                           F(w->bq), F(w->bk), F(w->bv), F(w->bo), F(w->bup), F(w->bdown)};
#undef F
#undef B
    return l;
}

static int ref_decode_block(const smj_exec *ex, float *y, const float *x, const smj_block_weights *w, int L,
                            int64_t lstride, float *kc, float *vc, int64_t kvstride, const float *cos,
                            const float *sin, const int32_t *pos, int C, int NH, int NKV, int HS, int H, int cap,
                            float eps, float scale) {
    if (w->wtype != SMJ_WTYPE_F32 && w->wtype != SMJ_WTYPE_BF16) return 0;
    if (L < 1) return 0;
    if (*pos < 0 || *pos >= cap) return 1;
    int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, big = QD > H ? QD : H;
    int64_t nt = w->wtype == SMJ_WTYPE_F32 ? 0 : big * C;
    float *buf = malloc(sizeof(float) * (size_t)(6 * C + 2 * QD + 2 * KD + 3 * H + 2 + nt));
    if (!buf) return 1;
    float *xb = buf + 4 * C + 2 * QD + 2 * KD + 3 * H + 2 + nt; /* [2, C]: outputs between blocks */
    size_t es = w->wtype == SMJ_WTYPE_F32 ? 4 : 2;
    for (int l = 0; l < L; l++) {
        smj_block_weights wl = ref_dec_layer(w, (int64_t)l * lstride, es);
        const float *in = l == 0 ? x : xb + ((l - 1) & 1) * C;
        float *out = l == L - 1 ? y : xb + (l & 1) * C;
        ref_decode_one(ex, out, in, &wl, kc + l * kvstride, vc + l * kvstride, cos, sin, pos, C, NH, NKV, HS, H,
                       cap, eps, scale, buf);
    }
    free(buf);
    return 1;
}

/* decode_linear (optional op): rmsnorm_fwd then matmul. */
static void ref_decode_linear(const smj_exec *ex, float *out, const float *x, const float *norm, const void *W,
                              int wtype, int64_t N, int K, float eps) {
    if (wtype != SMJ_WTYPE_F32 && wtype != SMJ_WTYPE_BF16) return;
    float *buf = malloc(sizeof(float) * (size_t)(K + 1 + (wtype == SMJ_WTYPE_F32 ? 0 : N * K)));
    if (!buf) return;
    if (norm) ref_rmsnorm_fwd(ex, buf, buf + K, x, norm, 1, K, eps);
    ref_matmul(ex, out, norm ? buf : x, ref_weight(W, wtype, N * K, buf + K + 1), 1, N, K, 0, 1, 0);
    free(buf);
}

/* decode_argmax (optional op): the sequential scan. */
static void ref_decode_argmax(const smj_exec *ex, int32_t *next, int32_t *hist, int32_t *pos, const float *logits,
                              int V) {
    (void)ex;
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    next[0] = best;
    hist[*pos + 1] = best;
    *pos += 1;
}

/* bf16_home (optional op): a hint; nothing to do without copies. */
static void ref_bf16_home(const smj_exec *ex, const float *x, uint16_t *x16, int64_t n) {
    (void)ex; (void)x; (void)x16; (void)n;
}

/* matmul_bias (optional op): its definition, matmul then the bias on every row. */
static int ref_matmul_bias(const smj_exec *ex, float *C, const float *A, const float *B, const float *bias, int64_t M,
                           int64_t N, int64_t K, int tA, int tB) {
    ref_matmul(ex, C, A, B, M, N, K, tA, tB, 0);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * N + j] += bias[j];
    return 1;
}

/* matmul_bias_gelu (optional op): its definition, matmul_bias then gelu_fwd. */
static int ref_matmul_bias_gelu(const smj_exec *ex, float *out, float *pre, const float *A, const float *B,
                                const float *bias, int64_t M, int64_t N, int64_t K, int tA, int tB) {
    ref_matmul_bias(ex, pre, A, B, bias, M, N, K, tA, tB);
    ref_gelu_fwd(ex, out, pre, M * N);
    return 1;
}

/* attention_bwd_rope (optional op): its definition, attention_bwd then
 * rope_bwd on dq and dk. */
static int ref_attention_bwd_rope(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q, const float *k, const float *v,
                                  const float *cos, const float *sin, int B, int T, int NH, int NKV, int HS,
                                  int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale) {
    ref_attention_bwd(ex, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, q_rs, kv_rs, dq_rs, dkv_rs, scale);
    ref_rope_bwd(ex, dq, cos, sin, B, T, NH, HS, 0, dq_rs ? dq_rs : q_rs);
    ref_rope_bwd(ex, dk, cos, sin, B, T, NKV, HS, 0, dkv_rs ? dkv_rs : kv_rs);
    return 1;
}

/* column sums of rows [N] of w values rs apart, in double, added to db */
static void ref_colsum_add(float *db, const float *x, int64_t N, int64_t w, int64_t rs) {
    for (int64_t j = 0; j < w; j++) {
        double s = 0;
        for (int64_t i = 0; i < N; i++) s += x[i * rs + j];
        db[j] += (float)s;
    }
}

/* matmul_dgelu (optional op): its definition, matmul, gelu_bwd in place,
 * then the column sums of C (in double, added to db once). */
static int ref_matmul_dgelu(const smj_exec *ex, float *C, float *db, const float *A, const float *B, const float *x,
                            int64_t M, int64_t N, int64_t K, int tA, int tB) {
    ref_matmul(ex, C, A, B, M, N, K, tA, tB, 0);
    ref_gelu_bwd(ex, C, C, x, M * N);
    ref_colsum_add(db, C, M, N, N);
    return 1;
}

/* xent_fwd_bwd (optional op): its definition, xent_fwd then xent_bwd. */
static int ref_xent_fwd_bwd(const smj_exec *ex, float *losses, float *lse, float *dlogits, const float *logits,
                            const int32_t *targets, float dloss, int64_t N, int V, int ld) {
    ref_xent_fwd(ex, losses, lse, logits, targets, N, V, ld);
    ref_xent_bwd(ex, dlogits, logits, lse, targets, dloss, N, V, ld);
    return 1;
}

/* attention_bwd_bias (optional op): its definition, attention_bwd then the
 * column sums of dq, dk, dv. */
static int ref_attention_bwd_bias(const smj_exec *ex, float *dq, float *dk, float *dv, float *db, const float *dout,
                                  const float *out, const float *lse, const float *q, const float *k, const float *v,
                                  int B, int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs,
                                  int64_t dkv_rs, float scale) {
    ref_attention_bwd(ex, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, q_rs, kv_rs, dq_rs, dkv_rs, scale);
    int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, N = (int64_t)B * T;
    int64_t dqs = dq_rs ? dq_rs : q_rs ? q_rs : QD, dks = dkv_rs ? dkv_rs : kv_rs ? kv_rs : KD;
    ref_colsum_add(db, dq, N, QD, dqs);
    ref_colsum_add(db + QD, dk, N, KD, dks);
    ref_colsum_add(db + QD + KD, dv, N, KD, dks);
    return 1;
}

/* gelu_bwd_bias (optional op): its definition, gelu_bwd then the column
 * sums of dx (in double, added to db once). */
static int ref_gelu_bwd_bias(const smj_exec *ex, float *dx, float *db, const float *dout, const float *x, int64_t N,
                             int H) {
    ref_gelu_bwd(ex, dx, dout, x, N * H);
    ref_colsum_add(db, dx, N, H, H);
    return 1;
}

/* adamw_runs (optional op): its definition, adamw per run (with a control
 * block: its gs, lr and t, nothing where it says skip). */
static int ref_adamw_runs(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs,
                          const smj_step_ctl *ctl, const int64_t *off, const int64_t *len, const unsigned char *decay,
                          int nr, float lr, float b1, float b2, float eps, float wd, int64_t t) {
    if (ctl) {
        if (ctl->skip) return 1;
        gs = ctl->gs, lr = ctl->lr, t = ctl->t;
    }
    for (int r = 0; r < nr; r++)
        ref_adamw(ex, p + off[r], m + off[r], v + off[r], g + off[r], gs, len[r], lr, b1, b2, eps, decay[r] ? wd : 0.0f,
                  t);
    return 1;
}

/* grad_ctl (optional op): its definition, sumsq and the trainer's rule. */
static void ref_grad_ctl(const smj_exec *ex, smj_step_ctl *ctl, const float *g, int64_t n, const float *losses,
                        int64_t nl, float clip, int skip_nonfinite) {
    double s = ref_sumsq(ex, g, n), norm = sqrt(s), ls = 0;
    for (int64_t i = 0; i < nl; i++) ls += losses[i];
    int bad = !isfinite(norm) || !isfinite(ls);
    float gs = 1.0f;
    if (clip > 0 && norm > clip) {
        float coef = (float)(clip / (norm + 1e-6));
        if (coef < 1.0f) gs = coef;
    }
    ctl->sumsq = s;
    ctl->loss_sum = ls;
    ctl->skip = skip_nonfinite && bad;
    ctl->gs = gs;
}

/* bf16_bind (optional op): its definition, bf16_unpack. */
static void ref_bf16_bind(const smj_exec *ex, float *out, const uint16_t *x16, int64_t n) {
    ref_bf16_unpack(ex, out, x16, n);
}

/* bf16_only, bf16_drop (optional ops): promises the reference need not use
 * (it keeps every value exact; its readers see what rounding readers see). */
static void ref_bf16_only(const smj_exec *ex, const float *x, int64_t n) { (void)ex; (void)x; (void)n; }
static void ref_bf16_drop(const smj_exec *ex, const float *x, int64_t n) { (void)ex; (void)x; (void)n; }
/* bf16_tight (optional op): never taken (the reference writes fp32 values). */
static int ref_bf16_tight(const smj_exec *ex, const float *x, int64_t n) {
    (void)ex; (void)x; (void)n;
    return 0;
}

const smj_backend smj_backend_ref = {
    .name = "ref", SMJ_HOST_MEMORY,
#define SMJ_OP_SET(n) .n = ref_##n,
    SMJ_OPS(SMJ_OP_SET)
    SMJ_OPS_OPTIONAL(SMJ_OP_SET)
#undef SMJ_OP_SET
};

/* the double-precision reference used by the gradient checker */
#undef REAL
#undef RP
#define REAL double
#define RP(n) ref64_##n
#include "ref_impl.h"

const smj_ref64 smj_ref64_ops = {
#define SMJ_OP_SET(n) .n = ref64_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
};

const smj_backend *smj_backend_get(smj_backend_kind kind) {
    switch (kind) {
    case SMJ_BACKEND_CPU: return &smj_backend_cpu;
    case SMJ_BACKEND_REF: return &smj_backend_ref;
    case SMJ_BACKEND_CUDA:
#ifdef SMJ_HAVE_CUDA
        return &smj_backend_cuda;
#else
        return NULL;
#endif
    }
    return NULL;
}
