/* core.h — what every file of the library shares: the context, error
 * reporting, allocation, a seeded RNG and atomic file writing.
 *
 * Errors travel as smj_status return values. SMJ_FAIL(ctx, status, fmt, ...)
 * records a message in the context and returns the status; SMJ_TRY forwards a
 * failing status unchanged. Nothing here exits or prints.
 */
#ifndef SMJ_CORE_H
#define SMJ_CORE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "smedjan.h"

struct smj_backend;

/* Where an op runs: the CPU team size, and for device backends their
 * per-context state (stream, BLAS handle). Every op of the op table takes
 * one; it lives in the smj_ctx. */
typedef struct smj_exec {
    int nt;     /* OpenMP threads for CPU ops */
    void *impl; /* backend-owned state; NULL for host backends */
    int bf16_matmul; /* smj_ctx_options.bf16_matmul (0 or 1), set before the backend's init:
                        1 = bf16 tensor-core matmuls with fp32 accumulation (CUDA; host
                        backends ignore it) */
} smj_exec;

struct smj_ctx {
    smj_exec exec;                     /* threads and backend state for every op */
    const struct smj_backend *backend; /* the op table in use */
    char err[1024];                    /* message of the last failure */
    smj_status init_status;            /* SMJ_OK, or why the backend is unavailable */
};

/* Records a formatted message in ctx (NULL allowed) and returns s. */
smj_status smj_set_error(smj_ctx *ctx, smj_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SMJ_FAIL(ctx, st, ...) return smj_set_error((ctx), (st), __VA_ARGS__)
#define SMJ_CHECK(ctx, cond, st, ...) \
    do { if (!(cond)) SMJ_FAIL(ctx, st, __VA_ARGS__); } while (0)
#define SMJ_TRY(expr) \
    do { smj_status smj_s_ = (expr); if (smj_s_ != SMJ_OK) return smj_s_; } while (0)

/* 64-byte aligned, zeroed allocation; NULL on failure or n == 0 overflow. */
void *smj_alloc(size_t n);
void smj_afree(void *p);

/* ---- datasets (src/data/dataset.c): a number no other dataset opened in
 * this process has (a freed one's memory may come back at the same
 * address: the trainer tells its datasets apart by this). */
uint64_t smj_dataset_serial(const smj_dataset *ds);

/* ---- RNG: xoshiro256** seeded by splitmix64; state is the caller's. */
typedef struct { uint64_t s[4]; } smj_rng;
void smj_rng_seed(smj_rng *r, uint64_t seed);
uint64_t smj_rng_u64(smj_rng *r);
double smj_rng_uniform(smj_rng *r);   /* [0, 1) */
float smj_rng_normal(smj_rng *r);     /* N(0, 1), Box-Muller */
uint64_t smj_splitmix64(uint64_t *x);

/* ---- atomic writes: data goes to "<path>.tmp.<pid>", then fsync + rename.
 * On failure the temp file is removed and the old file is untouched. */
typedef struct { FILE *f; char path[4096]; char tmp[4128]; int failed; } smj_wfile;
smj_status smj_wfile_open(smj_ctx *ctx, smj_wfile *w, const char *path);
void smj_wfile_write(smj_wfile *w, const void *p, size_t n);
smj_status smj_wfile_commit(smj_ctx *ctx, smj_wfile *w);
void smj_wfile_abort(smj_wfile *w);

/* ---- reading whole files and little-endian helpers */
smj_status smj_read_file(smj_ctx *ctx, const char *path, uint8_t **data, size_t *len);
/* Maps a whole regular file read-only (*map NULL when it is empty); the
 * errors name the path. smj_unmap_file undoes it (NULL: nothing). */
smj_status smj_map_file(smj_ctx *ctx, const char *path, const uint8_t **map, size_t *len);
void smj_unmap_file(const uint8_t *map, size_t len);
uint32_t smj_crc32(uint32_t crc, const void *p, size_t n);

static inline uint32_t smj_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t smj_rd_u64(const uint8_t *p) {
    return (uint64_t)smj_rd_u32(p) | (uint64_t)smj_rd_u32(p + 4) << 32;
}
static inline void smj_wr_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void smj_wr_u64(uint8_t *p, uint64_t v) {
    smj_wr_u32(p, (uint32_t)v); smj_wr_u32(p + 4, (uint32_t)(v >> 32));
}

#endif
