/* core.c — context, errors, aligned allocation, RNG, atomic file writes,
 * CRC-32. See core.h for the contracts. */
#include "core.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
    c->exec.bf16_matmul = opts && opts->bf16_matmul ? 1 : 0;
    smj_backend_kind kind = opts ? opts->backend : SMJ_BACKEND_CPU;
    c->backend = smj_backend_get(kind);
    if (!c->backend) {
        c->init_status = smj_set_error(c, SMJ_ERR_UNSUPPORTED,
                                       kind == SMJ_BACKEND_CUDA
                                           ? "the CUDA backend is not in this build (rebuild with make CUDA=1)"
                                           : "unknown backend %d", (int)kind);
    } else if (c->backend->init) {
        c->init_status = c->backend->init(&c->exec, c->err, sizeof c->err);
        if (c->init_status != SMJ_OK) c->backend = NULL;
    }
    /* An unavailable backend leaves a context that must only be freed; its
     * ops are the CPU's so that misuse computes instead of crashing. */
    if (!c->backend) c->backend = &smj_backend_cpu;
    return c;
}

void smj_ctx_free(smj_ctx *ctx) {
    if (!ctx) return;
    if (ctx->init_status == SMJ_OK && ctx->backend->fini) ctx->backend->fini(&ctx->exec);
    free(ctx);
}

smj_status smj_ctx_status(smj_ctx *ctx) {
    if (!ctx) return SMJ_ERR_INVALID;
    if (ctx->init_status != SMJ_OK) return ctx->init_status;
    if (ctx->backend->error) return ctx->backend->error(&ctx->exec, ctx->err, sizeof ctx->err);
    return SMJ_OK;
}
const char *smj_ctx_error(const smj_ctx *ctx) { return ctx ? ctx->err : "no context"; }
const char *smj_ctx_backend_name(const smj_ctx *ctx) { return ctx->backend->name; }
int smj_ctx_threads(const smj_ctx *ctx) { return ctx->exec.nt; }
int smj_ctx_bf16_matmul(const smj_ctx *ctx) { return ctx->exec.bf16_matmul; }
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

smj_status smj_map_file(smj_ctx *ctx, const char *path, const uint8_t **map, size_t *len) {
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    void *m = n ? mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    int err = errno;
    close(fd);
    if (m == MAP_FAILED) SMJ_FAIL(ctx, SMJ_ERR_IO, "%s: mmap failed: %s", path, strerror(err));
    *map = m;
    *len = n;
    return SMJ_OK;
}
void smj_unmap_file(const uint8_t *map, size_t len) {
    if (map && len) munmap((void *)map, len);
}

/* CRC-32 (IEEE 802.3, reflected, as zlib): slicing by 4 over tables built on
 * the stack, about 1 GB/s — checkpoints of a few GB verify in seconds. */
uint32_t smj_crc32(uint32_t crc, const void *p, size_t n) {
    uint32_t t[4][256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int s = 1; s < 4; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 255];
    const uint8_t *b = p;
    crc = ~crc;
    for (; n >= 4; n -= 4, b += 4) {
        crc ^= (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        crc = t[3][crc & 255] ^ t[2][(crc >> 8) & 255] ^ t[1][(crc >> 16) & 255] ^ t[0][crc >> 24];
    }
    for (; n; n--, b++) crc = t[0][(crc ^ *b) & 255] ^ (crc >> 8);
    return ~crc;
}
