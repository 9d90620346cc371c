/* gpt2.c — the GPT-2 family (HF GPT2LMHeadModel): tensor table and block
 * functions; llama.c's shared model code dispatches here on cfg.arch.
 *
 * x = wte[ids] + wpe[pos]; per layer (pre-LN):
 *   x += c_proj(attn(split(c_attn(ln_1(x)))))    c_attn [C, 3C] + b, q|k|v columns
 *   x += mlp.c_proj(gelu_tanh(c_fc(ln_2(x))))     c_fc [C, H] + b, c_proj [H, C] + b
 * then ln_f and the LM head (tied to wte unless tied_embeddings = 0).
 *
 * The tensors keep HF's names and shapes: GPT-2's Conv1D weights are stored
 * [in, out], so the forward multiplies with transB = 0 (out = in · W) and
 * import/export stay copies. LayerNorms are PyTorch's (biased variance,
 * eps = cfg.norm_eps inside the sqrt). Attention is causal MHA with scale
 * 1/sqrt(HS) and no RoPE. Biases go through matmul with the model's ones
 * vector, as in llama.c.
 *
 * q, k, v are read in place from the [N, 3C] product: attention takes row
 * strides (3C), and its backward writes dq, dk, dv into their columns of
 * dqkv, which the product's backward reads whole. A session still copies k
 * and v into its cache rows: viewed as a table of 3N rows of C, k_n and v_n
 * are rows 3n + 1, 3n + 2, so the embedding op with row ids 3n (a->idx3) on
 * the table at offsets C, 2C gathers them exactly, on every backend.
 *
 * Under fp16_activations the forward names the 16-bit storage of every
 * saved tensor before the op that writes it: res_mid and the block's output
 * (read in 32 bits: smj_acts_home, the copy beside the fp32 values) and ln1,
 * q|k|v, att, ln2, the pre-GELU product and the GELU output (read only by
 * products and by ops taking bf16 copies: smj_acts_home_only, written as
 * bf16 alone), so the pack after the block finds them done.
 */
#include <math.h>
#include <string.h>
#include "model.h"

typedef struct { smj_role role; const char *fmt; int per_layer; } gpt2_role;

/* HF's state-dict order. */
static const gpt2_role ROLES[] = {
    {R_EMBED, "transformer.wte.weight", 0},
    {R_POS_EMBED, "transformer.wpe.weight", 0},
    {R_ATTN_NORM, "transformer.h.%d.ln_1.weight", 1},
    {R_ATTN_NORM_B, "transformer.h.%d.ln_1.bias", 1},
    {R_WQKV, "transformer.h.%d.attn.c_attn.weight", 1},
    {R_BQKV, "transformer.h.%d.attn.c_attn.bias", 1},
    {R_WO, "transformer.h.%d.attn.c_proj.weight", 1},
    {R_BO, "transformer.h.%d.attn.c_proj.bias", 1},
    {R_FFN_NORM, "transformer.h.%d.ln_2.weight", 1},
    {R_FFN_NORM_B, "transformer.h.%d.ln_2.bias", 1},
    {R_WUP, "transformer.h.%d.mlp.c_fc.weight", 1},
    {R_BUP, "transformer.h.%d.mlp.c_fc.bias", 1},
    {R_WDOWN, "transformer.h.%d.mlp.c_proj.weight", 1},
    {R_BDOWN, "transformer.h.%d.mlp.c_proj.bias", 1},
    {R_FINAL_NORM, "transformer.ln_f.weight", 0},
    {R_FINAL_NORM_B, "transformer.ln_f.bias", 0},
    {R_LM_HEAD, "lm_head.weight", 0},
};
#define N_ROLES (int)(sizeof ROLES / sizeof ROLES[0])

static int role_shape(const smj_model_config *c, smj_role r, int64_t s[4]) {
    int64_t C = c->dim, H = c->ffn_hidden, V = c->vocab_size;
    switch (r) {
    case R_EMBED: s[0] = V; s[1] = C; return 2;
    case R_POS_EMBED: s[0] = c->max_seq_len; s[1] = C; return 2;
    case R_ATTN_NORM: case R_ATTN_NORM_B: case R_FFN_NORM: case R_FFN_NORM_B:
    case R_FINAL_NORM: case R_FINAL_NORM_B: case R_BO: case R_BDOWN: s[0] = C; return 1;
    case R_WQKV: s[0] = C; s[1] = 3 * C; return 2;
    case R_BQKV: s[0] = 3 * C; return 1;
    case R_WO: s[0] = C; s[1] = C; return 2;
    case R_WUP: s[0] = C; s[1] = H; return 2;
    case R_BUP: s[0] = H; return 1;
    case R_WDOWN: s[0] = H; s[1] = C; return 2;
    case R_LM_HEAD: if (c->tied_embeddings) return 0; s[0] = V; s[1] = C; return 2;
    default: return 0;
    }
}

smj_status smj_gpt2_build_specs(smj_ctx *ctx, const smj_model_config *c, smj_tensor_spec **specs_out, int *n_out,
                                int64_t *n_params) {
    SMJ_TRY(smj_config_validate(ctx, c));
    int cap = N_ROLES * (c->n_layers + 1), n = 0;
    smj_tensor_spec *s = calloc((size_t)cap, sizeof *s);
    if (!s) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory for the tensor table");
    int64_t off = 0;
    for (int pass = 0; pass < 3; pass++) { /* 0: wte, wpe; 1: layers; 2: ln_f, head */
        int l0 = pass == 1 ? 0 : -1, l1 = pass == 1 ? c->n_layers : 0;
        for (int l = l0; l < l1; l++)
            for (int r = 0; r < N_ROLES; r++) {
                const gpt2_role *rn = &ROLES[r];
                if (rn->per_layer != (pass == 1)) continue;
                int head = rn->role == R_EMBED || rn->role == R_POS_EMBED;
                if ((pass == 0 && !head) || (pass == 2 && head)) continue;
                smj_tensor_spec *t = &s[n];
                t->ndim = role_shape(c, rn->role, t->shape);
                if (!t->ndim) continue;
                smj_spec_place(t, rn->role, l, rn->fmt, &off);
                off += smj_spec_pad(c, rn->role);
                n++;
            }
    }
    *specs_out = s;
    *n_out = n;
    *n_params = off;
    return SMJ_OK;
}

int64_t smj_gpt2_num_params(const smj_model_config *c) {
    int64_t C = c->dim, H = c->ffn_hidden, V = c->vocab_size;
    int64_t layer = 4 * C + 3 * C * C + 3 * C + C * C + C + 2 * C * H + H + C;
    return V * C * (c->tied_embeddings ? 1 : 2) + (int64_t)c->max_seq_len * C + c->n_layers * layer + 2 * C;
}

void smj_gpt2_embed(smj_model *m, float *out, float *tmp, const int32_t *ids, const int32_t *pos, int64_t N,
                    smj_res_add *pend) {
    const smj_exec *ex = &m->ctx->exec;
    int C = m->cfg.dim;
    m->be->embedding_fwd(ex, out, ids, smj_model_ptr(m, m->params, R_EMBED, -1), N, C);
    m->be->embedding_fwd(ex, tmp, pos, smj_model_ptr(m, m->params, R_POS_EMBED, -1), N, C);
    if (pend) *pend = (smj_res_add){out, out, tmp};
    else m->be->add(ex, out, out, tmp, N * C);
}

/* The four Conv1D weights of a block, [in, out] each. */
static const smj_role conv_roles[4] = {R_WQKV, R_WO, R_WUP, R_WDOWN};

int64_t smj_gpt2_dec_scratch(const smj_model_config *c) {
    int64_t C = c->dim, H = c->ffn_hidden;
    return 2 * sizeof(float) * (size_t)(3 * C * C > C * H ? 3 * C * C : C * H);
}

void smj_gpt2_dec_pack(smj_model *m, void *dst, int wtype, void *tmp) {
    const smj_model_config *c = &m->cfg;
    int bf = wtype == SMJ_WTYPE_BF16;
    size_t es = bf ? 2 : 4;
    if (bf) m->be->bf16_pack(&m->ctx->exec, dst, m->params, m->n_params);
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < 4; i++) {
            int64_t s[4] = {0}, o = smj_model_ptr(m, m->params, conv_roles[i], l) - m->params;
            role_shape(c, conv_roles[i], s);
            int64_t K = s[0], N = s[1]; /* in, out */
            size_t nb = es * (size_t)(K * N);
            char *d = (char *)dst + o * (int64_t)es;
            m->be->download(tmp, bf ? (const void *)d : (const void *)(m->params + o), nb);
            if (bf) {
                const uint16_t *a = tmp;
                uint16_t *t = (uint16_t *)tmp + K * N;
                for (int64_t k = 0; k < K; k++)
                    for (int64_t n = 0; n < N; n++) t[n * K + k] = a[k * N + n];
                m->be->upload(d, t, nb);
            } else {
                const float *a = tmp;
                float *t = (float *)tmp + K * N;
                for (int64_t k = 0; k < K; k++)
                    for (int64_t n = 0; n < N; n++) t[n * K + k] = a[k * N + n];
                m->be->upload(d, t, nb);
            }
        }
}

/* A block's first LayerNorm or the final one (role, role_b: weight and
 * bias; l -1 for the final), of x, or with in of x = in->a + in->b (in->sum
 * is x; block l - 1's output, whose 16-bit home it names). */
static void norm_in(smj_model *m, int l, smj_role role, smj_role role_b, float *out, float *mean, float *rstd,
                    const float *x, int64_t N, const smj_res_add *in) {
    const float *w = smj_model_ptr(m, m->params, role, l), *b = smj_model_ptr(m, m->params, role_b, l);
    int C = m->cfg.dim;
    if (!in) {
        m->be->layernorm_fwd(&m->ctx->exec, out, mean, rstd, x, w, b, N, C, m->cfg.norm_eps);
        return;
    }
    smj_acts_home(m, (l < 0 ? m->cfg.n_layers : l) - 1, in->sum, N);
    m->be->add_layernorm_fwd(&m->ctx->exec, in->sum, out, mean, rstd, in->a, in->b, w, b, N, C, m->cfg.norm_eps);
}

void smj_gpt2_final_norm(smj_model *m, float *out, float *mean, float *rstd, const float *x, int64_t N,
                         const smj_res_add *in) {
    norm_in(m, -1, R_FINAL_NORM, R_FINAL_NORM_B, out, mean, rstd, x, N, in);
}

/* The block up to attention: ln1, the fused q|k|v product and, with
 * to_cache, k and v copied into a->k, a->v (a session's cache rows;
 * a->idx3: row n's index 3n in the [N, 3C] product). */
static void block_qkv(smj_model *m, int l, smj_block_acts *a, const float *x, int64_t N, int to_cache,
                      const smj_res_add *in) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int C = c->dim;
    float *P = m->params;
#define W(role) smj_model_ptr(m, P, role, l)
    smj_acts_home_only(m, l, a->ln1, N);
    norm_in(m, l, R_ATTN_NORM, R_ATTN_NORM_B, a->ln1, a->ln1_mean, a->ln1_rstd, x, N, in);
    smj_acts_home_only(m, l, a->qkv, N); /* flash reads the copy's q|k|v rows */
    smj_model_matmul_bias(m, a->qkv, a->ln1, W(R_WQKV), W(R_BQKV), N, 3 * (int64_t)C, C, 0);
    if (!to_cache) return;
    be->embedding_fwd(ex, a->k, a->idx3, a->qkv + C, N, C);
    be->embedding_fwd(ex, a->v, a->idx3, a->qkv + 2 * C, N, C);
#undef W
}

/* The block after attention (a->att): y = res_mid + MLP(ln2(res_mid)),
 * res_mid = x + Wo·att + bo (added in ln2's pass); with out, the last add
 * is left to the op after the block. */
static void block_tail(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int64_t N,
                       smj_res_add *out) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int C = c->dim, H = c->ffn_hidden;
    float *P = m->params;
#define W(role) smj_model_ptr(m, P, role, l)
    smj_model_matmul_bias(m, a->tmp, a->att, W(R_WO), W(R_BO), N, C, C, 0);
    smj_acts_home(m, l, a->res_mid, N);
    smj_acts_home_only(m, l, a->ln2, N);
    be->add_layernorm_fwd(ex, a->res_mid, a->ln2, a->ln2_mean, a->ln2_rstd, x, a->tmp, W(R_FFN_NORM),
                          W(R_FFN_NORM_B), N, C, c->norm_eps);
    /* gate = c_fc(ln2) and hsw = gelu(gate) in one op where the backend
     * has it (the product's epilogue); else the product, then gelu (which
     * reads gate's copy). A declined op ran nothing: the hints stand for
     * the product, and hsw's is made again for gelu. */
    smj_acts_home_only(m, l, a->gate, N);
    smj_acts_home_only(m, l, a->hsw, N);
    if (!be->matmul_bias_gelu ||
        !be->matmul_bias_gelu(ex, a->hsw, a->gate, a->ln2, W(R_WUP), W(R_BUP), N, H, C, 0, 0)) {
        smj_model_matmul_bias(m, a->gate, a->ln2, W(R_WUP), W(R_BUP), N, H, C, 0);
        smj_acts_home_only(m, l, a->hsw, N);
        be->gelu_fwd(ex, a->hsw, a->gate, N * H);
    }
    smj_model_matmul_bias(m, a->tmp, a->hsw, W(R_WDOWN), W(R_BDOWN), N, C, H, 0);
    if (out) {
        *out = (smj_res_add){y, a->res_mid, a->tmp};
        return;
    }
    smj_acts_home(m, l, y, N);
    be->add(ex, y, a->res_mid, a->tmp, N * C);
#undef W
}

void smj_gpt2_block_forward(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int B, int T,
                            int pos0, const float *kbase, const float *vbase, int Tk, int64_t kv_bstride,
                            const smj_res_add *in, smj_res_add *out) {
    (void)pos0; /* positions entered with wpe */
    const smj_model_config *c = &m->cfg;
    int64_t N = (int64_t)B * T, C = c->dim;
    float sc = 1.0f / sqrtf((float)c->head_dim);
    block_qkv(m, l, a, x, N, kbase != NULL, in);
    smj_acts_home_only(m, l, a->att, N);
    if (kbase) /* a session: q from the product's rows, k and v from the cache */
        m->be->attention_fwd(&m->ctx->exec, a->att, a->lse, a->qkv, kbase, vbase, B, T, Tk, c->n_heads, c->n_heads,
                             c->head_dim, 3 * C, 0, kv_bstride, sc);
    else
        m->be->attention_fwd(&m->ctx->exec, a->att, a->lse, a->qkv, a->qkv + C, a->qkv + 2 * C, B, T, T,
                             c->n_heads, c->n_heads, c->head_dim, 3 * C, 3 * C, (int64_t)T * 3 * C, sc);
    block_tail(m, l, a, x, y, N, out);
}

void smj_gpt2_block_decode(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, float *kc, float *vc,
                           int cap, const int32_t *pos) {
    const smj_model_config *c = &m->cfg;
    int64_t C = c->dim;
    block_qkv(m, l, a, x, 1, 0, NULL);
    m->be->decode_attention(&m->ctx->exec, a->att, a->qkv, a->qkv + C, a->qkv + 2 * C, kc, vc, NULL, NULL, pos,
                            c->n_heads, c->n_heads, c->head_dim, cap, 1.0f / sqrtf((float)c->head_dim));
    block_tail(m, l, a, x, y, 1, NULL);
}

/* x: the block's input [N,C]; dres holds dL/dy on entry and dL/dx on return. */
static void block_backward(smj_model *m, int l, int B, int T, const float *x) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    smj_block_acts *a = &m->blk[l];
    const smj_exec *ex = &m->ctx->exec;
    int NH = c->n_heads, HS = c->head_dim;
    int64_t N = (int64_t)B * T, C = c->dim, H = c->ffn_hidden;
    float *P = m->params, *G = m->grads;
#define W(role) smj_model_ptr(m, P, role, l)
#define DW(role) smj_model_ptr(m, G, role, l)
    /* MLP: y = res_mid + hsw · Wd + bd. The gradients written fresh and
     * read only through bf16 copies (dh, dgate, dln, datt, dqkv) are written
     * as bf16 alone in bf16 mode, in the first half of their own storage
     * (smj_fresh16: no copy slot, at any size) */
    be->matmul(ex, DW(R_WDOWN), a->hsw, m->dres, H, C, N, 1, 0, 1);
    smj_model_bias_bwd(m, DW(R_BDOWN), m->dres, N, C);
    /* dgate = gelu'(gate) (dres Wd^T) and c_fc's bias gradient in one op
     * where the backend has it (the product's epilogue; dgate read then
     * only by products: bf16 alone); else dh, then gelu's backward with the
     * bias gradient in its pass where the backend has that (a declined op
     * ran nothing: dgate's hint stands for the product, and is made again) */
    smj_fresh16(m, m->dgate, N * H);
    int fused =
        be->matmul_dgelu && be->matmul_dgelu(ex, m->dgate, DW(R_BUP), m->dres, W(R_WDOWN), a->gate, N, H, C, 0, 1);
    if (!fused) {
        smj_fresh16(m, m->dh, N * H);
        be->matmul(ex, m->dh, m->dres, W(R_WDOWN), N, H, C, 0, 1, 0);
        fused = be->gelu_bwd_bias != NULL;
        if (fused) smj_fresh16(m, m->dgate, N * H);
        if (fused && !be->gelu_bwd_bias(ex, m->dgate, DW(R_BUP), m->dh, a->gate, N, (int)H)) fused = 0;
        if (!fused) be->gelu_bwd(ex, m->dgate, m->dh, a->gate, N * H);
        smj_drop16(m, m->dh, N * H);
    }
    be->matmul(ex, DW(R_WUP), a->ln2, m->dgate, C, H, N, 1, 0, 1);
    if (!fused) smj_model_bias_bwd(m, DW(R_BUP), m->dgate, N, H);
    smj_fresh16(m, m->dln, N * C);
    be->matmul(ex, m->dln, m->dgate, W(R_WUP), N, C, H, 0, 1, 0);
    smj_drop16(m, m->dgate, N * H);
    be->layernorm_bwd(ex, m->dres, DW(R_FFN_NORM), DW(R_FFN_NORM_B), m->dln, a->res_mid, W(R_FFN_NORM), a->ln2_mean,
                      a->ln2_rstd, N, (int)C, 1); /* dres += : dL/dres_mid */
    smj_drop16(m, m->dln, N * C);
    /* attention: res_mid = x + att · Wo + bo */
    be->matmul(ex, DW(R_WO), a->att, m->dres, C, C, N, 1, 0, 1);
    smj_model_bias_bwd(m, DW(R_BO), m->dres, N, C);
    smj_fresh16(m, m->datt, N * C);
    be->matmul(ex, m->datt, m->dres, W(R_WO), N, C, C, 0, 1, 0);
    /* dq|dk|dv and c_attn's bias gradient in one pass where the backend has
     * it (dqkv is then read only by its two products: bf16 alone) */
    float sc = 1.0f / sqrtf((float)HS);
    int fb = be->attention_bwd_bias != NULL;
    if (fb) smj_fresh16(m, m->dqkv, 3 * N * C);
    if (fb && !be->attention_bwd_bias(ex, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, DW(R_BQKV), m->datt, a->att, a->lse,
                                      a->qkv, a->qkv + C, a->qkv + 2 * C, B, T, NH, NH, HS, 3 * C, 3 * C, 0, 0, sc))
        fb = 0;
    if (!fb)
        be->attention_bwd(ex, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, m->datt, a->att, a->lse, a->qkv, a->qkv + C,
                          a->qkv + 2 * C, B, T, NH, NH, HS, 3 * C, 3 * C, 0, 0, sc);
    smj_drop16(m, m->datt, N * C);
    be->matmul(ex, DW(R_WQKV), a->ln1, m->dqkv, C, 3 * C, N, 1, 0, 1);
    if (!fb) smj_model_bias_bwd(m, DW(R_BQKV), m->dqkv, N, 3 * C);
    smj_fresh16(m, m->dln, N * C);
    be->matmul(ex, m->dln, m->dqkv, W(R_WQKV), N, C, 3 * C, 0, 1, 0);
    smj_drop16(m, m->dqkv, 3 * N * C);
    be->layernorm_bwd(ex, m->dres, DW(R_ATTN_NORM), DW(R_ATTN_NORM_B), m->dln, x, W(R_ATTN_NORM), a->ln1_mean,
                      a->ln1_rstd, N, (int)C, 1); /* dres += : dL/dx */
    smj_drop16(m, m->dln, N * C);
#undef W
#undef DW
}

void smj_gpt2_backward(smj_model *m, int B, int T) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int64_t N = (int64_t)B * T;
    int C = c->dim;
    be->layernorm_bwd(ex, m->dres, smj_model_ptr(m, m->grads, R_FINAL_NORM, -1),
                      smj_model_ptr(m, m->grads, R_FINAL_NORM_B, -1), m->dln, smj_acts_load(m, c->n_layers, B, T),
                      smj_model_ptr(m, m->params, R_FINAL_NORM, -1), m->lnf_mean, m->lnf_rstd, N, C, 0);
    for (int l = c->n_layers - 1; l >= 0; l--) block_backward(m, l, B, T, smj_acts_load(m, l, B, T));
    be->embedding_bwd(ex, smj_model_ptr(m, m->grads, R_EMBED, -1), m->ids, m->dres, N, C);
    be->embedding_bwd(ex, smj_model_ptr(m, m->grads, R_POS_EMBED, -1), m->pos, m->dres, N, C);
}
