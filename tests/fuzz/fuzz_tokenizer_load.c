/* fuzz_tokenizer_load.c — arbitrary bytes into the tokenizer file parser.
 *
 * Any input must either load (then the tokenizer must be usable: it is
 * serialized again and must reproduce the input exactly, and a short text
 * must round-trip) or fail with SMJ_ERR_FORMAT/SMJ_ERR_NOMEM and a message.
 * A crash, a sanitizer report or a broken invariant (abort) is a finding.
 * Random mutations almost always break the trailing CRC-32, so each input is
 * also tried with its CRC recomputed, which lets mutations reach the
 * structural checks (merge ids, special tokens, expansion limits).
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/core/core.h"
#include "../../src/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses data[0..size) and checks the outcome; aborts on a broken contract. */
static void check_image(smj_ctx *ctx, const uint8_t *data, size_t size) {
    smj_tokenizer *tok = NULL;
    smj_status s = smj_tokenizer_from_bytes(ctx, data, size, "fuzz.tok", &tok);
    if (s != SMJ_OK) {
        if (tok || (s != SMJ_ERR_FORMAT && s != SMJ_ERR_NOMEM) || !smj_ctx_error(ctx)[0]) abort();
    } else {
        uint8_t *again;
        size_t n;
        if (smj_tokenizer_to_bytes(ctx, tok, &again, &n) != SMJ_OK) abort();
        if (n != size || memcmp(again, data, n) != 0) abort(); /* the format has one encoding */
        smj_free(again);
        static const uint8_t text[] = "Fuzzing isn't hard: 123 \xff\xfe \xe6\x97\xa5\n\n  end";
        int32_t *ids;
        size_t n_ids;
        uint8_t *back;
        size_t nb;
        if (smj_tokenizer_encode(ctx, tok, text, sizeof text - 1, &ids, &n_ids) != SMJ_OK) abort();
        if (smj_tokenizer_decode(ctx, tok, ids, n_ids, &back, &nb) != SMJ_OK) abort();
        if (nb != sizeof text - 1 || memcmp(back, text, nb) != 0) abort();
        smj_free(ids);
        smj_free(back);
    }
    smj_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    if (!ctx) return 0;
    check_image(ctx, data, size);
    uint8_t *fixed = size >= 4 ? malloc(size) : NULL;
    if (fixed) {
        memcpy(fixed, data, size);
        uint32_t crc = smj_crc32(0, fixed, size - 4);
        for (int i = 0; i < 4; i++) fixed[size - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
        check_image(ctx, fixed, size);
        free(fixed);
    }
    smj_ctx_free(ctx);
    return 0;
}
