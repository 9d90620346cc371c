/* test_converge.c — the convergence smoke test on the embedded corpus.
 *
 * With a fixed seed: train a 512-token BPE on data/devils_dictionary.txt,
 * a 2-layer d64 model, 250 AdamW steps of 8 x 64 tokens (lr 3e-3, warmup
 * 25, cosine). Stated bound: the mean training loss over the last 10 steps
 * falls below 4.4 nats (from ln 512 = 6.24 at the start), and the
 * validation loss on the held-out last 10% falls below 4.7. Also checks
 * that two runs with the same seed give bit-identical losses.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "util/check.h"

#define STEPS 250

static void run(smj_ctx *ctx, const smj_dataset *tr, const smj_dataset *va, int V, float *losses, float *val) {
    smj_model_config c = {.vocab_size = V, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .head_dim = 16,
                          .ffn_hidden = 192, .max_seq_len = 64, .rope_theta = 10000, .norm_eps = 1e-5f,
                          .tied_embeddings = 1, .qk_norm = 0};
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 1337, &m));
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 3e-3f; o.warmup_steps = 25; o.total_steps = STEPS;
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    for (int s = 0; s < STEPS && t; s++) {
        smj_step_stats st;
        CHECK_OK(ctx, smj_trainer_step(t, tr, 8, 64, 1, &st));
        losses[s] = st.loss;
    }
    if (t) CHECK_OK(ctx, smj_trainer_eval(t, va, 8, 64, 8, val));
    smj_trainer_free(t);
    smj_model_free(m);
}

int main(void) {
    smj_ctx_options co = {.threads = 2};
    smj_ctx *ctx = smj_ctx_create(&co);
    uint8_t *text = NULL;
    size_t n = 0;
    FILE *f = fopen("data/devils_dictionary.txt", "rb");
    CHECK(f != NULL, "the embedded corpus data/devils_dictionary.txt is readable (run from the repository root)");
    if (!f) return check_summary("test_converge");
    fseek(f, 0, SEEK_END); n = (size_t)ftell(f); rewind(f);
    text = malloc(n);
    CHECK(fread(text, 1, n, f) == n, "read corpus");
    fclose(f);
    smj_tokenizer_train_options to = {.vocab_size = 512};
    smj_tokenizer *tok = NULL;
    CHECK_OK(ctx, smj_tokenizer_train(ctx, text, n, &to, &tok));
    int32_t *ids = NULL;
    size_t nid = 0;
    CHECK_OK(ctx, smj_tokenizer_encode(ctx, tok, text, n, &ids, &nid));
    int V = smj_tokenizer_vocab_size(tok);
    int64_t ntr = (int64_t)nid * 9 / 10;
    char ptr[600], pva[600];
    snprintf(ptr, sizeof ptr, "%s/train.bin", test_tmpdir());
    snprintf(pva, sizeof pva, "%s/val.bin", test_tmpdir());
    CHECK_OK(ctx, smj_dataset_write(ctx, ptr, ids, ntr, V));
    CHECK_OK(ctx, smj_dataset_write(ctx, pva, ids + ntr, (int64_t)nid - ntr, V));
    smj_dataset *tr = NULL, *va = NULL;
    CHECK_OK(ctx, smj_dataset_open(ctx, ptr, &tr));
    CHECK_OK(ctx, smj_dataset_open(ctx, pva, &va));
    static float a[STEPS], b[STEPS];
    float va_a = 0, va_b = 0;
    run(ctx, tr, va, V, a, &va_a);
    double last = 0;
    for (int s = STEPS - 10; s < STEPS; s++) last += a[s] / 10.0;
    printf("loss: step 1 %.4f, mean of the last 10 steps %.4f, validation %.4f\n", a[0], last, va_a);
    CHECK(fabsf(a[0] - logf((float)V)) < 0.3f, "initial loss %.3f is near ln V = %.3f", a[0], logf((float)V));
    CHECK(last < 4.4, "training loss after %d steps: %.4f (bound 4.4)", STEPS, last);
    CHECK(va_a < 4.7f, "validation loss %.4f (bound 4.7)", va_a);
    run(ctx, tr, va, V, b, &va_b);
    CHECK(memcmp(a, b, sizeof a) == 0 && va_a == va_b, "two runs with the same seed are bit-identical");
    smj_dataset_free(tr); smj_dataset_free(va);
    smj_free(ids);
    smj_tokenizer_free(tok);
    free(text);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_converge");
}
