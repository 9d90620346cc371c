/* hf.h — internal pieces of the HuggingFace interop (docs/HF.md): the
 * config.json mapping and the tokenizer.json conversion, exposed for the
 * model import/export (hf_model.c), the tests and the fuzz targets.
 */
#ifndef SMJ_HF_H
#define SMJ_HF_H

#include <stddef.h>
#include "smedjan.h"
#include "json.h"

/* ---- config.json (hf_config.c) */

/* Maps a config.json text onto *cfg. max_seq_len: 0 = the file's
 * max_position_embeddings capped at SMJ_HF_MAX_SEQ_LEN and at an active
 * sliding window, else this value. notes (notes_cap bytes, may be NULL) gets
 * one line per adjustment. Unsupported architectures and keys are
 * SMJ_ERR_UNSUPPORTED naming them; missing or mistyped keys SMJ_ERR_FORMAT.
 * *arch (may be NULL) gets the architecture name (static storage). */
smj_status smj_hf_config_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, int max_seq_len,
                               smj_model_config *cfg, const char **arch, char *notes, size_t notes_cap);

/* config.json for cfg: LlamaForCausalLM, or Qwen3ForCausalLM when qk_norm.
 * tok (may be NULL) supplies bos/eos/pad ids; bf16 picks torch_dtype. */
smj_status smj_hf_config_json(smj_ctx *ctx, const smj_model_config *cfg, const smj_tokenizer *tok, int bf16,
                              smj_jbuf *out);
smj_status smj_hf_generation_config_json(smj_ctx *ctx, const smj_tokenizer *tok, smj_jbuf *out);

/* ---- tokenizer.json (hf_tokenizer.c) */

/* GPT-2's bytes_to_unicode: the code point standing for byte b. */
uint32_t smj_hf_byte_char(int b);
/* The pre-tokenizer regex written into tokenizer.json (GPT-2's pattern). */
extern const char SMJ_HF_GPT2_PATTERN[];
extern const char SMJ_HF_LLAMA3_PATTERN[];
extern const char SMJ_HF_QWEN2_PATTERN[];

/* tokenizer.json / tokenizer_config.json text for tok. Refuses
 * (SMJ_ERR_UNSUPPORTED) a tokenizer two of whose ids have the same bytes, or
 * a special token whose text is not UTF-8 or equals a vocabulary token's. */
smj_status smj_hf_tokenizer_json(smj_ctx *ctx, const smj_tokenizer *tok, smj_jbuf *out);
smj_status smj_hf_tokenizer_config_json(smj_ctx *ctx, const smj_tokenizer *tok, int model_max_length,
                                        smj_jbuf *out);
/* Parses tokenizer.json text (see smj_tokenizer_import_hf). */
smj_status smj_hf_tokenizer_parse(smj_ctx *ctx, const char *text, size_t n, const char *name,
                                  smj_tokenizer **out);
/* The same with the text of tokenizer_config.json (cfg_text may be NULL),
 * which names PAD, BOS and EOS (docs/HF.md). */
smj_status smj_hf_tokenizer_parse_cfg(smj_ctx *ctx, const char *text, size_t n, const char *cfg_text,
                                      size_t cfg_n, const char *name, smj_tokenizer **out);

#endif
