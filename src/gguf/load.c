/* load.c — smj_gguf_load_weights: GGUF tensors back into a smedjan model
 * (see gguf.h). The config is the caller's; only weights are read here. */
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "../core/core.h"
#include "../model/model.h"
#include "../tokenizer/tokenizer.h"

smj_status smj_gguf_load_weights(smj_ctx *ctx, const smj_gguf *g, smj_model *m) {
    const smj_model_config *c = smj_model_get_config(m);
    const char *want = c->qk_norm ? "qwen3" : "llama";
    int ai = smj_gguf_find_kv(g, "general.architecture");
    size_t al = 0;
    const char *arch = ai >= 0 ? smj_gguf_kv_str(g, ai, 0, &al) : NULL;
    if (!arch || al != strlen(want) || memcmp(arch, want, al) != 0)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: general.architecture is not '%s'", want);
    int n = smj_model_num_tensors(m);
    float *hp = smj_model_params_host(m); /* a copy on a device backend, uploaded at the end */
    if (!hp) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory");
    smj_status st = SMJ_OK;
    float *tmp = NULL;
    for (int i = 0; i < n && st == SMJ_OK; i++) {
        smj_tensor_view v;
        if ((st = smj_model_tensor(m, i, &v)) != SMJ_OK) break;
        float *dst = hp + (v.data - m->params);
        char name[64];
        if (!smj_gguf_tensor_name(v.name, name, sizeof name)) {
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: tensor '%s' has no GGUF counterpart", v.name);
            break;
        }
        int ti = smj_gguf_find_tensor(g, name);
        if (ti < 0) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "GGUF: tensor '%s' is missing", name);
            break;
        }
        smj_gguf_tensor_info t;
        if ((st = smj_gguf_tensor(g, ti, &t)) != SMJ_OK) break;
        int64_t ne0 = v.shape[v.ndim - 1], ne1 = v.ndim == 2 ? v.shape[0] : 1;
        if (t.ndim != v.ndim || t.ne[0] != ne0 || (v.ndim == 2 && t.ne[1] != ne1)) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "GGUF: tensor '%s' has the wrong shape", name);
            break;
        }
        int qk = !c->qk_norm && (strstr(name, ".attn_q.weight") || strstr(name, ".attn_k.weight"));
        if (!qk) {
            st = smj_gguf_tensor_to_f32(ctx, g, ti, dst);
            continue;
        }
        free(tmp);
        tmp = malloc(sizeof(float) * (size_t)v.numel);
        if (!tmp) {
            st = smj_set_error(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory");
            break;
        }
        st = smj_gguf_tensor_to_f32(ctx, g, ti, tmp);
        if (st == SMJ_OK)
            smj_gguf_permute_rows(tmp, dst, strstr(name, ".attn_q.") ? c->n_heads : c->n_kv_heads, c->head_dim, ne0,
                                  1);
    }
    free(tmp);
    smj_model_params_release(m, hp, st == SMJ_OK);
    return st;
}

/* ---- smj_model_load_gguf: a GGUF file as a model whose linear weights stay
 * quantized (see smedjan.h). */

static int kv_i(const smj_gguf *g, const char *arch, const char *key, int64_t *v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int i = smj_gguf_find_kv(g, k);
    return i >= 0 && smj_gguf_kv_int(g, i, 0, v) == 0;
}

static int kv_f(const smj_gguf *g, const char *arch, const char *key, double *v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int i = smj_gguf_find_kv(g, k);
    return i >= 0 && smj_gguf_kv_float(g, i, 0, v) == 0;
}

smj_status smj_gguf_model_config(smj_ctx *ctx, const smj_gguf *g, smj_model_config *c) {
    memset(c, 0, sizeof *c);
    int ai = smj_gguf_find_kv(g, "general.architecture");
    size_t al = 0;
    const char *a = ai >= 0 ? smj_gguf_kv_str(g, ai, 0, &al) : NULL;
    char arch[16] = "";
    if (a && al < sizeof arch) memcpy(arch, a, al), arch[al] = 0;
    if (strcmp(arch, "llama") && strcmp(arch, "qwen3"))
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: architecture '%s' is not supported (llama and qwen3 are)",
                 a ? arch : "(missing)");
    int64_t dim, layers, heads, kv_heads, ffn, ctxlen = 2048, hd = 0;
    double theta = 10000.0, eps = 1e-5;
    if (!kv_i(g, arch, "embedding_length", &dim) || !kv_i(g, arch, "block_count", &layers) ||
        !kv_i(g, arch, "attention.head_count", &heads) || !kv_i(g, arch, "feed_forward_length", &ffn))
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: %s.embedding_length/block_count/attention.head_count/"
                 "feed_forward_length missing", arch);
    if (!kv_i(g, arch, "attention.head_count_kv", &kv_heads)) kv_heads = heads;
    kv_i(g, arch, "context_length", &ctxlen);
    kv_i(g, arch, "attention.key_length", &hd);
    kv_f(g, arch, "rope.freq_base", &theta);
    kv_f(g, arch, "attention.layer_norm_rms_epsilon", &eps);
    int ti = smj_gguf_find_tensor(g, "token_embd.weight");
    smj_gguf_tensor_info t;
    if (ti < 0 || smj_gguf_tensor(g, ti, &t) != SMJ_OK || t.ndim != 2 || t.ne[0] != dim)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: token_embd.weight missing or not [vocab, %lld]", (long long)dim);
    if (ctxlen > 32768) ctxlen = 32768; /* RoPE tables; longer contexts are not needed here */
    c->vocab_size = (int)t.ne[1];
    c->dim = (int)dim;
    c->n_layers = (int)layers;
    c->n_heads = (int)heads;
    c->n_kv_heads = (int)kv_heads;
    c->head_dim = hd > 0 ? (int)hd : heads > 0 ? (int)(dim / heads) : 0;
    c->ffn_hidden = (int)ffn;
    c->max_seq_len = (int)ctxlen;
    c->rope_theta = (float)theta;
    c->norm_eps = (float)eps;
    c->tied_embeddings = smj_gguf_find_tensor(g, "output.weight") < 0;
    c->qk_norm = !strcmp(arch, "qwen3");
    if (smj_gguf_find_kv(g, "llama.rope.scaling.type") >= 0 || smj_gguf_find_kv(g, "qwen3.rope.scaling.type") >= 0)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: scaled RoPE (rope.scaling.*) is not supported yet");
    return SMJ_OK;
}

/* Copies rows of rb bytes from src to dst undoing llama.cpp's interleaved
 * RoPE row order within each of nh heads of hd rows (row 2j+s of a head
 * goes back to s*hd/2 + j); whole rows, so it works on any block type. */
static void unpermute_rows(uint8_t *dst, const uint8_t *src, int64_t rb, int nh, int hd) {
    int half = hd / 2;
    for (int h = 0; h < nh; h++)
        for (int j = 0; j < half; j++)
            for (int s = 0; s < 2; s++)
                memcpy(dst + ((int64_t)h * hd + s * half + j) * rb, src + ((int64_t)h * hd + 2 * j + s) * rb,
                       (size_t)rb);
}

/* 2-D weights that may stay in GGML blocks: the linear layers and the token
 * embedding (rows dequantized on lookup; also the LM head when tied). */
static int typed_role(smj_role r) {
    return r == R_WQ || r == R_WK || r == R_WV || r == R_WO || r == R_WGATE || r == R_WUP || r == R_WDOWN ||
           r == R_LM_HEAD || r == R_EMBED;
}

smj_status smj_model_load_gguf(smj_ctx *ctx, const char *path, smj_model **out) {
    *out = NULL;
    smj_gguf *g = NULL;
    smj_model *m = NULL;
    smj_tensor_spec *specs = NULL;
    int *tix = NULL, *dtype = NULL, n = 0;
    int64_t *nbytes = NULL, np = 0;
    uint8_t *buf = NULL, *buf2 = NULL;
    smj_model_config cfg;
    SMJ_TRY(smj_gguf_open(ctx, path, &g));
    smj_status st = smj_gguf_model_config(ctx, g, &cfg);
    if (st == SMJ_OK) st = smj_model_build_specs(ctx, &cfg, &specs, &n, &np);
    if (st != SMJ_OK) goto done;
    tix = malloc(sizeof(int) * (size_t)n);
    dtype = malloc(sizeof(int) * (size_t)n);
    nbytes = malloc(sizeof(int64_t) * (size_t)n);
    if (!tix || !dtype || !nbytes) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory"); goto done; }
    /* each tensor: found, right shape; its storage type */
    int64_t most = 0;
    for (int i = 0; i < n; i++) {
        const smj_tensor_spec *sp = &specs[i];
        char name[64];
        if (!smj_gguf_tensor_name(sp->name, name, sizeof name)) {
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: tensor '%s' has no GGUF counterpart", sp->name);
            goto done;
        }
        int ti = smj_gguf_find_tensor(g, name);
        smj_gguf_tensor_info t;
        if (ti < 0 || smj_gguf_tensor(g, ti, &t) != SMJ_OK) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
            goto done;
        }
        int64_t ne0 = sp->shape[sp->ndim - 1], ne1 = sp->ndim == 2 ? sp->shape[0] : 1;
        if (t.ndim != sp->ndim || t.ne[0] != ne0 || (sp->ndim == 2 && t.ne[1] != ne1)) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor '%s' has the wrong shape", path, name);
            goto done;
        }
        tix[i] = ti;
        int keep = sp->ndim == 2 && typed_role(sp->role) &&
                   (t.type == SMJ_GGML_F16 || t.type == SMJ_GGML_Q8_0 || t.type == SMJ_GGML_Q4_0);
        dtype[i] = keep ? t.type : SMJ_DTYPE_F32; /* SMJ_WTYPE_* are the GGML ids */
        nbytes[i] = keep ? (int64_t)t.nbytes : (int64_t)sizeof(float) * sp->numel;
        if (nbytes[i] > most) most = nbytes[i];
    }
    if ((st = smj_model_alloc_typed(ctx, &cfg, dtype, nbytes, &m)) != SMJ_OK) {
        if (st == SMJ_ERR_UNSUPPORTED) {
            char why[256];
            snprintf(why, sizeof why, "%s", smj_ctx_error(ctx));
            smj_set_error(ctx, st, "%s: %s", path, why);
        }
        goto done;
    }
    buf = malloc((size_t)most);
    buf2 = malloc((size_t)most);
    if (!buf || !buf2) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory"); goto done; }
    for (int i = 0; i < n; i++) {
        const smj_tensor_spec *sp = &m->specs[i];
        int ti = tix[i];
        smj_gguf_tensor_info t;
        smj_gguf_tensor(g, ti, &t);
        int qk = !cfg.qk_norm && (sp->role == R_WQ || sp->role == R_WK);
        int nh = sp->role == R_WQ ? cfg.n_heads : cfg.n_kv_heads;
        uint8_t *src = buf;
        if (sp->dtype == SMJ_DTYPE_F32) {
            if ((st = smj_gguf_tensor_to_f32(ctx, g, ti, (float *)buf)) != SMJ_OK) goto done;
        } else {
            memcpy(buf, smj_gguf_tensor_data(g, ti), (size_t)t.nbytes);
        }
        if (qk) { /* llama: undo the row permutation of llama.cpp's interleaved RoPE */
            unpermute_rows(buf2, buf, sp->nbytes / sp->shape[0], nh, cfg.head_dim);
            src = buf2;
        }
        if (sp->dtype == SMJ_DTYPE_F32)
            m->be->upload(m->params + sp->offset, src, (size_t)sp->nbytes);
        else
            m->be->upload(m->qmem + sp->offset, src, (size_t)sp->nbytes);
        smj_gguf_release(g, ti);
    }
    *out = m;
    m = NULL;
done:
    free(buf);
    free(buf2);
    free(tix);
    free(dtype);
    free(nbytes);
    free(specs);
    smj_model_free(m);
    smj_gguf_free(g);
    return st;
}

int smj_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char mg[4];
    int ok = fread(mg, 1, 4, f) == 4 && memcmp(mg, SMJ_GGUF_MAGIC, 4) == 0;
    fclose(f);
    return ok;
}

/* ---- the embedded tokenizer back as ours */

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

smj_status smj_gguf_tokenizer(smj_ctx *ctx, const smj_gguf *g, smj_tokenizer **out) {
    *out = NULL;
    int mi = smj_gguf_find_kv(g, "tokenizer.ggml.model"), ti = smj_gguf_find_kv(g, "tokenizer.ggml.tokens"),
        gi = smj_gguf_find_kv(g, "tokenizer.ggml.merges");
    size_t ml = 0;
    const char *model = mi >= 0 ? smj_gguf_kv_str(g, mi, 0, &ml) : NULL;
    smj_gguf_kv_info tk, mk;
    if (!model || ml != 4 || memcmp(model, "gpt2", 4) || ti < 0 || gi < 0 || smj_gguf_kv(g, ti, &tk) != SMJ_OK ||
        smj_gguf_kv(g, gi, &mk) != SMJ_OK)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: the embedded tokenizer is not GPT-2-style byte-level BPE "
                 "(tokenizer.ggml.model \"gpt2\" with tokens and merges); give --tokenizer");
    uint64_t V = tk.n, M = mk.n;
    if (V != 256 + M + 3)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: the embedded tokenizer (%llu tokens, %llu merges) is not in "
                 "smedjan's layout (256 byte tokens, the merges in order, 3 special tokens); give --tokenizer",
                 (unsigned long long)V, (unsigned long long)M);
    /* the 256 byte tokens must be GPT-2's byte alphabet, in byte order */
    for (int b = 0; b < 256; b++) {
        size_t l = 0;
        const char *s = smj_gguf_kv_str(g, ti, (uint64_t)b, &l);
        uint32_t cp = smj_gguf_byte_to_cp((uint8_t)b);
        char u[3];
        size_t ul = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), 2);
        if (!s || l != ul || memcmp(s, u, l))
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: token %d is not byte %d of the GPT-2 alphabet: the embedded "
                     "tokenizer is not in smedjan's layout; give --tokenizer", b, b);
    }
    size_t cap = 1;
    while (cap < 2 * V) cap <<= 1;
    int32_t *tab = malloc(sizeof(int32_t) * cap);
    int32_t *pairs = malloc(sizeof(int32_t) * 2 * (M ? M : 1));
    smj_status st = SMJ_OK;
    if (!tab || !pairs) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory"); goto done; }
    for (size_t i = 0; i < cap; i++) tab[i] = -1;
    for (uint64_t id = 0; id < 256 + M; id++) {
        size_t l = 0;
        const char *s = smj_gguf_kv_str(g, ti, id, &l);
        size_t h = (size_t)fnv(s, l) & (cap - 1);
        while (tab[h] >= 0) h = (h + 1) & (cap - 1);
        tab[h] = (int32_t)id;
    }
    for (uint64_t i = 0; i < M && st == SMJ_OK; i++) {
        size_t l = 0, tl = 0;
        const char *s = smj_gguf_kv_str(g, gi, i, &l), *t = smj_gguf_kv_str(g, ti, 256 + i, &tl);
        const char *sp = s ? memchr(s, ' ', l) : NULL;
        int32_t ids[2] = {-1, -1};
        if (sp && t && tl == l - 1 && !memcmp(t, s, (size_t)(sp - s)) && !memcmp(t + (sp - s), sp + 1, l - (size_t)(sp - s) - 1))
            for (int k = 0; k < 2; k++) {
                const char *p = k ? sp + 1 : s;
                size_t pl = k ? l - (size_t)(sp - s) - 1 : (size_t)(sp - s);
                for (size_t h = (size_t)fnv(p, pl) & (cap - 1); tab[h] >= 0; h = (h + 1) & (cap - 1)) {
                    size_t ql = 0;
                    const char *q = smj_gguf_kv_str(g, ti, (uint64_t)tab[h], &ql);
                    if (ql == pl && !memcmp(q, p, pl)) { ids[k] = tab[h]; break; }
                }
            }
        if (ids[0] < 0 || ids[1] < 0 || ids[0] >= 256 + (int64_t)i || ids[1] >= 256 + (int64_t)i)
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: merge %llu does not build token %llu from earlier "
                               "tokens: the embedded tokenizer is not in smedjan's layout; give --tokenizer",
                               (unsigned long long)i, (unsigned long long)(256 + i));
        pairs[2 * i] = ids[0];
        pairs[2 * i + 1] = ids[1];
    }
    if (st == SMJ_OK) st = smj_tokenizer_from_merges(ctx, pairs, (int)M, out);
    for (int k = 0; st == SMJ_OK && k < 3; k++) { /* the special tokens must be the defaults */
        size_t l = 0, ol = 0;
        const char *s = smj_gguf_kv_str(g, ti, 256 + M + (uint64_t)k, &l);
        const char *o = smj_tokenizer_special_text(*out, k, &ol);
        if (!s || !o || l != ol || memcmp(s, o, l)) {
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: special token %d differs from smedjan's; give --tokenizer", k);
            smj_tokenizer_free(*out);
            *out = NULL;
        }
    }
done:
    free(tab);
    free(pairs);
    return st;
}

smj_status smj_tokenizer_load_gguf(smj_ctx *ctx, const char *path, smj_tokenizer **out) {
    smj_gguf *g = NULL;
    *out = NULL;
    SMJ_TRY(smj_gguf_open(ctx, path, &g));
    smj_status st = smj_gguf_tokenizer(ctx, g, out);
    smj_gguf_free(g);
    return st;
}
