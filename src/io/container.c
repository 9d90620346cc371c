/* container.c — see container.h. */
#include "container.h"
#include <errno.h>
#include <string.h>

#define CT_MAGIC "SMEDJAN"
#define CT_VERSION 1
#define CT_HEADER 40
#define CT_ALIGN 64
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "smedjan's file formats are little-endian; this build assumes a little-endian host"
#endif

smj_status smj_container_write(smj_ctx *ctx, const char *path, uint32_t kind, const char *meta,
                               smj_ct_entry *e, int n) {
    size_t meta_len = strlen(meta), table = 0;
    for (int i = 0; i < n; i++) table += 4 + strlen(e[i].name) + 8 + 8 * e[i].ndim + 16;
    uint64_t data_off = (CT_HEADER + meta_len + table + CT_ALIGN - 1) / CT_ALIGN * CT_ALIGN, off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (uint32_t d = 0; d < e[i].ndim; d++) numel *= (uint64_t)e[i].shape[d];
        e[i].offset = off;
        e[i].nbytes = numel * 4;
        off += (e[i].nbytes + CT_ALIGN - 1) / CT_ALIGN * CT_ALIGN;
    }
    uint8_t *head = calloc(1, data_off);
    if (!head) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);
    memcpy(head, CT_MAGIC, 8);
    smj_wr_u32(head + 8, CT_VERSION);
    smj_wr_u32(head + 12, kind);
    smj_wr_u64(head + 16, meta_len);
    smj_wr_u64(head + 24, (uint64_t)n);
    smj_wr_u64(head + 32, data_off);
    memcpy(head + CT_HEADER, meta, meta_len);
    uint8_t *p = head + CT_HEADER + meta_len;
    for (int i = 0; i < n; i++) {
        uint32_t nl = (uint32_t)strlen(e[i].name);
        smj_wr_u32(p, nl); memcpy(p + 4, e[i].name, nl); p += 4 + nl;
        smj_wr_u32(p, e[i].dtype); smj_wr_u32(p + 4, e[i].ndim); p += 8;
        for (uint32_t d = 0; d < e[i].ndim; d++) { smj_wr_u64(p, (uint64_t)e[i].shape[d]); p += 8; }
        smj_wr_u64(p, e[i].offset); smj_wr_u64(p + 8, e[i].nbytes); p += 16;
    }
    smj_wfile w;
    smj_status st = smj_wfile_open(ctx, &w, path);
    if (st) { free(head); return st; }
    uint32_t crc = smj_crc32(0, head, data_off);
    smj_wfile_write(&w, head, data_off);
    free(head);
    static const uint8_t zeros[CT_ALIGN] = {0};
    for (int i = 0; i < n; i++) {
        size_t pad = (size_t)((e[i].nbytes + CT_ALIGN - 1) / CT_ALIGN * CT_ALIGN - e[i].nbytes);
        smj_wfile_write(&w, e[i].data, e[i].nbytes);
        smj_wfile_write(&w, zeros, pad);
        crc = smj_crc32(crc, e[i].data, e[i].nbytes);
        crc = smj_crc32(crc, zeros, pad);
    }
    uint8_t tail[4];
    smj_wr_u32(tail, crc);
    smj_wfile_write(&w, tail, 4);
    return smj_wfile_commit(ctx, &w);
}

#define BAD(...) do { st = smj_set_error(ctx, SMJ_ERR_FORMAT, __VA_ARGS__); goto fail; } while (0)

smj_status smj_container_read(smj_ctx *ctx, const char *path, smj_container *c) {
    memset(c, 0, sizeof *c);
    const uint8_t *m;
    size_t len;
    SMJ_TRY(smj_map_file(ctx, path, &m, &len));
    if (len < CT_HEADER + 4) {
        smj_unmap_file(m, len);
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: not a smedjan checkpoint (%zu bytes, too short)", path, len);
    }
    c->map = m;
    c->len = len;
    smj_status st = SMJ_OK;
    if (memcmp(m, CT_MAGIC, 8) != 0) BAD("%s: not a smedjan checkpoint (bad magic)", path);
    if (smj_rd_u32(m + 8) != CT_VERSION) BAD("%s: checkpoint version %u, this build reads version %d", path, smj_rd_u32(m + 8), CT_VERSION);
    c->kind = smj_rd_u32(m + 12);
    if (c->kind != SMJ_CT_MODEL && c->kind != SMJ_CT_TRAIN_STATE) BAD("%s: unknown checkpoint kind %u", path, c->kind);
    uint64_t meta_len = smj_rd_u64(m + 16), n = smj_rd_u64(m + 24), data_off = smj_rd_u64(m + 32);
    if (data_off > len - 4 || data_off % CT_ALIGN || meta_len > data_off - CT_HEADER)
        BAD("%s: header offsets out of range (truncated or corrupt)", path);
    if (n > 100000 || n > (data_off - CT_HEADER - meta_len) / 24) BAD("%s: tensor count %llu is impossible for this file", path, (unsigned long long)n);
    uint32_t want = smj_rd_u32(m + len - 4), got = smj_crc32(0, m, len - 4);
    if (want != got) BAD("%s: checksum mismatch (file is truncated or corrupt)", path);
    c->meta = malloc(meta_len + 1);
    c->e = calloc(n ? n : 1, sizeof *c->e);
    if (!c->meta || !c->e) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    memcpy(c->meta, m + CT_HEADER, meta_len);
    c->meta[meta_len] = 0;
    if (strlen(c->meta) != meta_len) BAD("%s: metadata contains NUL bytes", path);
    const uint8_t *p = m + CT_HEADER + meta_len, *end = m + data_off;
    uint64_t data_len = len - 4 - data_off;
    for (uint64_t i = 0; i < n; i++) {
        smj_ct_entry *e = &c->e[i];
        if (end - p < 4) BAD("%s: tensor table truncated", path);
        uint32_t nl = smj_rd_u32(p);
        if (nl == 0 || nl >= sizeof e->name || (uint64_t)(end - p) < 4 + (uint64_t)nl + 8) BAD("%s: tensor %llu has a bad name length %u", path, (unsigned long long)i, nl);
        memcpy(e->name, p + 4, nl);
        p += 4 + nl;
        e->dtype = smj_rd_u32(p); e->ndim = smj_rd_u32(p + 4); p += 8;
        if (e->dtype != SMJ_DT_F32) BAD("%s: tensor '%s' has unknown dtype %u", path, e->name, e->dtype);
        if (e->ndim > 4) BAD("%s: tensor '%s' has %u dimensions (at most 4)", path, e->name, e->ndim);
        if ((uint64_t)(end - p) < 8ull * e->ndim + 16) BAD("%s: tensor table truncated at '%s'", path, e->name);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < e->ndim; d++) {
            uint64_t s = smj_rd_u64(p); p += 8;
            if (s > (1ull << 40) || (s && numel > (1ull << 40) / s)) BAD("%s: tensor '%s' has an impossible shape", path, e->name);
            e->shape[d] = (int64_t)s;
            numel *= s;
        }
        e->offset = smj_rd_u64(p); e->nbytes = smj_rd_u64(p + 8); p += 16;
        if (e->nbytes != numel * 4) BAD("%s: tensor '%s' size %llu does not match its shape", path, e->name, (unsigned long long)e->nbytes);
        if (e->offset > data_len || e->nbytes > data_len - e->offset || e->offset % CT_ALIGN)
            BAD("%s: tensor '%s' lies outside the file (truncated or corrupt)", path, e->name);
        e->data = m + data_off + e->offset;
    }
    c->n = (int)n;
    return SMJ_OK;
fail:
    smj_container_free(c);
    return st;
}

void smj_container_free(smj_container *c) {
    smj_unmap_file(c->map, c->len);
    free(c->meta);
    free(c->e);
    memset(c, 0, sizeof *c);
}

const char *smj_container_meta(const smj_container *c, const char *key, char *buf, size_t cap) {
    size_t kl = strlen(key);
    for (const char *p = c->meta; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t vl = ll - kl - 1;
            if (vl >= cap) vl = cap - 1;
            memcpy(buf, p + kl + 1, vl);
            buf[vl] = 0;
            return buf;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

const smj_ct_entry *smj_container_find(const smj_container *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].name, name) == 0) return &c->e[i];
    return NULL;
}

void smj_config_to_meta(const smj_model_config *g, char *buf, size_t cap) {
    size_t l = strlen(buf);
    snprintf(buf + l, cap - l,
             "arch=%s\nvocab_size=%d\ndim=%d\nn_layers=%d\nn_heads=%d\nn_kv_heads=%d\nhead_dim=%d\n"
             "ffn_hidden=%d\nmax_seq_len=%d\nrope_theta=%a\nnorm_eps=%a\ntied_embeddings=%d\nqk_norm=%d\n",
             g->arch == SMJ_ARCH_GPT2 ? "gpt2" : "llama", g->vocab_size, g->dim, g->n_layers, g->n_heads,
             g->n_kv_heads, g->head_dim, g->ffn_hidden,
             g->max_seq_len, (double)g->rope_theta, (double)g->norm_eps, g->tied_embeddings, g->qk_norm);
    /* later keys: absent in older checkpoints, where they read as 0 (off / default) */
    l = strlen(buf);
    snprintf(buf + l, cap - l,
             "attn_bias=%d\nattn_out_bias=%d\nrope_type=%d\nrope_factor=%a\nrope_low_freq_factor=%a\n"
             "rope_high_freq_factor=%a\nrope_orig_max_pos=%d\nrope_beta_fast=%a\nrope_beta_slow=%a\n"
             "rope_attn_factor=%a\nrope_yarn_no_truncate=%d\n",
             g->attn_bias, g->attn_out_bias, g->rope_type, (double)g->rope_factor, (double)g->rope_low_freq_factor,
             (double)g->rope_high_freq_factor, g->rope_orig_max_pos, (double)g->rope_beta_fast,
             (double)g->rope_beta_slow, (double)g->rope_attn_factor, g->rope_yarn_no_truncate);
}

smj_status smj_config_from_container(smj_ctx *ctx, const char *path, const smj_container *c,
                                     smj_model_config *g) {
    char v[64];
    const char *a = smj_container_meta(c, "arch", v, sizeof v);
    if (!a) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: metadata has no 'arch'", path);
    int arch = !strcmp(a, "llama") ? SMJ_ARCH_LLAMA : !strcmp(a, "gpt2") ? SMJ_ARCH_GPT2 : -1;
    if (arch < 0) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: unknown architecture '%s' (llama or gpt2)", path, a);
    struct { const char *k; int *i; float *f; int optional; } keys[] = {
        {"vocab_size", &g->vocab_size, 0, 0}, {"dim", &g->dim, 0, 0}, {"n_layers", &g->n_layers, 0, 0},
        {"n_heads", &g->n_heads, 0, 0}, {"n_kv_heads", &g->n_kv_heads, 0, 0}, {"head_dim", &g->head_dim, 0, 0},
        {"ffn_hidden", &g->ffn_hidden, 0, 0}, {"max_seq_len", &g->max_seq_len, 0, 0},
        {"rope_theta", 0, &g->rope_theta, 0}, {"norm_eps", 0, &g->norm_eps, 0},
        {"tied_embeddings", &g->tied_embeddings, 0, 0}, {"qk_norm", &g->qk_norm, 0, 0},
        {"attn_bias", &g->attn_bias, 0, 1}, {"attn_out_bias", &g->attn_out_bias, 0, 1},
        {"rope_type", &g->rope_type, 0, 1}, {"rope_factor", 0, &g->rope_factor, 1},
        {"rope_low_freq_factor", 0, &g->rope_low_freq_factor, 1},
        {"rope_high_freq_factor", 0, &g->rope_high_freq_factor, 1},
        {"rope_orig_max_pos", &g->rope_orig_max_pos, 0, 1}, {"rope_beta_fast", 0, &g->rope_beta_fast, 1},
        {"rope_beta_slow", 0, &g->rope_beta_slow, 1}, {"rope_attn_factor", 0, &g->rope_attn_factor, 1},
        {"rope_yarn_no_truncate", &g->rope_yarn_no_truncate, 0, 1},
    };
    memset(g, 0, sizeof *g);
    g->arch = arch;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!smj_container_meta(c, keys[i].k, v, sizeof v)) {
            if (keys[i].optional) continue; /* stays 0 */
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: metadata has no '%s'", path, keys[i].k);
        }
        char *e;
        errno = 0;
        if (keys[i].i) {
            long x = strtol(v, &e, 10);
            if (*e || errno || x < -2147483647L || x > 2147483647L) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: bad value '%s' for '%s'", path, v, keys[i].k);
            *keys[i].i = (int)x;
        } else {
            double x = strtod(v, &e);
            if (*e || errno) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: bad value '%s' for '%s'", path, v, keys[i].k);
            *keys[i].f = (float)x;
        }
    }
    smj_status st = smj_config_validate(ctx, g);
    if (st) {
        char msg[sizeof ctx->err];
        snprintf(msg, sizeof msg, "%s", ctx->err);
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: bad model config: %s", path, msg);
    }
    return SMJ_OK;
}
