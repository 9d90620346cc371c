/* fuzz_tokenizer_encode.c — arbitrary bytes through encode and decode.
 *
 * One small tokenizer is trained on a fixed mixed-script text the first time
 * the target runs (a lazily initialized static, acceptable in a test
 * program; the library itself keeps no global state). Every input must
 * encode to valid ids whose decoding is exactly the input; anything else
 * aborts.
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static smj_ctx *ctx;
static smj_tokenizer *tok;

static void init(void) {
    static const char *const parts[] = {
        "the ", "quick ", "brown ", "fox ", "isn't ", "they're ", "  ", "\n\n", "\t", "123 ",
        "4567", "日本語", "テキスト ", "😀👍🏽 ", "e\xcc\x81", "\xff\xfe", "!!! ", "...", "\0"};
    size_t cap = 1 << 16, n = 0;
    uint8_t *text = malloc(cap);
    uint32_t r = 1;
    if (!text) abort();
    while (n + 32 < cap) {
        r = r * 1103515245u + 12345u;
        const char *p = parts[(r >> 16) % (sizeof parts / sizeof *parts)];
        size_t len = p[0] ? strlen(p) : 1;
        memcpy(text + n, p, len);
        n += len;
    }
    ctx = smj_ctx_create(NULL);
    smj_tokenizer_train_options o = {.vocab_size = 259 + 300};
    if (!ctx || smj_tokenizer_train(ctx, text, n, &o, &tok) != SMJ_OK) abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok) init();
    int32_t *ids;
    size_t n_ids;
    uint8_t *back;
    size_t nb;
    if (smj_tokenizer_encode(ctx, tok, data, size, &ids, &n_ids) != SMJ_OK) abort();
    if (n_ids > size) abort();
    int vocab = smj_tokenizer_vocab_size(tok), first_special = smj_tokenizer_special_id(tok, SMJ_TOKEN_PAD);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab || ids[i] >= first_special) abort(); /* never a special id */
    if (smj_tokenizer_decode(ctx, tok, ids, n_ids, &back, &nb) != SMJ_OK) abort();
    if (nb != size || (size && memcmp(back, data, size) != 0)) abort();
    smj_free(ids);
    smj_free(back);
    return 0;
}
