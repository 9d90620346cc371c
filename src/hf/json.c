/* json.c — strict RFC 8259 parser into an arena DOM, and the JSON writer
 * buffer. See json.h for the contract. */
#include "json.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/core.h"

#define MAX_NUMBER_CHARS 400

/* ------------------------------------------------------------------ arena */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct smj_json_doc {
    arena_block *blocks;
    smj_json *root;
};

static void *arena_alloc(smj_json_doc *d, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    arena_block *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = d->blocks;
        d->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void smj_json_free(smj_json_doc *doc) {
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *nx = b->next;
        free(b);
        b = nx;
    }
    free(doc);
}

const smj_json *smj_json_root(const smj_json_doc *doc) { return doc ? doc->root : NULL; }

/* ----------------------------------------------------------------- parser */

typedef struct {
    smj_ctx *ctx;
    const char *s;
    size_t n, i;
    const char *name;
    int max_depth;
    smj_json_doc *doc;
    smj_json *stack; /* children of the open containers */
    size_t sp, scap;
    smj_status st;
} parser;

void smj_json_line_col(const char *text, size_t n, size_t pos, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t k = 0; k < pos && k < n; k++) {
        if (text[k] == '\n') { l++; c = 1; }
        else c++;
    }
    *line = l;
    *col = c;
}

__attribute__((format(printf, 3, 4)))
static int perr(parser *p, size_t at, const char *fmt, ...) {
    if (p->st != SMJ_OK) return -1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    smj_json_line_col(p->s, p->n, at, &line, &col);
    p->st = smj_set_error(p->ctx, SMJ_ERR_FORMAT, "%s: invalid JSON at line %d, column %d (byte %zu): %s",
                          p->name, line, col, at, msg);
    return -1;
}

static int nomem(parser *p) {
    if (p->st == SMJ_OK) p->st = smj_set_error(p->ctx, SMJ_ERR_NOMEM, "%s: out of memory parsing JSON", p->name);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static const char *describe(parser *p, size_t at, char *buf, size_t bn) {
    if (at >= p->n) return "end of input";
    unsigned char c = (unsigned char)p->s[at];
    if (c >= 0x21 && c < 0x7f) snprintf(buf, bn, "'%c'", c);
    else snprintf(buf, bn, "byte 0x%02x", c);
    return buf;
}

static int push(parser *p, const smj_json *v) {
    if (p->sp == p->scap) {
        size_t nc = p->scap ? p->scap * 2 : 64;
        smj_json *ns = realloc(p->stack, nc * sizeof *ns);
        if (!ns) return nomem(p);
        p->stack = ns;
        p->scap = nc;
    }
    p->stack[p->sp++] = *v;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *p, size_t at, uint32_t *v) {
    if (p->n - at < 4) return perr(p, at, "truncated \\u escape");
    uint32_t x = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[at + (size_t)k]);
        if (h < 0) return perr(p, at + (size_t)k, "expected a hex digit in a \\u escape");
        x = x << 4 | (uint32_t)h;
    }
    *v = x;
    return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when invalid. */
static int utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return len;
}

int smj_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int len = utf8_len((const unsigned char *)s + i, n - i);
        if (!len) return 0;
        i += (size_t)len;
    }
    return 1;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string at p->i (the opening quote). Decoded into the arena. */
static int parse_string(parser *p, const char **out, size_t *out_len) {
    size_t start = ++p->i, k = start;
    /* Find the closing quote (escapes skipped) to size the copy. */
    for (;;) {
        if (k >= p->n) return perr(p, start - 1, "unterminated string");
        char c = p->s[k];
        if (c == '"') break;
        if (c == '\\') k++;
        k++;
    }
    char *o = arena_alloc(p->doc, k - start + 1);
    if (!o) return nomem(p);
    size_t olen = 0, i = start;
    while (i < k) {
        unsigned char c = (unsigned char)p->s[i];
        if (c == '\\') {
            char e = p->s[i + 1];
            switch (e) {
            case '"': o[olen++] = '"'; i += 2; break;
            case '\\': o[olen++] = '\\'; i += 2; break;
            case '/': o[olen++] = '/'; i += 2; break;
            case 'b': o[olen++] = '\b'; i += 2; break;
            case 'f': o[olen++] = '\f'; i += 2; break;
            case 'n': o[olen++] = '\n'; i += 2; break;
            case 'r': o[olen++] = '\r'; i += 2; break;
            case 't': o[olen++] = '\t'; i += 2; break;
            case 'u': {
                uint32_t cp;
                if (read_hex4(p, i + 2, &cp)) return -1;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return perr(p, i, "lone low surrogate \\u%04X", (unsigned)cp);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (i + 12 > k || p->s[i + 6] != '\\' || p->s[i + 7] != 'u')
                        return perr(p, i, "high surrogate \\u%04X not followed by a low surrogate",
                                    (unsigned)cp);
                    if (read_hex4(p, i + 8, &lo)) return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return perr(p, i + 6, "\\u%04X after high surrogate \\u%04X is not a low surrogate",
                                    (unsigned)lo, (unsigned)cp);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                olen += put_utf8(o + olen, cp);
                i += 6;
                break;
            }
            default:
                return perr(p, i, "invalid escape '\\%c'", e >= 0x21 && e < 0x7f ? e : '?');
            }
        } else if (c < 0x20) {
            return perr(p, i, "raw control character 0x%02x in a string (must be escaped)", c);
        } else {
            int len = utf8_len((const unsigned char *)p->s + i, k - i);
            if (!len) return perr(p, i, "invalid UTF-8 in a string");
            memcpy(o + olen, p->s + i, (size_t)len);
            olen += (size_t)len;
            i += (size_t)len;
        }
    }
    o[olen] = 0;
    p->i = k + 1;
    *out = o;
    *out_len = olen;
    return 0;
}

static int parse_number(parser *p, smj_json *v) {
    size_t st = p->i, i = p->i;
    int integral = 1;
    if (i < p->n && p->s[i] == '-') i++;
    if (i >= p->n) return perr(p, i, "expected a digit");
    if (p->s[i] == '0') {
        i++;
        if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') return perr(p, st, "leading zero in a number");
    } else if (p->s[i] >= '1' && p->s[i] <= '9') {
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    } else {
        return perr(p, i, "expected a digit");
    }
    if (i < p->n && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->n || p->s[i] < '0' || p->s[i] > '9') return perr(p, i, "expected a digit after '.'");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->n || p->s[i] < '0' || p->s[i] > '9') return perr(p, i, "expected a digit in the exponent");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    size_t len = i - st;
    if (len > MAX_NUMBER_CHARS) return perr(p, st, "number longer than %d characters", MAX_NUMBER_CHARS);
    char buf[MAX_NUMBER_CHARS + 1];
    memcpy(buf, p->s + st, len);
    buf[len] = 0;
    errno = 0;
    double d = strtod(buf, NULL);
    if (isinf(d)) return perr(p, st, "number %s is out of range", buf);
    v->type = SMJ_JSON_NUMBER;
    v->num = d;
    v->is_int = 0;
    if (integral) {
        /* exact int64 from the digits when it fits */
        int neg = buf[0] == '-';
        uint64_t acc = 0, lim = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
        int ok = 1;
        for (const char *c = buf + neg; *c; c++) {
            uint64_t dig = (uint64_t)(*c - '0');
            if (acc > (lim - dig) / 10) { ok = 0; break; }
            acc = acc * 10 + dig;
        }
        if (ok) {
            v->is_int = 1;
            v->i64 = neg ? (acc == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
        }
    } else if (d == floor(d) && d > -9223372036854775808.0 && d < 9223372036854775808.0) {
        v->is_int = 1;
        v->i64 = (int64_t)d;
    }
    p->i = i;
    return 0;
}

typedef struct { const char *k; size_t n; size_t pos; } keyref;

static int keyref_cmp(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, m);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static int check_unique(parser *p, const smj_json *kids, size_t n) {
    if (n < 2) return 0;
    if (n <= 8) {
        for (size_t a = 1; a < n; a++)
            for (size_t b = 0; b < a; b++)
                if (kids[a].key_len == kids[b].key_len && memcmp(kids[a].key, kids[b].key, kids[a].key_len) == 0)
                    return perr(p, kids[a].pos, "duplicate member name \"%.200s\"", kids[a].key);
        return 0;
    }
    keyref *r = malloc(n * sizeof *r);
    if (!r) return nomem(p);
    for (size_t i = 0; i < n; i++) r[i] = (keyref){kids[i].key, kids[i].key_len, kids[i].pos};
    qsort(r, n, sizeof *r, keyref_cmp);
    int rc = 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (keyref_cmp(&r[i - 1], &r[i]) == 0) {
            size_t at = r[i].pos > r[i - 1].pos ? r[i].pos : r[i - 1].pos;
            rc = perr(p, at, "duplicate member name \"%.200s\"", r[i].k);
        }
    free(r);
    return rc;
}

static int parse_value(parser *p, smj_json *v, int depth);

/* Moves the children pushed since `base` into the arena as v's kids. */
static int close_container(parser *p, smj_json *v, size_t base) {
    size_t n = p->sp - base;
    v->len = n;
    v->kids = NULL;
    if (n) {
        if (n > SIZE_MAX / sizeof(smj_json)) return nomem(p);
        v->kids = arena_alloc(p->doc, n * sizeof(smj_json));
        if (!v->kids) return nomem(p);
        memcpy(v->kids, p->stack + base, n * sizeof(smj_json));
    }
    p->sp = base;
    return 0;
}

static int parse_container(parser *p, smj_json *v, int depth, int is_obj) {
    char close = is_obj ? '}' : ']';
    char tmp[32];
    if (depth >= p->max_depth) return perr(p, p->i, "nesting deeper than %d levels", p->max_depth);
    v->type = is_obj ? SMJ_JSON_OBJECT : SMJ_JSON_ARRAY;
    size_t base = p->sp;
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return close_container(p, v, base);
    }
    for (;;) {
        smj_json kid;
        memset(&kid, 0, sizeof kid);
        skip_ws(p);
        if (is_obj) {
            if (p->i >= p->n || p->s[p->i] != '"')
                return perr(p, p->i, "expected a member name (a string), got %s", describe(p, p->i, tmp, sizeof tmp));
            size_t kpos = p->i;
            if (parse_string(p, &kid.key, &kid.key_len)) return -1;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':')
                return perr(p, p->i, "expected ':' after a member name, got %s", describe(p, p->i, tmp, sizeof tmp));
            p->i++;
            skip_ws(p);
            const char *key = kid.key;
            size_t key_len = kid.key_len;
            if (parse_value(p, &kid, depth + 1)) return -1;
            kid.key = key;
            kid.key_len = key_len;
            kid.pos = kpos;
        } else {
            if (parse_value(p, &kid, depth + 1)) return -1;
        }
        if (push(p, &kid)) return -1;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        return perr(p, p->i, "expected ',' or '%c', got %s", close, describe(p, p->i, tmp, sizeof tmp));
    }
    if (is_obj && check_unique(p, p->stack + base, p->sp - base)) return -1;
    return close_container(p, v, base);
}

static int parse_value(parser *p, smj_json *v, int depth) {
    char tmp[32];
    skip_ws(p);
    v->pos = p->i;
    if (p->i >= p->n) return perr(p, p->i, "expected a value, got end of input");
    char c = p->s[p->i];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"': v->type = SMJ_JSON_STRING; return parse_string(p, &v->str, &v->len);
    case 't': case 'f': case 'n': {
        const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
        size_t wl = strlen(word);
        if (p->n - p->i < wl || memcmp(p->s + p->i, word, wl) != 0)
            return perr(p, p->i, "invalid literal (expected %s)", word);
        p->i += wl;
        v->type = c == 'n' ? SMJ_JSON_NULL : SMJ_JSON_BOOL;
        v->boolean = c == 't';
        return 0;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
        return perr(p, p->i, "expected a value, got %s", describe(p, p->i, tmp, sizeof tmp));
    }
}

smj_status smj_json_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, int max_depth,
                          smj_json_doc **doc_out, const smj_json **root) {
    *doc_out = NULL;
    if (root) *root = NULL;
    parser p = {.ctx = ctx, .s = text, .n = n, .name = name ? name : "<json>",
                .max_depth = max_depth > 0 ? max_depth : SMJ_JSON_DEFAULT_DEPTH};
    p.doc = calloc(1, sizeof *p.doc);
    if (!p.doc) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory parsing JSON", p.name);
    if (n >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) {
        perr(&p, 0, "byte order mark (not allowed in JSON)");
    } else {
        smj_json *r = arena_alloc(p.doc, sizeof *r);
        if (!r) {
            nomem(&p);
        } else {
            memset(r, 0, sizeof *r);
            if (parse_value(&p, r, 0) == 0) {
                skip_ws(&p);
                char tmp[32];
                if (p.i != n) perr(&p, p.i, "unexpected %s after the JSON value", describe(&p, p.i, tmp, sizeof tmp));
            }
            p.doc->root = r;
        }
    }
    free(p.stack);
    if (p.st != SMJ_OK) {
        smj_json_free(p.doc);
        return p.st;
    }
    *doc_out = p.doc;
    if (root) *root = p.doc->root;
    return SMJ_OK;
}

const smj_json *smj_json_get(const smj_json *obj, const char *key) {
    if (!obj || obj->type != SMJ_JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < obj->len; i++)
        if (obj->kids[i].key_len == kl && memcmp(obj->kids[i].key, key, kl) == 0) return &obj->kids[i];
    return NULL;
}

const char *smj_json_type_name(smj_json_type t) {
    switch (t) {
    case SMJ_JSON_NULL: return "null";
    case SMJ_JSON_BOOL: return "a boolean";
    case SMJ_JSON_NUMBER: return "a number";
    case SMJ_JSON_STRING: return "a string";
    case SMJ_JSON_ARRAY: return "an array";
    case SMJ_JSON_OBJECT: return "an object";
    }
    return "?";
}

/* ----------------------------------------------------------------- writer */

void smj_jbuf_free(smj_jbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void smj_jbuf_put(smj_jbuf *b, const void *s, size_t n) {
    if (b->failed) return;
    if (b->cap - b->len < n + 1) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc - b->len < n + 1) {
            if (nc > SIZE_MAX / 2) { b->failed = 1; return; }
            nc *= 2;
        }
        char *np = realloc(b->p, nc);
        if (!np) { b->failed = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void smj_jbuf_puts(smj_jbuf *b, const char *s) { smj_jbuf_put(b, s, strlen(s)); }

void smj_jbuf_printf(smj_jbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof tmp) { smj_jbuf_put(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->failed = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    smj_jbuf_put(b, big, (size_t)n);
    free(big);
}

void smj_jbuf_str(smj_jbuf *b, const char *s, size_t n) {
    smj_jbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        smj_jbuf_put(b, s + run, i - run);
        run = i + 1;
        char e[8];
        switch (c) {
        case '"': smj_jbuf_put(b, "\\\"", 2); break;
        case '\\': smj_jbuf_put(b, "\\\\", 2); break;
        case '\n': smj_jbuf_put(b, "\\n", 2); break;
        case '\r': smj_jbuf_put(b, "\\r", 2); break;
        case '\t': smj_jbuf_put(b, "\\t", 2); break;
        default: snprintf(e, sizeof e, "\\u%04x", c); smj_jbuf_put(b, e, 6); break;
        }
    }
    smj_jbuf_put(b, s + run, n - run);
    smj_jbuf_put(b, "\"", 1);
}

void smj_jbuf_float(smj_jbuf *b, float f) {
    char tmp[64];
    if (f == truncf(f) && fabsf(f) < 1e15f) {
        snprintf(tmp, sizeof tmp, "%.1f", (double)f); /* integers in plain notation: 10000.0 */
    } else {
        for (int prec = 1; prec <= 9; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, (double)f);
            if (strtof(tmp, NULL) == f) break;
        }
    }
    /* JSON has no "inf"/"nan"; callers pass finite values. Make integers
     * read as floats by Python's json (1 -> 1.0) for clarity. */
    if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0");
    smj_jbuf_puts(b, tmp);
}
