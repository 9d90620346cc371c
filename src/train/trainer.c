/* trainer.c — AdamW training steps, evaluation, and the training state.
 *
 * One step: zero grads; for each of grad_accum micro-batches, forward and
 * backward with dL scaled by 1/grad_accum (so the update equals one batch
 * grad_accum times larger); global gradient norm in double; if the loss or
 * the norm is non-finite the step is skipped (weights and moments untouched,
 * counted; too many in a row is SMJ_ERR_DIVERGED); else clip to grad_clip
 * (torch's rule: scale by clip / (norm + 1e-6) when that is < 1) and apply
 * AdamW tensor by tensor, with weight decay only on tensors the model table
 * marks (2-D ones).
 *
 * Two paths to the same numbers:
 *  - host: the host reads the loss and the norm, decides, then queues the
 *    update (host backends; grad accumulation);
 *  - device (a backend with grad_ctl, one micro-batch): the batch is staged
 *    (checked, uploaded) first, then forward, backward, the norm and the
 *    decision (grad_ctl, into a control block) and the update reading it
 *    are queued back to back, and the host reads the block (the loss's sum
 *    in it) after. With graph hooks that whole sequence is recorded once it has
 *    run twice alike (graph_trace) and replayed each step after: one launch
 *    instead of ~500, and no host round trip inside the step.
 *
 * Everything that decides the next step — weights, moments, step count,
 * AdamW's own step count, data cursor, RNG, bad-step counters — is saved by
 * smj_trainer_save, so a resumed run continues bit-identically (for the same
 * thread count: a few reductions split work by thread).
 */
#include <math.h>
#include <string.h>
#include "../io/checkpoint.h"
#include "../model/model.h"

struct smj_trainer {
    smj_model *m;
    smj_optim_options o;
    float *adam_m, *adam_v;    /* [n_params] each, on the backend */
    int64_t step, adam_t;      /* steps taken; updates applied */
    int64_t data_pos, epoch;   /* training data cursor */
    smj_rng rng;
    int64_t bad_consec, bad_total;
    int poison;
    int32_t *inputs, *targets; /* [B*T] host batch */
    int64_t batch_cap;
    /* AdamW's runs: adjacent tensors with the same decay (make_runs) */
    int64_t *run_off, *run_len;
    unsigned char *run_dec;
    int nr;
    /* the device path (see the top) */
    smj_step_ctl *ctl;         /* on the backend */
    int runs_declined;         /* the backend's adamw_runs declined the runs: per-run updates after */
    void *graph;               /* the recorded step, for graph_B x graph_T with graph_valid targets */
    int graph_B, graph_T, graph_fails;
    int64_t graph_valid;
    uint64_t trace[2];         /* the last two plain steps' launch hashes (n_trace of them) */
    int n_trace;
    int64_t graph_steps;       /* steps run as the recorded graph */
    /* the next step's batch, drawn and staged while a step's work runs
     * (device path): in inputs/targets, pre_B x pre_T from pre_ds; the
     * cursor before it was drawn is what a save records */
    int pre, pre_B, pre_T;
    uint64_t pre_ds; /* the dataset's serial */
    int64_t pre_pos, pre_epoch;
};

/* The drawn next batch is given back (the cursor rewound). */
static void drop_pre(smj_trainer *t) {
    if (!t->pre) return;
    t->pre = 0;
    t->data_pos = t->pre_pos;
    t->epoch = t->pre_epoch;
}

/* The recorded step dropped, and the launch hashes that led to it: the
 * next step records again once two plain steps hash alike. */
static void drop_graph(smj_trainer *t) {
    if (t->graph) t->m->be->graph_free(t->graph);
    t->graph = NULL;
    t->n_trace = 0;
}

/* AdamW's runs: one per run of adjacent tensors with the same decay (the
 * element-wise update does not care where a tensor ends): ~4 per layer
 * instead of one per tensor. */
static void make_runs(smj_trainer *t) {
    const smj_model *m = t->m;
    t->nr = 0;
    for (int i = 0, j; i < m->n_tensors; i = j) {
        const smj_tensor_spec *sp = &m->specs[i];
        int64_t o = sp->offset, n = sp->numel;
        for (j = i + 1; j < m->n_tensors && m->specs[j].decay == sp->decay && m->specs[j].offset == o + n; j++)
            n += m->specs[j].numel;
        t->run_off[t->nr] = o, t->run_len[t->nr] = n, t->run_dec[t->nr] = (unsigned char)(sp->decay != 0);
        t->nr++;
    }
}

smj_status smj_trainer_create(smj_model *m, const smj_optim_options *o, smj_trainer **out) {
    *out = NULL;
    smj_ctx *ctx = m->ctx;
    SMJ_CHECK(ctx, o->lr >= 0 && isfinite(o->lr), SMJ_ERR_INVALID, "learning rate must be >= 0");
    SMJ_CHECK(ctx, o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1, SMJ_ERR_INVALID,
              "AdamW betas must be in [0, 1)");
    SMJ_CHECK(ctx, o->warmup_steps >= 0 && o->total_steps >= 0, SMJ_ERR_INVALID, "steps must be >= 0");
    SMJ_CHECK(ctx, o->grad_clip >= 0 && o->weight_decay >= 0, SMJ_ERR_INVALID,
              "grad clip and weight decay must be >= 0");
    smj_trainer *t = calloc(1, sizeof *t);
    if (!t) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory");
    t->m = m;
    t->o = *o;
    if (t->o.max_bad_steps < 1) t->o.max_bad_steps = 1;
    size_t bytes = sizeof(float) * (size_t)m->n_params;
    t->adam_m = m->be->alloc(bytes);
    t->adam_v = m->be->alloc(bytes);
    if (m->be->grad_ctl) t->ctl = m->be->alloc(sizeof *t->ctl);
    size_t nt = (size_t)(m->n_tensors > 0 ? m->n_tensors : 1);
    t->run_off = malloc(nt * sizeof *t->run_off);
    t->run_len = malloc(nt * sizeof *t->run_len);
    t->run_dec = malloc(nt);
    smj_status st = smj_model_ensure_grads(m);
    if (!st && (!t->adam_m || !t->adam_v || (m->be->grad_ctl && !t->ctl) || !t->run_off || !t->run_len || !t->run_dec))
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory for the optimizer state");
    if (st) { smj_trainer_free(t); return st; }
    make_runs(t);
    smj_rng_seed(&t->rng, 0x5eedull);
    *out = t;
    return SMJ_OK;
}

void smj_trainer_free(smj_trainer *t) {
    if (!t) return;
    drop_graph(t);
    t->m->be->free(t->adam_m);
    t->m->be->free(t->adam_v);
    t->m->be->free(t->ctl);
    free(t->run_off);
    free(t->run_len);
    free(t->run_dec);
    free(t->inputs);
    free(t->targets);
    free(t);
}

int64_t smj_trainer_step_count(const smj_trainer *t) { return t->step; }
int64_t smj_trainer_graph_steps(const smj_trainer *t) { return t->graph_steps; }
void smj_trainer_debug_poison_next(smj_trainer *t) { t->poison = 1; }

static smj_status ensure_batch(smj_trainer *t, int B, int T) {
    int64_t n = (int64_t)B * T;
    if (n <= t->batch_cap) return SMJ_OK;
    free(t->inputs);
    free(t->targets);
    t->inputs = malloc(sizeof(int32_t) * (size_t)n);
    t->targets = malloc(sizeof(int32_t) * (size_t)n);
    t->batch_cap = t->inputs && t->targets ? n : 0;
    if (!t->batch_cap) SMJ_FAIL(t->m->ctx, SMJ_ERR_NOMEM, "out of memory for a %d x %d batch", B, T);
    return SMJ_OK;
}

/* AdamW over the runs with the gradients times gs (the clipping
 * coefficient), or with the control block's decision (ctl): in one call
 * where the backend takes them (adamw_runs; 1), else (0) nothing done
 * with a control block, one adamw per run without. */
static int update(smj_trainer *t, float lr, float gs, const smj_step_ctl *ctl) {
    smj_model *m = t->m;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    const float b1 = t->o.beta1, b2 = t->o.beta2, eps = t->o.eps, wd = t->o.weight_decay;
    const int64_t *off = t->run_off, *len = t->run_len;
    if (be->adamw_runs && be->adamw_runs(ex, m->params, t->adam_m, t->adam_v, m->grads, gs, ctl, off, len, t->run_dec,
                                         t->nr, lr, b1, b2, eps, wd, t->adam_t + 1))
        return 1;
    if (ctl) return 0;
    for (int r = 0; r < t->nr; r++)
        be->adamw(ex, m->params + off[r], t->adam_m + off[r], t->adam_v + off[r], m->grads + off[r], gs, len[r], lr,
                  b1, b2, eps, t->run_dec[r] ? wd : 0.0f, t->adam_t + 1);
    return 1;
}

/* The debug poison (smj_trainer_debug_poison_next): a NaN gradient. */
static void poison_grads(smj_trainer *t) {
    if (!t->poison) return;
    float nan = NAN;
    t->m->be->upload(t->m->grads, &nan, sizeof nan);
    t->poison = 0;
}

/* The step's outcome: counters and stats (shared by both paths). */
static smj_status step_done(smj_trainer *t, float loss, double norm, float lr, int skip, smj_step_stats *stats) {
    t->step++;
    smj_step_stats s = {loss, (float)norm, lr, 0, t->step, t->bad_total};
    if (skip) {
        t->bad_consec++;
        t->bad_total++;
        s.skipped = 1;
        s.bad_steps_total = t->bad_total;
        if (stats) *stats = s;
        if (t->bad_consec >= t->o.max_bad_steps)
            SMJ_FAIL(t->m->ctx, SMJ_ERR_DIVERGED,
                     "%lld consecutive steps had a non-finite loss or gradient (last at step %lld); "
                     "try a lower --lr, a longer --warmup, a smaller --grad-clip, or check the data",
                     (long long)t->bad_consec, (long long)t->step);
        return SMJ_OK;
    }
    t->bad_consec = 0;
    t->adam_t++;
    if (stats) *stats = s;
    return SMJ_OK;
}

static smj_status step_host(smj_trainer *t, const smj_dataset *ds, int B, int T, int grad_accum,
                            smj_step_stats *stats) {
    smj_model *m = t->m;
    const smj_backend *be = m->be;
    double loss_sum = 0;
    for (int a = 0; a < grad_accum; a++) {
        float loss;
        SMJ_TRY(smj_dataset_next_batch(m->ctx, ds, B, T, &t->data_pos, &t->epoch, t->inputs, t->targets));
        SMJ_TRY(smj_model_forward_backward(m, t->inputs, t->targets, B, T, 1.0f / (float)grad_accum, &loss));
        loss_sum += loss;
    }
    poison_grads(t);
    float loss = (float)(loss_sum / grad_accum);
    double norm = sqrt(be->sumsq(&m->ctx->exec, m->grads, m->n_params));
    float lr = smj_lr_at(&t->o, t->step);
    int skip = t->o.skip_nonfinite && (!isfinite(loss) || !isfinite(norm));
    float gs = 1.0f; /* the clipping coefficient, applied inside the update (no pass over the gradients) */
    if (t->o.grad_clip > 0 && norm > t->o.grad_clip) {
        float coef = (float)(t->o.grad_clip / (norm + 1e-6));
        if (coef < 1.0f) gs = coef;
    }
    if (!skip) update(t, lr, gs, NULL);
    return step_done(t, loss, norm, lr, skip, stats);
}

/* The device path's work after the batch is staged: forward, backward,
 * the decision, the update (recorded as a graph, or run). */
static smj_status device_work(smj_trainer *t, int B, int T) {
    smj_model *m = t->m;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    SMJ_TRY(smj_model_forward_backward(m, t->inputs, t->targets, B, T, 1.0f, NULL));
    poison_grads(t);
    be->grad_ctl(ex, t->ctl, m->grads, m->n_params, m->losses, (int64_t)B * T, t->o.grad_clip, t->o.skip_nonfinite);
    t->runs_declined = !update(t, 0.0f, 1.0f, t->ctl);
    return SMJ_OK;
}

static smj_status step_device(smj_trainer *t, const smj_dataset *ds, int B, int T, smj_step_stats *stats) {
    smj_model *m = t->m;
    const smj_backend *be = m->be;
    const smj_exec *ex = &m->ctx->exec;
    if (t->pre && t->pre_B == B && t->pre_T == T && t->pre_ds == smj_dataset_serial(ds)) {
        t->pre = 0; /* (drawn during the step before; staged again if the model's buffers were used since) */
        if (!m->staged) SMJ_TRY(smj_model_stage_batch(m, t->inputs, t->targets, B, T));
    } else {
        drop_pre(t);
        SMJ_TRY(smj_dataset_next_batch(m->ctx, ds, B, T, &t->data_pos, &t->epoch, t->inputs, t->targets));
        SMJ_TRY(smj_model_stage_batch(m, t->inputs, t->targets, B, T));
    }
    const int64_t valid = m->staged_valid;
    const float lr = smj_lr_at(&t->o, t->step);
    smj_step_ctl hc;
    smj_step_ctl_set(&hc, lr, t->o.beta1, t->o.beta2, t->adam_t + 1);
    be->upload(t->ctl, &hc, sizeof hc);
    /* graphs: not for a step with a debug poison, nor where the backend
     * declined the runs (the update would be missing from the recording) */
    const int graphs = be->graph_begin && be->graph_trace && !t->poison && !t->runs_declined;
    int ran = 0;
    if (t->graph) {
        if (graphs && B == t->graph_B && T == t->graph_T && valid == t->graph_valid && be->graph_launch(ex, t->graph)) {
            m->staged = 0; /* (the recorded forward's) */
            ran = 1;
        } else {
            drop_graph(t);
        }
    }
    if (!ran && graphs && t->n_trace == 2 && t->trace[0] == t->trace[1] && t->graph_fails < 3 &&
        be->graph_begin(ex, &t->trace[1])) {
        smj_status st = device_work(t, B, T);
        void *g = be->graph_end(ex);
        if (st != SMJ_OK) {
            if (g) be->graph_free(g);
            return st;
        }
        if (g && be->graph_launch(ex, g)) {
            t->graph = g;
            t->graph_B = B, t->graph_T = T, t->graph_valid = valid;
            ran = 1;
        } else { /* nothing ran, the backend's bookkeeping is back: run the step */
            if (g) be->graph_free(g);
            t->graph_fails++;
            t->n_trace = 0;
            m->staged = 1; /* (the batch is still uploaded) */
        }
    }
    t->graph_steps += ran;
    if (!ran) {
        if (graphs) be->graph_trace(ex); /* (a new hash from here) */
        SMJ_TRY(device_work(t, B, T));
        if (graphs) {
            t->trace[0] = t->trace[1];
            t->trace[1] = be->graph_trace(ex);
            t->n_trace += t->n_trace < 2;
        }
    }
    /* the next batch, drawn and staged (its uploads queued behind this
     * step) while the device works: host time the GPU does not wait for
     * between steps. On any trouble it is drawn again at the next step,
     * which then reports it. */
    t->pre_pos = t->data_pos, t->pre_epoch = t->epoch;
    if (smj_dataset_next_batch(m->ctx, ds, B, T, &t->data_pos, &t->epoch, t->inputs, t->targets) == SMJ_OK &&
        smj_model_stage_batch(m, t->inputs, t->targets, B, T) == SMJ_OK) {
        t->pre = 1;
        t->pre_B = B, t->pre_T = T, t->pre_ds = smj_dataset_serial(ds);
    } else {
        t->data_pos = t->pre_pos, t->epoch = t->pre_epoch;
        m->staged = 0;
    }
    smj_step_ctl out;
    be->download(&out, t->ctl, sizeof out);
    const float loss = valid ? (float)(out.loss_sum / (double)valid) : 0.0f; /* (as the model's read_loss) */
    if (t->runs_declined && !out.skip) update(t, lr, out.gs, NULL);
    return step_done(t, loss, sqrt(out.sumsq), lr, out.skip != 0, stats);
}

smj_status smj_trainer_step(smj_trainer *t, const smj_dataset *ds, int B, int T, int grad_accum,
                            smj_step_stats *stats) {
    smj_model *m = t->m;
    smj_ctx *ctx = m->ctx;
    SMJ_CHECK(ctx, grad_accum >= 1, SMJ_ERR_INVALID, "grad accumulation must be >= 1");
    SMJ_CHECK(ctx, smj_dataset_vocab_size(ds) <= m->cfg.vocab_size, SMJ_ERR_INVALID,
              "the dataset's vocabulary (%d) is larger than the model's (%d)", smj_dataset_vocab_size(ds),
              m->cfg.vocab_size);
    SMJ_TRY(ensure_batch(t, B, T));
    SMJ_TRY(smj_model_zero_grad(m));
    if (t->ctl && grad_accum == 1) return step_device(t, ds, B, T, stats);
    drop_pre(t);
    return step_host(t, ds, B, T, grad_accum, stats);
}

smj_status smj_trainer_eval(smj_trainer *t, const smj_dataset *ds, int B, int T, int n_batches, float *loss) {
    SMJ_CHECK(t->m->ctx, n_batches >= 1, SMJ_ERR_INVALID, "need at least one evaluation batch");
    drop_pre(t); /* (its batch buffers are taken) */
    SMJ_TRY(ensure_batch(t, B, T));
    int64_t pos = 0, epoch = 0;
    double sum = 0;
    int n = 0;
    for (; n < n_batches; n++) {
        float l;
        SMJ_TRY(smj_dataset_next_batch(t->m->ctx, ds, B, T, &pos, &epoch, t->inputs, t->targets));
        if (epoch > 0 && n > 0) break; /* the whole set was seen; don't count windows twice */
        SMJ_TRY(smj_model_forward(t->m, t->inputs, t->targets, B, T, &l));
        sum += l;
    }
    *loss = (float)(sum / n);
    return SMJ_OK;
}

/* ------------------------------------------------------- training state */

smj_status smj_trainer_save(smj_trainer *t, const char *path, const smj_trainer_extra *x) {
    smj_model *m = t->m;
    smj_trainer_extra none = {0};
    if (!x) x = &none;
    char meta[2048];
    snprintf(meta, sizeof meta,
             "step=%lld\nadam_t=%lld\ndata_pos=%lld\nepoch=%lld\nrng=%llu,%llu,%llu,%llu\nbad_consec=%lld\n"
             "bad_total=%lld\nbest_val_loss=%a\npatience_left=%lld\nuser=%lld,%lld,%lld,%lld,%lld,%lld\n"
             "lr=%a\nschedule=%d\ntotal_steps=%d\nwarmup_steps=%d\n",
             (long long)t->step, (long long)t->adam_t, (long long)(t->pre ? t->pre_pos : t->data_pos),
             (long long)(t->pre ? t->pre_epoch : t->epoch),
             (unsigned long long)t->rng.s[0], (unsigned long long)t->rng.s[1], (unsigned long long)t->rng.s[2],
             (unsigned long long)t->rng.s[3], (long long)t->bad_consec, (long long)t->bad_total,
             x->best_val_loss, (long long)x->patience_left, (long long)x->user[0], (long long)x->user[1],
             (long long)x->user[2], (long long)x->user[3], (long long)x->user[4], (long long)x->user[5],
             (double)t->o.lr, (int)t->o.schedule, t->o.total_steps, t->o.warmup_steps);
    size_t bytes = sizeof(float) * (size_t)m->n_params;
    float *hm = malloc(bytes), *hv = malloc(bytes);
    if (!hm || !hv) { free(hm); free(hv); SMJ_FAIL(m->ctx, SMJ_ERR_NOMEM, "%s: out of memory", path); }
    m->be->download(hm, t->adam_m, bytes);
    m->be->download(hv, t->adam_v, bytes);
    smj_ct_entry e[2] = {{.name = "optimizer.adam_m", .dtype = SMJ_DT_F32, .ndim = 1, .shape = {m->n_params}, .data = hm},
                         {.name = "optimizer.adam_v", .dtype = SMJ_DT_F32, .ndim = 1, .shape = {m->n_params}, .data = hv}};
    smj_status st = smj_model_write_container(m, path, SMJ_CT_TRAIN_STATE, meta, e, 2);
    free(hm);
    free(hv);
    return st;
}

static smj_status meta_i64(smj_ctx *ctx, const char *path, const smj_container *c, const char *k, int n, int64_t *out) {
    char v[512];
    if (!smj_container_meta(c, k, v, sizeof v)) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: training state has no '%s'", path, k);
    char *p = v;
    for (int i = 0; i < n; i++) {
        char *e;
        out[i] = (int64_t)strtoull(p, &e, 10);
        if (e == p || (i < n - 1 && *e != ',') || (i == n - 1 && *e)) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: bad '%s' value '%s'", path, k, v);
        p = e + 1;
    }
    return SMJ_OK;
}

/* One AdamW moment from a training state into dst [n_params]: as saved, or,
 * from a state written before the LM head's rows were padded (the tensors
 * back to back, numel floats each), tensor by tensor into this layout (the
 * padding stays 0: the buffer comes zeroed and the padding never moves). */
static void upload_moment(smj_model *m, float *dst, const smj_ct_entry *e) {
    if (e->nbytes == sizeof(float) * (uint64_t)m->n_params) {
        m->be->upload(dst, e->data, e->nbytes);
        return;
    }
    const float *src = e->data;
    for (int i = 0; i < m->n_tensors; i++) {
        const smj_tensor_spec *sp = &m->specs[i];
        m->be->upload(dst + sp->offset, src, sizeof(float) * (size_t)sp->numel);
        src += sp->numel;
    }
}

smj_status smj_trainer_load(smj_trainer *t, const char *path, smj_trainer_extra *x) {
    smj_model *m = t->m;
    drop_graph(t); /* (recorded before the state changed: record again) */
    t->pre = 0; /* (the cursor comes from the file) */
    smj_ctx *ctx = m->ctx;
    smj_container c;
    SMJ_TRY(smj_container_read(ctx, path, &c));
    smj_status st = SMJ_OK;
    smj_model_config cfg;
    int64_t v[6], rng[4];
    char buf[64];
    const smj_ct_entry *em = smj_container_find(&c, "optimizer.adam_m"), *ev = smj_container_find(&c, "optimizer.adam_v");
#define STEP(expr) do { if (!st) st = (expr); } while (0)
    if (c.kind != SMJ_CT_TRAIN_STATE)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: a model checkpoint, not a training state (resume needs state.bin)", path);
    STEP(smj_config_from_container(ctx, path, &c, &cfg));
    if (!st && memcmp(&cfg, &m->cfg, sizeof cfg) != 0)
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: the saved model config differs from this model's", path);
    /* (moments of the unpadded layout, numel floats a tensor, load too) */
    uint64_t full = sizeof(float) * (uint64_t)m->n_params, dense = sizeof(float) * (uint64_t)smj_model_num_params(m);
    if (!st && (!em || !ev || (em->nbytes != full && em->nbytes != dense) || ev->nbytes != em->nbytes))
        st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: optimizer moments missing or of the wrong size", path);
    STEP(smj_model_read_weights(m, path, &c));
    STEP(meta_i64(ctx, path, &c, "step", 1, &t->step));
    STEP(meta_i64(ctx, path, &c, "adam_t", 1, &t->adam_t));
    STEP(meta_i64(ctx, path, &c, "data_pos", 1, &t->data_pos));
    STEP(meta_i64(ctx, path, &c, "epoch", 1, &t->epoch));
    STEP(meta_i64(ctx, path, &c, "bad_consec", 1, &t->bad_consec));
    STEP(meta_i64(ctx, path, &c, "bad_total", 1, &t->bad_total));
    STEP(meta_i64(ctx, path, &c, "rng", 4, rng));
    if (x) {
        memset(x, 0, sizeof *x);
        STEP(meta_i64(ctx, path, &c, "patience_left", 1, &x->patience_left));
        STEP(meta_i64(ctx, path, &c, "user", 6, v));
        if (!st) {
            memcpy(x->user, v, sizeof v);
            if (!smj_container_meta(&c, "best_val_loss", buf, sizeof buf))
                st = smj_set_error(ctx, SMJ_ERR_FORMAT, "%s: training state has no 'best_val_loss'", path);
            else
                x->best_val_loss = strtod(buf, NULL);
        }
    }
#undef STEP
    if (!st) {
        upload_moment(m, t->adam_m, em);
        upload_moment(m, t->adam_v, ev);
        for (int i = 0; i < 4; i++) t->rng.s[i] = (uint64_t)rng[i];
    }
    smj_container_free(&c);
    return st;
}
