/* hf_model.c — smj_import_hf / smj_export_hf: a HuggingFace model directory
 * to a smj_model and back. Tensor names and layouts are already HF's (the
 * model table in model/llama.c), so both directions are copies by name with
 * shape checks; the config goes through hf_config.c. See docs/HF.md.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../core/core.h"
#include "../model/model.h"
#include "hf.h"
#include "safetensors.h"

#define MAX_CONFIG_BYTES (16u << 20)

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = 0;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < ndim && o < n; d++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

smj_status smj_import_hf(smj_ctx *ctx, const char *dir, smj_hf_import_options *opts, smj_model **out) {
    *out = NULL;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if ((uint64_t)sb.st_size > MAX_CONFIG_BYTES) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: larger than 16 MiB", path);
    uint8_t *text;
    size_t tn;
    SMJ_TRY(smj_read_file(ctx, path, &text, &tn));
    smj_model_config cfg;
    const char *arch = NULL;
    char local_notes[8];
    char *notes = opts ? opts->notes : local_notes;
    size_t notes_cap = opts ? sizeof opts->notes : sizeof local_notes;
    smj_status st = smj_hf_config_parse(ctx, (const char *)text, tn, path, opts ? opts->max_seq_len : 0, &cfg, &arch,
                                        notes, notes_cap);
    free(text);
    SMJ_TRY(st);

    smj_st_set *set;
    SMJ_TRY(smj_st_set_open(ctx, dir, &set));
    smj_model *m = NULL;
    st = smj_model_alloc(ctx, &cfg, &m);
    int n_set = smj_st_set_count(set);
    char *used = st == SMJ_OK ? calloc((size_t)n_set + 1, 1) : NULL;
    if (st == SMJ_OK && !used) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
    int nt = st == SMJ_OK ? smj_model_num_tensors(m) : 0;
    /* the parameters in host memory (a copy on a device backend, uploaded at the end) */
    float *hp = st == SMJ_OK ? smj_model_params_host(m) : NULL;
    if (st == SMJ_OK && !hp) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
    const float *embed = NULL;
    for (int i = 0; i < nt && st == SMJ_OK; i++) {
        smj_tensor_view v;
        if ((st = smj_model_tensor(m, i, &v)) != SMJ_OK) break;
        float *dst = hp + (v.data - m->params);
        if (strcmp(v.name, "model.embed_tokens.weight") == 0 || strcmp(v.name, "transformer.wte.weight") == 0)
            embed = dst;
        int k = smj_st_set_find(set, v.name);
        /* GPT-2 files saved from the base model (and the original hub ones) lack the "transformer." prefix */
        if (k < 0 && cfg.arch == SMJ_ARCH_GPT2 && strncmp(v.name, "transformer.", 12) == 0)
            k = smj_st_set_find(set, v.name + 12);
        char want[128], have[128];
        shape_str(want, sizeof want, v.ndim, v.shape);
        if (k < 0) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor %s %s (needed by %s with this config.json) is missing",
                               dir, v.name, want, arch);
            break;
        }
        const smj_st_file *f;
        int idx;
        const smj_st_tensor *t = smj_st_set_get(set, k, &f, &idx);
        int same = t->ndim == v.ndim;
        for (int d = 0; same && d < v.ndim; d++) same = t->shape[d] == v.shape[d];
        if (!same) {
            shape_str(have, sizeof have, t->ndim, t->shape);
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor %s has shape %s but config.json implies %s",
                               smj_st_path(f), v.name, have, want);
            break;
        }
        st = smj_st_read_f32(ctx, f, idx, dst);
        used[k] = 1;
    }
    /* Extra tensors: rotary inv_freq buffers are skipped; an lm_head.weight
     * equal to the embedding of a tied model is accepted; anything else is
     * something this model cannot hold. */
    for (int k = 0; k < n_set && st == SMJ_OK; k++) {
        if (used[k]) continue;
        const smj_st_file *f;
        int idx;
        const smj_st_tensor *t = smj_st_set_get(set, k, &f, &idx);
        if (ends_with(t->name, "rotary_emb.inv_freq")) continue;
        /* GPT-2's causal-mask buffers (older checkpoints saved them) */
        if (cfg.arch == SMJ_ARCH_GPT2 && (ends_with(t->name, ".attn.bias") || ends_with(t->name, ".attn.masked_bias")) &&
            t->ndim != 1)
            continue;
        if (cfg.tied_embeddings && strcmp(t->name, "lm_head.weight") == 0 && embed && t->ndim == 2 &&
            t->shape[0] == cfg.vocab_size && t->shape[1] == cfg.dim) {
            float *tmp = malloc(sizeof(float) * (size_t)t->numel);
            if (!tmp) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory"); break; }
            st = smj_st_read_f32(ctx, f, idx, tmp);
            int eq = st == SMJ_OK && memcmp(tmp, embed, sizeof(float) * (size_t)t->numel) == 0;
            free(tmp);
            if (st != SMJ_OK) break;
            if (eq) continue;
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: lm_head.weight differs from the token embedding but "
                               "config.json says tie_word_embeddings", smj_st_path(f));
            break;
        }
        st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: unexpected tensor %s: %s with this config.json has no such "
                           "tensor", smj_st_path(f), t->name, arch);
    }
    free(used);
    smj_st_set_close(set);
    if (m) smj_model_params_release(m, hp, st == SMJ_OK);
    if (st != SMJ_OK) {
        smj_model_free(m);
        return st;
    }
    *out = m;
    return SMJ_OK;
}

/* ------------------------------------------------------------------ export */

static smj_status write_text(smj_ctx *ctx, const char *dir, const char *name, const smj_jbuf *b) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
    smj_wfile w;
    SMJ_TRY(smj_wfile_open(ctx, &w, path));
    smj_wfile_write(&w, b->p, b->len);
    return smj_wfile_commit(ctx, &w);
}

/* Creates dir (and missing parents); refuses a non-empty one unless
 * overwrite. */
static smj_status prepare_dir(smj_ctx *ctx, const char *dir, int overwrite) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s exists and is not a directory", dir);
        DIR *d = opendir(dir);
        if (!d) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
        struct dirent *e;
        int empty = 1;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) { empty = 0; break; }
        closedir(d);
        if (!empty && !overwrite)
            SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s is not empty (allow overwriting to write into it)", dir);
        return SMJ_OK;
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
            SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    return SMJ_OK;
}

smj_status smj_export_hf(smj_model *m, const smj_tokenizer *tok, const char *dir, const smj_hf_export_options *opts) {
    smj_ctx *ctx = m->ctx;
    const smj_model_config *cfg = smj_model_get_config(m);
    int bf16 = opts && opts->bf16;
    SMJ_CHECK(ctx, !opts || opts->max_shard_bytes >= 0, SMJ_ERR_INVALID, "negative shard size");
    if (tok)
        SMJ_CHECK(ctx, smj_tokenizer_vocab_size(tok) <= cfg->vocab_size, SMJ_ERR_INVALID,
                  "the tokenizer has %d ids but the model's vocabulary is %d", smj_tokenizer_vocab_size(tok),
                  cfg->vocab_size);
    /* Build every text first, so nothing is written when one cannot be. */
    smj_jbuf conf = {0}, gen = {0}, tj = {0}, tc = {0};
    smj_status st = smj_hf_config_json(ctx, cfg, tok, bf16, &conf);
    if (st == SMJ_OK) st = smj_hf_generation_config_json(ctx, tok, &gen);
    if (st == SMJ_OK && tok) st = smj_hf_tokenizer_json(ctx, tok, &tj);
    if (st == SMJ_OK && tok) st = smj_hf_tokenizer_config_json(ctx, tok, cfg->max_seq_len, &tc);
    if (st == SMJ_OK) st = prepare_dir(ctx, dir, opts && opts->overwrite);
    int nt = smj_model_num_tensors(m);
    smj_st_wtensor *wt = st == SMJ_OK ? calloc((size_t)nt + 1, sizeof *wt) : NULL;
    float *hp = st == SMJ_OK ? smj_model_params_host(m) : NULL; /* a copy on a device backend */
    if (st == SMJ_OK && (!wt || !hp)) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nt && st == SMJ_OK; i++) {
        smj_tensor_view v;
        st = smj_model_tensor(m, i, &v);
        wt[i].name = v.name;
        wt[i].ndim = v.ndim;
        for (int d = 0; d < v.ndim; d++) wt[i].shape[d] = v.shape[d];
        wt[i].data = hp + (v.data - m->params);
    }
    int n_files = 0;
    if (st == SMJ_OK) {
        smj_st_write_options wo = {.bf16 = bf16, .max_shard_bytes = opts ? (uint64_t)opts->max_shard_bytes : 0};
        st = smj_st_write(ctx, dir, wt, nt, &wo, &n_files);
    }
    free(wt);
    if (hp) smj_model_params_release(m, hp, 0);
    if (st == SMJ_OK) st = write_text(ctx, dir, "config.json", &conf);
    if (st == SMJ_OK) st = write_text(ctx, dir, "generation_config.json", &gen);
    if (st == SMJ_OK && tok) st = write_text(ctx, dir, "tokenizer.json", &tj);
    if (st == SMJ_OK && tok) st = write_text(ctx, dir, "tokenizer_config.json", &tc);
    /* When overwriting: a stale file of the other layout would shadow or
     * confuse the one just written (loaders look for model.safetensors first). */
    if (st == SMJ_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, n_files > 1 ? "model.safetensors" : "model.safetensors.index.json");
        if (unlink(path) != 0 && errno != ENOENT)
            st = smj_set_error(ctx, SMJ_ERR_IO, "%s: cannot remove the stale file: %s", path, strerror(errno));
    }
    smj_jbuf_free(&conf);
    smj_jbuf_free(&gen);
    smj_jbuf_free(&tj);
    smj_jbuf_free(&tc);
    return st;
}
