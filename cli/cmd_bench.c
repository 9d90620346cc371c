/* cmd_bench.c — `smedjan bench`: how fast this machine trains and decodes.
 *
 * Builds a fresh model (preset or custom shape, as in `train`) — or loads
 * one with --checkpoint (a .ckpt, or a .gguf whose 2-D weights stay in their
 * GGML blocks; the model flags are then ignored and --batch-size defaults
 * to 1) — and a dataset of uniformly random tokens written to a temporary
 * file (removed afterwards), then measures, each after untimed warm-up calls:
 *   train    --steps timed smj_trainer_step calls; the MEDIAN step time
 *            gives train tok/s = B*T / median, and achieved GFLOP/s =
 *            smj_config_flops_per_token(cfg, T) * tok/s;
 *   forward  the same count of smj_model_forward calls with targets
 *            (median), giving forward tok/s;
 *   prompt   a fresh session fed T tokens at once (prompt processing, the
 *            logits of the last token only; llama-bench's pp), median;
 *   decode   a session fed one token, then --decode-tokens - 1 more by
 *            greedy decoding (smj_session_greedy: on a GPU the steps follow
 *            each other on the device), giving decode tok/s; then up to
 *            256 tokens sampled as `generate` does by default (a feed per
 *            token, smj_sample on the host at temperature 0.8, top-k 40,
 *            top-p 0.95): sampled tok/s.
 * A model that keeps quantized weights (a .gguf in f16/q8_0/q4_0) cannot
 * train: its training row is refused with a message and reported as null.
 * It also reports the training memory estimate (for --fused-ce,
 * --gradient-checkpointing and --fp16-activations when given; they apply to
 * the training and forward rows) and the peak RSS (getrusage); MFU against a measured matmul
 * ceiling (smj_ctx_matmul_tflops, --matmul-probe) and, on a GPU, against
 * --peak-tflops (flops per token = 6 N + 12 L T d,
 * smj_config_flops_per_token); on a GPU also the device memory this run
 * added (in use after the timed steps minus before the model) and the
 * per-op device-time shares of --profile-steps more training steps.
 * The readable block goes to stderr; stdout gets one JSON line for scripts:
 *   {"preset":..,"B":..,"T":..,"threads":..,"train_tok_s":..,"fwd_tok_s":..,
 *    "pp_tok_s":..,"decode_tok_s":..,"sample_tok_s":..,"gflops":..,"peak_rss_mb":..,
 *    "matmul_tflops":..,"mfu":..,"mfu_ceiling":..,"device_mem_mb":..}
 * ("preset" is the --checkpoint path when one is given.)
 */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "cli.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Writes n random tokens below vocab to a new temp file; its path goes to
 * path (size cap). 0 or 1. */
static int write_random_dataset(const char *cmd, smj_ctx *ctx, int vocab, int64_t n, char *path,
                                size_t cap) {
    const char *tmp = getenv("TMPDIR");
    snprintf(path, cap, "%s/smedjan-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return cli_error(cmd, "cannot create a temporary file in %s", tmp ? tmp : "/tmp");
    close(fd);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) {
        unlink(path);
        return cli_error(cmd, "out of memory");
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        ids[i] = (int32_t)(x % (uint64_t)vocab);
    }
    smj_status s = smj_dataset_write(ctx, path, ids, n, vocab);
    free(ids);
    if (s != SMJ_OK) {
        unlink(path);
        return cli_lib_error(cmd, ctx, s, "cannot write the benchmark dataset");
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    cli_model_flags mf = CLI_MODEL_FLAGS_DEFAULTS;
    cli_mem_flags mm = {0};
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    int B = 0, T = 256, steps = 10, warmup = 2, decode = 128, vocab = 8192, prof_steps = 2, probe = -1;
    float peak_tflops = 989.4f; /* H100/H200 SXM, dense bf16 */
    const char *ckpt = NULL;
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &ckpt, "FILE", "benchmark this model (.ckpt or .gguf) instead of a random one"),
        CLI_MODEL_FLAGS(mf),
        FLAG_INT("batch-size", &B, 1, 65536, "batch (default 8; 1 with --checkpoint)"),
        FLAG_INT("seq-len", &T, 2, 1 << 20, "sequence length (default 256)"),
        FLAG_INT("steps", &steps, 1, 100000, "timed training steps and forward passes (default 10)"),
        FLAG_INT("warmup", &warmup, 0, 100000, "untimed calls before timing (default 2)"),
        FLAG_INT("decode-tokens", &decode, 0, 1 << 20, "tokens decoded one at a time, 0 = skip (default 128)"),
        FLAG_INT("vocab-size", &vocab, 259, 1 << 22, "vocabulary of the random model (default 8192)"),
        FLAG_INT("profile-steps", &prof_steps, 0, 1000,
                 "extra training steps timed per op on a GPU, 0 = none (default 2)"),
        FLAG_INT("matmul-probe", &probe, 0, 32768,
                 "n of the n^3 matmul that measures the ceiling, 0 = skip (default 8192 GPU, 1024 CPU)"),
        FLAG_FLOAT("peak-tflops", &peak_tflops, 1, 1e6, "the GPU's dense bf16 peak for MFU (default 989.4, H100/H200 SXM)"),
        CLI_MEM_FLAGS(mm),
        CLI_COMPUTE_FLAGS(cc),
        CLI_BF16_FLAG(cc),
    };
    cli_command c = {"bench", "bench [--size tiny | --checkpoint model.gguf] [--batch-size 8 --seq-len 256] [--steps 10]",
                     "Measures training, forward, prompt and decoding throughput of a random model\n"
                     "(or of --checkpoint's) on random tokens. Prints a summary to stderr and one\n"
                     "JSON line to stdout.",
                     "A .gguf whose weights are quantized (f16/q8_0/q4_0) is inference only: its\n"
                     "training row is refused (null in the JSON).",
                     flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((rc = cli_check_mem_flags(c.name, &mm))) return rc;
    if (B == 0) B = ckpt ? 1 : 8;

    smj_ctx *ctx = NULL;
    smj_model *m = NULL;
    smj_trainer *t = NULL;
    smj_dataset *ds = NULL;
    smj_session *sess = NULL;
    int32_t *in = NULL, *tg = NULL;
    double *times = NULL;
    char ds_path[4096] = "";
    smj_model_config cfg;
    char why[512] = ""; /* why training is refused (quantized weights) */
    smj_status s;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) goto done;
    size_t mem0 = 0, mem_total = 0, mem1 = 0;
    int on_device = smj_ctx_device_memory(ctx, &mem0, &mem_total) == SMJ_OK; /* before the model */
    if (ckpt) {
        s = smj_is_gguf(ckpt) ? smj_model_load_gguf(ctx, ckpt, &m) : smj_model_load(ctx, ckpt, &m);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot load --checkpoint");
            goto done;
        }
        cfg = *smj_model_get_config(m);
        vocab = cfg.vocab_size;
        if (T > cfg.max_seq_len) {
            rc = cli_usage(c.name, "--seq-len %d exceeds the model's context (%d)", T, cfg.max_seq_len);
            goto done;
        }
        /* a tensor kept in GGML blocks has no f32 view: the model cannot train */
        for (int i = 0; i < smj_model_num_tensors(m) && !why[0]; i++) {
            smj_tensor_view v;
            if (smj_model_tensor(m, i, &v) != SMJ_OK) snprintf(why, sizeof why, "%s", smj_ctx_error(ctx));
        }
    } else {
        if ((rc = cli_build_config(c.name, ctx, &c, &mf, vocab, T, &cfg))) goto done;
        s = smj_model_create(ctx, &cfg, 1, &m);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot create the model");
            goto done;
        }
    }
    smj_train_options to = cli_train_options(&mm, &cfg, ctx);
    if ((s = smj_model_set_train_options(m, &to)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot set the memory options");
        goto done;
    }
    smj_optim_options o;
    smj_optim_defaults(&o);
    o.total_steps = warmup + steps;
    o.warmup_steps = 0;
    if (!why[0] && (s = smj_trainer_create(m, &o, &t)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot create the trainer");
        goto done;
    }
    int64_t n_tok = (int64_t)B * T * 4 + 1;
    if ((rc = write_random_dataset(c.name, ctx, vocab, n_tok, ds_path, sizeof ds_path))) {
        ds_path[0] = 0;
        goto done;
    }
    if ((s = smj_dataset_open(ctx, ds_path, &ds)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot open the benchmark dataset");
        goto done;
    }
    times = malloc((size_t)steps * sizeof *times);
    in = malloc((size_t)B * T * sizeof *in);
    tg = malloc((size_t)B * T * sizeof *tg);
    if (!times || !in || !tg) {
        rc = cli_error(c.name, "out of memory");
        goto done;
    }
    cli_print_config(stderr, &cfg);
    fprintf(stderr, "bench: batch %d x seq %d, %d warm-up + %d timed steps, %d threads (%s)\n", B,
            T, warmup, steps, smj_ctx_threads(ctx), smj_ctx_backend_name(ctx));

    /* Training steps. */
    if (why[0])
        fprintf(stderr, "bench: training refused: %s keeps quantized weights (%s) — inference only; measuring "
                "forward, prompt and decode\n", ckpt, why);
    for (int i = 0; i < warmup + steps && !why[0]; i++) {
        smj_step_stats st;
        double t0 = cli_now();
        if ((s = smj_trainer_step(t, ds, B, T, 1, &st)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "training step failed");
            goto done;
        }
        if (i >= warmup) times[i - warmup] = cli_now() - t0;
    }
    double train_tok_s = why[0] ? 0 : (double)B * T / median(times, steps);
    int64_t gsteps = why[0] ? 0 : smj_trainer_graph_steps(t); /* (of the warm-up and timed steps) */
    if (on_device) smj_ctx_device_memory(ctx, &mem1, &mem_total);

    /* Per-op device time over a few more steps (device backends). */
    smj_profile_row prof[64];
    int nprof = 0;
    if (on_device && !why[0] && prof_steps > 0 && smj_ctx_profile(ctx, 1) == SMJ_OK) {
        for (int i = 0; i < prof_steps; i++) {
            smj_step_stats st;
            if ((s = smj_trainer_step(t, ds, B, T, 1, &st)) != SMJ_OK) {
                rc = cli_lib_error(c.name, ctx, s, "training step failed");
                goto done;
            }
        }
        smj_ctx_profile(ctx, 0);
        nprof = smj_ctx_profile_rows(ctx, prof, 64);
        if (nprof > 64) nprof = 64;
    }

    /* Forward passes with targets (loss, no backward). */
    int64_t pos = 0;
    if ((s = smj_dataset_next_batch(ctx, ds, B, T, &pos, NULL, in, tg)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot read a batch");
        goto done;
    }
    for (int i = 0; i < warmup + steps; i++) {
        float loss;
        double t0 = cli_now();
        if ((s = smj_model_forward(m, in, tg, B, T, &loss)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "forward pass failed");
            goto done;
        }
        if (i >= warmup) times[i - warmup] = cli_now() - t0;
    }
    double fwd_tok_s = (double)B * T / median(times, steps);

    /* Prompt processing: T tokens fed at once to a fresh session. */
    if ((s = smj_session_create(m, T, &sess)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot create a session");
        goto done;
    }
    for (int i = 0; i < warmup + steps; i++) {
        const float *logits = NULL;
        smj_session_reset(sess);
        double t0 = cli_now();
        if ((s = smj_session_feed(sess, in, T, &logits)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "prompt processing failed");
            goto done;
        }
        if (i >= warmup) times[i - warmup] = cli_now() - t0;
    }
    double pp_tok_s = (double)T / median(times, steps);
    smj_session_free(sess);
    sess = NULL;

    /* Greedy decoding, one token per call. */
    double decode_tok_s = 0, sample_tok_s = 0;
    if (decode > 0) {
        int len = decode < cfg.max_seq_len ? decode : cfg.max_seq_len;
        if ((s = smj_session_create(m, len, &sess)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot create a session");
            goto done;
        }
        int32_t *gen = malloc(sizeof(int32_t) * (size_t)len);
        if (!gen) {
            rc = cli_error(c.name, "out of memory");
            goto done;
        }
        double t0 = cli_now();
        /* the first token, then greedy steps (on a GPU they follow each
         * other on the device) */
        s = smj_session_feed(sess, in, 1, NULL);
        if (s == SMJ_OK && len > 1) s = smj_session_greedy(sess, len - 1, gen, NULL);
        free(gen);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "decoding failed");
            goto done;
        }
        double dt = cli_now() - t0;
        decode_tok_s = dt > 0 ? (double)len / dt : 0;
        /* Sampling (generate's defaults): a token per smj_session_feed,
         * chosen by smj_sample on the host from the step's logits. */
        smj_session_reset(sess);
        int slen = len < 256 ? len : 256;
        smj_sampler_options so;
        smj_sampler_defaults(&so);
        uint64_t rng = so.seed;
        float *scratch = malloc(sizeof(float) * (size_t)cfg.vocab_size);
        const float *logits = NULL;
        int32_t id = in[0];
        t0 = cli_now();
        for (int i = 0; i < slen && s == SMJ_OK && scratch; i++) {
            if ((s = smj_session_feed(sess, &id, 1, &logits)) == SMJ_OK)
                id = smj_sample(logits, cfg.vocab_size, &so, NULL, 0, &rng, scratch);
        }
        free(scratch);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "decoding failed");
            goto done;
        }
        dt = cli_now() - t0;
        sample_tok_s = dt > 0 ? (double)slen / dt : 0;
    }

    /* The matmul ceiling: one large product through the same op table. */
    if (probe < 0) probe = on_device ? 8192 : 1024;
    double mm_tflops = 0;
    if (probe > 0 && (s = smj_ctx_matmul_tflops(ctx, probe, &mm_tflops)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "the matmul probe failed");
        goto done;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    double gflops = smj_config_flops_per_token(&cfg, T) * train_tok_s / 1e9;
    char b1[32], b2[32], b3[32];
    char b5[32];
    if (why[0])
        fprintf(stderr, "  train     refused (quantized weights)\n");
    else {
        char gr[64] = "";
        if (gsteps > 0) snprintf(gr, sizeof gr, "; %lld of %d steps one recorded graph", (long long)gsteps, warmup + steps);
        fprintf(stderr, "  train     %s tok/s (median step %.1f ms%s), %.1f GFLOP/s\n",
                cli_fmt_count(b1, sizeof b1, (int64_t)train_tok_s), 1e3 * B * T / train_tok_s, gr, gflops);
    }
    double mfu = on_device ? gflops / (1e3 * peak_tflops) : 0, mfu_ceil = mm_tflops > 0 ? gflops / (1e3 * mm_tflops) : 0;
    if (!why[0] && mm_tflops > 0)
        fprintf(stderr, "  MFU       %.1f%% of the matmul ceiling (%.*f %s, %d^3 through the matmul op)%s",
                100 * mfu_ceil, mm_tflops < 1 ? 0 : 1, mm_tflops < 1 ? 1e3 * mm_tflops : mm_tflops,
                mm_tflops < 1 ? "GFLOP/s" : "TFLOP/s", probe, on_device ? "" : "\n");
    if (!why[0] && on_device)
        fprintf(stderr, "%s%.1f%% of %.1f TFLOP/s dense bf16 peak\n", mm_tflops > 0 ? "; " : "  MFU       ",
                100 * mfu, peak_tflops);
    if (nprof > 0) {
        double tot = 0;
        for (int i = 0; i < nprof; i++) tot += prof[i].ms;
        fprintf(stderr, "  per-op device time over %d more training steps (%.1f ms per step):\n", prof_steps,
                tot / prof_steps);
        /* the 16 largest rows, and past them any of 1% or more (products by
         * shape under SMJ_CUDA_PROFILE_SHAPES=1) */
        int shown = 0, w = 26;
        while (shown < nprof && (shown < 16 || prof[shown].ms >= 0.01 * tot)) {
            int len = (int)strlen(prof[shown].name);
            if (len > w) w = len;
            shown++;
        }
        for (int i = 0; i < shown; i++)
            fprintf(stderr, "    %-*s %5.1f%% %9.2f ms %7ld calls\n", w, prof[i].name, 100 * prof[i].ms / tot,
                    prof[i].ms / prof_steps, prof[i].calls / prof_steps);
    }
    fprintf(stderr,
            "  forward   %s tok/s (batch %d x %d, with the loss)\n"
            "  prompt    %s tok/s (%d tokens into a fresh session)\n",
            cli_fmt_count(b2, sizeof b2, (int64_t)fwd_tok_s), B, T,
            cli_fmt_count(b5, sizeof b5, (int64_t)pp_tok_s), T);
    if (decode > 0)
        fprintf(stderr, "  decode    %s tok/s greedy; %s tok/s sampled (temperature 0.8, top-k 40, top-p 0.95, on the host)\n",
                cli_fmt_count(b3, sizeof b3, (int64_t)decode_tok_s), cli_fmt_count(b1, sizeof b1, (int64_t)sample_tok_s));
    else
        fprintf(stderr, "  decode    skipped (--decode-tokens 0)\n");
    fprintf(stderr, "  memory    %.0f MiB peak RSS", rss_mb);
    if (on_device)
        fprintf(stderr, "; device %.2f GiB in use after training, %.2f GiB of it this run's (of %.1f GiB)",
                (double)mem1 / (1 << 30), (double)(mem1 - (mem1 > mem0 ? mem0 : mem1)) / (1 << 30),
                (double)mem_total / (1 << 30));
    fputc('\n', stderr);
    if (!why[0]) cli_print_train_memory(stderr, "  estimate  training ", &cfg, B, T, &mm, ctx, cc.bf16_matmul);
    char tr[32];
    if (why[0]) snprintf(tr, sizeof tr, "null");
    else snprintf(tr, sizeof tr, "%.1f", train_tok_s);
    printf("{\"preset\":\"");
    for (const char *p = ckpt ? ckpt : mf.size; *p; p++) /* a path may hold characters JSON escapes */
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if ((unsigned char)*p >= 0x20) putchar(*p);
    printf("\",\"B\":%d,\"T\":%d,\"threads\":%d,\"train_tok_s\":%s,"
           "\"fwd_tok_s\":%.1f,\"pp_tok_s\":%.1f,\"decode_tok_s\":%.1f,\"sample_tok_s\":%.1f,\"gflops\":%.2f,"
           "\"peak_rss_mb\":%.1f,\"matmul_tflops\":%.4f,\"mfu\":%.4f,\"mfu_ceiling\":%.4f,\"device_mem_mb\":%.1f}\n",
           B, T, smj_ctx_threads(ctx), tr, fwd_tok_s, pp_tok_s, decode_tok_s, sample_tok_s, why[0] ? 0.0 : gflops, rss_mb,
           mm_tflops, why[0] ? 0.0 : mfu, why[0] ? 0.0 : mfu_ceil,
           (double)(mem1 - (mem1 > mem0 ? mem0 : mem1)) / (1 << 20));
done:
    if (ds_path[0]) unlink(ds_path);
    smj_session_free(sess);
    free(tg);
    free(in);
    free(times);
    smj_dataset_free(ds);
    smj_trainer_free(t);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}
