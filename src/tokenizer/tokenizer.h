/* tokenizer.h — internal interface of the byte-level BPE tokenizer.
 *
 * The public half (train/load/save/encode/decode) is in smedjan.h. This
 * header adds what the rest of the library, the exporters (GGUF,
 * tokenizer.json), the tests and the fuzz targets need beyond it:
 *   - building a tokenizer from bytes in memory or from a merge list,
 *   - serializing one to memory,
 *   - read access to the merges and the special tokens,
 *   - the GPT-2 pre-tokenizer and the Unicode classes it uses.
 *
 * Vocabulary layout (an invariant of every smj_tokenizer):
 *   ids 0..255                 the single bytes (id == byte value)
 *   ids 256..256+M-1           merge i makes id 256+i = bytes(left) ++ bytes(right),
 *                              with left, right < 256+i
 *   ids 256+M..256+M+S-1       special tokens; the first three are PAD, BOS, EOS
 *                              (smj_special order); they decode to nothing
 * That is the layout of every trained tokenizer and of file version 1
 * (smj_tokenizer_version() == 1). A version 2 tokenizer (imported from a HF
 * tokenizer.json) has an arbitrary layout: any id may be a byte, a merge
 * result or a special/added token; smj_tokenizer_byte_id,
 * smj_tokenizer_merge_result, smj_tokenizer_added_id and smj_tokenizer_kind
 * describe it (they also describe v1 tokenizers). Exporters that assume the
 * v1 layout must check smj_tokenizer_version().
 * The byte layout of the tokenizer file is in docs/FORMATS.md.
 */
#ifndef SMJ_TOKENIZER_INTERNAL_H
#define SMJ_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "smedjan.h"

#define SMJ_TOK_MAGIC "SMJTOKZ"         /* 8 bytes with its NUL */
#define SMJ_TOK_VERSION 1u              /* our trained layout (below) */
#define SMJ_TOK_VERSION2 2u             /* general vocabularies (imported from HF) */
#define SMJ_TOK_PATTERN_GPT2 1u         /* pre-tokenizer pattern ids (docs/FORMATS.md) */
#define SMJ_TOK_PATTERN_LLAMA3 2u
#define SMJ_TOK_PATTERN_QWEN2 3u
#define SMJ_TOK_FLAG_IGNORE_MERGES 1u   /* v2: a pre-token that is a whole token is that token */
#define SMJ_TOK_FLAG_NFC 2u             /* v2: encode applies Unicode NFC to the text first */
#define SMJ_TOK_FLAGS_KNOWN (SMJ_TOK_FLAG_IGNORE_MERGES | SMJ_TOK_FLAG_NFC)
/* Token kinds: plain tokens are byte strings made by BPE; special tokens
 * decode to nothing; added (non-special) tokens decode to their text. Encode
 * never produces special or added tokens. */
#define SMJ_TOK_KIND_PLAIN 0
#define SMJ_TOK_KIND_SPECIAL 1
#define SMJ_TOK_KIND_ADDED 2
#define SMJ_TOK_MAX_VOCAB (1 << 24)     /* every id is < 2^24 */
#define SMJ_TOK_MAX_SPECIAL 256         /* at most this many special tokens */
#define SMJ_TOK_MAX_SPECIAL_LEN 256     /* bytes of one special token's text */
#define SMJ_TOK_MAX_TOKEN_BYTES (1u << 28) /* sum of all tokens' byte lengths */

/* ---- building and serializing */

/* Parses a tokenizer file image data[0..n) (the format of
 * docs/FORMATS.md), validating everything. name_for_errors names the
 * source in messages (a path, or e.g. "<memory>"). On failure returns
 * SMJ_ERR_FORMAT (or SMJ_ERR_NOMEM) with one message in ctx, leaves *out
 * NULL, and never reads outside data[0..n). */
smj_status smj_tokenizer_from_bytes(smj_ctx *ctx, const uint8_t *data, size_t n,
                                    const char *name_for_errors, smj_tokenizer **out);

/* Builds a tokenizer from n_merges (left, right) pairs (pairs[2*i],
 * pairs[2*i+1]) and the default special tokens <|pad|>, <|begin_of_text|>,
 * <|end_of_text|>. Validates the merges like the loader (SMJ_ERR_INVALID). */
smj_status smj_tokenizer_from_merges(smj_ctx *ctx, const int32_t *pairs, int n_merges,
                                     smj_tokenizer **out);

/* Serializes tok into a new buffer *data of *len bytes (released with
 * smj_free): exactly the bytes smj_tokenizer_save writes. */
smj_status smj_tokenizer_to_bytes(smj_ctx *ctx, const smj_tokenizer *tok, uint8_t **data,
                                  size_t *len);

/* ---- read access for exporters */

/* 1 for our layout (file version 1), 2 for a general vocabulary. */
int smj_tokenizer_version(const smj_tokenizer *tok);
/* The pre-tokenizer pattern id (SMJ_TOK_PATTERN_*). */
int smj_tokenizer_pattern(const smj_tokenizer *tok);
/* SMJ_TOK_FLAG_* (0 for version 1). */
uint32_t smj_tokenizer_flags(const smj_tokenizer *tok);
/* The id merge i makes (v1: 256 + i), -1 when i is out of range. */
int32_t smj_tokenizer_merge_result(const smj_tokenizer *tok, int i);
/* The id of special/added token i (0 <= i < num_special; increasing ids;
 * v1: 256 + M + i), -1 when out of range. */
int32_t smj_tokenizer_added_id(const smj_tokenizer *tok, int i);
/* SMJ_TOK_KIND_* of id, -1 when out of range. */
int smj_tokenizer_kind(const smj_tokenizer *tok, int32_t id);
/* The token id of the single byte b (v1: b), -1 when b is not 0..255. */
int32_t smj_tokenizer_byte_id(const smj_tokenizer *tok, int b);
/* Number of merges M (v1: vocab = 256 + M + number of special tokens). */
int smj_tokenizer_num_merges(const smj_tokenizer *tok);
/* Merge i (0 <= i < M) made id 256+i from (*left, *right). Returns 0, or -1
 * (outputs untouched) when i is out of range. */
int smj_tokenizer_merge(const smj_tokenizer *tok, int i, int32_t *left, int32_t *right);
/* Number of special and added tokens (v1: >= 3, the first three are PAD, BOS, EOS). */
int smj_tokenizer_num_special(const smj_tokenizer *tok);
/* Text of special/added token i (0 <= i < num_special; its id is
 * smj_tokenizer_added_id(i), in v1 256 + M + i),
 * NUL-terminated, *len bytes (len may be NULL). NULL when out of range. */
const char *smj_tokenizer_special_text(const smj_tokenizer *tok, int i, size_t *len);

/* ---- the GPT-2 pre-tokenizer (pretok.c) */

/* Character classes of the pattern. An invalid UTF-8 byte is OTHER. */
typedef enum { SMJ_UCLASS_OTHER = 0, SMJ_UCLASS_LETTER, SMJ_UCLASS_NUMBER, SMJ_UCLASS_SPACE } smj_uclass;

/* Class of code point cp (\p{L}, \p{N}, White_Space, or other). */
smj_uclass smj_unicode_class(uint32_t cp);

/* Decodes one UTF-8 character at s[0..n), n >= 1: stores the code point in
 * *cp and returns its length 1..4. A byte that does not start a valid,
 * shortest-form, non-surrogate sequence <= U+10FFFF returns length 1 and
 * *cp = 0xFFFFFFFF (classified OTHER). */
int smj_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* The pre-token starting at s[pos] (pos < n) ends at the returned offset
 * (> pos). Pre-tokens tile the input: pos = 0, then each returned end, until
 * n. The split equals GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * applied as a leftmost-first regex (as HF tokenizers and llama.cpp do). */
size_t smj_pretok_next(const uint8_t *s, size_t n, size_t pos);

/* The same for pattern id `pattern` (SMJ_TOK_PATTERN_*; anything else is
 * GPT-2). Llama-3 (2):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * Qwen2 (3): the same with \p{N} in place of \p{N}{1,3}. */
size_t smj_pretok_next_pattern(int pattern, const uint8_t *s, size_t n, size_t pos);

/* ---- Unicode NFC (nfc.c) */

/* Writes the NFC normalization (UAX #15; Unicode version of nfc_tables.h)
 * of in[0..n) to a new buffer *out of *out_n bytes (released with free();
 * never NULL on success, even for n == 0). Bytes that are not valid UTF-8
 * are copied through unchanged. Returns 0, or -1 when out of memory (then
 * *out is NULL). */
int smj_nfc(const uint8_t *in, size_t n, uint8_t **out, size_t *out_n);

#endif
