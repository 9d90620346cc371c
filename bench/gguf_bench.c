/* gguf_bench.c — smedjan's inference speed on a GGUF file, measured as
 * llama-bench does: pp = one prompt of `pp` random tokens fed to a fresh
 * session (logits of the last token only), tg = `tg` single-token steps from
 * a fresh session with greedy sampling. Best of `reps` after a warm-up.
 *
 *   gguf_bench MODEL.gguf [threads=2] [pp=128] [tg=32] [reps=5]
 *   -> {"pp_tok_s":..,"tg_tok_s":..,"threads":..,"pp":..,"tg":..,"peak_rss_mb":..}
 *
 * The model is loaded with smj_model_load_gguf: linear weights and the token
 * embedding stay in their GGML blocks (q8_0/q4_0/f16, no f32 copy) and the
 * linear layers run through the qmatmul op. peak_rss_mb is getrusage's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include "smedjan.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gguf_bench MODEL.gguf [threads] [pp] [tg] [reps]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2, pp = argc > 3 ? atoi(argv[3]) : 128,
        tg = argc > 4 ? atoi(argv[4]) : 32, reps = argc > 5 ? atoi(argv[5]) : 5;
    smj_ctx_options o = {.threads = threads, .backend = SMJ_BACKEND_CPU};
    smj_ctx *ctx = smj_ctx_create(&o);
    smj_model *m = NULL;
    if (smj_model_load_gguf(ctx, argv[1], &m) != SMJ_OK) {
        fprintf(stderr, "gguf_bench: %s\n", smj_ctx_error(ctx));
        return 1;
    }
    const smj_model_config *c = smj_model_get_config(m);
    smj_session *s = NULL;
    if (smj_session_create(m, pp + tg + 1, &s) != SMJ_OK) {
        fprintf(stderr, "gguf_bench: %s\n", smj_ctx_error(ctx));
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)pp);
    unsigned x = 12345;
    for (int i = 0; i < pp; i++) ids[i] = (int32_t)((x = x * 1103515245u + 12345u) % 20000u + 300u) % c->vocab_size;
    double best_pp = 1e30, best_tg = 1e30;
    for (int r = 0; r <= reps; r++) {
        const float *lg;
        smj_session_reset(s);
        double t0 = now();
        if (smj_session_feed(s, ids, pp, &lg) != SMJ_OK) { fprintf(stderr, "%s\n", smj_ctx_error(ctx)); return 1; }
        double dpp = now() - t0;
        smj_session_reset(s);
        int32_t tok = ids[0];
        t0 = now();
        for (int i = 0; i < tg; i++) {
            if (smj_session_feed(s, &tok, 1, &lg) != SMJ_OK) { fprintf(stderr, "%s\n", smj_ctx_error(ctx)); return 1; }
            int best = 0;
            for (int v = 1; v < c->vocab_size; v++) if (lg[v] > lg[best]) best = v;
            tok = best;
        }
        double dtg = now() - t0;
        if (r > 0) {
            if (dpp < best_pp) best_pp = dpp;
            if (dtg < best_tg) best_tg = dtg;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"pp_tok_s\":%.1f,\"tg_tok_s\":%.1f,\"threads\":%d,\"pp\":%d,\"tg\":%d,\"peak_rss_mb\":%.1f}\n",
           pp / best_pp, tg / best_tg, threads, pp, tg, (double)ru.ru_maxrss / 1024.0);
    free(ids);
    smj_session_free(s);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return 0;
}
