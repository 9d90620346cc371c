/* hf_tokenizer.c — our byte-level BPE as a HF tokenizers tokenizer.json, and
 * back (docs/HF.md, "tokenizer.json").
 *
 * Token strings are the token's bytes mapped through GPT-2's bytes_to_unicode
 * table; the vocabulary is ids 0..255 (bytes), 256.. (one per merge, in merge
 * order); merges are written as "left right" strings (the form every
 * tokenizers version reads; a space never occurs inside a byte-level token
 * string); the special tokens are added_tokens with special = true. Import
 * accepts exactly that layout (merges as strings or as [left, right] pairs).
 */
#include <string.h>
#include "../core/core.h"
#include "../tokenizer/tokenizer.h"
#include "hf.h"

const char SMJ_HF_GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes get U+0100.. in byte order. */
uint32_t smj_hf_byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    uint32_t n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256 + n;
}

typedef struct { uint8_t utf8[256][3]; uint8_t len[256]; } byte_table;

static void make_table(byte_table *t) {
    for (int b = 0; b < 256; b++) {
        uint32_t cp = smj_hf_byte_char(b);
        if (cp < 0x80) { t->utf8[b][0] = (uint8_t)cp; t->len[b] = 1; }
        else { t->utf8[b][0] = (uint8_t)(0xC0 | cp >> 6); t->utf8[b][1] = (uint8_t)(0x80 | (cp & 0x3F)); t->len[b] = 2; }
    }
}

static void put_token(smj_jbuf *out, const byte_table *bt, const uint8_t *p, size_t n) {
    /* byte-level strings never need JSON escapes except '"' and '\\' */
    smj_jbuf_put(out, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"') smj_jbuf_put(out, "\\\"", 2);
        else if (p[i] == '\\') smj_jbuf_put(out, "\\\\", 2);
        else smj_jbuf_put(out, bt->utf8[p[i]], bt->len[p[i]]);
    }
}

typedef struct { const uint8_t *p; size_t n; int id; } tokref;

static int tokref_cmp(const void *a, const void *b) {
    const tokref *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = m ? memcmp(x->p, y->p, m) : 0;
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return x->id - y->id;
}

/* Refuses tokenizers tokenizer.json cannot express. */
static smj_status check_exportable(smj_ctx *ctx, const smj_tokenizer *tok) {
    int M = smj_tokenizer_num_merges(tok), n = 256 + M, S = smj_tokenizer_num_special(tok);
    tokref *r = malloc(sizeof *r * (size_t)(n + S));
    if (!r) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) r[i].p = smj_tokenizer_token_bytes(tok, i, &r[i].n), r[i].id = i;
    qsort(r, (size_t)n, sizeof *r, tokref_cmp);
    for (int i = 1; i < n; i++)
        if (r[i].n == r[i - 1].n && memcmp(r[i].p, r[i - 1].p, r[i].n) == 0) {
            int a = r[i - 1].id, b = r[i].id;
            free(r);
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "tokenizer.json: ids %d and %d have the same bytes; a HF vocabulary "
                     "maps each token string to one id", a, b);
        }
    free(r);
    for (int i = 0; i < S; i++) {
        size_t len;
        const char *s = smj_tokenizer_special_text(tok, i, &len);
        if (!smj_utf8_valid(s, len) || memchr(s, 0, len))
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "tokenizer.json: special token %d is not valid UTF-8 text", n + i);
        for (int j = 0; j < i; j++) {
            size_t l2;
            const char *s2 = smj_tokenizer_special_text(tok, j, &l2);
            if (l2 == len && memcmp(s, s2, len) == 0)
                SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "tokenizer.json: special tokens %d and %d have the same text",
                         n + j, n + i);
        }
    }
    return SMJ_OK;
}

smj_status smj_hf_tokenizer_json(smj_ctx *ctx, const smj_tokenizer *tok, smj_jbuf *b) {
    SMJ_CHECK(ctx, smj_tokenizer_pattern(tok) == SMJ_TOK_PATTERN_GPT2, SMJ_ERR_UNSUPPORTED,
              "tokenizer.json: unknown pre-tokenizer pattern %d", smj_tokenizer_pattern(tok));
    SMJ_TRY(check_exportable(ctx, tok));
    byte_table bt;
    make_table(&bt);
    int M = smj_tokenizer_num_merges(tok), S = smj_tokenizer_num_special(tok), n = 256 + M;
    smj_jbuf_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int i = 0; i < S; i++) {
        size_t len;
        const char *s = smj_tokenizer_special_text(tok, i, &len);
        smj_jbuf_printf(b, "%s\n    {\"id\": %d, \"content\": ", i ? "," : "", n + i);
        smj_jbuf_str(b, s, len);
        smj_jbuf_puts(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                         "\"special\": true}");
    }
    smj_jbuf_puts(b, "\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {\n    \"type\": \"Sequence\",\n"
                     "    \"pretokenizers\": [\n      {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    smj_jbuf_str(b, SMJ_HF_GPT2_PATTERN, strlen(SMJ_HF_GPT2_PATTERN));
    smj_jbuf_puts(b, "}, \"behavior\": \"Isolated\", \"invert\": false},\n"
                     "      {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
                     "\"use_regex\": false}\n    ]\n  },\n  \"post_processor\": null,\n"
                     "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
                     "\"use_regex\": false},\n"
                     "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
                     "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                     "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
                     "    \"vocab\": {");
    for (int i = 0; i < n; i++) {
        size_t len;
        const uint8_t *p = smj_tokenizer_token_bytes(tok, i, &len);
        smj_jbuf_puts(b, i ? ",\n      " : "\n      ");
        put_token(b, &bt, p, len);
        smj_jbuf_printf(b, "\": %d", i);
    }
    smj_jbuf_puts(b, "\n    },\n    \"merges\": [");
    for (int i = 0; i < M; i++) {
        int32_t l, r;
        smj_tokenizer_merge(tok, i, &l, &r);
        size_t ll, rl;
        const uint8_t *lp = smj_tokenizer_token_bytes(tok, l, &ll), *rp = smj_tokenizer_token_bytes(tok, r, &rl);
        smj_jbuf_puts(b, i ? ",\n      " : "\n      ");
        put_token(b, &bt, lp, ll);
        smj_jbuf_puts(b, " ");
        /* put_token opens a quote; continue the same string */
        for (size_t k = 0; k < rl; k++) {
            if (rp[k] == '"') smj_jbuf_put(b, "\\\"", 2);
            else if (rp[k] == '\\') smj_jbuf_put(b, "\\\\", 2);
            else smj_jbuf_put(b, bt.utf8[rp[k]], bt.len[rp[k]]);
        }
        smj_jbuf_puts(b, "\"");
    }
    smj_jbuf_puts(b, "\n    ]\n  }\n}\n");
    if (b->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory writing tokenizer.json");
    return SMJ_OK;
}

smj_status smj_hf_tokenizer_config_json(smj_ctx *ctx, const smj_tokenizer *tok, int model_max_length, smj_jbuf *b) {
    SMJ_TRY(check_exportable(ctx, tok));
    int S = smj_tokenizer_num_special(tok), n = 256 + smj_tokenizer_num_merges(tok);
    smj_jbuf_puts(b, "{\n  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n  \"added_tokens_decoder\": {");
    for (int i = 0; i < S; i++) {
        size_t len;
        const char *s = smj_tokenizer_special_text(tok, i, &len);
        smj_jbuf_printf(b, "%s\n    \"%d\": {\"content\": ", i ? "," : "", n + i);
        smj_jbuf_str(b, s, len);
        smj_jbuf_puts(b, ", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": false, "
                         "\"special\": true}");
    }
    smj_jbuf_puts(b, "\n  },\n");
    static const char *const KEYS[3] = {"pad_token", "bos_token", "eos_token"};
    for (int i = 0; i < 3; i++) {
        size_t len;
        const char *s = smj_tokenizer_special_text(tok, i, &len);
        smj_jbuf_printf(b, "  \"%s\": ", KEYS[i]);
        smj_jbuf_str(b, s, len);
        smj_jbuf_puts(b, ",\n");
    }
    smj_jbuf_puts(b, "  \"clean_up_tokenization_spaces\": false,\n");
    if (model_max_length > 0) smj_jbuf_printf(b, "  \"model_max_length\": %d,\n", model_max_length);
    smj_jbuf_puts(b, "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
    if (b->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory writing tokenizer_config.json");
    return SMJ_OK;
}

/* ------------------------------------------------------------------ import */

typedef struct { const char *s; size_t n; int64_t id; } vent;

static int vent_cmp(const void *a, const void *b) {
    const vent *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = m ? memcmp(x->s, y->s, m) : 0;
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static int64_t vocab_lookup(const vent *v, size_t n, const char *s, size_t len) {
    vent key = {s, len, 0};
    const vent *r = bsearch(&key, v, n, sizeof *v, vent_cmp);
    return r ? r->id : -1;
}

static int is_str(const smj_json *x, const char *s) { return x && x->type == SMJ_JSON_STRING && strcmp(x->str, s) == 0; }
static int is_false_or_absent(const smj_json *x) { return !x || x->type == SMJ_JSON_NULL || (x->type == SMJ_JSON_BOOL && !x->boolean); }
static int is_null_or_absent(const smj_json *x) { return !x || x->type == SMJ_JSON_NULL; }

/* ByteLevel pre-tokenizer without a prefix space; use_regex as required. */
static int bytelevel_ok(const smj_json *p, int want_regex) {
    if (!p || p->type != SMJ_JSON_OBJECT || !is_str(smj_json_get(p, "type"), "ByteLevel")) return 0;
    if (!is_false_or_absent(smj_json_get(p, "add_prefix_space"))) return 0;
    const smj_json *ur = smj_json_get(p, "use_regex");
    int regex = !ur || ur->type != SMJ_JSON_BOOL || ur->boolean; /* default true */
    return regex == want_regex;
}

static int pretok_ok(const smj_json *p) {
    if (bytelevel_ok(p, 1)) return 1; /* ByteLevel's built-in regex is GPT-2's */
    if (!p || p->type != SMJ_JSON_OBJECT || !is_str(smj_json_get(p, "type"), "Sequence")) return 0;
    const smj_json *l = smj_json_get(p, "pretokenizers");
    if (!l || l->type != SMJ_JSON_ARRAY || l->len != 2) return 0;
    const smj_json *sp = &l->kids[0];
    if (!is_str(smj_json_get(sp, "type"), "Split") || !is_str(smj_json_get(sp, "behavior"), "Isolated") ||
        !is_false_or_absent(smj_json_get(sp, "invert")))
        return 0;
    const smj_json *pat = smj_json_get(sp, "pattern");
    if (!is_str(smj_json_get(pat, "Regex"), SMJ_HF_GPT2_PATTERN)) return 0;
    return bytelevel_ok(&l->kids[1], 0);
}

smj_status smj_hf_tokenizer_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, smj_tokenizer **out) {
    *out = NULL;
    smj_json_doc *doc;
    const smj_json *root;
    SMJ_TRY(smj_json_parse(ctx, text, n, name, 32, &doc, &root));
    smj_status st = SMJ_OK;
    vent *v = NULL;
    uint8_t *img = NULL, *tmpa = NULL;
    int32_t *pairs = NULL;
#define FAIL(s, ...) do { st = smj_set_error(ctx, (s), __VA_ARGS__); goto done; } while (0)
    if (root->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "%s: not a JSON object", name);
    const smj_json *model = smj_json_get(root, "model");
    if (!model || model->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "%s: \"model\" is missing or not an object", name);
    const smj_json *mtype = smj_json_get(model, "type");
    if (mtype && !is_str(mtype, "BPE"))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: model type %s is not supported (only BPE)", name,
             mtype->type == SMJ_JSON_STRING ? mtype->str : "?");
    if (!is_false_or_absent(smj_json_get(model, "byte_fallback")))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"byte_fallback\": true is not supported (byte-level BPE only)", name);
    if (!is_null_or_absent(smj_json_get(model, "dropout")))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: BPE \"dropout\" is not supported", name);
    static const char *const NULLISH[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const smj_json *x = smj_json_get(model, NULLISH[i]);
        if (!is_null_or_absent(x) && !(x->type == SMJ_JSON_STRING && x->len == 0))
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"%s\" is not supported", name, NULLISH[i]);
    }
    if (!is_false_or_absent(smj_json_get(model, "ignore_merges")))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"ignore_merges\": true is not supported", name);
    if (!is_null_or_absent(smj_json_get(root, "normalizer")))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: a \"normalizer\" is not supported", name);
    if (!pretok_ok(smj_json_get(root, "pre_tokenizer")))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: the \"pre_tokenizer\" is not GPT-2's byte-level split (ByteLevel with its regex, "
             "or Sequence[Split(GPT-2 pattern, Isolated), ByteLevel(use_regex false)]), the only one supported", name);
    const smj_json *dec = smj_json_get(root, "decoder");
    if (!is_null_or_absent(dec) && !is_str(smj_json_get(dec, "type"), "ByteLevel"))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: the \"decoder\" is not ByteLevel", name);
    const smj_json *vocab = smj_json_get(model, "vocab"), *merges = smj_json_get(model, "merges");
    if (!vocab || vocab->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "%s: model.vocab is missing or not an object", name);
    if (!merges || merges->type != SMJ_JSON_ARRAY) FAIL(SMJ_ERR_FORMAT, "%s: model.merges is missing or not an array", name);
    const smj_json *added = smj_json_get(root, "added_tokens");
    if (added && added->type != SMJ_JSON_ARRAY) FAIL(SMJ_ERR_FORMAT, "%s: \"added_tokens\" is not an array", name);
    size_t M = merges->len, S = added ? added->len : 0;
    if (M > (size_t)(SMJ_TOK_MAX_VOCAB - 256 - 3)) FAIL(SMJ_ERR_UNSUPPORTED, "%s: too many merges (%zu)", name, M);
    int64_t n_plain = 256 + (int64_t)M;

    /* added tokens: ids n_plain.. in order, at least PAD, BOS, EOS */
    if (S < 3 || S > SMJ_TOK_MAX_SPECIAL)
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: %zu added tokens; smedjan needs 3..%d special tokens (PAD, BOS, EOS first)", name,
             S, SMJ_TOK_MAX_SPECIAL);
    for (size_t i = 0; i < S; i++) {
        const smj_json *a = &added->kids[i], *id = smj_json_get(a, "id"), *content = smj_json_get(a, "content");
        if (!id || id->type != SMJ_JSON_NUMBER || !id->is_int || !content || content->type != SMJ_JSON_STRING)
            FAIL(SMJ_ERR_FORMAT, "%s: added_tokens[%zu] lacks an integer \"id\" or a string \"content\"", name, i);
        if (id->i64 != n_plain + (int64_t)i)
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: added token \"%.100s\" has id %lld; smedjan needs the special tokens right "
                 "after the merges, in order (expected %lld)", name, content->str, (long long)id->i64,
                 (long long)(n_plain + (int64_t)i));
        if (content->len < 1 || content->len > SMJ_TOK_MAX_SPECIAL_LEN || strlen(content->str) != content->len)
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: added token %lld has an empty, too long or NUL-containing text", name,
                 (long long)id->i64);
    }

    /* vocabulary: every id < n_plain exactly once; ids >= n_plain only as the
     * added token with the same text */
    v = malloc(sizeof *v * (vocab->len + 1));
    if (!v) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
    size_t nv = 0;
    const char **by_id = calloc((size_t)n_plain, sizeof *by_id);
    size_t *len_by_id = calloc((size_t)n_plain, sizeof *len_by_id);
    tmpa = (uint8_t *)by_id;
    if (!by_id || !len_by_id) { free(len_by_id); FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name); }
    for (size_t i = 0; i < vocab->len && st == SMJ_OK; i++) {
        const smj_json *e = &vocab->kids[i];
        if (e->type != SMJ_JSON_NUMBER || !e->is_int || e->i64 < 0)
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: vocab entry \"%.100s\" does not map to a non-negative integer id",
                               name, e->key);
        else if (e->i64 >= n_plain) {
            int64_t k = e->i64 - n_plain;
            if (k >= (int64_t)S || strcmp(smj_json_get(&added->kids[k], "content")->str, e->key) != 0)
                st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: vocab token \"%.100s\" has id %lld, which is neither a "
                                   "merge result (< %lld) nor the added token with that id", name, e->key,
                                   (long long)e->i64, (long long)n_plain);
        } else if (by_id[e->i64]) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: id %lld appears twice in the vocab", name, (long long)e->i64);
        } else {
            by_id[e->i64] = e->key;
            len_by_id[e->i64] = e->key_len;
            v[nv++] = (vent){e->key, e->key_len, e->i64};
        }
    }
    for (int64_t i = 0; i < n_plain && st == SMJ_OK; i++)
        if (!by_id[i])
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: no vocab token has id %lld (smedjan needs ids 0..%lld "
                               "to be the bytes and the merge results)", name, (long long)i, (long long)n_plain - 1);
    if (st != SMJ_OK) { free(len_by_id); goto done; }
    byte_table bt;
    make_table(&bt);
    for (int b = 0; b < 256 && st == SMJ_OK; b++)
        if (len_by_id[b] != bt.len[b] || memcmp(by_id[b], bt.utf8[b], bt.len[b]) != 0)
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: vocab id %d is \"%.100s\", not the byte-level token of "
                               "byte %d (smedjan needs ids 0..255 to be the bytes in order)", name, b, by_id[b], b);
    if (st != SMJ_OK) { free(len_by_id); goto done; }
    qsort(v, nv, sizeof *v, vent_cmp);

    /* merges: merge i joins two known tokens into exactly token 256+i */
    pairs = malloc(sizeof *pairs * (2 * M + 1));
    if (!pairs) { free(len_by_id); FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name); }
    for (size_t i = 0; i < M && st == SMJ_OK; i++) {
        const smj_json *e = &merges->kids[i];
        const char *l, *r;
        size_t ll, rl;
        if (e->type == SMJ_JSON_STRING) {
            const char *sp = memchr(e->str, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp - e->str) - 1)) {
                st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: merge %zu \"%.100s\" is not two tokens separated by one space",
                                   name, i, e->str);
                break;
            }
            l = e->str; ll = (size_t)(sp - e->str); r = sp + 1; rl = e->len - ll - 1;
        } else if (e->type == SMJ_JSON_ARRAY && e->len == 2 && e->kids[0].type == SMJ_JSON_STRING &&
                   e->kids[1].type == SMJ_JSON_STRING) {
            l = e->kids[0].str; ll = e->kids[0].len; r = e->kids[1].str; rl = e->kids[1].len;
        } else {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", name, i);
            break;
        }
        int64_t li = vocab_lookup(v, nv, l, ll), ri = vocab_lookup(v, nv, r, rl), want = 256 + (int64_t)i;
        if (li < 0 || ri < 0) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: merge %zu uses a token that is not in the vocab", name, i);
            break;
        }
        if (li >= want || ri >= want || len_by_id[want] != ll + rl || memcmp(by_id[want], l, ll) != 0 ||
            memcmp(by_id[want] + ll, r, rl) != 0) {
            st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: merge %zu does not produce vocab id %lld from earlier ids "
                               "(smedjan needs merge i to make id 256+i)", name, i, (long long)want);
            break;
        }
        pairs[2 * i] = (int32_t)li;
        pairs[2 * i + 1] = (int32_t)ri;
    }
    free(len_by_id);
    if (st != SMJ_OK) goto done;

    /* Build the tokenizer file image (docs/FORMAT-tokenizer.md) and load it. */
    size_t sz = 24 + 8 * M + 4;
    for (size_t i = 0; i < S; i++) sz += 6 + smj_json_get(&added->kids[i], "content")->len;
    img = malloc(sz);
    if (!img) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
    memcpy(img, SMJ_TOK_MAGIC, 8);
    smj_wr_u32(img + 8, SMJ_TOK_VERSION);
    smj_wr_u32(img + 12, SMJ_TOK_PATTERN_GPT2);
    smj_wr_u32(img + 16, (uint32_t)M);
    smj_wr_u32(img + 20, (uint32_t)S);
    uint8_t *p = img + 24;
    for (size_t i = 0; i < 2 * M; i++, p += 4) smj_wr_u32(p, (uint32_t)pairs[i]);
    for (size_t i = 0; i < S; i++) {
        const smj_json *c = smj_json_get(&added->kids[i], "content");
        smj_wr_u32(p, (uint32_t)(n_plain + (int64_t)i));
        p[4] = (uint8_t)c->len;
        p[5] = (uint8_t)(c->len >> 8);
        memcpy(p + 6, c->str, c->len);
        p += 6 + c->len;
    }
    smj_wr_u32(p, smj_crc32(0, img, sz - 4));
    st = smj_tokenizer_from_bytes(ctx, img, sz, name, out);
done:
#undef FAIL
    free(img);
    free(pairs);
    free(tmpa);
    free(v);
    smj_json_free(doc);
    return st;
}

smj_status smj_tokenizer_import_hf(smj_ctx *ctx, const char *path, smj_tokenizer **out) {
    *out = NULL;
    uint8_t *text;
    size_t n;
    SMJ_TRY(smj_read_file(ctx, path, &text, &n));
    smj_status st = smj_hf_tokenizer_parse(ctx, (const char *)text, n, path, out);
    free(text);
    return st;
}
