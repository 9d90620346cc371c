/* json.h — a small strict JSON (RFC 8259) parser with a read-only DOM, and a
 * growable text buffer for writing JSON.
 *
 * Parsing (smj_json_parse) accepts exactly RFC 8259 text: one value with
 * optional surrounding whitespace (space, tab, LF, CR), no comments, no
 * trailing commas, no BOM, no NaN/Infinity, no leading zeros or '+', strings
 * of valid UTF-8 without raw control characters, \u escapes (surrogate pairs
 * combined; a lone surrogate is an error) decoded to UTF-8, and — stricter
 * than the RFC's SHOULD — unique member names inside each object. Nesting is
 * limited (depth), and so is the length of one number's text. Every error
 * names the source, the line, column and byte offset and what was expected.
 *
 * The whole DOM (nodes and decoded strings) lives in one arena owned by the
 * smj_json_doc; smj_json_free releases it at once. Children of an array or
 * object are contiguous (node->kids[0..n)), members in file order, each with
 * its name in key/key_len. Strings are NUL-terminated copies (they may also
 * contain NULs from \u0000: use len).
 */
#ifndef SMJ_HF_JSON_H
#define SMJ_HF_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "smedjan.h"

typedef enum {
    SMJ_JSON_NULL = 0, SMJ_JSON_BOOL, SMJ_JSON_NUMBER, SMJ_JSON_STRING, SMJ_JSON_ARRAY, SMJ_JSON_OBJECT
} smj_json_type;

typedef struct smj_json smj_json;
struct smj_json {
    smj_json_type type;
    int boolean;         /* BOOL: 0 or 1 */
    int is_int;          /* NUMBER: integral and within int64 (i64 exact) */
    double num;          /* NUMBER: the value (nearest double) */
    int64_t i64;         /* NUMBER with is_int */
    const char *str;     /* STRING: UTF-8, NUL-terminated */
    size_t len;          /* STRING: bytes; ARRAY/OBJECT: number of children */
    smj_json *kids;      /* ARRAY/OBJECT: children */
    const char *key;     /* member of an OBJECT: its name (NUL-terminated), else NULL */
    size_t key_len;
    size_t pos;          /* byte offset of the value in the source */
};

typedef struct smj_json_doc smj_json_doc;

#define SMJ_JSON_DEFAULT_DEPTH 64

/* Parses text[0..n). name names the source in messages. max_depth bounds
 * nesting (0 = SMJ_JSON_DEFAULT_DEPTH). On success *doc owns the DOM and
 * *root (may be NULL) points at its root value. On failure returns
 * SMJ_ERR_FORMAT (or SMJ_ERR_NOMEM) with a message and *doc = NULL. Never
 * reads outside text[0..n). */
smj_status smj_json_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, int max_depth,
                          smj_json_doc **doc, const smj_json **root);
const smj_json *smj_json_root(const smj_json_doc *doc);
void smj_json_free(smj_json_doc *doc);

/* Member `key` of an object (NULL when absent or obj is not an object). */
const smj_json *smj_json_get(const smj_json *obj, const char *key);
const char *smj_json_type_name(smj_json_type t);
/* Line and column (1-based) of byte offset pos in text[0..n). */
void smj_json_line_col(const char *text, size_t n, size_t pos, int *line, int *col);

/* 1 when s[0..n) is valid UTF-8 (shortest form, no surrogates, <= U+10FFFF). */
int smj_utf8_valid(const char *s, size_t n);

/* ---- writing: a growable byte buffer with JSON helpers. Allocation
 * failures are sticky (failed = 1, further appends ignored). */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} smj_jbuf;

void smj_jbuf_free(smj_jbuf *b);
void smj_jbuf_put(smj_jbuf *b, const void *s, size_t n);
void smj_jbuf_puts(smj_jbuf *b, const char *s);
void smj_jbuf_printf(smj_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (with quotes) of s[0..n): ", \\ and control
 * characters escaped, other bytes (UTF-8) copied. */
void smj_jbuf_str(smj_jbuf *b, const char *s, size_t n);
/* The shortest decimal that reads back (as float) to exactly f; finite only. */
void smj_jbuf_float(smj_jbuf *b, float f);

#endif
