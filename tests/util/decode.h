/* decode.h — greedy decoding and the llama.cpp script's JSON, shared by the
 * GGUF tests. */
#ifndef SMJ_TEST_DECODE_H
#define SMJ_TEST_DECODE_H
#include "smedjan.h"
/* Feeds prompt [np] to a fresh session and decodes n tokens greedily into
 * out; when other is not NULL, gap[i] gets the top logit minus the logit of
 * other[i] at step i. Returns 0, or -1 on a library error. */
int greedy_decode(smj_model *m, const int32_t *prompt, int np, int n, int32_t *out, const int32_t *other,
                  float *gap);
/* Parses `"key":[1,2,3]` from a JSON line into out (at most cap); returns the
 * count or -1. */
int json_ids(const char *js, const char *key, int32_t *out, int cap);
/* KV-cache decoding against the full forward on T tokens (a 70-token prompt
 * crossing the session's 64-row chunks, then one token at a time): CHECKs
 * every position's logits (rel L2 < 1e-5), the session length, that feeding
 * past the cache fails, and that a reset session starts over. */
void check_kv_cache(smj_ctx *ctx, smj_model *m, int T, const char *label);
/* smj_session_greedy against feeding smj_sample's greedy choice back one
 * token at a time, after a 5-token prompt: the same 24 tokens (in one call
 * and in calls of 1, 7 and 16) and the same final logits, bit for bit; and
 * its refusals (nothing fed yet, more tokens than fit). */
void check_greedy(smj_ctx *ctx, smj_model *m, const char *label);
/* Rounds every weight of m to its bf16 value (round to nearest even). */
void round_weights_bf16(smj_ctx *ctx, smj_model *m);
/* Sets every tensor named *bias* (zero in a new model) to non-zero values. */
void set_biases(smj_ctx *ctx, smj_model *m);
/* In bf16 mode a session's one-token steps on the ref backend read bf16
 * copies of the weights (decode_block, decode_linear). On weights that are
 * bf16 values already the copies are exact, so decoding equals the full
 * fp32 forward (check_kv_cache); on others it must not (the copies are what
 * the steps read: rel L2 in 1e-4 .. 3e-2 after 8 tokens). Biases are set
 * first (set_biases). */
void check_decode_bf16_weights(const smj_model_config *c, const char *name);
#endif
