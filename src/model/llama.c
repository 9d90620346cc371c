/* llama.c — the dense Llama-family decoder: tensor table, forward, backward.
 *
 * Pre-norm blocks: x += Wo·attn(rope(qknorm(Wq·rms(x))), ...); x += Wd·(silu(Wg·rms(x)) * Wu·rms(x)).
 * Optional Qwen3 QK-norm (RMSNorm over each head of q and k, before RoPE,
 * weights [HS] shared by heads), GQA, tied or untied LM head, optional
 * attention biases (q/k/v: Qwen2, HF attention_bias; o: HF attention_bias).
 * RoPE is HuggingFace's half-split rotation with cos/sin tables computed
 * once per model (rope.c).
 *
 * Biases go through the existing matmul op with a ones vector (no op of
 * their own): forward out[N,O] += ones[N,1]·b[1,O], backward
 * db[1,O] += ones[1,N]·dout[N,O], so every backend has them.
 *
 * Every computation goes through m->be (the op table), so the same code runs
 * on every backend. Forward and backward sit side by side; the backward
 * follows the accumulation rule of ops.h: parameter grads +=, activation
 * grads written, except dres (the residual stream), which accumulates.
 *
 * Training-memory options (smj_train_options, struct smj_model in model.h):
 * fused_ce runs the LM head + cross-entropy chunk by chunk of rows and
 * recomputes each chunk in the backward (a train step,
 * smj_model_forward_backward, takes the head's gradient in its forward
 * instead, under every option: head_grad); gradient_checkpointing keeps one
 * block's activations and recomputes each block before its backward;
 * fp16_activations keeps what the backward reads as bf16 (bf16_pack after
 * each block, bf16_unpack before its backward). They change what
 * carve_acts lays out and the loops below (smj_res_fwd, smj_acts_save,
 * smj_acts_load), not the ops.
 */
#include <math.h>
#include <string.h>
#include "model.h"
#include "../gguf/gguf.h"

/* Rows of the bias ones vector: a bias add or gradient over more rows runs
 * in chunks of this many (256 KiB of ones; one chunk at B·T = 32768). */
#define BIAS_ROWS 65536

/* ------------------------------------------------------------ the table */

typedef struct { smj_role role; const char *fmt; int per_layer; } role_name;
static const role_name ROLE_NAMES[R_COUNT] = {
    {R_EMBED, "model.embed_tokens.weight", 0},
    {R_ATTN_NORM, "model.layers.%d.input_layernorm.weight", 1},
    {R_WQ, "model.layers.%d.self_attn.q_proj.weight", 1},
    {R_BQ, "model.layers.%d.self_attn.q_proj.bias", 1},
    {R_WK, "model.layers.%d.self_attn.k_proj.weight", 1},
    {R_BK, "model.layers.%d.self_attn.k_proj.bias", 1},
    {R_WV, "model.layers.%d.self_attn.v_proj.weight", 1},
    {R_BV, "model.layers.%d.self_attn.v_proj.bias", 1},
    {R_WO, "model.layers.%d.self_attn.o_proj.weight", 1},
    {R_BO, "model.layers.%d.self_attn.o_proj.bias", 1},
    {R_Q_NORM, "model.layers.%d.self_attn.q_norm.weight", 1},
    {R_K_NORM, "model.layers.%d.self_attn.k_norm.weight", 1},
    {R_FFN_NORM, "model.layers.%d.post_attention_layernorm.weight", 1},
    {R_WGATE, "model.layers.%d.mlp.gate_proj.weight", 1},
    {R_WUP, "model.layers.%d.mlp.up_proj.weight", 1},
    {R_WDOWN, "model.layers.%d.mlp.down_proj.weight", 1},
    {R_FINAL_NORM, "model.norm.weight", 0},
    {R_LM_HEAD, "lm_head.weight", 0},
};

/* Shape of (role) for cfg; ndim 0 when the model has no such tensor. */
static int role_shape(const smj_model_config *c, smj_role r, int64_t shape[4]) {
    int64_t C = c->dim, HS = c->head_dim, QD = (int64_t)c->n_heads * HS, KD = (int64_t)c->n_kv_heads * HS;
    int64_t H = c->ffn_hidden, V = c->vocab_size;
    switch (r) {
    case R_EMBED: shape[0] = V; shape[1] = C; return 2;
    case R_ATTN_NORM: case R_FFN_NORM: case R_FINAL_NORM: shape[0] = C; return 1;
    case R_WQ: shape[0] = QD; shape[1] = C; return 2;
    case R_WK: case R_WV: shape[0] = KD; shape[1] = C; return 2;
    case R_WO: shape[0] = C; shape[1] = QD; return 2;
    case R_BQ: if (!c->attn_bias) return 0; shape[0] = QD; return 1;
    case R_BK: case R_BV: if (!c->attn_bias) return 0; shape[0] = KD; return 1;
    case R_BO: if (!c->attn_out_bias) return 0; shape[0] = C; return 1;
    case R_Q_NORM: case R_K_NORM: if (!c->qk_norm) return 0; shape[0] = HS; return 1;
    case R_WGATE: case R_WUP: shape[0] = H; shape[1] = C; return 2;
    case R_WDOWN: shape[0] = C; shape[1] = H; return 2;
    case R_LM_HEAD: if (c->tied_embeddings) return 0; shape[0] = V; shape[1] = C; return 2;
    default: return 0;
    }
}

void smj_spec_place(smj_tensor_spec *t, smj_role role, int layer, const char *name_fmt, int64_t *off) {
    t->role = role;
    t->layer = layer;
    snprintf(t->name, sizeof t->name, name_fmt, layer);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) t->numel *= t->shape[d];
    t->offset = *off;
    t->decay = t->ndim >= 2;
    t->dtype = SMJ_DTYPE_F32;
    t->nbytes = (int64_t)sizeof(float) * t->numel;
    *off += t->numel;
}

int64_t smj_vocab_rows(const smj_model_config *c) { return ((int64_t)c->vocab_size + 63) / 64 * 64; }

int64_t smj_spec_pad(const smj_model_config *c, smj_role role) {
    int head = role == R_LM_HEAD || (role == R_EMBED && c->tied_embeddings);
    return head ? (smj_vocab_rows(c) - c->vocab_size) * c->dim : 0;
}

/* Layer-major order: embedding, then each layer's tensors, then the final
 * norm and head. The checkpoint format stores them in this order. */
smj_status smj_model_build_specs(smj_ctx *ctx, const smj_model_config *c, smj_tensor_spec **specs_out,
                                 int *n_out, int64_t *n_params) {
    if (c->arch == SMJ_ARCH_GPT2) return smj_gpt2_build_specs(ctx, c, specs_out, n_out, n_params);
    SMJ_TRY(smj_config_validate(ctx, c));
    int cap = R_COUNT * (c->n_layers + 1), n = 0;
    smj_tensor_spec *s = calloc((size_t)cap, sizeof *s);
    if (!s) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory for the tensor table");
    int64_t off = 0;
    for (int pass = 0; pass < 3; pass++) {          /* 0: model-level head, 1: layers, 2: tail */
        int l0 = pass == 1 ? 0 : -1, l1 = pass == 1 ? c->n_layers : 0;
        for (int l = l0; l < l1; l++)
            for (int r = 0; r < R_COUNT; r++) {
                const role_name *rn = &ROLE_NAMES[r];
                if (rn->per_layer != (pass == 1)) continue;
                if (pass == 0 && r != R_EMBED) continue;
                if (pass == 2 && r == R_EMBED) continue;
                smj_tensor_spec *t = &s[n];
                t->ndim = role_shape(c, (smj_role)r, t->shape);
                if (!t->ndim) continue;
                smj_spec_place(t, (smj_role)r, l, rn->fmt, &off);
                off += smj_spec_pad(c, (smj_role)r);
                n++;
            }
    }
    *specs_out = s;
    *n_out = n;
    *n_params = off;
    return SMJ_OK;
}

float *smj_model_ptr(const smj_model *m, float *buf, smj_role role, int layer) {
    if (role == R_LM_HEAD && m->cfg.tied_embeddings) role = R_EMBED;
    int i = m->index[(int)role * (m->cfg.n_layers + 1) + (layer < 0 ? m->cfg.n_layers : layer)];
    return i < 0 || !buf || m->specs[i].dtype != SMJ_DTYPE_F32 ? NULL : buf + m->specs[i].offset;
}

void smj_model_linear(smj_model *m, smj_role role, int layer, float *out, const float *in, int64_t N,
                      int64_t O, int64_t I) {
    const smj_exec *ex = &m->ctx->exec;
    if (m->qmem) {
        smj_role r = role == R_LM_HEAD && m->cfg.tied_embeddings ? R_EMBED : role;
        int i = m->index[(int)r * (m->cfg.n_layers + 1) + (layer < 0 ? m->cfg.n_layers : layer)];
        if (i >= 0 && m->specs[i].dtype != SMJ_DTYPE_F32) { /* alloc_typed checked qmatmul */
            m->be->qmatmul(ex, out, in, m->qmem + m->specs[i].offset, m->specs[i].dtype, N, O, I, 0);
            return;
        }
    }
    m->be->matmul(ex, out, in, smj_model_ptr(m, m->params, role, layer), N, O, I, 0, 1, 0);
}

smj_status smj_model_embed(smj_model *m, float *out, const int32_t *ids_host, const int32_t *ids_dev,
                           int64_t N) {
    int i = m->index[(int)R_EMBED * (m->cfg.n_layers + 1) + m->cfg.n_layers];
    const smj_tensor_spec *t = &m->specs[i];
    int C = m->cfg.dim;
    if (t->dtype == SMJ_DTYPE_F32) {
        m->be->embedding_fwd(&m->ctx->exec, out, ids_dev, m->params + t->offset, N, C);
        return SMJ_OK;
    }
    /* Only the looked-up rows are dequantized (on the host; the rows reach
     * it through download, a memcpy for host backends). */
    int64_t rb = t->nbytes / t->shape[0];
    float *host = malloc(sizeof(float) * (size_t)(N * C));
    uint8_t *row = malloc((size_t)rb);
    if (!host || !row) {
        free(host);
        free(row);
        SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory");
    }
    for (int64_t r = 0; r < N; r++) {
        m->be->download(row, m->qmem + t->offset + (int64_t)ids_host[r] * rb, (size_t)rb);
        smj_dequantize(t->dtype, row, host + r * C, C);
    }
    m->be->upload(out, host, sizeof(float) * (size_t)(N * C));
    free(host);
    free(row);
    return SMJ_OK;
}

/* ------------------------------------------------------- model buffers */

smj_status smj_model_alloc(smj_ctx *ctx, const smj_model_config *cfg, smj_model **out) {
    return smj_model_alloc_typed(ctx, cfg, NULL, NULL, out);
}

smj_status smj_model_alloc_typed(smj_ctx *ctx, const smj_model_config *cfg, const int *dtype,
                                 const int64_t *nbytes, smj_model **out) {
    *out = NULL;
    smj_model *m = calloc(1, sizeof *m);
    if (!m) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    m->ctx = ctx;
    m->be = ctx->backend;
    m->cfg = *cfg;
    smj_status st = smj_model_build_specs(ctx, cfg, &m->specs, &m->n_tensors, &m->n_params);
    if (st) { free(m); return st; }
    if (dtype) { /* typed tensors move to qmem; the f32 ones close up in params */
        int64_t off = 0, qoff = 0;
        for (int i = 0; i < m->n_tensors; i++) {
            smj_tensor_spec *t = &m->specs[i];
            if (dtype[i] == SMJ_DTYPE_F32) {
                t->offset = off;
                off += t->numel + smj_spec_pad(cfg, t->role);
                continue;
            }
            t->dtype = dtype[i];
            t->nbytes = nbytes[i];
            t->offset = qoff;
            qoff += (nbytes[i] + 63) & ~(int64_t)63;
        }
        m->n_params = off;
        m->qbytes = qoff;
        if (qoff && !m->be->qmatmul) {
            free(m->specs);
            free(m);
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "quantized weights need the qmatmul op, which the %s backend lacks",
                     ctx->backend->name);
        }
    }
    int L1 = cfg->n_layers + 1;
    m->index = malloc(sizeof(int) * (size_t)R_COUNT * L1);
    m->params = m->be->alloc(sizeof(float) * (size_t)(m->n_params ? m->n_params : 1));
    if (m->qbytes && !(m->qmem = m->be->alloc((size_t)m->qbytes))) m->params = (m->be->free(m->params), NULL);
    size_t rope_n = (size_t)cfg->max_seq_len * (cfg->head_dim / 2);
    float *cs = malloc(sizeof(float) * rope_n * 2), *sn = cs ? cs + rope_n : NULL;
    m->rope_cos = m->be->alloc(sizeof(float) * rope_n);
    m->rope_sin = m->be->alloc(sizeof(float) * rope_n);
    int dyn = cfg->rope_type == SMJ_ROPE_DYNAMIC, bias = cfg->attn_bias || cfg->attn_out_bias || cfg->arch == SMJ_ARCH_GPT2;
    if (dyn) m->rope_row_len = malloc(sizeof(int64_t) * (size_t)cfg->max_seq_len);
    if (bias) m->ones = m->be->alloc(sizeof(float) * (size_t)BIAS_ROWS);
    if (!m->index || !m->params || !cs || !m->rope_cos || !m->rope_sin || (dyn && !m->rope_row_len) ||
        (bias && !m->ones)) {
        free(cs);
        smj_model_free(m);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory for %lld parameters", (long long)m->n_params);
    }
    for (int i = 0; i < R_COUNT * L1; i++) m->index[i] = -1;
    for (int i = 0; i < m->n_tensors; i++) {
        const smj_tensor_spec *t = &m->specs[i];
        m->index[(int)t->role * L1 + (t->layer < 0 ? cfg->n_layers : t->layer)] = i;
    }
    int hi = m->index[(int)(cfg->tied_embeddings ? R_EMBED : R_LM_HEAD) * L1 + cfg->n_layers];
    m->head_ld = hi >= 0 && m->specs[hi].dtype == SMJ_DTYPE_F32 ? smj_vocab_rows(cfg) : cfg->vocab_size;
    /* dynamic: built for the original context (= the default RoPE); rows
     * past it are rebuilt per sequence length by smj_rope_prepare */
    float inv[512], attn;
    int64_t L0 = dyn && cfg->rope_orig_max_pos > 0 ? cfg->rope_orig_max_pos : cfg->max_seq_len;
    smj_rope_inv_freq(cfg, L0, inv, &attn);
    smj_rope_rows(cfg, inv, attn, 0, cfg->max_seq_len, cs, sn);
    m->be->upload(m->rope_cos, cs, sizeof(float) * rope_n);
    m->be->upload(m->rope_sin, sn, sizeof(float) * rope_n);
    if (dyn) {
        for (int p = 0; p < cfg->max_seq_len; p++) m->rope_row_len[p] = L0;
        m->rope_host = cs; /* kept as the rebuild scratch */
    } else {
        free(cs);
    }
    if (bias) {
        float *one = malloc(sizeof(float) * (size_t)BIAS_ROWS);
        if (!one) { smj_model_free(m); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
        for (int p = 0; p < BIAS_ROWS; p++) one[p] = 1.0f;
        m->be->upload(m->ones, one, sizeof(float) * (size_t)BIAS_ROWS);
        free(one);
    }
    *out = m;
    return SMJ_OK;
}

smj_status smj_model_create(smj_ctx *ctx, const smj_model_config *cfg, uint64_t seed, smj_model **out) {
    smj_model *m;
    SMJ_TRY(smj_model_alloc(ctx, cfg, &m));
    float *host = calloc((size_t)m->n_params, sizeof(float)); /* (the head's padding rows stay 0) */
    if (!host) { smj_model_free(m); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
    smj_rng rng;
    smj_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const smj_tensor_spec *t = &m->specs[i];
        float *p = host + t->offset;
        int is_bias = t->role == R_BQ || t->role == R_BK || t->role == R_BV || t->role == R_BO ||
                      t->role == R_ATTN_NORM_B || t->role == R_BQKV || t->role == R_FFN_NORM_B || t->role == R_BUP ||
                      t->role == R_BDOWN || t->role == R_FINAL_NORM_B;
        for (int64_t j = 0; j < t->numel; j++) p[j] = t->ndim >= 2 ? 0.02f * smj_rng_normal(&rng) : is_bias ? 0.0f : 1.0f;
    }
    m->be->upload(m->params, host, sizeof(float) * (size_t)m->n_params);
    free(host);
    *out = m;
    return SMJ_OK;
}

void smj_model_free(smj_model *m) {
    if (!m) return;
    const smj_backend *be = m->be; /* (nothing is lazy here: every backward and drop_acts end that) */
    be->free(m->params); be->free(m->grads); be->free(m->rope_cos); be->free(m->rope_sin);
    be->free(m->act_mem); be->free(m->bwd_mem); be->free(m->ones); be->free(m->qmem); be->free(m->full_logits);
    free(m->blk); free(m->specs); free(m->index); free(m->rope_row_len); free(m->rope_host);
    free(m->loss_host);
    free(m);
}

const smj_model_config *smj_model_get_config(const smj_model *m) { return &m->cfg; }
int64_t smj_model_num_params(const smj_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->specs[i].numel;
    return n;
}

static smj_status check_f32(const smj_model *m, int i) {
    const smj_tensor_spec *t = &m->specs[i];
    if (t->dtype == SMJ_DTYPE_F32) return SMJ_OK;
    const char *tn = smj_ggml_type_name(t->dtype);
    SMJ_FAIL(m->ctx, SMJ_ERR_UNSUPPORTED, "tensor %s is kept in GGML %s blocks (GGUF): it has no f32 view",
             t->name, tn ? tn : "?");
}
int smj_model_num_tensors(const smj_model *m) { return m->n_tensors; }

smj_status smj_model_tensor(smj_model *m, int i, smj_tensor_view *v) {
    if (i < 0 || i >= m->n_tensors) SMJ_FAIL(m->ctx, SMJ_ERR_INVALID, "tensor index %d out of range", i);
    SMJ_TRY(check_f32(m, i));
    const smj_tensor_spec *t = &m->specs[i];
    memset(v, 0, sizeof *v);
    v->name = t->name;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    v->numel = t->numel;
    v->data = m->params + t->offset;
    v->grad = m->grads ? m->grads + t->offset : NULL;
    return SMJ_OK;
}

smj_status smj_model_tensor_get(smj_model *m, int i, int grad, float *dst) {
    if (i < 0 || i >= m->n_tensors) SMJ_FAIL(m->ctx, SMJ_ERR_INVALID, "tensor index %d out of range", i);
    SMJ_TRY(check_f32(m, i));
    const float *src = grad ? m->grads : m->params;
    if (!src) SMJ_FAIL(m->ctx, SMJ_ERR_INVALID, "no gradients yet (run a backward first)");
    m->be->download(dst, src + m->specs[i].offset, sizeof(float) * (size_t)m->specs[i].numel);
    return SMJ_OK;
}

float *smj_model_params_host(smj_model *m) {
    if (!m->be->init) return m->params; /* host memory (device backends have an init hook) */
    float *h = malloc(sizeof(float) * (size_t)(m->n_params > 0 ? m->n_params : 1));
    if (h) m->be->download(h, m->params, sizeof(float) * (size_t)m->n_params);
    return h;
}

void smj_model_params_release(smj_model *m, float *host, int written) {
    if (!host || host == m->params) return;
    if (written) m->be->upload(m->params, host, sizeof(float) * (size_t)m->n_params);
    free(host);
}

smj_status smj_model_tensor_set(smj_model *m, int i, const float *src) {
    if (i < 0 || i >= m->n_tensors) SMJ_FAIL(m->ctx, SMJ_ERR_INVALID, "tensor index %d out of range", i);
    SMJ_TRY(check_f32(m, i));
    m->be->upload(m->params + m->specs[i].offset, src, sizeof(float) * (size_t)m->specs[i].numel);
    return SMJ_OK;
}

smj_status smj_model_ensure_grads(smj_model *m) {
    if (m->grads) return SMJ_OK;
    m->grads = m->be->alloc(sizeof(float) * (size_t)m->n_params);
    if (!m->grads) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory for gradients");
    return SMJ_OK;
}

smj_status smj_model_zero_grad(smj_model *m) {
    SMJ_TRY(smj_model_ensure_grads(m));
    m->be->zero(m->grads, sizeof(float) * (size_t)m->n_params);
    return SMJ_OK;
}

/* ------------------------------------------------------- activations */

/* Carves activation buffers from one allocation. With base == NULL it only
 * counts; the same walk assigns the pointers, so size and layout agree. */
typedef struct { float *base; int64_t off; } carver;
static float *take(carver *cv, int64_t n) {
    float *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (n + 15) & ~(int64_t)15;
    return p;
}

/* Rows of the fused-CE chunk starting at row r0 of N (chunks of R rows; a
 * last chunk of 1 row joins the one before, so the GEMM never takes its
 * one-row path for a row the unfused product computes with the blocked one). */
static int64_t ce_chunk(int64_t N, int64_t R, int64_t r0) {
    int64_t n = N - r0 < R ? N - r0 : R;
    return N - r0 - n == 1 ? n + 1 : n;
}

/* Rows per block of the LM head's backward (and of the bf16 logits'
 * forward): ce_chunk_rows when set, else smj_head_bwd_rows. */
static int64_t head_rows(const smj_model_config *c, const smj_train_options *o, int64_t N, int bf16_dev) {
    if (o && o->ce_chunk_rows > 0) return o->ce_chunk_rows < N ? o->ce_chunk_rows : N;
    return smj_head_bwd_rows(c, N, bf16_dev);
}

/* Under fp16_activations (without fused_ce) the logits a training forward
 * keeps are bf16 [N,V] (logits16) when that saves memory: N at least twice
 * the rows of a block, whose fp32 logits go through ce_buf. */
static int64_t logits16_rows(const smj_model_config *c, const smj_train_options *o, int64_t N) {
    if (!o || !o->fp16_activations || o->fused_ce) return 0;
    int64_t R = head_rows(c, o, N, 1);
    return N >= 2 * R ? R : 0;
}

/* The floats of the LM head's chunk buffer ce_buf: a fused_ce chunk's
 * logits, or with 16-bit logits one block's fp32 logits (+1 row: a last row
 * joins the block before, ce_chunk); 0 when the logits are kept whole. */
static int64_t ce_floats(const smj_model_config *c, int64_t N, const smj_train_options *o) {
    int64_t V = smj_vocab_rows(c), R16 = logits16_rows(c, o, N); /* (rows of a quantized head are closer) */
    if (o && o->fused_ce) {
        int64_t R = smj_ce_chunk_rows(c, o, N);
        return (R < N ? R + 1 : N) * V;
    }
    return R16 ? (R16 + 1) * V : 0;
}

/* The logits [N,V]; with fused_ce nothing (ce_buf is placed by ce_ready);
 * with 16-bit logits their bf16 copy (see struct smj_model). */
static void take_logits(const smj_model_config *c, int64_t N, const smj_train_options *o, carver *cv, smj_model *m) {
    int64_t V = smj_vocab_rows(c), R16 = logits16_rows(c, o, N);
    if (o && o->fused_ce) {
        if (m) { m->ce_buf = NULL; m->logits = NULL; m->logits16 = NULL; }
    } else if (R16) {
        uint16_t *q = (uint16_t *)take(cv, (N * V + 1) / 2);
        if (m) { m->ce_buf = NULL; m->logits = NULL; m->logits16 = q; m->l16_rows = R16; }
    } else {
        float *p = take(cv, N * V);
        if (m) { m->logits = p; m->ce_buf = NULL; m->logits16 = NULL; }
    }
}

/* A block's activation tensors and how each is kept for the backward:
 *  SAVE: [N, width], read by the backward (bf16 copies under fp16_activations)
 *  STAT: a few values per row, read by the backward (fp32, per layer, always)
 *  TEMP: forward-only: one for all layers (none at present)
 * The order is the carve order. */
enum { SLOT_SAVE, SLOT_STAT, SLOT_TEMP, MAX_SLOTS = 20 };
typedef struct { float **p; int64_t n; int kind; } act_slot;
static int block_slots(const smj_model_config *c, int64_t N, smj_block_acts *a, act_slot *s) {
    int64_t C = c->dim, H = c->ffn_hidden;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int k = 0;
#define SLOT(field, count, kind) s[k++] = (act_slot){&a->field, (count), (kind)}
    if (c->arch == SMJ_ARCH_GPT2) {
        SLOT(ln1, N * C, SLOT_SAVE); SLOT(ln1_mean, N, SLOT_STAT); SLOT(ln1_rstd, N, SLOT_STAT);
        SLOT(qkv, 3 * N * C, SLOT_SAVE); /* q|k|v rows, read in place (row stride 3C) */
        SLOT(att, N * C, SLOT_SAVE); SLOT(lse, N * c->n_heads, SLOT_STAT);
        SLOT(res_mid, N * C, SLOT_SAVE);
        SLOT(ln2, N * C, SLOT_SAVE); SLOT(ln2_mean, N, SLOT_STAT); SLOT(ln2_rstd, N, SLOT_STAT);
        SLOT(gate, N * H, SLOT_SAVE); SLOT(hsw, N * H, SLOT_SAVE); /* pre-GELU, post-GELU */
    } else {
        SLOT(ln1, N * C, SLOT_SAVE); SLOT(ln1_rstd, N, SLOT_STAT);
        if (c->qk_norm) {
            SLOT(q_pre, N * QD, SLOT_SAVE); SLOT(k_pre, N * KD, SLOT_SAVE);
            SLOT(q_rstd, N * c->n_heads, SLOT_STAT); SLOT(k_rstd, N * c->n_kv_heads, SLOT_STAT);
        }
        if (a->qkv_fused) { SLOT(q, N * (QD + 2 * KD), SLOT_SAVE); } /* k, v: views (carve_acts) */
        else { SLOT(q, N * QD, SLOT_SAVE); SLOT(k, N * KD, SLOT_SAVE); SLOT(v, N * KD, SLOT_SAVE); }
        SLOT(att, N * QD, SLOT_SAVE); SLOT(lse, N * c->n_heads, SLOT_STAT);
        SLOT(res_mid, N * C, SLOT_SAVE);
        SLOT(ln2, N * C, SLOT_SAVE); SLOT(ln2_rstd, N, SLOT_STAT);
        SLOT(gate, 2 * N * H, SLOT_SAVE); SLOT(hsw, N * H, SLOT_SAVE); /* gate|up, smj_gu_views */
    }
#undef SLOT
    return k;
}

/* bf16 values of a SAVE tensor of n elements in a block's saved16 (each
 * copy starts 32-byte aligned). */
static int64_t saved16_len(int64_t n) { return (n + 15) & ~(int64_t)15; }
static uint16_t *take16(carver *cv, int64_t n) { return (uint16_t *)take(cv, (n + 1) / 2); }

/* The walk over everything a training forward keeps. Plain: the residual
 * stream [L+1,N,C] and every block's tensors. gradient_checkpointing: one
 * block's tensors for all layers (recomputed in the backward).
 * fp16_activations: the residual stream as bf16 [L+1,N,C] plus two fp32
 * [N,C] buffers the forward alternates between; without checkpointing,
 * one block's fp32 SAVE tensors for all layers, per layer a bf16 copy of
 * them (saved16) and the STAT tensors. */
static void carve_acts(const smj_model_config *c, int B, int T, const smj_train_options *o, carver *cv,
                       smj_model *m) {
    int64_t N = (int64_t)B * T, C = c->dim, L = c->n_layers;
    int ckpt = o && o->gradient_checkpointing, h16 = o && o->fp16_activations, blk16 = h16 && !ckpt;
    uint16_t *res16 = NULL;
    float *res = NULL, *stage = NULL;
    if (h16) { res16 = take16(cv, (L + 1) * N * C); stage = take(cv, 2 * N * C); }
    else res = take(cv, (L + 1) * N * C);
    float *tmp = take(cv, N * C);
    if (m) { m->res = res; m->res16 = res16; m->stage = stage; }
    /* q, k, v as one [N, QD + 2 KD] tensor (one product forward, attention
     * reading its rows in place) where the weights allow; the sizes are the
     * same either way (estimates carve with m NULL) */
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int fused = c->arch != SMJ_ARCH_GPT2 && !c->qk_norm && !c->attn_bias;
    for (int l = 0; fused && m && l < L; l++) {
        const float *wq = smj_model_ptr(m, m->params, R_WQ, l), *wk = smj_model_ptr(m, m->params, R_WK, l),
                    *wv = smj_model_ptr(m, m->params, R_WV, l);
        fused = wq && wk == wq + QD * C && wv == wk + KD * C;
    }
    smj_block_acts a0 = {.qkv_fused = fused};
    act_slot s0[MAX_SLOTS], s[MAX_SLOTS];
    int ns = block_slots(c, N, &a0, s0);
    for (int l = 0; l < L; l++) {
        smj_block_acts a = {.qkv_fused = fused};
        block_slots(c, N, &a, s);
        int64_t n16 = 0;
        for (int i = 0; i < ns; i++) {
            int shared = l > 0 && (ckpt || s[i].kind == SLOT_TEMP || (blk16 && s[i].kind == SLOT_SAVE));
            *s[i].p = shared ? *s0[i].p : take(cv, s[i].n);
            if (blk16 && s[i].kind == SLOT_SAVE) n16 += saved16_len(s[i].n);
        }
        if (blk16) a.saved16 = take16(cv, n16);
        if (fused) { a.k = a.q + QD; a.v = a.k + KD; }
        a.tmp = tmp;
        if (l == 0) a0 = a;
        if (m) m->blk[l] = a;
    }
    float *lnf = take(cv, N * C), *lnf_mean = c->arch == SMJ_ARCH_GPT2 ? take(cv, N) : NULL, *lnf_rstd = take(cv, N);
    take_logits(c, N, o, cv, m);
    float *losses = take(cv, N), *xlse = take(cv, N);
    float *ids = take(cv, N), *tgts = take(cv, N), *pos = c->arch == SMJ_ARCH_GPT2 ? take(cv, N) : NULL;
    if (m) {
        m->lnf = lnf; m->lnf_mean = lnf_mean; m->lnf_rstd = lnf_rstd; m->losses = losses; m->xlse = xlse;
        m->ids = (int32_t *)ids; m->tgts = (int32_t *)tgts; m->pos = (int32_t *)pos;
    }
}

float *smj_res_fwd(smj_model *m, int l, int64_t N) {
    int64_t C = m->cfg.dim;
    return m->res16 ? m->stage + (l & 1) * N * C : m->res + l * N * C;
}

/* The backward's view of a saved tensor: bound (bf16_bind: a backend
 * keeping bf16 copies reads x16 itself where it can), else unpacked. */
static void unpack16(smj_model *m, float *out, const uint16_t *x16, int64_t n) {
    if (m->be->bf16_bind) m->be->bf16_bind(&m->ctx->exec, out, x16, n);
    else m->be->bf16_unpack(&m->ctx->exec, out, x16, n);
}

/* Packs (dir 0) or unpacks / binds (dir 1) block l's SAVE tensors to /
 * from saved16. */
static void block_io16(smj_model *m, int l, int64_t N, int dir) {
    smj_block_acts *a = &m->blk[l];
    act_slot s[MAX_SLOTS];
    int ns = block_slots(&m->cfg, N, a, s);
    uint16_t *p = a->saved16;
    for (int i = 0; i < ns; i++) {
        if (s[i].kind != SLOT_SAVE) continue;
        if (dir == 0) { /* (a bf16-only one, smj_acts_home_only, lives on here alone) */
            m->be->bf16_pack(&m->ctx->exec, p, *s[i].p, s[i].n);
            smj_drop16(m, *s[i].p, s[i].n);
        } else {
            unpack16(m, *s[i].p, p, s[i].n);
        }
        p += saved16_len(s[i].n);
    }
}

/* Block l's 16-bit storage of p and p's length: one of its SAVE tensors in
 * saved16, or its output (the next block's input) in res16; NULL when p is
 * neither. */
static uint16_t *storage16(smj_model *m, int l, const float *p, int64_t N, int64_t *n) {
    *n = N * m->cfg.dim;
    if (p == smj_res_fwd(m, l + 1, N)) return m->res16 + (l + 1) * *n;
    act_slot s[MAX_SLOTS];
    int ns = block_slots(&m->cfg, N, &m->blk[l], s);
    uint16_t *q = m->blk[l].saved16;
    for (int i = 0; q && i < ns; i++) {
        if (s[i].kind != SLOT_SAVE) continue;
        if (*s[i].p == p) { *n = s[i].n; return q; }
        q += saved16_len(s[i].n);
    }
    return NULL;
}

void smj_acts_home(smj_model *m, int l, const float *p, int64_t N) {
    int64_t n;
    uint16_t *h = m->homing ? storage16(m, l, p, N, &n) : NULL;
    if (h) m->be->bf16_home(&m->ctx->exec, p, h, n);
}

void smj_acts_home_only(smj_model *m, int l, const float *p, int64_t N) {
    int64_t n;
    uint16_t *h = m->homing ? storage16(m, l, p, N, &n) : NULL;
    if (!h) return;
    m->be->bf16_home(&m->ctx->exec, p, h, n);
    if (m->be->bf16_only) m->be->bf16_only(&m->ctx->exec, p, n);
}

void smj_acts_release(smj_model *m) {
    if (m->be->bf16_drop) m->be->bf16_drop(&m->ctx->exec, NULL, 0);
}

void smj_only16(smj_model *m, const float *p, int64_t n) {
    if (m->be->bf16_only && m->ctx->exec.bf16_matmul) m->be->bf16_only(&m->ctx->exec, p, n);
}
void smj_fresh16(smj_model *m, float *p, int64_t n) {
    if (!m->be->bf16_only || !m->ctx->exec.bf16_matmul) return;
    if (m->be->bf16_home) m->be->bf16_home(&m->ctx->exec, p, (uint16_t *)p, n);
    m->be->bf16_only(&m->ctx->exec, p, n);
}
void smj_drop16(smj_model *m, const float *p, int64_t n) {
    if (m->be->bf16_drop) m->be->bf16_drop(&m->ctx->exec, p, n);
}


void smj_acts_save(smj_model *m, int l, int B, int T) {
    if (!m->res16) return;
    int64_t N = (int64_t)B * T, C = m->cfg.dim;
    m->be->bf16_pack(&m->ctx->exec, m->res16 + l * N * C, smj_res_fwd(m, l, N), N * C);
    if (l == m->cfg.n_layers) {
        smj_acts_release(m);
        return;
    }
    /* only block l's own tensors end here: its output's last term (Wdown·h,
     * bf16 alone under fp16_activations) waits for the next block's norm */
    if (m->blk[l].saved16) block_io16(m, l, N, 0);
}

const float *smj_acts_load(smj_model *m, int l, int B, int T) {
    int64_t N = (int64_t)B * T, C = m->cfg.dim;
    const float *x = m->stage;
    smj_acts_release(m); /* the block above is done with its tensors */
    if (m->res16) unpack16(m, m->stage, m->res16 + l * N * C, N * C);
    else x = m->res + l * N * C;
    if (l == m->cfg.n_layers) return x;
    smj_block_acts *a = &m->blk[l];
    if (m->topt.gradient_checkpointing) {
        /* block l's forward again; its output (= block l+1's input) goes to
         * a->tmp, which the block's last add may overwrite in place */
        int64_t KD = (int64_t)m->cfg.n_kv_heads * m->cfg.head_dim;
        smj_block_forward(m, l, a, x, a->tmp, B, T, 0, a->k, a->v, T, (int64_t)T * KD, NULL, NULL);
    } else if (a->saved16) {
        block_io16(m, l, N, 1);
    }
    return x;
}

/* The backward's buffers. datt, dq (dqn, dkn) and the MLP's dh, dgate are
 * used only inside a block's backward, the LM head's chunk buffer (ce_buf,
 * ce_floats) only before the blocks' backward (the head's gradient, which
 * writes dln) or in a forward: ce_buf starts at datt and spans those
 * buffers, the last (dh, dgate's) as large as it needs. */
static void carve_bwd(const smj_model_config *c, int B, int T, const smj_train_options *o, carver *cv,
                      smj_model *m) {
    int64_t N = (int64_t)B * T, C = c->dim, H = c->ffn_hidden;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    float *p[8];
    /* dqn, dkn: QK-norm only (the norms' backward adds into dres) */
    int gpt2 = c->arch == SMJ_ARCH_GPT2, qkn = c->qk_norm;
    /* GPT-2: no dq, dk, dv (attention's backward writes their rows of dqkv) */
    /* Llama: dq, dk, dv in one N * (QD + 2 KD) region (block_backward lays
     * them out: fused rows or three dense tensors) */
    int64_t sz[8] = {N * C, N * C, N * QD, gpt2 ? 0 : N * (QD + 2 * KD), qkn ? N * QD : 0, qkn ? N * KD : 0, N * H,
                     gpt2 ? N * H : 2 * N * H};
    int64_t at = 0; /* (datt's offset) */
    for (int i = 0; i < 6; i++) {
        if (i == 2) at = cv->off;
        p[i] = sz[i] ? take(cv, sz[i]) : NULL;
    }
    int64_t ce = ce_floats(c, N, o), mlp = sz[6] + sz[7], room = ce - (cv->off - at);
    p[6] = take(cv, room > mlp ? room : mlp);
    p[7] = p[6] + sz[6];
    if (m) {
        m->dres = p[0]; m->dln = p[1]; m->datt = p[2]; m->dq = p[3];
        m->dqn = p[4]; m->dkn = p[5]; m->dh = p[6]; m->dgate = p[7];
        m->ce_buf = ce ? p[2] : NULL;
    }
    if (c->arch == SMJ_ARCH_GPT2) {
        float *dqkv = take(cv, 3 * N * C);
        if (m) m->dqkv = dqkv;
    }
}

int64_t smj_act_floats(const smj_model_config *c, int B, int T, const smj_train_options *o) {
    carver cv = {0};
    carve_acts(c, B, T, o, &cv, NULL);
    return cv.off;
}
int64_t smj_bwd_floats(const smj_model_config *c, int B, int T, const smj_train_options *o) {
    carver cv = {0};
    carve_bwd(c, B, T, o, &cv, NULL);
    return cv.off;
}

/* What smj_model_alloc_typed allocates besides the parameters: the RoPE
 * cos/sin tables and, for models with biases, the ones vector. */
int64_t smj_fixed_floats(const smj_model_config *c) {
    int bias = c->attn_bias || c->attn_out_bias || c->arch == SMJ_ARCH_GPT2;
    return 2 * (int64_t)c->max_seq_len * (c->head_dim / 2) + (bias ? BIAS_ROWS : 0);
}

/* Frees the activation and backward buffers (made again by the next forward). */
static void drop_acts(smj_model *m) {
    smj_acts_release(m); /* nothing lazy may outlive its memory */
    m->be->free(m->act_mem);
    m->be->free(m->bwd_mem);
    m->be->free(m->full_logits);
    m->act_mem = m->bwd_mem = m->full_logits = NULL;
    m->full_cap = 0;
    m->act_B = m->act_T = 0;
    m->logits = m->ce_buf = NULL;
    m->logits16 = NULL;
    m->last_B = m->last_T = 0;
    m->have_targets = m->head_done = 0;
    m->staged = 0;
}

static smj_status ensure_acts(smj_model *m, int B, int T) {
    if (m->act_mem && B * (int64_t)T <= (int64_t)m->act_B * m->act_T && B <= m->act_B) {
        carver cv = {m->act_mem, 0};
        carve_acts(&m->cfg, B, T, &m->topt, &cv, m);
        return SMJ_OK;
    }
    drop_acts(m);
    free(m->blk);
    m->blk = calloc((size_t)m->cfg.n_layers, sizeof *m->blk);
    int64_t n = smj_act_floats(&m->cfg, B, T, &m->topt);
    m->act_mem = m->be->alloc(sizeof(float) * (size_t)n);
    if (!m->act_mem || !m->blk) {
        m->act_B = m->act_T = 0;
        SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM,
                 "out of memory for activations of batch %d x %d (%.1f MB); lower the batch or sequence length, "
                 "accumulate gradients over smaller batches, or turn on gradient checkpointing, fused "
                 "cross-entropy and 16-bit activations", B, T, n * 4.0 / 1e6);
    }
    m->act_B = B;
    m->act_T = T;
    carver cv = {m->act_mem, 0};
    carve_acts(&m->cfg, B, T, &m->topt, &cv, m);
    return SMJ_OK;
}

smj_status smj_model_set_train_options(smj_model *m, const smj_train_options *o) {
    smj_train_options z = {0};
    if (!o) o = &z;
    SMJ_CHECK(m->ctx, o->fused_ce == 0 || o->fused_ce == 1, SMJ_ERR_INVALID, "fused_ce must be 0 or 1, not %d",
              o->fused_ce);
    SMJ_CHECK(m->ctx, o->gradient_checkpointing == 0 || o->gradient_checkpointing == 1, SMJ_ERR_INVALID,
              "gradient_checkpointing must be 0 or 1, not %d", o->gradient_checkpointing);
    SMJ_CHECK(m->ctx, o->fp16_activations == 0 || o->fp16_activations == 1, SMJ_ERR_INVALID,
              "fp16_activations must be 0 or 1, not %d", o->fp16_activations);
    SMJ_CHECK(m->ctx, o->ce_chunk_rows >= 0, SMJ_ERR_INVALID, "ce_chunk_rows must be >= 0 (0 = automatic), not %d",
              o->ce_chunk_rows);
    /* automatic fused-CE chunks: the model's backend's (m->topt holds the
     * rows the walk and the forward use, topt_set what was asked) */
    smj_train_options r = *o;
    if (r.fused_ce && !r.ce_chunk_rows && m->be == smj_backend_get(SMJ_BACKEND_CUDA))
        r.ce_chunk_rows = smj_ce_chunk_rows_auto(&m->cfg, SMJ_BACKEND_CUDA,
                                                 r.fp16_activations && m->ctx->exec.bf16_matmul);
    m->topt_set = *o;
    if (memcmp(&r, &m->topt, sizeof r) == 0) return SMJ_OK;
    drop_acts(m); /* the layout depends on the options */
    m->topt = r;
    return SMJ_OK;
}

void smj_model_get_train_options(const smj_model *m, smj_train_options *o) { *o = m->topt_set; }

static smj_status ensure_full_logits(smj_model *m, int64_t n) {
    if (m->full_logits && n <= m->full_cap) return SMJ_OK;
    m->be->free(m->full_logits);
    m->full_logits = m->be->alloc(sizeof(float) * (size_t)n);
    m->full_cap = m->full_logits ? n : 0;
    if (!m->full_logits) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory for logits (%.1f MB)", n * 4.0 / 1e6);
    return SMJ_OK;
}

/* ------------------------------------------------------- forward */

/* out[N,O] += ones[N,1] · b[1,O], in chunks of at most BIAS_ROWS rows (the ones vector);
 * one row (decoding) by the add op: out + 1·b, the same bits without a product's launch. */
static void bias_fwd(smj_model *m, float *out, const float *b, int64_t N, int64_t O) {
    if (N == 1) {
        m->be->add(&m->ctx->exec, out, out, b, O);
        return;
    }
    int64_t R = BIAS_ROWS;
    for (int64_t r0 = 0; r0 < N; r0 += R)
        m->be->matmul(&m->ctx->exec, out + r0 * O, m->ones, b, N - r0 < R ? N - r0 : R, O, 1, 0, 0, 1);
}

/* db[1,O] += ones[1,N] · dout[N,O]. */
static void bias_bwd(smj_model *m, float *db, const float *dout, int64_t N, int64_t O) {
    int64_t R = BIAS_ROWS;
    for (int64_t r0 = 0; r0 < N; r0 += R)
        m->be->matmul(&m->ctx->exec, db, m->ones, dout + r0 * O, 1, O, N - r0 < R ? N - r0 : R, 0, 0, 1);
}

void smj_model_bias_fwd(smj_model *m, float *out, const float *b, int64_t N, int64_t O) { bias_fwd(m, out, b, N, O); }
void smj_model_matmul_bias(smj_model *m, float *out, const float *A, const float *W, const float *b, int64_t N,
                           int64_t O, int64_t K, int transW) {
    const smj_exec *ex = &m->ctx->exec;
    if (m->be->matmul_bias && m->be->matmul_bias(ex, out, A, W, b, N, O, K, 0, transW)) return;
    m->be->matmul(ex, out, A, W, N, O, K, 0, transW, 0);
    bias_fwd(m, out, b, N, O);
}
void smj_model_bias_bwd(smj_model *m, float *db, const float *dout, int64_t N, int64_t O) { bias_bwd(m, db, dout, N, O); }

/* A block's first RMSNorm or the final one (l = n_layers: R_FINAL_NORM),
 * of x, or with in of x = in->a + in->b, written (in->sum) in the norm's
 * pass: block l - 1's output, whose 16-bit home it names. */
static void norm_in(smj_model *m, int l, float *out, float *rstd, const float *x, int64_t N, const smj_res_add *in) {
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    const float *w = l < c->n_layers ? smj_model_ptr(m, m->params, R_ATTN_NORM, l)
                                     : smj_model_ptr(m, m->params, R_FINAL_NORM, -1);
    if (!in) {
        m->be->rmsnorm_fwd(ex, out, rstd, x, w, N, c->dim, c->norm_eps);
        return;
    }
    smj_acts_home(m, l - 1, in->sum, N);
    m->be->add_rmsnorm_fwd(ex, in->sum, out, rstd, in->a, in->b, w, N, c->dim, c->norm_eps);
    smj_drop16(m, in->b, N * c->dim); /* (a block's Wdown·h: forward-only, bf16 alone under fp16_activations) */
}

/* The block's first part: ln1 = norm(x) (norm_in), then q, k, v (a->q,
 * a->k, a->v) before the rotation; N rows. */
static void block_qkv(smj_model *m, int l, smj_block_acts *a, const float *x, int64_t N, const smj_res_add *in) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim, C = c->dim;
    int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS;
    float *P = m->params;
#define W(role) smj_model_ptr(m, P, role, l)
    smj_acts_home_only(m, l, a->ln1, N);
    norm_in(m, l, a->ln1, a->ln1_rstd, x, N, in);
    if (c->qk_norm) {
        smj_model_linear(m, R_WQ, l, a->q_pre, a->ln1, N, QD, C);
        smj_model_linear(m, R_WK, l, a->k_pre, a->ln1, N, KD, C);
        if (c->attn_bias) {
            bias_fwd(m, a->q_pre, W(R_BQ), N, QD);
            bias_fwd(m, a->k_pre, W(R_BK), N, KD);
        }
        be->rmsnorm_fwd(ex, a->q, a->q_rstd, a->q_pre, W(R_Q_NORM), N * NH, HS, c->norm_eps);
        be->rmsnorm_fwd(ex, a->k, a->k_rstd, a->k_pre, W(R_K_NORM), N * NKV, HS, c->norm_eps);
    } else if (a->qkv_fused) {
        /* q|k|v: one product over the side-by-side weights [QD + 2 KD, C],
         * written as bf16 (rope rotates the q and k heads of its rows in that
         * copy, flash reads its rows) */
        smj_acts_home_only(m, l, a->q, N);
        be->matmul(ex, a->q, a->ln1, W(R_WQ), N, QD + 2 * KD, C, 0, 1, 0);
        return;
    } else {
        /* q, k written as bf16 by their products (rope rotates those) */
        if (!c->attn_bias) smj_acts_home_only(m, l, a->q, N);
        smj_model_linear(m, R_WQ, l, a->q, a->ln1, N, QD, C);
        if (!c->attn_bias) smj_acts_home_only(m, l, a->k, N);
        smj_model_linear(m, R_WK, l, a->k, a->ln1, N, KD, C);
        if (c->attn_bias) {
            bias_fwd(m, a->q, W(R_BQ), N, QD);
            bias_fwd(m, a->k, W(R_BK), N, KD);
        }
    }
    if (!c->attn_bias) smj_acts_home_only(m, l, a->v, N); /* the product writes v as bf16 (flash reads it so) */
    smj_model_linear(m, R_WV, l, a->v, a->ln1, N, KD, C);
    if (c->attn_bias) bias_fwd(m, a->v, W(R_BV), N, KD);
#undef W
}

/* gate and up inside gu (2*N*H values; block l): fused [N, 2H] when the
 * weights sit side by side in f32 (returns the row stride 2H), else [N, H]
 * each, one after the other (H). */
int64_t smj_gu_views(smj_model *m, int l, float *gu, int64_t N, float **g, float **u) {
    int64_t H = m->cfg.ffn_hidden;
    const float *wg = smj_model_ptr(m, m->params, R_WGATE, l), *wu = smj_model_ptr(m, m->params, R_WUP, l);
    int fused = wg && wu && wu == wg + H * m->cfg.dim;
    *g = gu;
    *u = gu + (fused ? H : N * H);
    return fused ? 2 * H : H;
}

/* The block after attention (a->att): y = res_mid + FFN(norm(res_mid)),
 * res_mid = x + Wo·att; N rows. With out, y's add is left to the op after
 * the block. */
static void block_tail(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int64_t N,
                       smj_res_add *out) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int C = c->dim, H = c->ffn_hidden;
    int64_t QD = (int64_t)c->n_heads * c->head_dim;
    /* under --fp16-activations Wo·att is bf16 alone (as autocast keeps a
     * linear's output): the residual add reads it through its copy */
    const int wo16 = m->topt.fp16_activations && !c->attn_out_bias;
    if (wo16) {
        /* the copy in y's storage, free until the block's last add (not
         * when y is tmp itself: a block recomputed in the backward) */
        if (m->homing && y != a->tmp && ex->bf16_matmul) be->bf16_home(ex, a->tmp, (uint16_t *)y, N * C);
        smj_only16(m, a->tmp, N * C);
    }
    smj_model_linear(m, R_WO, l, a->tmp, a->att, N, C, QD);
    if (c->attn_out_bias) bias_fwd(m, a->tmp, smj_model_ptr(m, m->params, R_BO, l), N, C);
    smj_acts_home(m, l, a->res_mid, N);
    smj_acts_home_only(m, l, a->ln2, N);
    be->add_rmsnorm_fwd(ex, a->res_mid, a->ln2, a->ln2_rstd, x, a->tmp, smj_model_ptr(m, m->params, R_FFN_NORM, l),
                        N, C, c->norm_eps);
    if (wo16) smj_drop16(m, a->tmp, N * C);
    /* gate|up: written as bf16 by their product(s), swiglu reads those */
    float *g, *u;
    int64_t ld = smj_gu_views(m, l, a->gate, N, &g, &u);
    smj_acts_home_only(m, l, a->gate, N);
    if (ld == 2 * H) { /* one product over the side-by-side weights [2H, C] */
        m->be->matmul(ex, a->gate, a->ln2, smj_model_ptr(m, m->params, R_WGATE, l), N, 2 * H, C, 0, 1, 0);
    } else {
        smj_model_linear(m, R_WGATE, l, g, a->ln2, N, H, C);
        smj_model_linear(m, R_WUP, l, u, a->ln2, N, H, C);
    }
    smj_acts_home_only(m, l, a->hsw, N);
    be->swiglu_fwd(ex, a->hsw, g, u, N, H, ld);
    /* Wdown·h too is bf16 alone under --fp16-activations: the next norm
     * (norm_in) adds it through its copy */
    const int dn16 = m->topt.fp16_activations && y != a->tmp;
    if (dn16) smj_only16(m, a->tmp, N * C);
    smj_model_linear(m, R_WDOWN, l, a->tmp, a->hsw, N, C, H);
    if (out) {
        *out = (smj_res_add){y, a->res_mid, a->tmp};
        return;
    }
    smj_acts_home(m, l, y, N);
    be->add(ex, y, a->res_mid, a->tmp, N * C);
    if (dn16) smj_drop16(m, a->tmp, N * C);
}

void smj_block_forward(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int B, int T,
                       int pos0, const float *kbase, const float *vbase, int Tk, int64_t kv_bstride,
                       const smj_res_add *in, smj_res_add *out) {
    if (m->cfg.arch == SMJ_ARCH_GPT2) {
        smj_gpt2_block_forward(m, l, a, x, y, B, T, pos0, kbase, vbase, Tk, kv_bstride, in, out);
        return;
    }
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    int NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim;
    int64_t N = (int64_t)B * T;
    smj_rope_prepare(m, pos0, T);
    block_qkv(m, l, a, x, N, in);
    int64_t rs = 0; /* q's (and, read in place, k's and v's) row stride: dense, or q|k|v's rows */
    if (a->qkv_fused) { /* the q and k heads of each row rotated in one pass */
        rs = (int64_t)(NH + 2 * NKV) * HS;
        smj_acts_home_only(m, l, a->q, N);
        be->rope_fwd(ex, a->q, m->rope_cos, m->rope_sin, B, T, NH + NKV, HS, pos0, rs);
    } else {
        smj_acts_home_only(m, l, a->q, N);
        be->rope_fwd(ex, a->q, m->rope_cos, m->rope_sin, B, T, NH, HS, pos0, 0);
        smj_acts_home_only(m, l, a->k, N);
        be->rope_fwd(ex, a->k, m->rope_cos, m->rope_sin, B, T, NKV, HS, pos0, 0);
        smj_acts_home(m, l, a->v, N);
    }
    smj_acts_home_only(m, l, a->att, N);
    int in_place = rs && kbase == a->k; /* a training block's own k, v rows (else a session's cache) */
    be->attention_fwd(ex, a->att, a->lse, a->q, kbase, vbase, B, T, Tk, NH, NKV, HS, rs, in_place ? rs : 0,
                      in_place ? (int64_t)T * rs : kv_bstride, 1.0f / sqrtf((float)HS));
    block_tail(m, l, a, x, y, N, out);
}

void smj_block_decode(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, float *kc, float *vc,
                      int cap, const int32_t *pos, const smj_dec_copy *dc) {
    const smj_model_config *c = &m->cfg;
    const smj_exec *ex = &m->ctx->exec;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    const float *cs, *sn;
    smj_dec_rope(m, &cs, &sn);
    smj_block_weights w;
    if (smj_dec_weights(m, l, dc, &w) &&
        m->be->decode_block(ex, y, x, &w, 1, 0, kc, vc, 0, cs, sn, pos, c->dim, c->n_heads, c->n_kv_heads,
                            c->head_dim, c->ffn_hidden, cap, c->norm_eps, scale))
        return;
    if (c->arch == SMJ_ARCH_GPT2) {
        smj_gpt2_block_decode(m, l, a, x, y, kc, vc, cap, pos);
        return;
    }
    block_qkv(m, l, a, x, 1, NULL);
    m->be->decode_attention(ex, a->att, a->q, a->k, a->v, kc, vc, cs, sn, pos, c->n_heads, c->n_kv_heads,
                            c->head_dim, cap, scale);
    block_tail(m, l, a, x, y, 1, NULL);
}

/* The gradients and the backward's buffers (carve_bwd), made on first use. */
static smj_status bwd_ready(smj_model *m, int B, int T) {
    SMJ_TRY(smj_model_ensure_grads(m));
    if (!m->bwd_mem) {
        m->bwd_mem = m->be->alloc(sizeof(float) * (size_t)smj_bwd_floats(&m->cfg, m->act_B, m->act_T, &m->topt));
        if (!m->bwd_mem) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory for the backward pass");
    }
    carver cv = {m->bwd_mem, 0};
    carve_bwd(&m->cfg, B, T, &m->topt, &cv, m);
    return SMJ_OK;
}

/* ce_buf for a forward with targets or a backward of B x T rows: in the
 * backward's memory once it exists (carve_bwd), else in full_logits (a
 * model that only evaluates). */
static smj_status ce_ready(smj_model *m, int B, int T) {
    int64_t n = ce_floats(&m->cfg, (int64_t)B * T, &m->topt);
    if (!n) return SMJ_OK;
    if (m->bwd_mem) {
        carver cv = {m->bwd_mem, 0};
        carve_bwd(&m->cfg, B, T, &m->topt, &cv, m);
        return SMJ_OK;
    }
    SMJ_TRY(ensure_full_logits(m, n));
    m->ce_buf = m->full_logits;
    return SMJ_OK;
}

/* The hints for the op writing dlogits dl [n, ld]: bf16 alone, into h16
 * when given (else where the backend keeps copies), or with tight (the
 * logits there were bf16_tight) in dl's storage, which holds no more. */
static void dl_hints(smj_model *m, float *dl, int64_t n, uint16_t *h16, int tight) {
    if (tight && m->be->bf16_tight(&m->ctx->exec, dl, n * m->logits_ld)) return;
    if (h16) m->be->bf16_home(&m->ctx->exec, dl, h16, n * m->logits_ld);
    smj_only16(m, dl, n * m->logits_ld);
}

/* The LM head's backward over rows [r0, r0 + n) whose logits are at dl
 * (ld apart): dlogits in place (a bf16 copy alone where the backend keeps
 * one), dW_head += dlogits^T lnf, dln rows = dlogits W. loss: the rows'
 * losses and lse first (a train step's forward), in one pass with dlogits
 * where the backend has xent_fwd_bwd. */
static void head_grad(smj_model *m, float *dl, int64_t r0, int64_t n, float dloss, int loss, uint16_t *h16,
                      int tight) {
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    int64_t C = m->cfg.dim, ld = m->logits_ld;
    int V = m->cfg.vocab_size;
    float *dW = smj_model_ptr(m, m->grads, R_LM_HEAD, -1), *W = smj_model_ptr(m, m->params, R_LM_HEAD, -1);
    int fb = loss && be->xent_fwd_bwd;
    if (loss && !fb) be->xent_fwd(ex, m->losses + r0, m->xlse + r0, dl, m->tgts + r0, n, V, ld);
    dl_hints(m, dl, n, h16, tight);
    if (!fb || !be->xent_fwd_bwd(ex, m->losses + r0, m->xlse + r0, dl, dl, m->tgts + r0, dloss, n, V, ld)) {
        if (fb) { /* declined: the two ops (the hints are the next op's: set again for xent_bwd) */
            be->xent_fwd(ex, m->losses + r0, m->xlse + r0, dl, m->tgts + r0, n, V, ld);
            dl_hints(m, dl, n, h16, tight);
        }
        be->xent_bwd(ex, dl, dl, m->xlse + r0, m->tgts + r0, dloss, n, V, ld);
    }
    be->matmul(ex, dW, dl, m->lnf + r0 * C, ld, C, n, 1, 0, 1);
    be->matmul(ex, m->dln + r0 * C, dl, W, n, C, ld, 0, 0, 0);
    smj_drop16(m, dl, n * ld);
}

/* The LM head's backward over the full logits m->logits [N, ld] (loss: a
 * train step's forward, the losses too), dlogits in place (the logits are
 * not needed after this). With bf16 products, in blocks of rows
 * (smj_head_bwd_rows; ce_chunk_rows when set) whose dlogits a device
 * backend keeps as one bf16 copy, written by xent_bwd beside its output
 * and read by both products, instead of casting all of dlogits for each
 * product (the blocks the backend would use). */
static void head_bwd(smj_model *m, int64_t N, float dloss, int loss) {
    /* (device backends: those with an init hook) */
    int64_t R = head_rows(&m->cfg, &m->topt, N, m->ctx->exec.bf16_matmul && m->be->init);
    for (int64_t r0 = 0, n; r0 < N; r0 += n) {
        n = ce_chunk(N, R, r0);
        head_grad(m, m->logits + r0 * m->logits_ld, r0, n, dloss, loss, NULL, 0);
    }
}

/* The LM head + cross-entropy under fused_ce, chunk by chunk of rows of
 * lnf [N, C] through ce_buf: each chunk's logits, then with loss set the
 * losses and lse (the forward), and with dloss >= 0 dlogits in place,
 * dW_head += dlogits^T lnf and dln rows = dlogits W (the backward). A
 * forward then a backward compute each chunk's logits twice; a train step
 * (smj_model_forward_backward) does both halves in one pass. */
static void fused_head(smj_model *m, int64_t N, int loss, float dloss) {
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    int64_t C = m->cfg.dim, V = m->cfg.vocab_size, ld = m->logits_ld, R = smj_ce_chunk_rows(&m->cfg, &m->topt, N);
    /* fp16_activations with bf16 products on a backend keeping copies: a
     * chunk's logits come out of the product as bf16 alone (as under
     * autocast, and as the 16-bit logits do), and cross-entropy reads them
     * so: half the bytes written and read */
    int l16 = m->topt.fp16_activations && ex->bf16_matmul && be->bf16_only;
    /* where the backend takes a home, the chunk's bf16 logits, then its
     * dlogits over them, are kept in ce_buf itself (its first half), not
     * in its copies; where it takes bf16_tight too, in chunks of up to
     * 2R + 1 rows (ce_buf holds R + 1 fp32 rows) */
    uint16_t *h16 = l16 && be->bf16_home ? (uint16_t *)m->ce_buf : NULL;
    int t16 = h16 && be->bf16_tight;
    for (int64_t r0 = 0, n; r0 < N; r0 += n) {
        n = ce_chunk(N, 2 * R, r0);
        int tight = t16 && be->bf16_tight(ex, m->ce_buf, n * ld);
        if (!tight) {
            n = ce_chunk(N, R, r0);
            if (h16) be->bf16_home(ex, m->ce_buf, h16, n * ld);
            if (l16) be->bf16_only(ex, m->ce_buf, n * ld);
        }
        smj_model_linear(m, R_LM_HEAD, -1, m->ce_buf, m->lnf + r0 * C, n, ld, C);
        if (dloss >= 0) {
            head_grad(m, m->ce_buf, r0, n, dloss, loss, h16, tight); /* (drops the chunk: ce_buf is datt .. dgate next) */
        } else {
            be->xent_fwd(ex, m->losses + r0, m->xlse + r0, m->ce_buf, m->tgts + r0, n, V, ld);
            smj_drop16(m, m->ce_buf, n * ld);
        }
    }
}

/* The mean loss over the last forward's valid targets (waits for the
 * device). */
static smj_status read_loss(smj_model *m, float *loss) {
    const int64_t N = (int64_t)m->last_B * m->last_T;
    if (N > m->loss_host_n) {
        float *h = realloc(m->loss_host, sizeof(float) * (size_t)N);
        if (!h) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory");
        m->loss_host = h;
        m->loss_host_n = N;
    }
    m->be->download(m->loss_host, m->losses, sizeof(float) * (size_t)N);
    double s = 0;
    for (int64_t i = 0; i < N; i++) s += m->loss_host[i];
    if (loss) *loss = m->n_valid ? (float)(s / (double)m->n_valid) : 0.0f;
    return SMJ_OK;
}

/* A batch's tokens checked and uploaded (with GPT-2's positions) for the
 * forward after: its count of valid targets. All of a forward's host
 * copies are here, before any kernel of the step (an upload waits for the
 * device's queue, and the targets' in mid-forward left the GPU idle while
 * the host caught up). */
static smj_status stage_batch(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                              int64_t *n_valid_out) {
    const smj_model_config *c = &m->cfg;
    SMJ_CHECK(m->ctx, B >= 1 && T >= 1, SMJ_ERR_INVALID, "batch %d x %d must be positive", B, T);
    SMJ_CHECK(m->ctx, T <= c->max_seq_len, SMJ_ERR_INVALID,
              "sequence length %d exceeds the model's maximum %d", T, c->max_seq_len);
    int64_t N = (int64_t)B * T, n_valid = 0;
    for (int64_t i = 0; i < N; i++) {
        SMJ_CHECK(m->ctx, inputs[i] >= 0 && inputs[i] < c->vocab_size, SMJ_ERR_INVALID,
                  "input token %d at position %lld is outside the vocabulary (%d)", inputs[i], (long long)i,
                  c->vocab_size);
        if (targets) {
            SMJ_CHECK(m->ctx, targets[i] < c->vocab_size, SMJ_ERR_INVALID,
                      "target token %d at position %lld is outside the vocabulary (%d)", targets[i],
                      (long long)i, c->vocab_size);
            n_valid += targets[i] >= 0;
        }
    }
    SMJ_TRY(ensure_acts(m, B, T));
    const smj_backend *be = m->be;
    be->upload(m->ids, inputs, sizeof(int32_t) * (size_t)N);
    if (targets) be->upload(m->tgts, targets, sizeof(int32_t) * (size_t)N);
    if (c->arch == SMJ_ARCH_GPT2) {
        int32_t *host = malloc(sizeof(int32_t) * (size_t)N);
        if (!host) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < N; i++) host[i] = (int32_t)(i % T);
        be->upload(m->pos, host, sizeof(int32_t) * (size_t)N);
        free(host);
    }
    *n_valid_out = n_valid;
    return SMJ_OK;
}

smj_status smj_model_stage_batch(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T) {
    m->staged = 0;
    SMJ_TRY(stage_batch(m, inputs, targets, B, T, &m->staged_valid));
    m->staged = 1;
    m->staged_B = B, m->staged_T = T, m->staged_in = inputs, m->staged_tg = targets;
    return SMJ_OK;
}

/* The forward; train: a train step's, which also takes the LM head's
 * gradient for loss_scale (m->head_done). A train step's batch staged by
 * smj_model_stage_batch from the same arrays is taken as it is; any other
 * is checked and uploaded here (and a staged one dropped: its buffers are
 * overwritten). */
static smj_status forward(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T, float *loss,
                          int train, float loss_scale) {
    const smj_model_config *c = &m->cfg;
    int64_t N = (int64_t)B * T, n_valid = 0;
    if (m->staged && train && m->staged_in == inputs && m->staged_tg == targets && m->staged_B == B &&
        m->staged_T == T) {
        m->staged = 0;
        n_valid = m->staged_valid;
    } else {
        m->staged = 0;
        SMJ_TRY(stage_batch(m, inputs, targets, B, T, &n_valid));
    }
    m->head_done = 0;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    /* logits [N, ld]: a training forward's rows padded (head_ld, the columns
     * past V 0), dense without targets (the caller wants the logits) */
    int C = c->dim, V = c->vocab_size, ld = targets ? (int)m->head_ld : V;
    m->logits_ld = ld;
    int L = c->n_layers, gpt2 = c->arch == SMJ_ARCH_GPT2;
    /* each residual add (GPT-2's wte + wpe, every block's last) is left to
     * the norm after it, which adds it in its own pass (smj_res_add) */
    smj_res_add pend, *pin = NULL;
    if (gpt2) {
        smj_gpt2_embed(m, smj_res_fwd(m, 0, N), m->blk[0].tmp, m->ids, m->pos, N, &pend);
        pin = &pend;
    } else {
        SMJ_TRY(smj_model_embed(m, smj_res_fwd(m, 0, N), inputs, m->ids, N));
    }
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    m->homing = targets && m->res16 && be->bf16_home;
    for (int l = 0; l < L; l++) {
        smj_block_acts *a = &m->blk[l];
        smj_res_add in = pin ? *pin : (smj_res_add){0};
        smj_block_forward(m, l, a, smj_res_fwd(m, l, N), smj_res_fwd(m, l + 1, N), B, T, 0, a->k, a->v, T,
                          (int64_t)T * KD, pin ? &in : NULL, &pend);
        pin = &pend;
        if (targets) smj_acts_save(m, l, B, T); /* only a forward with targets has a backward */
    }
    float *xL = smj_res_fwd(m, L, N);
    if (gpt2) smj_gpt2_final_norm(m, m->lnf, m->lnf_mean, m->lnf_rstd, xL, N, pin);
    else norm_in(m, L, m->lnf, m->lnf_rstd, xL, N, pin); /* (pin->sum is xL) */
    m->homing = 0;
    if (targets) smj_acts_save(m, L, B, T);
    m->have_targets = 0;
    /* a train step takes the LM head's gradient here (m->head_done), block
     * by block of rows right after their logits: the loss and dlogits in
     * one pass over them (xent_fwd_bwd), the full logits never read again */
    float dloss = train ? (n_valid ? loss_scale / (float)n_valid : 0.0f) : -1.0f;
    if (train) {
        SMJ_TRY(bwd_ready(m, B, T)); /* (ce_buf with the backward's buffers) */
        m->head_done = 1;
    } else if (targets) {
        SMJ_TRY(ce_ready(m, B, T));
    }
    if (m->topt.fused_ce && targets) {
        /* LM head + cross-entropy chunk by chunk: only lse and the losses
         * stay */
        fused_head(m, N, 1, dloss);
        m->logits = NULL;
    } else if (m->logits16 && targets) {
        /* 16-bit logits, a block of rows at a time through ce_buf: the loss
         * from the block, then its bf16 copy kept (a backend keeping copies
         * has the product write the block as bf16 alone, into logits16:
         * homed); a train step's head gradient from the rounded copy */
        int64_t R = m->l16_rows;
        int homed = be->bf16_home && be->bf16_only && ex->bf16_matmul;
        for (int64_t r0 = 0, n; r0 < N; r0 += n) {
            n = ce_chunk(N, R, r0);
            uint16_t *h = m->logits16 + r0 * ld;
            if (homed) {
                be->bf16_home(ex, m->ce_buf, h, n * ld);
                be->bf16_only(ex, m->ce_buf, n * ld);
            }
            smj_model_linear(m, R_LM_HEAD, -1, m->ce_buf, m->lnf + r0 * C, n, ld, C);
            if (train && homed) { /* (the logits are their bf16 copy's values already) */
                head_grad(m, m->ce_buf, r0, n, dloss, 1, NULL, 0); /* (drops the chunk) */
                continue;
            }
            be->xent_fwd(ex, m->losses + r0, m->xlse + r0, m->ce_buf, m->tgts + r0, n, V, ld);
            be->bf16_pack(ex, h, m->ce_buf, n * ld);
            if (train) {
                unpack16(m, m->ce_buf, h, n * ld);
                head_grad(m, m->ce_buf, r0, n, dloss, 0, NULL, 0); /* (drops the chunk) */
            } else {
                smj_drop16(m, m->ce_buf, n * ld);
            }
        }
        m->logits = NULL;
    } else {
        if (m->topt.fused_ce || m->logits16) { /* no targets: the caller wants the logits themselves */
            SMJ_TRY(ensure_full_logits(m, N * ld));
            m->logits = m->full_logits;
        }
        /* in one product, or in the blocks ce_chunk_rows sets (the rows
         * the 16-bit logits' blocks take, so both compute the same bits) */
        int64_t R = m->topt.ce_chunk_rows > 0 ? head_rows(c, &m->topt, N, 0) : N;
        for (int64_t r0 = 0, n; r0 < N; r0 += n) {
            n = ce_chunk(N, R, r0);
            smj_model_linear(m, R_LM_HEAD, -1, m->logits + r0 * ld, m->lnf + r0 * C, n, ld, C);
        }
        if (train) head_bwd(m, N, dloss, 1);
        else if (targets) be->xent_fwd(ex, m->losses, m->xlse, m->logits, m->tgts, N, V, ld);
    }
    m->last_B = B;
    m->last_T = T;
    m->have_targets = targets != NULL;
    m->n_valid = n_valid;
    /* a train step reads its loss after the backward is queued (reading it
     * here would leave the GPU idle until the host queued the backward) */
    return targets && !train ? read_loss(m, loss) : SMJ_OK;
}

smj_status smj_model_forward(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                             float *loss) {
    return forward(m, inputs, targets, B, T, loss, 0, 0.0f);
}

const float *smj_model_logits(const smj_model *m) { return m->logits; }
int64_t smj_model_logits_stride(const smj_model *m) { return m->logits_ld; }

smj_status smj_model_get_logits(smj_model *m, float *dst) {
    SMJ_CHECK(m->ctx, m->act_mem && m->last_B > 0, SMJ_ERR_INVALID, "no forward has run yet");
    SMJ_CHECK(m->ctx, m->logits, SMJ_ERR_INVALID,
              m->topt.fused_ce
                  ? "the last forward ran with fused cross-entropy (fused_ce): its logits were never materialized "
                    "(run a forward without targets, or turn fused_ce off, to get them)"
                  : "the last forward kept its logits as bf16 (fp16_activations): run a forward without targets, "
                    "or turn fp16_activations off, to get them in fp32");
    int64_t N = (int64_t)m->last_B * m->last_T, V = m->cfg.vocab_size, ld = m->logits_ld;
    if (ld == V) {
        m->be->download(dst, m->logits, sizeof(float) * (size_t)(N * V));
        return SMJ_OK;
    }
    /* padded rows: through a bounded host buffer, ~64 MB of rows at a time */
    int64_t R = ((int64_t)16 << 20) / ld;
    if (R < 1) R = 1;
    if (R > N) R = N;
    float *buf = malloc(sizeof(float) * (size_t)(R * ld));
    if (!buf) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory copying the logits");
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t n = N - r0 < R ? N - r0 : R;
        m->be->download(buf, m->logits + r0 * ld, sizeof(float) * (size_t)(n * ld));
        for (int64_t r = 0; r < n; r++) memcpy(dst + (r0 + r) * V, buf + r * ld, sizeof(float) * (size_t)V);
    }
    free(buf);
    return SMJ_OK;
}

/* ------------------------------------------------------- backward */

/* x: the block's input [N,C]; dres holds dL/dy on entry and dL/dx on return. */
static void block_backward(smj_model *m, int l, int B, int T, const float *x) {
    const smj_backend *be = m->be;
    const smj_model_config *c = &m->cfg;
    smj_block_acts *a = &m->blk[l];
    const smj_exec *ex = &m->ctx->exec;
    int NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_dim, C = c->dim, H = c->ffn_hidden;
    int64_t N = (int64_t)B * T, QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS;
    float *P = m->params, *G = m->grads;
#define W(role) smj_model_ptr(m, P, role, l)
#define DW(role) smj_model_ptr(m, G, role, l)
    /* FFN: y = res_mid + Wd·hsw. dres holds dL/dy. */
    smj_fresh16(m, m->dh, N * H); /* read only by swiglu_bwd, through its bf16 copy */
    be->matmul(ex, m->dh, m->dres, W(R_WDOWN), N, H, C, 0, 0, 0);          /* dhsw [N,H] */
    be->matmul(ex, DW(R_WDOWN), m->dres, a->hsw, C, H, N, 1, 0, 1);        /* dWd [C,H] */
    /* dgate|dup as the forward's gate|up (trained weights are f32, side by
     * side: one [N,2H] tensor), read only by its two products: bf16 alone */
    float *g, *u;
    int64_t ld = smj_gu_views(m, l, a->gate, N, &g, &u);
    smj_fresh16(m, m->dgate, 2 * N * H);
    be->swiglu_bwd(ex, m->dgate, m->dgate + (u - g), m->dh, g, u, N, H, ld);
    smj_drop16(m, m->dh, N * H);
    be->matmul(ex, DW(R_WGATE), m->dgate, a->ln2, 2 * H, C, N, 1, 0, 1);   /* dWg|dWu [2H,C] */
    smj_fresh16(m, m->dln, N * C); /* one product writes dln: read through its bf16 copy (as autocast keeps it) */
    be->matmul(ex, m->dln, m->dgate, W(R_WGATE), N, C, 2 * H, 0, 0, 0);    /* over K = 2H */
    smj_drop16(m, m->dgate, 2 * N * H);
    be->rmsnorm_bwd(ex, m->dres, DW(R_FFN_NORM), m->dln, a->res_mid, W(R_FFN_NORM), a->ln2_rstd, N, C,
                    1);                                                    /* now dL/dres_mid */
    smj_drop16(m, m->dln, N * C);
    /* attention: res_mid = x + Wo·att */
    be->matmul(ex, DW(R_WO), m->dres, a->att, C, QD, N, 1, 0, 1);
    if (c->attn_out_bias) bias_bwd(m, DW(R_BO), m->dres, N, C);
    smj_fresh16(m, m->datt, N * QD); /* attention's backward reads dO through its bf16 copy */
    be->matmul(ex, m->datt, m->dres, W(R_WO), N, QD, C, 0, 0, 0);
    /* dq, dk (after the rotation) and dv are read only by their products
     * unless QK-norm's backward or the biases' read them. Then, with Wq, Wk,
     * Wv side by side, they are one [N, QD + 2 KD] tensor (attention's
     * backward writes its column ranges, rope_bwd rotates the q|k heads of
     * each row) and their products are one each over the fused weight. */
    int prod_only = !c->qk_norm && !c->attn_bias;
    int64_t W3 = QD + 2 * KD;
    int fused = prod_only && W(R_WK) == W(R_WQ) + QD * C && W(R_WV) == W(R_WK) + KD * C;
    float *dq = m->dq, *dk = fused ? dq + QD : dq + N * QD, *dv = fused ? dk + KD : dk + N * KD;
    float sc = 1.0f / sqrtf((float)HS);
    int64_t rs = a->qkv_fused ? W3 : 0; /* q, k, v: rows of one tensor (the forward's fused product), or dense */
    if (fused) {
        /* attention's backward with the rotation in one op where the
         * backend has it, else the two ops */
        smj_fresh16(m, dq, N * W3); /* (declined, the promise and home go to attention_bwd, which writes dq too) */
        if (!be->attention_bwd_rope ||
            !be->attention_bwd_rope(ex, dq, dk, dv, m->datt, a->att, a->lse, a->q, a->k, a->v, m->rope_cos,
                                    m->rope_sin, B, T, NH, NKV, HS, rs, rs, W3, W3, sc)) {
            be->attention_bwd(ex, dq, dk, dv, m->datt, a->att, a->lse, a->q, a->k, a->v, B, T, NH, NKV, HS, rs, rs, W3,
                              W3, sc);
            smj_only16(m, dq, N * W3);
            be->rope_bwd(ex, dq, m->rope_cos, m->rope_sin, B, T, NH + NKV, HS, 0, W3);
        }
        smj_drop16(m, m->datt, N * QD);
        be->matmul(ex, DW(R_WQ), dq, a->ln1, W3, C, N, 1, 0, 1);        /* dWq|dWk|dWv [W3,C] */
        smj_fresh16(m, m->dln, N * C); /* as the FFN's */
        be->matmul(ex, m->dln, dq, W(R_WQ), N, C, W3, 0, 0, 0);         /* over K = W3 */
        smj_drop16(m, dq, N * W3);
    } else {
        if (prod_only) smj_only16(m, dv, N * KD);
        be->attention_bwd(ex, dq, dk, dv, m->datt, a->att, a->lse, a->q, a->k, a->v, B, T, NH, NKV, HS, rs, rs, 0, 0,
                          sc);
        smj_drop16(m, m->datt, N * QD);
        if (prod_only) smj_only16(m, dq, N * QD);
        be->rope_bwd(ex, dq, m->rope_cos, m->rope_sin, B, T, NH, HS, 0, 0);
        if (prod_only) smj_only16(m, dk, N * KD);
        be->rope_bwd(ex, dk, m->rope_cos, m->rope_sin, B, T, NKV, HS, 0, 0);
        if (c->qk_norm) {
            be->rmsnorm_bwd(ex, m->dqn, DW(R_Q_NORM), dq, a->q_pre, W(R_Q_NORM), a->q_rstd, N * NH, HS, 0);
            be->rmsnorm_bwd(ex, m->dkn, DW(R_K_NORM), dk, a->k_pre, W(R_K_NORM), a->k_rstd, N * NKV, HS, 0);
            dq = m->dqn;
            dk = m->dkn;
        }
        if (c->attn_bias) {
            bias_bwd(m, DW(R_BQ), dq, N, QD);
            bias_bwd(m, DW(R_BK), dk, N, KD);
            bias_bwd(m, DW(R_BV), dv, N, KD);
        }
        /* each gradient's two products, then it is dead */
        be->matmul(ex, DW(R_WQ), dq, a->ln1, QD, C, N, 1, 0, 1);
        be->matmul(ex, m->dln, dq, W(R_WQ), N, C, QD, 0, 0, 0);
        smj_drop16(m, dq, N * QD);
        be->matmul(ex, DW(R_WK), dk, a->ln1, KD, C, N, 1, 0, 1);
        be->matmul(ex, m->dln, dk, W(R_WK), N, C, KD, 0, 0, 1);
        smj_drop16(m, dk, N * KD);
        be->matmul(ex, DW(R_WV), dv, a->ln1, KD, C, N, 1, 0, 1);
        be->matmul(ex, m->dln, dv, W(R_WV), N, C, KD, 0, 0, 1);
        smj_drop16(m, dv, N * KD);
    }
    be->rmsnorm_bwd(ex, m->dres, DW(R_ATTN_NORM), m->dln, x, W(R_ATTN_NORM), a->ln1_rstd, N, C, 1); /* now dL/dx */
    smj_drop16(m, m->dln, N * C);
#undef W
#undef DW
}

smj_status smj_model_backward(smj_model *m, float loss_scale) {
    SMJ_CHECK(m->ctx, !m->qmem, SMJ_ERR_UNSUPPORTED,
              "this model keeps its weights quantized (loaded from GGUF): inference only, no training");
    SMJ_CHECK(m->ctx, m->act_mem && m->have_targets, SMJ_ERR_INVALID,
              "backward needs a forward with targets first");
    const smj_model_config *c = &m->cfg;
    int B = m->last_B, T = m->last_T;
    SMJ_TRY(bwd_ready(m, B, T));
    smj_rope_prepare(m, 0, T); /* dynamic RoPE: the tables of this length (a session may have changed them) */
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    int C = c->dim, ld = (int)m->logits_ld;
    int64_t N = (int64_t)B * T;
    float dloss = m->n_valid ? loss_scale / (float)m->n_valid : 0.0f;
    if (m->head_done) {
        /* (a train step took the head's gradient in its forward) */
    } else if (m->topt.fused_ce) {
        fused_head(m, N, 0, dloss); /* each chunk's logits again (same op, same bits) */
    } else if (m->logits16) {
        /* per block: the bf16 logits back into ce_buf (bound), then the
         * head's backward there */
        int64_t R = m->l16_rows;
        for (int64_t r0 = 0, n; r0 < N; r0 += n) {
            n = ce_chunk(N, R, r0);
            unpack16(m, m->ce_buf, m->logits16 + r0 * ld, n * ld);
            head_grad(m, m->ce_buf, r0, n, dloss, 0, NULL, 0);
            smj_drop16(m, m->ce_buf, n * ld);
        }
    } else {
        head_bwd(m, N, dloss, 0);
    }
    if (c->arch == SMJ_ARCH_GPT2) {
        smj_gpt2_backward(m, B, T);
        smj_acts_release(m);
        m->have_targets = 0;
        return SMJ_OK;
    }
    be->rmsnorm_bwd(ex, m->dres, smj_model_ptr(m, m->grads, R_FINAL_NORM, -1), m->dln,
                    smj_acts_load(m, c->n_layers, B, T), smj_model_ptr(m, m->params, R_FINAL_NORM, -1),
                    m->lnf_rstd, N, C, 0);
    for (int l = c->n_layers - 1; l >= 0; l--) block_backward(m, l, B, T, smj_acts_load(m, l, B, T));
    smj_acts_release(m);
    be->embedding_bwd(ex, smj_model_ptr(m, m->grads, R_EMBED, -1), m->ids, m->dres, N, C);
    m->have_targets = 0; /* logits were consumed */
    return SMJ_OK;
}

smj_status smj_model_forward_backward(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                                      float loss_scale, float *loss) {
    SMJ_CHECK(m->ctx, targets, SMJ_ERR_INVALID, "a train step needs targets");
    SMJ_CHECK(m->ctx, !m->qmem, SMJ_ERR_UNSUPPORTED,
              "this model keeps its weights quantized (loaded from GGUF): inference only, no training");
    SMJ_TRY(forward(m, inputs, targets, B, T, NULL, 1, loss_scale));
    SMJ_TRY(smj_model_backward(m, loss_scale));
    return loss ? read_loss(m, loss) : SMJ_OK;
}

