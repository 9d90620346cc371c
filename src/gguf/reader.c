/* reader.c — parsing and validating GGUF files (untrusted input).
 *
 * Layout (GGUF v2/v3, little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv x   { string key, u32 value_type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to general.alignment (default 32), then the tensor data; each
 *   offset is relative to the start of the data and a multiple of the alignment.
 *   string = u64 length + bytes (no NUL); array = u32 elem_type, u64 n, elements.
 *
 * Every count is checked against the bytes that remain before anything is
 * allocated for it, so a hostile header cannot make us allocate more than a
 * small multiple of the file size. All reads go through a cursor that fails
 * instead of running past the end. Rejected: version 1 (32-bit counts) and
 * anything newer than 3, unknown value types, nested arrays, bools other
 * than 0/1, empty or duplicate keys and tensor names, names of 64+ bytes,
 * 0 or more than 4 dims, a dim of 0 or a tensor over 2^62 values, unknown
 * tensor types, rows that are not whole blocks, misaligned, out-of-file or
 * overlapping tensor data, and general.alignment that is not a u32 power of
 * two.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include "gguf.h"
#include "../core/core.h"

typedef struct {
    char *key;
    uint32_t type, elem_type;
    uint64_t n;
    const uint8_t *val;   /* the value (scalar) or the first element (array) */
    uint64_t *str_off;    /* string arrays: offset of element j's length field from val */
} kv_t;

typedef struct {
    char *name;
    int ndim;
    int64_t ne[4];
    int type;
    int64_t numel;
    uint64_t rel_off, nbytes;
} tensor_t;

struct smj_gguf {
    const uint8_t *data;
    size_t len;
    const uint8_t *map;   /* mapped by smj_gguf_open (unmapped on free) */
    uint32_t version, alignment;
    uint64_t data_off;
    int n_kv, n_tensors;
    kv_t *kv;
    tensor_t *t;
};

typedef struct {
    const uint8_t *p, *end;
} cursor;

static int rd_bytes(cursor *c, size_t n, const uint8_t **out) {
    if ((size_t)(c->end - c->p) < n) return -1;
    *out = c->p;
    c->p += n;
    return 0;
}
static int rd_u32(cursor *c, uint32_t *v) {
    const uint8_t *p;
    if (rd_bytes(c, 4, &p)) return -1;
    *v = smj_rd_u32(p);
    return 0;
}
static int rd_u64(cursor *c, uint64_t *v) {
    const uint8_t *p;
    if (rd_bytes(c, 8, &p)) return -1;
    *v = smj_rd_u64(p);
    return 0;
}
static int rd_str(cursor *c, const uint8_t **s, uint64_t *len) {
    if (rd_u64(c, len) || *len > (uint64_t)(c->end - c->p)) return -1;
    *s = c->p;
    c->p += *len;
    return 0;
}

/* Bytes of a fixed-size value type; 0 for string/array/unknown. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case SMJ_GGUF_UINT8: case SMJ_GGUF_INT8: case SMJ_GGUF_BOOL: return 1;
    case SMJ_GGUF_UINT16: case SMJ_GGUF_INT16: return 2;
    case SMJ_GGUF_UINT32: case SMJ_GGUF_INT32: case SMJ_GGUF_FLOAT32: return 4;
    case SMJ_GGUF_UINT64: case SMJ_GGUF_INT64: case SMJ_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *type_str(uint32_t t) {
    static const char *const names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32",
                                        "float32", "bool", "string", "array", "uint64", "int64",
                                        "float64"};
    return t < sizeof names / sizeof *names ? names[t] : "unknown";
}

void smj_gguf_release(const smj_gguf *g, int i) {
    if (!g->map || i < 0 || i >= g->n_tensors) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(g->data + g->data_off + g->t[i].rel_off), b = a + g->t[i].nbytes;
    a = (a + pg - 1) & ~(pg - 1); /* whole pages inside the tensor only */
    b &= ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED); /* read-only private map: pages are dropped */
}

void smj_gguf_free(smj_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_off);
    }
    for (int i = 0; i < g->n_tensors; i++) free(g->t[i].name);
    free(g->kv);
    free(g->t);
    smj_unmap_file(g->map, g->len);
    free(g);
}

static char *dup_str(const uint8_t *s, uint64_t n) {
    char *r = malloc((size_t)n + 1);
    if (r) {
        memcpy(r, s, (size_t)n);
        r[n] = 0;
    }
    return r;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in names[0..n) (sorted in place), or NULL. */
static const char *find_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

typedef struct { uint64_t off, end; int i; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

#define BAD(...) do { st = smj_set_error(ctx, SMJ_ERR_FORMAT, __VA_ARGS__); goto fail; } while (0)
#define NOMEM() do { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", nm); goto fail; } while (0)

/* Prints a key for an error message: at most 64 bytes, non-printables as '?'. */
static const char *safe_key(const uint8_t *s, uint64_t n, char *buf) {
    size_t k = n < 64 ? (size_t)n : 64;
    for (size_t i = 0; i < k; i++) buf[i] = s[i] >= 32 && s[i] < 127 ? (char)s[i] : '?';
    buf[k] = 0;
    return buf;
}

smj_status smj_gguf_parse(smj_ctx *ctx, const uint8_t *data, size_t n, const char *nm,
                          smj_gguf **out) {
    *out = NULL;
    smj_status st = SMJ_OK;
    const char **names = NULL;
    span *spans = NULL;
    char kb[65];
    smj_gguf *g = calloc(1, sizeof *g);
    if (!g) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", nm);
    g->data = data;
    g->len = n;
    g->alignment = SMJ_GGUF_DEFAULT_ALIGNMENT;
    if (n < 4 || memcmp(data, SMJ_GGUF_MAGIC, 4) != 0) BAD("%s: not a GGUF file (bad magic)", nm);
    cursor c = {data + 4, data + n};
    uint64_t n_tensors, n_kv;
    if (rd_u32(&c, &g->version)) BAD("%s: truncated GGUF header (%zu bytes)", nm, n);
    if (g->version == 1) BAD("%s: GGUF version 1 is not supported (only versions 2 and 3)", nm);
    if (g->version < 2 || g->version > 3)
        BAD("%s: unsupported GGUF version %u (this build reads versions 2 and 3)", nm, g->version);
    if (rd_u64(&c, &n_tensors) || rd_u64(&c, &n_kv)) BAD("%s: truncated GGUF header (%zu bytes)", nm, n);
    /* A pair takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value)
     * bytes, a tensor info at least 8 + 1 + 4 + 8 + 4 + 8. */
    size_t rest = (size_t)(c.end - c.p);
    if (n_kv > rest / 14 || n_kv > (1u << 24))
        BAD("%s: metadata count %llu is impossible for a file of %zu bytes", nm, (unsigned long long)n_kv, n);
    if (n_tensors > rest / 33 || n_tensors > (1u << 24))
        BAD("%s: tensor count %llu is impossible for a file of %zu bytes", nm, (unsigned long long)n_tensors, n);
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->t = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->t);
    names = malloc(sizeof *names * (size_t)(n_kv > n_tensors ? n_kv + 1 : n_tensors + 1));
    if (!g->kv || !g->t || !names) NOMEM();

    /* ---- metadata */
    for (uint64_t i = 0; i < n_kv; i++) {
        kv_t *kv = &g->kv[i];
        const uint8_t *ks;
        uint64_t kl;
        if (rd_str(&c, &ks, &kl)) BAD("%s: metadata pair %llu: key truncated", nm, (unsigned long long)i);
        if (kl == 0) BAD("%s: metadata pair %llu has an empty key", nm, (unsigned long long)i);
        if (memchr(ks, 0, (size_t)kl)) BAD("%s: metadata key '%s' contains a NUL byte", nm, safe_key(ks, kl, kb));
        if (!(kv->key = dup_str(ks, kl))) NOMEM();
        g->n_kv = (int)i + 1;
        if (rd_u32(&c, &kv->type)) BAD("%s: metadata '%s': value type truncated", nm, kv->key);
        kv->n = 1;
        if (kv->type == SMJ_GGUF_ARRAY) {
            if (rd_u32(&c, &kv->elem_type) || rd_u64(&c, &kv->n))
                BAD("%s: metadata '%s': array header truncated", nm, kv->key);
            if (kv->elem_type == SMJ_GGUF_ARRAY) BAD("%s: metadata '%s': nested arrays are not supported", nm, kv->key);
        } else {
            kv->elem_type = kv->type;
        }
        uint32_t et = kv->elem_type;
        if (et > SMJ_GGUF_FLOAT64)
            BAD("%s: metadata '%s' has unknown value type %u", nm, kv->key, et);
        kv->val = c.p;
        rest = (size_t)(c.end - c.p);
        if (et == SMJ_GGUF_STRING) {
            if (kv->n > rest / 8)
                BAD("%s: metadata '%s': %llu strings cannot fit in the %zu bytes left", nm, kv->key,
                    (unsigned long long)kv->n, rest);
            if (kv->type == SMJ_GGUF_ARRAY && !(kv->str_off = malloc(sizeof(uint64_t) * (size_t)(kv->n ? kv->n : 1))))
                NOMEM();
            for (uint64_t j = 0; j < kv->n; j++) {
                const uint8_t *s;
                uint64_t sl;
                if (kv->str_off) kv->str_off[j] = (uint64_t)(c.p - kv->val);
                if (rd_str(&c, &s, &sl))
                    BAD("%s: metadata '%s': string %llu runs past the end of the file", nm, kv->key,
                        (unsigned long long)j);
            }
        } else {
            size_t es = scalar_size(et);
            if (kv->n > rest / es)
                BAD("%s: metadata '%s': %llu values of type %s run past the end of the file", nm,
                    kv->key, (unsigned long long)kv->n, type_str(et));
            if (et == SMJ_GGUF_BOOL)
                for (uint64_t j = 0; j < kv->n; j++)
                    if (c.p[j] > 1) BAD("%s: metadata '%s': bool value %u is not 0 or 1", nm, kv->key, c.p[j]);
            c.p += es * kv->n;
        }
    }
    for (int i = 0; i < g->n_kv; i++) names[i] = g->kv[i].key;
    const char *dup = find_duplicate(names, g->n_kv);
    if (dup) BAD("%s: metadata key '%s' appears twice", nm, dup);
    int ai = smj_gguf_find_kv(g, "general.alignment");
    if (ai >= 0) {
        const kv_t *kv = &g->kv[ai];
        if (kv->type != SMJ_GGUF_UINT32) BAD("%s: general.alignment must be a uint32, not %s", nm, type_str(kv->type));
        uint32_t a = smj_rd_u32(kv->val);
        if (a == 0 || (a & (a - 1)) || a > (1u << 20))
            BAD("%s: general.alignment %u is not a power of two (up to 2^20)", nm, a);
        g->alignment = a;
    }

    /* ---- tensor infos */
    for (uint64_t i = 0; i < n_tensors; i++) {
        tensor_t *t = &g->t[i];
        const uint8_t *s;
        uint64_t sl;
        if (rd_str(&c, &s, &sl)) BAD("%s: tensor info %llu: name truncated", nm, (unsigned long long)i);
        if (sl == 0) BAD("%s: tensor %llu has an empty name", nm, (unsigned long long)i);
        if (sl > SMJ_GGUF_MAX_NAME)
            BAD("%s: tensor name '%s...' is %llu bytes (at most %d)", nm, safe_key(s, sl, kb),
                (unsigned long long)sl, SMJ_GGUF_MAX_NAME);
        if (memchr(s, 0, (size_t)sl)) BAD("%s: tensor name '%s' contains a NUL byte", nm, safe_key(s, sl, kb));
        if (!(t->name = dup_str(s, sl))) NOMEM();
        g->n_tensors = (int)i + 1;
        uint32_t nd, type;
        if (rd_u32(&c, &nd)) BAD("%s: tensor '%s': info truncated", nm, t->name);
        if (nd < 1 || nd > SMJ_GGUF_MAX_DIMS) BAD("%s: tensor '%s' has %u dimensions (1 to 4 allowed)", nm, t->name, nd);
        t->ndim = (int)nd;
        uint64_t numel = 1;
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            if (rd_u64(&c, &v)) BAD("%s: tensor '%s': info truncated", nm, t->name);
            if (v == 0) BAD("%s: tensor '%s' has a zero dimension", nm, t->name);
            if (v > (1ull << 62) / numel) BAD("%s: tensor '%s' has an impossible shape (over 2^62 values)", nm, t->name);
            t->ne[d] = (int64_t)v;
            numel *= v;
        }
        t->numel = (int64_t)numel;
        if (rd_u32(&c, &type) || rd_u64(&c, &t->rel_off)) BAD("%s: tensor '%s': info truncated", nm, t->name);
        int bv, bb;
        if (!smj_ggml_type_size((int)type, &bv, &bb)) BAD("%s: tensor '%s' has unknown type %u", nm, t->name, type);
        t->type = (int)type;
        if (t->ne[0] % bv)
            BAD("%s: tensor '%s' (%s) has rows of %lld values, not a multiple of the block size %d", nm,
                t->name, smj_ggml_type_name(t->type), (long long)t->ne[0], bv);
        /* numel / bv * bb < 2^62 * 9 / 32 < 2^64 */
        t->nbytes = numel / (uint64_t)bv * (uint64_t)bb;
        if (t->rel_off % g->alignment)
            BAD("%s: tensor '%s' offset %llu is not a multiple of the alignment %u", nm, t->name,
                (unsigned long long)t->rel_off, g->alignment);
    }
    for (int i = 0; i < g->n_tensors; i++) names[i] = g->t[i].name;
    dup = find_duplicate(names, g->n_tensors);
    if (dup) BAD("%s: tensor name '%s' appears twice", nm, dup);

    /* ---- data section */
    uint64_t hdr = (uint64_t)(c.p - data);
    g->data_off = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors > 0 && g->data_off > n)
        BAD("%s: truncated: the tensor data would start at byte %llu of %zu", nm, (unsigned long long)g->data_off, n);
    uint64_t data_len = g->data_off <= n ? n - g->data_off : 0;
    if (g->n_tensors > 0) {
        spans = malloc(sizeof *spans * (size_t)g->n_tensors);
        if (!spans) NOMEM();
        for (int i = 0; i < g->n_tensors; i++) {
            const tensor_t *t = &g->t[i];
            /* like llama.cpp, the padding after each tensor must be there too */
            uint64_t padded = (t->nbytes + g->alignment - 1) / g->alignment * g->alignment;
            if (t->rel_off > data_len || padded > data_len - t->rel_off)
                BAD("%s: tensor '%s' (%llu bytes at data offset %llu) lies outside the file (truncated?)",
                    nm, t->name, (unsigned long long)t->nbytes, (unsigned long long)t->rel_off);
            spans[i] = (span){t->rel_off, t->rel_off + t->nbytes, i};
        }
        qsort(spans, (size_t)g->n_tensors, sizeof *spans, cmp_span);
        for (int i = 1; i < g->n_tensors; i++)
            if (spans[i].off < spans[i - 1].end)
                BAD("%s: tensors '%s' and '%s' overlap", nm, g->t[spans[i - 1].i].name, g->t[spans[i].i].name);
    }
    free(names);
    free(spans);
    *out = g;
    return SMJ_OK;
fail:
    free(names);
    free(spans);
    smj_gguf_free(g);
    return st;
}

smj_status smj_gguf_open(smj_ctx *ctx, const char *path, smj_gguf **out) {
    *out = NULL;
    const uint8_t *m;
    size_t len;
    SMJ_TRY(smj_map_file(ctx, path, &m, &len));
    smj_status st = len < 24 ? smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: not a GGUF file (%zu bytes, too short)", path, len)
                             : smj_gguf_parse(ctx, m, len, path, out);
    if (st != SMJ_OK) {
        smj_unmap_file(m, len);
        return st;
    }
    (*out)->map = m;
    return SMJ_OK;
}

uint32_t smj_gguf_version(const smj_gguf *g) { return g->version; }
int smj_gguf_num_kv(const smj_gguf *g) { return g->n_kv; }
int smj_gguf_num_tensors(const smj_gguf *g) { return g->n_tensors; }

int smj_gguf_find_kv(const smj_gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return i;
    return -1;
}

smj_status smj_gguf_kv(const smj_gguf *g, int i, smj_gguf_kv_info *kv) {
    if (i < 0 || i >= g->n_kv) return SMJ_ERR_INVALID;
    kv->key = g->kv[i].key;
    kv->type = (smj_gguf_type)g->kv[i].type;
    kv->elem_type = (smj_gguf_type)g->kv[i].elem_type;
    kv->n = g->kv[i].n;
    return SMJ_OK;
}

/* Pointer to fixed-size element j of pair i, or NULL. */
static const uint8_t *elem(const smj_gguf *g, int i, uint64_t j) {
    if (i < 0 || i >= g->n_kv || j >= g->kv[i].n) return NULL;
    size_t es = scalar_size(g->kv[i].elem_type);
    return es ? g->kv[i].val + es * j : NULL;
}

int smj_gguf_kv_int(const smj_gguf *g, int i, uint64_t j, int64_t *v) {
    const uint8_t *p = elem(g, i, j);
    if (!p) return -1;
    switch (g->kv[i].elem_type) {
    case SMJ_GGUF_UINT8: case SMJ_GGUF_BOOL: *v = p[0]; return 0;
    case SMJ_GGUF_INT8: *v = (int8_t)p[0]; return 0;
    case SMJ_GGUF_UINT16: *v = (uint16_t)(p[0] | p[1] << 8); return 0;
    case SMJ_GGUF_INT16: *v = (int16_t)(uint16_t)(p[0] | p[1] << 8); return 0;
    case SMJ_GGUF_UINT32: *v = smj_rd_u32(p); return 0;
    case SMJ_GGUF_INT32: *v = (int32_t)smj_rd_u32(p); return 0;
    case SMJ_GGUF_UINT64: {
        uint64_t u = smj_rd_u64(p);
        if (u > INT64_MAX) return -1;
        *v = (int64_t)u;
        return 0;
    }
    case SMJ_GGUF_INT64: *v = (int64_t)smj_rd_u64(p); return 0;
    default: return -1;
    }
}

int smj_gguf_kv_float(const smj_gguf *g, int i, uint64_t j, double *v) {
    const uint8_t *p = elem(g, i, j);
    if (!p) return -1;
    if (g->kv[i].elem_type == SMJ_GGUF_FLOAT32) {
        uint32_t u = smj_rd_u32(p);
        float f;
        memcpy(&f, &u, 4);
        *v = f;
        return 0;
    }
    if (g->kv[i].elem_type == SMJ_GGUF_FLOAT64) {
        uint64_t u = smj_rd_u64(p);
        memcpy(v, &u, 8);
        return 0;
    }
    if (g->kv[i].elem_type == SMJ_GGUF_UINT64) {
        *v = (double)smj_rd_u64(p);
        return 0;
    }
    int64_t x;
    if (smj_gguf_kv_int(g, i, j, &x)) return -1;
    *v = (double)x;
    return 0;
}

const char *smj_gguf_kv_str(const smj_gguf *g, int i, uint64_t j, size_t *len) {
    if (i < 0 || i >= g->n_kv || j >= g->kv[i].n || g->kv[i].elem_type != SMJ_GGUF_STRING) return NULL;
    const uint8_t *p = g->kv[i].val + (g->kv[i].str_off ? g->kv[i].str_off[j] : 0);
    if (len) *len = (size_t)smj_rd_u64(p);
    return (const char *)p + 8;
}

int smj_gguf_find_tensor(const smj_gguf *g, const char *name) {
    for (int i = 0; i < g->n_tensors; i++)
        if (strcmp(g->t[i].name, name) == 0) return i;
    return -1;
}

smj_status smj_gguf_tensor(const smj_gguf *g, int i, smj_gguf_tensor_info *t) {
    if (i < 0 || i >= g->n_tensors) return SMJ_ERR_INVALID;
    const tensor_t *s = &g->t[i];
    t->name = s->name;
    t->ndim = s->ndim;
    memcpy(t->ne, s->ne, sizeof t->ne);
    t->type = s->type;
    t->type_name = smj_ggml_type_name(s->type);
    t->numel = s->numel;
    t->offset = g->data_off + s->rel_off;
    t->nbytes = s->nbytes;
    return SMJ_OK;
}

const void *smj_gguf_tensor_data(const smj_gguf *g, int i) {
    if (i < 0 || i >= g->n_tensors) return NULL;
    return g->data + g->data_off + g->t[i].rel_off;
}

smj_status smj_gguf_tensor_to_f32(smj_ctx *ctx, const smj_gguf *g, int i, float *out) {
    if (i < 0 || i >= g->n_tensors) SMJ_FAIL(ctx, SMJ_ERR_INVALID, "GGUF tensor index %d out of range", i);
    const tensor_t *t = &g->t[i];
    if (smj_dequantize(t->type, smj_gguf_tensor_data(g, i), out, t->numel) != 0)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "GGUF tensor '%s' has type %s, which this build cannot dequantize (f32, f16, bf16, q8_0, q4_0)",
                 t->name, smj_ggml_type_name(t->type));
    return SMJ_OK;
}

/* ---- quant names (shared with the writer) */

static const char *const quant_names[] = {"f32", "f16", "q8_0", "q4_0"};

const char *smj_quant_name(smj_quant q) {
    return (unsigned)q < sizeof quant_names / sizeof *quant_names ? quant_names[q] : "unknown";
}

smj_status smj_quant_parse(smj_ctx *ctx, const char *name, smj_quant *out) {
    for (int i = 0; i < 4; i++)
        if (name && strcasecmp(name, quant_names[i]) == 0) {
            *out = (smj_quant)i;
            return SMJ_OK;
        }
    SMJ_FAIL(ctx, SMJ_ERR_INVALID, "unknown quantization '%s' (expected f32, f16, q8_0 or q4_0)",
             name ? name : "(null)");
}
