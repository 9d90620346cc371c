/* test_tokenizer.c — the byte-level BPE tokenizer: pre-tokenizer splits,
 * training, encoding against a naive reference, round trips, the file format
 * and its validation.
 *
 * The expected pre-token splits below were produced with Python's `regex`
 * module running GPT-2's pattern (the same semantics as HF tokenizers) and
 * checked by hand against the pattern; invalid-UTF-8 cases follow this
 * project's rule (an invalid byte is one "other" character).
 */
#include <stdlib.h>
#include <string.h>
#include "util/check.h"
#include "../src/core/core.h"
#include "../src/tokenizer/tokenizer.h"

/* ---- deterministic text generators */

static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

/* Appends a word-like, mixed-script, sometimes invalid piece of text. */
static size_t gen_piece(uint8_t *out) {
    static const char *const parts[] = {
        "the", "and", " of", "ing", "tion", "er", "s", "'s", "'t", "'re", "'ll", " ", "  ", "   ",
        "\n", "\n\n", "\t", ",", ".", "!", "?", "...", "42", "2024", "7", "é", "ü", "ß", "日本",
        "語", "😀", "👍🏽", "e\xcc\x81", "\xe3\x80\x80", "\xc2\xa0", "\xff", "\x80", "\xe6\x97",
        "\0", "I", "We", "HTTP", "--", "==", "<|end_of_text|>", "x", "q", "zz"};
    const char *p = parts[rnd() % (sizeof parts / sizeof *parts)];
    size_t n = p[0] == 0 ? 1 : strlen(p); /* "\0" is one NUL byte */
    memcpy(out, p, n);
    return n;
}

static uint8_t *gen_text(size_t n) {
    uint8_t *t = malloc(n + 64);
    size_t k = 0;
    while (k < n) k += gen_piece(t + k);
    return t; /* only the first n bytes are used */
}

/* ---- helpers */

static int encode_decode_ok(smj_ctx *ctx, const smj_tokenizer *tok, const uint8_t *s, size_t n) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    uint8_t *back = NULL;
    size_t nb = 0;
    if (smj_tokenizer_encode(ctx, tok, s, n, &ids, &n_ids) != SMJ_OK) return 0;
    int ok = smj_tokenizer_decode(ctx, tok, ids, n_ids, &back, &nb) == SMJ_OK && nb == n &&
             (n == 0 || memcmp(back, s, n) == 0) && back[nb] == 0;
    smj_free(ids);
    smj_free(back);
    return ok;
}

static smj_tokenizer *train(smj_ctx *ctx, const uint8_t *s, size_t n, int vocab) {
    smj_tokenizer *tok = NULL;
    smj_tokenizer_train_options o = {.vocab_size = vocab};
    CHECK_OK(ctx, smj_tokenizer_train(ctx, s, n, &o, &tok));
    return tok;
}

static void write_file(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(d, 1, n, f); fclose(f); }
}

/* Rewrites the trailing CRC of a tokenizer image after an edit. */
static void fix_crc(uint8_t *d, size_t n) {
    uint32_t c = smj_crc32(0, d, n - 4);
    d[n - 4] = (uint8_t)c; d[n - 3] = (uint8_t)(c >> 8); d[n - 2] = (uint8_t)(c >> 16); d[n - 1] = (uint8_t)(c >> 24);
}

/* ---- pre-tokenizer */

static void test_pretok(void) {
    static const struct { const char *text, *pieces; } cases[] = {
        {"Hello world", "Hello| world"},
        {"  x", " | x"},
        {"I'm", "I|'m"},
        {"abc123", "abc|123"},
        {"a\n\nb", "a|\n|\n|b"},
        {"don't stop", "don|'t| stop"},
        {"we'll THEY'RE 'S", "we|'ll| THEY|'|RE| '|S"},
        {"x   ", "x|   "},
        {"x \n y", "x| \n| y"},
        {" \t\n", " \t\n"},
        {"  hello  world  ", " | hello| | world|  "},
        {"3.14159 + 2,000", "3|.|14159| +| 2|,|000"},
        {"日本語のテキスト、です。", "日本語のテキスト|、|です|。"},
        {"naïve café", "naïve| café"},
        {"e\u0301té", "e|\u0301|té"},
        {"😀👍🏽 ok", "😀👍🏽| ok"},
        {"a\u3000\u3000b", "a|\u3000|\u3000|b"},
        {"tab\t\tend", "tab|\t|\t|end"},
        {"'''s", "'''|s"},
        {"''ll've", "''|ll|'ve"},
        {"x!!! ?? y", "x|!!!| ??| y"},
        {"\u00a0a", "\u00a0|a"},
        {"1½Ⅷx", "1½Ⅷ|x"},
        {"a''b", "a|''|b"},
        {"  \n\n  z", "  \n\n | z"},
        {" 's", " '|s"},
        /* invalid UTF-8: each bad byte is one "other" character */
        {"a\xff" "b", "a|\xff|b"},
        {" \xff\xfe!", " \xff\xfe!"},
        {"abc\x80" "def", "abc|\x80|def"},
        {"x\xe6\x97", "x|\xe6\x97"},
        {"\xed\xa0\x80" "a", "\xed\xa0\x80|a"},        /* a UTF-16 surrogate */
        {"\xc0\xaf" "a", "\xc0\xaf|a"},                /* overlong '/' */
        {"'S'Ll", "'|S|'|Ll"},                         /* contractions are case-sensitive */
        {"", ""},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const uint8_t *s = (const uint8_t *)cases[c].text;
        size_t n = strlen(cases[c].text), pos = 0;
        char got[256] = "";
        size_t g = 0;
        while (pos < n) {
            size_t end = smj_pretok_next(s, n, pos);
            if (end <= pos || end > n) { CHECK(0, "case %zu: bad piece end %zu at %zu", c, end, pos); break; }
            if (pos > 0) got[g++] = '|';
            memcpy(got + g, s + pos, end - pos);
            g += end - pos;
            pos = end;
        }
        got[g] = 0;
        CHECK(strcmp(got, cases[c].pieces) == 0, "split of case %zu: got \"%s\", want \"%s\"", c, got,
              cases[c].pieces);
    }
    /* NUL is an ordinary "other" character. */
    const uint8_t nul[] = {'x', 0, 0, 'y'};
    CHECK(smj_pretok_next(nul, 4, 0) == 1 && smj_pretok_next(nul, 4, 1) == 3 &&
          smj_pretok_next(nul, 4, 3) == 4, "NUL bytes split as one other-run");
    /* classes */
    CHECK(smj_unicode_class(0x3000) == SMJ_UCLASS_SPACE, "U+3000 is White_Space");
    CHECK(smj_unicode_class(0x1C) == SMJ_UCLASS_OTHER, "U+001C is not White_Space");
    CHECK(smj_unicode_class(0x00B2) == SMJ_UCLASS_NUMBER, "superscript two is N");
    CHECK(smj_unicode_class(0x01C5) == SMJ_UCLASS_LETTER, "titlecase Dz is L");
    CHECK(smj_unicode_class(0x200B) == SMJ_UCLASS_OTHER, "ZWSP is neither space nor letter");
    /* pieces always tile random bytes */
    uint8_t buf[512];
    for (int it = 0; it < 200; it++) {
        size_t n = rnd() % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rnd();
        size_t pos = 0, ok = 1;
        while (pos < n) {
            size_t end = smj_pretok_next(buf, n, pos);
            if (end <= pos || end > n) { ok = 0; break; }
            pos = end;
        }
        CHECK(ok, "pieces tile random bytes (iteration %d)", it);
    }
}

/* ---- training */

static void test_train_basic(smj_ctx *ctx) {
    /* "aaab" x 50: pairs (a,a) 100, (a,b) 50 -> first merge (a,a) = 256; then
     * words "aa a b": (256,a) 50, (a,b) 50 -> tie broken by the smaller
     * pair: (97, 98) before (256, 97). */
    char text[400] = "";
    for (int i = 0; i < 50; i++) strcat(text, i ? " aaab" : "aaab");
    smj_tokenizer *tok = train(ctx, (const uint8_t *)text, strlen(text), 270);
    if (!tok) return;
    int32_t l = -1, r = -1;
    CHECK(smj_tokenizer_merge(tok, 0, &l, &r) == 0 && l == 'a' && r == 'a', "merge 0 is (a,a), got (%d,%d)", l, r);
    CHECK(smj_tokenizer_merge(tok, 1, &l, &r) == 0 && l == 'a' && r == 'b', "merge 1 is (a,b), got (%d,%d)", l, r);
    CHECK(smj_tokenizer_merge(tok, 2, &l, &r) == 0 && l == 256 && r == 257, "merge 2 is (aa,ab), got (%d,%d)", l, r);
    /* Only so many merges exist: " aaab" and "aaab" words stop early. */
    int v = smj_tokenizer_vocab_size(tok);
    CHECK(v < 270 && v == 256 + smj_tokenizer_num_merges(tok) + 3, "early stop shrinks the vocab (%d)", v);
    size_t len;
    const uint8_t *b = smj_tokenizer_token_bytes(tok, 258, &len);
    CHECK(b && len == 4 && memcmp(b, "aaab", 4) == 0, "token 258 is \"aaab\"");
    CHECK(smj_tokenizer_num_special(tok) == 3, "three special tokens");
    CHECK(smj_tokenizer_special_id(tok, SMJ_TOKEN_PAD) == v - 3 &&
          smj_tokenizer_special_id(tok, SMJ_TOKEN_BOS) == v - 2 &&
          smj_tokenizer_special_id(tok, SMJ_TOKEN_EOS) == v - 1, "special ids follow the merges");
    const char *st = smj_tokenizer_special_text(tok, 2, &len);
    CHECK(st && strcmp(st, "<|end_of_text|>") == 0 && len == 15, "EOS text");
    int32_t ids[3] = {'a', smj_tokenizer_special_id(tok, SMJ_TOKEN_EOS), 256};
    uint8_t *out;
    CHECK_OK(ctx, smj_tokenizer_decode(ctx, tok, ids, 3, &out, &len));
    CHECK(len == 3 && memcmp(out, "aaa", 3) == 0, "special ids decode to nothing");
    smj_free(out);
    ids[0] = v;
    CHECK(smj_tokenizer_decode(ctx, tok, ids, 1, &out, &len) == SMJ_ERR_INVALID, "out-of-range id rejected");
    CHECK(smj_tokenizer_token_bytes(tok, v, &len) == NULL, "token_bytes(out of range) is NULL");
    smj_tokenizer_free(tok);

    smj_tokenizer *bad = NULL;
    smj_tokenizer_train_options o = {.vocab_size = 259};
    CHECK(smj_tokenizer_train(ctx, (const uint8_t *)"ab", 2, &o, &bad) == SMJ_ERR_INVALID && !bad,
          "vocab_size 259 rejected");
    CHECK(strstr(smj_ctx_error(ctx), "vocab_size") != NULL, "message names vocab_size");
    o.vocab_size = (1 << 24) + 1;
    CHECK(smj_tokenizer_train(ctx, (const uint8_t *)"ab", 2, &o, &bad) == SMJ_ERR_INVALID,
          "vocab_size > 2^24 rejected");
    /* The largest vocab_size on a tiny text stops early without trouble. */
    o.vocab_size = 1 << 24;
    CHECK_OK(ctx, smj_tokenizer_train(ctx, (const uint8_t *)"abcabc", 6, &o, &bad));
    if (bad) CHECK(smj_tokenizer_num_merges(bad) == 3, "abcabc: ab, abc, abcabc (%d merges)", smj_tokenizer_num_merges(bad));
    smj_tokenizer_free(bad);
    /* An empty text trains an empty (256 + 3) vocabulary. */
    tok = train(ctx, (const uint8_t *)"", 0, 300);
    if (tok) CHECK(smj_tokenizer_vocab_size(tok) == 259, "empty text: vocab 259");
    smj_tokenizer_free(tok);
}

/* ---- encoding against a naive reference */

/* Plain BPE: per pre-token, repeatedly merge the leftmost occurrence of the
 * adjacent pair with the lowest merge rank. rank[l*V+r] is that rank or -1. */
static size_t naive_encode(const int32_t *rank, int V, const uint8_t *s, size_t n, int32_t *out) {
    size_t k = 0;
    int32_t w[4096];
    for (size_t pos = 0; pos < n;) {
        size_t end = smj_pretok_next(s, n, pos), len = end - pos;
        for (size_t i = 0; i < len; i++) w[i] = s[pos + i];
        for (;;) {
            int32_t best = -1;
            size_t at = 0;
            for (size_t i = 0; i + 1 < len; i++) {
                int32_t r = rank[(size_t)w[i] * (size_t)V + (size_t)w[i + 1]];
                if (r >= 0 && (best < 0 || r < best)) { best = r; at = i; }
            }
            if (best < 0) break;
            w[at] = 256 + best;
            memmove(w + at + 1, w + at + 2, (len - at - 2) * sizeof *w);
            len--;
        }
        memcpy(out + k, w, len * sizeof *w);
        k += len;
        pos = end;
    }
    return k;
}

static void test_encode_vs_naive(smj_ctx *ctx) {
    uint8_t *corpus = gen_text(200000);
    smj_tokenizer *tok = train(ctx, corpus, 200000, 259 + 600);
    free(corpus);
    if (!tok) return;
    int V = 256 + smj_tokenizer_num_merges(tok);
    int32_t *rank = malloc((size_t)V * (size_t)V * sizeof *rank);
    memset(rank, 0xFF, (size_t)V * (size_t)V * sizeof *rank);
    for (int i = 0; i < V - 256; i++) {
        int32_t l, r;
        smj_tokenizer_merge(tok, i, &l, &r);
        rank[(size_t)l * (size_t)V + (size_t)r] = i;
    }
    CHECK(V == 256 + 600, "all 600 merges were learned (%d)", V - 256);
    int mismatches = 0;
    for (int it = 0; it < 300; it++) {
        size_t n = 1 + rnd() % 2000;
        uint8_t *s = gen_text(n);
        if (it % 3 == 0) for (size_t i = 0; i < n / 20; i++) s[rnd() % n] = (uint8_t)rnd();
        int32_t *ids, *ref = malloc(n * sizeof *ref);
        size_t n_ids;
        CHECK_OK(ctx, smj_tokenizer_encode(ctx, tok, s, n, &ids, &n_ids));
        size_t n_ref = naive_encode(rank, V, s, n, ref);
        if (n_ids != n_ref || memcmp(ids, ref, n_ref * sizeof *ref) != 0) mismatches++;
        CHECK(encode_decode_ok(ctx, tok, s, n), "round trip of random text %d", it);
        smj_free(ids);
        free(ref);
        free(s);
    }
    CHECK(mismatches == 0, "encode equals the naive reference BPE (%d of 300 differ)", mismatches);

    /* Special-token text is plain text. */
    const char *eot = "<|end_of_text|>";
    int32_t *ids;
    size_t n_ids;
    CHECK_OK(ctx, smj_tokenizer_encode(ctx, tok, (const uint8_t *)eot, strlen(eot), &ids, &n_ids));
    int has_special = 0;
    for (size_t i = 0; i < n_ids; i++) has_special |= ids[i] >= V;
    CHECK(!has_special && n_ids > 1, "special-token text is not interpreted");
    smj_free(ids);

    /* Round trips on assorted hard cases. */
    static const char *const hard[] = {
        "", "a", " ", "Hello, world! I'm here; you're there.", "😀😀😀 👍🏽👍🏽", "日本語のテキスト",
        "e\u0301e\u0301e\u0301", "\n\n\n\t\t   \r\n  ", "1234567890 3.14 1e10", "don't won't y'all 'LL",
        "\xff\xfe\xfd\x80\x81", "\xf0\x9f\x98", "\xed\xa0\x80\xc0\xaf", "<|pad|><|begin_of_text|>"};
    for (size_t i = 0; i < sizeof hard / sizeof *hard; i++)
        CHECK(encode_decode_ok(ctx, tok, (const uint8_t *)hard[i], strlen(hard[i])), "round trip \"%s\"", hard[i]);
    uint8_t bytes[4096];
    for (int it = 0; it < 50; it++) {
        size_t n = rnd() % sizeof bytes;
        for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)(it % 2 ? rnd() : rnd() % 4); /* incl. NUL runs */
        CHECK(encode_decode_ok(ctx, tok, bytes, n), "round trip of random bytes %d", it);
    }
    /* A long whitespace run is one pre-token: must stay fast and exact. */
    size_t big = 300000;
    uint8_t *sp = malloc(big);
    memset(sp, ' ', big);
    sp[big / 2] = '\n';
    CHECK(encode_decode_ok(ctx, tok, sp, big), "round trip of a 300 KB whitespace run");
    free(sp);
    free(rank);
    smj_tokenizer_free(tok);
}

/* ---- determinism, save/load */

static void test_determinism_and_files(smj_ctx *ctx) {
    uint8_t *corpus = gen_text(100000);
    smj_tokenizer *a = train(ctx, corpus, 100000, 259 + 400), *b = train(ctx, corpus, 100000, 259 + 400);
    if (!a || !b) { free(corpus); smj_tokenizer_free(a); smj_tokenizer_free(b); return; }
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/a.tok", test_tmpdir());
    snprintf(pb, sizeof pb, "%s/b.tok", test_tmpdir());
    CHECK_OK(ctx, smj_tokenizer_save(ctx, a, pa));
    CHECK_OK(ctx, smj_tokenizer_save(ctx, b, pb));
    uint8_t *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    FILE *f = fopen(pa, "rb");
    if (f) { da = malloc(1 << 20); na = fread(da, 1, 1 << 20, f); fclose(f); }
    f = fopen(pb, "rb");
    if (f) { db = malloc(1 << 20); nb = fread(db, 1, 1 << 20, f); fclose(f); }
    CHECK(da && db && na == nb && na > 0 && memcmp(da, db, na) == 0, "training twice gives identical files");
    CHECK(na == 24 + 400 * 8 + 3 * 6 + 7 + 17 + 15 + 4, "file size follows the format (%zu)", na);
    uint8_t *mem;
    size_t nm;
    CHECK_OK(ctx, smj_tokenizer_to_bytes(ctx, a, &mem, &nm));
    CHECK(nm == na && da && memcmp(mem, da, nm) == 0, "to_bytes equals the saved file");
    smj_free(mem);

    smj_tokenizer *c = NULL;
    CHECK_OK(ctx, smj_tokenizer_load(ctx, pa, &c));
    if (c) {
        CHECK(smj_tokenizer_vocab_size(c) == smj_tokenizer_vocab_size(a), "loaded vocab size");
        int same = 1;
        for (int it = 0; it < 20; it++) {
            size_t n = 1 + rnd() % 5000;
            uint8_t *s = gen_text(n);
            int32_t *i1, *i2;
            size_t n1, n2;
            CHECK_OK(ctx, smj_tokenizer_encode(ctx, a, s, n, &i1, &n1));
            CHECK_OK(ctx, smj_tokenizer_encode(ctx, c, s, n, &i2, &n2));
            same &= n1 == n2 && memcmp(i1, i2, n1 * sizeof *i1) == 0;
            smj_free(i1); smj_free(i2); free(s);
        }
        CHECK(same, "saved and loaded tokenizers encode identically");
    }
    smj_tokenizer_free(c);
    free(da); free(db); free(corpus);
    smj_tokenizer_free(a);
    smj_tokenizer_free(b);
}

/* ---- validation of corrupt files */

static void expect_format(smj_ctx *ctx, const uint8_t *d, size_t n, const char *what, const char *needle) {
    smj_tokenizer *t = (smj_tokenizer *)1;
    smj_status s = smj_tokenizer_from_bytes(ctx, d, n, "corrupt.tok", &t);
    CHECK(s == SMJ_ERR_FORMAT && t == NULL, "%s: want format error, got %s", what, smj_status_str(s));
    CHECK(strstr(smj_ctx_error(ctx), "corrupt.tok") != NULL, "%s: message names the file: %s", what,
          smj_ctx_error(ctx));
    if (needle)
        CHECK(strstr(smj_ctx_error(ctx), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              smj_ctx_error(ctx), needle);
    smj_tokenizer_free(s == SMJ_OK ? t : NULL);
}

static void test_corrupt(smj_ctx *ctx) {
    const char *txt = "the cat sat on the mat; the rat ate the hat. that's that!";
    smj_tokenizer *tok = train(ctx, (const uint8_t *)txt, strlen(txt), 259 + 20);
    if (!tok) return;
    uint8_t *good;
    size_t n;
    CHECK_OK(ctx, smj_tokenizer_to_bytes(ctx, tok, &good, &n));
    smj_tokenizer_free(tok);
    int M = (int)smj_rd_u32(good + 16);
    CHECK(M == 20, "20 merges learned (%d)", M);
    uint8_t *d = malloc(n + 8);

    smj_tokenizer *t = NULL;
    CHECK_OK(ctx, smj_tokenizer_from_bytes(ctx, good, n, "good.tok", &t));
    smj_tokenizer_free(t);

    for (size_t len = 0; len < n; len++) expect_format(ctx, good, len, "truncated", NULL);
    memcpy(d, good, n); d[0] ^= 1;
    expect_format(ctx, d, n, "wrong magic", "magic");
    memcpy(d, good, n); d[n - 1] ^= 0x40;
    expect_format(ctx, d, n, "flipped CRC", "checksum");
    memcpy(d, good, n); d[30] ^= 0x01;
    expect_format(ctx, d, n, "flipped merge byte", NULL);
    memcpy(d, good, n); d[8] = 3; fix_crc(d, n);
    expect_format(ctx, d, n, "version 3", "version");
    memcpy(d, good, n); d[12] = 7; fix_crc(d, n);
    expect_format(ctx, d, n, "pattern 7", "pattern");
    memcpy(d, good, n); smj_wr_u32(d + 24 + 5 * 8, 256 + 5); fix_crc(d, n);
    expect_format(ctx, d, n, "merge refers to itself", "merge 5");
    memcpy(d, good, n); smj_wr_u32(d + 24 + 8 * 8 + 4, 0xFFFFFFFFu); fix_crc(d, n);
    expect_format(ctx, d, n, "huge merge id", "merge 8");
    memcpy(d, good, n); memcpy(d + 24 + 9 * 8, d + 24 + 3 * 8, 8); fix_crc(d, n);
    expect_format(ctx, d, n, "duplicate merge", "duplicates");
    memcpy(d, good, n); smj_wr_u32(d + 24 + M * 8, 999); fix_crc(d, n);
    expect_format(ctx, d, n, "bad special id", "special token 0");
    memcpy(d, good, n); d[24 + M * 8 + 4] = 0; fix_crc(d, n);
    expect_format(ctx, d, n, "special length 0", NULL);
    memcpy(d, good, n); smj_wr_u32(d + 16, 0x01000000u); fix_crc(d, n);
    expect_format(ctx, d, n, "merge count beyond the file", "merge count");
    memcpy(d, good, n); smj_wr_u32(d + 20, 2); fix_crc(d, n);
    expect_format(ctx, d, n, "two specials", "special token count");
    memcpy(d, good, n - 4); d[n - 4] = 'X'; fix_crc(d, n + 1);
    expect_format(ctx, d, n + 1, "trailing byte", "unexpected bytes");

    /* A chain of self-doubling merges would expand to 2^40 bytes. */
    int32_t chain[80];
    chain[0] = 'a'; chain[1] = 'a';
    for (int i = 1; i < 40; i++) { chain[2 * i] = 256 + i - 1; chain[2 * i + 1] = 256 + i - 1; }
    CHECK(smj_tokenizer_from_merges(ctx, chain, 40, &t) == SMJ_ERR_INVALID && !t, "exploding merges rejected");
    CHECK(smj_tokenizer_from_merges(ctx, chain, 20, &t) == SMJ_OK && t, "20 doublings (1 MiB token) accepted");
    smj_tokenizer_free(t);

    /* Through real files: the path is named, missing file is an I/O error. */
    char path[4200];
    snprintf(path, sizeof path, "%s/bad-magic.tok", test_tmpdir());
    memcpy(d, good, n); d[3] = 'X';
    write_file(path, d, n);
    t = NULL;
    CHECK(smj_tokenizer_load(ctx, path, &t) == SMJ_ERR_FORMAT && !t, "bad magic file -> format error");
    CHECK(strstr(smj_ctx_error(ctx), path) != NULL, "message names %s: %s", path, smj_ctx_error(ctx));
    snprintf(path, sizeof path, "%s/bad-crc.tok", test_tmpdir());
    memcpy(d, good, n); d[n - 2] ^= 1;
    write_file(path, d, n);
    CHECK(smj_tokenizer_load(ctx, path, &t) == SMJ_ERR_FORMAT && !t, "bad CRC file -> format error");
    CHECK(strstr(smj_ctx_error(ctx), path) != NULL, "message names %s", path);
    snprintf(path, sizeof path, "%s/does-not-exist.tok", test_tmpdir());
    CHECK(smj_tokenizer_load(ctx, path, &t) == SMJ_ERR_IO && !t, "missing file -> I/O error");
    CHECK(strstr(smj_ctx_error(ctx), path) != NULL, "message names %s", path);
    snprintf(path, sizeof path, "%s/no-such-dir/x.tok", test_tmpdir());
    CHECK_OK(ctx, smj_tokenizer_from_bytes(ctx, good, n, "good.tok", &t));
    if (t) CHECK(smj_tokenizer_save(ctx, t, path) == SMJ_ERR_IO, "save into a missing directory -> I/O error");
    smj_tokenizer_free(t);
    free(d);
    smj_free(good);
}

int main(void) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    test_pretok();
    test_train_basic(ctx);
    test_encode_vs_naive(ctx);
    test_determinism_and_files(ctx);
    test_corrupt(ctx);
    smj_ctx_free(ctx);
    return check_summary("test_tokenizer");
}
