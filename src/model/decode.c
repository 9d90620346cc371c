/* decode.c — what a decoding step hands the backend's fused one-token
 * kernels: a block's weights as decode_block reads them (in params, or in a
 * session's copy at the same offsets: smj_dec_weights), the rope tables
 * (smj_dec_rope), every block in one decode_block call where the blocks lie
 * evenly spaced in the parameters (smj_stack_decode), and the final norm +
 * LM head (smj_decode_head). The block-by-block step and its fallback to
 * the ops one by one are llama.c's smj_block_decode; model.h says what each
 * function promises.
 */
#include <math.h>
#include "model.h"

int smj_block_decode_ok(const smj_model *m) {
    const smj_model_config *c = &m->cfg;
    return m->be->decode_attention && (c->arch == SMJ_ARCH_GPT2 || c->rope_type != SMJ_ROPE_DYNAMIC) && !m->qmem;
}

/* A decoding weight (o elements into role's tensor): in params, or at the
 * same offset in the session's copy (the head of an f32 copy: params). */
static const void *dec_w(smj_model *m, smj_role role, int l, int64_t o, const smj_dec_copy *dc) {
    float *p = smj_model_ptr(m, m->params, role, l) + o;
    if (!dc || (dc->wtype == SMJ_WTYPE_F32 && role == R_LM_HEAD)) return p;
    return (const char *)dc->p + (p - m->params) * (dc->wtype == SMJ_WTYPE_BF16 ? 2 : 4);
}

int smj_dec_weights(smj_model *m, int l, const smj_dec_copy *dc, smj_block_weights *w) {
    const smj_model_config *c = &m->cfg;
    if (!m->be->decode_block || c->qk_norm) return 0;
    float *P = m->params;
    int64_t C = c->dim;
    smj_block_weights t = {0};
    t.attn_norm = smj_model_ptr(m, P, R_ATTN_NORM, l);
    t.ffn_norm = smj_model_ptr(m, P, R_FFN_NORM, l);
    t.wtype = dc ? dc->wtype : SMJ_WTYPE_F32;
    t.wo = dec_w(m, R_WO, l, 0, dc);
    t.wup = dec_w(m, R_WUP, l, 0, dc);
    t.wdown = dec_w(m, R_WDOWN, l, 0, dc);
    if (c->arch == SMJ_ARCH_GPT2) { /* q|k|v one tensor, LayerNorms, biases everywhere, GELU */
        if (!dc) return 0; /* its weights are [out, in] only there (smj_gpt2_dec_pack) */
        t.wq = dec_w(m, R_WQKV, l, 0, dc);
        t.wk = dec_w(m, R_WQKV, l, C * C, dc);
        t.wv = dec_w(m, R_WQKV, l, 2 * C * C, dc);
        t.attn_norm_b = smj_model_ptr(m, P, R_ATTN_NORM_B, l);
        t.ffn_norm_b = smj_model_ptr(m, P, R_FFN_NORM_B, l);
        float *bqkv = smj_model_ptr(m, P, R_BQKV, l);
        t.bq = bqkv;
        t.bk = bqkv + C;
        t.bv = bqkv + 2 * C;
        t.bo = smj_model_ptr(m, P, R_BO, l);
        t.bup = smj_model_ptr(m, P, R_BUP, l);
        t.bdown = smj_model_ptr(m, P, R_BDOWN, l);
    } else {
        t.wq = dec_w(m, R_WQ, l, 0, dc);
        t.wk = dec_w(m, R_WK, l, 0, dc);
        t.wv = dec_w(m, R_WV, l, 0, dc);
        t.wgate = dec_w(m, R_WGATE, l, 0, dc);
        if (c->attn_bias) {
            t.bq = smj_model_ptr(m, P, R_BQ, l);
            t.bk = smj_model_ptr(m, P, R_BK, l);
            t.bv = smj_model_ptr(m, P, R_BV, l);
        }
        if (c->attn_out_bias) t.bo = smj_model_ptr(m, P, R_BO, l);
    }
    *w = t;
    return 1;
}

void smj_dec_rope(const smj_model *m, const float **cs, const float **sn) {
    int rope = m->cfg.arch != SMJ_ARCH_GPT2;
    *cs = rope ? m->rope_cos : NULL;
    *sn = rope ? m->rope_sin : NULL;
}

/* A block's tensors as byte addresses (NULL where it has none) and their
 * element sizes: what smj_stack_decode compares between blocks. */
enum { DEC_NT = 17 };
static void dec_tensors(const smj_block_weights *w, const char *p[DEC_NT], int es[DEC_NT]) {
    const void *t[DEC_NT] = {w->attn_norm, w->ffn_norm, w->attn_norm_b, w->ffn_norm_b, w->bq,  w->bk,
                             w->bv,        w->bo,       w->bup,         w->bdown,      w->wq,  w->wk,
                             w->wv,        w->wo,       w->wgate,       w->wup,        w->wdown};
    for (int i = 0; i < DEC_NT; i++) {
        p[i] = t[i];
        es[i] = i < 10 || w->wtype == SMJ_WTYPE_F32 ? 4 : 2;
    }
}

int smj_stack_decode(smj_model *m, float *y, const float *x, float *kc, float *vc, int cap, const int32_t *pos,
                     const smj_dec_copy *dc) {
    const smj_model_config *c = &m->cfg;
    int L = c->n_layers;
    smj_block_weights w0, wl;
    if (L < 2 || !smj_dec_weights(m, 0, dc, &w0) || !smj_dec_weights(m, 1, dc, &wl)) return 0;
    /* every tensor of block l at l times the same stride from block 0's */
    int64_t st = wl.attn_norm - w0.attn_norm;
    const char *a[DEC_NT], *b[DEC_NT];
    int es[DEC_NT];
    dec_tensors(&w0, a, es);
    for (int l = 1; l < L; l++) {
        if (!smj_dec_weights(m, l, dc, &wl)) return 0;
        dec_tensors(&wl, b, es);
        for (int i = 0; i < DEC_NT; i++)
            if (a[i] && b[i] - a[i] != (ptrdiff_t)(l * st * es[i])) return 0;
    }
    const float *cs, *sn;
    smj_dec_rope(m, &cs, &sn);
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    return m->be->decode_block(&m->ctx->exec, y, x, &w0, L, st, kc, vc, (int64_t)cap * KD, cs, sn, pos, c->dim,
                               c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_hidden, cap, c->norm_eps,
                               1.0f / sqrtf((float)c->head_dim));
}

void smj_decode_head(smj_model *m, float *logits, const float *x, float *lnf, float *mean, float *rstd,
                     const smj_dec_copy *dc) {
    const smj_model_config *c = &m->cfg;
    const float *nw = smj_model_ptr(m, m->params, R_FINAL_NORM, -1);
    int gpt2 = c->arch == SMJ_ARCH_GPT2;
    if (gpt2) { /* its LayerNorm, then the product */
        smj_gpt2_final_norm(m, lnf, mean, rstd, x, 1, NULL);
        x = lnf;
        nw = NULL;
    }
    if (m->be->decode_linear) {
        m->be->decode_linear(&m->ctx->exec, logits, x, nw, dec_w(m, R_LM_HEAD, -1, 0, dc),
                             dc ? dc->wtype : SMJ_WTYPE_F32, c->vocab_size, c->dim, c->norm_eps);
        return;
    }
    if (!gpt2) m->be->rmsnorm_fwd(&m->ctx->exec, lnf, rstd, x, nw, 1, c->dim, c->norm_eps);
    smj_model_linear(m, R_LM_HEAD, -1, logits, lnf, 1, c->vocab_size, c->dim);
}
