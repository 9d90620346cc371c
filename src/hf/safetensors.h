/* safetensors.h — reading and writing the safetensors format, single files
 * and sharded checkpoints (model.safetensors.index.json).
 *
 * Format (huggingface/safetensors): u64 little-endian N, then N bytes of a
 * JSON object (UTF-8, may be padded at the end with spaces), then the byte
 * buffer. The object maps each tensor name to {"dtype", "shape",
 * "data_offsets": [begin, end]} (offsets relative to the byte buffer, row-major
 * little-endian data) and may hold "__metadata__" (string -> string).
 *
 * The reader validates everything before any data is used: N <= 100 MB and
 * <= file size - 8; the header is a JSON object (strict parser, json.h);
 * names unique and non-empty; dtype known; shape a list of non-negative
 * integers (at most SMJ_ST_MAX_DIMS); data_offsets two integers with begin <=
 * end <= buffer size; (end - begin) == element size x product(shape); and the
 * tensors, ordered by offset, tile the buffer exactly (no gap, no overlap, no
 * trailing bytes). Unknown keys inside a tensor entry are ignored. Any
 * violation is SMJ_ERR_FORMAT with a message naming the file (and tensor);
 * a dtype this library does not know is SMJ_ERR_UNSUPPORTED naming the
 * tensor and dtype. Files are memory-mapped (read-only).
 *
 * Conversion to fp32 is supported from F32, BF16 (exact: the bits shifted up)
 * and F16 (exact, subnormals/inf/nan included); other dtypes give
 * SMJ_ERR_UNSUPPORTED naming the tensor and dtype.
 */
#ifndef SMJ_HF_SAFETENSORS_H
#define SMJ_HF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "smedjan.h"

#define SMJ_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define SMJ_ST_MAX_DIMS 8
#define SMJ_ST_DEFAULT_SHARD_BYTES ((uint64_t)5 * 1000 * 1000 * 1000)

typedef enum {
    SMJ_ST_BOOL, SMJ_ST_U8, SMJ_ST_I8, SMJ_ST_F8_E5M2, SMJ_ST_F8_E4M3, SMJ_ST_I16, SMJ_ST_U16,
    SMJ_ST_F16, SMJ_ST_BF16, SMJ_ST_I32, SMJ_ST_U32, SMJ_ST_F32, SMJ_ST_F64, SMJ_ST_I64, SMJ_ST_U64,
    SMJ_ST_NDTYPES
} smj_st_dtype;

const char *smj_st_dtype_name(smj_st_dtype d);
int smj_st_dtype_size(smj_st_dtype d);

typedef struct {
    const char *name;
    smj_st_dtype dtype;
    int ndim;
    int64_t shape[SMJ_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* relative to the byte buffer */
} smj_st_tensor;

typedef struct smj_st_file smj_st_file;

/* Parses a complete safetensors image buf[0..n) without copying the data:
 * buf must outlive the result. name_for_errors names it in messages. */
smj_status smj_st_parse(smj_ctx *ctx, const uint8_t *buf, size_t n, const char *name_for_errors,
                        smj_st_file **out);
/* Memory-maps path and parses it. */
smj_status smj_st_open(smj_ctx *ctx, const char *path, smj_st_file **out);
void smj_st_close(smj_st_file *f);

const char *smj_st_path(const smj_st_file *f);
int smj_st_count(const smj_st_file *f);
/* Tensor i in header order. */
const smj_st_tensor *smj_st_get(const smj_st_file *f, int i);
/* Index of the tensor called name, or -1. */
int smj_st_find(const smj_st_file *f, const char *name);
/* Raw bytes of tensor i. */
const uint8_t *smj_st_data(const smj_st_file *f, int i);
/* __metadata__ entries (0 when absent); key/value of entry i. */
int smj_st_meta_count(const smj_st_file *f);
const char *smj_st_meta_key(const smj_st_file *f, int i);
const char *smj_st_meta_value(const smj_st_file *f, int i);
/* Value of metadata key, or NULL. */
const char *smj_st_meta(const smj_st_file *f, const char *key);

/* Converts tensor i to fp32 into dst[numel]. */
smj_status smj_st_read_f32(smj_ctx *ctx, const smj_st_file *f, int i, float *dst);

/* Scalar conversions (exact). */
float smj_bf16_to_f32(uint16_t h);
float smj_f16_to_f32(uint16_t h);
/* Round to nearest even; NaN stays a (quiet) NaN, overflow goes to inf. */
uint16_t smj_f32_to_bf16(float f);

/* ---- a whole checkpoint: one model.safetensors, or the shards named by
 * model.safetensors.index.json ("weight_map": tensor name -> file in the same
 * directory; plain file names only). Every tensor of every shard must be in
 * the weight map under its own file, every entry of the map must exist, and
 * names are unique across shards. */
typedef struct smj_st_set smj_st_set;

/* Opens dir/model.safetensors.index.json when it exists, else
 * dir/model.safetensors. */
smj_status smj_st_set_open(smj_ctx *ctx, const char *dir, smj_st_set **out);
void smj_st_set_close(smj_st_set *s);
/* All tensors, shard by shard in header order. */
int smj_st_set_count(const smj_st_set *s);
const smj_st_tensor *smj_st_set_get(const smj_st_set *s, int i, const smj_st_file **file, int *index);
/* Position (for smj_st_set_get) of the tensor called name, or -1. */
int smj_st_set_find(const smj_st_set *s, const char *name);
int smj_st_set_num_files(const smj_st_set *s);

/* ---- writing */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[SMJ_ST_MAX_DIMS];
    const float *data; /* numel fp32 values */
} smj_st_wtensor;

typedef struct {
    int bf16;                 /* 0: F32, 1: BF16 (round to nearest even) */
    uint64_t max_shard_bytes; /* 0 = SMJ_ST_DEFAULT_SHARD_BYTES (5 GB) */
} smj_st_write_options;

/* Writes the tensors (in the given order; names must be unique) to
 * dir/model.safetensors, or — when their data exceeds max_shard_bytes — to
 * dir/model-0000i-of-0000n.safetensors shards (a new shard starts when the
 * next tensor would overflow the current one) plus
 * dir/model.safetensors.index.json. Header: {"__metadata__":{"format":"pt"},
 * tensors in order with contiguous offsets}, padded with spaces to a
 * multiple of 8 bytes. opts NULL means F32, 5 GB. All files are written to temporary names first and
 * renamed only when every one of them is complete. *n_files (may be NULL)
 * gets the number of safetensors files written. */
smj_status smj_st_write(smj_ctx *ctx, const char *dir, const smj_st_wtensor *t, int n,
                        const smj_st_write_options *opts, int *n_files);
/* The image of one single-file safetensors (F32 or BF16) in a new buffer
 * (free with free()). */
smj_status smj_st_serialize(smj_ctx *ctx, const smj_st_wtensor *t, int n, smj_st_dtype dtype,
                            uint8_t **out, size_t *out_len);

#endif
