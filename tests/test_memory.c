/* test_memory.c — the training-memory options (smj_train_options) and the
 * training-memory estimate, through the public API:
 *  - fused cross-entropy (LM head + loss in chunks of rows, no [B*T, V]
 *    logits) gives the loss and every gradient of the plain path: on the
 *    cpu backend the loss and every gradient but the LM head's (the tied
 *    embedding's) are bitwise equal, the head's (summed chunk by chunk)
 *    within 1e-6 relative; on ref all within 1e-6; for chunk sizes from 1
 *    row to automatic, Llama (GQA, QK-norm, untied; tied with biases) and
 *    GPT-2, with gradients accumulated over two backwards;
 *  - gradient checkpointing (one block's activations, each block's forward
 *    recomputed before its backward) gives bitwise the same loss and
 *    gradients on both backends; so do both options together apart from the
 *    head as above;
 *  - 16-bit activations (alone, with checkpointing, with both): the loss is
 *    the plain one bitwise, and the gradients are bitwise those of an
 *    emulation built here without the option (plain forward, every tensor
 *    the backward reads rounded to bf16 in place by the safetensors
 *    rounding, plain backward), within 3% of the plain ones and not equal;
 *  - a few trainer steps with --grad-accum 2 give the same losses with the
 *    options as without (bitwise with checkpointing alone; the first loss
 *    bitwise and the rest within 1e-3 with 16-bit activations);
 *  - misuse: logits after a fused forward with targets are refused (NULL,
 *    SMJ_ERR_INVALID, destination untouched), a forward without targets
 *    still gives exact logits, bad option values are refused, changing the
 *    options between forward and backward makes the backward fail cleanly;
 *  - smj_config_train_memory_ex against the bytes the model and trainer
 *    really allocate through the backend's alloc hook (a counting wrapper),
 *    for several configs x {plain, fused-ce, checkpointing, both, fp16, all
 *    three}: within 2% (it is exact: the same walks size and carve the
 *    buffers), and each option lowers both where it should.
 * In a CUDA build with a GPU the equalities and the training run also on
 * the cuda backend (checkpointing and fp16 vs its emulation bitwise,
 * fused-ce within 1e-5), and the device memory a training run adds is
 * within 10% of the estimate plus smj_config_device_workspace.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "../src/hf/safetensors.h"
#include "../src/cuda/limits.h"
#include "../src/model/model.h"
#include "../src/ops/ops.h"
#include "util/check.h"

static const smj_train_options OPT_PLAIN = {0};
/* Tolerance of what is not bitwise: 1e-6 relative on the host backends;
 * 1e-5 on CUDA, where cuBLAS may pick another algorithm for a chunk's row
 * count than for all rows. */
static double g_tol = 1e-6;

static smj_model_config llama_gqa(void) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                          .head_dim = 8, .ffn_hidden = 40, .max_seq_len = 64, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = 0, .qk_norm = 1};
    return c;
}
static smj_model_config llama_tied_bias(void) {
    smj_model_config c = llama_gqa();
    c.tied_embeddings = 1;
    c.qk_norm = 0;
    c.attn_bias = c.attn_out_bias = 1;
    c.n_layers = 3;
    return c;
}
static smj_model_config gpt2_cfg(void) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                          .head_dim = 6, .ffn_hidden = 40, .max_seq_len = 64, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = 1, .arch = SMJ_ARCH_GPT2};
    return c;
}

static smj_ctx *make_ctx(smj_backend_kind kind) {
    smj_ctx_options o = {.threads = 2, .backend = kind};
    return smj_ctx_create(&o);
}

/* A model with weights scaled up (a loss surface with some curvature, so the
 * gradients are not all tiny) and non-trivial norms/biases. */
static smj_model *make_model(smj_ctx *ctx, const smj_model_config *c) {
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, c, 7, &m));
    if (!m) return NULL;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        float *h = malloc(sizeof(float) * (size_t)v.numel);
        smj_model_tensor_get(m, i, 0, h);
        for (int64_t j = 0; j < v.numel; j++)
            h[j] = v.ndim >= 2 ? h[j] * 6.0f : h[j] + 0.1f * (float)sin((double)j + i);
        smj_model_tensor_set(m, i, h);
        free(h);
    }
    return m;
}

typedef struct {
    float loss[2];
    int n;           /* tensors */
    int64_t *numel;
    char (*name)[96];
    float **grad;    /* [n][numel] */
} fb_result;

static void fb_free(fb_result *r) {
    for (int i = 0; i < r->n; i++) free(r->grad[i]);
    free(r->grad);
    free(r->numel);
    free(r->name);
}

static void round_saved(smj_model *m, const smj_model_config *c, int B, int T, int ckpt, int logits);

/* Two forward+backward passes (second with loss_scale 0.5, accumulating) on
 * fixed batches under options o; the losses and every gradient. mode
 * FB_CALLS: smj_model_forward then smj_model_backward; FB_EMULATE: so, o
 * without fp16_activations, the saved activations rounded in place between
 * forward and backward instead (round_saved); FB_ONE_CALL: one
 * smj_model_forward_backward a pass (the trainer's call). */
enum { FB_CALLS, FB_EMULATE, FB_ONE_CALL };
static void forward_backward(smj_backend_kind kind, const smj_model_config *c, const smj_train_options *o, int mode,
                             int B, int T, fb_result *r) {
    int emulate = mode == FB_EMULATE;
    memset(r, 0, sizeof *r);
    smj_ctx *ctx = make_ctx(kind);
    smj_model *m = make_model(ctx, c);
    smj_train_options oo = *o;
    if (emulate) oo.fp16_activations = 0;
    CHECK_OK(ctx, smj_model_set_train_options(m, &oo));
    int64_t N = (int64_t)B * T;
    int32_t *x = malloc(sizeof(int32_t) * 2 * (size_t)N), *y = malloc(sizeof(int32_t) * 2 * (size_t)N);
    for (int64_t i = 0; i < 2 * N; i++) {
        x[i] = (int32_t)((i * 13 + 5) % c->vocab_size);
        y[i] = (int32_t)((i * 29 + 3) % c->vocab_size);
    }
    y[4] = -1;
    y[N + 1] = -1;
    CHECK_OK(ctx, smj_model_zero_grad(m));
    for (int k = 0; k < 2; k++) {
        if (mode == FB_ONE_CALL) {
            CHECK_OK(ctx, smj_model_forward_backward(m, x + k * N, y + k * N, B, T, k ? 0.5f : 1.0f, &r->loss[k]));
            continue;
        }
        CHECK_OK(ctx, smj_model_forward(m, x + k * N, y + k * N, B, T, &r->loss[k]));
        /* (16-bit logits: fp16_activations without fused_ce, blocks of
         * ce_chunk_rows rows, at least two of them) */
        int l16 = !o->fused_ce && o->ce_chunk_rows > 0 && B * T >= 2 * o->ce_chunk_rows;
        if (emulate) round_saved(m, c, B, T, o->gradient_checkpointing, l16);
        if (l16 && !emulate) {
            CHECK(smj_model_logits(m) == NULL, "16-bit logits: smj_model_logits after a training forward is NULL");
            float one;
            CHECK(smj_model_get_logits(m, &one) == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "bf16"),
                  "16-bit logits: smj_model_get_logits fails naming them (%s)", smj_ctx_error(ctx));
        }
        CHECK_OK(ctx, smj_model_backward(m, k ? 0.5f : 1.0f));
    }
    r->n = smj_model_num_tensors(m);
    r->numel = calloc((size_t)r->n, sizeof *r->numel);
    r->name = calloc((size_t)r->n, sizeof *r->name);
    r->grad = calloc((size_t)r->n, sizeof *r->grad);
    for (int i = 0; i < r->n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        r->numel[i] = v.numel;
        snprintf(r->name[i], sizeof r->name[i], "%s", v.name);
        r->grad[i] = malloc(sizeof(float) * (size_t)v.numel);
        CHECK_OK(ctx, smj_model_tensor_get(m, i, 1, r->grad[i]));
    }
    free(x);
    free(y);
    smj_model_free(m);
    smj_ctx_free(ctx);
}

static int is_head(const char *name) {
    return strstr(name, "lm_head") || strstr(name, "embed_tokens") || strstr(name, "wte");
}

/* Compares r against the plain run p. bitwise_body: every gradient but the
 * head's (and the tied embedding's) must be bitwise equal, and the loss;
 * bitwise_head: the head's too. Else within 1e-6 relative. */
static void compare(const fb_result *p, const fb_result *r, int bitwise_body, int bitwise_head, const char *tag) {
    for (int k = 0; k < 2; k++) {
        if (bitwise_body)
            CHECK(memcmp(&p->loss[k], &r->loss[k], sizeof(float)) == 0, "%s: loss %d %.9g != %.9g", tag, k,
                  (double)r->loss[k], (double)p->loss[k]);
        else
            CHECK(fabs((double)p->loss[k] - r->loss[k]) <= g_tol * fabs((double)p->loss[k]), "%s: loss %d %.9g vs %.9g",
                  tag, k, (double)r->loss[k], (double)p->loss[k]);
    }
    CHECK(p->n == r->n, "%s: tensor count", tag);
    double worst = 0;
    for (int i = 0; i < p->n && i < r->n; i++) {
        int head = is_head(p->name[i]);
        int bitwise = head ? bitwise_head : bitwise_body;
        size_t bytes = sizeof(float) * (size_t)p->numel[i];
        if (bitwise) {
            CHECK(memcmp(p->grad[i], r->grad[i], bytes) == 0, "%s: gradient of %s not bitwise equal (rel %.3g)", tag,
                  p->name[i], rel_l2(r->grad[i], p->grad[i], p->numel[i]));
        } else {
            double e = rel_l2(r->grad[i], p->grad[i], p->numel[i]);
            if (e > worst) worst = e;
            CHECK(e <= g_tol, "%s: gradient of %s rel %.3g", tag, p->name[i], e);
        }
        double s = 0;
        for (int64_t j = 0; j < p->numel[i]; j++) s += fabs(p->grad[i][j]);
        CHECK(s > 0, "%s: gradient of %s is zero (the comparison would be empty)", tag, p->name[i]);
    }
    printf("  %-40s loss %.7f  worst non-bitwise grad rel %.2g\n", tag, (double)r->loss[0], worst);
}

/* smj_model_forward_backward under o against the two calls' result r:
 * the same losses and gradients, bit for bit (it takes the head's gradient
 * in the forward, with xent_fwd_bwd where the backend has it: the same
 * values in the same order). */
static void one_call(smj_backend_kind kind, const smj_model_config *c, const smj_train_options *o, int B, int T,
                     const fb_result *r, const char *tag) {
    fb_result one;
    char t[160];
    snprintf(t, sizeof t, "%s, one call", tag);
    forward_backward(kind, c, o, FB_ONE_CALL, B, T, &one);
    compare(r, &one, 1, 1, t);
    fb_free(&one);
}

static void equality(smj_backend_kind kind, const char *bname, const char *cname, const smj_model_config *c, int B,
                     int T) {
    fb_result plain, r;
    forward_backward(kind, c, &OPT_PLAIN, FB_CALLS, B, T, &plain);
    int cpu = kind == SMJ_BACKEND_CPU;
    char tag[128];
    snprintf(tag, sizeof tag, "%s %s plain", bname, cname);
    one_call(kind, c, &OPT_PLAIN, B, T, &plain, tag);
    /* chunks: 1 row (the minimum), 5 (several, uneven tail), B*T-1 (a 1-row
     * tail merged into the chunk before), automatic (one chunk here) */
    int chunks[] = {1, 5, B * T - 1, 0};
    for (int i = 0; i < 4; i++) {
        smj_train_options o = {.fused_ce = 1, .ce_chunk_rows = chunks[i]};
        forward_backward(kind, c, &o, FB_CALLS, B, T, &r);
        snprintf(tag, sizeof tag, "%s %s fused-ce chunk %d", bname, cname, chunks[i]);
        /* 1-row chunks take the GEMM's one-row path: equal to ~1e-7, not bitwise */
        compare(&plain, &r, cpu && chunks[i] != 1, 0, tag);
        one_call(kind, c, &o, B, T, &r, tag);
        fb_free(&r);
    }
    smj_train_options gc = {.gradient_checkpointing = 1};
    forward_backward(kind, c, &gc, FB_CALLS, B, T, &r);
    snprintf(tag, sizeof tag, "%s %s checkpointing", bname, cname);
    compare(&plain, &r, 1, 1, tag);
    one_call(kind, c, &gc, B, T, &r, tag);
    fb_free(&r);
    smj_train_options both = {.fused_ce = 1, .gradient_checkpointing = 1, .ce_chunk_rows = 7};
    forward_backward(kind, c, &both, FB_CALLS, B, T, &r);
    snprintf(tag, sizeof tag, "%s %s both (chunk 7)", bname, cname);
    compare(&plain, &r, cpu, 0, tag);
    one_call(kind, c, &both, B, T, &r, tag);
    fb_free(&r);
    fb_free(&plain);
}

/* ------------------------------------------------------ 16-bit activations */

/* x = bf16(x) in place, through the host and the safetensors rounding (not
 * the backend's bf16_pack). */
static void round_bf16(smj_model *m, float *x, int64_t n) {
    if (!x) return;
    float *h = malloc(sizeof(float) * (size_t)n);
    m->be->download(h, x, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = smj_bf16_to_f32(smj_f32_to_bf16(h[i]));
    m->be->upload(x, h, sizeof(float) * (size_t)n);
    free(h);
}

/* What fp16_activations must compute, built without it: a plain model's
 * forward, then every tensor its backward reads rounded to bf16 in place
 * (the residual stream; each block's [N, width] tensors unless the blocks
 * are recomputed; the logits when they are kept in 16 bits), then the
 * plain backward. The list is written out here, apart from the library's. */
static void round_saved(smj_model *m, const smj_model_config *c, int B, int T, int ckpt, int logits) {
    int64_t N = (int64_t)B * T, C = c->dim, H = c->ffn_hidden;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    round_bf16(m, m->res, (c->n_layers + 1) * N * C);
    if (logits) round_bf16(m, m->logits, N * m->logits_ld);
    if (ckpt) return;
    for (int l = 0; l < c->n_layers; l++) {
        smj_block_acts *a = &m->blk[l];
        /* (GPT-2: q|k|v saved as one product, no q, k, v; gate [N,H] where
         * Llama keeps gate|up [N,2H]) */
        int gpt2 = c->arch == SMJ_ARCH_GPT2;
        float *t[] = {a->ln1, a->q, a->k, a->v, a->att, a->res_mid, a->ln2, a->gate, a->hsw, a->q_pre, a->k_pre, a->qkv};
        int64_t n[] = {N * C, N * QD, N * KD, N * KD, N * QD, N * C, N * C, (gpt2 ? 1 : 2) * N * H, N * H, N * QD, N * KD,
                       3 * N * C};
        for (int i = 0; i < 12; i++) round_bf16(m, t[i], n[i]);
    }
}

/* fp16_activations, alone and with the other options: the loss is the plain
 * one bit for bit; the gradients are bit for bit those of the emulation
 * (round_saved), and within 3% (relative L2, per tensor) of the plain ones
 * but not equal to them (the rounding did happen). */
static void fp16_equality(smj_backend_kind kind, const char *bname, const char *cname, const smj_model_config *c,
                          int B, int T) {
    smj_train_options opts[4] = {{.fp16_activations = 1}, {.gradient_checkpointing = 1, .fp16_activations = 1},
                                 {.fused_ce = 1, .gradient_checkpointing = 1, .ce_chunk_rows = 5, .fp16_activations = 1},
                                 {.ce_chunk_rows = 4, .fp16_activations = 1}};
    const char *on[4] = {"fp16", "fp16 + checkpointing", "fp16 + both", "fp16, 16-bit logits (blocks of 4 rows)"};
    fb_result plain, emu, r;
    forward_backward(kind, c, &OPT_PLAIN, FB_CALLS, B, T, &plain);
    for (int i = 0; i < 4; i++) {
        forward_backward(kind, c, &opts[i], FB_CALLS, B, T, &r);
        forward_backward(kind, c, &opts[i], FB_EMULATE, B, T, &emu);
        char tag[128];
        snprintf(tag, sizeof tag, "%s %s %s", bname, cname, on[i]);
        compare(&emu, &r, 1, 1, tag);
        one_call(kind, c, &opts[i], B, T, &r, tag);
        double worst = 0;
        int64_t differ = 0;
        /* (the head in blocks of rows, ce_chunk_rows: a GPU's library may
         * pick another kernel for a block than for all rows, so the loss is
         * the plain one within rounding; the emulation's, bit for bit) */
        for (int k = 0; k < 2; k++)
            CHECK(opts[i].ce_chunk_rows ? fabs((double)r.loss[k] - plain.loss[k]) <= 1e-6 * fabs((double)plain.loss[k])
                                        : memcmp(&plain.loss[k], &r.loss[k], sizeof(float)) == 0,
                  "%s: loss %d %.9g != plain %.9g", tag, k, (double)r.loss[k], (double)plain.loss[k]);
        for (int t = 0; t < plain.n; t++) {
            double e = rel_l2(r.grad[t], plain.grad[t], plain.numel[t]);
            if (e > worst) worst = e;
            CHECK(e <= 0.03, "%s: gradient of %s rel %.3g from the plain one", tag, plain.name[t], e);
            differ += memcmp(r.grad[t], plain.grad[t], sizeof(float) * (size_t)plain.numel[t]) != 0;
        }
        CHECK(differ > 0, "%s: no gradient changed: the activations were not rounded", tag);
        printf("  %-40s worst grad rel to plain %.2g\n", tag, worst);
        fb_free(&r);
        fb_free(&emu);
    }
    fb_free(&plain);
}

/* ------------------------------------------------------------ training */

static smj_dataset *make_dataset(smj_ctx *ctx, const char *name, int64_t n, int V) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = 5;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 7 + (int64_t)(smj_splitmix64(&s) % 5)) % V);
    char p[700];
    snprintf(p, sizeof p, "%s/%s", test_tmpdir(), name);
    CHECK_OK(ctx, smj_dataset_write(ctx, p, ids, n, V));
    free(ids);
    smj_dataset *ds = NULL;
    CHECK_OK(ctx, smj_dataset_open(ctx, p, &ds));
    return ds;
}

static void train_losses(smj_backend_kind kind, const smj_model_config *c, const smj_train_options *o, float *loss,
                         int steps) {
    smj_ctx *ctx = make_ctx(kind);
    smj_dataset *ds = make_dataset(ctx, "train.bin", 3000, c->vocab_size);
    smj_optim_options oo;
    smj_optim_defaults(&oo);
    oo.lr = 3e-3f;
    oo.total_steps = steps;
    oo.warmup_steps = 1;
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, c, 3, &m));
    CHECK_OK(ctx, smj_model_set_train_options(m, o));
    CHECK_OK(ctx, smj_trainer_create(m, &oo, &t));
    for (int s = 0; s < steps; s++) {
        smj_step_stats st;
        CHECK_OK(ctx, smj_trainer_step(t, ds, 3, 16, 2, &st));
        loss[s] = st.loss;
    }
    float ev = 0;
    CHECK_OK(ctx, smj_trainer_eval(t, ds, 2, 16, 2, &ev));
    loss[steps] = ev;
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
    smj_ctx_free(ctx);
}

static void training(smj_backend_kind kind, const char *bname, const smj_model_config *c, const char *cname) {
    enum { STEPS = 4 };
    float plain[STEPS + 1], gc[STEPS + 1], both[STEPS + 1], h16[STEPS + 1];
    smj_train_options o_gc = {.gradient_checkpointing = 1}, o_both = {1, 1, 11, 0}, o_h16 = {.fp16_activations = 1};
    train_losses(kind, c, &OPT_PLAIN, plain, STEPS);
    train_losses(kind, c, &o_gc, gc, STEPS);
    train_losses(kind, c, &o_both, both, STEPS);
    train_losses(kind, c, &o_h16, h16, STEPS);
    /* the first step's loss is the plain one exactly; later ones follow the
     * bf16-rounded gradients' updates, within 1e-3 relative here */
    CHECK(h16[0] == plain[0], "%s %s: fp16 first loss %.9g vs %.9g", bname, cname, (double)h16[0], (double)plain[0]);
    for (int s = 1; s <= STEPS; s++)
        CHECK(fabs((double)h16[s] - plain[s]) <= 1e-3 * fabs((double)plain[s]),
              "%s %s: step %d loss %.9g with fp16 activations vs %.9g", bname, cname, s, (double)h16[s], (double)plain[s]);
    CHECK(memcmp(plain, gc, sizeof plain) == 0, "%s %s: checkpointed training losses differ (%.9g vs %.9g)", bname,
          cname, (double)gc[STEPS - 1], (double)plain[STEPS - 1]);
    for (int s = 0; s <= STEPS; s++)
        CHECK(fabs((double)both[s] - plain[s]) <= 2 * g_tol * fabs((double)plain[s]),
              "%s %s: step %d loss %.9g with both options vs %.9g", bname, cname, s, (double)both[s], (double)plain[s]);
    CHECK(plain[STEPS - 1] < plain[0], "%s %s: the loss falls (%.4f -> %.4f)", bname, cname, (double)plain[0],
          (double)plain[STEPS - 1]);
    printf("  %s %s training: losses %.6f .. %.6f, eval %.6f (plain) / %.6f (both) / %.6f (fp16)\n", bname, cname,
           (double)plain[0], (double)plain[STEPS - 1], (double)plain[STEPS], (double)both[STEPS], (double)h16[STEPS]);
}

/* ------------------------------------------------------------ misuse */

static void misuse(smj_backend_kind kind, const char *bname) {
    smj_ctx *ctx = make_ctx(kind);
    smj_model_config c = llama_gqa();
    smj_model *m = make_model(ctx, &c), *p = make_model(ctx, &c);
    int B = 2, T = 7, N = B * T, V = c.vocab_size;
    int32_t x[14], y[14];
    for (int i = 0; i < N; i++) { x[i] = (i * 11 + 1) % V; y[i] = (i * 3 + 2) % V; }
    float *dst = malloc(sizeof(float) * (size_t)N * V), *ref = malloc(sizeof(float) * (size_t)N * V);
    smj_status s = smj_model_get_logits(m, dst);
    CHECK(s == SMJ_ERR_INVALID, "%s: logits before any forward -> %s", bname, smj_status_str(s));

    smj_train_options o = {.fused_ce = 1, .ce_chunk_rows = 4}, got;
    CHECK_OK(ctx, smj_model_set_train_options(m, &o));
    float loss = 0, lp = 0;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    CHECK(smj_model_logits(m) == NULL, "%s: smj_model_logits after a fused forward is NULL", bname);
    for (int i = 0; i < N * V; i++) dst[i] = 12345.0f;
    s = smj_model_get_logits(m, dst);
    CHECK(s == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "fused"),
          "%s: get_logits after a fused forward -> %s (%s)", bname, smj_status_str(s), smj_ctx_error(ctx));
    int untouched = 1;
    for (int i = 0; i < N * V; i++) untouched &= dst[i] == 12345.0f;
    CHECK(untouched, "%s: the refused get_logits left dst alone", bname);
    CHECK_OK(ctx, smj_model_forward(p, x, y, B, T, &lp));
    CHECK(loss == lp, "%s: fused loss %.9g vs %.9g", bname, (double)loss, (double)lp);

    /* a forward without targets still gives the logits, exactly */
    CHECK_OK(ctx, smj_model_forward(m, x, NULL, B, T, NULL));
    CHECK(smj_model_logits(m) != NULL, "%s: logits after a forward without targets", bname);
    CHECK_OK(ctx, smj_model_get_logits(m, dst));
    CHECK_OK(ctx, smj_model_forward(p, x, NULL, B, T, NULL));
    CHECK_OK(ctx, smj_model_get_logits(p, ref));
    CHECK(memcmp(dst, ref, sizeof(float) * (size_t)N * V) == 0, "%s: fused-mode logits without targets differ", bname);
    s = smj_model_backward(m, 1.0f);
    CHECK(s == SMJ_ERR_INVALID, "%s: backward after a forward without targets -> %s", bname, smj_status_str(s));
    /* and the fused path again after it (the full buffer does not confuse it) */
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    CHECK(loss == lp && smj_model_logits(m) == NULL, "%s: fused forward after a logits forward", bname);
    CHECK_OK(ctx, smj_model_zero_grad(m));
    CHECK_OK(ctx, smj_model_backward(m, 1.0f));
    s = smj_model_backward(m, 1.0f);
    CHECK(s == SMJ_ERR_INVALID, "%s: a second backward -> %s", bname, smj_status_str(s));

    /* bad option values are refused and change nothing */
    smj_train_options bad[4] = {{.fused_ce = 2}, {.gradient_checkpointing = -1}, {.fused_ce = 1, .ce_chunk_rows = -3},
                                {.fp16_activations = 3}};
    for (int i = 0; i < 4; i++) {
        s = smj_model_set_train_options(m, &bad[i]);
        CHECK(s == SMJ_ERR_INVALID && *smj_ctx_error(ctx), "%s: bad options %d -> %s", bname, i, smj_status_str(s));
        smj_model_get_train_options(m, &got);
        CHECK(memcmp(&got, &o, sizeof o) == 0, "%s: bad options %d changed the model's", bname, i);
    }
    /* options changed between forward and backward: the backward refuses */
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    smj_train_options gc = {.gradient_checkpointing = 1};
    CHECK_OK(ctx, smj_model_set_train_options(m, &gc));
    s = smj_model_backward(m, 1.0f);
    CHECK(s == SMJ_ERR_INVALID, "%s: backward after the options changed -> %s", bname, smj_status_str(s));
    s = smj_model_get_logits(m, dst);
    CHECK(s == SMJ_ERR_INVALID, "%s: logits after the options changed -> %s", bname, smj_status_str(s));
    CHECK_OK(ctx, smj_model_set_train_options(m, NULL));
    smj_model_get_train_options(m, &got);
    CHECK(!got.fused_ce && !got.gradient_checkpointing && !got.ce_chunk_rows, "%s: NULL options = all off", bname);
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    CHECK(smj_model_logits(m) != NULL && loss == lp, "%s: plain again after the options were cleared", bname);

    /* automatic fused-CE chunks (the backend's own): the options read back as set */
    smj_train_options au = {.fused_ce = 1};
    CHECK_OK(ctx, smj_model_set_train_options(m, &au));
    smj_model_get_train_options(m, &got);
    CHECK(memcmp(&got, &au, sizeof au) == 0, "%s: automatic chunks read back as 0", bname);
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    CHECK(smj_model_logits(m) == NULL && fabsf(loss - lp) <= 1e-5f * fabsf(lp),
          "%s: automatic chunks: loss %.7f vs %.7f", bname, loss, lp);
    CHECK_OK(ctx, smj_model_backward(m, 1.0f));

    /* sessions are untouched by the options */
    CHECK_OK(ctx, smj_model_set_train_options(m, &(smj_train_options){1, 1, 3, 1}));
    smj_session *se = NULL;
    const float *sl = NULL;
    CHECK_OK(ctx, smj_session_create(m, 16, &se));
    CHECK_OK(ctx, smj_session_feed(se, x, T, &sl));
    CHECK(sl && fabs((double)sl[0] - ref[(T - 1) * V]) <= 1e-4 * (1 + fabs((double)ref[(T - 1) * V])),
          "%s: session logits under the options", bname);
    smj_session_free(se);
    free(dst);
    free(ref);
    smj_model_free(m);
    smj_model_free(p);
    smj_ctx_free(ctx);
}

/* ------------------------------------------------------ memory estimate */

/* A backend that is the cpu one with counting alloc/free: every byte the
 * model and trainer take from the backend goes through here. */
static int64_t g_live, g_peak, g_calls;
static void *count_alloc(size_t n) {
    uint8_t *p = smj_alloc(n + 64);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    g_live += (int64_t)n;
    g_calls++;
    if (g_live > g_peak) g_peak = g_live;
    return p + 64;
}
static void count_free(void *q) {
    if (!q) return;
    uint8_t *p = (uint8_t *)q - 64;
    size_t n;
    memcpy(&n, p, sizeof n);
    g_live -= (int64_t)n;
    smj_afree(p);
}
static smj_backend g_counting;
/* A CPU context whose allocations go through the counters (reset). */
static smj_ctx *counting_ctx(void) {
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CPU);
    g_counting = *ctx->backend;
    g_counting.alloc = count_alloc;
    g_counting.free = count_free;
    ctx->backend = &g_counting;
    g_live = g_peak = g_calls = 0;
    return ctx;
}

/* Peak bytes allocated through the backend by model create + trainer create +
 * two training steps (B, T) under o. */
static int64_t measure(const smj_model_config *c, const smj_train_options *o, int B, int T, smj_dataset *ds) {
    smj_ctx *ctx = counting_ctx();
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    smj_optim_options oo;
    smj_optim_defaults(&oo);
    oo.total_steps = 2;
    CHECK_OK(ctx, smj_model_create(ctx, c, 1, &m));
    CHECK_OK(ctx, smj_model_set_train_options(m, o));
    CHECK_OK(ctx, smj_trainer_create(m, &oo, &t));
    for (int s = 0; s < 2; s++) {
        smj_step_stats st;
        CHECK_OK(ctx, smj_trainer_step(t, ds, B, T, 1, &st));
        CHECK(isfinite(st.loss), "finite loss");
    }
    int64_t peak = g_peak;
    smj_trainer_free(t);
    smj_model_free(m);
    CHECK(g_live == 0, "every backend allocation was freed (%lld bytes left)", (long long)g_live);
    smj_ctx_free(ctx);
    return peak;
}

/* Where the LM head's chunk buffer lives (fused_ce): a model that has not
 * run a backward allocates it on its first forward with targets (one
 * allocation, reused by the next); in a model whose first call is a train
 * step, a forward with targets after it allocates nothing (the chunk sits
 * in the backward's dh|dgate region) and its loss is the plain head's, bit
 * for bit. */
static void ce_placement(void) {
    smj_ctx *ctx = counting_ctx();
    smj_model_config c = llama_gqa();
    int B = 2, T = 16, N = B * T;
    smj_dataset *ds = make_dataset(ctx, "ce.bin", 4000, c.vocab_size);
    int32_t x[32], y[32];
    for (int i = 0; i < N; i++) { x[i] = (i * 7 + 3) % c.vocab_size; y[i] = (i * 5 + 1) % c.vocab_size; }
    smj_model *m = make_model(ctx, &c);
    smj_train_options fo = {.fused_ce = 1, .ce_chunk_rows = 8}, plain = {0};
    CHECK_OK(ctx, smj_model_set_train_options(m, &fo));
    float l0 = 0, l1 = 0, lp = 0;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &l0));
    int64_t calls = g_calls, live = g_live;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &l1));
    CHECK(g_calls == calls && g_live == live && l1 == l0,
          "fused-ce, no backward yet: a second forward allocates again (%lld calls, %lld bytes more) or differs",
          (long long)(g_calls - calls), (long long)(g_live - live));
    smj_model_free(m); /* (its full_logits would serve the forward below) */
    m = make_model(ctx, &c);
    CHECK_OK(ctx, smj_model_set_train_options(m, &fo));
    smj_optim_options oo;
    smj_optim_defaults(&oo);
    oo.total_steps = 1;
    smj_trainer *t = NULL;
    CHECK_OK(ctx, smj_trainer_create(m, &oo, &t));
    smj_step_stats st;
    CHECK_OK(ctx, smj_trainer_step(t, ds, B, T, 1, &st));
    calls = g_calls;
    live = g_live;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &l1));
    CHECK(g_calls == calls && g_live == live,
          "fused-ce after a train step: a forward with targets allocated %lld times (%lld bytes)",
          (long long)(g_calls - calls), (long long)(g_live - live));
    CHECK_OK(ctx, smj_model_set_train_options(m, &plain));
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &lp));
    CHECK(l1 == lp && isfinite(lp), "fused-ce loss with the chunk in the backward's buffers %.9g vs plain %.9g",
          (double)l1, (double)lp);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
    CHECK(g_live == 0, "every backend allocation was freed (%lld bytes left)", (long long)g_live);
    smj_ctx_free(ctx);
}

/* The LM head's backward blocks (smj_head_bwd_rows): all rows without
 * bf16 products or when the logits fit one kept copy; else the most rows,
 * a multiple of 64 (at least 64), whose logits do. */
static void head_bwd_rows(void) {
    smj_model_config c = llama_gqa();
    int64_t vs[] = {512, 32768, 50304, 151936, 1 << 22}, ns[] = {1, 4096, 32768, 1 << 20};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
            c.vocab_size = (int)vs[i];
            int64_t V = vs[i], N = ns[j], R0 = smj_head_bwd_rows(&c, N, 0), R1 = smj_head_bwd_rows(&c, N, 1);
            CHECK(R0 == N, "head_bwd_rows V %lld N %lld fp32: %lld rows, want all", (long long)V, (long long)N,
                  (long long)R0);
            if (N * V <= SMJ_CUDA_BC_MAX) {
                CHECK(R1 == N, "head_bwd_rows V %lld N %lld: %lld rows, want all (fits)", (long long)V, (long long)N,
                      (long long)R1);
            } else {
                CHECK(R1 % 64 == 0 && R1 >= 64 && R1 < N && (R1 == 64 || R1 * V <= SMJ_CUDA_BC_MAX) &&
                          (R1 + 64) * V > SMJ_CUDA_BC_MAX,
                      "head_bwd_rows V %lld N %lld: %lld rows", (long long)V, (long long)N, (long long)R1);
            }
        }
    c.vocab_size = 32768;
    CHECK(smj_head_bwd_rows(&c, 32768, 1) == 4096, "V 32768, T 1024 x B 32: blocks of 4096 rows");
}

static void memory_estimates(void) {
    head_bwd_rows();
    smj_model_config w = llama_gqa();
    CHECK(smj_config_device_workspace(&w, 4, 16, NULL, SMJ_BACKEND_CPU, 1) == 0 &&
              smj_config_device_workspace(&w, 4, 16, NULL, SMJ_BACKEND_REF, 0) == 0,
          "host backends have no device workspace");
    CHECK(smj_config_device_workspace(&w, 4, 16, NULL, SMJ_BACKEND_CUDA, 1) >
              smj_config_device_workspace(&w, 4, 16, NULL, SMJ_BACKEND_CUDA, 0),
          "bf16 mode's kept operand copies add to the CUDA workspace");
    /* automatic fused-CE chunks: ~32 MiB of fp32 logits on the host
     * backends (8M / V rows), 2^27 / V rows on CUDA (a multiple of 64, at
     * least 64); V the head's rows (the vocabulary padded to 64) */
    smj_model_config v = w;
    v.vocab_size = 32768;
    CHECK(smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 0) == 256 && smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_REF, 0) == 256 &&
              smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 0) == 4096,
          "automatic chunks at V 32768: %d / %d rows", smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 0),
          smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 0));
    CHECK(smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 1) == 8192 && smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 1) == 256,
          "automatic chunks of bf16 logits at V 32768: %d rows on CUDA (twice the fp32 ones'), the host's unchanged",
          smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 1));
    smj_train_options fa = {.fused_ce = 1}, f256 = {.fused_ce = 1, .ce_chunk_rows = 256},
                      f4096 = {.fused_ce = 1, .ce_chunk_rows = 4096};
    CHECK(smj_config_device_workspace(&v, 32, 1024, &fa, SMJ_BACKEND_CUDA, 1) ==
                  smj_config_device_workspace(&v, 32, 1024, &f4096, SMJ_BACKEND_CUDA, 1) &&
              smj_config_train_memory_ex(&v, 32, 1024, &fa, NULL) == smj_config_train_memory_ex(&v, 32, 1024, &f256, NULL),
          "automatic chunks: CUDA's in its workspace estimate, the host's in the training estimate");
    v.vocab_size = 50257; /* 50304 head rows */
    CHECK(smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 0) == 166 && smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 0) == 2624,
          "automatic chunks at V 50257: %d / %d rows", smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 0),
          smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 0));
    CHECK(smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 1) == 5312, "automatic chunks of bf16 logits at V 50257: %d rows",
          smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 1));
    v.vocab_size = 5000000;
    CHECK(smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CPU, 0) == 1 && smj_ce_chunk_rows_auto(&v, SMJ_BACKEND_CUDA, 0) == 64,
          "automatic chunks at V 5M: at least 1 / 64 rows");
    struct { const char *name; smj_model_config c; int B, T; } cases[] = {
        {"llama L4 GQA", {.vocab_size = 512, .dim = 64, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                          .ffn_hidden = 192, .max_seq_len = 64, .rope_theta = 1e4f, .norm_eps = 1e-5f,
                          .tied_embeddings = 1}, 4, 32},
        {"llama V4096 C32 untied", {.vocab_size = 4096, .dim = 32, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                                    .head_dim = 16, .ffn_hidden = 96, .max_seq_len = 64, .rope_theta = 1e4f,
                                    .norm_eps = 1e-5f, .tied_embeddings = 0}, 2, 64},
        {"llama qk-norm biases", {.vocab_size = 300, .dim = 48, .n_layers = 3, .n_heads = 6, .n_kv_heads = 3,
                                  .head_dim = 8, .ffn_hidden = 128, .max_seq_len = 48, .rope_theta = 1e4f,
                                  .norm_eps = 1e-5f, .tied_embeddings = 0, .qk_norm = 1, .attn_bias = 1,
                                  .attn_out_bias = 1}, 3, 40},
        {"gpt2 L3", {.vocab_size = 1000, .dim = 48, .n_layers = 3, .n_heads = 4, .n_kv_heads = 4, .head_dim = 12,
                     .ffn_hidden = 192, .max_seq_len = 64, .rope_theta = 1e4f, .norm_eps = 1e-5f,
                     .tied_embeddings = 1, .arch = SMJ_ARCH_GPT2}, 2, 64},
    };
    enum { NOPT = 6 };
    smj_train_options opts[NOPT] = {{0, 0, 0, 0}, {1, 0, 16, 0}, {0, 1, 0, 0}, {1, 1, 16, 0}, {0, 0, 0, 1}, {1, 1, 16, 1}};
    const char *oname[NOPT] = {"plain", "fused-ce", "checkpointing", "both", "fp16", "all three"};
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CPU);
    smj_dataset *ds = make_dataset(ctx, "mem.bin", 4000, 300);
    printf("  %-24s %-14s %12s %12s %8s\n", "config", "options", "estimate", "allocated", "error");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t est[NOPT], got[NOPT];
        for (int i = 0; i < NOPT; i++) {
            est[i] = smj_config_train_memory_ex(&cases[k].c, cases[k].B, cases[k].T, &opts[i], NULL);
            got[i] = measure(&cases[k].c, &opts[i], cases[k].B, cases[k].T, ds);
            double err = (double)(est[i] - got[i]) / (double)got[i];
            printf("  %-24s %-14s %12lld %12lld %+7.3f%%\n", cases[k].name, oname[i], (long long)est[i],
                   (long long)got[i], 100 * err);
            CHECK(fabs(err) <= 0.02, "%s %s: estimate %lld vs allocated %lld (%.2f%%)", cases[k].name, oname[i],
                  (long long)est[i], (long long)got[i], 100 * err);
        }
        CHECK(est[0] == smj_config_train_memory(&cases[k].c, cases[k].B, cases[k].T),
              "%s: the old estimate equals the plain one", cases[k].name);
        smj_train_memory d;
        CHECK(smj_config_train_memory_ex(&cases[k].c, cases[k].B, cases[k].T, NULL, &d) == est[0] &&
                  d.weights + d.grads + d.optimizer + d.activations + d.scratch == d.total && d.total == est[0],
              "%s: breakdown adds up", cases[k].name);
        /* checkpointing lowers memory on every one of these (L >= 2) */
        CHECK(est[2] < est[0] && got[2] < got[0], "%s: checkpointing lowers memory", cases[k].name);
        CHECK(est[3] <= est[1] && got[3] <= got[1], "%s: both <= fused alone", cases[k].name);
        /* 16-bit activations: L bf16 copies of a block plus one fp32 block, and
         * the residual stream as bf16 plus two fp32 [N,C] buffers, so they
         * lower memory from 3 layers on, and on top of checkpointing (which
         * leaves them only the residual stream) from 4 */
        int L = cases[k].c.n_layers;
        if (L >= 3) CHECK(est[4] < est[0] && got[4] < got[0], "%s: fp16 lowers memory", cases[k].name);
        if (L >= 4)
            CHECK(est[5] < est[3] && got[5] < got[3], "%s: fp16 lowers it under both other options", cases[k].name);
    }
    /* fused CE where the logits dominate: V 4096 vs C 32 */
    {
        int64_t e0 = smj_config_train_memory_ex(&cases[1].c, cases[1].B, cases[1].T, &opts[0], NULL);
        int64_t e1 = smj_config_train_memory_ex(&cases[1].c, cases[1].B, cases[1].T, &opts[1], NULL);
        int64_t logits = 4LL * cases[1].B * cases[1].T * cases[1].c.vocab_size;
        /* the chunk (17 rows) starts at datt and spans datt [N, QD], dq
         * [N, QD + 2 KD] and the MLP's dh, dgate [N, 3H] (carve_bwd); here
         * it is the larger by chunk - span */
        const smj_model_config *c1 = &cases[1].c;
        int64_t N = (int64_t)cases[1].B * cases[1].T, QD = (int64_t)c1->n_heads * c1->head_dim,
                KD = (int64_t)c1->n_kv_heads * c1->head_dim;
        int64_t chunk = 4LL * 17 * c1->vocab_size, span = 4 * (N * QD + N * (QD + 2 * KD) + 3 * N * c1->ffn_hidden);
        CHECK(chunk > span && e0 - e1 == logits - (chunk - span),
              "fused-ce saves exactly the logits minus what the chunk adds to the backward's buffers (%lld vs %lld)",
              (long long)(e0 - e1), (long long)(logits - (chunk - span)));
        int64_t g0 = measure(&cases[1].c, &opts[0], cases[1].B, cases[1].T, ds);
        int64_t g1 = measure(&cases[1].c, &opts[1], cases[1].B, cases[1].T, ds);
        CHECK(g1 < g0 * 0.85, "fused-ce lowers the allocation: %lld -> %lld", (long long)g0, (long long)g1);
    }
    /* a realistic shape, estimate only: the "small" preset, vocab 32768, 16 x 1024 */
    {
        smj_model_config c;
        CHECK_OK(ctx, smj_config_preset(ctx, "small", 32768, &c));
        smj_train_memory p, f, g, b, h, a;
        smj_train_options fo = {.fused_ce = 1}, go = {.gradient_checkpointing = 1}, bo = {1, 1, 0, 0};
        smj_train_options ho = {.fp16_activations = 1}, ao = {1, 1, 0, 1};
        smj_config_train_memory_ex(&c, 16, 1024, &ho, &h);
        smj_config_train_memory_ex(&c, 16, 1024, &ao, &a);
        smj_config_train_memory_ex(&c, 16, 1024, NULL, &p);
        smj_config_train_memory_ex(&c, 16, 1024, &fo, &f);
        smj_config_train_memory_ex(&c, 16, 1024, &go, &g);
        smj_config_train_memory_ex(&c, 16, 1024, &bo, &b);
        /* logits 16*1024*32768*4 = 2 GiB; a chunk of 257 rows (32.1 MiB)
         * inside the backward's dh and dgate (16384 x 3H floats) */
        CHECK(p.activations - f.activations == 4LL * 32768 * 16 * 1024 && f.scratch == p.scratch,
              "small: fused-ce saves the logits, its chunk in the backward's buffers");
        CHECK(g.activations < p.activations * 0.75 && b.total < p.total / 3, "small: checkpointing + fused");
        /* 6 layers: the blocks' share falls to 4/6, the residual's to about half */
        int64_t rest = p.activations - 4LL * 16 * 1024 * (32768 + c.dim + 6); /* not logits, lnf, losses */
        CHECK(h.activations < p.activations - rest / 4, "small: fp16 saves over 25%% of the non-logit activations");
        CHECK(a.total < b.total, "small: fp16 on top of both");
        printf("  small V32768 16x1024: plain %.0f MiB, fused-ce %.0f, checkpointing %.0f, both %.0f, fp16 %.0f, "
               "all three %.0f\n", p.total / 1048576.0, f.total / 1048576.0, g.total / 1048576.0,
               b.total / 1048576.0, h.total / 1048576.0, a.total / 1048576.0);
        /* 12 layers (the 110M Llama's shape): 7/12 */
        CHECK_OK(ctx, smj_config_preset(ctx, "large", 32768, &c));
        smj_config_train_memory_ex(&c, 16, 1024, NULL, &p);
        smj_config_train_memory_ex(&c, 16, 1024, &ho, &h);
        rest = p.activations - 4LL * 16 * 1024 * (32768 + c.dim + 6);
        CHECK(h.activations < p.activations - rest * 35 / 100, "large: fp16 saves over 35%% of the non-logit activations "
              "(%lld -> %lld of %lld)", (long long)p.activations, (long long)h.activations, (long long)rest);
        printf("  large V32768 16x1024: activations plain %.0f MiB, fp16 %.0f\n", p.activations / 1048576.0,
               h.activations / 1048576.0);
    }
    smj_dataset_free(ds);
    smj_ctx_free(ctx);
}

/* CUDA: the device memory a short training run adds (cudaMemGetInfo before
 * the model, after two steps) against smj_config_train_memory_ex plus
 * smj_config_device_workspace: within 10% (the model's own buffers are
 * exact; the workspace is the backend's policy at its largest sizes). */
static void device_estimate(const smj_model_config *c, int bf16, const smj_train_options *o, const char *tag) {
    enum { B = 8, T = 512 };
    smj_ctx_options co = {.backend = SMJ_BACKEND_CUDA, .bf16_matmul = bf16};
    smj_ctx *ctx = smj_ctx_create(&co);
    smj_dataset *ds = make_dataset(ctx, "dev.bin", 20000, c->vocab_size);
    size_t used0 = 0, used1 = 0, tot = 0;
    CHECK_OK(ctx, smj_ctx_device_memory(ctx, &used0, &tot));
    smj_optim_options oo;
    smj_optim_defaults(&oo);
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, c, 3, &m));
    CHECK_OK(ctx, smj_model_set_train_options(m, o));
    CHECK_OK(ctx, smj_trainer_create(m, &oo, &t));
    for (int s = 0; s < 2 && t; s++) {
        smj_step_stats st;
        CHECK_OK(ctx, smj_trainer_step(t, ds, B, T, 1, &st));
    }
    CHECK_OK(ctx, smj_ctx_device_memory(ctx, &used1, &tot));
    /* the training estimate with CUDA's automatic fused-CE chunks, as the
     * header says (the CLI does the same) */
    smj_train_options r = *o;
    if (r.fused_ce && !r.ce_chunk_rows)
        r.ce_chunk_rows = smj_ce_chunk_rows_auto(c, SMJ_BACKEND_CUDA, r.fp16_activations && bf16);
    int64_t model = smj_config_train_memory_ex(c, B, T, &r, NULL),
            ws = smj_config_device_workspace(c, B, T, o, SMJ_BACKEND_CUDA, bf16);
    double added = (double)used1 - (double)used0, err = ((double)(model + ws) - added) / added;
    CHECK(fabs(err) <= 0.10, "cuda %s: estimate %.1f MiB (model %.1f + workspace %.1f) vs %.1f MiB added (%+.1f%%)",
          tag, (model + ws) / 1048576.0, model / 1048576.0, ws / 1048576.0, added / 1048576.0, 100 * err);
    printf("  cuda %-32s estimate %8.1f MiB (model %7.1f + workspace %6.1f) vs %8.1f MiB added: %+.1f%%\n", tag,
           (model + ws) / 1048576.0, model / 1048576.0, ws / 1048576.0, added / 1048576.0, 100 * err);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_dataset_free(ds);
    smj_ctx_free(ctx);
}

int main(void) {
    struct { smj_backend_kind kind; const char *name; } be[2] = {{SMJ_BACKEND_CPU, "cpu"}, {SMJ_BACKEND_REF, "ref"}};
    smj_model_config lg = llama_gqa(), lt = llama_tied_bias(), g2 = gpt2_cfg();
    for (int b = 0; b < 2; b++) {
        equality(be[b].kind, be[b].name, "llama GQA qk-norm untied", &lg, 2, 9);
        equality(be[b].kind, be[b].name, "llama tied biases", &lt, 3, 7);
        equality(be[b].kind, be[b].name, "gpt2", &g2, 2, 9);
        misuse(be[b].kind, be[b].name);
        fp16_equality(be[b].kind, be[b].name, "llama GQA qk-norm untied", &lg, 2, 9);
        fp16_equality(be[b].kind, be[b].name, "llama tied biases", &lt, 3, 7);
        fp16_equality(be[b].kind, be[b].name, "gpt2", &g2, 2, 9);
    }
    training(SMJ_BACKEND_CPU, "cpu", &lg, "llama");
    training(SMJ_BACKEND_CPU, "cpu", &g2, "gpt2");
    training(SMJ_BACKEND_REF, "ref", &lt, "llama tied");
    memory_estimates();
    ce_placement();
    /* CUDA builds with a GPU: the same equalities (checkpointing bitwise: the
     * ops are deterministic; fused-ce to 1e-5) */
    smj_ctx_options co = {.backend = SMJ_BACKEND_CUDA};
    smj_ctx *cc = smj_ctx_create(&co);
    if (cc && smj_ctx_status(cc) == SMJ_OK) {
        g_tol = 1e-5;
        equality(SMJ_BACKEND_CUDA, "cuda", "llama GQA qk-norm untied", &lg, 2, 9);
        equality(SMJ_BACKEND_CUDA, "cuda", "llama tied biases", &lt, 3, 7);
        equality(SMJ_BACKEND_CUDA, "cuda", "gpt2", &g2, 2, 9);
        fp16_equality(SMJ_BACKEND_CUDA, "cuda", "llama GQA qk-norm untied", &lg, 2, 9);
        fp16_equality(SMJ_BACKEND_CUDA, "cuda", "gpt2", &g2, 2, 9);
        training(SMJ_BACKEND_CUDA, "cuda", &lg, "llama");
        training(SMJ_BACKEND_CUDA, "cuda", &g2, "gpt2");
        smj_model_config mid = llama_gqa();
        mid.dim = 512; mid.n_layers = 4; mid.n_heads = 8; mid.n_kv_heads = 4; mid.head_dim = 64;
        mid.ffn_hidden = 1408; mid.vocab_size = 8192; mid.max_seq_len = 512;
        smj_train_options both = {.fused_ce = 1, .gradient_checkpointing = 1};
        device_estimate(&mid, 1, &OPT_PLAIN, "bf16, plain");
        device_estimate(&mid, 1, &both, "bf16, checkpointing + fused-ce");
        device_estimate(&mid, 0, &OPT_PLAIN, "fp32, plain");
    } else {
        printf("  cuda skipped: %s\n", cc ? smj_ctx_error(cc) : "out of memory");
    }
    smj_ctx_free(cc);
    return check_summary("test_memory");
}
