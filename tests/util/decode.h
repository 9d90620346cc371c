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
#endif
