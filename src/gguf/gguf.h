/* gguf.h — internal interface of the GGUF writer, reader and quantizers.
 *
 * The public half (smj_export_gguf, smj_gguf_open and the accessors) is in
 * the GGUF section of smedjan.h; docs/GGUF.md describes what is written.
 * This header adds what the tests and the fuzz target need beyond it: the
 * in-memory parser, the GGML block quantizers and the Q/K row permutation.
 *
 * GGML block layouts (the GGUF spec / ggml-common.h; little-endian):
 *   q8_0: 32 values -> 34 bytes: fp16 d, int8 qs[32];            x = qs[j] * d
 *   q4_0: 32 values -> 18 bytes: fp16 d, uint8 qs[16] where the low nibble of
 *         qs[j] is value j and the high nibble is value j + 16;  x = (q - 8) * d
 * The quantizers reproduce ggml's reference ones bit for bit:
 *   q8_0: amax = max |x|, d = amax / 127, id = d ? 1/d : 0, q = roundf(x * id)
 *   q4_0: max = the x of largest magnitude (the first one on ties),
 *         d = max / -8, id = d ? 1/d : 0, q = min(15, (int8)(x * id + 8.5f))
 *   with d stored as IEEE half, rounded to nearest even.
 */
#ifndef SMJ_GGUF_INTERNAL_H
#define SMJ_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "smedjan.h"

#define SMJ_GGUF_MAGIC "GGUF"
#define SMJ_GGUF_VERSION 3u
#define SMJ_GGUF_DEFAULT_ALIGNMENT 32u
#define SMJ_GGUF_MAX_NAME 63        /* GGML_MAX_NAME (64) minus the NUL */
#define SMJ_GGUF_MAX_DIMS 4

/* GGML tensor type ids used here (ggml.h's enum ggml_type). */
enum {
    SMJ_GGML_F32 = 0, SMJ_GGML_F16 = 1, SMJ_GGML_Q4_0 = 2, SMJ_GGML_Q4_1 = 3,
    SMJ_GGML_Q5_0 = 6, SMJ_GGML_Q5_1 = 7, SMJ_GGML_Q8_0 = 8, SMJ_GGML_Q8_1 = 9,
    SMJ_GGML_Q2_K = 10, SMJ_GGML_Q3_K = 11, SMJ_GGML_Q4_K = 12, SMJ_GGML_Q5_K = 13,
    SMJ_GGML_Q6_K = 14, SMJ_GGML_Q8_K = 15, SMJ_GGML_I8 = 24, SMJ_GGML_I16 = 25,
    SMJ_GGML_I32 = 26, SMJ_GGML_I64 = 27, SMJ_GGML_F64 = 28, SMJ_GGML_BF16 = 30
};

/* llama.cpp's general.file_type values (enum llama_ftype) for what we write. */
enum { SMJ_FTYPE_ALL_F32 = 0, SMJ_FTYPE_MOSTLY_F16 = 1, SMJ_FTYPE_MOSTLY_Q4_0 = 2,
       SMJ_FTYPE_MOSTLY_Q8_0 = 7 };

/* ---- types and sizes */

/* Values per block and bytes per block of a GGML type; 0 (both) if unknown. */
int smj_ggml_type_size(int type, int *block_values, int *block_bytes);
/* Name of a GGML type ("f32", "q8_0", ...) or NULL when unknown. */
const char *smj_ggml_type_name(int type);
/* Bytes of one row of ne0 values; -1 when the type is unknown or ne0 is not
 * a multiple of its block size. */
int64_t smj_ggml_row_bytes(int type, int64_t ne0);

/* ---- conversions (k is a multiple of 32 for the block types) */

uint16_t smj_fp32_to_fp16(float f); /* round to nearest even; NaN -> quiet NaN */
float smj_fp16_to_fp32(uint16_t h);
void smj_quantize_f16(const float *x, uint8_t *y, int64_t k);
void smj_quantize_q8_0(const float *x, uint8_t *y, int64_t k);
void smj_quantize_q4_0(const float *x, uint8_t *y, int64_t k);
/* Dequantizes k values of type (F32, F16, BF16, Q8_0, Q4_0) from src into
 * dst. Returns 0, or -1 for any other type (nothing written). */
int smj_dequantize(int type, const uint8_t *src, float *dst, int64_t k);

/* ---- RoPE layout */

/* Reorders the rows of a [n_heads*head_dim, cols] projection, per head:
 * forward (inverse = 0) row 2j+s of a head takes row s*head_dim/2 + j
 * (HF's half-split pairs (j, j+hd/2) become adjacent pairs (2j, 2j+1), what
 * llama.cpp's interleaved "NORM" RoPE of the llama architecture rotates —
 * the permutation convert_hf_to_gguf.py applies to q_proj/k_proj);
 * inverse = 1 undoes it. src and dst must not overlap. */
void smj_gguf_permute_rows(const float *src, float *dst, int n_heads, int head_dim, int64_t cols,
                           int inverse);

/* ---- names and weights */

/* The GGUF name (token_embd.weight, blk.N.attn_q.weight, ...) of one of our
 * HF-style tensor names into out[cap]; returns 1, or 0 when it has none. */
int smj_gguf_tensor_name(const char *hf, char *out, size_t cap);

/* Fills the weights of m (created with the config the file was exported
 * from) from the tensors of g: finds each by its GGUF name, checks shape,
 * dequantizes (f32/f16/bf16/q8_0/q4_0) and undoes the Q/K row permutation
 * of the llama architecture. SMJ_ERR_FORMAT names a missing or misshapen
 * tensor or an architecture that does not match m's QK-norm setting. Used
 * by the tests to run exported (quantized) weights in our own engine. */
smj_status smj_gguf_load_weights(smj_ctx *ctx, const smj_gguf *g, smj_model *m);

/* The model config a llama/qwen3 GGUF file describes (its metadata and the
 * token_embd shape; tied when output.weight is absent). */
smj_status smj_gguf_model_config(smj_ctx *ctx, const smj_gguf *g, smj_model_config *c);

/* Our tokenizer from the file's embedded one, when it is in the layout
 * smj_export_gguf writes (tokenizer.ggml.model "gpt2"; 256 byte tokens in
 * GPT-2's alphabet, merge i building token 256 + i, 3 special tokens);
 * SMJ_ERR_UNSUPPORTED with an explanation otherwise. */
smj_status smj_gguf_tokenizer(smj_ctx *ctx, const smj_gguf *g, smj_tokenizer **out);

/* ---- the parser */

/* Parses a GGUF image data[0..n) (versions 2 and 3), validating everything
 * (see reader.c). The result borrows data, which must outlive it. On failure
 * returns SMJ_ERR_FORMAT (or SMJ_ERR_NOMEM) with one message naming
 * name_for_errors, leaves *out NULL and never reads outside data[0..n). */
smj_status smj_gguf_parse(smj_ctx *ctx, const uint8_t *data, size_t n, const char *name_for_errors,
                          smj_gguf **out);

/* Drops the memory pages that lie wholly inside tensor i's data (madvise
 * MADV_DONTNEED on the read-only mapping) once the caller has copied it:
 * loading a file then does not keep the whole file resident next to the
 * copies. The data stays readable (pages are read from the file again). */
void smj_gguf_release(const smj_gguf *g, int i);

/* The GPT-2 byte-to-unicode map: the code point byte b is written as in
 * byte-level BPE vocabularies (printable bytes map to themselves). */
uint32_t smj_gguf_byte_to_cp(uint8_t b);

#endif
