/* test_nfc.c — Unicode NFC (src/tokenizer/nfc.c) and its use by tokenizers
 * imported from a tokenizer.json with an NFC normalizer:
 *   - smj_nfc against tests/fixtures/nfc_vectors.txt (written by
 *     tools/gen_nfc_vectors.py from Python's unicodedata.normalize('NFC')):
 *     hand-picked cases (Hangul, out-of-order marks, singletons, composition
 *     exclusions, non-starter decompositions, starter+starter compositions,
 *     already-NFC text), every canonically decomposable character and its
 *     NFD, random mixes, and invalid UTF-8 bytes passed through;
 *   - idempotence, and long inputs that cross the internal segment size;
 *   - import: a tokenizer.json with "normalizer": NFC (alone or in a
 *     Sequence) encodes "e\u0301" like "\u00e9", keeps the flag through
 *     save/load; without the normalizer the two differ; other normalizers
 *     are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "../src/hf/hf.h"
#include "../src/hf/json.h"
#include "../src/tokenizer/tokenizer.h"
#include "util/check.h"

static int unhex(const char *h, uint8_t *out, size_t *n) {
    *n = 0;
    if (strcmp(h, "-") == 0) return 0;
    size_t l = strlen(h);
    if (l % 2) return -1;
    for (size_t i = 0; i < l; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1) return -1;
        out[(*n)++] = (uint8_t)v;
    }
    return 0;
}

static int nfc_equals(const uint8_t *in, size_t n, const uint8_t *want, size_t wn) {
    uint8_t *out = NULL;
    size_t on = 0;
    if (smj_nfc(in, n, &out, &on) != 0 || !out) return 0;
    int ok = on == wn && memcmp(out, want, wn) == 0;
    /* NFC is idempotent */
    uint8_t *again = NULL;
    size_t an = 0;
    if (ok && (smj_nfc(out, on, &again, &an) != 0 || an != on || memcmp(again, out, on) != 0)) ok = 0;
    free(again);
    free(out);
    return ok;
}

static void test_vectors(void) {
    FILE *f = fopen("tests/fixtures/nfc_vectors.txt", "r");
    CHECK(f != NULL, "open tests/fixtures/nfc_vectors.txt (run from the repository root)");
    if (!f) return;
    static char line[4096];
    uint8_t in[1024], want[1024];
    int n_cases = 0, n_bad = 0, n_changed = 0, n_invalid = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char a[2048], b[2048];
        size_t ni, nw;
        if (sscanf(line, "%2047s %2047s", a, b) != 2 || unhex(a, in, &ni) || unhex(b, want, &nw)) {
            CHECK(0, "malformed vector line: %s", line);
            continue;
        }
        n_cases++;
        n_changed += ni != nw || memcmp(in, want, ni) != 0;
        for (size_t i = 0; i < ni; i++) {
            uint32_t cp;
            int l = smj_utf8_decode(in + i, ni - i, &cp);
            if (cp == 0xFFFFFFFFu) { n_invalid++; break; }
            i += (size_t)l - 1;
        }
        if (!nfc_equals(in, ni, want, nw)) {
            if (n_bad++ < 10) CHECK(0, "NFC of %s: expected %s", a, b);
        }
    }
    fclose(f);
    CHECK(n_bad == 0, "%d of %d NFC vectors differ", n_bad, n_cases);
    CHECK(n_cases >= 500 && n_changed >= 100 && n_invalid >= 10,
          "vectors: %d cases, %d changed by NFC, %d with invalid UTF-8", n_cases, n_changed, n_invalid);
}

/* Inputs longer than nfc.c's segment (64 KiB), with and without ASCII to cut at. */
static void test_long(void) {
    static const char *const PAT_IN[3] = {"e\xcc\x81 ", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xe2\x84\xab"};
    static const char *const PAT_OUT[3] = {"\xc3\xa9 ", "\xea\xb0\x81", "\xc3\x85"};
    for (int p = 0; p < 3; p++) {
        size_t reps = 200000 / strlen(PAT_IN[p]) + 1, li = strlen(PAT_IN[p]), lo = strlen(PAT_OUT[p]);
        uint8_t *in = malloc(reps * li), *want = malloc(reps * lo);
        for (size_t i = 0; i < reps; i++) {
            memcpy(in + i * li, PAT_IN[p], li);
            memcpy(want + i * lo, PAT_OUT[p], lo);
        }
        CHECK(nfc_equals(in, reps * li, want, reps * lo), "long input, pattern %d (%zu bytes)", p, reps * li);
        free(in);
        free(want);
    }
    uint8_t *out = NULL;
    size_t on = 1;
    CHECK(smj_nfc((const uint8_t *)"", 0, &out, &on) == 0 && out && on == 0, "empty input gives an empty buffer");
    free(out);
}

static smj_tokenizer *import_json(smj_ctx *ctx, const char *json, size_t n, smj_status want) {
    smj_tokenizer *t = NULL;
    smj_status st = smj_hf_tokenizer_parse_cfg(ctx, json, n, NULL, 0, "nfc.json", &t);
    CHECK(st == want, "import -> %s (want %s): %s", smj_status_str(st), smj_status_str(want), smj_ctx_error(ctx));
    return t;
}

static int encode_same(smj_ctx *ctx, const smj_tokenizer *t, const char *a, const char *b, int32_t *first_id) {
    int32_t *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, (const uint8_t *)a, strlen(a), &ia, &na));
    CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, (const uint8_t *)b, strlen(b), &ib, &nb));
    int same = ia && ib && na == nb && memcmp(ia, ib, na * sizeof *ia) == 0;
    if (first_id) *first_id = na ? ia[0] : -1;
    smj_free(ia);
    smj_free(ib);
    return same;
}

/* Replaces the first `from` in json with `to` (into a new string). */
static char *replace(const char *json, const char *from, const char *to) {
    const char *at = strstr(json, from);
    if (!at) return NULL;
    size_t a = (size_t)(at - json), fl = strlen(from), tl = strlen(to), rest = strlen(at + fl);
    char *r = malloc(a + tl + rest + 1);
    memcpy(r, json, a);
    memcpy(r + a, to, tl);
    memcpy(r + a + tl, at + fl, rest + 1);
    return r;
}

static void test_import(smj_ctx *ctx) {
    static const char text[] = "caf\xc3\xa9 caf\xc3\xa9 \xc3\xa9t\xc3\xa9 \xc3\xa9\xc3\xa9\xc3\xa9 r\xc3\xa9sum\xc3\xa9 "
                               "\xc3\xa9l\xc3\xa9phant caf\xc3\xa9 the cafe is here \xc3\x85ngstr\xc3\xb6m";
    smj_tokenizer *tok = NULL;
    smj_tokenizer_train_options o = {.vocab_size = 259 + 40};
    CHECK_OK(ctx, smj_tokenizer_train(ctx, (const uint8_t *)text, sizeof text - 1, &o, &tok));
    if (!tok) return;
    smj_jbuf b = {0};
    CHECK_OK(ctx, smj_hf_tokenizer_json(ctx, tok, &b));
    smj_tokenizer_free(tok);
    if (!b.p) return;
    static const char *const NORMS[2] = {
        "\"normalizer\": {\"type\": \"NFC\"}",
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"NFC\"}]}"};
    const char *composed = "caf\xc3\xa9 \xc3\x85ngstr\xc3\xb6m", *decomposed = "cafe\xcc\x81 \xe2\x84\xabngstro\xcc\x88m";
    for (int k = 0; k < 2; k++) {
        char *json = replace(b.p, "\"normalizer\": null", NORMS[k]);
        CHECK(json != NULL, "the exported tokenizer.json has \"normalizer\": null");
        if (!json) break;
        smj_tokenizer *t = import_json(ctx, json, strlen(json), SMJ_OK);
        if (t) {
            CHECK(smj_tokenizer_version(t) == 2 && (smj_tokenizer_flags(t) & SMJ_TOK_FLAG_NFC),
                  "normalizer %d: imported as version 2 with the NFC flag", k);
            int32_t first = -1;
            CHECK(encode_same(ctx, t, "e\xcc\x81", "\xc3\xa9", &first), "normalizer %d: \"e\\u0301\" encodes like \"\\u00e9\"", k);
            CHECK(first >= 0 && smj_tokenizer_kind(t, first) == SMJ_TOK_KIND_PLAIN, "\\u00e9 is one plain token");
            CHECK(encode_same(ctx, t, decomposed, composed, NULL), "normalizer %d: decomposed text encodes as NFC", k);
            /* save/load keeps the flag */
            uint8_t *img = NULL;
            size_t len = 0;
            smj_tokenizer *t2 = NULL;
            CHECK_OK(ctx, smj_tokenizer_to_bytes(ctx, t, &img, &len));
            if (img) CHECK_OK(ctx, smj_tokenizer_from_bytes(ctx, img, len, "<memory>", &t2));
            CHECK(t2 && smj_tokenizer_flags(t2) == smj_tokenizer_flags(t) && encode_same(ctx, t2, "e\xcc\x81", "\xc3\xa9", NULL),
                  "the NFC flag survives save/load");
            /* decode does not normalize: NFC text round-trips */
            int32_t *ids = NULL;
            size_t n_ids = 0;
            uint8_t *back = NULL;
            size_t nb = 0;
            CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, (const uint8_t *)decomposed, strlen(decomposed), &ids, &n_ids));
            CHECK_OK(ctx, smj_tokenizer_decode(ctx, t, ids, n_ids, &back, &nb));
            CHECK(back && nb == strlen(composed) && memcmp(back, composed, nb) == 0, "decode gives the NFC text");
            smj_free(ids);
            smj_free(back);
            smj_free(img);
            smj_tokenizer_free(t2);
            smj_tokenizer_free(t);
        }
        free(json);
    }
    /* without a normalizer: no flag, and the two spellings differ */
    smj_tokenizer *t = import_json(ctx, b.p, b.len, SMJ_OK);
    if (t) {
        CHECK(!(smj_tokenizer_flags(t) & SMJ_TOK_FLAG_NFC), "no normalizer: no NFC flag");
        CHECK(!encode_same(ctx, t, "e\xcc\x81", "\xc3\xa9", NULL), "no normalizer: \"e\\u0301\" is not \"\\u00e9\"");
        smj_tokenizer_free(t);
    }
    static const char *const BAD[3] = {
        "\"normalizer\": {\"type\": \"NFKC\"}",
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Lowercase\"}]}",
        "\"normalizer\": {\"type\": \"Sequence\"}"};
    for (int k = 0; k < 3; k++) {
        char *json = replace(b.p, "\"normalizer\": null", BAD[k]);
        if (!json) break;
        smj_tokenizer *tb = import_json(ctx, json, strlen(json), SMJ_ERR_UNSUPPORTED);
        smj_tokenizer_free(tb);
        free(json);
    }
    smj_jbuf_free(&b);
}

int main(void) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    test_vectors();
    test_long();
    test_import(ctx);
    smj_ctx_free(ctx);
    return check_summary("test_nfc");
}
