/* session.c — KV-cache decoding for one sequence (batch 1).
 *
 * The cache holds keys and values of every layer for up to max_len
 * positions ([L, max_len, NKV*HS] each). smj_session_feed runs new tokens in
 * chunks of up to `chunk` rows (64 on the CPU, where a chunk's activations
 * stay in cache; 512 on a GPU, where fewer, larger launches pay) through the same block code training uses
 * (smj_block_forward): the new keys/values are written straight into the
 * cache rows, and attention reads all cached rows. Only the last row goes
 * through the final norm and LM head.
 *
 * One token at a time, where the backend has decode_attention (and the
 * model suits it: smj_block_decode_ok; GPT-2 too, its learned position
 * looked up at the device position), the step reads its position from
 * memory (posd) and writes the new key/value through scratch rows, so its
 * calls are the same for every position: on a backend with graph hooks
 * (CUDA) the step runs once as is (allocating what it needs), is recorded
 * on the next token and replayed from then on — one launch per token
 * instead of ~15 per layer. Where the backend has decode_block (CUDA), all
 * blocks are one launch, and the final norm + LM head one more
 * (decode_linear); otherwise the step runs the block's ops one by one and
 * equals the chunk path bit for bit. In bf16 mode
 * (smj_ctx_options.bf16_matmul) with decode_block the step reads bf16
 * copies of the weights (wdec, made by bf16_pack when the session is
 * created or reset: a session decodes with the weights as they were then,
 * as its cache holds keys and values made by them), half the bytes a token
 * must stream. GPT-2's Conv1D weights are stored [in, out]: its copy (bf16,
 * or f32 in fp32 mode) holds them transposed to the [out, in] rows
 * decode_block reads (smj_dec_copy). smj_session_greedy chains
 * steps on the device: each step ends with decode_argmax, which writes the
 * next input token and position where the next step reads them, so no
 * upload or download separates the steps.
 */
#include <math.h>
#include <string.h>
#include "../model/model.h"

enum { CHUNK_CPU = 64, CHUNK_DEVICE = 512 };

struct smj_session {
    smj_model *m;
    int max_len, len;
    int chunk;          /* rows per chunk */
    float *kc, *vc;     /* [L, max_len, KD] */
    float *mem;         /* scratch for one chunk */
    smj_block_acts a;
    float *x, *y, *lnf, *rstd, *logits; /* [chunk,C] x2, [C], [1], [V] */
    int32_t *ids;       /* [chunk] on the backend */
    int32_t *pos;       /* GPT-2: [chunk] position ids on the backend */
    int32_t *host_pos;  /* GPT-2: [chunk] */
    float *lnf_mean;    /* GPT-2: [1] */
    float *host_logits; /* [V] */
    /* one-token steps (decode_step) */
    int dec_ok;         /* smj_block_decode_ok */
    int32_t *posd;      /* [1] on the backend: the step's position */
    float *knew, *vnew; /* [KD] each: the step's key and value before they reach the cache */
    int warm;           /* a step ran without a graph: every buffer it needs exists */
    int graph_failed;   /* recording failed once: no more tries */
    void *graph;        /* the recorded step (graph hooks) */
    void *wdec;         /* decode_block's copy of params [n_params] (pack_dec), or NULL */
    smj_dec_copy dc;    /* wdec and its type */
    void *host_t;       /* GPT-2: host scratch of smj_gpt2_dec_pack */
    int32_t *hist;      /* [max_len + 1] on the backend: decode_argmax's choices by position */
};

/* wdec = the weights as they are now (smj_dec_copy). */
static void pack_dec(smj_session *s) {
    smj_model *m = s->m;
    if (m->cfg.arch == SMJ_ARCH_GPT2) smj_gpt2_dec_pack(m, s->wdec, s->dc.wtype, s->host_t);
    else m->be->bf16_pack(&m->ctx->exec, s->wdec, m->params, m->n_params);
}

smj_status smj_session_create(smj_model *m, int max_len, smj_session **out) {
    *out = NULL;
    const smj_model_config *c = &m->cfg;
    SMJ_CHECK(m->ctx, max_len >= 1 && max_len <= c->max_seq_len, SMJ_ERR_INVALID,
              "session length %d must be in [1, %d] (the model's maximum sequence length)", max_len, c->max_seq_len);
    smj_session *s = calloc(1, sizeof *s);
    if (!s) SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory");
    s->m = m;
    s->max_len = max_len;
    s->chunk = m->be->init ? CHUNK_DEVICE : CHUNK_CPU; /* device backends have an init hook */
    int64_t C = c->dim, H = c->ffn_hidden, V = c->vocab_size, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, R = s->chunk;
    size_t kvb = sizeof(float) * (size_t)c->n_layers * max_len * KD;
    s->kc = m->be->alloc(kvb);
    s->vc = m->be->alloc(kvb);
    int64_t sizes[] = {R * C, R, R * QD, R * KD, R * c->n_heads, R * c->n_kv_heads, R * QD, R * QD,
                       R * c->n_heads, R * C, R * C, R, 3 * R * H, R * C, R * C, R * C, C, 16, V, R,
                       /* GPT-2: ln1_mean, ln2_mean, qkv, idx3, pos, lnf_mean */
                       R, R, 3 * R * C, R, R, 16,
                       /* one-token steps: posd, knew, vnew, hist */
                       16, KD, KD, max_len + 1};
    int ns = (int)(sizeof sizes / sizeof sizes[0]);
    int64_t total = 0;
    for (int i = 0; i < ns; i++) total += (sizes[i] + 15) & ~15LL;
    s->mem = m->be->alloc(sizeof(float) * (size_t)total);
    s->host_logits = malloc(sizeof(float) * (size_t)V);
    s->host_pos = malloc(sizeof(int32_t) * (size_t)R);
    if (!s->kc || !s->vc || !s->mem || !s->host_logits || !s->host_pos) {
        smj_session_free(s);
        SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "out of memory for a KV cache of %d positions", max_len);
    }
    float *p[30];
    int64_t off = 0;
    for (int i = 0; i < ns; i++) { p[i] = s->mem + off; off += (sizes[i] + 15) & ~15LL; }
    smj_block_acts *a = &s->a;
    a->ln1 = p[0]; a->ln1_rstd = p[1]; a->q_pre = p[2]; a->k_pre = p[3]; a->q_rstd = p[4]; a->k_rstd = p[5];
    a->q = p[6]; a->att = p[7]; a->lse = p[8]; a->res_mid = p[9]; a->ln2 = p[10]; a->ln2_rstd = p[11];
    a->gate = p[12]; a->hsw = p[12] + 2 * R * H; a->tmp = p[13];
    s->x = p[14]; s->y = p[15]; s->lnf = p[16]; s->rstd = p[17]; s->logits = p[18]; s->ids = (int32_t *)p[19];
    a->ln1_mean = p[20]; a->ln2_mean = p[21]; a->qkv = p[22]; a->idx3 = (int32_t *)p[23];
    s->pos = (int32_t *)p[24]; s->lnf_mean = p[25];
    s->posd = (int32_t *)p[26]; s->knew = p[27]; s->vnew = p[28]; s->hist = (int32_t *)p[29];
    s->dec_ok = smj_block_decode_ok(m);
    /* the weights' copy for decode_block; without room for it the steps
     * read params (GPT-2: its blocks' ops one by one), only slower */
    int gpt2 = c->arch == SMJ_ARCH_GPT2, bf = m->ctx->exec.bf16_matmul;
    if (s->dec_ok && m->be->decode_block && (bf || gpt2)) {
        s->dc.wtype = bf ? SMJ_WTYPE_BF16 : SMJ_WTYPE_F32;
        s->wdec = m->be->alloc((bf ? 2 : 4) * (size_t)m->n_params);
        if (gpt2) s->host_t = malloc((size_t)smj_gpt2_dec_scratch(c));
        if (s->wdec && (!gpt2 || s->host_t)) {
            s->dc.p = s->wdec;
            pack_dec(s);
        } else {
            if (s->wdec) m->be->free(s->wdec);
            free(s->host_t);
            s->wdec = s->host_t = NULL;
        }
    }
    if (c->arch == SMJ_ARCH_GPT2) {
        for (int i = 0; i < R; i++) s->host_pos[i] = 3 * i; /* the qkv split's row index */
        m->be->upload(a->idx3, s->host_pos, sizeof(int32_t) * (size_t)R);
    }
    *out = s;
    return SMJ_OK;
}

void smj_session_free(smj_session *s) {
    if (!s) return;
    const smj_backend *be = s->m->be;
    if (s->graph) be->graph_free(s->graph);
    be->free(s->kc); be->free(s->vc); be->free(s->mem);
    if (s->wdec) be->free(s->wdec);
    free(s->host_t);
    free(s->host_logits);
    free(s->host_pos);
    free(s);
}

void smj_session_reset(smj_session *s) {
    s->len = 0;
    if (s->wdec) pack_dec(s);
}
int smj_session_length(const smj_session *s) { return s->len; }

/* One token (s->ids[0]) at position *s->posd through the model: the calls
 * do not depend on the position. */
static void decode_body(smj_session *s) {
    smj_model *m = s->m;
    const smj_model_config *c = &m->cfg;
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    float *x = s->x, *y = s->y;
    if (c->arch == SMJ_ARCH_GPT2) smj_gpt2_embed(m, x, y, s->ids, s->posd, 1, NULL); /* wpe at the device position */
    else smj_model_embed(m, x, NULL, s->ids, 1); /* f32 weights (smj_block_decode_ok): no host ids needed */
    s->a.k = s->knew;
    s->a.v = s->vnew;
    if (smj_stack_decode(m, y, x, s->kc, s->vc, s->max_len, s->posd, s->wdec ? &s->dc : NULL)) {
        x = y;
    } else {
        for (int l = 0; l < c->n_layers; l++) {
            int64_t o = (int64_t)l * s->max_len * KD;
            smj_block_decode(m, l, &s->a, x, y, s->kc + o, s->vc + o, s->max_len, s->posd, s->wdec ? &s->dc : NULL);
            float *t = x; x = y; y = t;
        }
    }
    smj_decode_head(m, s->logits, x, s->lnf, s->lnf_mean, s->rstd, s->wdec ? &s->dc : NULL);
    if (m->be->decode_argmax) /* the next input and position, for smj_session_greedy */
        m->be->decode_argmax(&m->ctx->exec, s->ids, s->hist, s->posd, s->logits, c->vocab_size);
}

/* A one-token step of *id (NULL: the previous step's decode_argmax left
 * the input and position on the device): replayed from the recorded graph
 * when there is one (and it still fits the backend's buffers; else it is
 * dropped); else recorded when a plain step has run before and the backend
 * can; else run plainly. */
static void decode_step(smj_session *s, const int32_t *id) {
    smj_model *m = s->m;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    int32_t pos = s->len;
    if (id) {
        be->upload(s->ids, id, sizeof *id);
        be->upload(s->posd, &pos, sizeof pos);
    }
    if (s->graph && !be->graph_launch(ex, s->graph)) {
        be->graph_free(s->graph);
        s->graph = NULL;
        s->warm = 0;
    }
    if (s->graph) {
        /* replayed */
    } else if (s->warm && !s->graph_failed && be->graph_begin && be->graph_begin(ex, NULL)) {
        decode_body(s);
        s->graph = be->graph_end(ex);
        s->graph_failed = !s->graph;
        if (!s->graph || !be->graph_launch(ex, s->graph)) decode_body(s); /* nothing ran while recording */
    } else {
        decode_body(s);
        s->warm = 1;
    }
    s->len++;
}

smj_status smj_session_feed(smj_session *s, const int32_t *ids, int n, const float **logits) {
    smj_model *m = s->m;
    const smj_model_config *c = &m->cfg;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    int C = c->dim, V = c->vocab_size;
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    SMJ_CHECK(m->ctx, n >= 1, SMJ_ERR_INVALID, "nothing to feed");
    SMJ_CHECK(m->ctx, s->len + n <= s->max_len, SMJ_ERR_INVALID,
              "the context is full: %d + %d tokens exceed the session's %d positions", s->len, n, s->max_len);
    for (int i = 0; i < n; i++)
        SMJ_CHECK(m->ctx, ids[i] >= 0 && ids[i] < V, SMJ_ERR_INVALID, "token %d is outside the vocabulary (%d)", ids[i], V);
    if (n == 1 && s->dec_ok) {
        decode_step(s, ids);
        be->download(s->host_logits, s->logits, sizeof(float) * (size_t)V);
        if (logits) *logits = s->host_logits;
        return SMJ_OK;
    }
    for (int done = 0; done < n;) {
        int r = n - done < s->chunk ? n - done : s->chunk, pos = s->len;
        be->upload(s->ids, ids + done, sizeof(int32_t) * (size_t)r);
        if (c->arch == SMJ_ARCH_GPT2) {
            for (int i = 0; i < r; i++) s->host_pos[i] = pos + i;
            be->upload(s->pos, s->host_pos, sizeof(int32_t) * (size_t)r);
            smj_gpt2_embed(m, s->x, s->y, s->ids, s->pos, r, NULL);
        } else {
            SMJ_TRY(smj_model_embed(m, s->x, ids + done, s->ids, r));
        }
        for (int l = 0; l < c->n_layers; l++) {
            float *kl = s->kc + (int64_t)l * s->max_len * KD, *vl = s->vc + (int64_t)l * s->max_len * KD;
            s->a.k = kl + pos * KD;
            s->a.v = vl + pos * KD;
            smj_block_forward(m, l, &s->a, s->x, s->y, 1, r, pos, kl, vl, pos + r, 0, NULL, NULL);
            float *t = s->x; s->x = s->y; s->y = t;
        }
        s->len += r;
        done += r;
        if (done == n) {
            if (c->arch == SMJ_ARCH_GPT2)
                smj_gpt2_final_norm(m, s->lnf, s->lnf_mean, s->rstd, s->x + (int64_t)(r - 1) * C, 1, NULL);
            else
                be->rmsnorm_fwd(ex, s->lnf, s->rstd, s->x + (int64_t)(r - 1) * C,
                                smj_model_ptr(m, m->params, R_FINAL_NORM, -1), 1, C, c->norm_eps);
            smj_model_linear(m, R_LM_HEAD, -1, s->logits, s->lnf, 1, V, C);
            be->download(s->host_logits, s->logits, sizeof(float) * (size_t)V);
        }
    }
    if (logits) *logits = s->host_logits;
    return SMJ_OK;
}

smj_status smj_session_greedy(smj_session *s, int n, int32_t *out, const float **logits) {
    smj_model *m = s->m;
    const smj_backend *be = m->be;
    int V = m->cfg.vocab_size;
    SMJ_CHECK(m->ctx, n >= 1, SMJ_ERR_INVALID, "nothing to generate");
    SMJ_CHECK(m->ctx, s->len >= 1, SMJ_ERR_INVALID, "greedy decoding needs logits: feed at least one token first");
    SMJ_CHECK(m->ctx, s->len + n <= s->max_len, SMJ_ERR_INVALID,
              "the context is full: %d + %d tokens exceed the session's %d positions", s->len, n, s->max_len);
    out[0] = smj_argmax(s->host_logits, V);
    if (!s->dec_ok || !be->decode_argmax) {
        for (int i = 0; i < n; i++) {
            SMJ_TRY(smj_session_feed(s, out + i, 1, NULL));
            if (i + 1 < n) out[i + 1] = smj_argmax(s->host_logits, V);
        }
    } else {
        int len0 = s->len;
        for (int i = 0; i < n; i++) decode_step(s, i == 0 ? out : NULL); /* no host round trip in between */
        if (n > 1) be->download(out + 1, s->hist + len0 + 1, sizeof(int32_t) * (size_t)(n - 1));
        be->download(s->host_logits, s->logits, sizeof(float) * (size_t)V);
    }
    if (logits) *logits = s->host_logits;
    return SMJ_OK;
}
