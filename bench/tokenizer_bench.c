/* tokenizer_bench.c — times BPE training and encoding through the library.
 *
 * usage: tokenizer_bench TEXT_FILE [MEGABYTES=10] [VOCAB=8451]
 * The text is repeated (whole copies, then a partial one) up to MEGABYTES,
 * a tokenizer of VOCAB ids (VOCAB-259 merges) is trained on it, then the
 * same text is encoded and decoded (the round trip is checked). Prints one
 * line per phase with seconds and MB/s. Exit status 1 on any failure.
 * Not a test: it asserts nothing about speed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "smedjan.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s TEXT_FILE [MEGABYTES] [VOCAB]\n", argv[0]); return 2; }
    double mb = argc > 2 ? atof(argv[2]) : 10.0;
    int vocab = argc > 3 ? atoi(argv[3]) : 8192 + 259;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long srcn = ftell(f);
    rewind(f);
    if (srcn <= 0) { fprintf(stderr, "%s: empty\n", argv[1]); fclose(f); return 1; }
    uint8_t *src = malloc((size_t)srcn);
    if (!src || fread(src, 1, (size_t)srcn, f) != (size_t)srcn) { fprintf(stderr, "read failed\n"); return 1; }
    fclose(f);
    size_t n = (size_t)(mb * 1e6);
    uint8_t *text = malloc(n ? n : 1);
    if (!text) return 1;
    for (size_t i = 0; i < n; i += (size_t)srcn)
        memcpy(text + i, src, n - i < (size_t)srcn ? n - i : (size_t)srcn);

    smj_ctx *ctx = smj_ctx_create(NULL);
    smj_tokenizer *tok = NULL;
    smj_tokenizer_train_options o = {.vocab_size = vocab};
    double t0 = now();
    if (smj_tokenizer_train(ctx, text, n, &o, &tok) != SMJ_OK) {
        fprintf(stderr, "train: %s\n", smj_ctx_error(ctx)); return 1;
    }
    double t1 = now();
    printf("train:  %.2f MB, vocab %d (%d merges): %.3f s\n", (double)n / 1e6,
           smj_tokenizer_vocab_size(tok), smj_tokenizer_vocab_size(tok) - 259, t1 - t0);
    int32_t *ids;
    size_t n_ids;
    t0 = now();
    if (smj_tokenizer_encode(ctx, tok, text, n, &ids, &n_ids) != SMJ_OK) {
        fprintf(stderr, "encode: %s\n", smj_ctx_error(ctx)); return 1;
    }
    t1 = now();
    printf("encode: %.2f MB -> %zu tokens (%.2f bytes/token): %.3f s, %.1f MB/s\n", (double)n / 1e6,
           n_ids, (double)n / (double)n_ids, t1 - t0, (double)n / 1e6 / (t1 - t0));
    uint8_t *back;
    size_t nb;
    t0 = now();
    if (smj_tokenizer_decode(ctx, tok, ids, n_ids, &back, &nb) != SMJ_OK) {
        fprintf(stderr, "decode: %s\n", smj_ctx_error(ctx)); return 1;
    }
    t1 = now();
    int same = nb == n && memcmp(back, text, n) == 0;
    printf("decode: %.3f s, round trip %s\n", t1 - t0, same ? "exact" : "MISMATCH");
    smj_free(back); smj_free(ids); smj_tokenizer_free(tok); smj_ctx_free(ctx);
    free(text); free(src);
    return same ? 0 : 1;
}
