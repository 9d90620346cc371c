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
#include <stdio.h>
#include <string.h>
#include "../core/core.h"
#include "../tokenizer/tokenizer.h"
#include "hf.h"

const char SMJ_HF_GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama-3's and Qwen2's Split regexes, as their tokenizer.json files spell them. */
const char SMJ_HF_LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char SMJ_HF_QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

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
    if (smj_tokenizer_version(tok) != 1)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "tokenizer.json: exporting an imported (version 2, general vocabulary) "
                 "tokenizer is not supported yet; use the original tokenizer.json");
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

/* The pre-tokenizer's pattern id (1..3), 0 when the structure is not
 * supported, -1 for a Sequence[Split, ByteLevel] whose regex is unknown
 * (*regex then points at it). */
static int pretok_pattern(const smj_json *p, const char **regex) {
    *regex = NULL;
    if (bytelevel_ok(p, 1)) return SMJ_TOK_PATTERN_GPT2; /* ByteLevel's built-in regex is GPT-2's */
    if (!p || p->type != SMJ_JSON_OBJECT || !is_str(smj_json_get(p, "type"), "Sequence")) return 0;
    const smj_json *l = smj_json_get(p, "pretokenizers");
    if (!l || l->type != SMJ_JSON_ARRAY || l->len != 2) return 0;
    const smj_json *sp = &l->kids[0];
    if (!is_str(smj_json_get(sp, "type"), "Split") || !is_str(smj_json_get(sp, "behavior"), "Isolated") ||
        !is_false_or_absent(smj_json_get(sp, "invert")) || !bytelevel_ok(&l->kids[1], 0))
        return 0;
    const smj_json *pat = smj_json_get(smj_json_get(sp, "pattern"), "Regex");
    if (!pat || pat->type != SMJ_JSON_STRING) return 0;
    if (strcmp(pat->str, SMJ_HF_GPT2_PATTERN) == 0) return SMJ_TOK_PATTERN_GPT2;
    if (strcmp(pat->str, SMJ_HF_LLAMA3_PATTERN) == 0) return SMJ_TOK_PATTERN_LLAMA3;
    if (strcmp(pat->str, SMJ_HF_QWEN2_PATTERN) == 0) return SMJ_TOK_PATTERN_QWEN2;
    *regex = pat->str;
    return -1;
}

/* Decodes a byte-level token string s[0..n) into out (>= n bytes); returns
 * the byte count, or -1 when a character is not one of the 256 byte chars. */
typedef struct { int16_t byte[324]; } inv_table; /* byte char (< U+0144) -> byte, -1 */

static void make_inv(inv_table *t) {
    for (int c = 0; c < 324; c++) t->byte[c] = -1;
    for (int b = 0; b < 256; b++) t->byte[smj_hf_byte_char(b)] = (int16_t)b;
}

static long bytelevel_decode(const inv_table *it, const char *s, size_t n, uint8_t *out) {
    const int16_t *inv = it->byte;
    long k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = smj_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (cp >= 324 || inv[cp] < 0) return -1;
        out[k++] = (uint8_t)inv[cp];
        i += (size_t)l;
    }
    return k;
}

/* A token named by tokenizer_config.json: a string or {"content": string}. */
static const char *config_token(const smj_json *cfg, const char *key, int *present) {
    const smj_json *x = cfg ? smj_json_get(cfg, key) : NULL;
    *present = x != NULL;
    if (x && x->type == SMJ_JSON_OBJECT) x = smj_json_get(x, "content");
    return x && x->type == SMJ_JSON_STRING ? x->str : NULL;
}

/* Fallback names (no tokenizer_config.json, or the key is absent there), first
 * one present wins. Documented in docs/HF.md. */
static const char *const FALLBACK_NAMES[3][6] = {
    {"<|pad|>", "<pad>", "<|finetune_right_pad_id|>", NULL},
    {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<|endoftext|>", NULL},
    {"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", NULL},
};

smj_status smj_hf_tokenizer_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, smj_tokenizer **out) {
    return smj_hf_tokenizer_parse_cfg(ctx, text, n, NULL, 0, name, out);
}

smj_status smj_hf_tokenizer_parse_cfg(smj_ctx *ctx, const char *text, size_t n, const char *cfg_text, size_t cfg_n,
                                      const char *name, smj_tokenizer **out) {
    *out = NULL;
    smj_json_doc *doc, *cdoc = NULL;
    const smj_json *root, *cfg = NULL;
    SMJ_TRY(smj_json_parse(ctx, text, n, name, 32, &doc, &root));
    smj_status st = SMJ_OK;
    vent *v = NULL;
    uint8_t *img = NULL, *kind = NULL, *buf = NULL;
    int32_t *trip = NULL;
    const char **tok_str = NULL;
    size_t *tok_len = NULL;
    uint8_t *is_str_key = NULL;
#define FAIL(s, ...) do { st = smj_set_error(ctx, (s), __VA_ARGS__); goto done; } while (0)
    if (cfg_text) {
        st = smj_json_parse(ctx, cfg_text, cfg_n, "tokenizer_config.json", 32, &cdoc, &cfg);
        if (st != SMJ_OK) goto done;
        if (cfg->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "tokenizer_config.json: not a JSON object");
    }
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
    const smj_json *im = smj_json_get(model, "ignore_merges");
    int ignore_merges = im && im->type == SMJ_JSON_BOOL && im->boolean;
    if (!is_false_or_absent(im) && !ignore_merges)
        FAIL(SMJ_ERR_FORMAT, "%s: \"ignore_merges\" is not a boolean", name);
    const smj_json *norm = smj_json_get(root, "normalizer");
    /* NFC (Qwen2), alone or as a Sequence of NFCs: encode applies it (flag). */
    int nfc = 0;
    if (!is_null_or_absent(norm)) {
        const smj_json *seq = smj_json_get(norm, "normalizers");
        if (is_str(smj_json_get(norm, "type"), "NFC")) {
            nfc = 1;
        } else if (is_str(smj_json_get(norm, "type"), "Sequence") && seq && seq->type == SMJ_JSON_ARRAY) {
            for (size_t i = 0; i < seq->len; i++)
                if (!is_str(smj_json_get(&seq->kids[i], "type"), "NFC"))
                    FAIL(SMJ_ERR_UNSUPPORTED, "%s: a \"normalizer\" Sequence with anything but NFC is not supported",
                         name);
            nfc = seq->len > 0;
        } else {
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: a \"normalizer\" other than NFC is not supported", name);
        }
    }
    const char *regex;
    int pattern = pretok_pattern(smj_json_get(root, "pre_tokenizer"), &regex);
    if (pattern < 0)
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: unknown Split regex \"%.300s\" (supported: the GPT-2, Llama-3 and Qwen2 patterns, "
             "byte for byte)", name, regex);
    if (pattern == 0)
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: the \"pre_tokenizer\" is not a byte-level split (ByteLevel with its regex, or "
             "Sequence[Split(Regex, Isolated), ByteLevel(use_regex false)]), the only ones supported", name);
    const smj_json *dec = smj_json_get(root, "decoder");
    if (!is_null_or_absent(dec) && !is_str(smj_json_get(dec, "type"), "ByteLevel"))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: the \"decoder\" is not ByteLevel", name);
    const smj_json *vocab = smj_json_get(model, "vocab"), *merges = smj_json_get(model, "merges");
    if (!vocab || vocab->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "%s: model.vocab is missing or not an object", name);
    if (!merges || merges->type != SMJ_JSON_ARRAY) FAIL(SMJ_ERR_FORMAT, "%s: model.merges is missing or not an array", name);
    const smj_json *added = smj_json_get(root, "added_tokens");
    if (added && added->type != SMJ_JSON_ARRAY) FAIL(SMJ_ERR_FORMAT, "%s: \"added_tokens\" is not an array", name);
    size_t M = merges->len, S = added ? added->len : 0;
    if (M > (size_t)SMJ_TOK_MAX_VOCAB) FAIL(SMJ_ERR_UNSUPPORTED, "%s: too many merges (%zu)", name, M);

    /* ids: 0..V-1, every one either a vocab token or an added token */
    int64_t max_id = -1;
    for (size_t i = 0; i < S; i++) {
        const smj_json *a = &added->kids[i], *id = smj_json_get(a, "id"), *content = smj_json_get(a, "content");
        if (!id || id->type != SMJ_JSON_NUMBER || !id->is_int || id->i64 < 0 || !content ||
            content->type != SMJ_JSON_STRING)
            FAIL(SMJ_ERR_FORMAT, "%s: added_tokens[%zu] lacks a non-negative integer \"id\" or a string \"content\"",
                 name, i);
        if (content->len < 1 || content->len > SMJ_TOK_MAX_SPECIAL_LEN || strlen(content->str) != content->len)
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: added token %lld has an empty, too long (> %d bytes) or NUL-containing text",
                 name, (long long)id->i64, SMJ_TOK_MAX_SPECIAL_LEN);
        if (id->i64 > max_id) max_id = id->i64;
    }
    for (size_t i = 0; i < vocab->len; i++) {
        const smj_json *e = &vocab->kids[i];
        if (e->type != SMJ_JSON_NUMBER || !e->is_int || e->i64 < 0)
            FAIL(SMJ_ERR_FORMAT, "%s: vocab entry \"%.100s\" does not map to a non-negative integer id", name, e->key);
        if (e->i64 > max_id) max_id = e->i64;
    }
    if (max_id >= SMJ_TOK_MAX_VOCAB) FAIL(SMJ_ERR_UNSUPPORTED, "%s: id %lld is beyond the 2^24 id limit", name, (long long)max_id);
    if (max_id + 1 > (int64_t)(vocab->len + S))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: the ids are not contiguous (largest %lld, but only %zu tokens); smedjan needs "
             "every id 0..%lld to be a token", name, (long long)max_id, vocab->len + S, (long long)max_id);
    size_t V = (size_t)(max_id + 1);
    if (V < 256) FAIL(SMJ_ERR_UNSUPPORTED, "%s: only %zu tokens; byte-level BPE needs the 256 bytes", name, V);
    kind = malloc(V);
    tok_str = calloc(V, sizeof *tok_str);
    tok_len = calloc(V, sizeof *tok_len);
    is_str_key = calloc(V, 1);
    v = malloc(sizeof *v * (vocab->len + 1));
    if (!kind || !tok_str || !tok_len || !is_str_key || !v) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
    memset(kind, 0xFF, V);
    size_t n_added = 0;
    for (size_t i = 0; i < S; i++) {
        const smj_json *a = &added->kids[i], *content = smj_json_get(a, "content"), *sp = smj_json_get(a, "special");
        int64_t id = smj_json_get(a, "id")->i64;
        if (kind[id] != 0xFF) FAIL(SMJ_ERR_FORMAT, "%s: id %lld is two added tokens", name, (long long)id);
        kind[id] = (sp && sp->type == SMJ_JSON_BOOL && sp->boolean) ? SMJ_TOK_KIND_SPECIAL : SMJ_TOK_KIND_ADDED;
        tok_str[id] = content->str;
        tok_len[id] = content->len;
        n_added++;
    }
    size_t nv = 0, total = 0;
    for (size_t i = 0; i < vocab->len; i++) {
        const smj_json *e = &vocab->kids[i];
        int64_t id = e->i64;
        if (kind[id] == SMJ_TOK_KIND_SPECIAL || kind[id] == SMJ_TOK_KIND_ADDED) {
            if (is_str_key[id] || tok_len[id] != e->key_len || memcmp(tok_str[id], e->key, e->key_len) != 0)
                FAIL(SMJ_ERR_FORMAT, "%s: vocab token \"%.100s\" has id %lld, which is the added token \"%.100s\"", name,
                     e->key, (long long)id, tok_str[id]);
            is_str_key[id] = 1; /* the vocab copy of an added token (GPT-2's <|endoftext|>) */
            continue;
        }
        if (kind[id] != 0xFF) FAIL(SMJ_ERR_FORMAT, "%s: id %lld appears twice in the vocab", name, (long long)id);
        kind[id] = SMJ_TOK_KIND_PLAIN;
        tok_str[id] = e->key;
        tok_len[id] = e->key_len;
        total += e->key_len;
        v[nv++] = (vent){e->key, e->key_len, id};
    }
    for (size_t id = 0; id < V; id++)
        if (kind[id] == 0xFF)
            FAIL(SMJ_ERR_UNSUPPORTED, "%s: no token has id %zu (smedjan needs ids 0..%zu without holes)", name, id, V - 1);
    qsort(v, nv, sizeof *v, vent_cmp);

    /* merges: (left, right) -> the vocab token spelled left ++ right */
    size_t maxkey = 0;
    for (size_t i = 0; i < nv; i++) if (v[i].n > maxkey) maxkey = v[i].n;
    buf = malloc(maxkey + 1);
    trip = malloc(sizeof *trip * (3 * M + 1));
    if (!buf || !trip) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
    for (size_t i = 0; i < M; i++) {
        const smj_json *e = &merges->kids[i];
        const char *l, *r;
        size_t ll, rl;
        if (e->type == SMJ_JSON_STRING) {
            const char *sp = memchr(e->str, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp - e->str) - 1))
                FAIL(SMJ_ERR_FORMAT, "%s: merge %zu \"%.100s\" is not two tokens separated by one space", name, i, e->str);
            l = e->str; ll = (size_t)(sp - e->str); r = sp + 1; rl = e->len - ll - 1;
        } else if (e->type == SMJ_JSON_ARRAY && e->len == 2 && e->kids[0].type == SMJ_JSON_STRING &&
                   e->kids[1].type == SMJ_JSON_STRING) {
            l = e->kids[0].str; ll = e->kids[0].len; r = e->kids[1].str; rl = e->kids[1].len;
        } else {
            FAIL(SMJ_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", name, i);
        }
        int64_t li = vocab_lookup(v, nv, l, ll), ri = vocab_lookup(v, nv, r, rl), res = -1;
        if (ll + rl <= maxkey) {
            memcpy(buf, l, ll);
            memcpy(buf + ll, r, rl);
            res = vocab_lookup(v, nv, (const char *)buf, ll + rl);
        }
        if (li < 0 || ri < 0 || res < 0)
            FAIL(SMJ_ERR_FORMAT, "%s: merge %zu (\"%.60s\", \"%.60s\") uses or makes a token that is not in the vocab",
                 name, i, l, r);
        trip[3 * i] = (int32_t)li;
        trip[3 * i + 1] = (int32_t)ri;
        trip[3 * i + 2] = (int32_t)res;
    }

    /* PAD, BOS, EOS */
    int32_t sid[3] = {-1, -1, -1};
    static const char *const KEYS[3] = {"pad_token", "bos_token", "eos_token"};
    for (int k = 0; k < 3; k++) {
        int present;
        const char *want = config_token(cfg, KEYS[k], &present);
        if (want) {
            for (size_t id = 0; id < V && sid[k] < 0; id++)
                if (kind[id] != SMJ_TOK_KIND_PLAIN && strcmp(tok_str[id], want) == 0) sid[k] = (int32_t)id;
            if (sid[k] < 0)
                FAIL(SMJ_ERR_FORMAT, "tokenizer_config.json: %s \"%.100s\" is not an added token of %s", KEYS[k], want, name);
        } else if (!present) {
            for (int f = 0; FALLBACK_NAMES[k][f] && sid[k] < 0; f++)
                for (size_t id = 0; id < V && sid[k] < 0; id++)
                    if (kind[id] != SMJ_TOK_KIND_PLAIN && strcmp(tok_str[id], FALLBACK_NAMES[k][f]) == 0)
                        sid[k] = (int32_t)id;
        }
    }

    /* Our own layout (what export writes) stays a version 1 tokenizer: bytes at
     * 0..255, merge i makes 256+i from earlier ids, >= 3 special tokens after
     * the merges, and PAD, BOS, EOS by position unless a config says otherwise. */
    inv_table inv;
    make_inv(&inv);
    int v1 = pattern == SMJ_TOK_PATTERN_GPT2 && !ignore_merges && !nfc && V == 256 + M + n_added && n_added >= 3 &&
             n_added <= SMJ_TOK_MAX_SPECIAL;
    for (size_t id = 0; id < V && v1; id++) {
        if (id < 256 + M) {
            if (kind[id] != SMJ_TOK_KIND_PLAIN) v1 = 0;
            else if (id < 256) {
                uint8_t c[8];
                v1 = tok_len[id] <= 4 && bytelevel_decode(&inv, tok_str[id], tok_len[id], c) == 1 && c[0] == id;
            }
        } else if (kind[id] != SMJ_TOK_KIND_SPECIAL) v1 = 0;
    }
    for (size_t i = 0; i < M && v1; i++)
        if (trip[3 * i + 2] != (int32_t)(256 + i) || trip[3 * i] >= (int32_t)(256 + i) || trip[3 * i + 1] >= (int32_t)(256 + i))
            v1 = 0;
    if (v1 && cfg)
        for (int k = 0; k < 3; k++)
            if (sid[k] != (int32_t)(256 + M) + k) v1 = 0;

    size_t sz;
    uint8_t *p;
    if (v1) {
        sz = 24 + 8 * M + 4;
        for (size_t i = 0; i < n_added; i++) sz += 6 + tok_len[256 + M + i];
        img = malloc(sz);
        if (!img) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
        memcpy(img, SMJ_TOK_MAGIC, 8);
        smj_wr_u32(img + 8, SMJ_TOK_VERSION);
        smj_wr_u32(img + 12, SMJ_TOK_PATTERN_GPT2);
        smj_wr_u32(img + 16, (uint32_t)M);
        smj_wr_u32(img + 20, (uint32_t)n_added);
        p = img + 24;
        for (size_t i = 0; i < M; i++, p += 8) {
            smj_wr_u32(p, (uint32_t)trip[3 * i]);
            smj_wr_u32(p + 4, (uint32_t)trip[3 * i + 1]);
        }
        for (size_t i = 0; i < n_added; i++) {
            size_t id = 256 + M + i;
            smj_wr_u32(p, (uint32_t)id);
            p[4] = (uint8_t)tok_len[id];
            p[5] = (uint8_t)(tok_len[id] >> 8);
            memcpy(p + 6, tok_str[id], tok_len[id]);
            p += 6 + tok_len[id];
        }
    } else {
        /* version 2 image (docs/FORMATS.md); plain token bytes are at most as
         * long as their byte-level strings */
        sz = 40 + 5 * V + 12 * M + 4 + total;
        for (size_t id = 0; id < V; id++) if (kind[id] != SMJ_TOK_KIND_PLAIN) sz += tok_len[id];
        img = malloc(sz);
        if (!img) FAIL(SMJ_ERR_NOMEM, "%s: out of memory", name);
        memcpy(img, SMJ_TOK_MAGIC, 8);
        smj_wr_u32(img + 8, SMJ_TOK_VERSION2);
        smj_wr_u32(img + 12, (uint32_t)pattern);
        smj_wr_u32(img + 16, (ignore_merges ? SMJ_TOK_FLAG_IGNORE_MERGES : 0) | (nfc ? SMJ_TOK_FLAG_NFC : 0));
        smj_wr_u32(img + 20, (uint32_t)V);
        smj_wr_u32(img + 24, (uint32_t)M);
        for (int k = 0; k < 3; k++) smj_wr_u32(img + 28 + 4 * k, sid[k] < 0 ? UINT32_MAX : (uint32_t)sid[k]);
        p = img + 40;
        for (size_t id = 0; id < V; id++) {
            size_t len = tok_len[id];
            if (kind[id] == SMJ_TOK_KIND_PLAIN) {
                long k = bytelevel_decode(&inv, tok_str[id], tok_len[id], p + 5);
                if (k <= 0)
                    FAIL(SMJ_ERR_UNSUPPORTED, "%s: vocab token %zu \"%.100s\" is not a byte-level string (byte-level BPE "
                         "only)", name, id, tok_str[id]);
                len = (size_t)k;
            } else {
                memcpy(p + 5, tok_str[id], len);
            }
            p[0] = kind[id];
            smj_wr_u32(p + 1, (uint32_t)len);
            p += 5 + len;
        }
        for (size_t i = 0; i < 3 * M; i++, p += 4) smj_wr_u32(p, (uint32_t)trip[i]);
        sz = (size_t)(p - img) + 4;
    }
    smj_wr_u32(p, smj_crc32(0, img, sz - 4));
    st = smj_tokenizer_from_bytes(ctx, img, sz, name, out);
done:
#undef FAIL
    free(img); free(kind); free(buf); free(trip); free(tok_str); free(tok_len); free(is_str_key);
    free(v);
    smj_json_free(doc);
    if (cdoc) smj_json_free(cdoc);
    return st;
}

smj_status smj_tokenizer_import_hf(smj_ctx *ctx, const char *path, smj_tokenizer **out) {
    *out = NULL;
    uint8_t *text, *cfg = NULL;
    size_t n, cn = 0;
    SMJ_TRY(smj_read_file(ctx, path, &text, &n));
    /* tokenizer_config.json next to it, when there is one */
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    char *cpath = malloc(dir + 32);
    smj_status st = SMJ_OK;
    if (!cpath) { free(text); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
    memcpy(cpath, path, dir);
    strcpy(cpath + dir, "tokenizer_config.json");
    FILE *f = fopen(cpath, "rb");
    if (f) {
        fclose(f);
        st = smj_read_file(ctx, cpath, &cfg, &cn);
    }
    free(cpath);
    if (st == SMJ_OK) st = smj_hf_tokenizer_parse_cfg(ctx, (const char *)text, n, (const char *)cfg, cn, path, out);
    free(text);
    free(cfg);
    return st;
}
