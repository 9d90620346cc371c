/* fixture.c — see fixture.h and docs/FIXTURES.md. */
#include "fixture.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE_MAX_ENTRIES 100000
#define FIXTURE_MAX_BYTES (256LL << 20)

typedef struct {
    char *name;
    int dtype, ndim, used;
    int64_t dims[FIXTURE_MAX_NDIM];
    int64_t numel;
    void *data; /* own, aligned copy: float, int32_t, double or char (NUL-terminated) */
} fx_entry;

struct fixture {
    char *path;
    int n;
    fx_entry *e;
};

typedef struct {
    const unsigned char *p;
    size_t len, off;
    const char *path;
} fx_cursor;

static int fx_take(fx_cursor *c, size_t n, const unsigned char **out, const char *what) {
    if (n > c->len - c->off) {
        fprintf(stderr, "fixture %s: truncated at byte %zu (reading %s: need %zu, %zu left)\n",
                c->path, c->off, what, n, c->len - c->off);
        return 0;
    }
    *out = c->p + c->off;
    c->off += n;
    return 1;
}

static uint64_t fx_le(const unsigned char *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static int fx_u(fx_cursor *c, int n, uint64_t *v, const char *what) {
    const unsigned char *b;
    if (!fx_take(c, (size_t)n, &b, what)) return 0;
    *v = fx_le(b, n);
    return 1;
}

/* Copies n little-endian elements of width w from src into a fresh buffer. */
static void *fx_copy_le(const unsigned char *src, int64_t n, int w) {
    unsigned char *d = malloc((size_t)(n > 0 ? n : 1) * (size_t)w);
    if (!d) return NULL;
    const uint16_t probe = 1;
    int little = *(const unsigned char *)&probe == 1;
    if (little) {
        memcpy(d, src, (size_t)n * (size_t)w);
    } else {
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < w; j++) d[i * w + j] = src[i * w + (w - 1 - j)];
    }
    return d;
}

static double fx_bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static float fx_bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The "gen" tensor: see gen_values in tools/make_fixtures.py. */
static float *fx_generate(uint64_t seed, int64_t n, int exp2, float offset, double *checksum) {
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return NULL;
    double scale = ldexp(1.0, exp2), sum = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        int64_t k = (int64_t)(z & 0xFFFF) + (int64_t)((z >> 16) & 0xFFFF) +
                    (int64_t)((z >> 32) & 0xFFFF) + (int64_t)((z >> 48) & 0xFFFF) - 131070;
        v[i] = (float)((double)offset + (double)k * scale);
        sum += (double)v[i] * (double)(i % 13 + 1);
    }
    *checksum = sum;
    return v;
}

static int fx_parse_entry(fx_cursor *c, fx_entry *e, int index) {
    uint64_t u;
    const unsigned char *b;
    if (!fx_u(c, 2, &u, "name length")) return 0;
    if (u == 0) {
        fprintf(stderr, "fixture %s: entry %d has an empty name\n", c->path, index);
        return 0;
    }
    size_t nlen = (size_t)u;
    if (!fx_take(c, nlen, &b, "name")) return 0;
    if (memchr(b, 0, nlen)) {
        fprintf(stderr, "fixture %s: entry %d has a NUL byte in its name\n", c->path, index);
        return 0;
    }
    e->name = malloc(nlen + 1);
    if (!e->name) return 0;
    memcpy(e->name, b, nlen);
    e->name[nlen] = 0;
    if (!fx_u(c, 1, &u, "dtype")) return 0;
    e->dtype = (int)u;
    if (e->dtype < FIXTURE_F32 || e->dtype > FIXTURE_GEN) {
        fprintf(stderr, "fixture %s: entry '%s' has unknown dtype %d\n", c->path, e->name, e->dtype);
        return 0;
    }
    if (!fx_u(c, 1, &u, "ndim")) return 0;
    if (u > FIXTURE_MAX_NDIM) {
        fprintf(stderr, "fixture %s: entry '%s' has ndim %d > %d\n", c->path, e->name, (int)u,
                FIXTURE_MAX_NDIM);
        return 0;
    }
    e->ndim = (int)u;
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        if (!fx_u(c, 8, &u, "dims")) return 0;
        if (u > (uint64_t)FIXTURE_MAX_BYTES || (u && (uint64_t)numel > (uint64_t)FIXTURE_MAX_BYTES / u)) {
            fprintf(stderr, "fixture %s: entry '%s' is too large\n", c->path, e->name);
            return 0;
        }
        e->dims[d] = (int64_t)u;
        numel *= (int64_t)u;
    }
    e->numel = numel;
    static const int width[] = {4, 4, 8, 1};
    if (e->dtype == FIXTURE_GEN) {
        uint64_t seed, exp2u, offu, sumu;
        if (!fx_u(c, 8, &seed, "gen seed") || !fx_u(c, 4, &exp2u, "gen exponent") ||
            !fx_u(c, 4, &offu, "gen offset") || !fx_u(c, 8, &sumu, "gen checksum"))
            return 0;
        int exp2 = (int)(int32_t)(uint32_t)exp2u;
        float offset = fx_bits_f32((uint32_t)offu);
        double want = fx_bits_f64(sumu), got;
        if (exp2 < -60 || exp2 > 10 || !isfinite(offset) || numel > (1 << 24)) {
            fprintf(stderr, "fixture %s: entry '%s' has bad gen parameters\n", c->path, e->name);
            return 0;
        }
        e->data = fx_generate(seed, numel, exp2, offset, &got);
        if (!e->data) return 0;
        if (!(fabs(got - want) <= 1e-9 * (fabs(want) + 1e-30))) {
            fprintf(stderr, "fixture %s: entry '%s': generated values do not match the checksum "
                            "(%.17g vs %.17g)\n", c->path, e->name, got, want);
            return 0;
        }
        return 1;
    }
    int w = width[e->dtype];
    if (!fx_take(c, (size_t)numel * (size_t)w, &b, e->name)) return 0;
    if (e->dtype == FIXTURE_U8) {
        char *s = malloc((size_t)numel + 1);
        if (!s) return 0;
        memcpy(s, b, (size_t)numel);
        s[numel] = 0;
        e->data = s;
    } else {
        e->data = fx_copy_le(b, numel, w);
        if (!e->data) return 0;
    }
    return 1;
}

fixture *fixture_load(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        return NULL;
    }
    unsigned char *buf = NULL;
    long size = -1;
    if (fseek(fp, 0, SEEK_END) == 0) size = ftell(fp);
    if (size < 0 || size > FIXTURE_MAX_BYTES || fseek(fp, 0, SEEK_SET) != 0) {
        fprintf(stderr, "fixture %s: cannot size the file (or it is over %lld bytes)\n", path,
                (long long)FIXTURE_MAX_BYTES);
        fclose(fp);
        return NULL;
    }
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, fp) != (size_t)size) {
        fprintf(stderr, "fixture %s: read failed\n", path);
        free(buf);
        fclose(fp);
        return NULL;
    }
    fclose(fp);

    fixture *f = calloc(1, sizeof *f);
    fx_cursor c = {buf, (size_t)size, 0, path};
    const unsigned char *b;
    uint64_t count;
    if (!f) goto fail;
    f->path = malloc(strlen(path) + 1);
    if (!f->path) goto fail;
    strcpy(f->path, path);
    if (!fx_take(&c, 8, &b, "magic")) goto fail;
    if (memcmp(b, "SMJFIX01", 8) != 0) {
        fprintf(stderr, "fixture %s: bad magic (not an SMJFIX01 file)\n", path);
        goto fail;
    }
    if (!fx_u(&c, 4, &count, "entry count")) goto fail;
    if (count > FIXTURE_MAX_ENTRIES) {
        fprintf(stderr, "fixture %s: %llu entries is too many\n", path, (unsigned long long)count);
        goto fail;
    }
    f->e = calloc(count ? (size_t)count : 1, sizeof *f->e);
    if (!f->e) goto fail;
    for (uint64_t i = 0; i < count; i++) {
        f->n = (int)i + 1; /* so that fixture_free releases a partly parsed entry */
        if (!fx_parse_entry(&c, &f->e[i], (int)i)) goto fail;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->e[j].name, f->e[i].name) == 0) {
                fprintf(stderr, "fixture %s: duplicate entry '%s'\n", path, f->e[i].name);
                goto fail;
            }
    }
    f->n = (int)count;
    if (c.off != c.len) {
        fprintf(stderr, "fixture %s: %zu trailing bytes after the last entry\n", path, c.len - c.off);
        goto fail;
    }
    free(buf);
    return f;
fail:
    free(buf);
    fixture_free(f);
    return NULL;
}

void fixture_free(fixture *f) {
    if (!f) return;
    for (int i = 0; f->e && i < f->n; i++) {
        free(f->e[i].name);
        free(f->e[i].data);
    }
    free(f->e);
    free(f->path);
    free(f);
}

int fixture_count(const fixture *f) { return f ? f->n : 0; }

const char *fixture_name(const fixture *f, int i) {
    return f && i >= 0 && i < f->n ? f->e[i].name : NULL;
}

int fixture_dtype(const fixture *f, int i) { return f && i >= 0 && i < f->n ? f->e[i].dtype : -1; }

int fixture_used(const fixture *f, int i) { return f && i >= 0 && i < f->n ? f->e[i].used : 0; }

int fixture_find(const fixture *f, const char *name) {
    if (!f || !name) return -1;
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return i;
    return -1;
}

int fixture_shape(const fixture *f, const char *name, int64_t *dims) {
    int i = fixture_find(f, name);
    if (i < 0) return -1;
    if (dims) {
        for (int d = 0; d < FIXTURE_MAX_NDIM; d++) dims[d] = d < f->e[i].ndim ? f->e[i].dims[d] : 0;
    }
    return f->e[i].ndim;
}

static fx_entry *fx_get(fixture *f, const char *name, int dtype, int dtype2) {
    int i = fixture_find(f, name);
    if (i < 0) {
        fprintf(stderr, "fixture %s: no entry '%s'\n", f ? f->path : "(null)", name ? name : "(null)");
        return NULL;
    }
    fx_entry *e = &f->e[i];
    if (e->dtype != dtype && e->dtype != dtype2) {
        fprintf(stderr, "fixture %s: entry '%s' has dtype %d, not %d\n", f->path, name, e->dtype, dtype);
        return NULL;
    }
    e->used = 1;
    return e;
}

const float *fixture_f32(fixture *f, const char *name, int64_t *numel) {
    fx_entry *e = fx_get(f, name, FIXTURE_F32, FIXTURE_GEN);
    if (numel) *numel = e ? e->numel : 0;
    return e ? e->data : NULL;
}

const int32_t *fixture_i32(fixture *f, const char *name, int64_t *numel) {
    fx_entry *e = fx_get(f, name, FIXTURE_I32, FIXTURE_I32);
    if (numel) *numel = e ? e->numel : 0;
    return e ? e->data : NULL;
}

const double *fixture_f64(fixture *f, const char *name, int64_t *numel) {
    fx_entry *e = fx_get(f, name, FIXTURE_F64, FIXTURE_F64);
    if (numel) *numel = e ? e->numel : 0;
    return e ? e->data : NULL;
}

const char *fixture_str(fixture *f, const char *name) {
    fx_entry *e = fx_get(f, name, FIXTURE_U8, FIXTURE_U8);
    return e ? e->data : NULL;
}

static fx_entry *fx_scalar(fixture *f, const char *name) {
    int i = fixture_find(f, name);
    if (i < 0) {
        fprintf(stderr, "fixture %s: no entry '%s'\n", f ? f->path : "(null)", name ? name : "(null)");
        return NULL;
    }
    if (f->e[i].numel != 1 || f->e[i].dtype == FIXTURE_U8) {
        fprintf(stderr, "fixture %s: entry '%s' is not a numeric scalar\n", f->path, name);
        return NULL;
    }
    f->e[i].used = 1;
    return &f->e[i];
}

int fixture_i32_scalar(fixture *f, const char *name) {
    fx_entry *e = fx_scalar(f, name);
    if (!e) return 0;
    if (e->dtype != FIXTURE_I32) {
        fprintf(stderr, "fixture %s: entry '%s' is not i32\n", f->path, name);
        return 0;
    }
    return ((const int32_t *)e->data)[0];
}

float fixture_f32_scalar(fixture *f, const char *name) {
    fx_entry *e = fx_scalar(f, name);
    if (!e) return 0;
    switch (e->dtype) {
    case FIXTURE_F32:
    case FIXTURE_GEN: return ((const float *)e->data)[0];
    case FIXTURE_F64: return (float)((const double *)e->data)[0];
    default: return (float)((const int32_t *)e->data)[0];
    }
}
