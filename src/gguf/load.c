/* load.c — smj_gguf_load_weights: GGUF tensors back into a smedjan model
 * (see gguf.h). The config is the caller's; only weights are read here. */
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "../core/core.h"

smj_status smj_gguf_load_weights(smj_ctx *ctx, const smj_gguf *g, smj_model *m) {
    const smj_model_config *c = smj_model_get_config(m);
    const char *want = c->qk_norm ? "qwen3" : "llama";
    int ai = smj_gguf_find_kv(g, "general.architecture");
    size_t al = 0;
    const char *arch = ai >= 0 ? smj_gguf_kv_str(g, ai, 0, &al) : NULL;
    if (!arch || al != strlen(want) || memcmp(arch, want, al) != 0)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: general.architecture is not '%s'", want);
    int n = smj_model_num_tensors(m);
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        SMJ_TRY(smj_model_tensor(m, i, &v));
        char name[64];
        if (!smj_gguf_tensor_name(v.name, name, sizeof name))
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF: tensor '%s' has no GGUF counterpart", v.name);
        int ti = smj_gguf_find_tensor(g, name);
        if (ti < 0) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: tensor '%s' is missing", name);
        smj_gguf_tensor_info t;
        SMJ_TRY(smj_gguf_tensor(g, ti, &t));
        int64_t ne0 = v.shape[v.ndim - 1], ne1 = v.ndim == 2 ? v.shape[0] : 1;
        if (t.ndim != v.ndim || t.ne[0] != ne0 || (v.ndim == 2 && t.ne[1] != ne1))
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "GGUF: tensor '%s' has the wrong shape", name);
        int qk = !c->qk_norm && (strstr(name, ".attn_q.weight") || strstr(name, ".attn_k.weight"));
        if (!qk) {
            SMJ_TRY(smj_gguf_tensor_to_f32(ctx, g, ti, v.data));
            continue;
        }
        float *tmp = malloc(sizeof(float) * (size_t)v.numel);
        if (!tmp) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "GGUF: out of memory");
        smj_status st = smj_gguf_tensor_to_f32(ctx, g, ti, tmp);
        if (st == SMJ_OK)
            smj_gguf_permute_rows(tmp, v.data, strstr(name, ".attn_q.") ? c->n_heads : c->n_kv_heads,
                                  c->head_dim, ne0, 1);
        free(tmp);
        if (st != SMJ_OK) return st;
    }
    return SMJ_OK;
}
