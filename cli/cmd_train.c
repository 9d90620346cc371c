/* cmd_train.c — `smedjan train`: the training loop around smj_trainer.
 *
 * What a run does, in order:
 *  1. opens the tokenizer and dataset(s) and checks that the dataset's
 *     vocabulary fits the tokenizer's;
 *  2. builds the model config (preset/custom flags, see model_flags.c) or,
 *     with --resume, reads it from the training state;
 *  3. creates model + trainer (and with --resume restores weights, AdamW
 *     moments, step, data cursor, RNG and the smj_trainer_extra below);
 *  4. steps until --steps in total, logging to stderr and metrics.csv;
 *     every --val-interval steps evaluates on --val-dataset (from its start,
 *     never touching the training cursor) with early stopping; every
 *     --checkpoint-interval steps and at the end saves
 *        <dir>/state.bin   training state, for --resume
 *        <dir>/model.ckpt  weights + config, for generate/perplexity/info
 *        <dir>/best.ckpt   weights at the best validation loss so far.
 * Determinism: nothing in this loop draws randomness or moves the data
 * cursor, so a run resumed from step k reproduces the losses of an
 * uninterrupted run exactly, given the same flags. The flags that matter
 * (batch, seq-len, accumulation, steps, lr) are kept in extra.user and a
 * resume with different values gets a warning.
 *
 * Ctrl-C (SIGINT, or SIGTERM from a job scheduler) finishes the current
 * step, saves the state and exits 128 + the signal (130 for Ctrl-C); a second
 * Ctrl-C kills at once (the library's writes are atomic, so the previous
 * checkpoint survives). A diverged run (SMJ_ERR_DIVERGED) stops with the
 * library's advice and saves nothing new.
 */
#include <math.h>
#include <signal.h>
#include <string.h>
#include "cli.h"
#include "train_log.h"

static volatile sig_atomic_t g_interrupted; /* the signal number, 0 = none */

static void on_signal(int sig) { g_interrupted = sig; }

/* What extra.user[] slots hold, to detect a resume with changed flags. */
enum { U_BATCH, U_SEQ, U_ACCUM, U_STEPS, U_LR_BITS, U_SCHED, U_COUNT };

typedef struct {
    const char *dataset, *tokenizer, *val_dataset, *dir, *resume, *schedule, *init;
    int B, T, steps, warmup, accum, ckpt_interval, val_interval, val_batches, patience;
    int log_interval, no_skip, max_bad_steps, stop_at;
    float lr, min_lr_ratio, wd, clip, wsd_frac;
    int64_t seed;
    cli_model_flags mf;
    cli_mem_flags mm;
    cli_compute cc;
} train_args;

typedef struct {
    smj_ctx *ctx;
    smj_tokenizer *tok;
    smj_dataset *ds, *val;
    smj_model *m;
    smj_trainer *t;
    FILE *metrics;
    smj_trainer_extra extra;
    char state_path[4096], model_path[4096], best_path[4096], metrics_path[4096];
} train_run;

static int parse_schedule(const char *s, smj_schedule *out) {
    static const char *const names[] = {"cosine", "constant", "wsd", "linear"};
    static const smj_schedule vals[] = {SMJ_SCHED_COSINE, SMJ_SCHED_CONSTANT, SMJ_SCHED_WSD,
                                        SMJ_SCHED_LINEAR};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = vals[i];
            return 0;
        }
    return -1;
}

/* Opens a dataset and checks it against the vocabulary and context. */
static int open_dataset(const char *cmd, train_run *r, const char *path, const char *flag,
                        int vocab, int T, smj_dataset **out) {
    smj_status s = smj_dataset_open(r->ctx, path, out);
    if (s != SMJ_OK) {
        char what[160];
        snprintf(what, sizeof what, "cannot open %s", flag);
        return cli_lib_error(cmd, r->ctx, s, what);
    }
    if (smj_dataset_vocab_size(*out) > vocab)
        return cli_error(cmd,
                         "%s '%s' has token ids up to vocab %d but the tokenizer has only %d "
                         "(was it prepared with another tokenizer?)",
                         flag, path, smj_dataset_vocab_size(*out), vocab);
    int64_t n = smj_dataset_num_tokens(*out);
    if (n < (int64_t)T + 1)
        return cli_error(cmd, "%s '%s' has %lld tokens; --seq-len %d needs at least %d", flag,
                         path, (long long)n, T, T + 1);
    return 0;
}

/* Saves the training state and the model checkpoint. 0 or 1. */
static int save_all(const char *cmd, train_run *r) {
    smj_status s = smj_trainer_save(r->t, r->state_path, &r->extra);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot save the training state");
    s = smj_model_save(r->m, r->model_path);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot save the model");
    return 0;
}

/* Checks the resumed state's recorded flags against this run's. */
static void warn_changed_flags(const train_args *a, const smj_trainer_extra *e) {
    uint32_t lr_bits;
    memcpy(&lr_bits, &a->lr, sizeof lr_bits);
    smj_schedule sched = SMJ_SCHED_COSINE;
    parse_schedule(a->schedule, &sched);
    const int64_t now[U_COUNT] = {a->B, a->T, a->accum, a->steps, lr_bits, (int64_t)sched + 1};
    static const char *const names[U_COUNT] = {"--batch-size", "--seq-len", "--grad-accum",
                                               "--steps", "--lr", "--schedule"};
    for (int i = 0; i < U_COUNT; i++) {
        /* A constant schedule does not depend on the total step count. */
        if (i == U_STEPS && sched == SMJ_SCHED_CONSTANT) continue;
        if (e->user[i] != 0 && e->user[i] != now[i])
            fprintf(stderr,
                    "smedjan train: warning: %s differs from the run being resumed; the losses "
                    "will not match an uninterrupted run\n",
                    names[i]);
    }
}

/* Steps 1-3 of the design comment: everything up to the first step. */
static int setup(const char *cmd, const cli_command *c, train_args *a, train_run *r,
                 int64_t *start_step) {
    int rc;
    if ((rc = cli_make_ctx(cmd, &a->cc, &r->ctx))) return rc;
    smj_status s = smj_tokenizer_load(r->ctx, a->tokenizer, &r->tok);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot load --tokenizer");
    int vocab = smj_tokenizer_vocab_size(r->tok);
    if ((rc = open_dataset(cmd, r, a->dataset, "--dataset", vocab, a->T, &r->ds))) return rc;
    if (a->val_dataset &&
        (rc = open_dataset(cmd, r, a->val_dataset, "--val-dataset", vocab, a->T, &r->val)))
        return rc;

    snprintf(r->state_path, sizeof r->state_path, "%s/state.bin", a->dir);
    snprintf(r->model_path, sizeof r->model_path, "%s/model.ckpt", a->dir);
    snprintf(r->best_path, sizeof r->best_path, "%s/best.ckpt", a->dir);
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.csv", a->dir);

    const char *resume = NULL;
    if (a->resume) {
        resume = *a->resume && strcmp(a->resume, "auto") != 0 ? a->resume : r->state_path;
        if (strcmp(a->resume, "auto") == 0 && !cli_file_exists(resume)) {
            fprintf(stderr, "no %s yet: starting a new run\n", resume);
            resume = NULL;
        }
    }
    smj_model_config cfg;
    if (a->init && resume)
        return cli_usage(cmd, "--init starts a new run from a model's weights; it cannot be combined with --resume");
    if (a->init) {
        /* continued training: the shape and weights come from the checkpoint
         * (a smedjan .ckpt, e.g. from import-hf, or a training state) */
        s = smj_checkpoint_read_config(r->ctx, a->init, &cfg, NULL);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot read --init");
        if (cfg.vocab_size < vocab)
            return cli_error(cmd, "'%s' has vocab %d but --tokenizer has %d", a->init, cfg.vocab_size, vocab);
        if (a->T > cfg.max_seq_len)
            return cli_usage(cmd, "--seq-len %d exceeds the model's context %d", a->T, cfg.max_seq_len);
        if (cli_shape_flags_seen(c) || cli_seen(c, "size"))
            fprintf(stderr, "smedjan train: note: with --init the model shape comes from the "
                            "checkpoint; --size and shape flags are ignored\n");
    } else if (resume) {
        int is_state = 0;
        s = smj_checkpoint_read_config(r->ctx, resume, &cfg, &is_state);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot read --resume");
        if (!is_state)
            return cli_error(cmd, "'%s' is a model checkpoint, not a training state (use %s)",
                             resume, r->state_path);
        if (cfg.vocab_size != vocab)
            return cli_error(cmd, "'%s' has vocab %d but --tokenizer has %d", resume,
                             cfg.vocab_size, vocab);
        if (a->T > cfg.max_seq_len)
            return cli_usage(cmd, "--seq-len %d exceeds the resumed model's context %d", a->T,
                             cfg.max_seq_len);
        if (cli_shape_flags_seen(c) || cli_seen(c, "size"))
            fprintf(stderr, "smedjan train: note: with --resume the model shape comes from the "
                            "state; --size and shape flags are ignored\n");
    } else if ((rc = cli_build_config(cmd, r->ctx, c, &a->mf, vocab, a->T, &cfg))) {
        return rc;
    }

    smj_optim_options o;
    smj_optim_defaults(&o);
    o.lr = a->lr;
    o.min_lr_ratio = a->min_lr_ratio;
    o.warmup_steps = a->warmup;
    o.total_steps = a->steps;
    parse_schedule(a->schedule, &o.schedule);
    o.wsd_decay_frac = a->wsd_frac;
    o.weight_decay = a->wd;
    o.grad_clip = a->clip;
    o.skip_nonfinite = !a->no_skip;
    o.max_bad_steps = a->max_bad_steps;

    if (a->init) {
        s = smj_model_load(r->ctx, a->init, &r->m);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot load --init");
        fprintf(stderr, "initialized from %s\n", a->init);
    } else {
        s = smj_model_create(r->ctx, &cfg, (uint64_t)a->seed, &r->m);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot create the model");
    }
    smj_train_options to = cli_train_options(&a->mm, smj_model_get_config(r->m), r->ctx);
    s = smj_model_set_train_options(r->m, &to);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot set the memory options");
    s = smj_trainer_create(r->m, &o, &r->t);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot create the trainer");

    r->extra.best_val_loss = HUGE_VAL;
    r->extra.patience_left = a->patience;
    *start_step = 0;
    if (resume) {
        s = smj_trainer_load(r->t, resume, &r->extra);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot resume");
        *start_step = smj_trainer_step_count(r->t);
        warn_changed_flags(a, &r->extra);
        fprintf(stderr, "resumed %s at step %lld\n", resume, (long long)*start_step);
    }
    uint32_t lr_bits;
    memcpy(&lr_bits, &a->lr, sizeof lr_bits);
    r->extra.user[U_BATCH] = a->B;
    r->extra.user[U_SEQ] = a->T;
    r->extra.user[U_ACCUM] = a->accum;
    r->extra.user[U_STEPS] = a->steps;
    r->extra.user[U_LR_BITS] = lr_bits;
    r->extra.user[U_SCHED] = (int64_t)o.schedule + 1;

    char b1[32], b3[32];
    int64_t tok_per_step = (int64_t)a->B * a->T * a->accum;
    cli_print_config(stderr, &cfg);
    fprintf(stderr,
            "training: batch %d x seq %d x accum %d = %s tokens/step | %d steps | lr %.1e %s | "
            "%d threads (%s)\n",
            a->B, a->T, a->accum, cli_fmt_count(b1, sizeof b1, tok_per_step), a->steps,
            (double)a->lr, a->schedule, smj_ctx_threads(r->ctx), smj_ctx_backend_name(r->ctx));
    cli_print_train_memory(stderr, "memory: ", &cfg, a->B, a->T, &a->mm, r->ctx, a->cc.bf16_matmul);
    fprintf(stderr, "data: %s tokens in %s", cli_fmt_count(b3, sizeof b3,
            smj_dataset_num_tokens(r->ds)), a->dataset);
    if (r->val)
        fprintf(stderr, " | val %s tokens", cli_fmt_count(b3, sizeof b3,
                smj_dataset_num_tokens(r->val)));
    fputc('\n', stderr);

    if ((rc = cli_make_dir(cmd, a->dir))) return rc;
    r->metrics = metrics_open(cmd, r->metrics_path, resume ? *start_step : -1);
    return r->metrics ? 0 : 1;
}

/* Evaluates on the validation set and updates best/patience, saving
 * best.ckpt on improvement. Sets *stop when patience runs out. 0 or 1. */
static int validate(const char *cmd, const train_args *a, train_run *r, progress *pg,
                    int64_t step, double *val_loss, int *stop) {
    int64_t per_batch = (int64_t)a->B * a->T;
    int64_t avail = smj_dataset_num_tokens(r->val) / per_batch;
    int n = a->val_batches;
    if (avail < n) n = avail > 0 ? (int)avail : 1; /* read the val set at most once */
    float loss = 0;
    smj_status s = smj_trainer_eval(r->t, r->val, a->B, a->T, n, &loss);
    if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "validation failed");
    *val_loss = loss;
    if (loss < r->extra.best_val_loss) {
        r->extra.best_val_loss = loss;
        r->extra.patience_left = a->patience;
        s = smj_model_save(r->m, r->best_path);
        if (s != SMJ_OK) return cli_lib_error(cmd, r->ctx, s, "cannot save best.ckpt");
        progress_note(pg, "step %lld: val loss %.4f (new best, saved %s)", (long long)step,
                      (double)loss, r->best_path);
    } else {
        r->extra.patience_left--;
        progress_note(pg, "step %lld: val loss %.4f (best %.4f)", (long long)step, (double)loss,
                      r->extra.best_val_loss);
        if (a->patience > 0 && r->extra.patience_left <= 0) {
            progress_note(pg, "early stopping: no improvement in %d evaluations", a->patience);
            *stop = 1;
        }
    }
    return 0;
}

/* Step 4: the loop. Returns the exit status. */
static int run_loop(const char *cmd, train_args *a, train_run *r, int64_t start) {
    progress pg;
    progress_init(&pg);
    int64_t tok_per_step = (int64_t)a->B * a->T * a->accum;
    double t_start = cli_now(), t_log = t_start;
    int64_t step = start, log_from = start, saved_at = -1;
    double last_loss = NAN, val_loss_last = NAN;
    int stop = 0, rc = 0;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int64_t end = a->stop_at > 0 && a->stop_at < a->steps ? a->stop_at : a->steps;
    while (step < end && !stop && !g_interrupted) {
        smj_step_stats st;
        double t0 = cli_now();
        smj_status s = smj_trainer_step(r->t, r->ds, a->B, a->T, a->accum, &st);
        if (s == SMJ_ERR_DIVERGED) {
            progress_end(&pg);
            return cli_lib_error(cmd, r->ctx, s, "training stopped (nothing saved)");
        }
        if (s != SMJ_OK) {
            progress_end(&pg);
            return cli_lib_error(cmd, r->ctx, s, "training step failed");
        }
        double dt = cli_now() - t0;
        step = st.step;
        double tok_s = dt > 0 ? (double)tok_per_step / dt : 0;
        if (st.skipped)
            progress_note(&pg, "step %lld: non-finite loss/gradient, step skipped (%lld so far)",
                          (long long)step, (long long)st.bad_steps_total);
        else
            last_loss = st.loss;

        if (pg.tty || step % a->log_interval == 0 || step == start + 1 || step == end ||
            g_interrupted) {
            double now = cli_now(), elapsed = now - t_start;
            double rate = now > t_log ? (double)(step - log_from) * tok_per_step / (now - t_log) : 0;
            double eta = (double)(a->steps - step) * elapsed / (double)(step - start);
            progress_step(&pg, &st, a->steps, rate, eta);
            t_log = now;
            log_from = step;
        }

        double val_loss = NAN;
        int eval_now = r->val && (step % a->val_interval == 0 || step == a->steps);
        if (eval_now && (rc = validate(cmd, a, r, &pg, step, &val_loss, &stop))) return rc;
        if (!isnan(val_loss)) val_loss_last = val_loss;
        metrics_row(r->metrics, &st, tok_s, val_loss);

        int last = step == end || stop || g_interrupted;
        if (step % a->ckpt_interval == 0 && !last) {
            if ((rc = save_all(cmd, r))) return rc;
            saved_at = step;
            if (!pg.tty)
                progress_note(&pg, "step %lld: saved %s and %s", (long long)step, r->state_path,
                              r->model_path);
        }
    }
    progress_end(&pg);
    if (saved_at != step && (rc = save_all(cmd, r))) return rc;

    double elapsed = cli_now() - t_start;
    char b1[32], b2[32];
    const char *how = g_interrupted ? "interrupted"
                      : stop        ? "stopped early"
                      : step < a->steps ? "paused"
                                        : "done";
    fprintf(stderr, "\n%s at step %lld/%d\n", how, (long long)step, a->steps);
    if (!isnan(last_loss)) fprintf(stderr, "  final loss      %.4f\n", last_loss);
    if (!isnan(val_loss_last) || r->extra.best_val_loss < HUGE_VAL)
        fprintf(stderr, "  best val loss   %.4f\n", r->extra.best_val_loss);
    fprintf(stderr, "  tokens seen     %s (%s this run)\n",
            cli_fmt_count(b1, sizeof b1, step * tok_per_step),
            cli_fmt_count(b2, sizeof b2, (step - start) * tok_per_step));
    fprintf(stderr, "  time            %s\n", cli_fmt_duration(b1, sizeof b1, elapsed));
    if (smj_trainer_graph_steps(r->t) > 0) /* (a device backend's recorded step; SMJ_CUDA_GRAPHS=0: none) */
        fprintf(stderr, "  graph steps     %lld of %lld this run replayed as one recorded graph\n",
                (long long)smj_trainer_graph_steps(r->t), (long long)(step - start));
    fprintf(stderr, "  model           %s\n  training state  %s\n", r->model_path, r->state_path);
    if (r->extra.best_val_loss < HUGE_VAL) fprintf(stderr, "  best model      %s\n", r->best_path);
    fprintf(stderr, "  metrics         %s\n", r->metrics_path);
    if (step < a->steps && !stop)
        fprintf(stderr, "resume with: smedjan train ... --resume %s\n", r->state_path);
    return g_interrupted ? 128 + g_interrupted : 0;
}

int cmd_train(int argc, char **argv) {
    smj_optim_options od;
    smj_optim_defaults(&od);
    train_args a = {.schedule = "cosine", .dir = "checkpoints", .B = 8, .T = 256, .steps = 1000,
                    .accum = 1, .val_batches = 20, .log_interval = 10, .lr = 6e-4f,
                    .min_lr_ratio = 0.1f, .wd = 0.1f, .clip = 1.0f, .seed = 1337,
                    .max_bad_steps = od.max_bad_steps, .wsd_frac = od.wsd_decay_frac,
                    .mf = CLI_MODEL_FLAGS_DEFAULTS, .cc = CLI_COMPUTE_DEFAULTS};
    char bad_help[96], wsd_help[96];
    snprintf(bad_help, sizeof bad_help, "consecutive skipped steps before giving up (default %d)",
             od.max_bad_steps);
    snprintf(wsd_help, sizeof wsd_help, "wsd: fraction of steps spent decaying (default %g)",
             (double)od.wsd_decay_frac);
    cli_flag flags[] = {
        FLAG_STR("dataset", &a.dataset, "FILE", "training tokens from `smedjan prepare` (required)"),
        FLAG_STR("tokenizer", &a.tokenizer, "FILE", "the tokenizer the dataset was made with (required)"),
        FLAG_STR("val-dataset", &a.val_dataset, "FILE", "validation tokens (enables val loss and early stopping)"),
        CLI_MODEL_FLAGS(a.mf),
        FLAG_INT("batch-size", &a.B, 1, 65536, "sequences per micro-batch (default 8)"),
        FLAG_INT("seq-len", &a.T, 2, 1 << 20, "tokens per sequence (default 256)"),
        FLAG_INT("steps", &a.steps, 1, 2000000000, "total optimizer steps (default 1000)"),
        FLAG_FLOAT_GT("lr", &a.lr, 0, 10, "peak learning rate (default 6e-4)"),
        FLAG_FLOAT("min-lr-ratio", &a.min_lr_ratio, 0, 1, "final lr as a fraction of --lr (default 0.1)"),
        FLAG_INT("warmup", &a.warmup, 0, 2000000000, "linear warmup steps (default min(100, steps/10))"),
        FLAG_STR("schedule", &a.schedule, "NAME", "lr schedule: cosine|constant|wsd|linear (default cosine)"),
        FLAG_FLOAT("wsd-decay-frac", &a.wsd_frac, 0, 1, wsd_help),
        FLAG_FLOAT("weight-decay", &a.wd, 0, 10, "decoupled AdamW weight decay (default 0.1)"),
        FLAG_FLOAT("grad-clip", &a.clip, 0, 1e6, "global gradient-norm clip, 0 = off (default 1.0)"),
        FLAG_INT("grad-accum", &a.accum, 1, 65536, "micro-batches per optimizer step (default 1)"),
        CLI_MEM_FLAGS(a.mm),
        FLAG_STR("checkpoint-dir", &a.dir, "DIR", "where checkpoints and metrics.csv go (default checkpoints)"),
        FLAG_INT("checkpoint-interval", &a.ckpt_interval, 1, 2000000000, "save every N steps (default steps/10)"),
        FLAG_INT("val-interval", &a.val_interval, 1, 2000000000, "evaluate every N steps (default = checkpoint interval)"),
        FLAG_INT("val-batches", &a.val_batches, 1, 1000000, "batches per evaluation (default 20)"),
        FLAG_INT("patience", &a.patience, 0, 1000000, "stop after N evaluations without improvement, 0 = off (default 0)"),
        FLAG_OPT_STR("resume", &a.resume, "PATH|auto", "continue from a training state (default <checkpoint-dir>/state.bin)"),
        FLAG_STR("init", &a.init, "FILE", "start from this checkpoint's weights and shape (e.g. from import-hf); new optimizer state"),
        FLAG_I64("seed", &a.seed, 0, 9e15, "seed of the initial weights (default 1337)"),
        FLAG_INT("log-interval", &a.log_interval, 1, 1000000, "steps between log lines when not on a terminal (default 10)"),
        FLAG_SET("no-skip-nonfinite", &a.no_skip, "fail on a NaN/Inf step instead of skipping it"),
        FLAG_INT("max-bad-steps", &a.max_bad_steps, 1, 1000000, bad_help),
        FLAG_INT("stop-at", &a.stop_at, 1, 2000000000, "pause after this step (state saved; continue with --resume)"),
        CLI_COMPUTE_FLAGS(a.cc),
        CLI_BF16_FLAG(a.cc),
    };
    cli_command c = {
        "train", "train --dataset train.bin --tokenizer tok.bin [--size tiny] [--steps N] [flags]",
        "Trains a decoder-only transformer on a token dataset, with checkpoints, validation,\n"
        "early stopping and exact resumption.",
        "Files written to --checkpoint-dir: state.bin (for --resume), model.ckpt (for\n"
        "generate/perplexity/info), best.ckpt (best validation loss) and metrics.csv.\n"
        "--resume with no value (or 'auto', which starts fresh when there is no state yet)\n"
        "uses <checkpoint-dir>/state.bin; give the same flags as the first run to reproduce\n"
        "its losses exactly. Ctrl-C saves the state and exits with status 130.\n"
        "Out of memory? In this order: a smaller --batch-size or --seq-len, --grad-accum\n"
        "(same update from smaller micro-batches), --gradient-checkpointing, --fused-ce,\n"
        "--fp16-activations. The first two keep the losses and gradients (checkpointing bit\n"
        "for bit, fused-ce to float rounding), the last keeps the losses and rounds the\n"
        "gradients to bf16 precision (docs/CUDA.md, \"Memory-saving flags\"); the memory\n"
        "estimate printed at the start accounts for them.",
        flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((rc = cli_check_mem_flags(c.name, &a.mm))) return rc;
    if (!a.dataset) return cli_usage(c.name, "--dataset is required");
    if (!a.tokenizer) return cli_usage(c.name, "--tokenizer is required");
    smj_schedule sched;
    if (parse_schedule(a.schedule, &sched))
        return cli_usage(c.name, "--schedule: expected cosine, constant, wsd or linear, got '%s'",
                         a.schedule);
    if (!cli_seen(&c, "warmup")) a.warmup = a.steps / 10 < 100 ? a.steps / 10 : 100;
    if (a.warmup >= a.steps && a.steps > 1)
        return cli_usage(c.name, "--warmup %d must be less than --steps %d", a.warmup, a.steps);
    if (!cli_seen(&c, "checkpoint-interval"))
        a.ckpt_interval = (a.steps + 5) / 10 > 0 ? (a.steps + 5) / 10 : 1;
    if (!cli_seen(&c, "val-interval")) a.val_interval = a.ckpt_interval;
    if (!a.val_dataset && (cli_seen(&c, "patience") || cli_seen(&c, "val-interval")))
        return cli_usage(c.name, "--patience and --val-interval need --val-dataset");

    train_run r;
    memset(&r, 0, sizeof r);
    int64_t start = 0;
    rc = setup(c.name, &c, &a, &r, &start);
    if (rc == 0) {
        if (start >= a.steps)
            fprintf(stderr, "already at step %lld of %d: nothing to do\n", (long long)start,
                    a.steps);
        else
            rc = run_loop(c.name, &a, &r, start);
    }
    if (r.metrics) fclose(r.metrics);
    smj_trainer_free(r.t);
    smj_model_free(r.m);
    smj_dataset_free(r.val);
    smj_dataset_free(r.ds);
    smj_tokenizer_free(r.tok);
    smj_ctx_free(r.ctx);
    return rc;
}
