/* writer.c — smj_export_gguf: a model and its tokenizer as one GGUF v3 file
 * that llama.cpp loads and runs as is (docs/GGUF.md has the full mapping).
 *
 *  - Architecture "llama" (no QK-norm) or "qwen3" (QK-norm), with the
 *    hyper-parameter keys llama.cpp reads for them.
 *  - Tensor names token_embd / blk.N.attn_q ... / output_norm / output
 *    (output omitted when tied: llama.cpp then reuses token_embd). GGML
 *    lists dims innermost first, so our [out, in] becomes ne = {in, out}.
 *  - RoPE: we rotate HF's half-split pairs (j, j + hd/2) — llama.cpp's NEOX
 *    mode, which its qwen3 architecture uses. Its llama architecture uses
 *    the interleaved NORM mode (pairs 2j, 2j+1), so for "llama" the rows of
 *    q_proj and k_proj are permuted per head (as convert_hf_to_gguf.py does
 *    for HF Llama checkpoints); the attention scores are unchanged.
 *  - Tokenizer: tokenizer.ggml.model "gpt2" with pre "gpt-2" (llama.cpp's
 *    name for exactly GPT-2's split pattern, which is ours); token strings
 *    and merges in GPT-2's byte-to-unicode alphabet; specials as control
 *    tokens; add_bos_token false (our models are trained without BOS).
 *  - Quantization: 1-D tensors stay f32; 2-D tensors take the requested
 *    type, except q8_0/q4_0 tensors whose rows are not whole 32-value blocks,
 *    which fall back to f16 (counted in the report).
 *  - The file is written through smj_wfile (temp + fsync + rename).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "../core/core.h"
#include "../model/model.h"
#include "../tokenizer/tokenizer.h"

/* ---- a growable byte buffer for the header */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
    uint64_t n_kv;
} gbuf;

static void put(gbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) {
    uint8_t t[4];
    smj_wr_u32(t, v);
    put(b, t, 4);
}
static void put_u64(gbuf *b, uint64_t v) {
    uint8_t t[8];
    smj_wr_u64(t, v);
    put(b, t, 8);
}
static void put_strn(gbuf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void put_str(gbuf *b, const char *s) { put_strn(b, s, strlen(s)); }

static void kv_str(gbuf *b, const char *key, const char *v) {
    put_str(b, key);
    put_u32(b, SMJ_GGUF_STRING);
    put_str(b, v);
    b->n_kv++;
}
static void kv_u32(gbuf *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, SMJ_GGUF_UINT32);
    put_u32(b, v);
    b->n_kv++;
}
static void kv_f32(gbuf *b, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_str(b, key);
    put_u32(b, SMJ_GGUF_FLOAT32);
    put_u32(b, u);
    b->n_kv++;
}
static void kv_bool(gbuf *b, const char *key, int v) {
    uint8_t x = v ? 1 : 0;
    put_str(b, key);
    put_u32(b, SMJ_GGUF_BOOL);
    put(b, &x, 1);
    b->n_kv++;
}
/* Starts an array pair; the caller writes n elements. */
static void kv_array(gbuf *b, const char *key, uint32_t elem_type, uint64_t n) {
    put_str(b, key);
    put_u32(b, SMJ_GGUF_ARRAY);
    put_u32(b, elem_type);
    put_u64(b, n);
    b->n_kv++;
}
static void kv_arch_u32(gbuf *b, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_u32(b, k, v);
}
static void kv_arch_f32(gbuf *b, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_f32(b, k, v);
}

/* Appends bytes s[0..n) in GPT-2's byte-to-unicode alphabet (UTF-8). */
static void put_bytes_as_unicode(char *out, size_t *o, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = smj_gguf_byte_to_cp(s[i]);
        if (cp < 0x80) {
            out[(*o)++] = (char)cp;
        } else { /* all code points are < 0x800 */
            out[(*o)++] = (char)(0xc0 | (cp >> 6));
            out[(*o)++] = (char)(0x80 | (cp & 0x3f));
        }
    }
}

/* ---- tensor plan */

typedef struct {
    char name[64];
    int view;            /* index for smj_model_tensor */
    int ndim;
    int64_t ne[2];
    int type;            /* GGML type */
    int permute_heads;   /* > 0: permute rows for interleaved RoPE with this many heads */
    uint64_t offset, nbytes;
} plan_t;

int smj_gguf_tensor_name(const char *hf, char *out, size_t cap) {
    static const struct { const char *hf, *gg; } top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const struct { const char *hf, *gg; } blk[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (strcmp(hf, top[i].hf) == 0) return snprintf(out, cap, "%s", top[i].gg) > 0;
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0)
        for (size_t i = 0; i < sizeof blk / sizeof *blk; i++)
            if (strcmp(hf + used, blk[i].hf) == 0) {
                int k = snprintf(out, cap, "blk.%d.%s", layer, blk[i].gg);
                return k > 0 && (size_t)k < cap;
            }
    return 0;
}

static int ftype_of(smj_quant q) {
    switch (q) {
    case SMJ_QUANT_F16: return SMJ_FTYPE_MOSTLY_F16;
    case SMJ_QUANT_Q8_0: return SMJ_FTYPE_MOSTLY_Q8_0;
    case SMJ_QUANT_Q4_0: return SMJ_FTYPE_MOSTLY_Q4_0;
    default: return SMJ_FTYPE_ALL_F32;
    }
}

static smj_status write_tokenizer(smj_ctx *ctx, gbuf *b, const smj_tokenizer *tok, int n_vocab,
                                  const char *path, int *n_pad) {
    int tv = smj_tokenizer_vocab_size(tok), M = smj_tokenizer_num_merges(tok);
    int S = smj_tokenizer_num_special(tok);
    if (smj_tokenizer_version(tok) != 1)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: exporting an imported (version 2, general vocabulary) tokenizer to GGUF "
                 "is not supported yet", path);
    if (n_vocab < tv)
        SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: the model's vocab_size %d is smaller than the tokenizer's %d (wrong tokenizer?)",
                 path, n_vocab, tv);
    *n_pad = n_vocab - tv;
    /* The longest token's text, in the 2-byte-per-byte worst case. */
    size_t maxlen = 64;
    for (int id = 0; id < tv; id++) {
        size_t l = 0;
        smj_tokenizer_token_bytes(tok, id, &l);
        if (2 * l + 64 > maxlen) maxlen = 2 * l + 64;
    }
    for (int i = 0; i < S; i++) {
        size_t l = 0;
        smj_tokenizer_special_text(tok, i, &l);
        if (l + 64 > maxlen) maxlen = l + 64;
    }
    char *s = malloc(2 * maxlen + 2);
    if (!s) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);

    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", "gpt-2");
    kv_array(b, "tokenizer.ggml.tokens", SMJ_GGUF_STRING, (uint64_t)n_vocab);
    for (int id = 0; id < n_vocab; id++) {
        size_t o = 0, l = 0;
        if (id < 256 + M) {
            const uint8_t *bytes = smj_tokenizer_token_bytes(tok, id, &l);
            put_bytes_as_unicode(s, &o, bytes, l);
        } else if (id < tv) {
            const char *t = smj_tokenizer_special_text(tok, id - 256 - M, &l);
            memcpy(s, t, l);
            o = l;
        } else {
            o = (size_t)snprintf(s, maxlen, "<|unused_%d|>", id - tv);
        }
        put_strn(b, s, o);
    }
    kv_array(b, "tokenizer.ggml.token_type", SMJ_GGUF_INT32, (uint64_t)n_vocab);
    for (int id = 0; id < n_vocab; id++)
        put_u32(b, id < 256 + M ? 1u /* normal */ : id < tv ? 3u /* control */ : 5u /* unused */);
    kv_array(b, "tokenizer.ggml.merges", SMJ_GGUF_STRING, (uint64_t)M);
    for (int i = 0; i < M; i++) {
        int32_t l, r;
        size_t o = 0, ll, rl;
        smj_tokenizer_merge(tok, i, &l, &r);
        const uint8_t *lb = smj_tokenizer_token_bytes(tok, l, &ll);
        const uint8_t *rb = smj_tokenizer_token_bytes(tok, r, &rl);
        put_bytes_as_unicode(s, &o, lb, ll);
        s[o++] = ' ';
        put_bytes_as_unicode(s, &o, rb, rl);
        put_strn(b, s, o);
    }
    free(s);
    kv_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)smj_tokenizer_special_id(tok, SMJ_TOKEN_BOS));
    kv_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)smj_tokenizer_special_id(tok, SMJ_TOKEN_EOS));
    kv_u32(b, "tokenizer.ggml.padding_token_id", (uint32_t)smj_tokenizer_special_id(tok, SMJ_TOKEN_PAD));
    kv_bool(b, "tokenizer.ggml.add_bos_token", 0);
    kv_bool(b, "tokenizer.ggml.add_eos_token", 0);
    return SMJ_OK;
}

smj_status smj_export_gguf(smj_model *m, const smj_tokenizer *tok, const char *path, smj_quant q,
                           smj_gguf_export_info *info) {
    smj_ctx *ctx = m->ctx;
    const smj_model_config *c = smj_model_get_config(m);
    if (info) memset(info, 0, sizeof *info);
    if ((unsigned)q > SMJ_QUANT_Q4_0) SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: unknown quantization %d", path, (int)q);
    if (c->arch != SMJ_ARCH_LLAMA)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: GGUF export covers the Llama family only (this model is GPT-2)", path);
    if (c->head_dim % 2) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: head_dim %d is odd; GGUF RoPE needs an even one", path, c->head_dim);
    /* llama.cpp's scaled-RoPE metadata (rope.scaling.*, rope_freqs) is not
     * written yet: refuse rather than export a file that runs plain RoPE. */
    if (c->rope_type != 0)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: the model uses scaled RoPE (type %d), which GGUF export does not write yet",
                 path, c->rope_type);
    const char *arch = c->qk_norm ? "qwen3" : "llama";
    const int permute = !c->qk_norm;
    smj_status st = SMJ_OK;
    gbuf b = {0};
    plan_t *plan = NULL;
    float *perm = NULL;
    uint8_t *qbuf = NULL;
    float *hp = NULL; /* the parameters in host memory (a copy on a device backend) */
    smj_wfile w;
    int wopen = 0;

    /* ---- metadata */
    char name[128];
    snprintf(name, sizeof name, "smedjan-%dL-%dd", c->n_layers, c->dim);
    kv_str(&b, "general.architecture", arch);
    kv_str(&b, "general.name", name);
    kv_u32(&b, "general.alignment", SMJ_GGUF_DEFAULT_ALIGNMENT);
    kv_u32(&b, "general.file_type", (uint32_t)ftype_of(q));
    if (q == SMJ_QUANT_Q8_0 || q == SMJ_QUANT_Q4_0) kv_u32(&b, "general.quantization_version", 2);
    kv_arch_u32(&b, arch, "vocab_size", (uint32_t)c->vocab_size);
    kv_arch_u32(&b, arch, "context_length", (uint32_t)c->max_seq_len);
    kv_arch_u32(&b, arch, "embedding_length", (uint32_t)c->dim);
    kv_arch_u32(&b, arch, "block_count", (uint32_t)c->n_layers);
    kv_arch_u32(&b, arch, "feed_forward_length", (uint32_t)c->ffn_hidden);
    kv_arch_u32(&b, arch, "attention.head_count", (uint32_t)c->n_heads);
    kv_arch_u32(&b, arch, "attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_arch_u32(&b, arch, "attention.key_length", (uint32_t)c->head_dim);
    kv_arch_u32(&b, arch, "attention.value_length", (uint32_t)c->head_dim);
    kv_arch_u32(&b, arch, "rope.dimension_count", (uint32_t)c->head_dim);
    kv_arch_f32(&b, arch, "rope.freq_base", c->rope_theta);
    kv_arch_f32(&b, arch, "attention.layer_norm_rms_epsilon", c->norm_eps);
    int n_pad = 0;
    if ((st = write_tokenizer(ctx, &b, tok, c->vocab_size, path, &n_pad)) != SMJ_OK) goto done;

    /* ---- tensor infos */
    int n = smj_model_num_tensors(m);
    plan = calloc((size_t)n, sizeof *plan);
    hp = smj_model_params_host(m);
    if (!plan || !hp) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    uint64_t off = 0, max_bytes = 0;
    int64_t max_numel = 0;
    int counts[32] = {0}, fallback = 0;
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        plan_t *p = &plan[i];
        if ((st = smj_model_tensor(m, i, &v)) != SMJ_OK) goto done;
        if (!smj_gguf_tensor_name(v.name, p->name, sizeof p->name) || v.ndim < 1 || v.ndim > 2) {
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: tensor '%s' has no GGUF counterpart", path, v.name);
            goto done;
        }
        p->view = i;
        p->ndim = v.ndim;
        p->ne[0] = v.shape[v.ndim - 1];
        p->ne[1] = v.ndim == 2 ? v.shape[0] : 1;
        p->type = SMJ_GGML_F32;
        if (v.ndim == 2 && q == SMJ_QUANT_F16) p->type = SMJ_GGML_F16;
        if (v.ndim == 2 && (q == SMJ_QUANT_Q8_0 || q == SMJ_QUANT_Q4_0)) {
            if (p->ne[0] % 32 == 0) {
                p->type = q == SMJ_QUANT_Q8_0 ? SMJ_GGML_Q8_0 : SMJ_GGML_Q4_0;
            } else {
                p->type = SMJ_GGML_F16;
                fallback++;
            }
        }
        if (permute && (strstr(p->name, ".attn_q.weight") || strstr(p->name, ".attn_k.weight")))
            p->permute_heads = strstr(p->name, ".attn_q.") ? c->n_heads : c->n_kv_heads;
        counts[p->type]++;
        p->offset = off;
        p->nbytes = (uint64_t)smj_ggml_row_bytes(p->type, p->ne[0]) * (uint64_t)p->ne[1];
        off += (p->nbytes + SMJ_GGUF_DEFAULT_ALIGNMENT - 1) / SMJ_GGUF_DEFAULT_ALIGNMENT * SMJ_GGUF_DEFAULT_ALIGNMENT;
        if (p->nbytes > max_bytes) max_bytes = p->nbytes;
        if (v.numel > max_numel) max_numel = v.numel;
        const float *hv = hp + (v.data - m->params);
        for (int64_t k = 0; k < v.numel; k++)
            if (!isfinite(hv[k])) {
                st = smj_set_error(ctx, SMJ_ERR_NONFINITE, "%s: tensor '%s' contains NaN or Inf (element %lld)",
                                   path, v.name, (long long)k);
                goto done;
            }
    }
    for (int i = 0; i < n; i++) {
        const plan_t *p = &plan[i];
        put_str(&b, p->name);
        put_u32(&b, (uint32_t)p->ndim);
        for (int d = 0; d < p->ndim; d++) put_u64(&b, (uint64_t)p->ne[d]);
        put_u32(&b, (uint32_t)p->type);
        put_u64(&b, p->offset);
    }
    static const uint8_t zeros[SMJ_GGUF_DEFAULT_ALIGNMENT] = {0};
    /* The fixed 24-byte header goes in front of b (kv pairs + tensor infos). */
    uint8_t head[24];
    memcpy(head, SMJ_GGUF_MAGIC, 4);
    smj_wr_u32(head + 4, SMJ_GGUF_VERSION);
    smj_wr_u64(head + 8, (uint64_t)n);
    smj_wr_u64(head + 16, b.n_kv);
    if (b.oom) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    perm = malloc(sizeof(float) * (size_t)(max_numel ? max_numel : 1));
    qbuf = malloc((size_t)(max_bytes ? max_bytes : 1));
    if (!perm || !qbuf) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }

    /* ---- the file */
    if ((st = smj_wfile_open(ctx, &w, path)) != SMJ_OK) goto done;
    wopen = 1;
    smj_wfile_write(&w, head, 24);
    smj_wfile_write(&w, b.p, b.n);
    uint64_t pos = 24 + b.n;
    uint64_t data_start = (pos + SMJ_GGUF_DEFAULT_ALIGNMENT - 1) / SMJ_GGUF_DEFAULT_ALIGNMENT * SMJ_GGUF_DEFAULT_ALIGNMENT;
    smj_wfile_write(&w, zeros, (size_t)(data_start - pos));
    pos = data_start;
    for (int i = 0; i < n; i++) {
        const plan_t *p = &plan[i];
        smj_tensor_view v;
        smj_model_tensor(m, p->view, &v);
        const float *x = hp + (v.data - m->params);
        if (p->permute_heads) {
            smj_gguf_permute_rows(x, perm, p->permute_heads, c->head_dim, p->ne[0], 0);
            x = perm;
        }
        switch (p->type) {
        case SMJ_GGML_F32: memcpy(qbuf, x, (size_t)p->nbytes); break;
        case SMJ_GGML_F16: smj_quantize_f16(x, qbuf, v.numel); break;
        case SMJ_GGML_Q8_0: smj_quantize_q8_0(x, qbuf, v.numel); break;
        case SMJ_GGML_Q4_0: smj_quantize_q4_0(x, qbuf, v.numel); break;
        }
        smj_wfile_write(&w, zeros, (size_t)(data_start + p->offset - pos));
        smj_wfile_write(&w, qbuf, (size_t)p->nbytes);
        pos = data_start + p->offset + p->nbytes;
    }
    smj_wfile_write(&w, zeros, (size_t)((SMJ_GGUF_DEFAULT_ALIGNMENT - pos % SMJ_GGUF_DEFAULT_ALIGNMENT) % SMJ_GGUF_DEFAULT_ALIGNMENT));
    wopen = 0;
    if ((st = smj_wfile_commit(ctx, &w)) != SMJ_OK) goto done;
    if (info) {
        info->arch = arch;
        info->n_tensors = n;
        info->n_f32 = counts[SMJ_GGML_F32];
        info->n_f16 = counts[SMJ_GGML_F16];
        info->n_q8_0 = counts[SMJ_GGML_Q8_0];
        info->n_q4_0 = counts[SMJ_GGML_Q4_0];
        info->n_f16_fallback = fallback;
        info->n_vocab_padding = n_pad;
        info->file_bytes = (int64_t)(data_start + off);
    }
done:
    if (wopen) smj_wfile_abort(&w);
    free(b.p);
    free(plan);
    free(perm);
    free(qbuf);
    smj_model_params_release(m, hp, 0);
    return st;
}
