/* decode.c — see decode.h. */
#include "decode.h"
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include "check.h"
#include "../../src/hf/safetensors.h"

int greedy_decode(smj_model *m, const int32_t *prompt, int np, int n, int32_t *out, const int32_t *other,
                  float *gap) {
    smj_session *s = NULL;
    if (smj_session_create(m, np + n + 1, &s) != SMJ_OK) return -1;
    const float *logits = NULL;
    int V = smj_model_get_config(m)->vocab_size, ok = smj_session_feed(s, prompt, np, &logits) == SMJ_OK;
    for (int i = 0; ok && i < n; i++) {
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        out[i] = best;
        if (other) gap[i] = logits[best] - logits[other[i]];
        ok = smj_session_feed(s, &best, 1, &logits) == SMJ_OK;
    }
    smj_session_free(s);
    return ok ? 0 : -1;
}

int json_ids(const char *js, const char *key, int32_t *out, int cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":[", key);
    const char *p = strstr(js, pat);
    if (!p) return -1;
    p += strlen(pat);
    int n = 0;
    while (*p && *p != ']') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || n >= cap) return -1;
        out[n++] = (int32_t)v;
        p = end;
        if (*p == ',') p++;
    }
    return *p == ']' ? n : -1;
}

void check_kv_cache(smj_ctx *ctx, smj_model *m, int T, const char *label) {
    int V = smj_model_get_config(m)->vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    float *full = malloc(sizeof(float) * (size_t)T * V);
    smj_session *s = NULL;
    CHECK(ids && full && T > 70, "%s: bad KV-cache test setup", label);
    if (!ids || !full || T <= 70) goto done;
    for (int i = 0; i < T; i++) ids[i] = (i * 31 + 7) % V;
    CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 1, T, NULL));
    CHECK_OK(ctx, smj_model_get_logits(m, full));
    CHECK_OK(ctx, smj_session_create(m, T, &s));
    if (!s) goto done;
    const float *lg = NULL;
    double worst = 0;
    CHECK_OK(ctx, smj_session_feed(s, ids, 70, &lg));
    if (lg) worst = fmax(worst, rel_l2(lg, full + (int64_t)69 * V, V));
    for (int t = 70; t < T && lg; t++) {
        CHECK_OK(ctx, smj_session_feed(s, ids + t, 1, &lg));
        worst = fmax(worst, rel_l2(lg, full + (int64_t)t * V, V));
    }
    printf("%s: KV-cache decoding vs full forward: worst rel L2 %.3g\n", label, worst);
    CHECK(worst < 1e-5, "%s: KV-cache decoding vs full forward: worst rel L2 %.3g", label, worst);
    CHECK(smj_session_length(s) == T, "%s: session length", label);
    smj_status st = smj_session_feed(s, ids, 1, &lg);
    CHECK(st == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "full"), "%s: feeding past the cache: %s", label,
          smj_ctx_error(ctx));
    smj_session_reset(s);
    CHECK_OK(ctx, smj_session_feed(s, ids, 5, &lg));
    CHECK(lg && rel_l2(lg, full + (int64_t)4 * V, V) < 1e-5, "%s: after reset the session starts over", label);
done:
    smj_session_free(s);
    free(ids);
    free(full);
}

void check_greedy(smj_ctx *ctx, smj_model *m, const char *label) {
    enum { P = 5, N = 24 };
    int V = smj_model_get_config(m)->vocab_size;
    int32_t prompt[P], ref[N], got[N], got2[N];
    float *scratch = malloc(sizeof(float) * (size_t)V), *ref_lg = malloc(sizeof(float) * (size_t)V);
    smj_session *a = NULL, *b = NULL;
    for (int i = 0; i < P; i++) prompt[i] = (i * 13 + 2) % V;
    CHECK_OK(ctx, smj_session_create(m, P + N, &a));
    CHECK_OK(ctx, smj_session_create(m, P + N, &b));
    if (!a || !b || !scratch || !ref_lg) goto done;
    smj_sampler_options so;
    smj_sampler_defaults(&so);
    so.temperature = 0;
    so.repetition_penalty = 1;
    uint64_t rng = 1;
    const float *lg = NULL, *lb = NULL;
    CHECK(smj_session_greedy(b, 1, got, &lb) == SMJ_ERR_INVALID, "%s: greedy before any feed: %s", label,
          smj_ctx_error(ctx));
    CHECK_OK(ctx, smj_session_feed(a, prompt, P, &lg));
    for (int i = 0; i < N && lg; i++) {
        ref[i] = smj_sample(lg, V, &so, NULL, 0, &rng, scratch);
        CHECK_OK(ctx, smj_session_feed(a, ref + i, 1, &lg));
    }
    if (lg) memcpy(ref_lg, lg, sizeof(float) * (size_t)V);
    CHECK_OK(ctx, smj_session_feed(b, prompt, P, NULL));
    CHECK_OK(ctx, smj_session_greedy(b, N, got, &lb));
    int same = lb && memcmp(ref, got, sizeof ref) == 0 && memcmp(ref_lg, lb, sizeof(float) * (size_t)V) == 0;
    CHECK(smj_session_greedy(b, 1, got2, NULL) == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "full"),
          "%s: greedy past the cache: %s", label, smj_ctx_error(ctx));
    /* the same in calls of 1, 7 and 16 */
    smj_session_reset(b);
    CHECK_OK(ctx, smj_session_feed(b, prompt, P, NULL));
    CHECK_OK(ctx, smj_session_greedy(b, 1, got2, NULL));
    CHECK_OK(ctx, smj_session_greedy(b, 7, got2 + 1, NULL));
    CHECK_OK(ctx, smj_session_greedy(b, 16, got2 + 8, &lb));
    same = same && lb && memcmp(ref, got2, sizeof ref) == 0 && memcmp(ref_lg, lb, sizeof(float) * (size_t)V) == 0;
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= ref[j] == ref[i];
        distinct += !seen;
    }
    CHECK(distinct >= 4, "%s: greedy test setup: the model repeats itself (%d distinct tokens of %d)", label,
          distinct, N);
    CHECK(same, "%s: smj_session_greedy differs from feeding smj_sample's greedy choice back", label);
    printf("%s: greedy decoding of %d tokens (%d distinct) == feed + sample loop, bit for bit: %s\n", label, N,
           distinct, same ? "yes" : "NO");
done:
    smj_session_free(a);
    smj_session_free(b);
    free(scratch);
    free(ref_lg);
}

void round_weights_bf16(smj_ctx *ctx, smj_model *m) {
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        CHECK_OK(ctx, smj_model_tensor(m, i, &v));
        float *h = malloc(sizeof(float) * (size_t)v.numel);
        if (!h) continue;
        CHECK_OK(ctx, smj_model_tensor_get(m, i, 0, h));
        for (int64_t j = 0; j < v.numel; j++) h[j] = smj_bf16_to_f32(smj_f32_to_bf16(h[j]));
        CHECK_OK(ctx, smj_model_tensor_set(m, i, h));
        free(h);
    }
}

void set_biases(smj_ctx *ctx, smj_model *m) {
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        CHECK_OK(ctx, smj_model_tensor(m, i, &v));
        if (!strstr(v.name, "bias")) continue;
        float *h = malloc(sizeof(float) * (size_t)v.numel);
        if (!h) continue;
        for (int64_t j = 0; j < v.numel; j++) h[j] = 0.3f * sinf((float)(3 * j + i));
        CHECK_OK(ctx, smj_model_tensor_set(m, i, h));
        free(h);
    }
}

void check_decode_bf16_weights(const smj_model_config *c, const char *name) {
    smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_REF, .bf16_matmul = 1};
    smj_ctx *ctx = smj_ctx_create(&o);
    char label[160];
    for (int rounded = 0; ctx && rounded < 2; rounded++) {
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, c, 23, &m));
        if (!m) break;
        set_biases(ctx, m);
        int V = c->vocab_size, T = 80;
        if (rounded) {
            round_weights_bf16(ctx, m);
            snprintf(label, sizeof label, "%s on ref, bf16 mode, weights already bf16 (decode_block steps)", name);
            check_kv_cache(ctx, m, T, label);
        } else {
            /* one token at a time: every step but the first reads the copies */
            int32_t ids[8];
            float *full = malloc(sizeof(float) * (size_t)8 * V);
            const float *lg = NULL;
            smj_session *s = NULL;
            for (int i = 0; i < 8; i++) ids[i] = (i * 7 + 3) % V;
            CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 1, 8, NULL));
            CHECK_OK(ctx, smj_model_get_logits(m, full));
            CHECK_OK(ctx, smj_session_create(m, 8, &s));
            for (int i = 0; s && i < 8; i++) CHECK_OK(ctx, smj_session_feed(s, ids + i, 1, &lg));
            double d = lg ? rel_l2(lg, full + 7 * V, V) : 0;
            printf("%s on ref, bf16 mode, f32 weights: decoding vs full forward rel L2 %.3g (bf16 copies)\n", name, d);
            CHECK(d > 1e-4 && d < 3e-2, "%s: bf16-weight decoding vs the f32 forward: rel L2 %.3g, want the bf16 "
                  "rounding's (1e-4 .. 3e-2)", name, d);
            smj_session_free(s);
            free(full);
        }
        smj_model_free(m);
    }
    smj_ctx_free(ctx);
}
