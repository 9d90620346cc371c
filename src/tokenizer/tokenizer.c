/* tokenizer.c — the byte-level BPE tokenizer object: building it from merges,
 * the tok.bin file (load, save, in-memory parse), encoding and decoding.
 * Training lives in bpe_train.c, pre-tokenization in pretok.c.
 *
 * Object invariants (established by build()/from_bytes_v2() and never changed after):
 *   - v1: merges[2i], merges[2i+1] < 256 + i and mres[i] = 256 + i; v2:
 *     bytes(mres[i]) = bytes(left) ++ bytes(right), all three plain tokens;
 *     no pair appears twice;
 *   - token bytes of id t are blob[off[t] .. off[t]+len[t]) for every id
 *     (special/added: its text), NUL-terminated;
 *   - pairmap maps (left, right) -> rank i of the merge making 256+i; it is an
 *     open-addressing table, power-of-two sized, at most half full;
 *   - the tokenizer is immutable after construction, so encode/decode may run
 *     concurrently on one tokenizer (all scratch memory is per call).
 *
 * Encoding: the text is cut into GPT-2 pre-tokens; each pre-token starts as
 * its bytes and is merged by rank: repeatedly, the adjacent pair with the
 * lowest merge rank (leftmost first on ties) is replaced by its merged token
 * — the rule of HF tokenizers' BPE model. A min-heap of candidate (rank,
 * position) over a linked list of symbols makes one pre-token O(L log L), so
 * a megabyte of spaces is no slower than a megabyte of words. Pre-tokens up
 * to CACHE_MAX_WORD bytes are memoized per call.
 *
 * Two shapes share this code (see tokenizer.h): version 1, our trained layout
 * (bytes at 0..255, merge i makes 256+i, specials after), and version 2, a
 * general vocabulary imported from HF (byte_id[], mres[], kind[] say where
 * everything is; tm_ids maps token bytes to ids for validation and for
 * ignore_merges). Version 1 fills the same tables, so encode/decode have one
 * path.
 *
 * Deliberately not done: special/added-token text in the input is NOT
 * recognized (it encodes as plain bytes). Normalization: only NFC, and only
 * for a v2 tokenizer with SMJ_TOK_FLAG_NFC (imported from a tokenizer.json
 * whose normalizer is NFC): encode normalizes the text first (nfc.c); decode
 * does not, so decode(encode(s)) == s only for NFC text.
 */
#include "tokenizer.h"
#include <string.h>
#include "../core/core.h"

struct smj_tokenizer {
    int version;        /* 1: our trained layout (file v1), 2: general vocabulary */
    int pattern;        /* SMJ_TOK_PATTERN_* */
    uint32_t flags;     /* v2: SMJ_TOK_FLAG_* */
    int n_vocab;        /* V: every id is < V */
    int n_merges;       /* M */
    int n_added;        /* special and added tokens (v1: S >= 3, all special) */
    int32_t special_ids[3]; /* PAD, BOS, EOS (smj_special order), -1 when none */
    int32_t byte_id[256];   /* token id of each single byte */
    int32_t *merges;    /* [2*M] (left, right) in rank order */
    int32_t *mres;      /* [M] id the merge of rank i makes (v1: 256 + i) */
    uint8_t *kind;      /* [V] SMJ_TOK_KIND_* */
    uint8_t *blob;      /* every token's bytes (special/added: its text), each followed by a NUL */
    size_t *off;        /* [V] offset of each token in blob */
    uint32_t *len;      /* [V] byte length of each token */
    int32_t *added;     /* [n_added] ids of the special/added tokens, increasing */
    uint64_t *pm_keys;  /* pair map keys (left << 32 | right), EMPTY_KEY if free */
    int32_t *pm_rank;   /* pair map values: merge rank */
    size_t pm_mask;     /* capacity - 1 */
    int32_t *tm_ids;    /* v2 only: plain token bytes -> id (open addressing, -1 free) */
    size_t tm_mask;
};

#define EMPTY_KEY UINT64_MAX
#define HEADER_BYTES 24 /* v1: magic 8, version, pattern, n_merges, n_special */
#define HEADER2_BYTES 40 /* v2: magic 8, version, pattern, flags, V, M, pad, bos, eos */
#define CACHE_MAX_WORD 48
#define CACHE_MAX_SLOTS (1u << 16)

static const char *const default_special[3] = {"<|pad|>", "<|begin_of_text|>", "<|end_of_text|>"};

static inline uint64_t pair_key(uint32_t l, uint32_t r) { return (uint64_t)l << 32 | r; }

/* A 64-bit finalizer (murmur3's fmix64): good spread for structured keys. */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* FNV-1a over bytes, never 0. */
static uint64_t bytes_hash(const uint8_t *w, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * 0x100000001b3ull;
    return h ? h : 1;
}

/* Rank of the merge (l, r), or -1 when there is none. */
static int32_t pair_rank(const smj_tokenizer *t, int32_t l, int32_t r) {
    uint64_t k = pair_key((uint32_t)l, (uint32_t)r);
    for (size_t i = mix64(k) & t->pm_mask;; i = (i + 1) & t->pm_mask) {
        if (t->pm_keys[i] == k) return t->pm_rank[i];
        if (t->pm_keys[i] == EMPTY_KEY) return -1;
    }
}

/* Inserts (l, r) -> rank; returns -1, or the rank already stored for the pair. */
static int32_t pair_insert(smj_tokenizer *t, int32_t l, int32_t r, int32_t rank) {
    uint64_t k = pair_key((uint32_t)l, (uint32_t)r);
    size_t j = mix64(k) & t->pm_mask;
    while (t->pm_keys[j] != EMPTY_KEY && t->pm_keys[j] != k) j = (j + 1) & t->pm_mask;
    if (t->pm_keys[j] == k) return t->pm_rank[j];
    t->pm_keys[j] = k;
    t->pm_rank[j] = rank;
    return -1;
}

/* v2: the plain token whose bytes are w[0..n), or -1. */
static int32_t token_lookup(const smj_tokenizer *t, const uint8_t *w, size_t n) {
    for (size_t i = mix64(bytes_hash(w, n)) & t->tm_mask;; i = (i + 1) & t->tm_mask) {
        int32_t id = t->tm_ids[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->blob + t->off[id], w, n) == 0) return id;
    }
}

void smj_tokenizer_free(smj_tokenizer *t) {
    if (!t) return;
    free(t->merges); free(t->mres); free(t->kind); free(t->blob); free(t->off); free(t->len);
    free(t->added); free(t->pm_keys); free(t->pm_rank); free(t->tm_ids);
    free(t);
}

/* Allocates the per-id, per-merge and pair-map arrays of t (merges excepted).
 * Returns 0, or -1 when out of memory. */
static int alloc_arrays(smj_tokenizer *t, size_t V, size_t M, size_t n_added) {
    size_t cap = 16;
    while (cap < 2 * M + 2) cap *= 2;
    t->mres = malloc((M + 1) * sizeof *t->mres);
    t->kind = calloc(V + 1, 1);
    t->off = malloc((V + 1) * sizeof *t->off);
    t->len = malloc((V + 1) * sizeof *t->len);
    t->added = malloc((n_added + 1) * sizeof *t->added);
    t->pm_keys = malloc(cap * sizeof *t->pm_keys);
    t->pm_rank = malloc(cap * sizeof *t->pm_rank);
    if (!t->mres || !t->kind || !t->off || !t->len || !t->added || !t->pm_keys || !t->pm_rank) return -1;
    memset(t->pm_keys, 0xFF, cap * sizeof *t->pm_keys);
    t->pm_mask = cap - 1;
    return 0;
}

/* Builds a v1 tokenizer taking ownership of merges[2*n_merges] (freed on
 * failure too) with the n_special texts special[i] of lengths slen[i].
 * Validates the merges; errors are reported as status `bad` prefixed with
 * `name`. On success *out owns everything. */
static smj_status build(smj_ctx *ctx, int32_t *merges, int n_merges, int n_special,
                        const char *const *special, const size_t *slen, smj_status bad,
                        const char *name, smj_tokenizer **out) {
    *out = NULL;
    smj_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { free(merges); SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", name); }
    t->version = 1;
    t->pattern = SMJ_TOK_PATTERN_GPT2;
    t->merges = merges;
    t->n_merges = n_merges;
    t->n_added = n_special;
    size_t np = 256 + (size_t)n_merges, V = np + (size_t)n_special;
    t->n_vocab = (int)V;
    if (alloc_arrays(t, V, (size_t)n_merges, (size_t)n_special) != 0) {
        smj_tokenizer_free(t);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory for %d merges", name, n_merges);
    }
    /* Lengths first (bounded before anything is allocated for the bytes). */
    uint64_t total = 512;
    for (size_t i = 0; i < 256; i++) { t->len[i] = 1; t->byte_id[i] = (int32_t)i; }
    for (int i = 0; i < n_merges; i++) {
        int32_t l = merges[2 * i], r = merges[2 * i + 1];
        if (l < 0 || r < 0 || l >= 256 + i || r >= 256 + i) {
            smj_tokenizer_free(t);
            SMJ_FAIL(ctx, bad, "%s: merge %d (%d, %d) refers to a token not defined before it "
                     "(ids must be < %d)", name, i, l, r, 256 + i);
        }
        uint64_t len = (uint64_t)t->len[l] + t->len[r];
        total += len + 1;
        if (total > SMJ_TOK_MAX_TOKEN_BYTES) {
            smj_tokenizer_free(t);
            SMJ_FAIL(ctx, bad, "%s: merges expand to more than %u bytes of token text",
                     name, SMJ_TOK_MAX_TOKEN_BYTES);
        }
        t->len[256 + i] = (uint32_t)len;
        t->mres[i] = 256 + i;
        int32_t prev = pair_insert(t, l, r, i);
        if (prev >= 0) {
            smj_tokenizer_free(t);
            SMJ_FAIL(ctx, bad, "%s: merge %d (%d, %d) duplicates merge %d", name, i, l, r, prev);
        }
    }
    for (int i = 0; i < n_special; i++) {
        t->len[np + (size_t)i] = (uint32_t)slen[i];
        t->kind[np + (size_t)i] = SMJ_TOK_KIND_SPECIAL;
        t->added[i] = (int32_t)(np + (size_t)i);
        total += slen[i] + 1;
    }
    for (int i = 0; i < 3; i++) t->special_ids[i] = (int32_t)np + i;
    t->blob = malloc((size_t)total);
    if (!t->blob) {
        smj_tokenizer_free(t);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory for %llu bytes of tokens", name,
                 (unsigned long long)total);
    }
    size_t pos = 0;
    for (size_t i = 0; i < 256; i++) { t->off[i] = pos; t->blob[pos++] = (uint8_t)i; t->blob[pos++] = 0; }
    for (int i = 0; i < n_merges; i++) {
        int32_t l = merges[2 * i], r = merges[2 * i + 1];
        t->off[256 + i] = pos;
        memcpy(t->blob + pos, t->blob + t->off[l], t->len[l]);
        memcpy(t->blob + pos + t->len[l], t->blob + t->off[r], t->len[r]);
        pos += t->len[256 + i];
        t->blob[pos++] = 0;
    }
    for (int i = 0; i < n_special; i++) {
        t->off[np + (size_t)i] = pos;
        memcpy(t->blob + pos, special[i], slen[i]);
        pos += slen[i];
        t->blob[pos++] = 0;
    }
    *out = t;
    return SMJ_OK;
}

smj_status smj_tokenizer_from_merges(smj_ctx *ctx, const int32_t *pairs, int n_merges,
                                     smj_tokenizer **out) {
    *out = NULL;
    SMJ_CHECK(ctx, n_merges >= 0 && n_merges <= SMJ_TOK_MAX_VOCAB - 256 - 3, SMJ_ERR_INVALID,
              "tokenizer: %d merges is out of range (0..%d)", n_merges, SMJ_TOK_MAX_VOCAB - 259);
    int32_t *m = malloc(((size_t)n_merges * 2 + 1) * sizeof *m);
    if (!m) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer: out of memory for %d merges", n_merges);
    if (n_merges) memcpy(m, pairs, (size_t)n_merges * 2 * sizeof *m);
    size_t slen[3];
    for (int i = 0; i < 3; i++) slen[i] = strlen(default_special[i]);
    return build(ctx, m, n_merges, 3, default_special, slen, SMJ_ERR_INVALID, "tokenizer", out);
}

/* ------------------------------------------------------------- file format */

/* Parses a version 2 image (docs/FORMATS.md); version and size >= 8 checked. */
static smj_status from_bytes_v2(smj_ctx *ctx, const uint8_t *data, size_t n, const char *name,
                                smj_tokenizer **out) {
    if (n < HEADER2_BYTES + 4)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: too short to be a version 2 tokenizer file (%zu bytes)", name, n);
    uint32_t stored = smj_rd_u32(data + n - 4), crc = smj_crc32(0, data, n - 4);
    if (stored != crc)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: checksum mismatch (stored %08x, computed %08x): "
                 "the file is corrupt", name, stored, crc);
    uint32_t pattern = smj_rd_u32(data + 12), flags = smj_rd_u32(data + 16);
    uint32_t V = smj_rd_u32(data + 20), M = smj_rd_u32(data + 24);
    size_t body = n - HEADER2_BYTES - 4;
    if (pattern < SMJ_TOK_PATTERN_GPT2 || pattern > SMJ_TOK_PATTERN_QWEN2)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: unknown pre-tokenizer pattern id %u (expected 1..3)", name, pattern);
    if (flags & ~(uint32_t)SMJ_TOK_FLAGS_KNOWN)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: unknown flags %#x", name, flags);
    if (V < 256 || V > SMJ_TOK_MAX_VOCAB || (size_t)V > body / 5)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: vocabulary size %u is out of range (256..2^24) or does not fit "
                 "the file (%zu bytes)", name, V, n);
    if ((size_t)M > body / 12)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: merge count %u does not fit the file (%zu bytes)", name, M, n);
    smj_tokenizer *t = calloc(1, sizeof *t);
    smj_status st = SMJ_OK;
#define BAD(...) do { st = smj_set_error(ctx, SMJ_ERR_FORMAT, __VA_ARGS__); goto fail; } while (0)
    if (!t) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory", name);
    t->version = 2;
    t->pattern = (int)pattern;
    t->flags = flags;
    t->n_vocab = (int)V;
    t->n_merges = (int)M;
    t->merges = malloc(((size_t)M * 2 + 1) * sizeof *t->merges);
    if (!t->merges || alloc_arrays(t, V, M, 0) != 0) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    for (int i = 0; i < 3; i++) {
        uint32_t id = smj_rd_u32(data + 28 + 4 * i);
        if (id != UINT32_MAX && id >= V)
            BAD("%s: %s token id %u is out of range (vocabulary %u)", name, i == 0 ? "PAD" : i == 1 ? "BOS" : "EOS",
                id, V);
        t->special_ids[i] = id == UINT32_MAX ? -1 : (int32_t)id;
    }
    const uint8_t *p = data + HEADER2_BYTES, *end = data + n - 4 - 12 * (size_t)M;
    if (end < p) BAD("%s: merge count %u does not fit the file", name, M);
    uint64_t total = 0;
    size_t n_added = 0;
    for (uint32_t id = 0; id < V; id++) {
        if (end - p < 5) BAD("%s: truncated in token %u", name, id);
        uint8_t kind = p[0];
        uint32_t len = smj_rd_u32(p + 1);
        p += 5;
        if (kind > SMJ_TOK_KIND_ADDED) BAD("%s: token %u has unknown kind %u", name, id, kind);
        if (len < 1 || (kind != SMJ_TOK_KIND_PLAIN && len > SMJ_TOK_MAX_SPECIAL_LEN))
            BAD("%s: token %u has length %u (must be >= 1, special/added <= %d)", name, id, len,
                SMJ_TOK_MAX_SPECIAL_LEN);
        if ((size_t)(end - p) < len) BAD("%s: truncated in token %u's bytes", name, id);
        total += (uint64_t)len + 1;
        if (total > SMJ_TOK_MAX_TOKEN_BYTES)
            BAD("%s: tokens total more than %u bytes", name, SMJ_TOK_MAX_TOKEN_BYTES);
        t->kind[id] = kind;
        t->len[id] = len;
        t->off[id] = (size_t)(p - data);
        if (kind != SMJ_TOK_KIND_PLAIN) n_added++;
        p += len;
    }
    if (p != end) BAD("%s: %zu unexpected bytes after the tokens", name, (size_t)(end - p));
    t->blob = malloc((size_t)total + 1);
    free(t->added);
    t->added = malloc((n_added + 1) * sizeof *t->added);
    size_t tcap = 16;
    while (tcap < 2 * (size_t)V) tcap *= 2;
    t->tm_ids = malloc(tcap * sizeof *t->tm_ids);
    if (!t->blob || !t->added || !t->tm_ids) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    memset(t->tm_ids, 0xFF, tcap * sizeof *t->tm_ids);
    t->tm_mask = tcap - 1;
    size_t pos = 0;
    for (uint32_t id = 0; id < V; id++) {
        memcpy(t->blob + pos, data + t->off[id], t->len[id]);
        t->off[id] = pos;
        pos += t->len[id];
        t->blob[pos++] = 0;
        if (t->kind[id] != SMJ_TOK_KIND_PLAIN) { t->added[t->n_added++] = (int32_t)id; continue; }
        const uint8_t *w = t->blob + t->off[id];
        size_t j = mix64(bytes_hash(w, t->len[id])) & t->tm_mask;
        for (; t->tm_ids[j] >= 0; j = (j + 1) & t->tm_mask) {
            int32_t o = t->tm_ids[j];
            if (t->len[o] == t->len[id] && memcmp(t->blob + t->off[o], w, t->len[id]) == 0)
                BAD("%s: tokens %d and %u have the same bytes", name, o, id);
        }
        t->tm_ids[j] = (int32_t)id;
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = token_lookup(t, &c, 1);
        if (t->byte_id[b] < 0) BAD("%s: no token is the single byte %d", name, b);
    }
    const uint8_t *q = end;
    for (uint32_t i = 0; i < M; i++, q += 12) {
        uint32_t l = smj_rd_u32(q), r = smj_rd_u32(q + 4), res = smj_rd_u32(q + 8);
        if (l >= V || r >= V || res >= V || t->kind[l] || t->kind[r] || t->kind[res])
            BAD("%s: merge %u (%u, %u -> %u) refers to an id that is not a plain token", name, i, l, r, res);
        if ((uint64_t)t->len[res] != (uint64_t)t->len[l] + t->len[r] ||
            memcmp(t->blob + t->off[res], t->blob + t->off[l], t->len[l]) != 0 ||
            memcmp(t->blob + t->off[res] + t->len[l], t->blob + t->off[r], t->len[r]) != 0)
            BAD("%s: merge %u (%u, %u -> %u): the result's bytes are not left ++ right", name, i, l, r, res);
        int32_t prev = pair_insert(t, (int32_t)l, (int32_t)r, (int32_t)i);
        if (prev >= 0) BAD("%s: merge %u (%u, %u) duplicates merge %d", name, i, l, r, prev);
        t->merges[2 * i] = (int32_t)l;
        t->merges[2 * i + 1] = (int32_t)r;
        t->mres[i] = (int32_t)res;
    }
#undef BAD
    *out = t;
    return SMJ_OK;
fail:
    smj_tokenizer_free(t);
    return st;
}

smj_status smj_tokenizer_from_bytes(smj_ctx *ctx, const uint8_t *data, size_t n,
                                    const char *name, smj_tokenizer **out) {
    *out = NULL;
    if (!name) name = "<memory>";
    if (n < HEADER_BYTES + 4)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: too short to be a tokenizer file (%zu bytes)", name, n);
    if (memcmp(data, SMJ_TOK_MAGIC, 8) != 0)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: not a smedjan tokenizer file (bad magic)", name);
    uint32_t version = smj_rd_u32(data + 8), pattern = smj_rd_u32(data + 12);
    uint32_t n_merges = smj_rd_u32(data + 16), n_special = smj_rd_u32(data + 20);
    if (version == SMJ_TOK_VERSION2) return from_bytes_v2(ctx, data, n, name, out);
    if (version != SMJ_TOK_VERSION)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: unsupported tokenizer format version %u (expected %u or %u)",
                 name, version, SMJ_TOK_VERSION, SMJ_TOK_VERSION2);
    if (pattern != SMJ_TOK_PATTERN_GPT2)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: unknown pre-tokenizer pattern id %u (version 1 files use %u = GPT-2)",
                 name, pattern, SMJ_TOK_PATTERN_GPT2);
    size_t body = n - HEADER_BYTES - 4; /* bytes between header and CRC */
    if (n_merges > (uint32_t)(SMJ_TOK_MAX_VOCAB - 256 - 3) || (size_t)n_merges > body / 8)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: merge count %u does not fit the file (%zu bytes) "
                 "or the 2^24 id limit", name, n_merges, n);
    if (n_special < 3 || n_special > SMJ_TOK_MAX_SPECIAL)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: special token count %u is out of range (3..%d)",
                 name, n_special, SMJ_TOK_MAX_SPECIAL);
    const uint8_t *p = data + HEADER_BYTES, *end = data + n - 4;
    p += (size_t)n_merges * 8;
    const char *stext[SMJ_TOK_MAX_SPECIAL];
    size_t slen[SMJ_TOK_MAX_SPECIAL];
    for (uint32_t i = 0; i < n_special; i++) {
        if (end - p < 6)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: truncated in special token %u", name, i);
        uint32_t id = smj_rd_u32(p), len = (uint32_t)p[4] | (uint32_t)p[5] << 8;
        p += 6;
        if (id != 256 + n_merges + i)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: special token %u has id %u, expected %u "
                     "(special ids follow the merges)", name, i, id, 256 + n_merges + i);
        if (len < 1 || len > SMJ_TOK_MAX_SPECIAL_LEN)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: special token %u has length %u (must be 1..%d)",
                     name, i, len, SMJ_TOK_MAX_SPECIAL_LEN);
        if ((size_t)(end - p) < len)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: truncated in special token %u's text", name, i);
        stext[i] = (const char *)p;
        slen[i] = len;
        p += len;
    }
    if (p != end)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: %zu unexpected bytes after the special tokens", name,
                 (size_t)(end - p));
    uint32_t stored = smj_rd_u32(end), crc = smj_crc32(0, data, n - 4);
    if (stored != crc)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: checksum mismatch (stored %08x, computed %08x): "
                 "the file is corrupt", name, stored, crc);
    int32_t *m = malloc(((size_t)n_merges * 2 + 1) * sizeof *m);
    if (!m) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "%s: out of memory for %u merges", name, n_merges);
    for (uint32_t i = 0; i < n_merges; i++) {
        uint32_t l = smj_rd_u32(data + HEADER_BYTES + 8 * (size_t)i);
        uint32_t r = smj_rd_u32(data + HEADER_BYTES + 8 * (size_t)i + 4);
        if (l >= 256 + i || r >= 256 + i) {
            free(m);
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: merge %u (%u, %u) refers to a token not defined "
                     "before it (ids must be < %u)", name, i, l, r, 256 + i);
        }
        m[2 * (size_t)i] = (int32_t)l;
        m[2 * (size_t)i + 1] = (int32_t)r;
    }
    return build(ctx, m, (int)n_merges, (int)n_special, stext, slen, SMJ_ERR_FORMAT, name, out);
}

static smj_status to_bytes_v2(smj_ctx *ctx, const smj_tokenizer *t, uint8_t **data, size_t *len) {
    size_t n = HEADER2_BYTES + (size_t)t->n_merges * 12 + 4;
    for (int id = 0; id < t->n_vocab; id++) n += 5 + t->len[id];
    uint8_t *b = malloc(n), *p = b;
    if (!b) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", n);
    memcpy(p, SMJ_TOK_MAGIC, 8);
    smj_wr_u32(p + 8, SMJ_TOK_VERSION2);
    smj_wr_u32(p + 12, (uint32_t)t->pattern);
    smj_wr_u32(p + 16, t->flags);
    smj_wr_u32(p + 20, (uint32_t)t->n_vocab);
    smj_wr_u32(p + 24, (uint32_t)t->n_merges);
    for (int i = 0; i < 3; i++) smj_wr_u32(p + 28 + 4 * i, t->special_ids[i] < 0 ? UINT32_MAX : (uint32_t)t->special_ids[i]);
    p += HEADER2_BYTES;
    for (int id = 0; id < t->n_vocab; id++) {
        p[0] = t->kind[id];
        smj_wr_u32(p + 1, t->len[id]);
        memcpy(p + 5, t->blob + t->off[id], t->len[id]);
        p += 5 + t->len[id];
    }
    for (int i = 0; i < t->n_merges; i++, p += 12) {
        smj_wr_u32(p, (uint32_t)t->merges[2 * i]);
        smj_wr_u32(p + 4, (uint32_t)t->merges[2 * i + 1]);
        smj_wr_u32(p + 8, (uint32_t)t->mres[i]);
    }
    smj_wr_u32(p, smj_crc32(0, b, n - 4));
    *data = b;
    *len = n;
    return SMJ_OK;
}

smj_status smj_tokenizer_to_bytes(smj_ctx *ctx, const smj_tokenizer *t, uint8_t **data,
                                  size_t *len) {
    if (t->version == 2) return to_bytes_v2(ctx, t, data, len);
    size_t n = HEADER_BYTES + (size_t)t->n_merges * 8 + 4;
    for (int i = 0; i < t->n_added; i++) n += 6 + t->len[t->added[i]];
    uint8_t *b = malloc(n), *p = b;
    if (!b) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", n);
    memcpy(p, SMJ_TOK_MAGIC, 8);
    smj_wr_u32(p + 8, SMJ_TOK_VERSION);
    smj_wr_u32(p + 12, (uint32_t)t->pattern);
    smj_wr_u32(p + 16, (uint32_t)t->n_merges);
    smj_wr_u32(p + 20, (uint32_t)t->n_added);
    p += HEADER_BYTES;
    for (size_t i = 0; i < 2 * (size_t)t->n_merges; i++, p += 4) smj_wr_u32(p, (uint32_t)t->merges[i]);
    for (int i = 0; i < t->n_added; i++) {
        int32_t id = t->added[i];
        smj_wr_u32(p, (uint32_t)id);
        p[4] = (uint8_t)t->len[id];
        p[5] = (uint8_t)(t->len[id] >> 8);
        memcpy(p + 6, t->blob + t->off[id], t->len[id]);
        p += 6 + t->len[id];
    }
    smj_wr_u32(p, smj_crc32(0, b, n - 4));
    *data = b;
    *len = n;
    return SMJ_OK;
}

smj_status smj_tokenizer_load(smj_ctx *ctx, const char *path, smj_tokenizer **out) {
    *out = NULL;
    uint8_t *data;
    size_t n;
    SMJ_TRY(smj_read_file(ctx, path, &data, &n));
    smj_status s = smj_tokenizer_from_bytes(ctx, data, n, path, out);
    free(data);
    return s;
}

smj_status smj_tokenizer_save(smj_ctx *ctx, const smj_tokenizer *t, const char *path) {
    uint8_t *data;
    size_t n;
    SMJ_TRY(smj_tokenizer_to_bytes(ctx, t, &data, &n));
    smj_wfile w;
    smj_status s = smj_wfile_open(ctx, &w, path);
    if (s == SMJ_OK) {
        smj_wfile_write(&w, data, n);
        s = smj_wfile_commit(ctx, &w);
    }
    free(data);
    return s;
}

/* --------------------------------------------------------------- accessors */

int smj_tokenizer_vocab_size(const smj_tokenizer *t) { return t->n_vocab; }
int smj_tokenizer_special_id(const smj_tokenizer *t, smj_special which) {
    if ((int)which < 0 || (int)which >= 3) return -1;
    return t->special_ids[which];
}
int smj_tokenizer_version(const smj_tokenizer *t) { return t->version; }
int smj_tokenizer_pattern(const smj_tokenizer *t) { return t->pattern; }
uint32_t smj_tokenizer_flags(const smj_tokenizer *t) { return t->flags; }
int smj_tokenizer_num_merges(const smj_tokenizer *t) { return t->n_merges; }
int smj_tokenizer_num_special(const smj_tokenizer *t) { return t->n_added; }

int smj_tokenizer_merge(const smj_tokenizer *t, int i, int32_t *left, int32_t *right) {
    if (i < 0 || i >= t->n_merges) return -1;
    *left = t->merges[2 * i];
    *right = t->merges[2 * i + 1];
    return 0;
}

int32_t smj_tokenizer_merge_result(const smj_tokenizer *t, int i) {
    return i < 0 || i >= t->n_merges ? -1 : t->mres[i];
}

int32_t smj_tokenizer_added_id(const smj_tokenizer *t, int i) {
    return i < 0 || i >= t->n_added ? -1 : t->added[i];
}

int smj_tokenizer_kind(const smj_tokenizer *t, int32_t id) {
    return id < 0 || id >= t->n_vocab ? -1 : t->kind[id];
}

int32_t smj_tokenizer_byte_id(const smj_tokenizer *t, int b) {
    return b < 0 || b > 255 ? -1 : t->byte_id[b];
}

const char *smj_tokenizer_special_text(const smj_tokenizer *t, int i, size_t *len) {
    if (i < 0 || i >= t->n_added) return NULL;
    int32_t id = t->added[i];
    if (len) *len = t->len[id];
    return (const char *)t->blob + t->off[id];
}

const uint8_t *smj_tokenizer_token_bytes(const smj_tokenizer *t, int32_t id, size_t *len) {
    static const uint8_t empty[1] = {0};
    if (id < 0 || id >= t->n_vocab) { if (len) *len = 0; return NULL; }
    if (t->kind[id] == SMJ_TOK_KIND_SPECIAL) { if (len) *len = 0; return empty; }
    if (len) *len = t->len[id];
    return t->blob + t->off[id];
}

/* ---------------------------------------------------------------- encoding */

/* Per-call scratch: the symbol list and candidate heap of one pre-token, and
 * the memo of short pre-tokens already encoded. */
typedef struct { int32_t rank, pos; } cand;
typedef struct { uint64_t hash; uint32_t word_off, tok_off; uint16_t word_len, n_tok; } cache_slot;
typedef struct {
    int32_t *sym, *next, *prev; /* symbols: token id and neighbours (-1 none) */
    cand *heap;
    size_t cap, n_heap;
    cache_slot *slots;          /* cache_mask + 1 entries (a power of two), hash 0 = empty */
    size_t cache_mask;
    uint8_t *cwords; size_t cwords_len, cwords_cap;
    int32_t *ctoks; size_t ctoks_len, ctoks_cap;
    size_t cache_used;
} enc_scratch;

static void scratch_free(enc_scratch *s) {
    free(s->sym); free(s->next); free(s->prev); free(s->heap);
    free(s->slots); free(s->cwords); free(s->ctoks);
}

/* Ensures room for a pre-token of n bytes; 0 on success, -1 out of memory. */
static int scratch_reserve(enc_scratch *s, size_t n) {
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(s->sym, cap * sizeof *a); if (!a) return -1; s->sym = a;
    a = realloc(s->next, cap * sizeof *a); if (!a) return -1; s->next = a;
    a = realloc(s->prev, cap * sizeof *a); if (!a) return -1; s->prev = a;
    cand *h = realloc(s->heap, 2 * cap * sizeof *h); if (!h) return -1; s->heap = h;
    s->cap = cap;
    return 0;
}

static inline int cand_less(cand a, cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

/* The heap never holds more than 2 * (word length) entries: one per initial
 * pair plus at most two per merge. */
static void heap_push(enc_scratch *s, cand c) {
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
}

static cand heap_pop(enc_scratch *s) {
    cand top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(s->heap[c + 1], s->heap[c])) c++;
        if (!cand_less(s->heap[c], last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Pushes the candidate merge of symbol i with its right neighbour, if any. */
static void push_pair(const smj_tokenizer *t, enc_scratch *s, int32_t i) {
    if (i < 0 || s->next[i] < 0) return;
    int32_t r = pair_rank(t, s->sym[i], s->sym[s->next[i]]);
    if (r >= 0) heap_push(s, (cand){r, i});
}

/* BPE of one pre-token w[0..n) (n >= 1, scratch reserved), appending the ids
 * to out and returning how many. */
static size_t bpe_word(const smj_tokenizer *t, enc_scratch *s, const uint8_t *w, size_t n,
                       int32_t *out) {
    if (n == 1) { out[0] = t->byte_id[w[0]]; return 1; }
    if ((t->flags & SMJ_TOK_FLAG_IGNORE_MERGES) && t->tm_ids) {
        int32_t whole = token_lookup(t, w, n);
        if (whole >= 0) { out[0] = whole; return 1; }
    }
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = t->byte_id[w[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, s, (int32_t)i);
    while (s->n_heap) {
        cand c = heap_pop(s);
        int32_t i = c.pos, j = s->next[i];
        /* Stale if i was absorbed (sym < 0), has no right neighbour, or the
         * pair there changed (ranks are unique per pair). */
        if (s->sym[i] < 0 || j < 0 || pair_rank(t, s->sym[i], s->sym[j]) != c.rank) continue;
        s->sym[i] = t->mres[c.rank];
        s->sym[j] = -1;
        s->next[i] = s->next[j];
        if (s->next[j] >= 0) s->prev[s->next[j]] = i;
        push_pair(t, s, s->prev[i]);
        push_pair(t, s, i);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = s->next[i]) out[k++] = s->sym[i];
    return k;
}

/* FNV-1a over the word, never 0 (0 marks an empty cache slot). */
static uint64_t word_hash(const uint8_t *w, size_t n) { return bytes_hash(w, n); }

/* Looks w up in the memo; returns its slot (hit when slot->hash != 0). */
static cache_slot *cache_find(enc_scratch *s, const uint8_t *w, size_t n, uint64_t h) {
    for (size_t i = h & s->cache_mask;; i = (i + 1) & s->cache_mask) {
        cache_slot *c = &s->slots[i];
        if (c->hash == 0) return c;
        if (c->hash == h && c->word_len == n && memcmp(s->cwords + c->word_off, w, n) == 0) return c;
    }
}

/* Stores (w -> ids[0..k)) into the empty slot c; silently skips when the
 * memo is half full or an arena cannot grow (the memo is only a speed-up). */
static void cache_put(enc_scratch *s, cache_slot *c, uint64_t h, const uint8_t *w, size_t n,
                      const int32_t *ids, size_t k) {
    if (s->cache_used >= (s->cache_mask + 1) / 2) return;
    if (s->cwords_len + n > s->cwords_cap) {
        size_t cap = s->cwords_cap ? s->cwords_cap * 2 : 1 << 16;
        uint8_t *p = realloc(s->cwords, cap);
        if (!p) return;
        s->cwords = p; s->cwords_cap = cap;
    }
    if (s->ctoks_len + k > s->ctoks_cap) {
        size_t cap = s->ctoks_cap ? s->ctoks_cap * 2 : 1 << 16;
        int32_t *p = realloc(s->ctoks, cap * sizeof *p);
        if (!p) return;
        s->ctoks = p; s->ctoks_cap = cap;
    }
    memcpy(s->cwords + s->cwords_len, w, n);
    memcpy(s->ctoks + s->ctoks_len, ids, k * sizeof *ids);
    *c = (cache_slot){h, (uint32_t)s->cwords_len, (uint32_t)s->ctoks_len, (uint16_t)n, (uint16_t)k};
    s->cwords_len += n;
    s->ctoks_len += k;
    s->cache_used++;
}

static smj_status encode_text(smj_ctx *ctx, const smj_tokenizer *t, const uint8_t *text,
                              size_t n, int32_t **ids, size_t *n_ids) {
    /* Every token covers at least one byte, so n ids always suffice. */
    int32_t *out = malloc((n ? n : 1) * sizeof *out);
    enc_scratch s = {0};
    size_t slots = 64; /* memo sized to the text: about one slot per 8 bytes */
    while (slots < CACHE_MAX_SLOTS && slots < n / 8) slots *= 2;
    s.cache_mask = slots - 1;
    s.slots = calloc(slots, sizeof *s.slots);
    if (!out || !s.slots) {
        free(out); scratch_free(&s);
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer encode: out of memory for %zu bytes of text", n);
    }
    size_t k = 0;
    for (size_t pos = 0; pos < n;) {
        size_t end = smj_pretok_next_pattern(t->pattern, text, n, pos), len = end - pos;
        const uint8_t *w = text + pos;
        pos = end;
        if (len == 1) { out[k++] = t->byte_id[w[0]]; continue; }
        cache_slot *c = NULL;
        uint64_t h = 0;
        if (len <= CACHE_MAX_WORD) {
            h = word_hash(w, len);
            c = cache_find(&s, w, len, h);
            if (c->hash) {
                memcpy(out + k, s.ctoks + c->tok_off, c->n_tok * sizeof *out);
                k += c->n_tok;
                continue;
            }
        }
        if (scratch_reserve(&s, len) != 0) {
            free(out); scratch_free(&s);
            SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer encode: out of memory for a %zu-byte word", len);
        }
        size_t got = bpe_word(t, &s, w, len, out + k);
        if (c) cache_put(&s, c, h, w, len, out + k, got);
        k += got;
    }
    scratch_free(&s);
    int32_t *shrunk = realloc(out, (k ? k : 1) * sizeof *out);
    *ids = shrunk ? shrunk : out;
    *n_ids = k;
    return SMJ_OK;
}

smj_status smj_tokenizer_encode(smj_ctx *ctx, const smj_tokenizer *t, const uint8_t *text,
                                size_t n, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    SMJ_CHECK(ctx, text || n == 0, SMJ_ERR_INVALID, "tokenizer encode: text is NULL");
    if (!(t->flags & SMJ_TOK_FLAG_NFC)) return encode_text(ctx, t, text, n, ids, n_ids);
    uint8_t *norm;
    size_t nn;
    if (smj_nfc(text, n, &norm, &nn) != 0)
        SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer encode: out of memory normalizing %zu bytes of text (NFC)", n);
    smj_status st = encode_text(ctx, t, norm, nn, ids, n_ids);
    free(norm);
    return st;
}

smj_status smj_tokenizer_decode(smj_ctx *ctx, const smj_tokenizer *t, const int32_t *ids,
                                size_t n_ids, uint8_t **text, size_t *len) {
    *text = NULL;
    *len = 0;
    int vocab = t->n_vocab;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= vocab)
            SMJ_FAIL(ctx, SMJ_ERR_INVALID, "tokenizer decode: id %d at position %zu is out of "
                     "range (vocab %d)", ids[i], i, vocab);
        if (t->kind[ids[i]] != SMJ_TOK_KIND_SPECIAL) total += t->len[ids[i]];
    }
    uint8_t *b = malloc(total + 1);
    if (!b) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer decode: out of memory (%zu bytes)", total);
    size_t p = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (t->kind[ids[i]] == SMJ_TOK_KIND_SPECIAL) continue;
        memcpy(b + p, t->blob + t->off[ids[i]], t->len[ids[i]]);
        p += t->len[ids[i]];
    }
    b[p] = 0;
    *text = b;
    *len = p;
    return SMJ_OK;
}
