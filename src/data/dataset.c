/* dataset.c — token files: written once by `prepare`, memory-mapped by
 * training.
 *
 * Layout (little-endian, docs/FORMATS.md): a 64-byte header — magic
 * "SMJTOKS\0", u32 version (1), u32 token width in bytes (2 or 4), u32 vocab
 * size, u32 reserved, u64 token count, u32 CRC-32 of the token bytes, zero
 * padding — then count tokens of that width. Opening checks the magic,
 * version, width, that the size matches the count exactly, and that every
 * token is below the vocab size (one pass, which also verifies the CRC).
 *
 * The batch cursor is sequential: batch i reads B windows of T+1 tokens from
 * position pos, then pos += B*T; at the end it wraps to 0. This is what
 * makes resume exact: the cursor is two integers saved with the state.
 */
#include <stdatomic.h>
#include <string.h>
#include "../core/core.h"

#define DS_MAGIC "SMJTOKS"
#define DS_VERSION 1
#define DS_HEADER 64

struct smj_dataset {
    const uint8_t *map;
    size_t map_len;
    const uint8_t *tokens;
    int64_t n;
    int width, vocab;
    uint64_t serial; /* unique in the process (smj_dataset_serial) */
};
static atomic_uint_fast64_t ds_serials;

smj_status smj_dataset_write(smj_ctx *ctx, const char *path, const int32_t *ids, int64_t n, int vocab) {
    SMJ_CHECK(ctx, vocab >= 1 && vocab <= (1 << 30), SMJ_ERR_INVALID, "%s: bad vocab size %d", path, vocab);
    SMJ_CHECK(ctx, n >= 0, SMJ_ERR_INVALID, "%s: negative token count", path);
    int width = vocab <= 65536 ? 2 : 4;
    for (int64_t i = 0; i < n; i++)
        SMJ_CHECK(ctx, ids[i] >= 0 && ids[i] < vocab, SMJ_ERR_INVALID,
                  "%s: token %d at %lld is outside the vocabulary (%d)", path, ids[i], (long long)i, vocab);
    uint8_t *buf = malloc((size_t)(n ? n : 1) * width);
    if (!buf) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++) {
        if (width == 2) { buf[2 * i] = (uint8_t)ids[i]; buf[2 * i + 1] = (uint8_t)(ids[i] >> 8); }
        else smj_wr_u32(buf + 4 * i, (uint32_t)ids[i]);
    }
    uint8_t h[DS_HEADER] = {0};
    memcpy(h, DS_MAGIC, 8);
    smj_wr_u32(h + 8, DS_VERSION);
    smj_wr_u32(h + 12, (uint32_t)width);
    smj_wr_u32(h + 16, (uint32_t)vocab);
    smj_wr_u64(h + 24, (uint64_t)n);
    smj_wr_u32(h + 32, smj_crc32(0, buf, (size_t)n * width));
    smj_wfile w;
    smj_status st = smj_wfile_open(ctx, &w, path);
    if (st) { free(buf); return st; }
    smj_wfile_write(&w, h, sizeof h);
    smj_wfile_write(&w, buf, (size_t)n * width);
    free(buf);
    return smj_wfile_commit(ctx, &w);
}

smj_status smj_dataset_open(smj_ctx *ctx, const char *path, smj_dataset **out) {
    *out = NULL;
    const uint8_t *map;
    size_t len;
    SMJ_TRY(smj_map_file(ctx, path, &map, &len));
    if (len < DS_HEADER) {
        smj_unmap_file(map, len);
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: not a smedjan token file (%zu bytes, too short for the header)", path, len);
    }
    smj_status st = SMJ_OK;
    uint32_t version = smj_rd_u32(map + 8), width = smj_rd_u32(map + 12), vocab = smj_rd_u32(map + 16);
    uint64_t n = smj_rd_u64(map + 24);
    if (memcmp(map, DS_MAGIC, 8) != 0)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: not a smedjan token file (bad magic; make one with `smedjan prepare`)", path);
    else if (version != DS_VERSION)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: token file version %u, this build reads version %d", path, version, DS_VERSION);
    else if (width != 2 && width != 4)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: token width %u (must be 2 or 4)", path, width);
    else if (vocab < 1 || vocab > (1u << 30))
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: vocab size %u out of range", path, vocab);
    else if (n > (uint64_t)(len - DS_HEADER) / width || DS_HEADER + n * width != len)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: header says %llu tokens of %u bytes but the file has %zu data bytes (truncated or corrupt)",
                           path, (unsigned long long)n, width, len - DS_HEADER);
    else if (smj_crc32(0, map + DS_HEADER, n * width) != smj_rd_u32(map + 32))
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: checksum mismatch (the token data is corrupt)", path);
    if (st) { smj_unmap_file(map, len); return st; }
    smj_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) { smj_unmap_file(map, len); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory"); }
    ds->map = map; ds->map_len = len; ds->tokens = map + DS_HEADER;
    ds->n = (int64_t)n; ds->width = (int)width; ds->vocab = (int)vocab;
    ds->serial = atomic_fetch_add(&ds_serials, 1) + 1;
    for (int64_t i = 0; i < ds->n; i++)
        if (smj_dataset_token(ds, i) >= ds->vocab) {
            int32_t t = smj_dataset_token(ds, i);
            smj_dataset_free(ds);
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: token %d at %lld is outside the vocabulary (%u)", path, t, (long long)i, vocab);
        }
    *out = ds;
    return SMJ_OK;
}

void smj_dataset_free(smj_dataset *ds) {
    if (!ds) return;
    smj_unmap_file(ds->map, ds->map_len);
    free(ds);
}

int64_t smj_dataset_num_tokens(const smj_dataset *ds) { return ds->n; }
int smj_dataset_vocab_size(const smj_dataset *ds) { return ds->vocab; }
uint64_t smj_dataset_serial(const smj_dataset *ds) { return ds->serial; }
int32_t smj_dataset_token(const smj_dataset *ds, int64_t i) {
    const uint8_t *p = ds->tokens + i * ds->width;
    return ds->width == 2 ? (int32_t)(p[0] | p[1] << 8) : (int32_t)smj_rd_u32(p);
}

smj_status smj_dataset_next_batch(smj_ctx *ctx, const smj_dataset *ds, int B, int T, int64_t *pos,
                                  int64_t *epoch, int32_t *inputs, int32_t *targets) {
    SMJ_CHECK(ctx, B >= 1 && T >= 1, SMJ_ERR_INVALID, "batch %d x %d must be positive", B, T);
    SMJ_CHECK(ctx, ds->n >= (int64_t)T + 1, SMJ_ERR_INVALID,
              "the dataset has %lld tokens, fewer than one window of seq-len+1 = %d; use a smaller --seq-len or more data",
              (long long)ds->n, T + 1);
    int64_t p = *pos;
    if (p < 0 || p > ds->n) p = 0;
    for (int b = 0; b < B; b++) {
        if (p + T + 1 > ds->n) { p = 0; if (epoch) (*epoch)++; }
        for (int t = 0; t < T; t++) {
            inputs[(int64_t)b * T + t] = smj_dataset_token(ds, p + t);
            targets[(int64_t)b * T + t] = smj_dataset_token(ds, p + t + 1);
        }
        p += T;
    }
    *pos = p;
    return SMJ_OK;
}
