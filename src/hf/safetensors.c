/* safetensors.c — the safetensors reader (memory-mapped, fully validated),
 * fp32 conversions, sharded checkpoints and the writer. See safetensors.h. */
#include "safetensors.h"
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../core/core.h"
#include "json.h"

static const struct { const char *name; int size; } DTYPES[SMJ_ST_NDTYPES] = {
    [SMJ_ST_BOOL] = {"BOOL", 1}, [SMJ_ST_U8] = {"U8", 1}, [SMJ_ST_I8] = {"I8", 1},
    [SMJ_ST_F8_E5M2] = {"F8_E5M2", 1}, [SMJ_ST_F8_E4M3] = {"F8_E4M3", 1},
    [SMJ_ST_I16] = {"I16", 2}, [SMJ_ST_U16] = {"U16", 2}, [SMJ_ST_F16] = {"F16", 2},
    [SMJ_ST_BF16] = {"BF16", 2}, [SMJ_ST_I32] = {"I32", 4}, [SMJ_ST_U32] = {"U32", 4},
    [SMJ_ST_F32] = {"F32", 4}, [SMJ_ST_F64] = {"F64", 8}, [SMJ_ST_I64] = {"I64", 8},
    [SMJ_ST_U64] = {"U64", 8},
};

const char *smj_st_dtype_name(smj_st_dtype d) { return (unsigned)d < SMJ_ST_NDTYPES ? DTYPES[d].name : "?"; }
int smj_st_dtype_size(smj_st_dtype d) { return (unsigned)d < SMJ_ST_NDTYPES ? DTYPES[d].size : 0; }

/* ------------------------------------------------------------ conversions */

float smj_bf16_to_f32(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

float smj_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, b;
    if (e == 0) {
        float f = ldexpf((float)m, -24); /* zero or subnormal: exact */
        return sign ? -f : f;
    }
    if (e == 31) b = sign | 0x7F800000u | m << 13; /* inf, nan (payload kept) */
    else b = sign | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

uint16_t smj_f32_to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x0040); /* quiet NaN */
    b += 0x7FFFu + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

/* ------------------------------------------------------------------ reader */

struct smj_st_file {
    char *path;
    const uint8_t *base;
    size_t size;
    int mapped;
    const uint8_t *data;
    uint64_t data_len;
    smj_json_doc *doc;
    int n;
    smj_st_tensor *t;
    int *by_name; /* tensor indices sorted by name */
    int n_meta;
    const char **mk, **mv;
};

/* Index sorts (merge sort: no global state, stable). */
typedef int (*idx_cmp)(const smj_st_tensor *t, int a, int b);
static int idx_cmp_offset(const smj_st_tensor *t, int a, int b) {
    if (t[a].begin != t[b].begin) return t[a].begin < t[b].begin ? -1 : 1;
    if (t[a].end != t[b].end) return t[a].end < t[b].end ? -1 : 1;
    return 0;
}
static int idx_cmp_name(const smj_st_tensor *t, int a, int b) { return strcmp(t[a].name, t[b].name); }

static void merge_sort(int *v, int *tmp, int n, const smj_st_tensor *t, idx_cmp cmp) {
    if (n < 2) return;
    int h = n / 2;
    merge_sort(v, tmp, h, t, cmp);
    merge_sort(v + h, tmp, n - h, t, cmp);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp(t, v[j], v[i]) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, sizeof(int) * (size_t)n);
}

void smj_st_close(smj_st_file *f) {
    if (!f) return;
    if (f->mapped) smj_unmap_file(f->base, f->size);
    smj_json_free(f->doc);
    free(f->t);
    free(f->by_name);
    free(f->mk);
    free(f->mv);
    free(f->path);
    free(f);
}

static smj_status parse_header(smj_ctx *ctx, smj_st_file *f) {
    const char *nm = f->path;
    if (f->size < 8)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: too short to be a safetensors file (%zu bytes)", nm, f->size);
    uint64_t hn = smj_rd_u64(f->base);
    if (hn > SMJ_ST_MAX_HEADER)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes", nm,
                 (unsigned long long)hn, (unsigned long long)SMJ_ST_MAX_HEADER);
    if (hn > f->size - 8)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: header length %llu exceeds the file (%zu bytes): truncated?", nm,
                 (unsigned long long)hn, f->size);
    if (hn < 2 || f->base[8] != '{')
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: the header is not a JSON object (must start with '{')", nm);
    f->data = f->base + 8 + hn;
    f->data_len = f->size - 8 - hn;
    char hname[4200];
    snprintf(hname, sizeof hname, "%s: header", nm);
    const smj_json *root;
    SMJ_TRY(smj_json_parse(ctx, (const char *)f->base + 8, (size_t)hn, hname, 16, &f->doc, &root));
    if (root->type != SMJ_JSON_OBJECT)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: the header is %s, not an object", nm, smj_json_type_name(root->type));
    size_t nt = root->len;
    f->t = calloc(nt + 1, sizeof *f->t);
    if (!f->t) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory for %zu tensors", nm, nt);
    for (size_t k = 0; k < root->len; k++) {
        const smj_json *e = &root->kids[k];
        if (strlen(e->key) != e->key_len)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: a tensor name contains a NUL character", nm);
        if (strcmp(e->key, "__metadata__") == 0) {
            if (e->type != SMJ_JSON_OBJECT)
                SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: __metadata__ is %s, not an object", nm, smj_json_type_name(e->type));
            f->mk = calloc(e->len + 1, sizeof *f->mk);
            f->mv = calloc(e->len + 1, sizeof *f->mv);
            if (!f->mk || !f->mv) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", nm);
            for (size_t j = 0; j < e->len; j++) {
                if (e->kids[j].type != SMJ_JSON_STRING)
                    SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: __metadata__ entry \"%.200s\" is %s, not a string", nm,
                             e->kids[j].key, smj_json_type_name(e->kids[j].type));
                f->mk[j] = e->kids[j].key;
                f->mv[j] = e->kids[j].str;
            }
            f->n_meta = (int)e->len;
            continue;
        }
        if (e->key_len == 0) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: a tensor has an empty name", nm);
        const char *tn = e->key;
        if (e->type != SMJ_JSON_OBJECT)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": entry is %s, not an object", nm, tn,
                     smj_json_type_name(e->type));
        const smj_json *dt = smj_json_get(e, "dtype"), *sh = smj_json_get(e, "shape"),
                       *off = smj_json_get(e, "data_offsets");
        if (!dt || dt->type != SMJ_JSON_STRING)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": \"dtype\" is missing or not a string", nm, tn);
        if (!sh || sh->type != SMJ_JSON_ARRAY)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": \"shape\" is missing or not an array", nm, tn);
        if (!off || off->type != SMJ_JSON_ARRAY || off->len != 2)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": \"data_offsets\" is missing or not [begin, end]",
                     nm, tn);
        smj_st_tensor *t = &f->t[f->n];
        t->name = tn;
        int d = -1;
        for (int j = 0; j < SMJ_ST_NDTYPES; j++)
            if (strcmp(dt->str, DTYPES[j].name) == 0) d = j;
        if (d < 0)
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: tensor \"%.200s\" has dtype \"%.40s\", which this reader does not know",
                     nm, tn, dt->str);
        t->dtype = (smj_st_dtype)d;
        if (sh->len > SMJ_ST_MAX_DIMS)
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: tensor \"%.200s\" has %zu dimensions (at most %d supported)", nm,
                     tn, sh->len, SMJ_ST_MAX_DIMS);
        t->ndim = (int)sh->len;
        int64_t numel = 1;
        for (size_t j = 0; j < sh->len; j++) {
            const smj_json *x = &sh->kids[j];
            if (x->type != SMJ_JSON_NUMBER || !x->is_int || x->i64 < 0)
                SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": shape[%zu] is not a non-negative integer", nm,
                         tn, j);
            t->shape[j] = x->i64;
            if (__builtin_mul_overflow(numel, x->i64, &numel))
                SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": the shape's element count overflows", nm, tn);
        }
        t->numel = numel;
        for (int j = 0; j < 2; j++) {
            const smj_json *x = &off->kids[j];
            if (x->type != SMJ_JSON_NUMBER || !x->is_int || x->i64 < 0)
                SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets[%d] is not a non-negative integer",
                         nm, tn, j);
        }
        t->begin = (uint64_t)off->kids[0].i64;
        t->end = (uint64_t)off->kids[1].i64;
        if (t->begin > t->end)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets [%llu, %llu] has begin > end", nm, tn,
                     (unsigned long long)t->begin, (unsigned long long)t->end);
        if (t->end > f->data_len)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets [%llu, %llu] exceed the data buffer "
                     "(%llu bytes): truncated?", nm, tn, (unsigned long long)t->begin, (unsigned long long)t->end,
                     (unsigned long long)f->data_len);
        int64_t bytes;
        if (__builtin_mul_overflow(numel, (int64_t)DTYPES[d].size, &bytes) || (uint64_t)bytes != t->end - t->begin)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\": %s x %lld elements needs %lld bytes but "
                     "data_offsets span %llu", nm, tn, DTYPES[d].name, (long long)numel,
                     (long long)(numel * DTYPES[d].size), (unsigned long long)(t->end - t->begin));
        f->n++;
    }
    /* The tensors must tile the buffer: sorted by offset, each begins where
     * the previous ended, and the last ends at the end of the file. */
    int *ord = malloc(sizeof(int) * (size_t)(f->n + 1)), *tmp = malloc(sizeof(int) * (size_t)(f->n + 1));
    f->by_name = malloc(sizeof(int) * (size_t)(f->n + 1));
    if (!ord || !tmp || !f->by_name) {
        free(ord);
        free(tmp);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", nm);
    }
    for (int i = 0; i < f->n; i++) ord[i] = f->by_name[i] = i;
    merge_sort(ord, tmp, f->n, f->t, idx_cmp_offset);
    merge_sort(f->by_name, tmp, f->n, f->t, idx_cmp_name);
    free(tmp);
    uint64_t cur = 0;
    smj_status st = SMJ_OK;
    for (int k = 0; k < f->n && st == SMJ_OK; k++) {
        const smj_st_tensor *t = &f->t[ord[k]];
        if (t->begin < cur)
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\" (bytes %llu..%llu) overlaps tensor \"%.200s\"",
                               nm, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                               f->t[ord[k - 1]].name);
        else if (t->begin > cur)
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: gap of %llu unused bytes before tensor \"%.200s\" "
                               "(tensors must be contiguous)", nm, (unsigned long long)(t->begin - cur), t->name);
        cur = t->end;
    }
    free(ord);
    SMJ_TRY(st);
    if (cur != f->data_len)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: %llu bytes after the last tensor are not covered by any tensor", nm,
                 (unsigned long long)(f->data_len - cur));
    /* Names are unique already (the JSON parser rejects duplicate members). */
    return SMJ_OK;
}

smj_status smj_st_parse(smj_ctx *ctx, const uint8_t *buf, size_t n, const char *name, smj_st_file **out) {
    *out = NULL;
    smj_st_file *f = calloc(1, sizeof *f);
    if (!f) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    f->path = strdup(name ? name : "<memory>");
    if (!f->path) { free(f); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
    f->base = buf;
    f->size = n;
    smj_status st = parse_header(ctx, f);
    if (st != SMJ_OK) { smj_st_close(f); return st; }
    *out = f;
    return SMJ_OK;
}

smj_status smj_st_open(smj_ctx *ctx, const char *path, smj_st_file **out) {
    *out = NULL;
    const uint8_t *base;
    size_t size;
    SMJ_TRY(smj_map_file(ctx, path, &base, &size));
    smj_st_file *f = calloc(1, sizeof *f);
    char *p = strdup(path);
    if (!f || !p) {
        free(f);
        free(p);
        smj_unmap_file(base, size);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    }
    f->path = p;
    f->base = base;
    f->size = size;
    f->mapped = 1;
    smj_status st = parse_header(ctx, f);
    if (st != SMJ_OK) { smj_st_close(f); return st; }
    *out = f;
    return SMJ_OK;
}

const char *smj_st_path(const smj_st_file *f) { return f->path; }
int smj_st_count(const smj_st_file *f) { return f->n; }
const smj_st_tensor *smj_st_get(const smj_st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const uint8_t *smj_st_data(const smj_st_file *f, int i) { return f->data + f->t[i].begin; }
int smj_st_meta_count(const smj_st_file *f) { return f->n_meta; }
const char *smj_st_meta_key(const smj_st_file *f, int i) { return i >= 0 && i < f->n_meta ? f->mk[i] : NULL; }
const char *smj_st_meta_value(const smj_st_file *f, int i) { return i >= 0 && i < f->n_meta ? f->mv[i] : NULL; }
const char *smj_st_meta(const smj_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->mk[i], key) == 0) return f->mv[i];
    return NULL;
}

int smj_st_find(const smj_st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

smj_status smj_st_read_f32(smj_ctx *ctx, const smj_st_file *f, int i, float *dst) {
    SMJ_CHECK(ctx, i >= 0 && i < f->n, SMJ_ERR_INVALID, "%s: tensor index %d out of range", f->path, i);
    const smj_st_tensor *t = &f->t[i];
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case SMJ_ST_F32:
        for (int64_t k = 0; k < t->numel; k++) {
            uint32_t b = smj_rd_u32(p + 4 * k);
            memcpy(&dst[k], &b, 4);
        }
        return SMJ_OK;
    case SMJ_ST_BF16:
        for (int64_t k = 0; k < t->numel; k++) dst[k] = smj_bf16_to_f32((uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
        return SMJ_OK;
    case SMJ_ST_F16:
        for (int64_t k = 0; k < t->numel; k++) dst[k] = smj_f16_to_f32((uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
        return SMJ_OK;
    default:
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s; only F32, BF16 and F16 can be read",
                 f->path, t->name, DTYPES[t->dtype].name);
    }
}

/* --------------------------------------------------------------- sharding */

typedef struct { int file, idx; const char *name; } set_ent;

struct smj_st_set {
    int nf;
    smj_st_file **files;
    int n;
    set_ent *ent;
    int *by_name;
};

void smj_st_set_close(smj_st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->nf; i++) smj_st_close(s->files[i]);
    free(s->files);
    free(s->ent);
    free(s->by_name);
    free(s);
}

int smj_st_set_count(const smj_st_set *s) { return s->n; }
int smj_st_set_num_files(const smj_st_set *s) { return s->nf; }

const smj_st_tensor *smj_st_set_get(const smj_st_set *s, int i, const smj_st_file **file, int *index) {
    if (i < 0 || i >= s->n) return NULL;
    const smj_st_file *f = s->files[s->ent[i].file];
    if (file) *file = f;
    if (index) *index = s->ent[i].idx;
    return &f->t[s->ent[i].idx];
}

int smj_st_set_find(const smj_st_set *s, const char *name) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->ent[s->by_name[mid]].name, name);
        if (c == 0) return s->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int set_name_cmp(const set_ent *e, int a, int b) { return strcmp(e[a].name, e[b].name); }

static void set_sort(int *v, int *tmp, int n, const set_ent *e) {
    if (n < 2) return;
    int h = n / 2;
    set_sort(v, tmp, h, e);
    set_sort(v + h, tmp, n - h, e);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = set_name_cmp(e, v[j], v[i]) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, sizeof(int) * (size_t)n);
}

static smj_status set_index(smj_ctx *ctx, smj_st_set *s) {
    int total = 0;
    for (int i = 0; i < s->nf; i++) total += s->files[i]->n;
    s->ent = malloc(sizeof *s->ent * (size_t)(total + 1));
    s->by_name = malloc(sizeof(int) * (size_t)(total + 1));
    int *tmp = malloc(sizeof(int) * (size_t)(total + 1));
    if (!s->ent || !s->by_name || !tmp) { free(tmp); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < s->nf; i++)
        for (int j = 0; j < s->files[i]->n; j++) {
            s->ent[s->n] = (set_ent){i, j, s->files[i]->t[j].name};
            s->by_name[s->n] = s->n;
            s->n++;
        }
    set_sort(s->by_name, tmp, s->n, s->ent);
    free(tmp);
    for (int k = 1; k < s->n; k++) {
        const set_ent *a = &s->ent[s->by_name[k - 1]], *b = &s->ent[s->by_name[k]];
        if (strcmp(a->name, b->name) == 0)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "tensor \"%.200s\" appears in both %s and %s", a->name,
                     s->files[a->file]->path, s->files[b->file]->path);
    }
    return SMJ_OK;
}

static int path_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap;
}

smj_status smj_st_set_open(smj_ctx *ctx, const char *dir, smj_st_set **out) {
    *out = NULL;
    char ipath[4096], p[4096];
    if (!path_join(ipath, sizeof ipath, dir, "model.safetensors.index.json"))
        SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
    smj_st_set *s = calloc(1, sizeof *s);
    if (!s) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    struct stat sb;
    smj_status st = SMJ_OK;
    if (stat(ipath, &sb) != 0) {
        if (!path_join(p, sizeof p, dir, "model.safetensors")) { free(s); SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", dir); }
        if (stat(p, &sb) != 0) {
            free(s);
            SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json is there", dir);
        }
        s->files = calloc(1, sizeof *s->files);
        if (!s->files) { free(s); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
        st = smj_st_open(ctx, p, &s->files[0]);
        if (st == SMJ_OK) s->nf = 1;
        if (st == SMJ_OK) st = set_index(ctx, s);
        if (st != SMJ_OK) { smj_st_set_close(s); return st; }
        *out = s;
        return SMJ_OK;
    }
    if ((uint64_t)sb.st_size > SMJ_ST_MAX_HEADER) {
        free(s);
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: index file larger than %llu bytes", ipath, (unsigned long long)SMJ_ST_MAX_HEADER);
    }
    uint8_t *text = NULL;
    size_t tn = 0;
    smj_json_doc *doc = NULL;
    const smj_json *root = NULL, *wm = NULL;
    st = smj_read_file(ctx, ipath, &text, &tn);
    if (st == SMJ_OK) st = smj_json_parse(ctx, (const char *)text, tn, ipath, 16, &doc, &root);
    if (st == SMJ_OK) {
        wm = smj_json_get(root, "weight_map");
        if (!wm || wm->type != SMJ_JSON_OBJECT)
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object", ipath);
    }
    /* The distinct file names, in first-seen order. */
    const char **fnames = NULL;
    if (st == SMJ_OK) {
        fnames = calloc(wm->len + 1, sizeof *fnames);
        s->files = calloc(wm->len + 1, sizeof *s->files);
        if (!fnames || !s->files) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
    }
    int nfn = 0;
    for (size_t k = 0; st == SMJ_OK && k < wm->len; k++) {
        const smj_json *e = &wm->kids[k];
        if (e->type != SMJ_JSON_STRING || e->len == 0 || strlen(e->str) != e->len || strchr(e->str, '/') ||
            strchr(e->str, '\\') || strcmp(e->str, ".") == 0 || strcmp(e->str, "..") == 0) {
            st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: weight_map entry \"%.200s\" is not a plain file name", ipath, e->key);
            break;
        }
        int found = 0;
        for (int j = nfn - 1; j >= 0 && !found; j--) found = strcmp(fnames[j], e->str) == 0;
        if (!found) fnames[nfn++] = e->str;
    }
    for (int j = 0; st == SMJ_OK && j < nfn; j++) {
        if (!path_join(p, sizeof p, dir, fnames[j])) st = smj_set_error(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
        else st = smj_st_open(ctx, p, &s->files[j]);
        if (st == SMJ_OK) s->nf++;
    }
    /* Every tensor must be listed under its own file; with unique names and
     * equal counts that makes the map and the shards a bijection. */
    size_t listed = 0;
    for (int j = 0; st == SMJ_OK && j < s->nf; j++) {
        const smj_st_file *f = s->files[j];
        for (int i = 0; i < f->n && st == SMJ_OK; i++) {
            const smj_json *e = smj_json_get(wm, f->t[i].name);
            if (!e)
                st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\" of %s is not in the weight_map", ipath,
                                   f->t[i].name, fnames[j]);
            else if (strcmp(e->str, fnames[j]) != 0)
                st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: tensor \"%.200s\" is in %s but the weight_map says %s",
                                   ipath, f->t[i].name, fnames[j], e->str);
            listed++;
        }
    }
    if (st == SMJ_OK) st = set_index(ctx, s);
    if (st == SMJ_OK && listed != wm->len) {
        for (size_t k = 0; k < wm->len; k++)
            if (smj_st_set_find(s, wm->kids[k].key) < 0) {
                st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: weight_map lists \"%.200s\" in %s, which does not have it",
                                   ipath, wm->kids[k].key, wm->kids[k].str);
                break;
            }
    }
    free(fnames);
    smj_json_free(doc);
    free(text);
    if (st != SMJ_OK) { smj_st_set_close(s); return st; }
    *out = s;
    return SMJ_OK;
}

/* ------------------------------------------------------------------ writer */

static int64_t wnumel(const smj_st_wtensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Header JSON of tensors t[0..n), padded with spaces so that 8 + its length
 * is a multiple of 8. */
static smj_status build_header(smj_ctx *ctx, const smj_st_wtensor *t, int n, smj_st_dtype dt, smj_jbuf *h,
                               uint64_t *data_bytes) {
    int es = DTYPES[dt].size;
    uint64_t off = 0;
    smj_jbuf_puts(h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        SMJ_CHECK(ctx, t[i].ndim >= 0 && t[i].ndim <= SMJ_ST_MAX_DIMS && t[i].name && t[i].name[0], SMJ_ERR_INVALID,
                  "safetensors writer: tensor %d has no name or a bad ndim", i);
        uint64_t bytes = (uint64_t)wnumel(&t[i]) * (uint64_t)es;
        smj_jbuf_puts(h, ",");
        smj_jbuf_str(h, t[i].name, strlen(t[i].name));
        smj_jbuf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", DTYPES[dt].name);
        for (int d = 0; d < t[i].ndim; d++) smj_jbuf_printf(h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        smj_jbuf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + bytes));
        off += bytes;
    }
    smj_jbuf_puts(h, "}");
    while (h->len % 8) smj_jbuf_puts(h, " ");
    if (h->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "safetensors writer: out of memory for the header");
    *data_bytes = off;
    return SMJ_OK;
}

/* Calls sink(arg, bytes, n) with the little-endian encoding of t's data. */
typedef void (*sink_fn)(void *arg, const void *p, size_t n);

static int emit_tensor(const smj_st_wtensor *t, smj_st_dtype dt, sink_fn sink, void *arg) {
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = malloc(CHUNK * 4);
    if (!buf) return -1;
    int64_t n = wnumel(t);
    for (int64_t k = 0; k < n; k += CHUNK) {
        int64_t m = n - k < CHUNK ? n - k : CHUNK;
        if (dt == SMJ_ST_F32) {
            for (int64_t j = 0; j < m; j++) {
                uint32_t b;
                memcpy(&b, &t->data[k + j], 4);
                smj_wr_u32(buf + 4 * j, b);
            }
            sink(arg, buf, (size_t)m * 4);
        } else {
            for (int64_t j = 0; j < m; j++) {
                uint16_t h = smj_f32_to_bf16(t->data[k + j]);
                buf[2 * j] = (uint8_t)h;
                buf[2 * j + 1] = (uint8_t)(h >> 8);
            }
            sink(arg, buf, (size_t)m * 2);
        }
    }
    free(buf);
    return 0;
}

static void sink_wfile(void *arg, const void *p, size_t n) { smj_wfile_write(arg, p, n); }

typedef struct { uint8_t *p; size_t len; } mem_sink;
static void sink_mem(void *arg, const void *p, size_t n) {
    mem_sink *m = arg;
    memcpy(m->p + m->len, p, n);
    m->len += n;
}

static smj_status check_names(smj_ctx *ctx, const smj_st_wtensor *t, int n) {
    for (int i = 0; i < n; i++) {
        SMJ_CHECK(ctx, t[i].name && t[i].name[0] && strcmp(t[i].name, "__metadata__") != 0, SMJ_ERR_INVALID,
                  "safetensors writer: tensor %d has an empty or reserved name", i);
        SMJ_CHECK(ctx, t[i].ndim >= 0 && t[i].ndim <= SMJ_ST_MAX_DIMS, SMJ_ERR_INVALID,
                  "safetensors writer: tensor \"%s\" has %d dims", t[i].name, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            SMJ_CHECK(ctx, t[i].shape[d] >= 0, SMJ_ERR_INVALID, "safetensors writer: tensor \"%s\": negative dim",
                      t[i].name);
        for (int j = 0; j < i; j++)
            SMJ_CHECK(ctx, strcmp(t[i].name, t[j].name) != 0, SMJ_ERR_INVALID,
                      "safetensors writer: duplicate tensor name \"%s\"", t[i].name);
    }
    return SMJ_OK;
}

smj_status smj_st_serialize(smj_ctx *ctx, const smj_st_wtensor *t, int n, smj_st_dtype dtype, uint8_t **out,
                            size_t *out_len) {
    *out = NULL;
    SMJ_CHECK(ctx, dtype == SMJ_ST_F32 || dtype == SMJ_ST_BF16, SMJ_ERR_UNSUPPORTED,
              "safetensors writer: dtype %s is not supported (F32 or BF16)", smj_st_dtype_name(dtype));
    SMJ_TRY(check_names(ctx, t, n));
    smj_jbuf h = {0};
    uint64_t data_bytes;
    smj_status st = build_header(ctx, t, n, dtype, &h, &data_bytes);
    if (st != SMJ_OK) { smj_jbuf_free(&h); return st; }
    size_t total = 8 + h.len + (size_t)data_bytes;
    mem_sink m = {malloc(total ? total : 1), 0};
    if (!m.p) { smj_jbuf_free(&h); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "safetensors writer: out of memory (%zu bytes)", total); }
    smj_wr_u64(m.p, h.len);
    m.len = 8;
    sink_mem(&m, h.p, h.len);
    int bad = 0;
    for (int i = 0; i < n; i++) bad |= emit_tensor(&t[i], dtype, sink_mem, &m);
    smj_jbuf_free(&h);
    if (bad) { free(m.p); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "safetensors writer: out of memory"); }
    *out = m.p;
    *out_len = m.len;
    return SMJ_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

smj_status smj_st_write(smj_ctx *ctx, const char *dir, const smj_st_wtensor *t, int n,
                        const smj_st_write_options *opts, int *n_files) {
    smj_st_dtype dt = opts && opts->bf16 ? SMJ_ST_BF16 : SMJ_ST_F32;
    uint64_t limit = opts && opts->max_shard_bytes ? opts->max_shard_bytes : SMJ_ST_DEFAULT_SHARD_BYTES;
    SMJ_TRY(check_names(ctx, t, n));
    int es = DTYPES[dt].size;
    /* Shard assignment: greedy in order. */
    int *shard = malloc(sizeof(int) * (size_t)(n + 1));
    if (!shard) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    int ns = 0;
    uint64_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t b = (uint64_t)wnumel(&t[i]) * (uint64_t)es;
        if (ns == 0 || (cur > 0 && cur + b > limit)) { ns++; cur = 0; }
        shard[i] = ns - 1;
        cur += b;
        total += b;
    }
    if (ns == 0) ns = 1;
    smj_wfile *w = calloc((size_t)ns + 1, sizeof *w);
    char **fname = calloc((size_t)ns + 1, sizeof *fname);
    smj_status st = w && fname ? SMJ_OK : smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
    int opened = 0;
    char path[4096];
    for (int s = 0; s < ns && st == SMJ_OK; s++) {
        fname[s] = malloc(64);
        if (!fname[s]) { st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory"); break; }
        if (ns == 1) snprintf(fname[s], 64, "model.safetensors");
        else snprintf(fname[s], 64, "model-%05d-of-%05d.safetensors", s + 1, ns);
        if (!path_join(path, sizeof path, dir, fname[s])) { st = smj_set_error(ctx, SMJ_ERR_INVALID, "%s: path too long", dir); break; }
        int lo = 0;
        while (lo < n && shard[lo] < s) lo++;
        int hi = lo;
        while (hi < n && shard[hi] == s) hi++;
        smj_jbuf h = {0};
        uint64_t db;
        st = build_header(ctx, t + lo, hi - lo, dt, &h, &db);
        if (st == SMJ_OK) st = smj_wfile_open(ctx, &w[s], path);
        if (st == SMJ_OK) {
            opened = s + 1;
            uint8_t len8[8];
            smj_wr_u64(len8, h.len);
            smj_wfile_write(&w[s], len8, 8);
            smj_wfile_write(&w[s], h.p, h.len);
            for (int i = lo; i < hi; i++)
                if (emit_tensor(&t[i], dt, sink_wfile, &w[s])) w[s].failed = ENOMEM;
            if (w[s].failed)
                st = smj_set_error(ctx, SMJ_ERR_IO, "%s: write failed: %s", path, strerror(w[s].failed));
        }
        smj_jbuf_free(&h);
    }
    /* The index (sharded only): weight_map sorted by name, like transformers. */
    smj_wfile wi;
    int have_index = 0;
    if (st == SMJ_OK && ns > 1) {
        const char ***ord = malloc(sizeof *ord * (size_t)(n + 1));
        const char **names = malloc(sizeof *names * (size_t)(n + 1));
        smj_jbuf j = {0};
        if (!ord || !names) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
        if (st == SMJ_OK) {
            for (int i = 0; i < n; i++) { names[i] = t[i].name; ord[i] = &names[i]; }
            qsort(ord, (size_t)n, sizeof *ord, cmp_str_ptr);
            smj_jbuf_printf(&j, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                            (unsigned long long)total);
            for (int k = 0; k < n; k++) {
                int i = (int)(ord[k] - names);
                smj_jbuf_puts(&j, k ? ",\n    " : "\n    ");
                smj_jbuf_str(&j, t[i].name, strlen(t[i].name));
                smj_jbuf_puts(&j, ": ");
                smj_jbuf_str(&j, fname[shard[i]], strlen(fname[shard[i]]));
            }
            smj_jbuf_puts(&j, "\n  }\n}\n");
            if (j.failed) st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory");
        }
        if (st == SMJ_OK && !path_join(path, sizeof path, dir, "model.safetensors.index.json"))
            st = smj_set_error(ctx, SMJ_ERR_INVALID, "%s: path too long", dir);
        if (st == SMJ_OK) st = smj_wfile_open(ctx, &wi, path);
        if (st == SMJ_OK) {
            have_index = 1;
            smj_wfile_write(&wi, j.p, j.len);
        }
        smj_jbuf_free(&j);
        free(ord);
        free(names);
    }
    /* Everything is in temp files: make it durable, then rename each. */
    for (int s = 0; s < opened && st == SMJ_OK; s++)
        if (fflush(w[s].f) != 0 || (fsync(fileno(w[s].f)) != 0 && errno != EINVAL))
            st = smj_set_error(ctx, SMJ_ERR_IO, "%s: write failed: %s", w[s].path, strerror(errno));
    if (st == SMJ_OK) {
        for (int s = 0; s < opened; s++) {
            smj_status cs = st == SMJ_OK ? smj_wfile_commit(ctx, &w[s]) : SMJ_OK;
            if (st != SMJ_OK) smj_wfile_abort(&w[s]);
            if (cs != SMJ_OK) st = cs;
        }
        if (have_index) {
            if (st == SMJ_OK) st = smj_wfile_commit(ctx, &wi);
            else smj_wfile_abort(&wi);
        }
    } else {
        for (int s = 0; s < opened; s++) smj_wfile_abort(&w[s]);
        if (have_index) smj_wfile_abort(&wi);
    }
    if (st == SMJ_OK && n_files) *n_files = ns;
    if (fname)
        for (int s = 0; s < ns; s++) free(fname[s]);
    free(fname);
    free(w);
    free(shard);
    return st;
}
