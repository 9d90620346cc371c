/* test_model.c — the model, trainer, checkpoints and sessions through the
 * public API:
 *  - whole-model gradient check by finite differences (directional, loss
 *    accumulated in double) on a tiny GQA + QK-norm config, both backends;
 *  - two half-size micro-batches accumulate the gradient of one full batch,
 *    and the trainer's --grad-accum 2 step equals the 2x batch step;
 *  - resume is bit-identical: 3 steps + save + load + 3 steps == 6 steps
 *    (also on the reference backend, whose trainer takes the device path);
 *  - an injected NaN gradient skips the step (weights and moments untouched)
 *    and is counted; repeated ones stop training with advice;
 *  - corrupt, truncated and wrong-kind checkpoints and datasets fail with
 *    SMJ_ERR_FORMAT/IO and a message naming the file;
 *  - KV-cache decoding reproduces the full forward's logits at every
 *    position, across the session's chunk boundary;
 *  - the LM head's padded rows (vocabulary 50 laid out as 64 rows, tied and
 *    untied): they stay exactly 0 through training with weight decay, a
 *    training forward's logits have rows 64 apart with zero padding, and
 *    get_logits gives the dense logits a forward without targets gives; a
 *    training state written before the padding (its AdamW moments numel
 *    floats a tensor, back to back) resumes bit for bit as the padded one;
 *  - learning-rate schedules and the sampler.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "../src/ops/ops.h"
#include "../src/model/model.h"
#include "../src/io/container.h"
#include "util/check.h"
#include "util/decode.h"
#include "util/gradcheck.h"

static smj_model_config tiny_cfg(void) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                          .head_dim = 8, .ffn_hidden = 40, .max_seq_len = 160, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = 0, .qk_norm = 1};
    return c;
}

static char *path_in_tmp(const char *name) {
    static char buf[8][600];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 600, "%s/%s", test_tmpdir(), name);
    return p;
}

static smj_dataset *make_dataset(smj_ctx *ctx, const char *name, int64_t n, int V, uint64_t seed) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 7 + (int64_t)(smj_splitmix64(&s) % 5)) % V);
    char *p = path_in_tmp(name);
    CHECK_OK(ctx, smj_dataset_write(ctx, p, ids, n, V));
    free(ids);
    smj_dataset *ds = NULL;
    CHECK_OK(ctx, smj_dataset_open(ctx, p, &ds));
    return ds;
}

/* Loss over fixed inputs, summed in double by the library. */
static double loss_of(smj_ctx *ctx, smj_model *m, const int32_t *x, const int32_t *y, int B, int T) {
    float l = 0;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &l));
    return l;
}

static void gradient_check(smj_backend_kind kind) {
    smj_ctx_options o = {.threads = 2, .backend = kind};
    smj_ctx *ctx = smj_ctx_create(&o);
    smj_model_config c = tiny_cfg();
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 7, &m));
    int B = 2, T = 9;
    int32_t x[18], y[18];
    for (int i = 0; i < 18; i++) { x[i] = (i * 13 + 5) % 50; y[i] = (i * 29 + 3) % 50; }
    y[4] = -1; /* an ignored target */
    /* scale weights up so the loss surface has curvature worth checking */
    int n = smj_model_num_tensors(m);
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        for (int64_t j = 0; j < v.numel; j++) v.data[j] *= v.ndim >= 2 ? 8.0f : 1.0f + 0.1f * (float)sin((double)j);
    }
    gradcheck_directional(ctx, m, x, y, B, T, "llama (GQA, QK-norm, untied)");
    smj_model_free(m);
    smj_ctx_free(ctx);
}

static float *grads_copy(smj_model *m) {
    int64_t P = smj_model_num_params(m), off = 0;
    float *g = malloc(sizeof(float) * (size_t)P);
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        memcpy(g + off, v.grad, sizeof(float) * (size_t)v.numel);
        off += v.numel;
    }
    return g;
}
static float *params_copy(smj_model *m) {
    int64_t P = smj_model_num_params(m), off = 0;
    float *g = malloc(sizeof(float) * (size_t)P);
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        memcpy(g + off, v.data, sizeof(float) * (size_t)v.numel);
        off += v.numel;
    }
    return g;
}

static void accumulation(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 3, &m));
    int T = 8;
    int32_t x[32], y[32];
    for (int i = 0; i < 32; i++) { x[i] = (i * 17 + 1) % 50; y[i] = (i * 11 + 2) % 50; }
    CHECK_OK(ctx, smj_model_zero_grad(m));
    loss_of(ctx, m, x, y, 4, T);
    CHECK_OK(ctx, smj_model_backward(m, 1.0f));
    float *big = grads_copy(m);
    CHECK_OK(ctx, smj_model_zero_grad(m));
    loss_of(ctx, m, x, y, 2, T);
    CHECK_OK(ctx, smj_model_backward(m, 0.5f));
    loss_of(ctx, m, x + 16, y + 16, 2, T);
    CHECK_OK(ctx, smj_model_backward(m, 0.5f));
    float *acc = grads_copy(m);
    double e = rel_l2(acc, big, smj_model_num_params(m));
    CHECK(e < 1e-6, "two accumulated micro-batches vs one batch: gradient rel L2 %.3g", e);
    free(big); free(acc);
    smj_model_free(m);
    m = NULL;

    /* trainer: B=4 x 1 vs B=2 x accum 2 over the same data */
    smj_dataset *ds = make_dataset(ctx, "accum.bin", 2000, 50, 5);
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 1e-3f; o.total_steps = 4; o.schedule = SMJ_SCHED_CONSTANT;
    float *pa = NULL, *pb = NULL, la[4], lb[4];
    for (int run = 0; run < 2; run++) {
        smj_model *mm = NULL;
        smj_trainer *t = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &c, 3, &mm));
        CHECK_OK(ctx, smj_trainer_create(mm, &o, &t));
        for (int s = 0; s < 4; s++) {
            smj_step_stats st;
            CHECK_OK(ctx, smj_trainer_step(t, ds, run ? 2 : 4, T, run ? 2 : 1, &st));
            (run ? lb : la)[s] = st.loss;
        }
        *(run ? &pb : &pa) = params_copy(mm);
        smj_trainer_free(t);
        smj_model_free(mm);
    }
    for (int s = 0; s < 4; s++) CHECK(fabsf(la[s] - lb[s]) <= 1e-5f * fabsf(la[s]), "accum step %d loss %.7g vs %.7g", s, lb[s], la[s]);
    e = rel_l2(pb, pa, smj_config_num_params(&c));
    CHECK(e < 1e-5, "grad-accum 2 x B2 vs B4 after 4 AdamW steps: weights rel L2 %.3g", e);
    free(pa); free(pb);
    smj_dataset_free(ds);
}

/* The device path draws the next batch while a step runs: a step that
 * comes with another dataset (here the first one freed, a second opened,
 * perhaps at the same address), after an evaluation, or after a save and
 * load must take its batch as a trainer without that would. Each second
 * step is compared with the same step taken by a trainer resumed from the
 * state saved after the first (which draws nothing ahead). */
static void batch_ahead(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 3e-3f;
    const char *state = path_in_tmp("ahead.bin");
    for (int kind = 0; kind < 2; kind++) { /* 0: another dataset, 1: an evaluation in between */
        smj_dataset *d1 = make_dataset(ctx, "ahead1.bin", 2000, 50, 3);
        smj_model *m = NULL;
        smj_trainer *t = NULL;
        smj_step_stats st;
        float second = 0, again = 0, ev;
        CHECK_OK(ctx, smj_model_create(ctx, &c, 5, &m));
        CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
        CHECK_OK(ctx, smj_trainer_step(t, d1, 2, 16, 1, &st));
        CHECK_OK(ctx, smj_trainer_save(t, state, NULL));
        smj_dataset *d2 = d1;
        if (kind == 0) {
            smj_dataset_free(d1);
            d2 = make_dataset(ctx, "ahead2.bin", 2000, 50, 77);
        } else {
            CHECK_OK(ctx, smj_trainer_eval(t, d1, 3, 8, 2, &ev));
        }
        CHECK_OK(ctx, smj_trainer_step(t, d2, 2, 16, 1, &st));
        second = st.loss;
        smj_trainer_free(t);
        smj_model_free(m);
        CHECK_OK(ctx, smj_model_create(ctx, &c, 999, &m));
        CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
        CHECK_OK(ctx, smj_trainer_load(t, state, NULL));
        CHECK_OK(ctx, smj_trainer_step(t, d2, 2, 16, 1, &st));
        again = st.loss;
        CHECK(memcmp(&second, &again, sizeof second) == 0,
              "%s: the second step took another batch than a resumed trainer (%.9g vs %.9g)",
              kind ? "an evaluation in between" : "another dataset", second, again);
        smj_trainer_free(t);
        smj_model_free(m);
        smj_dataset_free(d2);
    }
}

static void resume(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_dataset *ds = make_dataset(ctx, "resume.bin", 3000, 50, 9);
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 3e-3f; o.total_steps = 6; o.warmup_steps = 2;
    float straight[6], resumed[6];
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    smj_step_stats st;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 11, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    for (int s = 0; s < 6; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); straight[s] = st.loss; }
    float *p_straight = params_copy(m);
    smj_trainer_free(t);
    smj_model_free(m);

    const char *state = path_in_tmp("state.bin");
    CHECK_OK(ctx, smj_model_create(ctx, &c, 11, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    for (int s = 0; s < 3; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); resumed[s] = st.loss; }
    smj_trainer_extra x = {.best_val_loss = 1.25, .patience_left = 4, .user = {1, 2, 3, 4, 5, 6}};
    CHECK_OK(ctx, smj_trainer_save(t, state, &x));
    smj_trainer_free(t);
    smj_model_free(m);
    smj_model_config c2;
    int is_state = 0;
    CHECK_OK(ctx, smj_checkpoint_read_config(ctx, state, &c2, &is_state));
    CHECK(is_state == 1 && memcmp(&c2, &c, sizeof c) == 0, "config read back from the training state");
    CHECK_OK(ctx, smj_model_create(ctx, &c2, 999, &m)); /* different init: must be overwritten */
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    smj_trainer_extra y;
    CHECK_OK(ctx, smj_trainer_load(t, state, &y));
    CHECK(y.best_val_loss == 1.25 && y.patience_left == 4 && y.user[5] == 6, "trainer extra restored");
    CHECK(smj_trainer_step_count(t) == 3, "step count restored (%lld)", (long long)smj_trainer_step_count(t));
    for (int s = 3; s < 6; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); resumed[s] = st.loss; }
    float *p_resumed = params_copy(m);
    CHECK(memcmp(straight, resumed, sizeof straight) == 0, "resumed losses are bit-identical (step 6: %.9g vs %.9g)",
          resumed[5], straight[5]);
    CHECK(memcmp(p_straight, p_resumed, sizeof(float) * (size_t)smj_model_num_params(m)) == 0,
          "resumed weights are bit-identical");
    /* a model checkpoint is not a training state */
    const char *ck = path_in_tmp("model.ckpt");
    CHECK_OK(ctx, smj_model_save(m, ck));
    smj_status s = smj_trainer_load(t, ck, NULL);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "model.ckpt"), "loading a model checkpoint as a state: %s", smj_ctx_error(ctx));
    /* the model checkpoint reloads to the same weights */
    smj_model *m2 = NULL;
    CHECK_OK(ctx, smj_model_load(ctx, ck, &m2));
    float *p2 = params_copy(m2);
    CHECK(m2 && memcmp(p2, p_resumed, sizeof(float) * (size_t)smj_model_num_params(m)) == 0, "checkpoint round trip");
    free(p2);
    smj_model_free(m2);
    free(p_straight); free(p_resumed);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
}

/* A training state as the layout before the head's padding wrote it: the
 * same file with the moments compacted (each tensor's numel floats back to
 * back). Resuming from it and from the padded state gives the same steps. */
static void old_layout_state(smj_ctx *ctx, smj_model *m, smj_trainer *t, const smj_dataset *ds) {
    const char *padded = path_in_tmp("state_padded.bin"), *old = path_in_tmp("state_old.bin");
    CHECK_OK(ctx, smj_trainer_save(t, padded, NULL));
    smj_container c;
    CHECK_OK(ctx, smj_container_read(ctx, padded, &c));
    int64_t dense = smj_model_num_params(m);
    float *mv[2] = {malloc(sizeof(float) * (size_t)dense), malloc(sizeof(float) * (size_t)dense)};
    smj_ct_entry *e = calloc((size_t)c.n, sizeof *e);
    for (int i = 0; i < c.n; i++) {
        e[i] = c.e[i];
        int k = strcmp(e[i].name, "optimizer.adam_m") == 0 ? 0 : strcmp(e[i].name, "optimizer.adam_v") == 0 ? 1 : -1;
        if (k < 0) continue;
        CHECK(e[i].shape[0] == m->n_params, "the padded state's moments cover the padded layout");
        const float *src = c.e[i].data;
        for (int j = 0, at = 0; j < m->n_tensors; j++) {
            memcpy(mv[k] + at, src + m->specs[j].offset, sizeof(float) * (size_t)m->specs[j].numel);
            at += (int)m->specs[j].numel;
        }
        e[i].data = mv[k];
        e[i].shape[0] = dense;
    }
    CHECK_OK(ctx, smj_container_write(ctx, old, c.kind, c.meta, e, c.n));
    float loss[2][2];
    for (int v = 0; v < 2; v++) {
        smj_model *m2 = NULL;
        smj_trainer *t2 = NULL;
        smj_optim_options o;
        smj_optim_defaults(&o);
        o.lr = 1e-2f; o.weight_decay = 0.1f;
        CHECK_OK(ctx, smj_model_create(ctx, &m->cfg, 77, &m2));
        CHECK_OK(ctx, smj_trainer_create(m2, &o, &t2));
        CHECK_OK(ctx, smj_trainer_load(t2, v ? old : padded, NULL));
        smj_step_stats st;
        for (int s = 0; s < 2; s++) { CHECK_OK(ctx, smj_trainer_step(t2, ds, 2, 16, 1, &st)); loss[v][s] = st.loss; }
        smj_trainer_free(t2);
        smj_model_free(m2);
    }
    CHECK(memcmp(loss[0], loss[1], sizeof loss[0]) == 0,
          "a state with the unpadded moments resumes as the padded one (%.9g %.9g vs %.9g %.9g)", loss[1][0],
          loss[1][1], loss[0][0], loss[0][1]);
    free(mv[0]); free(mv[1]); free(e);
    smj_container_free(&c);
}

static void padded_head(smj_ctx *ctx) {
    smj_dataset *ds = make_dataset(ctx, "pad.bin", 3000, 50, 5);
    for (int tied = 0; tied < 2; tied++) {
        smj_model_config c = tiny_cfg();
        c.tied_embeddings = tied;
        smj_model *m = NULL;
        smj_trainer *t = NULL;
        smj_optim_options o;
        smj_optim_defaults(&o);
        o.lr = 1e-2f; o.weight_decay = 0.1f;
        CHECK_OK(ctx, smj_model_create(ctx, &c, 3, &m));
        if (!m) continue;
        CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
        smj_step_stats st;
        for (int s = 0; s < 3; s++) CHECK_OK(ctx, smj_trainer_step(t, ds, 2, 16, 1, &st));
        int64_t pad = 14 * (int64_t)c.dim;
        CHECK(m->head_ld == 64 && m->n_params == smj_model_num_params(m) + pad,
              "tied %d: head rows %lld, %lld floats for %lld parameters", tied, (long long)m->head_ld,
              (long long)m->n_params, (long long)smj_model_num_params(m));
        const float *w = smj_model_ptr(m, m->params, R_LM_HEAD, -1), *g = smj_model_ptr(m, m->grads, R_LM_HEAD, -1);
        int zero = 1, nz = 0;
        for (int64_t i = 50 * (int64_t)c.dim; i < 64 * (int64_t)c.dim; i++) zero &= w[i] == 0.0f && g[i] == 0.0f;
        for (int64_t i = 0; i < 50 * (int64_t)c.dim; i++) nz += g[i] != 0.0f;
        CHECK(zero && nz > 0, "tied %d: the head's padding rows stay 0 through 3 steps (weights and gradients)", tied);
        int32_t x[32], y[32];
        for (int i = 0; i < 32; i++) { x[i] = (i * 7 + 3) % 50; y[i] = (i * 5 + 1) % 50; }
        float loss;
        CHECK_OK(ctx, smj_model_forward(m, x, y, 2, 16, &loss));
        const float *lg = smj_model_logits(m);
        CHECK(smj_model_logits_stride(m) == 64, "tied %d: a training forward's logits rows are 64 apart", tied);
        float *dense = malloc(sizeof(float) * 32 * 50), *plain = malloc(sizeof(float) * 32 * 50);
        zero = 1;
        for (int r = 0; r < 32; r++) for (int j = 50; j < 64; j++) zero &= lg[r * 64 + j] == 0.0f;
        CHECK(zero, "tied %d: the logits' padding columns are 0", tied);
        CHECK_OK(ctx, smj_model_get_logits(m, dense));
        CHECK_OK(ctx, smj_model_forward(m, x, NULL, 2, 16, NULL));
        CHECK(smj_model_logits_stride(m) == 50, "tied %d: without targets the logits are dense", tied);
        CHECK_OK(ctx, smj_model_get_logits(m, plain));
        double e = 0;
        for (int i = 0; i < 32 * 50; i++) e = fmax(e, fabs((double)dense[i] - plain[i]));
        CHECK(e < 1e-5, "tied %d: padded training logits == dense logits (max |diff| %.3g)", tied, e);
        free(dense); free(plain);
        if (tied) old_layout_state(ctx, m, t, ds);
        smj_trainer_free(t);
        smj_model_free(m);
    }
    smj_dataset_free(ds);
}

static void nonfinite(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_dataset *ds = make_dataset(ctx, "nan.bin", 1000, 50, 2);
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.max_bad_steps = 3;
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    smj_step_stats st;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 1, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    CHECK_OK(ctx, smj_trainer_step(t, ds, 2, 8, 1, &st));
    CHECK(!st.skipped, "a normal step is not skipped");
    float *before = params_copy(m);
    const char *s1 = path_in_tmp("nan_before.bin"), *s2 = path_in_tmp("nan_after.bin");
    CHECK_OK(ctx, smj_trainer_save(t, s1, NULL));
    smj_trainer_debug_poison_next(t);
    CHECK_OK(ctx, smj_trainer_step(t, ds, 2, 8, 1, &st));
    CHECK(st.skipped == 1 && st.bad_steps_total == 1, "NaN gradient: skipped=%d total=%lld", st.skipped, (long long)st.bad_steps_total);
    float *after = params_copy(m);
    CHECK(memcmp(before, after, sizeof(float) * (size_t)smj_model_num_params(m)) == 0, "a skipped step leaves the weights untouched");
    /* moments untouched too: the saved optimizer tensors are identical */
    CHECK_OK(ctx, smj_trainer_save(t, s2, NULL));
    uint8_t *fa = NULL, *fb = NULL;
    size_t la = 0, lb = 0;
    CHECK_OK(ctx, smj_read_file(ctx, s1, &fa, &la));
    CHECK_OK(ctx, smj_read_file(ctx, s2, &fb, &lb));
    /* the files differ only in the metadata (step, cursor, counters): compare the tail holding the moments */
    size_t mom = sizeof(float) * (size_t)smj_model_num_params(m) * 2 + 200;
    CHECK(la == lb && la > mom && memcmp(fa + la - mom, fb + lb - mom, mom - 4) == 0, "a skipped step leaves the AdamW moments untouched");
    free(fa); free(fb);
    CHECK_OK(ctx, smj_trainer_step(t, ds, 2, 8, 1, &st));
    CHECK(!st.skipped, "training continues after a skipped step");
    smj_status s = SMJ_OK;
    for (int i = 0; i < 3 && s == SMJ_OK; i++) {
        smj_trainer_debug_poison_next(t);
        s = smj_trainer_step(t, ds, 2, 8, 1, &st);
    }
    CHECK(s == SMJ_ERR_DIVERGED && strstr(smj_ctx_error(ctx), "--lr"), "3 bad steps in a row stop training: %s", smj_ctx_error(ctx));
    free(before); free(after);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
}

static void write_bytes(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void corrupt_files(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 1, &m));
    const char *ck = path_in_tmp("good.ckpt"), *bad = path_in_tmp("bad.ckpt");
    CHECK_OK(ctx, smj_model_save(m, ck));
    uint8_t *data;
    size_t n;
    CHECK_OK(ctx, smj_read_file(ctx, ck, &data, &n));
    smj_model *out = NULL;
    size_t cuts[] = {0, 7, 39, 41, 200, n / 2, n - 5, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(bad, data, cuts[i]);
        smj_status s = smj_model_load(ctx, bad, &out);
        CHECK(s == SMJ_ERR_FORMAT && out == NULL && strstr(smj_ctx_error(ctx), "bad.ckpt"),
              "checkpoint truncated to %zu bytes: status %d, %s", cuts[i], s, smj_ctx_error(ctx));
    }
    size_t flips[] = {0, 9, 13, 20, 60, n / 3, n - 2};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        data[flips[i]] ^= 0x10;
        write_bytes(bad, data, n);
        data[flips[i]] ^= 0x10;
        smj_status s = smj_model_load(ctx, bad, &out);
        CHECK(s == SMJ_ERR_FORMAT && out == NULL, "checkpoint with byte %zu flipped: status %d, %s", flips[i], s, smj_ctx_error(ctx));
    }
    smj_status s = smj_model_load(ctx, path_in_tmp("missing.ckpt"), &out);
    CHECK(s == SMJ_ERR_IO && strstr(smj_ctx_error(ctx), "missing.ckpt"), "missing checkpoint: %s", smj_ctx_error(ctx));
    free(data);
    /* datasets */
    smj_dataset *ds = make_dataset(ctx, "good_ds.bin", 100, 50, 1);
    smj_dataset_free(ds);
    CHECK_OK(ctx, smj_read_file(ctx, path_in_tmp("good_ds.bin"), &data, &n));
    const char *bds = path_in_tmp("bad_ds.bin");
    write_bytes(bds, data, n - 1);
    ds = NULL;
    s = smj_dataset_open(ctx, bds, &ds);
    CHECK(s == SMJ_ERR_FORMAT && !ds && strstr(smj_ctx_error(ctx), "bad_ds.bin"), "truncated dataset: %s", smj_ctx_error(ctx));
    data[70] ^= 1;
    write_bytes(bds, data, n);
    s = smj_dataset_open(ctx, bds, &ds);
    CHECK(s == SMJ_ERR_FORMAT, "dataset with a flipped token: %s", smj_ctx_error(ctx));
    data[70] ^= 1;
    data[1] = 'X';
    write_bytes(bds, data, n);
    s = smj_dataset_open(ctx, bds, &ds);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "magic"), "dataset with bad magic: %s", smj_ctx_error(ctx));
    /* an empty file and a directory (the readers map files through smj_map_file) */
    write_bytes(bds, data, 0);
    s = smj_dataset_open(ctx, bds, &ds);
    CHECK(s == SMJ_ERR_FORMAT && !ds && strstr(smj_ctx_error(ctx), "too short"), "empty dataset: %s", smj_ctx_error(ctx));
    s = smj_model_load(ctx, bds, &out);
    CHECK(s == SMJ_ERR_FORMAT && !out && strstr(smj_ctx_error(ctx), "too short"), "empty checkpoint: %s", smj_ctx_error(ctx));
    s = smj_dataset_open(ctx, test_tmpdir(), &ds);
    CHECK(s == SMJ_ERR_IO && !ds && strstr(smj_ctx_error(ctx), "not a regular file"), "dataset path is a directory: %s",
          smj_ctx_error(ctx));
    s = smj_model_load(ctx, test_tmpdir(), &out);
    CHECK(s == SMJ_ERR_IO && !out && strstr(smj_ctx_error(ctx), "not a regular file"),
          "checkpoint path is a directory: %s", smj_ctx_error(ctx));
    free(data);
    /* writing over an existing file fails cleanly and leaves it intact */
    s = smj_model_save(m, path_in_tmp("no/such/dir/x.ckpt"));
    CHECK(s == SMJ_ERR_IO, "saving into a missing directory: %s", smj_ctx_error(ctx));
    smj_model_free(m);
}

static void sessions(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg();
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 21, &m));
    check_kv_cache(ctx, m, 150, "llama");
    check_greedy(ctx, m, "llama on cpu (feed loop)");
    smj_model_free(m);
    /* the ref backend has decode_attention: its one-token steps take the
     * position-as-data path (smj_block_decode) */
    smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_REF};
    smj_ctx *ref = smj_ctx_create(&o);
    m = NULL;
    CHECK_OK(ref, smj_model_create(ref, &c, 21, &m));
    if (m) check_kv_cache(ref, m, 90, "llama on ref (decode_attention steps)");
    smj_model_free(m);
    /* a plain block (no QK-norm) takes the reference's decode_block */
    c.qk_norm = 0;
    m = NULL;
    CHECK_OK(ref, smj_model_create(ref, &c, 24, &m));
    if (m) check_kv_cache(ref, m, 90, "llama on ref (decode_block steps)");
    if (m) check_greedy(ref, m, "llama on ref (decode_argmax steps)");
    smj_model_free(m);
    /* attention biases (Qwen2-style), made non-zero: decode_block adds them */
    c.attn_bias = c.attn_out_bias = 1;
    m = NULL;
    CHECK_OK(ref, smj_model_create(ref, &c, 25, &m));
    for (int i = 0; m && i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (strstr(v.name, "proj.bias"))
            for (int64_t j = 0; j < v.numel; j++) v.data[j] = 0.5f * sinf((float)(j + 7 * i));
    }
    if (m) check_kv_cache(ref, m, 90, "llama with attention biases on ref (decode_block steps)");
    smj_model_free(m);
    c.attn_bias = c.attn_out_bias = 0;
    /* decode_argmax is smj_sample's greedy scan: ties, NaN, -inf */
    {
        static const float L[][5] = {{1, 3, 3, 2, 0},   {NAN, 5, 6, 1, 2}, {1, NAN, 2, NAN, 2},
                                     {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY},
                                     {-1, INFINITY, NAN, INFINITY, 0}, {0, 0, 0, 0, 0}};
        smj_sampler_options so;
        smj_sampler_defaults(&so);
        so.temperature = 0;
        uint64_t rng = 1;
        float scratch[5];
        int ok = 1;
        for (int i = 0; i < 6; i++) {
            int32_t next = -1, hist[4] = {-1, -1, -1, -1}, pos = 1;
            smj_backend_ref.decode_argmax(NULL, &next, hist, &pos, L[i], 5);
            int32_t want = smj_sample(L[i], 5, &so, NULL, 0, &rng, scratch);
            ok &= next == want && hist[2] == want && pos == 2 && hist[0] == -1 && hist[1] == -1 && hist[3] == -1;
        }
        CHECK(ok, "ref decode_argmax differs from smj_sample's greedy choice");
    }
    smj_ctx_free(ref);
    check_decode_bf16_weights(&c, "llama");
}

/* smj_sample's definition with every candidate sorted (the order HF's
 * generate uses): the same token as smj_sample, which orders only the
 * top-k, for every draw. */
typedef struct { float p; int32_t id; } ref_cand;
static int ref_desc(const void *a, const void *b) {
    const ref_cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}
static int32_t ref_sample(const float *l, int V, const smj_sampler_options *o, uint64_t *rng) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    ref_cand *c = malloc(sizeof *c * (size_t)V);
    float *w = malloc(sizeof(float) * (size_t)V);
    memcpy(w, l, sizeof(float) * (size_t)V);
    double sum = smj_sample_weights(w, V, l[best], o->temperature); /* the softmax weights: checked below */
    for (int i = 0; i < V; i++) {
        c[i].p = w[i];
        c[i].id = i;
    }
    free(w);
    qsort(c, (size_t)V, sizeof *c, ref_desc);
    int n = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    if (o->top_p > 0 && o->top_p < 1) {
        double cum = 0;
        for (int i = 0; i < n; i++)
            if ((cum += c[i].p / sum) >= o->top_p) { n = i + 1; break; }
    }
    if (o->min_p > 0) {
        int k = 1;
        while (k < n && c[k].p >= o->min_p * c[0].p) k++;
        n = k;
    }
    double mass = 0, acc = 0;
    for (int i = 0; i < n; i++) mass += c[i].p;
    double u = (double)(smj_splitmix64(rng) >> 11) * 0x1.0p-53 * mass;
    int32_t pick = c[n - 1].id;
    for (int i = 0; i < n; i++)
        if (u < (acc += c[i].p)) { pick = c[i].id; break; }
    free(c);
    return pick;
}

/* smj_sample_weights: each weight within 1 ulp of e^x computed in double
 * (x from 0 down to -90, where it must give 0 below -87, and NaN -> 0), the
 * sum within 1e-12 of the weights' sum in order. */
static void sample_weights(void) {
    enum { N = 20011 };
    float *l = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) l[i] = -90.0f * (float)i / (float)(N - 1);
    l[N / 2] = NAN;
    memcpy(w, l, sizeof(float) * N);
    double sum = smj_sample_weights(w, N, 0.0f, 1.0f), want = 0, worst = 0;
    int bad_tail = 0;
    for (int i = 0; i < N; i++) {
        want += w[i];
        if (i == N / 2) { bad_tail |= w[i] != 0.0f; continue; }
        if (l[i] < -87.0f) { bad_tail |= w[i] != 0.0f; continue; }
        float e = (float)exp((double)l[i]);
        double ulp = (double)nextafterf(e, INFINITY) - e, err = fabs((double)w[i] - exp((double)l[i])) / ulp;
        if (err > worst) worst = err;
    }
    CHECK(worst <= 1.0, "sampler weights: %.3g ulp from e^x", worst);
    CHECK(!bad_tail, "sampler weights: below e^-87 and NaN give 0");
    CHECK(fabs(sum - want) <= 1e-12 * want, "sampler weights' sum %.17g, want %.17g", sum, want);
    free(l);
    free(w);
}

static void sampler_vs_full_sort(void) {
    sample_weights();
    static const int VS[] = {7, 300, 5000, 32768};
    static const int KS[] = {1, 2, 40, 256, 257, 0};
    static const float PS[] = {1.0f, 0.9f, 0.5f};
    smj_rng r;
    smj_rng_seed(&r, 99);
    long bad = 0, draws = 0;
    for (size_t v = 0; v < sizeof VS / sizeof VS[0]; v++) {
        int V = VS[v];
        float *l = malloc(sizeof(float) * (size_t)V), *scratch = malloc(sizeof(float) * (size_t)V);
        for (size_t k = 0; k < sizeof KS / sizeof KS[0]; k++)
            for (size_t p = 0; p < sizeof PS / sizeof PS[0]; p++)
                for (int rep = 0; rep < 6; rep++) {
                    /* rep 0, 1: many equal logits (ties broken by id) */
                    for (int i = 0; i < V; i++)
                        l[i] = rep < 2 ? (float)(int)(4 * smj_rng_uniform(&r)) : 6.0f * smj_rng_normal(&r);
                    smj_sampler_options so;
                    smj_sampler_defaults(&so);
                    so.top_k = KS[k]; so.top_p = PS[p]; so.temperature = rep % 3 == 2 ? 0.3f : 1.1f;
                    so.min_p = rep == 5 ? 0.05f : 0.0f;
                    uint64_t s1 = (uint64_t)rep * 7919 + 1, s2 = s1;
                    for (int d = 0; d < 8; d++, draws++)
                        bad += smj_sample(l, V, &so, NULL, 0, &s1, scratch) != ref_sample(l, V, &so, &s2);
                }
        free(l); free(scratch);
    }
    CHECK(bad == 0, "smj_sample differs from the full-sort definition in %ld of %ld draws", bad, draws);
}

static void schedules_and_sampler(void) {
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 1.0f; o.min_lr_ratio = 0.1f; o.warmup_steps = 10; o.total_steps = 110;
    CHECK(fabsf(smj_lr_at(&o, 0) - 0.1f) < 1e-6f && fabsf(smj_lr_at(&o, 9) - 1.0f) < 1e-6f, "linear warmup");
    CHECK(fabsf(smj_lr_at(&o, 60) - 0.55f) < 1e-6f, "cosine midpoint %.7g", smj_lr_at(&o, 60));
    CHECK(fabsf(smj_lr_at(&o, 110) - 0.1f) < 1e-6f && fabsf(smj_lr_at(&o, 500) - 0.1f) < 1e-6f, "cosine floor");
    o.schedule = SMJ_SCHED_LINEAR;
    CHECK(fabsf(smj_lr_at(&o, 60) - 0.55f) < 1e-6f, "linear midpoint");
    o.schedule = SMJ_SCHED_CONSTANT;
    CHECK(smj_lr_at(&o, 100) == 1.0f, "constant");
    o.schedule = SMJ_SCHED_WSD; o.wsd_decay_frac = 0.2f; /* stable until step 88, then linear to 0.1 at 110 */
    CHECK(smj_lr_at(&o, 80) == 1.0f && fabsf(smj_lr_at(&o, 99) - 0.55f) < 1e-6f && fabsf(smj_lr_at(&o, 110) - 0.1f) < 1e-6f, "WSD");

    float lg[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 1.95f}, scratch[6];
    smj_sampler_options so;
    smj_sampler_defaults(&so);
    uint64_t rs = 1;
    so.temperature = 0;
    CHECK(smj_sample(lg, 6, &so, NULL, 0, &rs, scratch) == 1, "greedy picks the argmax");
    int32_t hist[2] = {1, 1};
    so.repetition_penalty = 1.5f;
    CHECK(smj_sample(lg, 6, &so, hist, 2, &rs, scratch) == 5, "repetition penalty demotes a seen token");
    so.repetition_penalty = 1.0f;
    so.temperature = 1.0f; so.top_k = 1;
    for (int i = 0; i < 20; i++) CHECK(smj_sample(lg, 6, &so, NULL, 0, &rs, scratch) == 1, "top-k 1 is greedy");
    so.top_k = 0; so.top_p = 0.01f;
    CHECK(smj_sample(lg, 6, &so, NULL, 0, &rs, scratch) == 1, "tiny top-p is greedy");
    so.top_p = 1.0f; so.min_p = 0.93f; /* keeps only tokens within 93% of the best: 1 (2.0) and 5 (e^-0.05 = 0.95) */
    int seen[6] = {0};
    for (int i = 0; i < 200; i++) seen[smj_sample(lg, 6, &so, NULL, 0, &rs, scratch)]++;
    CHECK(seen[0] + seen[2] + seen[3] + seen[4] == 0 && seen[1] > 0 && seen[5] > 0, "min-p keeps exactly the tokens near the top");
    so.min_p = 0; so.top_k = 0;
    uint64_t r1 = 5, r2 = 5;
    int same = 1;
    for (int i = 0; i < 50; i++) same &= smj_sample(lg, 6, &so, NULL, 0, &r1, scratch) == smj_sample(lg, 6, &so, NULL, 0, &r2, scratch);
    CHECK(same, "sampling is deterministic for a seed");
    sampler_vs_full_sort();
}

int main(void) {
    gradient_check(SMJ_BACKEND_REF);
    gradient_check(SMJ_BACKEND_CPU);
    smj_ctx_options o = {.threads = 2, .backend = SMJ_BACKEND_CPU};
    smj_ctx *ctx = smj_ctx_create(&o);
    accumulation(ctx);
    resume(ctx);
    padded_head(ctx);
    nonfinite(ctx);
    corrupt_files(ctx);
    sessions(ctx);
    schedules_and_sampler();
    smj_ctx_free(ctx);
    /* the reference backend has grad_ctl, so its trainer takes the device
     * path (the decision on the device, the next batch drawn during the
     * step): resume and the NaN skip as above */
    smj_ctx_options r = {.threads = 1, .backend = SMJ_BACKEND_REF};
    ctx = smj_ctx_create(&r);
    resume(ctx);
    nonfinite(ctx);
    batch_ahead(ctx);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_model");
}
