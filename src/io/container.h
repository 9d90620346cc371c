/* container.h — the one file format behind model checkpoints (.ckpt) and
 * training states (state.bin): a small header, "key=value" text metadata, a
 * table of named tensors, 64-byte aligned data, and a trailing CRC-32.
 * docs/FORMATS.md has the byte layout.
 *
 * Readers map the file and validate everything before handing out pointers:
 * magic, version, kind, every length and offset against the file size, name
 * and dtype sanity, and the CRC. Writers go through smj_wfile (temp+rename).
 */
#ifndef SMJ_CONTAINER_H
#define SMJ_CONTAINER_H
#include "../core/core.h"

enum { SMJ_CT_MODEL = 1, SMJ_CT_TRAIN_STATE = 2 };
enum { SMJ_DT_F32 = 0 };

typedef struct {
    char name[128];
    uint32_t dtype, ndim;
    int64_t shape[4];
    uint64_t offset, nbytes; /* offset from the start of the data section */
    const void *data;        /* reader: points into the mapping; writer: source */
} smj_ct_entry;

typedef struct {
    const uint8_t *map;
    size_t len;
    uint32_t kind;
    char *meta;          /* NUL-terminated copy of the metadata text */
    int n;
    smj_ct_entry *e;
} smj_container;

smj_status smj_container_read(smj_ctx *ctx, const char *path, smj_container *c);
void smj_container_free(smj_container *c);
/* Value of "key=value" in the metadata, copied into buf; NULL if absent. */
const char *smj_container_meta(const smj_container *c, const char *key, char *buf, size_t cap);
const smj_ct_entry *smj_container_find(const smj_container *c, const char *name);

/* Writes a container atomically. Each entry's name/dtype/ndim/shape/data
 * must be set; offsets and sizes are computed. */
smj_status smj_container_write(smj_ctx *ctx, const char *path, uint32_t kind, const char *meta,
                               smj_ct_entry *e, int n);

/* Config <-> metadata text (appended to / parsed from "key=value" lines). */
void smj_config_to_meta(const smj_model_config *cfg, char *buf, size_t cap);
smj_status smj_config_from_container(smj_ctx *ctx, const char *path, const smj_container *c,
                                     smj_model_config *cfg);
#endif
