/* checkpoint.c — model checkpoints: the config in the metadata and every
 * parameter tensor under its HF name, fp32. The same reader takes the
 * weights out of a training state (which has the same tensors plus the
 * optimizer's). Backend-independent: tensors are downloaded to the host
 * before writing and uploaded after reading. */
#include <string.h>
#include "../model/model.h"
#include "container.h"
#include "checkpoint.h"

smj_status smj_model_write_container(smj_model *m, const char *path, uint32_t kind, const char *extra_meta,
                                     const smj_ct_entry *extra, int n_extra) {
    smj_ctx *ctx = m->ctx;
    if (m->qmem)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED,
                 "%s: the model keeps quantized GGUF weights; smedjan checkpoints hold f32 weights only", path);
    char meta[4096] = "";
    smj_config_to_meta(&m->cfg, meta, sizeof meta);
    if (extra_meta) strncat(meta, extra_meta, sizeof meta - strlen(meta) - 1);
    int n = m->n_tensors + n_extra;
    smj_ct_entry *e = calloc((size_t)n, sizeof *e);
    float *host = malloc(sizeof(float) * (size_t)m->n_params);
    if (!e || !host) { free(e); free(host); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path); }
    m->be->download(host, m->params, sizeof(float) * (size_t)m->n_params);
    for (int i = 0; i < m->n_tensors; i++) {
        const smj_tensor_spec *t = &m->specs[i];
        snprintf(e[i].name, sizeof e[i].name, "%s", t->name);
        e[i].dtype = SMJ_DT_F32;
        e[i].ndim = (uint32_t)t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = host + t->offset;
    }
    for (int i = 0; i < n_extra; i++) e[m->n_tensors + i] = extra[i];
    smj_status st = smj_container_write(ctx, path, kind, meta, e, n);
    free(e);
    free(host);
    return st;
}

smj_status smj_model_save(smj_model *m, const char *path) {
    return smj_model_write_container(m, path, SMJ_CT_MODEL, NULL, NULL, 0);
}

smj_status smj_model_read_weights(smj_model *m, const char *path, const smj_container *c) {
    smj_ctx *ctx = m->ctx;
    for (int i = 0; i < m->n_tensors; i++) {
        const smj_tensor_spec *t = &m->specs[i];
        const smj_ct_entry *e = smj_container_find(c, t->name);
        if (!e) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor '%s' is missing", path, t->name);
        int same = e->ndim == (uint32_t)t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
        if (!same) {
            char a[64] = "", b[64] = "";
            for (uint32_t d = 0; d < e->ndim; d++) snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", d ? "x" : "", (long long)e->shape[d]);
            for (int d = 0; d < t->ndim; d++) snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? "x" : "", (long long)t->shape[d]);
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor '%s' has shape [%s], the config needs [%s]", path, t->name, a, b);
        }
        m->be->upload(m->params + t->offset, e->data, e->nbytes);
    }
    return SMJ_OK;
}

smj_status smj_model_load(smj_ctx *ctx, const char *path, smj_model **out) {
    *out = NULL;
    smj_container c;
    SMJ_TRY(smj_container_read(ctx, path, &c));
    smj_model_config cfg;
    smj_model *m = NULL;
    smj_status st = smj_config_from_container(ctx, path, &c, &cfg);
    if (!st) st = smj_model_alloc(ctx, &cfg, &m);
    if (!st) st = smj_model_read_weights(m, path, &c);
    smj_container_free(&c);
    if (st) { smj_model_free(m); return st; }
    *out = m;
    return SMJ_OK;
}

smj_status smj_checkpoint_read_config(smj_ctx *ctx, const char *path, smj_model_config *cfg, int *is_train_state) {
    smj_container c;
    SMJ_TRY(smj_container_read(ctx, path, &c));
    smj_status st = smj_config_from_container(ctx, path, &c, cfg);
    if (is_train_state) *is_train_state = c.kind == SMJ_CT_TRAIN_STATE;
    smj_container_free(&c);
    return st;
}
