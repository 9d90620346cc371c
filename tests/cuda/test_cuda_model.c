/* test_cuda_model.c — whole-model checks of the CUDA backend (built with CUDA=1).
 *
 *  1. Checkpoints move between backends: 3 AdamW steps on CUDA, saved with
 *     smj_trainer_save, loaded into a CPU trainer, 3 more steps; compared
 *     with 6 steps on CUDA alone. And the reverse (CPU -> CUDA). Bit
 *     identity across backends is not expected (different summation
 *     orders); the tolerance is: step losses rel <= 1e-4, parameters after
 *     6 steps rel L2 <= 1e-3. Two CUDA runs of the same steps must agree
 *     bit for bit (every CUDA op is deterministic).
 *  2. KV-cache decoding on CUDA equals the full forward: a 100-token prompt
 *     fed as a 70-token chunk (crossing the session's 64-row chunks) then
 *     one token at a time; each returned logits row matches the full
 *     forward's row within 1e-4 of max |logit|. The CUDA full forward also
 *     matches the CPU's (rel L2 <= 1e-5).
 *  3. bf16 mode: the bf16 operand copies that ops write beside their
 *     outputs (rmsnorm, swiglu, rope_bwd, flash attention, cross-entropy)
 *     and the copies kept across ops change nothing: 6 steps with them
 *     equal, bit for bit (losses and parameters), 6 steps with
 *     SMJ_CUDA_BF16_KEEP=1 (every product casts its operands afresh). A stale copy (an op that wrote a
 *     buffer without dropping its copy) would break the equality. Models:
 *     head size 64 with GQA (flash attention) and the small one (QK-norm,
 *     head size 16), each also with --fp16-activations (ops write the
 *     saved bf16 tensors where bf16_home names them, the backward binds
 *     them with bf16_bind and reads them in place), and
 *     one whose 1.1M-token vocabulary makes the LM head's backward run in
 *     blocks of rows (cross-entropy's backward writes each block's bf16
 *     copy for both products), also with --fp16-activations, where the
 *     logits are kept in 16 bits (the head's product writes each block as
 *     bf16 alone, cross-entropy reads it so; blocks of 32 rows on the flash
 *     model too), and --fp16-activations --fused-ce (each chunk's logits
 *     bf16 alone); GPT-2 at head sizes 16 and 64 (flash attention, whose
 *     backward takes c_attn's bias gradient), with and without
 *     --fp16-activations. Each also with SMJ_CUDA_XENT_FUSED=0 (cross-entropy's
 *     two ops instead of xent_fwd_bwd): the same bits. Products whose
 *     outputs bf16_only promised are the bf16 products either way (written
 *     as bf16 alone, or rounded into fp32 when no copy is kept), so both
 *     runs compute the same numbers.
 *  4. Decoding one token at a time through a recorded CUDA graph (the
 *     default) gives the same logits, bit for bit, as launching every
 *     kernel (SMJ_CUDA_GRAPHS=0), over 60 tokens after a 40-token prompt,
 *     with a batch forward halfway that grows the backend's scratch buffer
 *     (the graph holds its address: it is recorded again). And a train
 *     step recorded as a graph (the trainer's default on CUDA): 9 steps with
 *     an evaluation (the graph recorded again) and a skipped NaN step in
 *     between equal, bit for bit, 9 steps with every kernel launched, on
 *     five models (fp32, bf16, --fp16-activations, --fused-ce, GPT-2).
 *  5. The biased products of GPT-2 (matmul_bias, cuBLASLt's bias epilogue in
 *     bf16 mode): against the reference's matmul + bias within a bf16
 *     product's tolerance, every transpose pair, with shapes the blocked
 *     products take; sizes it does not take, and fp32 mode, are declined
 *     with C untouched. Likewise c_fc with its GELU and the dX product
 *     with GELU's backward (matmul_bias_gelu, matmul_dgelu: cuBLASLt's
 *     GELU_AUX_BIAS and DGELU epilogues), fp32 and promised bf16 outputs,
 *     and on exact products the epilogue's GELU and gelu' against the tanh
 *     form and the erf form (it must be the tanh one).
 *  6. bf16 mode: the parameters' bf16 copy the optimizer's step writes is
 *     read by the next step's products (fewer casts a step) and dropped by
 *     a host write into a tensor (the next loss is a fresh model's).
 * Items 2 and 4 and greedy decoding chained on the device run on three
 * models: the QK-norm one (decode ops one by one), the flash one
 * (decode_block) and a GPT-2 (decode_block on the session's transposed
 * copy of its Conv1D weights, positions from device memory); item 2 also
 * with SMJ_CUDA_DECODE_BLOCK=0 (the ops one by one, for GPT-2
 * decode_attention without rotation).
 * Without a usable GPU: SKIP, exit 0 (exit 1 when SMJ_CUDA_REQUIRE=1).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../util/check.h"
#include "../util/decode.h"
#include "../../src/ops/ops.h"
#include "../../src/hf/safetensors.h" /* smj_f32_to_bf16, smj_bf16_to_f32 */
#include "smedjan.h"

static smj_model_config small_config(void) {
    smj_model_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 300;
    c.dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.ffn_hidden = 176;
    c.max_seq_len = 128;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = 0;
    c.qk_norm = 1;
    return c;
}

/* head size 64, GQA, no QK-norm: flash attention in bf16 mode, and
 * rope_bwd's output goes straight to the Q/K products */
static smj_model_config flash_config(void) {
    smj_model_config c = small_config();
    c.dim = 128;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 64;
    c.ffn_hidden = 256;
    c.qk_norm = 0;
    return c;
}

/* A vocabulary over 2^20: the 128 rows of a training step give logits of
 * over 2^27 values, so the LM head's backward runs in blocks of rows. */
static smj_model_config big_vocab_config(void) {
    smj_model_config c = small_config();
    c.vocab_size = 1100000;
    c.dim = 32;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_hidden = 64;
    c.n_layers = 1;
    c.tied_embeddings = 1;
    return c;
}

/* GPT-2 (LayerNorm, learned positions, biases, GELU) */
static smj_model_config gpt2_config(void) {
    smj_model_config c = small_config();
    c.arch = SMJ_ARCH_GPT2;
    c.n_kv_heads = c.n_heads;
    c.ffn_hidden = 4 * c.dim;
    c.qk_norm = 0;
    c.tied_embeddings = 1;
    return c;
}
/* GPT-2 with head size 64: flash attention, whose backward takes c_attn's
 * bias gradient in its epilogues (attention_bwd_bias) */
static smj_model_config gpt2_flash_config(void) {
    smj_model_config c = gpt2_config();
    c.dim = 128;
    c.n_heads = c.n_kv_heads = 2;
    c.head_dim = 64;
    c.ffn_hidden = 4 * c.dim;
    return c;
}

static smj_ctx *make_ctx_bf16(smj_backend_kind k, int bf16) {
    smj_ctx_options o = {.threads = 0, .backend = k, .bf16_matmul = bf16};
    return smj_ctx_create(&o);
}
static smj_ctx *make_ctx(smj_backend_kind k) { return make_ctx_bf16(k, 0); }

typedef struct {
    float loss[6];
    float *params; /* all tensors, concatenated on the host */
    int64_t n;
} run_result;

static void fetch_params(smj_model *m, run_result *r) {
    r->n = smj_model_num_params(m);
    r->params = malloc(sizeof(float) * (size_t)r->n);
    int64_t off = 0;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        smj_model_tensor_get(m, i, 0, r->params + off);
        off += v.numel;
    }
}

static smj_optim_options optim(void) {
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = 3e-3f;
    o.warmup_steps = 0;
    o.total_steps = 6;
    o.schedule = SMJ_SCHED_CONSTANT;
    return o;
}

/* A training run's pieces: model cf (seed 7, memory options to or NULL),
 * AdamW (optim(), total_steps steps), the dataset at ds_path. tr_open: 1
 * when all were made; tr_close checks the device and frees them. */
typedef struct {
    smj_ctx *ctx;
    smj_model *m;
    smj_trainer *t;
    smj_dataset *ds;
} train_run;
static int tr_open(train_run *tr, smj_backend_kind k, const smj_model_config *cf, int bf16,
                   const smj_train_options *to, const char *ds_path, int total_steps) {
    smj_ctx *ctx = tr->ctx = make_ctx_bf16(k, bf16);
    smj_model_config cfg = *cf;
    tr->m = NULL, tr->t = NULL, tr->ds = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 7, &tr->m));
    if (tr->m && to) CHECK_OK(ctx, smj_model_set_train_options(tr->m, to));
    smj_optim_options o = optim();
    o.total_steps = total_steps;
    if (tr->m) CHECK_OK(ctx, smj_trainer_create(tr->m, &o, &tr->t));
    CHECK_OK(ctx, smj_dataset_open(ctx, ds_path, &tr->ds));
    return tr->m && tr->t && tr->ds;
}
static void tr_close(train_run *tr) {
    CHECK(smj_ctx_status(tr->ctx) == SMJ_OK, "device error: %s", smj_ctx_error(tr->ctx));
    smj_dataset_free(tr->ds);
    smj_trainer_free(tr->t);
    smj_model_free(tr->m);
    smj_ctx_free(tr->ctx);
}

/* Steps first..last-1 of a training run on backend k (to: training-memory
 * options or NULL); starts from seed weights or from state file `load`;
 * saves to `save` after the steps when not NULL. */
static void train_cfg(smj_backend_kind k, const smj_model_config *cf, int bf16, const smj_train_options *to,
                      const char *ds_path, const char *load, const char *save, int first, int last, run_result *r,
                      int fetch) {
    train_run tr;
    if (tr_open(&tr, k, cf, bf16, to, ds_path, 6)) {
        smj_ctx *ctx = tr.ctx;
        if (load) CHECK_OK(ctx, smj_trainer_load(tr.t, load, NULL));
        for (int i = first; i < last; i++) {
            smj_step_stats st;
            CHECK_OK(ctx, smj_trainer_step(tr.t, tr.ds, 4, 32, 1, &st));
            CHECK(!st.skipped, "%s step %d skipped", smj_ctx_backend_name(ctx), i);
            r->loss[i] = st.loss;
        }
        if (save) CHECK_OK(ctx, smj_trainer_save(tr.t, save, NULL));
        if (fetch) fetch_params(tr.m, r);
    }
    tr_close(&tr);
}

static void train(smj_backend_kind k, const char *ds_path, const char *load, const char *save, int first, int last,
                  run_result *r, int fetch) {
    smj_model_config cfg = small_config();
    train_cfg(k, &cfg, 0, NULL, ds_path, load, save, first, last, r, fetch);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

static void cross_backend(const char *ds_path) {
    const char *dir = test_tmpdir();
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/cuda3.state", dir);
    snprintf(p2, sizeof p2, "%s/cpu3.state", dir);
    run_result cuda6 = {0}, cuda6b = {0}, cu_cpu = {0}, cpu6 = {0}, cpu_cu = {0};
    train(SMJ_BACKEND_CUDA, ds_path, NULL, NULL, 0, 6, &cuda6, 1);
    train(SMJ_BACKEND_CUDA, ds_path, NULL, p1, 0, 3, &cu_cpu, 0);
    train(SMJ_BACKEND_CPU, ds_path, p1, NULL, 3, 6, &cu_cpu, 1);
    train(SMJ_BACKEND_CPU, ds_path, NULL, NULL, 0, 6, &cpu6, 1);
    train(SMJ_BACKEND_CPU, ds_path, NULL, p2, 0, 3, &cpu_cu, 0);
    train(SMJ_BACKEND_CUDA, ds_path, p2, NULL, 3, 6, &cpu_cu, 1);
    train(SMJ_BACKEND_CUDA, ds_path, NULL, NULL, 0, 6, &cuda6b, 1);
    if (!cuda6.params || !cu_cpu.params || !cpu6.params || !cpu_cu.params || !cuda6b.params) {
        CHECK(0, "a run failed");
        return;
    }
    double w1 = 0, w2 = 0, w3 = 0;
    for (int i = 0; i < 6; i++) {
        double e1 = rel(cu_cpu.loss[i], cuda6.loss[i]), e2 = rel(cpu_cu.loss[i], cpu6.loss[i]);
        double e3 = rel(cuda6.loss[i], cpu6.loss[i]);
        CHECK(e1 <= 1e-4, "CUDA->CPU resume: step %d loss %.7f vs %.7f (rel %.2e)", i, cu_cpu.loss[i], cuda6.loss[i], e1);
        CHECK(e2 <= 1e-4, "CPU->CUDA resume: step %d loss %.7f vs %.7f (rel %.2e)", i, cpu_cu.loss[i], cpu6.loss[i], e2);
        CHECK(e3 <= 1e-4, "CUDA vs CPU: step %d loss %.7f vs %.7f (rel %.2e)", i, cuda6.loss[i], cpu6.loss[i], e3);
        CHECK(memcmp(&cuda6.loss[i], &cuda6b.loss[i], sizeof(float)) == 0, "two CUDA runs: step %d loss %.9g vs %.9g",
              i, cuda6.loss[i], cuda6b.loss[i]);
        w1 = fmax(w1, e1); w2 = fmax(w2, e2); w3 = fmax(w3, e3);
    }
    double p1e = rel_l2(cu_cpu.params, cuda6.params, cuda6.n), p2e = rel_l2(cpu_cu.params, cpu6.params, cpu6.n);
    double p3e = rel_l2(cuda6.params, cpu6.params, cpu6.n);
    CHECK(p1e <= 1e-3, "CUDA->CPU resume: params rel L2 %.2e", p1e);
    CHECK(p2e <= 1e-3, "CPU->CUDA resume: params rel L2 %.2e", p2e);
    CHECK(p3e <= 1e-3, "CUDA vs CPU: params rel L2 %.2e", p3e);
    CHECK(memcmp(cuda6.params, cuda6b.params, sizeof(float) * (size_t)cuda6.n) == 0,
          "two CUDA runs of 6 steps: parameters differ");
    printf("losses cuda:");
    for (int i = 0; i < 6; i++) printf(" %.6f", cuda6.loss[i]);
    printf("\nlosses cpu: ");
    for (int i = 0; i < 6; i++) printf(" %.6f", cpu6.loss[i]);
    printf("\nCUDA 3 + CPU 3 vs CUDA 6: worst loss rel %.2e, params rel L2 %.2e\n", w1, p1e);
    printf("CPU 3 + CUDA 3 vs CPU 6:   worst loss rel %.2e, params rel L2 %.2e\n", w2, p2e);
    printf("CUDA 6 vs CPU 6:           worst loss rel %.2e, params rel L2 %.2e; two CUDA runs bit-identical: %s\n",
           w3, p3e, memcmp(cuda6.params, cuda6b.params, sizeof(float) * (size_t)cuda6.n) == 0 ? "yes" : "NO");
    free(cuda6.params); free(cuda6b.params); free(cu_cpu.params); free(cpu6.params); free(cpu_cu.params);
}

/* (also: with SMJ_CUDA_XENT_FUSED=0, cross-entropy as xent_fwd then
 * xent_bwd instead of xent_fwd_bwd: the same bits) */
static void bf16_copies(const char *ds_path, const char *name, smj_model_config cfg, const smj_train_options *to) {
    run_result kept = {0}, fresh = {0}, two = {0};
    train_cfg(SMJ_BACKEND_CUDA, &cfg, 1, to, ds_path, NULL, NULL, 0, 6, &kept, 1);
    setenv("SMJ_CUDA_BF16_KEEP", "1", 1); /* read when the context is made */
    train_cfg(SMJ_BACKEND_CUDA, &cfg, 1, to, ds_path, NULL, NULL, 0, 6, &fresh, 1);
    unsetenv("SMJ_CUDA_BF16_KEEP");
    setenv("SMJ_CUDA_XENT_FUSED", "0", 1);
    train_cfg(SMJ_BACKEND_CUDA, &cfg, 1, to, ds_path, NULL, NULL, 0, 6, &two, 1);
    unsetenv("SMJ_CUDA_XENT_FUSED");
    if (!kept.params || !fresh.params || !two.params) {
        CHECK(0, "%s: a bf16 run failed", name);
        return;
    }
    int same = memcmp(kept.loss, fresh.loss, sizeof kept.loss) == 0 &&
               memcmp(kept.params, fresh.params, sizeof(float) * (size_t)kept.n) == 0;
    int same2 = memcmp(kept.loss, two.loss, sizeof kept.loss) == 0 &&
                memcmp(kept.params, two.params, sizeof(float) * (size_t)kept.n) == 0;
    CHECK(same, "%s, bf16: kept / written operand copies change the result (loss step 5 %.9g vs %.9g, params rel L2 "
          "%.2e)", name, kept.loss[5], fresh.loss[5], rel_l2(kept.params, fresh.params, kept.n));
    CHECK(same2, "%s, bf16: xent_fwd_bwd differs from xent_fwd + xent_bwd (loss step 5 %.9g vs %.9g, params rel L2 "
          "%.2e)", name, kept.loss[5], two.loss[5], rel_l2(kept.params, two.params, kept.n));
    printf("bf16 %s: 6 steps with kept and op-written operand copies == fresh casts, bit for bit: %s; == the two "
           "cross-entropy ops: %s (loss %.6f -> %.6f)\n", name, same ? "yes" : "NO", same2 ? "yes" : "NO",
           kept.loss[0], kept.loss[5]);
    free(kept.params);
    free(fresh.params);
    free(two.params);
}

/* --fused-ce with --fp16-activations in bf16 mode: the chunks' logits are
 * bf16 alone, in the chunk buffer's storage of R + 1 fp32 rows, so the
 * CUDA backend (bf16_tight) takes chunks of 2R rows (64, 80 + 48, and
 * thirteen of 10 or fewer: products under 16 rows and depth). Each run's
 * losses follow the 16-bit-logits run's (the loss from fp32 logits): step
 * 0 within 1e-4 (the logits' bf16 rounding; 2e-6 measured on an H200),
 * the next five within 1e-3 (7e-5 measured; a wrong gradient would leave
 * them). */
static void tight_chunks(const char *ds_path) {
    smj_model_config cfg = flash_config();
    smj_train_options f16 = {.fp16_activations = 1};
    run_result ref = {0};
    train_cfg(SMJ_BACKEND_CUDA, &cfg, 1, &f16, ds_path, NULL, NULL, 0, 6, &ref, 0);
    const int rows[] = {32, 40, 5};
    for (int i = 0; i < 3; i++) {
        smj_train_options fce = {.fp16_activations = 1, .fused_ce = 1, .ce_chunk_rows = rows[i]};
        run_result r = {0};
        train_cfg(SMJ_BACKEND_CUDA, &cfg, 1, &fce, ds_path, NULL, NULL, 0, 6, &r, 0);
        double worst = 0;
        for (int s = 1; s < 6; s++) worst = fmax(worst, rel(r.loss[s], ref.loss[s]));
        CHECK(rel(r.loss[0], ref.loss[0]) <= 1e-4 && worst <= 1e-3,
              "--fused-ce (%d-row buffer) bf16: losses %.6f .. %.6f vs %.6f .. %.6f", rows[i], r.loss[0], r.loss[5],
              ref.loss[0], ref.loss[5]);
        printf("bf16 --fused-ce --fp16-activations, a %d-row chunk buffer (chunks of up to %d rows): loss %.6f -> "
               "%.6f vs 16-bit logits %.6f -> %.6f (worst rel %.2e)\n",
               rows[i], 2 * rows[i] + 1, r.loss[0], r.loss[5], ref.loss[0], ref.loss[5],
               fmax(worst, rel(r.loss[0], ref.loss[0])));
    }
}

/* A train step recorded as a CUDA graph and replayed (the trainer's device
 * path, the default) computes what launching every kernel does
 * (SMJ_CUDA_GRAPHS=0): 9 steps, an evaluation before step 6 (other ops:
 * the graph is refused and recorded again) and a NaN gradient injected at
 * step 7 (skipped on the device, nothing updated), the same losses, skips
 * and parameters bit for bit; and the graph did run (>= 3 steps). */
typedef struct {
    float loss[9];
    int skipped[9];
    float *params;
    int64_t n, graph_steps;
} graph_run;
static void graph_train(const smj_model_config *cf, int bf16, const smj_train_options *to, const char *ds_path,
                        int graphs, graph_run *r) {
    train_run tr;
    if (!graphs) setenv("SMJ_CUDA_GRAPHS", "0", 1); /* read when the context is made */
    int ok = tr_open(&tr, SMJ_BACKEND_CUDA, cf, bf16, to, ds_path, 9);
    unsetenv("SMJ_CUDA_GRAPHS");
    for (int i = 0; ok && i < 9; i++) {
        smj_step_stats st;
        if (i == 6) {
            float l;
            CHECK_OK(tr.ctx, smj_trainer_eval(tr.t, tr.ds, 4, 32, 1, &l));
        }
        if (i == 7) smj_trainer_debug_poison_next(tr.t);
        CHECK_OK(tr.ctx, smj_trainer_step(tr.t, tr.ds, 4, 32, 1, &st));
        r->loss[i] = st.loss;
        r->skipped[i] = st.skipped;
    }
    if (ok) {
        run_result pr = {0};
        fetch_params(tr.m, &pr);
        r->params = pr.params;
        r->n = pr.n;
        r->graph_steps = smj_trainer_graph_steps(tr.t);
    }
    tr_close(&tr);
}
static void step_graphs(const char *ds_path, const char *name, smj_model_config cfg, int bf16,
                        const smj_train_options *to) {
    graph_run g = {0}, p = {0};
    graph_train(&cfg, bf16, to, ds_path, 1, &g);
    graph_train(&cfg, bf16, to, ds_path, 0, &p);
    if (!g.params || !p.params) {
        CHECK(0, "%s: a run failed", name);
        free(g.params);
        free(p.params);
        return;
    }
    int same = memcmp(g.loss, p.loss, sizeof g.loss) == 0 && memcmp(g.skipped, p.skipped, sizeof g.skipped) == 0 &&
               memcmp(g.params, p.params, sizeof(float) * (size_t)g.n) == 0;
    CHECK(same, "%s: graph steps differ from launched ones (loss step 8 %.9g vs %.9g, params rel L2 %.2e)", name,
          g.loss[8], p.loss[8], rel_l2(g.params, p.params, g.n));
    CHECK(g.graph_steps >= 3 && p.graph_steps == 0, "%s: %lld steps ran as a graph (%lld with SMJ_CUDA_GRAPHS=0)",
          name, (long long)g.graph_steps, (long long)p.graph_steps);
    CHECK(g.skipped[7] && !g.skipped[6] && !g.skipped[8], "%s: the NaN step skipped %d (steps 6, 8: %d %d)", name,
          g.skipped[7], g.skipped[6], g.skipped[8]);
    printf("graphs %s: %lld of 9 steps replayed, == every kernel launched, bit for bit: %s (loss %.6f -> %.6f)\n",
           name, (long long)g.graph_steps, same ? "yes" : "NO", g.loss[0], g.loss[8]);
    free(g.params);
    free(p.params);
}

/* bf16 mode: the parameters' bf16 copy, which the optimizer's step writes
 * and the next step's products read in place of casting each weight: the
 * third step's casts are fewer than the first's (no copy yet), and writing
 * one tensor from the host drops the copy: the next forward's loss is a
 * fresh model's with the same values, bit for bit (a stale copy would keep
 * the old tensor). */
static long cast_calls(smj_ctx *ctx) {
    smj_profile_row rows[64];
    int n = smj_ctx_profile_rows(ctx, rows, 64);
    long calls = 0;
    for (int i = 0; i < n && i < 64; i++)
        if (strcmp(rows[i].name, "matmul: bf16 casts") == 0) calls += rows[i].calls;
    return calls;
}
static void weights_copy(const char *ds_path) {
    smj_model_config cfg = flash_config();
    smj_ctx *ctx = make_ctx_bf16(SMJ_BACKEND_CUDA, 1), *ctx2 = make_ctx_bf16(SMJ_BACKEND_CUDA, 1);
    smj_model *m = NULL, *m2 = NULL;
    smj_trainer *t = NULL;
    smj_dataset *ds = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 7, &m));
    CHECK_OK(ctx2, smj_model_create(ctx2, &cfg, 9, &m2));
    smj_optim_options o = optim();
    CHECK_OK(ctx, smj_trainer_create(m, &o, &t));
    CHECK_OK(ctx, smj_dataset_open(ctx, ds_path, &ds));
    if (!m || !m2 || !t || !ds) goto done;
    long casts[3];
    for (int i = 0; i < 3; i++) {
        smj_step_stats st;
        CHECK_OK(ctx, smj_ctx_profile(ctx, 1));
        CHECK_OK(ctx, smj_trainer_step(t, ds, 4, 32, 1, &st));
        CHECK_OK(ctx, smj_ctx_profile(ctx, 0));
        casts[i] = cast_calls(ctx);
    }
    CHECK(casts[2] < casts[0], "products casting an operand: %ld in the third step, %ld in the first: the weights' "
          "copy unused", casts[2], casts[0]);
    /* the first block's first matrix x 1.5 from the host, then every tensor into m2 */
    int nt = smj_model_num_tensors(m), changed = -1;
    const char *cname = "-";
    for (int i = 0; i < nt; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        float *h = malloc(sizeof(float) * (size_t)v.numel);
        smj_model_tensor_get(m, i, 0, h);
        if (changed < 0 && i > 0 && v.ndim == 2) {
            changed = i;
            cname = v.name;
            for (int64_t j = 0; j < v.numel; j++) h[j] *= 1.5f;
            CHECK_OK(ctx, smj_model_tensor_set(m, i, h));
        }
        CHECK_OK(ctx2, smj_model_tensor_set(m2, i, h));
        free(h);
    }
    int32_t in[4 * 32], tg[4 * 32];
    for (int i = 0; i < 4 * 32; i++) in[i] = (i * 37) % 300, tg[i] = (i * 11 + 5) % 300;
    float la = 0, lb = 0;
    CHECK_OK(ctx, smj_model_forward(m, in, tg, 4, 32, &la));
    CHECK_OK(ctx2, smj_model_forward(m2, in, tg, 4, 32, &lb));
    CHECK(memcmp(&la, &lb, sizeof la) == 0, "a tensor written from the host: loss %.9g, a fresh model's %.9g (stale "
          "bf16 weights?)", la, lb);
    CHECK(changed > 0, "no matrix to change");
    printf("bf16 weights' copy: products casting an operand %ld (step 1), %ld (step 2), %ld (step 3); after a host "
           "write into %s the loss is a fresh model's: %s\n", casts[0], casts[1], casts[2], cname,
           la == lb ? "yes" : "NO");
done:
    smj_dataset_free(ds);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_model_free(m2);
    smj_ctx_free(ctx);
    smj_ctx_free(ctx2);
}

static void kv_decoding(smj_model_config cfg, const char *name, int ops) {
    enum { T = 100, FIRST = 70 };
    int V = cfg.vocab_size;
    if (ops) setenv("SMJ_CUDA_DECODE_BLOCK", "0", 1); /* read when the context is made */
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CUDA), *cpu = make_ctx(SMJ_BACKEND_CPU);
    unsetenv("SMJ_CUDA_DECODE_BLOCK");
    smj_model *m = NULL, *mc = NULL;
    smj_session *s = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 11, &m));
    CHECK_OK(cpu, smj_model_create(cpu, &cfg, 11, &mc));
    int32_t ids[T];
    smj_rng r;
    smj_rng_seed(&r, 5);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(smj_rng_u64(&r) % (uint64_t)V);
    float *full = malloc(sizeof(float) * T * V), *fullc = malloc(sizeof(float) * T * V);
    if (!m || !mc || !full || !fullc) { CHECK(0, "setup failed"); goto done; }
    CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 1, T, NULL));
    ctx->backend->download(full, smj_model_logits(m), sizeof(float) * T * V);
    CHECK_OK(cpu, smj_model_forward(mc, ids, NULL, 1, T, NULL));
    memcpy(fullc, smj_model_logits(mc), sizeof(float) * T * V);
    double ec = rel_l2(full, fullc, (int64_t)T * V);
    CHECK(ec <= 1e-5, "full forward CUDA vs CPU: logits rel L2 %.2e", ec);
    double mx = 0;
    for (int i = 0; i < T * V; i++) mx = fmax(mx, fabs(full[i]));
    CHECK_OK(ctx, smj_session_create(m, T, &s));
    if (!s) goto done;
    const float *lg = NULL;
    double worst = 0;
    CHECK_OK(ctx, smj_session_feed(s, ids, FIRST, &lg));
    for (int pos = FIRST - 1; pos < T; pos++) {
        if (pos >= FIRST) CHECK_OK(ctx, smj_session_feed(s, &ids[pos], 1, &lg));
        if (!lg) break;
        double e = 0;
        for (int j = 0; j < V; j++) e = fmax(e, fabs(lg[j] - full[(int64_t)pos * V + j]));
        worst = fmax(worst, e / mx);
    }
    CHECK(worst <= 1e-4, "KV-cache decoding vs full forward: normalized max error %.2e", worst);
    printf("%s: KV-cache decoding (70-token chunk + 30 single tokens) vs full forward: normalized max error %.2e;"
           " full forward CUDA vs CPU rel L2 %.2e\n", name, worst, ec);
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "device error: %s", smj_ctx_error(ctx));
done:
    free(full);
    free(fullc);
    smj_session_free(s);
    smj_model_free(m);
    smj_model_free(mc);
    smj_ctx_free(ctx);
    smj_ctx_free(cpu);
}

/* the logits of 60 one-token steps after a 40-token prompt, concatenated */
static float *decode_run(smj_model_config cfg, int graphs) {
    enum { P = 40, N = 60 };
    if (!graphs) setenv("SMJ_CUDA_GRAPHS", "0", 1); /* read when the context is made */
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CUDA);
    unsetenv("SMJ_CUDA_GRAPHS");
    int V = cfg.vocab_size;
    smj_model *m = NULL;
    smj_session *s = NULL;
    float *out = malloc(sizeof(float) * (size_t)N * V);
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 13, &m));
    if (m) CHECK_OK(ctx, smj_session_create(m, P + N, &s));
    if (!s || !out) { CHECK(0, "decode run setup failed"); free(out); out = NULL; goto done; }
    int32_t ids[P + N];
    for (int i = 0; i < P + N; i++) ids[i] = (i * 37 + 5) % V;
    const float *lg = NULL;
    CHECK_OK(ctx, smj_session_feed(s, ids, P, &lg));
    int32_t big[4 * 128];
    for (int i = 0; i < 4 * 128; i++) big[i] = (i * 11 + 3) % V;
    for (int t = 0; t < N; t++) {
        /* halfway, a batch forward grows the backend's scratch buffer, which
         * the recorded step uses: the graph must be recorded again */
        if (t == N / 2) CHECK_OK(ctx, smj_model_forward(m, big, NULL, 4, 128, NULL));
        CHECK_OK(ctx, smj_session_feed(s, ids + P + t, 1, &lg));
        if (lg) memcpy(out + (int64_t)t * V, lg, sizeof(float) * (size_t)V);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "decode run (graphs %d): device error: %s", graphs, smj_ctx_error(ctx));
done:
    smj_session_free(s);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return out;
}

static void decode_graphs(smj_model_config cfg, const char *name) {
    float *g = decode_run(cfg, 1), *e = decode_run(cfg, 0);
    if (g && e) {
        int V = cfg.vocab_size;
        int same = memcmp(g, e, sizeof(float) * (size_t)60 * V) == 0;
        CHECK(same, "%s: decoding through a CUDA graph differs from launching each kernel (rel L2 %.2e)", name,
              rel_l2(g, e, (int64_t)60 * V));
        printf("%s: decoding 60 tokens through a recorded graph == launching every kernel, bit for bit: %s\n", name,
               same ? "yes" : "NO");
    }
    free(g);
    free(e);
}

/* The logits of 50 one-token steps (no prompt chunk: every step takes the
 * decode path) in fp32 or bf16 mode, on the model's weights or on them
 * rounded to bf16 values first. */
enum { BF_STEPS = 50 };
static float *bf16_decode_run(smj_model_config cfg, int bf16, int round) {
    smj_ctx *ctx = make_ctx_bf16(SMJ_BACKEND_CUDA, bf16);
    int V = cfg.vocab_size;
    smj_model *m = NULL;
    smj_session *s = NULL;
    float *out = malloc(sizeof(float) * (size_t)BF_STEPS * V);
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 17, &m));
    if (m) set_biases(ctx, m);
    if (m && round) round_weights_bf16(ctx, m);
    if (m) CHECK_OK(ctx, smj_session_create(m, BF_STEPS, &s));
    const float *lg = NULL;
    for (int t = 0; s && out && t < BF_STEPS; t++) {
        int32_t id = (t * 29 + 1) % V;
        CHECK_OK(ctx, smj_session_feed(s, &id, 1, &lg));
        if (lg) memcpy(out + (int64_t)t * V, lg, sizeof(float) * (size_t)V);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "bf16 decode run: device error: %s", smj_ctx_error(ctx));
    smj_session_free(s);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return out;
}

/* In bf16 mode the decode steps read bf16 copies of the weights: on weights
 * that are bf16 values already they equal fp32 mode's steps to rounding;
 * on others they differ by the weights' rounding. */
static void decode_bf16_weights(smj_model_config cfg, const char *name) {
    int64_t n = (int64_t)BF_STEPS * cfg.vocab_size;
    float *a = bf16_decode_run(cfg, 1, 1), *b = bf16_decode_run(cfg, 0, 1);
    float *c = bf16_decode_run(cfg, 1, 0), *d = bf16_decode_run(cfg, 0, 0);
    if (a && b && c && d) {
        double same = rel_l2(a, b, n), diff = rel_l2(c, d, n);
        CHECK(same < 1e-5, "%s: bf16-mode decoding on bf16-valued weights vs fp32 mode: rel L2 %.2e", name, same);
        CHECK(diff > 1e-4 && diff < 3e-2, "%s: bf16-mode decoding on f32 weights vs fp32 mode: rel L2 %.2e, want "
              "the weights' rounding (1e-4 .. 3e-2)", name, diff);
        printf("%s: decoding in bf16 mode (bf16 weight copies) vs fp32 mode, %d steps: rel L2 %.2e on bf16-valued "
               "weights, %.2e on f32 weights\n", name, BF_STEPS, same, diff);
    }
    free(a); free(b); free(c); free(d);
}

/* smj_session_greedy's steps chained on the device (decode_argmax) equal
 * the feed + sample loop, for the ops one by one and decode_block. */
static void greedy_on_device(void) {
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CUDA);
    smj_model_config cfgs[3] = {small_config(), flash_config(), gpt2_config()};
    const char *names[3] = {"CUDA, QK-norm (decode ops one by one)", "CUDA, plain block (decode_block)",
                            "CUDA, GPT-2 (decode_block)"};
    for (int i = 0; i < 3; i++) {
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &cfgs[i], 28, &m));
        if (m) check_greedy(ctx, m, names[i]);
        smj_model_free(m);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "greedy decoding: device error: %s", smj_ctx_error(ctx));
    smj_ctx_free(ctx);
}

/* A byte-level BPE of 300 ids (the small models' vocabulary) for the file formats. */
static smj_tokenizer *tiny_tokenizer(smj_ctx *ctx) {
    static const char *text = "the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs away!\n";
    size_t n = strlen(text);
    uint8_t *t = malloc(n * 40);
    smj_tokenizer *tok = NULL;
    if (!t) return NULL;
    for (int r = 0; r < 40; r++) memcpy(t + r * n, text, n);
    smj_tokenizer_train_options to = {.vocab_size = 300};
    CHECK_OK(ctx, smj_tokenizer_train(ctx, t, n * 40, &to, &tok));
    free(t);
    return tok;
}

/* A quantized GGUF model on the GPU (qmatmul): the full forward's logits
 * against the reference backend's (W dequantized exactly, A as it is, like
 * ours), and KV-cache decoding against the full forward on the GPU. */
static void gguf_on_device(void) {
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CUDA), *ref = make_ctx(SMJ_BACKEND_REF);
    smj_tokenizer *tok = tiny_tokenizer(ref);
    smj_model_config cfg = flash_config();
    smj_model *src = NULL;
    CHECK_OK(ref, smj_model_create(ref, &cfg, 31, &src));
    static const smj_quant qs[3] = {SMJ_QUANT_F16, SMJ_QUANT_Q8_0, SMJ_QUANT_Q4_0};
    enum { T = 90 };
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (i * 17 + 3) % cfg.vocab_size;
    float *a = malloc(sizeof(float) * T * cfg.vocab_size), *b = malloc(sizeof(float) * T * cfg.vocab_size);
    for (int q = 0; src && tok && q < 3; q++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/m_%s.gguf", test_tmpdir(), smj_quant_name(qs[q]));
        CHECK_OK(ref, smj_export_gguf(src, tok, path, qs[q], NULL));
        smj_model *md = NULL, *mr = NULL;
        CHECK_OK(ctx, smj_model_load_gguf(ctx, path, &md));
        CHECK_OK(ref, smj_model_load_gguf(ref, path, &mr));
        if (md && mr) {
            CHECK_OK(ctx, smj_model_forward(md, ids, NULL, 1, T, NULL));
            CHECK_OK(ctx, smj_model_get_logits(md, a));
            CHECK_OK(ref, smj_model_forward(mr, ids, NULL, 1, T, NULL));
            CHECK_OK(ref, smj_model_get_logits(mr, b));
            double e = rel_l2(a, b, (int64_t)T * cfg.vocab_size);
            CHECK(e < 1e-5, "GGUF %s on CUDA vs the reference: logits rel L2 %.2e", smj_quant_name(qs[q]), e);
            printf("GGUF %s model on CUDA (qmatmul): logits vs the reference backend rel L2 %.2e\n",
                   smj_quant_name(qs[q]), e);
            char label[64];
            snprintf(label, sizeof label, "GGUF %s on CUDA", smj_quant_name(qs[q]));
            check_kv_cache(ctx, md, T, label);
        }
        smj_model_free(md);
        smj_model_free(mr);
        remove(path);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "GGUF on CUDA: device error: %s", smj_ctx_error(ctx));
    free(a);
    free(b);
    smj_model_free(src);
    smj_tokenizer_free(tok);
    smj_ctx_free(ctx);
    smj_ctx_free(ref);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    uint8_t *b = NULL;
    *n = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)len + 1)) != NULL)
            *n = fread(b, 1, (size_t)len, f);
    }
    fclose(f);
    return b;
}

/* HF and GGUF import/export on a model that lives on the GPU (they walk the
 * parameters through a host copy): the files equal, byte for byte, those
 * written from the same weights on the CPU, and an import into a CUDA
 * context computes the CPU model's logits. */
static void files_from_device(void) {
    smj_ctx *ctx = make_ctx(SMJ_BACKEND_CUDA), *cpu = make_ctx(SMJ_BACKEND_CPU);
    smj_model_config cfg = flash_config();
    smj_model *mc = NULL, *md = NULL, *mi = NULL;
    CHECK_OK(cpu, smj_model_create(cpu, &cfg, 41, &mc));
    CHECK_OK(ctx, smj_model_create(ctx, &cfg, 42, &md));
    if (!mc || !md) goto done;
    for (int i = 0; i < smj_model_num_tensors(mc); i++) { /* the CPU model's weights onto the GPU */
        smj_tensor_view v;
        CHECK_OK(cpu, smj_model_tensor(mc, i, &v));
        CHECK_OK(ctx, smj_model_tensor_set(md, i, v.data));
    }
    const char *dir = test_tmpdir();
    char pc[1024], pd[1024], hc[1024], hd[1024];
    snprintf(pc, sizeof pc, "%s/cpu.gguf", dir);
    snprintf(pd, sizeof pd, "%s/cuda.gguf", dir);
    snprintf(hc, sizeof hc, "%s/hf_cpu", dir);
    snprintf(hd, sizeof hd, "%s/hf_cuda", dir);
    smj_tokenizer *tok = tiny_tokenizer(cpu);
    CHECK_OK(cpu, smj_export_gguf(mc, tok, pc, SMJ_QUANT_Q8_0, NULL));
    CHECK_OK(ctx, smj_export_gguf(md, tok, pd, SMJ_QUANT_Q8_0, NULL));
    smj_hf_export_options ho = {.overwrite = 1};
    CHECK_OK(cpu, smj_export_hf(mc, tok, hc, &ho));
    CHECK_OK(ctx, smj_export_hf(md, tok, hd, &ho));
    size_t na, nb;
    uint8_t *a = slurp(pc, &na), *b = slurp(pd, &nb);
    CHECK(a && b && na == nb && na > 0 && memcmp(a, b, na) == 0, "GGUF written from the GPU differs from the CPU's");
    free(a); free(b);
    char fa[1100], fb[1100];
    snprintf(fa, sizeof fa, "%s/model.safetensors", hc);
    snprintf(fb, sizeof fb, "%s/model.safetensors", hd);
    a = slurp(fa, &na);
    b = slurp(fb, &nb);
    int same = a && b && na == nb && na > 0 && memcmp(a, b, na) == 0;
    CHECK(same, "HF safetensors written from the GPU differ from the CPU's");
    free(a); free(b);
    CHECK_OK(ctx, smj_import_hf(ctx, hc, NULL, &mi));
    if (mi) {
        enum { T = 50 };
        int32_t ids[T];
        for (int i = 0; i < T; i++) ids[i] = (i * 7 + 1) % cfg.vocab_size;
        float *la = malloc(sizeof(float) * T * cfg.vocab_size), *lb = malloc(sizeof(float) * T * cfg.vocab_size);
        CHECK_OK(ctx, smj_model_forward(mi, ids, NULL, 1, T, NULL));
        CHECK_OK(ctx, smj_model_get_logits(mi, la));
        CHECK_OK(cpu, smj_model_forward(mc, ids, NULL, 1, T, NULL));
        CHECK_OK(cpu, smj_model_get_logits(mc, lb));
        double e = rel_l2(la, lb, (int64_t)T * cfg.vocab_size);
        CHECK(e < 1e-5, "HF import into a CUDA context: logits vs the CPU model rel L2 %.2e", e);
        printf("GGUF q8_0 and HF files written from the GPU == from the CPU, byte for byte: %s; HF import on CUDA: "
               "logits vs CPU rel L2 %.2e\n", same ? "yes" : "NO", e);
        free(la); free(lb);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "files from the device: device error: %s", smj_ctx_error(ctx));
    smj_tokenizer_free(tok);
done:
    smj_model_free(mc);
    smj_model_free(md);
    smj_model_free(mi);
    smj_ctx_free(ctx);
    smj_ctx_free(cpu);
}

static void matmul_bias_products(void) {
    static const int64_t S[][3] = {{64, 96, 32}, {100, 48, 80}, {33, 130, 65}, {8, 64, 64}};
    const smj_exec X1 = {.nt = 1};
    smj_rng r;
    smj_rng_seed(&r, 11);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        smj_ctx *ctx = make_ctx_bf16(SMJ_BACKEND_CUDA, bf16);
        const smj_backend *be = ctx->backend;
        int took = 0, declined_ok = 1;
        double worst = 0;
        for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
            for (int t = 0; t < 4; t++) {
                int64_t M = S[s][0], N = S[s][1], K = S[s][2];
                int tA = t & 1, tB = t >> 1;
                float *h = malloc(sizeof(float) * (size_t)(M * K + K * N + N + 2 * M * N));
                float *A = h, *B = A + M * K, *b = B + K * N, *C = b + N, *got = C + M * N;
                for (int64_t i = 0; i < M * K + K * N + N; i++) h[i] = 2.0f * (float)smj_rng_uniform(&r) - 1.0f;
                CHECK(smj_backend_ref.matmul_bias(&X1, C, A, B, b, M, N, K, tA, tB) == 1, "reference matmul_bias");
                float *dA = be->alloc(sizeof(float) * (size_t)(M * K)), *dB = be->alloc(sizeof(float) * (size_t)(K * N));
                float *db = be->alloc(sizeof(float) * (size_t)N), *dC = be->alloc(sizeof(float) * (size_t)(M * N));
                be->upload(dA, A, sizeof(float) * (size_t)(M * K));
                be->upload(dB, B, sizeof(float) * (size_t)(K * N));
                be->upload(db, b, sizeof(float) * (size_t)N);
                be->zero(dC, sizeof(float) * (size_t)(M * N));
                int ok = be->matmul_bias(&ctx->exec, dC, dA, dB, db, M, N, K, tA, tB);
                be->download(got, dC, sizeof(float) * (size_t)(M * N));
                if (ok) {
                    took++;
                    double mx = 1e-6, e = 0;
                    for (int64_t i = 0; i < M * N; i++) mx = fmax(mx, fabs(C[i]));
                    for (int64_t i = 0; i < M * N; i++) e = fmax(e, fabs((double)got[i] - C[i]) / mx);
                    worst = fmax(worst, e);
                    CHECK(e <= 4.0 / 256, "matmul_bias M%lld N%lld K%lld tA%d tB%d: normalized error %.3g",
                          (long long)M, (long long)N, (long long)K, tA, tB, e);
                } else {
                    for (int64_t i = 0; i < M * N; i++) declined_ok &= got[i] == 0.0f;
                }
                be->free(dA); be->free(dB); be->free(db); be->free(dC);
                free(h);
            }
        CHECK(smj_ctx_status(ctx) == SMJ_OK, "matmul_bias: device error: %s", smj_ctx_error(ctx));
        CHECK(declined_ok, "matmul_bias: a declined product left C untouched");
        /* bf16 mode takes every shape here but M = 8 (under 16 rows); fp32 none */
        CHECK(took == (bf16 ? 12 : 0), "matmul_bias (%s): took %d of 16 products", bf16 ? "bf16" : "fp32", took);
        printf("matmul_bias (cuBLASLt bias epilogue), %s: %d of 16 products taken, worst normalized error %.3g\n",
               bf16 ? "bf16" : "fp32", took, worst);
        smj_ctx_free(ctx);
    }
}

/* ---- GPT-2's c_fc and its dX product with the GELU in cuBLASLt's epilogue */

static double gelu_tanh(double x) { return 0.5 * x * (1 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))); }
static double gelu_erf(double x) { return 0.5 * x * (1 + erf(x * 0.70710678118654752440)); }
static double dgelu_tanh(double x) {
    double k = 0.79788456080286535588, t = tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}
static double dgelu_erf(double x) {
    return 0.5 * (1 + erf(x * 0.70710678118654752440)) + x * exp(-0.5 * x * x) * 0.39894228040143267794;
}
static float bf16r(float v) { return smj_bf16_to_f32(smj_f32_to_bf16(v)); }

/* device copies of host arrays (n floats each) */
static float *dev_of(const smj_backend *be, const float *h, int64_t n) {
    float *d = be->alloc(sizeof(float) * (size_t)n);
    be->upload(d, h, sizeof(float) * (size_t)n);
    return d;
}
/* p's values on the host, written first where they are a promised output's
 * bf16 copy alone (an op reading p in 32 bits: scale by 1) */
static void values_of(smj_ctx *ctx, float *h, float *d, int64_t n) {
    ctx->backend->scale(&ctx->exec, d, 1.0f, n);
    ctx->backend->download(h, d, sizeof(float) * (size_t)n);
}

/* The exact products (one nonzero term each: pre = x_i B_j + bias_j, and
 * g_j for the backward) over x in [-6, 6]: the epilogue's GELU and gelu'
 * against the tanh form GPT-2 uses, to the outputs' rounding, where the erf
 * form would be off by more (fp32 and bf16 outputs of the backward; the
 * forward takes promised bf16 outputs only: fp32 ones are declined). */
static void gelu_epilogue_formula(smj_ctx *ctx) {
    const smj_backend *be = ctx->backend;
    const int64_t M = 64, N = 96, K = 16;
    float *A = calloc((size_t)(M * K), sizeof(float)), *B = calloc((size_t)(K * N), sizeof(float));
    float *bias = malloc(sizeof(float) * N), *o = malloc(sizeof(float) * (size_t)(M * N)),
          *p = malloc(sizeof(float) * (size_t)(M * N)), *x = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t i = 0; i < M; i++) A[i * K] = bf16r(-6.0f + 12.0f * (float)i / (float)(M - 1));
    for (int64_t j = 0; j < N; j++) {
        B[j] = bf16r(0.25f + (float)j / 64.0f);
        bias[j] = (float)(j % 32) / 32.0f - 0.5f;
    }
    float *dA = dev_of(be, A, M * K), *dB = dev_of(be, B, K * N), *db = dev_of(be, bias, N);
    float *dO = be->alloc(sizeof(float) * (size_t)(M * N)), *dP = be->alloc(sizeof(float) * (size_t)(M * N));
    CHECK(be->matmul_bias_gelu(&ctx->exec, dO, dP, dA, dB, db, M, N, K, 0, 0) == 0,
          "matmul_bias_gelu with fp32 outputs is declined");
    be->bf16_only(&ctx->exec, dO, M * N);
    be->bf16_only(&ctx->exec, dP, M * N);
    CHECK(be->matmul_bias_gelu(&ctx->exec, dO, dP, dA, dB, db, M, N, K, 0, 0) == 1, "matmul_bias_gelu (bf16) taken");
    values_of(ctx, o, dO, M * N);
    values_of(ctx, p, dP, M * N);
    /* (pre is exact in fp32 here: out is gelu(pre) rounded once to bf16) */
    double et = 0, ee = 0, ep = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double pre = (double)A[i * K] * B[j] + bias[j], got = o[i * N + j], tol = 0.004 * fabs(got) + 1e-5;
            ep = fmax(ep, fabs(p[i * N + j] - pre) / fmax(fabs(pre), 1e-3));
            et = fmax(et, fabs(got - gelu_tanh(pre)) - tol);
            ee = fmax(ee, fabs(got - gelu_erf(pre)) - tol);
        }
    CHECK(ep <= 1.0 / 256, "matmul_bias_gelu: pre off by %.3g relative", ep);
    CHECK(et <= 0 && ee > 0, "matmul_bias_gelu: GELU off the tanh form by %.3g past bf16 rounding (erf form %.3g)", et,
          ee);
    printf("matmul_bias_gelu, bf16 outputs, exact products: within bf16 rounding of gelu_tanh(pre) (%.3g); the erf "
           "form would be off by %.3g more\n", et, ee);
    /* the backward: C = g_j gelu'(x) with A's one column of ones, x [M, N]
     * over [-6, 6] (bf16 values; promised C: x's exact copy) */
    for (int64_t i = 0; i < M * K; i++) A[i] = i % K == 0 ? 1.0f : 0.0f;
    for (int64_t i = 0; i < M * N; i++) x[i] = bf16r(-6.0f + 12.0f * (float)((i * 37) % (M * N)) / (float)(M * N));
    be->upload(dA, A, sizeof(float) * (size_t)(M * K));
    float *dx = be->alloc(sizeof(float) * (size_t)(M * N));
    uint16_t *x16 = malloc(sizeof(uint16_t) * (size_t)(M * N));
    for (int64_t i = 0; i < M * N; i++) x16[i] = smj_f32_to_bf16(x[i]);
    uint16_t *d16 = be->alloc(sizeof(uint16_t) * (size_t)(M * N));
    be->upload(d16, x16, sizeof(uint16_t) * (size_t)(M * N));
    for (int bf = 0; bf < 2; bf++) {
        be->zero(db, sizeof(float) * (size_t)N);
        if (bf) {
            be->bf16_unpack(&ctx->exec, dx, d16, M * N); /* dx: the values of its exact copy d16 */
            be->bf16_only(&ctx->exec, dO, M * N);
        } else {
            be->upload(dx, x, sizeof(float) * (size_t)(M * N));
        }
        CHECK(be->matmul_dgelu(&ctx->exec, dO, db, dA, dB, dx, M, N, K, 0, 0) == 1, "matmul_dgelu (%s) taken",
              bf ? "bf16" : "fp32");
        values_of(ctx, o, dO, M * N);
        et = ee = 0;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double xv = x[i * N + j], got = o[i * N + j], tol = (bf ? 0.004 : 1e-5) * fabs(got) + 1e-4;
                et = fmax(et, fabs(got - B[j] * dgelu_tanh(xv)) - tol);
                ee = fmax(ee, fabs(got - B[j] * dgelu_erf(xv)) - tol);
            }
        CHECK(et <= 0 && ee > 0, "matmul_dgelu (%s): gelu' off the tanh form by %.3g past rounding (erf form %.3g)",
              bf ? "bf16" : "fp32", et, ee);
        printf("matmul_dgelu, %s output, exact products: within rounding of g gelu_tanh'(x) (%.3g); the erf form "
               "would be off by %.3g more\n", bf ? "bf16" : "fp32", et, ee);
    }
    CHECK(smj_ctx_status(ctx) == SMJ_OK, "GELU epilogues: device error: %s", smj_ctx_error(ctx));
    be->free(dA); be->free(dB); be->free(db); be->free(dO); be->free(dP); be->free(dx); be->free(d16);
    free(A); free(B); free(bias); free(o); free(p); free(x); free(x16);
}

/* Random products, every transpose pair, against the reference's
 * definitions (matmul_bias + gelu_fwd; matmul + gelu_bwd + column sums):
 * the forward with promised bf16 outputs, the backward with fp32 and
 * promised bf16 ones; what is declined (sizes, fp32 mode, the forward's
 * outputs not both promised) leaves the outputs untouched. */
static void gelu_products(void) {
    static const int64_t S[][3] = {{64, 96, 32}, {100, 48, 80}, {33, 136, 65}, {8, 64, 64}, {64, 60, 32}};
    const smj_exec X1 = {.nt = 1};
    smj_rng r;
    smj_rng_seed(&r, 12);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        smj_ctx *ctx = make_ctx_bf16(SMJ_BACKEND_CUDA, bf16);
        const smj_backend *be = ctx->backend;
        if (bf16) gelu_epilogue_formula(ctx);
        int took = 0, declined_ok = 1;
        double worst = 0;
        for (size_t s = 0; s < sizeof S / sizeof S[0]; s++)
            for (int t = 0; t < 8; t++) {
                int64_t M = S[s][0], N = S[s][1], K = S[s][2], nc = M * N;
                int tA = t & 1, tB = (t >> 1) & 1, pr = t >> 2; /* pr: outputs promised bf16 */
                float *h = malloc(sizeof(float) * (size_t)(M * K + K * N + 3 * N + 6 * nc));
                float *A = h, *B = A + M * K, *b = B + K * N, *x = b + N, *ro = x + nc, *rp = ro + nc, *rc = rp + nc;
                float *go = rc + nc, *gp = go + nc, *rb = gp + nc, *gb = rb + N;
                for (int64_t i = 0; i < M * K + K * N + N; i++) h[i] = 2.0f * (float)smj_rng_uniform(&r) - 1.0f;
                for (int64_t i = 0; i < nc; i++) x[i] = bf16r(8.0f * (float)smj_rng_uniform(&r) - 4.0f);
                for (int64_t j = 0; j < N; j++) rb[j] = 0.5f;
                smj_backend_ref.matmul_bias_gelu(&X1, ro, rp, A, B, b, M, N, K, tA, tB);
                smj_backend_ref.matmul_dgelu(&X1, rc, rb, A, B, x, M, N, K, tA, tB);
                float *dA = dev_of(be, A, M * K), *dB = dev_of(be, B, K * N), *db = dev_of(be, b, N);
                float *dx = dev_of(be, x, nc), *dO = be->alloc(sizeof(float) * (size_t)nc),
                      *dP = be->alloc(sizeof(float) * (size_t)nc);
                uint16_t *d16 = be->alloc(sizeof(uint16_t) * (size_t)nc);
                be->zero(dO, sizeof(float) * (size_t)nc);
                be->zero(dP, sizeof(float) * (size_t)nc);
                /* the forward; with pr, first with only out promised (declined) */
                if (pr && bf16) {
                    be->bf16_only(&ctx->exec, dO, nc);
                    CHECK(be->matmul_bias_gelu(&ctx->exec, dO, dP, dA, dB, db, M, N, K, tA, tB) == 0,
                          "matmul_bias_gelu with one output promised is declined");
                    be->bf16_only(&ctx->exec, dO, nc);
                    be->bf16_only(&ctx->exec, dP, nc);
                }
                int ok = be->matmul_bias_gelu(&ctx->exec, dO, dP, dA, dB, db, M, N, K, tA, tB);
                if (!ok) be->bf16_drop(&ctx->exec, NULL, 0);
                values_of(ctx, go, dO, nc);
                values_of(ctx, gp, dP, nc);
                double mx = 1e-6, e = 0;
                for (int64_t i = 0; i < nc; i++) mx = fmax(mx, fabs(rp[i]));
                if (ok) {
                    for (int64_t i = 0; i < nc; i++)
                        e = fmax(e, fmax(fabs((double)gp[i] - rp[i]), fabs((double)go[i] - ro[i])) / mx);
                    took++;
                    worst = fmax(worst, e);
                    CHECK(e <= 4.0 / 256, "matmul_bias_gelu M%lld N%lld K%lld tA%d tB%d: normalized error %.3g",
                          (long long)M, (long long)N, (long long)K, tA, tB, e);
                } else {
                    for (int64_t i = 0; i < nc; i++) declined_ok &= go[i] == 0.0f && gp[i] == 0.0f;
                }
                /* the backward (db from 0.5): a promised C reads x in bf16,
                 * from its exact copy (bf16_unpack; tA 0) or fp32 / cast
                 * (tA 1; x holds bf16 values) */
                be->zero(dO, sizeof(float) * (size_t)nc);
                for (int64_t j = 0; j < N; j++) gb[j] = 0.5f;
                be->upload(db, gb, sizeof(float) * (size_t)N);
                if (pr && bf16) {
                    if (!tA) {
                        be->bf16_pack(&ctx->exec, d16, dx, nc);
                        be->bf16_unpack(&ctx->exec, dx, d16, nc);
                    }
                    be->bf16_only(&ctx->exec, dO, nc);
                }
                ok = be->matmul_dgelu(&ctx->exec, dO, db, dA, dB, dx, M, N, K, tA, tB);
                if (!ok) be->bf16_drop(&ctx->exec, NULL, 0);
                values_of(ctx, go, dO, nc);
                be->download(gb, db, sizeof(float) * (size_t)N);
                mx = 1e-6;
                e = 0;
                for (int64_t i = 0; i < nc; i++) mx = fmax(mx, fabs(rc[i]));
                if (ok) {
                    for (int64_t i = 0; i < nc; i++) e = fmax(e, fabs((double)go[i] - rc[i]) / mx);
                    for (int64_t j = 0; j < N; j++) {
                        double sa = 0;
                        for (int64_t i = 0; i < M; i++) sa += fabs(rc[i * N + j]);
                        CHECK(fabs((double)gb[j] - rb[j]) <= 4.0 / 256 * sa + 1e-5,
                              "matmul_dgelu M%lld N%lld K%lld: db[%lld] %.6g, reference %.6g", (long long)M,
                              (long long)N, (long long)K, (long long)j, (double)gb[j], (double)rb[j]);
                    }
                    took++;
                    worst = fmax(worst, e);
                    CHECK(e <= 4.0 / 256, "matmul_dgelu M%lld N%lld K%lld tA%d tB%d%s: normalized error %.3g",
                          (long long)M, (long long)N, (long long)K, tA, tB, pr ? " (bf16)" : "", e);
                } else {
                    for (int64_t i = 0; i < nc; i++) declined_ok &= go[i] == 0.0f;
                    for (int64_t j = 0; j < N; j++) declined_ok &= gb[j] == 0.5f;
                }
                be->free(dA); be->free(dB); be->free(db); be->free(dx); be->free(dO); be->free(dP); be->free(d16);
                free(h);
            }
        CHECK(smj_ctx_status(ctx) == SMJ_OK, "GELU epilogues: device error: %s", smj_ctx_error(ctx));
        CHECK(declined_ok, "GELU epilogues: a declined product left its outputs untouched");
        /* bf16 mode takes every shape but M = 8 (under 16 rows) and N = 60
         * (not a multiple of 8): the forward promised (3 shapes x 4), the
         * backward both ways (3 x 8); fp32 mode none */
        CHECK(took == (bf16 ? 36 : 0), "GELU epilogues (%s): took %d of 80 products", bf16 ? "bf16" : "fp32", took);
        printf("matmul_bias_gelu + matmul_dgelu (cuBLASLt GELU epilogues), %s: %d of 80 products taken, worst "
               "normalized error %.3g\n",
               bf16 ? "bf16" : "fp32", took, worst);
        smj_ctx_free(ctx);
    }
}

int main(void) {
    smj_ctx *probe = make_ctx(SMJ_BACKEND_CUDA);
    if (!probe || smj_ctx_status(probe) != SMJ_OK) {
        const char *req = getenv("SMJ_CUDA_REQUIRE");
        printf("SKIP: no CUDA backend: %s\n", probe ? smj_ctx_error(probe) : "out of memory");
        smj_ctx_free(probe);
        return req && *req == '1' ? 1 : 0;
    }
    /* random training data: 4 x 32 windows, 8 batches */
    char ds_path[1024];
    snprintf(ds_path, sizeof ds_path, "%s/train.tok", test_tmpdir());
    int64_t n = 4 * 32 * 8 + 1;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    smj_rng r;
    smj_rng_seed(&r, 3);
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)(smj_rng_u64(&r) % 300);
    CHECK_OK(probe, smj_dataset_write(probe, ds_path, tok, n, 300));
    free(tok);
    smj_ctx_free(probe);
    matmul_bias_products();
    gelu_products();
    cross_backend(ds_path);
    kv_decoding(small_config(), "QK-norm (decode ops one by one)", 0);
    kv_decoding(flash_config(), "plain block (decode_block)", 0);
    kv_decoding(flash_config(), "plain block (SMJ_CUDA_DECODE_BLOCK=0: decode ops one by one)", 1);
    kv_decoding(gpt2_config(), "GPT-2 (decode_block on its transposed f32 copy)", 0);
    kv_decoding(gpt2_config(), "GPT-2 (SMJ_CUDA_DECODE_BLOCK=0: decode ops one by one)", 1);
    smj_train_options f16 = {.fp16_activations = 1};
    bf16_copies(ds_path, "head size 64 + GQA (flash)", flash_config(), NULL);
    bf16_copies(ds_path, "head size 64 + GQA, --fp16-activations (unpacked copies)", flash_config(), &f16);
    bf16_copies(ds_path, "QK-norm, head size 16", small_config(), NULL);
    bf16_copies(ds_path, "QK-norm, --fp16-activations", small_config(), &f16);
    bf16_copies(ds_path, "vocab 1.1M (LM head backward in blocks of rows)", big_vocab_config(), NULL);
    bf16_copies(ds_path, "vocab 1.1M, --fp16-activations (16-bit logits, blocks of 64 rows)", big_vocab_config(),
                &f16);
    bf16_copies(ds_path, "GPT-2 (layernorm and gelu write their outputs' copies)", gpt2_config(), NULL);
    bf16_copies(ds_path, "GPT-2, --fp16-activations", gpt2_config(), &f16);
    bf16_copies(ds_path, "GPT-2, head size 64 (flash attention with the bias gradient)", gpt2_flash_config(), NULL);
    bf16_copies(ds_path, "GPT-2, head size 64, --fp16-activations", gpt2_flash_config(), &f16);
    smj_train_options l16 = {.fp16_activations = 1, .ce_chunk_rows = 32};
    bf16_copies(ds_path, "head size 64 + GQA, --fp16-activations, 16-bit logits in blocks of 32 rows",
                flash_config(), &l16);
    smj_train_options fce = {.fp16_activations = 1, .fused_ce = 1, .ce_chunk_rows = 32};
    bf16_copies(ds_path, "head size 64 + GQA, --fp16-activations --fused-ce (bf16 chunk logits, 32 rows)",
                flash_config(), &fce);
    bf16_copies(ds_path, "GPT-2, --fp16-activations --fused-ce (bf16 chunk logits, 32 rows)", gpt2_config(), &fce);
    tight_chunks(ds_path);
    step_graphs(ds_path, "QK-norm, fp32", small_config(), 0, NULL);
    step_graphs(ds_path, "head size 64 + GQA, bf16", flash_config(), 1, NULL);
    step_graphs(ds_path, "head size 64 + GQA, bf16 --fp16-activations --fused-ce (32 rows)", flash_config(), 1, &fce);
    step_graphs(ds_path, "vocab 1.1M, bf16 --fp16-activations", big_vocab_config(), 1, &f16);
    step_graphs(ds_path, "GPT-2, bf16 --fp16-activations --fused-ce", gpt2_config(), 1, &fce);
    weights_copy(ds_path);
    decode_graphs(small_config(), "QK-norm (decode ops one by one)");
    decode_graphs(flash_config(), "plain block (decode_block)");
    decode_graphs(gpt2_config(), "GPT-2 (decode_block)");
    decode_bf16_weights(flash_config(), "plain block (decode_block in both modes)");
    decode_bf16_weights(gpt2_config(), "GPT-2 (decode_block on its transposed bf16 and f32 copies)");
    greedy_on_device();
    gguf_on_device();
    files_from_device();
    return check_summary("test_cuda_model");
}
