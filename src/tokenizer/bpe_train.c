/* bpe_train.c — training a byte-level BPE vocabulary (smj_tokenizer_train).
 *
 * Algorithm (the standard incremental one):
 *   1. Cut the text into GPT-2 pre-tokens (pretok.c) and count the distinct
 *      ones ("words") in a hash map; merges never cross a word boundary.
 *   2. Each word of two or more bytes becomes an array of token ids (its
 *      bytes). Every adjacent pair gets a record: its count (summed over the
 *      words containing it, weighted by how often the word occurs) and the
 *      list of words it occurs in.
 *   3. A max-heap over (count, pair) picks the next merge. Entries go stale
 *      lazily: a popped entry whose count differs from the record's current
 *      count is pushed again with the current count. This is exact because a
 *      merge only ever lowers the counts of existing pairs; pairs containing
 *      the new token are new records, pushed once after the merge.
 *   4. Merging (a, b) -> z rewrites only the words on the (a, b) list, left to
 *      right and non-overlapping (so "a a a" -> "z a"), adjusting the counts
 *      of the neighbouring pairs and adding each word to the lists of the
 *      new pairs that contain z.
 *
 * Tie rule (documented in docs/FORMATS.md): the pair with the
 * highest count is merged; among equal counts the smallest (left id, right
 * id), compared as (left, right) lexicographically. Nothing else (hash order,
 * word order, threads) influences the result, so training is deterministic
 * across runs and platforms.
 *
 * Stopping: after vocab_size - 259 merges, or earlier when no pair occurs any
 * more (the vocabulary is then smaller), or when the token texts would
 * exceed SMJ_TOK_MAX_TOKEN_BYTES in total (only for pathological inputs).
 *
 * Deliberately not done: a minimum pair frequency, multi-threading, special
 * token text recognition in the training text, any per-character alphabet
 * limit (all 256 bytes are always in the vocabulary).
 */
#include <string.h>
#include "tokenizer.h"
#include "../core/core.h"

typedef struct {
    const uint8_t *bytes; /* into the training text */
    size_t len;           /* bytes of the pre-token */
    int64_t count;        /* occurrences in the text */
    size_t start;         /* its token ids are tok[start .. start+ntok) */
    size_t ntok;
} word;

typedef struct {
    uint64_t key;    /* left << 32 | right */
    int64_t count;   /* weighted occurrences over all words */
    int32_t *words;  /* indices of words that contain (or contained) the pair */
    uint32_t n_words, cap_words;
    int32_t stamp;   /* merge number + 1 when last listed as a new pair */
} pair_rec;

typedef struct { int64_t count; uint64_t key; } heap_ent;

typedef struct {
    smj_ctx *ctx;
    word *words; size_t n_words, cap_words;
    int32_t *wmap; size_t wmap_mask;        /* word hash map: index or -1 */
    int32_t *tok;                           /* token ids of all words */
    pair_rec *pairs; size_t n_pairs, cap_pairs;
    int32_t *pmap; size_t pmap_mask;        /* pair hash map: record index or -1 */
    heap_ent *heap; size_t n_heap, cap_heap;
    int32_t *fresh; size_t n_fresh, cap_fresh; /* new pairs of the current merge */
    int oom;                                /* an allocation failed */
} trainer;

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t bytes_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        h = mix64(h ^ v);
    }
    uint64_t v = 0;
    for (size_t k = 0; i < n; i++, k += 8) v |= (uint64_t)p[i] << k;
    return mix64(h ^ v);
}

/* Grows *buf (elements of size el) to hold at least need; -1 on failure. */
static int grow(void **buf, size_t *cap, size_t need, size_t el) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p = realloc(*buf, c * el);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* ---- step 1: distinct pre-tokens */

static int wmap_rehash(trainer *T, size_t cap) {
    int32_t *m = malloc(cap * sizeof *m);
    if (!m) return -1;
    memset(m, 0xFF, cap * sizeof *m);
    for (size_t w = 0; w < T->n_words; w++) {
        size_t i = bytes_hash(T->words[w].bytes, T->words[w].len) & (cap - 1);
        while (m[i] >= 0) i = (i + 1) & (cap - 1);
        m[i] = (int32_t)w;
    }
    free(T->wmap);
    T->wmap = m;
    T->wmap_mask = cap - 1;
    return 0;
}

/* Counts one occurrence of the pre-token p[0..n); -1 out of memory. */
static int count_word(trainer *T, const uint8_t *p, size_t n) {
    size_t i = bytes_hash(p, n) & T->wmap_mask;
    for (; T->wmap[i] >= 0; i = (i + 1) & T->wmap_mask) {
        word *w = &T->words[T->wmap[i]];
        if (w->len == n && memcmp(w->bytes, p, n) == 0) { w->count++; return 0; }
    }
    if (T->n_words >= INT32_MAX - 1) return -1;
    if (grow((void **)&T->words, &T->cap_words, T->n_words + 1, sizeof *T->words)) return -1;
    T->words[T->n_words] = (word){p, n, 1, 0, 0};
    T->wmap[i] = (int32_t)T->n_words++;
    if (2 * T->n_words > T->wmap_mask && wmap_rehash(T, 2 * (T->wmap_mask + 1))) return -1;
    return 0;
}

/* ---- pair records */

static int pmap_rehash(trainer *T, size_t cap) {
    int32_t *m = malloc(cap * sizeof *m);
    if (!m) return -1;
    memset(m, 0xFF, cap * sizeof *m);
    for (size_t r = 0; r < T->n_pairs; r++) {
        size_t i = mix64(T->pairs[r].key) & (cap - 1);
        while (m[i] >= 0) i = (i + 1) & (cap - 1);
        m[i] = (int32_t)r;
    }
    free(T->pmap);
    T->pmap = m;
    T->pmap_mask = cap - 1;
    return 0;
}

/* Index of the record of pair (l, r), created (count 0) if missing; -1 when
 * out of memory. Record pointers are invalidated by creation. */
static int32_t pair_get(trainer *T, int32_t l, int32_t r) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    size_t i = mix64(key) & T->pmap_mask;
    for (; T->pmap[i] >= 0; i = (i + 1) & T->pmap_mask)
        if (T->pairs[T->pmap[i]].key == key) return T->pmap[i];
    if (T->n_pairs >= INT32_MAX - 1 ||
        grow((void **)&T->pairs, &T->cap_pairs, T->n_pairs + 1, sizeof *T->pairs)) return -1;
    T->pairs[T->n_pairs] = (pair_rec){key, 0, NULL, 0, 0, 0};
    T->pmap[i] = (int32_t)T->n_pairs++;
    if (2 * T->n_pairs > T->pmap_mask && pmap_rehash(T, 2 * (T->pmap_mask + 1))) return -1;
    return (int32_t)T->n_pairs - 1;
}

/* Appends word w to record r's list unless it is already the last entry. */
static void list_word(trainer *T, int32_t r, int32_t w) {
    pair_rec *p = &T->pairs[r];
    if (p->n_words && p->words[p->n_words - 1] == w) return;
    if (p->n_words == p->cap_words) {
        if (p->cap_words > UINT32_MAX / 2) { T->oom = 1; return; }
        uint32_t cap = p->cap_words ? 2 * p->cap_words : 4;
        int32_t *a = realloc(p->words, cap * sizeof *a);
        if (!a) { T->oom = 1; return; }
        p->words = a;
        p->cap_words = cap;
    }
    p->words[p->n_words++] = w;
}

/* ---- the max-heap: higher count first, then smaller key */

static inline int ent_before(heap_ent a, heap_ent b) {
    return a.count > b.count || (a.count == b.count && a.key < b.key);
}

static void heap_push(trainer *T, heap_ent e) {
    if (grow((void **)&T->heap, &T->cap_heap, T->n_heap + 1, sizeof *T->heap)) { T->oom = 1; return; }
    size_t i = T->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ent_before(e, T->heap[p])) break;
        T->heap[i] = T->heap[p];
        i = p;
    }
    T->heap[i] = e;
}

static heap_ent heap_pop(trainer *T) {
    heap_ent top = T->heap[0], last = T->heap[--T->n_heap];
    size_t i = 0, n = T->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ent_before(T->heap[c + 1], T->heap[c])) c++;
        if (!ent_before(T->heap[c], last)) break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (n) T->heap[i] = last;
    return top;
}

/* ---- step 4: one merge */

/* Adds d to the count of pair (l, r) on behalf of word w. When the pair
 * contains the new token z it is new: w joins its list and the record is
 * noted (once per merge) for pushing onto the heap. */
static void delta(trainer *T, int32_t l, int32_t r, int64_t d, int32_t w, int32_t z, int32_t stamp) {
    int32_t i = pair_get(T, l, r);
    if (i < 0) { T->oom = 1; return; }
    T->pairs[i].count += d;
    if (l != z && r != z) return;
    list_word(T, i, w);
    if (T->pairs[i].stamp != stamp) {
        T->pairs[i].stamp = stamp;
        if (grow((void **)&T->fresh, &T->cap_fresh, T->n_fresh + 1, sizeof *T->fresh)) { T->oom = 1; return; }
        T->fresh[T->n_fresh++] = i;
    }
}

/* Replaces every non-overlapping (a, b), left to right, in word wi by z. */
static void merge_word(trainer *T, int32_t wi, int32_t a, int32_t b, int32_t z, int32_t stamp) {
    word *w = &T->words[wi];
    int32_t *t = T->tok + w->start;
    size_t n = w->ntok, out = 0;
    int64_t c = w->count;
    for (size_t r = 0; r < n;) {
        if (r + 1 < n && t[r] == a && t[r + 1] == b) {
            if (out > 0) { /* left neighbour, possibly a z written just before */
                delta(T, t[out - 1], a, -c, wi, z, stamp);
                delta(T, t[out - 1], z, c, wi, z, stamp);
            }
            delta(T, a, b, -c, wi, z, stamp);
            if (r + 2 < n) { /* right neighbour, still unmodified input */
                delta(T, b, t[r + 2], -c, wi, z, stamp);
                delta(T, z, t[r + 2], c, wi, z, stamp);
            }
            t[out++] = z;
            r += 2;
        } else {
            t[out++] = t[r++];
        }
    }
    w->ntok = out;
}

static void trainer_free(trainer *T) {
    for (size_t i = 0; i < T->n_pairs; i++) free(T->pairs[i].words);
    free(T->words); free(T->wmap); free(T->tok); free(T->pairs); free(T->pmap);
    free(T->heap); free(T->fresh);
}

#define TRAIN_OOM(T, what) do { trainer_free(T); free(merges); free(toklen); \
    SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "tokenizer train: out of memory (%s)", what); } while (0)

smj_status smj_tokenizer_train(smj_ctx *ctx, const uint8_t *text, size_t n,
                               const smj_tokenizer_train_options *opts, smj_tokenizer **out) {
    *out = NULL;
    SMJ_CHECK(ctx, opts, SMJ_ERR_INVALID, "tokenizer train: options are NULL");
    SMJ_CHECK(ctx, text || n == 0, SMJ_ERR_INVALID, "tokenizer train: text is NULL");
    SMJ_CHECK(ctx, opts->vocab_size >= 260 && opts->vocab_size <= SMJ_TOK_MAX_VOCAB, SMJ_ERR_INVALID,
              "tokenizer train: vocab_size %d is out of range (must be 260..%d: 256 bytes + "
              "at least one merge + 3 special tokens)", opts->vocab_size, SMJ_TOK_MAX_VOCAB);
    int target = opts->vocab_size - 259;
    trainer T0 = {0}, *T = &T0;
    T->ctx = ctx;
    /* Grown as merges are made: a huge vocab_size on a small text must not
     * allocate for merges that will never exist. */
    int32_t *merges = NULL;
    uint64_t *toklen = NULL;
    size_t cap_merges = 0, cap_toklen = 0;
    if (grow((void **)&toklen, &cap_toklen, 256, sizeof *toklen)) TRAIN_OOM(T, "merge table");
    if (wmap_rehash(T, 1 << 12) || pmap_rehash(T, 1 << 12)) TRAIN_OOM(T, "hash maps");

    /* 1. distinct pre-tokens, in order of first occurrence */
    for (size_t pos = 0; pos < n;) {
        size_t end = smj_pretok_next(text, n, pos);
        if (end - pos >= 2 && count_word(T, text + pos, end - pos)) TRAIN_OOM(T, "word table");
        pos = end;
    }
    /* 2. token arrays and pair records */
    size_t total = 0;
    for (size_t w = 0; w < T->n_words; w++) total += T->words[w].len;
    T->tok = malloc((total ? total : 1) * sizeof *T->tok);
    if (!T->tok) TRAIN_OOM(T, "token arrays");
    total = 0;
    for (size_t w = 0; w < T->n_words; w++) {
        word *wd = &T->words[w];
        wd->start = total;
        wd->ntok = wd->len;
        for (size_t i = 0; i < wd->len; i++) T->tok[total + i] = wd->bytes[i];
        total += wd->len;
        for (size_t i = 0; i + 1 < wd->len; i++) {
            int32_t r = pair_get(T, wd->bytes[i], wd->bytes[i + 1]);
            if (r < 0) TRAIN_OOM(T, "pair table");
            T->pairs[r].count += wd->count;
            list_word(T, r, (int32_t)w);
        }
        if (T->oom) TRAIN_OOM(T, "pair lists");
    }
    for (size_t r = 0; r < T->n_pairs; r++) heap_push(T, (heap_ent){T->pairs[r].count, T->pairs[r].key});
    if (T->oom) TRAIN_OOM(T, "heap");

    /* 3-4. merge loop */
    for (int i = 0; i < 256; i++) toklen[i] = 1;
    uint64_t token_bytes = 256;
    int m = 0;
    while (m < target && T->n_heap) {
        heap_ent e = heap_pop(T);
        int32_t ri = pair_get(T, (int32_t)(e.key >> 32), (int32_t)(uint32_t)e.key);
        if (ri < 0) TRAIN_OOM(T, "pair table");
        int64_t now = T->pairs[ri].count;
        if (now != e.count) { /* stale: counts only drop, so re-queue and retry */
            if (now > 0) heap_push(T, (heap_ent){now, e.key});
            if (T->oom) TRAIN_OOM(T, "heap");
            continue;
        }
        if (now <= 0) break;
        int32_t a = (int32_t)(e.key >> 32), b = (int32_t)(uint32_t)e.key, z = 256 + m;
        token_bytes += toklen[a] + toklen[b];
        if (token_bytes > SMJ_TOK_MAX_TOKEN_BYTES) break;
        if (grow((void **)&merges, &cap_merges, 2 * (size_t)m + 2, sizeof *merges) ||
            grow((void **)&toklen, &cap_toklen, (size_t)z + 1, sizeof *toklen))
            TRAIN_OOM(T, "merge table");
        toklen[z] = toklen[a] + toklen[b];
        merges[2 * m] = a;
        merges[2 * m + 1] = b;
        /* Detach the word list: only pairs containing z gain words now. */
        int32_t *list = T->pairs[ri].words;
        uint32_t nl = T->pairs[ri].n_words;
        T->pairs[ri].words = NULL;
        T->pairs[ri].n_words = T->pairs[ri].cap_words = 0;
        T->n_fresh = 0;
        for (uint32_t k = 0; k < nl; k++) merge_word(T, list[k], a, b, z, m + 1);
        free(list);
        for (size_t k = 0; k < T->n_fresh; k++) {
            pair_rec *p = &T->pairs[T->fresh[k]];
            if (p->count > 0) heap_push(T, (heap_ent){p->count, p->key});
        }
        if (T->oom) TRAIN_OOM(T, "merge bookkeeping");
        m++;
    }
    trainer_free(T);
    free(toklen);
    smj_status s = smj_tokenizer_from_merges(ctx, merges, m, out);
    free(merges);
    return s;
}
