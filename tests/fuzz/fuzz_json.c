/* fuzz_json.c — arbitrary bytes into the strict JSON parser (src/hf/json.c).
 *
 * Any input must either parse, or fail with SMJ_ERR_FORMAT/SMJ_ERR_NOMEM, a
 * message naming the source and no document. A parsed document is written
 * back with the writer helpers and must parse again to the same tree
 * (types, numbers bit for bit, strings, member names and order). The input
 * is also tried with a small depth limit, and as a config.json and a
 * tokenizer.json, whose mappers must fail cleanly or succeed. A crash, a
 * sanitizer report or a broken invariant (abort) is a finding.
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/core/core.h"
#include "../../src/hf/hf.h"
#include "../../src/tokenizer/tokenizer.h"
#include "../../src/hf/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_value(smj_jbuf *b, const smj_json *v) {
    switch (v->type) {
    case SMJ_JSON_NULL: smj_jbuf_puts(b, "null"); break;
    case SMJ_JSON_BOOL: smj_jbuf_puts(b, v->boolean ? "true" : "false"); break;
    case SMJ_JSON_NUMBER:
        if (v->is_int) smj_jbuf_printf(b, "%lld", (long long)v->i64);
        else smj_jbuf_printf(b, "%.17g", v->num);
        break;
    case SMJ_JSON_STRING: smj_jbuf_str(b, v->str, v->len); break;
    case SMJ_JSON_ARRAY:
    case SMJ_JSON_OBJECT:
        smj_jbuf_puts(b, v->type == SMJ_JSON_ARRAY ? "[" : "{");
        for (size_t i = 0; i < v->len; i++) {
            if (i) smj_jbuf_puts(b, ",");
            if (v->type == SMJ_JSON_OBJECT) {
                smj_jbuf_str(b, v->kids[i].key, v->kids[i].key_len);
                smj_jbuf_puts(b, ":");
            }
            write_value(b, &v->kids[i]);
        }
        smj_jbuf_puts(b, v->type == SMJ_JSON_ARRAY ? "]" : "}");
        break;
    }
}

static int same(const smj_json *a, const smj_json *b) {
    if (a->type != b->type) return 0;
    if ((a->key == NULL) != (b->key == NULL)) return 0;
    if (a->key && (a->key_len != b->key_len || memcmp(a->key, b->key, a->key_len) != 0)) return 0;
    switch (a->type) {
    case SMJ_JSON_NULL: return 1;
    case SMJ_JSON_BOOL: return a->boolean == b->boolean;
    case SMJ_JSON_NUMBER:
        if (a->is_int != b->is_int || (a->is_int && a->i64 != b->i64)) return 0;
        return a->num == b->num || (a->num != a->num && b->num != b->num);
    case SMJ_JSON_STRING: return a->len == b->len && memcmp(a->str, b->str, a->len) == 0 && a->str[a->len] == 0;
    default:
        if (a->len != b->len) return 0;
        for (size_t i = 0; i < a->len; i++)
            if (!same(&a->kids[i], &b->kids[i])) return 0;
        return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    if (!ctx) return 0;
    smj_json_doc *doc = NULL;
    const smj_json *root = NULL;
    smj_status s = smj_json_parse(ctx, (const char *)data, size, "fuzz.json", 0, &doc, &root);
    if (s != SMJ_OK) {
        if (doc || root || (s != SMJ_ERR_FORMAT && s != SMJ_ERR_NOMEM) || !strstr(smj_ctx_error(ctx), "fuzz.json"))
            abort();
    } else {
        if (!doc || !root || smj_json_root(doc) != root) abort();
        smj_jbuf b = {0};
        write_value(&b, root);
        if (b.failed) abort();
        smj_json_doc *doc2 = NULL;
        const smj_json *root2 = NULL;
        if (smj_json_parse(ctx, b.p ? b.p : "", b.len, "again", 0, &doc2, &root2) != SMJ_OK) abort();
        if (!same(root, root2)) abort();
        smj_json_free(doc2);
        smj_jbuf_free(&b);
    }
    smj_json_free(doc);
    /* a tight depth limit must fail cleanly too */
    s = smj_json_parse(ctx, (const char *)data, size, "fuzz.json", 2, &doc, &root);
    if (s != SMJ_OK && doc) abort();
    smj_json_free(doc);
    /* the mappers on top */
    smj_model_config cfg;
    char notes[256];
    s = smj_hf_config_parse(ctx, (const char *)data, size, "config.json", 0, &cfg, NULL, notes, sizeof notes);
    if (s == SMJ_OK && smj_config_validate(ctx, &cfg) != SMJ_OK) abort();
    smj_tokenizer *tok = NULL;
    s = smj_hf_tokenizer_parse(ctx, (const char *)data, size, "tokenizer.json", &tok);
    if ((s == SMJ_OK) != (tok != NULL)) abort();
    if (tok) {
        smj_jbuf b = {0};
        if (smj_hf_tokenizer_json(ctx, tok, &b) == SMJ_OK) {
            smj_tokenizer *again = NULL;
            if (smj_hf_tokenizer_parse(ctx, b.p, b.len, "again", &again) != SMJ_OK) abort();
            if (smj_tokenizer_vocab_size(again) != smj_tokenizer_vocab_size(tok)) abort();
            smj_tokenizer_free(again);
        }
        smj_jbuf_free(&b);
        /* an imported tokenizer (version 1 or 2) saves and loads */
        uint8_t *img = NULL;
        size_t n = 0;
        smj_tokenizer *back = NULL;
        if (smj_tokenizer_to_bytes(ctx, tok, &img, &n) != SMJ_OK) abort();
        if (smj_tokenizer_from_bytes(ctx, img, n, "again.tok", &back) != SMJ_OK) abort();
        if (smj_tokenizer_vocab_size(back) != smj_tokenizer_vocab_size(tok)) abort();
        smj_tokenizer_free(back);
        smj_free(img);
    }
    smj_tokenizer_free(tok);
    smj_ctx_free(ctx);
    return 0;
}
