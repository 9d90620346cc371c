/* test_gpt2.c — the GPT-2 family (cfg.arch = SMJ_ARCH_GPT2) through the
 * public API:
 *  - whole-model gradient check by finite differences (directional, loss
 *    accumulated in double) on a tiny config, both backends, tied and untied;
 *  - KV-cache decoding reproduces the full forward's logits at every
 *    position (learned positions offset by the cache length), across the
 *    session's chunk boundary;
 *  - a few training steps lower the loss; resume is bit-identical;
 *  - checkpoints carry arch=gpt2 and round-trip the weights exactly;
 *  - bad GPT-2 configs are refused with a message.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "util/check.h"
#include "util/decode.h"
#include "util/gradcheck.h"

static smj_model_config tiny_cfg(int tied) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                          .head_dim = 6, .ffn_hidden = 40, .max_seq_len = 160, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = tied, .arch = SMJ_ARCH_GPT2};
    return c;
}

static char *path_in_tmp(const char *name) {
    static char buf[8][600];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 600, "%s/%s", test_tmpdir(), name);
    return p;
}

static float *params_copy(smj_model *m) {
    int64_t P = smj_model_num_params(m), off = 0;
    float *p = malloc(sizeof(float) * (size_t)P);
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        CHECK(smj_model_tensor(m, i, &v) == SMJ_OK, "tensor view");
        CHECK(smj_model_tensor_get(m, i, 0, p + off) == SMJ_OK, "tensor get");
        off += v.numel;
    }
    return p;
}


static void gradient_check(smj_backend_kind kind, int tied) {
    smj_ctx_options o = {.threads = 2, .backend = kind};
    smj_ctx *ctx = smj_ctx_create(&o);
    smj_model_config c = tiny_cfg(tied);
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 7, &m));
    int B = 2, T = 9;
    int32_t x[18], y[18];
    for (int i = 0; i < 18; i++) { x[i] = (i * 13 + 5) % 50; y[i] = (i * 29 + 3) % 50; }
    y[4] = -1;
    int n = smj_model_num_tensors(m);
    /* larger weights (curvature worth checking) and non-trivial LN/biases */
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        for (int64_t j = 0; j < v.numel; j++)
            v.data[j] = v.ndim >= 2 ? v.data[j] * 8.0f : v.data[j] + 0.1f * (float)sin((double)j + i);
    }
    gradcheck_directional(ctx, m, x, y, B, T, tied ? "gpt2 tied" : "gpt2 untied");
    /* every tensor gets a gradient (wpe rows past T stay 0) */
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        double s = 0;
        for (int64_t j = 0; j < v.numel; j++) s += fabs(v.grad[j]);
        CHECK(s > 0, "%s: gradient of %s is zero", smj_ctx_backend_name(ctx), v.name);
    }
    smj_model_free(m);
    smj_ctx_free(ctx);
}

static void sessions(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg(1);
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 21, &m));
    /* make positions matter */
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (!strcmp(v.name, "transformer.wpe.weight"))
            for (int64_t j = 0; j < v.numel; j++) v.data[j] *= 20.0f;
    }
    check_kv_cache(ctx, m, 150, "gpt2");
    smj_model_free(m);
    /* the ref backend has the decode ops: its one-token steps go through
     * decode_block on the session's f32 copy of the Conv1D weights
     * (transposed) and greedy steps through decode_argmax */
    smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_REF};
    smj_ctx *rc = smj_ctx_create(&o);
    m = NULL;
    CHECK_OK(rc, smj_model_create(rc, &c, 21, &m));
    for (int i = 0; m && i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (!strcmp(v.name, "transformer.wpe.weight"))
            for (int64_t j = 0; j < v.numel; j++) v.data[j] *= 20.0f;
    }
    if (m) {
        check_kv_cache(rc, m, 150, "gpt2 on ref (decode path)");
        check_greedy(rc, m, "gpt2 on ref (decode path)");
    }
    smj_model_free(m);
    smj_ctx_free(rc);
    /* in bf16 mode the steps take decode_block on the bf16 copies, whose
     * Conv1D weights are transposed to [out, in] rows */
    check_decode_bf16_weights(&c, "gpt2");
}

static smj_dataset *make_dataset(smj_ctx *ctx, const char *name, int64_t n, int V) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = 5;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 7 + (int64_t)(smj_splitmix64(&s) % 3)) % V);
    char *p = path_in_tmp(name);
    CHECK_OK(ctx, smj_dataset_write(ctx, p, ids, n, V));
    free(ids);
    smj_dataset *ds = NULL;
    CHECK_OK(ctx, smj_dataset_open(ctx, p, &ds));
    return ds;
}

static void train_and_checkpoint(smj_ctx *ctx) {
    smj_model_config c = tiny_cfg(1);
    smj_dataset *ds = make_dataset(ctx, "gpt2.bin", 4000, 50);
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 3e-3f; o.total_steps = 30; o.warmup_steps = 3;
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    smj_step_stats st;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 11, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    float first = 0, last = 0, at3 = 0;
    for (int s = 0; s < 30; s++) {
        CHECK_OK(ctx, smj_trainer_step(t, ds, 4, 32, 1, &st));
        if (s == 0) first = st.loss;
        if (s == 2) at3 = st.loss;
        last = st.loss;
    }
    printf("gpt2 training: loss %.4f -> %.4f after 30 steps\n", first, last);
    CHECK(last < first - 0.3f, "gpt2 training lowers the loss (%.4f -> %.4f)", first, last);
    (void)at3;
    /* checkpoint round trip with arch=gpt2 */
    const char *ck = path_in_tmp("gpt2.ckpt");
    CHECK_OK(ctx, smj_model_save(m, ck));
    smj_model_config c2;
    int is_state = 1;
    CHECK_OK(ctx, smj_checkpoint_read_config(ctx, ck, &c2, &is_state));
    CHECK(is_state == 0 && c2.arch == SMJ_ARCH_GPT2 && memcmp(&c2, &c, sizeof c) == 0, "gpt2 config read back");
    smj_model *m2 = NULL;
    CHECK_OK(ctx, smj_model_load(ctx, ck, &m2));
    float *p1 = params_copy(m), *p2 = params_copy(m2);
    CHECK(memcmp(p1, p2, sizeof(float) * (size_t)smj_model_num_params(m)) == 0, "gpt2 checkpoint round trip");
    free(p1); free(p2);
    smj_model_free(m2);
    smj_trainer_free(t);
    smj_model_free(m);

    /* resume: 3 steps + save state + load + 3 steps == 6 steps, bit for bit */
    o.total_steps = 6;
    float straight[6], resumed[6];
    CHECK_OK(ctx, smj_model_create(ctx, &c, 12, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    for (int s = 0; s < 6; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); straight[s] = st.loss; }
    smj_trainer_free(t);
    smj_model_free(m);
    const char *state = path_in_tmp("gpt2_state.bin");
    CHECK_OK(ctx, smj_model_create(ctx, &c, 12, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    for (int s = 0; s < 3; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); resumed[s] = st.loss; }
    CHECK_OK(ctx, smj_trainer_save(t, state, NULL));
    smj_trainer_free(t);
    smj_model_free(m);
    CHECK_OK(ctx, smj_model_create(ctx, &c, 999, &m));
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    CHECK_OK(ctx, smj_trainer_load(t, state, NULL));
    for (int s = 3; s < 6; s++) { CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 1, &st)); resumed[s] = st.loss; }
    CHECK(memcmp(straight, resumed, sizeof straight) == 0, "gpt2 resumed losses are bit-identical");
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
}

static void bad_configs(smj_ctx *ctx) {
    smj_model *m = NULL;
    smj_model_config c = tiny_cfg(1);
    c.n_kv_heads = 2;
    CHECK(smj_model_create(ctx, &c, 1, &m) == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "gpt2"),
          "gpt2 with GQA refused: %s", smj_ctx_error(ctx));
    c = tiny_cfg(1);
    c.head_dim = 8;
    CHECK(smj_model_create(ctx, &c, 1, &m) == SMJ_ERR_INVALID, "gpt2 with head_dim*heads != dim refused");
    c = tiny_cfg(1);
    c.qk_norm = 1;
    CHECK(smj_model_create(ctx, &c, 1, &m) == SMJ_ERR_INVALID, "gpt2 with qk_norm refused");
    c = tiny_cfg(1);
    c.arch = 7;
    CHECK(smj_model_create(ctx, &c, 1, &m) == SMJ_ERR_INVALID, "unknown arch refused");
    /* names and count: HF's GPT2LMHeadModel state dict (tied: no lm_head) */
    c = tiny_cfg(1);
    CHECK_OK(ctx, smj_model_create(ctx, &c, 1, &m));
    smj_tensor_view v;
    CHECK(smj_model_num_tensors(m) == 2 + 12 * 2 + 2, "gpt2 tensor count %d", smj_model_num_tensors(m));
    smj_model_tensor(m, 4, &v);
    CHECK(!strcmp(v.name, "transformer.h.0.attn.c_attn.weight") && v.shape[0] == 24 && v.shape[1] == 72,
          "c_attn is [in, out]: %s", v.name);
    CHECK(smj_model_num_params(m) == smj_config_num_params(&c), "parameter count %lld vs %lld",
          (long long)smj_model_num_params(m), (long long)smj_config_num_params(&c));
    smj_model_free(m);
}

int main(void) {
    gradient_check(SMJ_BACKEND_REF, 1);
    gradient_check(SMJ_BACKEND_CPU, 1);
    gradient_check(SMJ_BACKEND_REF, 0);
    smj_ctx_options o = {.threads = 2, .backend = SMJ_BACKEND_CPU};
    smj_ctx *ctx = smj_ctx_create(&o);
    sessions(ctx);
    train_and_checkpoint(ctx);
    bad_configs(ctx);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_gpt2");
}
