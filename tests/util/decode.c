/* decode.c — see decode.h. */
#include "decode.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
