/* test_tokenizer_hf.c — general (version 2) vocabularies and the import of
 * HF byte-level BPE tokenizer.json files in other id layouts:
 *   - the Llama-3 (2) and Qwen2 (3) pre-tokenizer patterns against vectors
 *     (hand-checked, and derived from Python's `regex` module);
 *   - a synthetic tokenizer.json with a shuffled id layout (bytes at
 *     non-identity ids, added tokens in the middle, a token no merge makes)
 *     for each pattern, both merges encodings, ignore_merges on and off:
 *     encode equals a plain reference BPE written here, decode round-trips
 *     arbitrary bytes, special/added tokens decode as documented, PAD/BOS/EOS
 *     come from tokenizer_config.json or the fallback names;
 *   - the version 2 file: save/load round trip and corrupt images.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "../src/hf/hf.h"
#include "../src/hf/json.h"
#include "../src/tokenizer/tokenizer.h"
#include "util/check.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

/* ---- pre-tokenizer vectors: {pattern, text, piece end offsets (0-terminated)} */

static const struct { int pattern; const char *text; int ends[16]; } VEC[] = {
    {2, "Hello world's 12345 ok", {5, 11, 13, 14, 17, 19, 22}},
    {2, "I'M HERE, YOU'RE", {1, 3, 8, 9, 13, 16}},
    {2, "don'T 'Ll '\305\277", {3, 5, 7, 9, 11, 13}},
    {2, " 123 4567", {1, 4, 5, 8, 9}},
    {2, "a  b\011\011c", {1, 2, 4, 5, 7}},
    {2, "!!abc (x)", {2, 5, 7, 8, 9}},
    {2, "x!\012\012y", {1, 4, 5}},
    {2, "  \012  z", {3, 4, 6}},
    {2, "\011 abc", {1, 5}},
    {2, "line1\015\012\015\012line2", {4, 5, 9, 13, 14}},
    {2, "\346\227\245\346\234\254\350\252\236 \331\241\331\242\331\243\331\244 \302\262x", {9, 10, 16, 18, 19, 21, 22}},
    {2, "  ", {2}},
    {2, "'", {1}},
    {2, "\302\240word \343\200\200word", {6, 7, 14}},
    {2, "\360\237\230\200\360\237\230\200 ok!\077\012", {8, 11, 14}},
    {2, "A Vv", {1, 4}},
    {2, "d\346\227\245T\302\2403", {5, 7, 8}},
    {2, "ATE", {3}},
    {2, "\305\277\343\200\200A\331\241e\346\227\245", {2, 6, 8, 12}},
    {2, "v!\302\240 ar3\011 ", {1, 2, 4, 7, 8, 10}},
    {2, "E\011dT0", {1, 4, 5}},
    {2, "\012\012\343\200\200'", {2, 5, 6}},
    {2, ".\346\227\245D", {5}},
    {2, "T\331\241'\360\237\230\200\342\200\250\015\302\262et", {1, 3, 8, 12, 14, 16}},
    {2, "v'T", {1, 3}},
    {2, "d0 .\360\237\230\200\015", {1, 2, 9}},
    {2, "\015\012E t", {2, 3, 5}},
    {2, "\360\237\230\200r\346\227\245Vr.0 \360\237\230\200\331\241v ", {10, 11, 12, 17, 19, 20, 21}},
    {2, "vs ", {2, 3}},
    {2, " tE\302\262 E(1.", {3, 5, 7, 8, 9, 10}},
    {2, "'lV\331\241\346\227\245", {3, 5, 8}},
    {2, "\302\2403\302\2401\015vl", {2, 3, 5, 6, 7, 9}},
    {2, "(TSDL\360\237\230\200r3\343\200\200t0", {5, 10, 11, 15, 16}},
    {2, "\343\200\200.\303\251'\331\241aD\346\227\245 ", {3, 6, 7, 9, 14, 15}},
    {2, "D'3r.a'\305\277", {1, 2, 3, 4, 6, 9}},
    {2, "\305\277d\360\237\230\200 \360\237\230\200", {3, 7, 12}},
    {2, "\343\200\200eL\015r\346\227\245\303\251a\343\200\200 (", {5, 6, 13, 16, 18}},
    {2, "D\015 ", {1, 2, 3}},
    {2, "SV\302\262TT(", {2, 4, 6, 7}},
    {2, "\346\227\245ll-", {5, 6}},
    {3, "Hello world's 12345 ok", {5, 11, 13, 14, 15, 16, 17, 18, 19, 22}},
    {3, "I'M HERE, YOU'RE", {1, 3, 8, 9, 13, 16}},
    {3, "don'T 'Ll '\305\277", {3, 5, 7, 9, 11, 13}},
    {3, " 123 4567", {1, 2, 3, 4, 5, 6, 7, 8, 9}},
    {3, "a  b\011\011c", {1, 2, 4, 5, 7}},
    {3, "!!abc (x)", {2, 5, 7, 8, 9}},
    {3, "x!\012\012y", {1, 4, 5}},
    {3, "  \012  z", {3, 4, 6}},
    {3, "\011 abc", {1, 5}},
    {3, "line1\015\012\015\012line2", {4, 5, 9, 13, 14}},
    {3, "\346\227\245\346\234\254\350\252\236 \331\241\331\242\331\243\331\244 \302\262x", {9, 10, 12, 14, 16, 18, 19, 21, 22}},
    {3, "  ", {2}},
    {3, "'", {1}},
    {3, "\302\240word \343\200\200word", {6, 7, 14}},
    {3, "\360\237\230\200\360\237\230\200 ok!\077\012", {8, 11, 14}},
    {3, "r'\303\251\343\200\2003E\346\227\245e 1\015", {1, 4, 7, 8, 13, 14, 15, 16}},
    {3, "\303\251!DVvt\011A\302\240\331\241", {2, 7, 9, 11, 13}},
    {3, "\302\240vat\360\237\230\200S", {5, 10}},
    {3, "ts\011t\305\277V", {2, 7}},
    {3, "(E\346\227\245l\302\262\302\262-", {6, 8, 10, 11}},
    {3, "-2edd3", {1, 2, 5, 6}},
    {3, "32.SdS1\011", {1, 2, 6, 7, 8}},
    {3, "Vee\346\227\245", {6}},
    {3, "l3R .Vt!\331\241d", {1, 2, 3, 5, 7, 8, 10, 11}},
    {3, "\346\227\245aT", {5}},
    {3, "r2(-E1", {1, 2, 4, 5, 6}},
    {3, "r0a", {1, 2, 3}},
    {3, "'.'3\331\241(Le'", {3, 4, 6, 9, 10}},
    {3, "S\302\240\346\227\245S S", {1, 7, 9}},
    {3, "\302\240-\305\277", {2, 5}},
    {3, "rS\305\277TRt\343\200\200tV1D", {7, 12, 13, 14}},
    {3, "V\302\240\343\200\200s\342\200\250T2\302\240\302\262\303\251 '", {1, 3, 7, 11, 12, 14, 16, 18, 20}},
    {3, " V'1l ", {2, 3, 4, 5, 6}},
    {3, " ta.\342\200\250\302\262dt\346\227\245E", {3, 4, 7, 9, 15}},
    {3, "'l\012tV\015'r!\346\227\245 ", {2, 3, 5, 6, 8, 12, 13}},
    {3, "\303\251a\331\241 dl'Dd\331\241L ", {3, 5, 8, 10, 11, 13, 14, 15}},
    {3, "\343\200\200E\011E\360\237\230\200'\305\277", {4, 6, 11, 13}},
    {3, "'ST\360\237\230\2003 sa\011l", {2, 3, 7, 8, 11, 13}},
    {3, "r!\331\2413\331\241aD", {1, 2, 4, 5, 7, 9}},
    {3, "L\346\227\245s\015", {5, 6}},
};

static void test_pretok_vectors(void) {
    for (size_t i = 0; i < sizeof VEC / sizeof *VEC; i++) {
        const uint8_t *s = (const uint8_t *)VEC[i].text;
        size_t n = strlen(VEC[i].text), pos = 0;
        int k = 0, ok = 1;
        while (pos < n) {
            size_t end = smj_pretok_next_pattern(VEC[i].pattern, s, n, pos);
            if (end <= pos || end > n || VEC[i].ends[k] != (int)end) { ok = 0; break; }
            pos = end;
            k++;
        }
        CHECK(ok && VEC[i].ends[k] == 0, "pattern %d vector %zu (\"%s\"): split differs at piece %d", VEC[i].pattern, i,
              VEC[i].text, k);
    }
    /* hand-checked: numbers in threes (Llama-3) or ones (Qwen2), no space before digits */
    const uint8_t *t = (const uint8_t *)"x 12345";
    CHECK(smj_pretok_next_pattern(2, t, 7, 2) == 5 && smj_pretok_next_pattern(3, t, 7, 2) == 3 &&
          smj_pretok_next_pattern(1, t, 7, 1) == 7, "digit grouping");
}

/* ---- synthetic HF tokenizer.json */

typedef struct {
    int P;              /* plain tokens: 256 bytes, M merge results, 1 extra */
    int M;
    uint8_t *bytes[1024];
    size_t len[1024];
    int32_t ml[1024], mr[1024]; /* merges by rank, in plain-token indices */
    int32_t newid[1024];        /* plain index -> id in the json */
    int32_t added_id[3];        /* <|begin_of_text|> (special), <x-added> (not special), <|endoftext|> (special) */
    int V;
} synth;

static const char *const ADDED[3] = {"<|begin_of_text|>", "<x-added>", "<|endoftext|>"};

static void put_bl(smj_jbuf *b, const uint8_t *p, size_t n) {
    char tmp[4096];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 2 < sizeof tmp; i++) {
        uint32_t c = smj_hf_byte_char(p[i]);
        if (c < 0x80) tmp[k++] = (char)c;
        else { tmp[k++] = (char)(0xC0 | c >> 6); tmp[k++] = (char)(0x80 | (c & 0x3F)); }
    }
    smj_jbuf_str(b, tmp, k);
}

/* Builds the layout from a trained tokenizer's merges. */
static int synth_make(smj_ctx *ctx, synth *sy) {
    static const char text[] = "the quick brown fox jumps over the lazy dog; the dog's 1234 bones aren't there.\n"
                               "THE QUICK brown fox 56789 'LL 'Re it's   spaces\n\n tabs\t\tand ünïcödé 日本語 日本";
    smj_tokenizer *tok = NULL;
    smj_tokenizer_train_options o = {.vocab_size = 259 + 80};
    CHECK_OK(ctx, smj_tokenizer_train(ctx, (const uint8_t *)text, sizeof text - 1, &o, &tok));
    if (!tok) return -1;
    sy->M = smj_tokenizer_num_merges(tok);
    sy->P = 256 + sy->M + 1;
    for (int i = 0; i < 256 + sy->M; i++) {
        size_t l;
        const uint8_t *p = smj_tokenizer_token_bytes(tok, i, &l);
        sy->bytes[i] = malloc(l);
        memcpy(sy->bytes[i], p, l);
        sy->len[i] = l;
    }
    for (int i = 0; i < sy->M; i++) smj_tokenizer_merge(tok, i, &sy->ml[i], &sy->mr[i]);
    smj_tokenizer_free(tok);
    sy->bytes[sy->P - 1] = (uint8_t *)strdup("qqqq"); /* no merge makes it */
    sy->len[sy->P - 1] = 4;
    int dup = 0;
    for (int i = 0; i < sy->P; i++)
        for (int j = 0; j < i; j++)
            dup |= sy->len[i] == sy->len[j] && memcmp(sy->bytes[i], sy->bytes[j], sy->len[i]) == 0;
    CHECK(!dup, "synthetic vocabulary has unique token bytes");
    sy->V = sy->P + 3;
    int32_t perm[1024];
    for (int i = 0; i < sy->V; i++) perm[i] = i;
    for (int i = sy->V - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1));
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (int i = 0; i < sy->P; i++) sy->newid[i] = perm[i];
    for (int i = 0; i < 3; i++) sy->added_id[i] = perm[sy->P + i];
    return dup ? -1 : 0;
}

static void synth_free(synth *sy) { for (int i = 0; i < sy->P; i++) free(sy->bytes[i]); }

static void synth_json(const synth *sy, smj_jbuf *b, const char *regex, int pairs, int ignore_merges) {
    smj_jbuf_puts(b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": [");
    for (int i = 0; i < 3; i++) {
        smj_jbuf_printf(b, "%s{\"id\": %d, \"content\": ", i ? ", " : "", sy->added_id[i]);
        smj_jbuf_str(b, ADDED[i], strlen(ADDED[i]));
        smj_jbuf_printf(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                           "\"special\": %s}", i == 1 ? "false" : "true");
    }
    smj_jbuf_puts(b, "], \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                     "[{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    smj_jbuf_str(b, regex, strlen(regex));
    smj_jbuf_puts(b, "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
                     "false, \"trim_offsets\": true, \"use_regex\": false}]}, \"post_processor\": null, \"decoder\": "
                     "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true}, "
                     "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": "
                     "null, \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, ");
    smj_jbuf_printf(b, "\"ignore_merges\": %s, \"vocab\": {", ignore_merges ? "true" : "false");
    /* GPT-2 style: the vocab also lists the special <|endoftext|> with its id */
    for (int i = 0; i < sy->P; i++) {
        put_bl(b, sy->bytes[i], sy->len[i]);
        smj_jbuf_printf(b, ": %d, ", sy->newid[i]);
    }
    smj_jbuf_printf(b, "\"<|endoftext|>\": %d}, \"merges\": [", sy->added_id[2]);
    for (int i = 0; i < sy->M; i++) {
        if (i) smj_jbuf_puts(b, ", ");
        if (pairs) {
            smj_jbuf_puts(b, "[");
            put_bl(b, sy->bytes[sy->ml[i]], sy->len[sy->ml[i]]);
            smj_jbuf_puts(b, ", ");
            put_bl(b, sy->bytes[sy->mr[i]], sy->len[sy->mr[i]]);
            smj_jbuf_puts(b, "]");
        } else {
            uint8_t tmp[2048];
            size_t ll = sy->len[sy->ml[i]], rl = sy->len[sy->mr[i]];
            /* "left right": the space is U+0020, never a byte-level char */
            smj_jbuf b2 = {0};
            put_bl(&b2, sy->bytes[sy->ml[i]], ll);
            smj_jbuf_puts(&b2, " ");
            put_bl(&b2, sy->bytes[sy->mr[i]], rl);
            /* join the two literals: "a" "b" -> "a b" */
            size_t k = 0;
            for (size_t j = 0; j < b2.len; j++)
                if (!(b2.p[j] == '"' && (j == 0 || j == b2.len - 1 || b2.p[j + 1] == ' ' || b2.p[j - 1] == ' ')) ||
                    (j > 0 && b2.p[j - 1] == '\\' && !(j >= 2 && b2.p[j - 2] == '\\')))
                    tmp[k++] = (uint8_t)b2.p[j];
            smj_jbuf_puts(b, "\"");
            smj_jbuf_put(b, tmp, k);
            smj_jbuf_puts(b, "\"");
            smj_jbuf_free(&b2);
        }
    }
    smj_jbuf_puts(b, "]}}\n");
}

/* Plain reference BPE of one pre-token (by bytes, merges looked up linearly). */
static size_t ref_word(const synth *sy, const uint8_t *w, size_t n, int ignore_merges, int32_t *out) {
    if (ignore_merges)
        for (int i = 0; i < sy->P; i++)
            if (sy->len[i] == n && memcmp(sy->bytes[i], w, n) == 0) { out[0] = sy->newid[i]; return 1; }
    int32_t sym[512]; /* plain indices */
    size_t k = n;
    for (size_t i = 0; i < n; i++) sym[i] = w[i];
    for (;;) {
        int best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < k; i++)
            for (int r = 0; r < sy->M && (best < 0 || r < best); r++)
                if (sy->ml[r] == sym[i] && sy->mr[r] == sym[i + 1]) { best = r; at = i; break; }
        if (best < 0) break;
        sym[at] = 256 + best;
        memmove(sym + at + 1, sym + at + 2, (k - at - 2) * sizeof *sym);
        k--;
    }
    for (size_t i = 0; i < k; i++) out[i] = sy->newid[sym[i]];
    return k;
}

static size_t ref_encode(const synth *sy, int pattern, const uint8_t *s, size_t n, int ignore_merges, int32_t *out) {
    size_t k = 0;
    for (size_t pos = 0; pos < n;) {
        size_t end = smj_pretok_next_pattern(pattern, s, n, pos);
        k += ref_word(sy, s + pos, end - pos, ignore_merges, out + k);
        pos = end;
    }
    return k;
}

static const char *const HARD[] = {
    "the quick brown fox", "THE DOG'S bones AREN'T THERE", "it's 1234567 spaces   \n\n\ttabs",
    "qqqq qqqqq", "ünïcödé 日本語\r\n\r\n  x", " 'll 'LL 'ſ ", "  leading and trailing  ", "a\n\n\nb!!\n",
    "numbers 1 22 333 4444 55555 ١٢٣", "\xff\xfe broken \xc3 utf8 \xe6\x97", "",
};

static smj_tokenizer *import_text(smj_ctx *ctx, const smj_jbuf *b, const char *cfg) {
    smj_tokenizer *t = NULL;
    CHECK_OK(ctx, smj_hf_tokenizer_parse_cfg(ctx, b->p, b->len, cfg, cfg ? strlen(cfg) : 0, "synthetic.json", &t));
    return t;
}

static void check_tokenizer(smj_ctx *ctx, const synth *sy, smj_tokenizer *t, int pattern, int ignore_merges) {
    CHECK(smj_tokenizer_version(t) == 2 && smj_tokenizer_pattern(t) == pattern &&
          smj_tokenizer_vocab_size(t) == sy->V, "imported as version 2, pattern %d, vocab %d", pattern, sy->V);
    for (int b = 0; b < 256; b++)
        if (smj_tokenizer_byte_id(t, b) != sy->newid[b]) { CHECK(0, "byte %d has id %d", b, smj_tokenizer_byte_id(t, b)); break; }
    int ok = 1;
    for (size_t h = 0; h < sizeof HARD / sizeof *HARD; h++) {
        const uint8_t *s = (const uint8_t *)HARD[h];
        size_t n = strlen(HARD[h]), n_ids;
        int32_t want[512], *ids = NULL;
        size_t nw = ref_encode(sy, pattern, s, n, ignore_merges, want);
        CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, s, n, &ids, &n_ids));
        if (!ids || n_ids != nw || memcmp(ids, want, nw * sizeof *ids) != 0) {
            ok = 0;
            CHECK(0, "pattern %d ignore_merges %d: \"%s\" encodes to %zu ids, reference %zu", pattern, ignore_merges,
                  HARD[h], n_ids, nw);
        }
        smj_free(ids);
    }
    CHECK(ok, "pattern %d ignore_merges %d: ids equal the reference BPE", pattern, ignore_merges);
    /* arbitrary bytes round-trip */
    int rt = 1;
    for (int it = 0; it < 30; it++) {
        uint8_t s[300];
        size_t n = rnd() % sizeof s, n_ids, nb;
        for (size_t i = 0; i < n; i++) s[i] = it % 2 ? (uint8_t)rnd() : (uint8_t)"ab qt'\n1\xc3\xa9"[rnd() % 11];
        int32_t *ids = NULL;
        uint8_t *back = NULL;
        CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, s, n, &ids, &n_ids));
        CHECK_OK(ctx, smj_tokenizer_decode(ctx, t, ids, n_ids, &back, &nb));
        rt &= back && nb == n && memcmp(back, s, n) == 0;
        smj_free(ids); smj_free(back);
    }
    CHECK(rt, "arbitrary bytes round-trip");
    /* special tokens decode to nothing, added ones to their text */
    int32_t ids[4] = {sy->added_id[0], sy->newid['h'], sy->added_id[1], sy->added_id[2]};
    uint8_t *back = NULL;
    size_t nb;
    CHECK_OK(ctx, smj_tokenizer_decode(ctx, t, ids, 4, &back, &nb));
    CHECK(back && nb == 10 && memcmp(back, "h<x-added>", 10) == 0, "special/added decode");
    smj_free(back);
    CHECK(smj_tokenizer_kind(t, sy->added_id[1]) == SMJ_TOK_KIND_ADDED &&
          smj_tokenizer_kind(t, sy->added_id[2]) == SMJ_TOK_KIND_SPECIAL && smj_tokenizer_num_special(t) == 3,
          "added token kinds");
}

static void expect_fmt(smj_ctx *ctx, const uint8_t *d, size_t n, const char *what, const char *needle) {
    smj_tokenizer *t = NULL;
    smj_status s = smj_tokenizer_from_bytes(ctx, d, n, "bad2.tok", &t);
    CHECK(s == SMJ_ERR_FORMAT && !t && strstr(smj_ctx_error(ctx), "bad2.tok") &&
          (!needle || strstr(smj_ctx_error(ctx), needle)), "%s: want a format error with \"%s\", got %s: %s", what,
          needle ? needle : "", smj_status_str(s), smj_ctx_error(ctx));
    smj_tokenizer_free(t);
}

static void fix_crc(uint8_t *d, size_t n) { smj_wr_u32(d + n - 4, smj_crc32(0, d, n - 4)); }

static void test_v2_file(smj_ctx *ctx, const synth *sy, smj_tokenizer *t) {
    uint8_t *img = NULL, *again = NULL;
    size_t n = 0, n2 = 0;
    CHECK_OK(ctx, smj_tokenizer_to_bytes(ctx, t, &img, &n));
    if (!img) return;
    CHECK(smj_rd_u32(img + 8) == 2, "version 2 image");
    smj_tokenizer *c = NULL;
    CHECK_OK(ctx, smj_tokenizer_from_bytes(ctx, img, n, "v2.tok", &c));
    if (c) {
        CHECK_OK(ctx, smj_tokenizer_to_bytes(ctx, c, &again, &n2));
        CHECK(again && n2 == n && memcmp(again, img, n) == 0, "v2 save/load/save is byte-identical");
        smj_free(again);
        const uint8_t *s = (const uint8_t *)HARD[2];
        int32_t *a = NULL, *b = NULL;
        size_t na, nb;
        CHECK_OK(ctx, smj_tokenizer_encode(ctx, t, s, strlen(HARD[2]), &a, &na));
        CHECK_OK(ctx, smj_tokenizer_encode(ctx, c, s, strlen(HARD[2]), &b, &nb));
        CHECK(a && b && na == nb && memcmp(a, b, na * sizeof *a) == 0, "loaded v2 encodes identically");
        CHECK(smj_tokenizer_special_id(c, SMJ_TOKEN_BOS) == smj_tokenizer_special_id(t, SMJ_TOKEN_BOS) &&
              smj_tokenizer_special_id(c, SMJ_TOKEN_PAD) == -1, "specials survive");
        smj_free(a); smj_free(b);
    }
    smj_tokenizer_free(c);
    /* the file via the public save/load */
    char path[512];
    snprintf(path, sizeof path, "%s/v2.tok", test_tmpdir());
    CHECK_OK(ctx, smj_tokenizer_save(ctx, t, path));
    CHECK_OK(ctx, smj_tokenizer_load(ctx, path, &c));
    CHECK(c && smj_tokenizer_version(c) == 2, "saved v2 file loads");
    smj_tokenizer_free(c);

    uint8_t *d = malloc(n + 16);
    uint32_t V = smj_rd_u32(img + 20);
    memcpy(d, img, n); d[n - 1] ^= 1;
    expect_fmt(ctx, d, n, "v2 flipped CRC", "checksum");
    memcpy(d, img, n); d[12] = 9; fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 pattern 9", "pattern");
    memcpy(d, img, n); d[16] = 4; fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 unknown flag", "flags");
    memcpy(d, img, n); smj_wr_u32(d + 20, 1u << 30); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 huge vocab", "vocabulary size");
    memcpy(d, img, n); smj_wr_u32(d + 28, V); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 PAD out of range", "out of range");
    memcpy(d, img, n); d[40] = 7; fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 token kind 7", "kind");
    memcpy(d, img, n); smj_wr_u32(d + 41, 0); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 empty token", "length");
    memcpy(d, img, n); smj_wr_u32(d + 41, 0x7FFFFFFF); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 token past the end", "truncated");
    memcpy(d, img, n - 4); d[n - 4] = 0; fix_crc(d, n + 1);
    expect_fmt(ctx, d, n + 1, "v2 trailing byte", NULL);
    memcpy(d, img, n); fix_crc(d, n - 5);
    expect_fmt(ctx, d, n - 5, "v2 truncated", NULL);
    size_t mo = n - 4 - 12 * (size_t)sy->M; /* the merge table */
    memcpy(d, img, n); smj_wr_u32(d + mo + 8, (uint32_t)sy->newid['q']); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 merge result with other bytes", "left ++ right");
    memcpy(d, img, n); smj_wr_u32(d + mo, (uint32_t)sy->added_id[0]); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 merge of a special token", "not a plain token");
    memcpy(d, img, n); memcpy(d + mo + 12, d + mo, 12); fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 duplicate merge", "duplicates");
    /* the single-byte tokens: make the one of 'a' a second 'b' */
    size_t off = 40;
    int32_t ida = sy->newid['a'];
    for (int32_t id = 0; id < ida; id++) off += 5 + smj_rd_u32(img + off + 1);
    memcpy(d, img, n); d[off + 5] = 'b'; fix_crc(d, n);
    expect_fmt(ctx, d, n, "v2 two tokens with the same bytes", "same bytes");
    free(d);
    smj_free(img);
}

static void test_synthetic(smj_ctx *ctx) {
    static synth sy;
    if (synth_make(ctx, &sy) != 0) { synth_free(&sy); return; }
    const char *regex[4] = {NULL, SMJ_HF_GPT2_PATTERN, SMJ_HF_LLAMA3_PATTERN, SMJ_HF_QWEN2_PATTERN};
    for (int pattern = 1; pattern <= 3; pattern++)
        for (int pairs = 0; pairs < 2; pairs++)
            for (int im = 0; im < 2; im++) {
                smj_jbuf b = {0};
                synth_json(&sy, &b, regex[pattern], pairs, im);
                smj_tokenizer *t = import_text(ctx, &b, NULL);
                if (t) {
                    check_tokenizer(ctx, &sy, t, pattern, im);
                    /* fallback names: no PAD name, BOS <|begin_of_text|>, EOS <|endoftext|> */
                    CHECK(smj_tokenizer_special_id(t, SMJ_TOKEN_PAD) == -1 &&
                          smj_tokenizer_special_id(t, SMJ_TOKEN_BOS) == sy.added_id[0] &&
                          smj_tokenizer_special_id(t, SMJ_TOKEN_EOS) == sy.added_id[2], "PAD/BOS/EOS by name");
                    CHECK(smj_tokenizer_flags(t) == (im ? SMJ_TOK_FLAG_IGNORE_MERGES : 0u), "ignore_merges flag");
                    smj_jbuf out = {0};
                    CHECK(smj_hf_tokenizer_json(ctx, t, &out) == SMJ_ERR_UNSUPPORTED, "export of v2 refused");
                    smj_jbuf_free(&out);
                    if (pattern == 2 && pairs && im) test_v2_file(ctx, &sy, t);
                }
                smj_tokenizer_free(t);
                if (pattern == 3 && !pairs && !im) {
                    /* tokenizer_config.json names them */
                    const char *cfg = "{\"bos_token\": {\"content\": \"<|endoftext|>\", \"special\": true}, "
                                      "\"eos_token\": \"<x-added>\", \"pad_token\": null}";
                    t = import_text(ctx, &b, cfg);
                    CHECK(t && smj_tokenizer_special_id(t, SMJ_TOKEN_BOS) == sy.added_id[2] &&
                          smj_tokenizer_special_id(t, SMJ_TOKEN_EOS) == sy.added_id[1] &&
                          smj_tokenizer_special_id(t, SMJ_TOKEN_PAD) == -1, "PAD/BOS/EOS from tokenizer_config.json");
                    smj_tokenizer_free(t);
                    const char *badcfg = "{\"eos_token\": \"<nope>\"}";
                    t = NULL;
                    smj_status s = smj_hf_tokenizer_parse_cfg(ctx, b.p, b.len, badcfg, strlen(badcfg), "synthetic.json", &t);
                    CHECK(s == SMJ_ERR_FORMAT && !t && strstr(smj_ctx_error(ctx), "<nope>"), "unknown eos_token refused: %s",
                          smj_ctx_error(ctx));
                    /* import from a directory with tokenizer_config.json */
                    char p1[512], p2[512];
                    snprintf(p1, sizeof p1, "%s/tokenizer.json", test_tmpdir());
                    snprintf(p2, sizeof p2, "%s/tokenizer_config.json", test_tmpdir());
                    FILE *f = fopen(p1, "wb");
                    if (f) { fwrite(b.p, 1, b.len, f); fclose(f); }
                    f = fopen(p2, "wb");
                    if (f) { fputs(cfg, f); fclose(f); }
                    t = NULL;
                    CHECK_OK(ctx, smj_tokenizer_import_hf(ctx, p1, &t));
                    CHECK(t && smj_tokenizer_special_id(t, SMJ_TOKEN_EOS) == sy.added_id[1], "import_hf reads the config");
                    smj_tokenizer_free(t);
                    remove(p2);
                    remove(p1);
                }
                smj_jbuf_free(&b);
            }
    /* an unknown Split regex is refused, naming it */
    smj_jbuf b = {0};
    synth_json(&sy, &b, "\\p{L}+|\\s+", 0, 0);
    smj_tokenizer *t = NULL;
    smj_status s = smj_hf_tokenizer_parse(ctx, b.p, b.len, "odd.json", &t);
    CHECK(s == SMJ_ERR_UNSUPPORTED && !t && strstr(smj_ctx_error(ctx), "\\p{L}+|\\s+"), "unknown regex refused: %s",
          smj_ctx_error(ctx));
    smj_jbuf_free(&b);
    synth_free(&sy);
}

int main(void) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    test_pretok_vectors();
    test_synthetic(ctx);
    smj_ctx_free(ctx);
    return check_summary("test_tokenizer_hf");
}
