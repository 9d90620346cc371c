/* core.c — context, errors, aligned allocation, RNG, atomic file writes,
 * CRC-32. See core.h for the contracts. */
#include "core.h"
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "../ops/ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

const char *smj_status_str(smj_status s) {
    switch (s) {
    case SMJ_OK: return "ok";
    case SMJ_ERR_INVALID: return "invalid argument";
    case SMJ_ERR_NOMEM: return "out of memory";
    case SMJ_ERR_IO: return "I/O error";
    case SMJ_ERR_FORMAT: return "bad file format";
    case SMJ_ERR_UNSUPPORTED: return "unsupported";
    case SMJ_ERR_NONFINITE: return "non-finite value";
    case SMJ_ERR_DIVERGED: return "training diverged";
    }
    return "unknown status";
}

smj_status smj_set_error(smj_ctx *ctx, smj_status s, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
    }
    return s;
}

smj_ctx *smj_ctx_create(const smj_ctx_options *opts) {
    smj_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->exec.nt = opts && opts->threads > 0 ? opts->threads : 0;
#ifdef _OPENMP
    if (c->exec.nt == 0) c->exec.nt = omp_get_max_threads();
#else
    c->exec.nt = 1;
#endif
    c->backend = smj_backend_get(opts ? opts->backend : SMJ_BACKEND_CPU);
    return c;
}

void smj_ctx_free(smj_ctx *ctx) { free(ctx); }
const char *smj_ctx_error(const smj_ctx *ctx) { return ctx ? ctx->err : "no context"; }
const char *smj_ctx_backend_name(const smj_ctx *ctx) { return ctx->backend->name; }
int smj_ctx_threads(const smj_ctx *ctx) { return ctx->exec.nt; }
void smj_free(void *p) { free(p); }

void *smj_alloc(size_t n) {
    if (n == 0) n = 64;
    size_t r = (n + 63) & ~(size_t)63;
    if (r < n) return NULL;
    void *p = aligned_alloc(64, r);
    if (p) memset(p, 0, r);
    return p;
}
void smj_afree(void *p) { free(p); }

uint64_t smj_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
void smj_rng_seed(smj_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = smj_splitmix64(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t smj_rng_u64(smj_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}
double smj_rng_uniform(smj_rng *r) { return (double)(smj_rng_u64(r) >> 11) * 0x1.0p-53; }
float smj_rng_normal(smj_rng *r) {
    double u1 = smj_rng_uniform(r), u2 = smj_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

smj_status smj_wfile_open(smj_ctx *ctx, smj_wfile *w, const char *path) {
    memset(w, 0, sizeof *w);
    if (strlen(path) >= sizeof w->path) SMJ_FAIL(ctx, SMJ_ERR_INVALID, "%s: path too long", path);
    strcpy(w->path, path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "wb");
    if (!w->f) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    return SMJ_OK;
}
void smj_wfile_write(smj_wfile *w, const void *p, size_t n) {
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n) w->failed = errno ? errno : EIO;
}
smj_status smj_wfile_commit(smj_ctx *ctx, smj_wfile *w) {
    int err = w->failed;
    if (!err && fflush(w->f) != 0) err = errno;
    if (!err && fsync(fileno(w->f)) != 0 && errno != EINVAL) err = errno;
    if (fclose(w->f) != 0 && !err) err = errno;
    w->f = NULL;
    if (!err && rename(w->tmp, w->path) != 0) err = errno;
    if (err) {
        remove(w->tmp);
        SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: write failed: %s", w->path, strerror(err));
    }
    return SMJ_OK;
}
void smj_wfile_abort(smj_wfile *w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
    remove(w->tmp);
}

smj_status smj_read_file(smj_ctx *ctx, const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot seek", path); }
    long n = ftell(f);
    rewind(f);
    if (n < 0) { fclose(f); SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot size", path); }
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory (%ld bytes)", path, n); }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf); fclose(f);
        SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = (size_t)n;
    return SMJ_OK;
}

uint32_t smj_crc32(uint32_t crc, const void *p, size_t n) {
    static const uint32_t poly = 0xEDB88320u;
    uint32_t table[16];
    for (uint32_t i = 0; i < 16; i++) {
        uint32_t c = i;
        for (int k = 0; k < 4; k++) c = c & 1 ? poly ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    const uint8_t *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc = table[(crc ^ b[i]) & 15] ^ (crc >> 4);
        crc = table[(crc ^ (b[i] >> 4)) & 15] ^ (crc >> 4);
    }
    return ~crc;
}
