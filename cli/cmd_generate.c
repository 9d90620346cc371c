/* cmd_generate.c — using a trained model: `generate` and `perplexity`.
 *
 * generate: loads model + tokenizer, encodes the prompt and feeds it through
 *   a session (KV cache), then samples one token at a time with smj_sample,
 *   feeding each back, until EOS, --max-tokens or the model's context is
 *   full (greedy without a penalty: smj_session_greedy in chunks, the same
 *   tokens, chained on the device on a GPU). No BOS is prepended: the training data made by `prepare` has none,
 *   only EOS after each document — so an empty prompt starts from EOS, i.e.
 *   "the beginning of a new document". Output is the prompt followed by the
 *   raw bytes of each generated token, written to stdout as they come
 *   (--no-stream: once per sample). Sample k of --num-samples continues the
 *   same random stream, so a given --seed always yields the same samples.
 *
 * perplexity: encodes a text and scores it with smj_model_forward over
 *   non-overlapping windows (inputs tokens[i..i+T), targets tokens[i+1..
 *   i+T+1)); every token but the first is predicted exactly once. Reports the
 *   mean loss (nats/token), perplexity exp(loss) and bits per byte — the
 *   summed loss over the predicted tokens' bytes, comparable across
 *   tokenizers.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

/* Loads the model and tokenizer and checks they belong together. */
static int load_pair(const char *cmd, smj_ctx *ctx, const char *ckpt, const char *tok_path,
                     smj_model **m, smj_tokenizer **tok) {
    /* a .gguf (by its magic) runs with its linear weights kept quantized */
    smj_status s = smj_is_gguf(ckpt) ? smj_model_load_gguf(ctx, ckpt, m) : smj_model_load(ctx, ckpt, m);
    if (s != SMJ_OK) return cli_lib_error(cmd, ctx, s, "cannot load --checkpoint");
    if (!tok_path) { /* a .gguf without --tokenizer: its embedded tokenizer */
        s = smj_tokenizer_load_gguf(ctx, ckpt, tok);
        if (s != SMJ_OK) return cli_lib_error(cmd, ctx, s, "cannot use the GGUF's embedded tokenizer");
        tok_path = "(embedded in the GGUF)";
    } else {
        s = smj_tokenizer_load(ctx, tok_path, tok);
        if (s != SMJ_OK) return cli_lib_error(cmd, ctx, s, "cannot load --tokenizer");
    }
    int mv = smj_model_get_config(*m)->vocab_size, tv = smj_tokenizer_vocab_size(*tok);
    if (mv != tv)
        return cli_error(cmd, "'%s' has vocab %d but tokenizer '%s' has %d (mismatched files?)",
                         ckpt, mv, tok_path, tv);
    return 0;
}

static void write_token(const smj_tokenizer *tok, int32_t id, int flush) {
    size_t len = 0;
    const uint8_t *b = smj_tokenizer_token_bytes(tok, id, &len);
    if (b && len) fwrite(b, 1, len, stdout);
    if (flush) fflush(stdout);
}

enum { GREEDY_CHUNK = 16 }; /* tokens per smj_session_greedy call (output arrives in such bursts) */

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *tok_path = NULL, *prompt = "";
    int max_tokens = 256, stream = 1, samples = 1, echo = 1;
    int64_t seed = 1337;
    smj_sampler_options so;
    smj_sampler_defaults(&so);
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    char h_temp[80], h_k[80], h_p[80], h_minp[80], h_rep[96];
    snprintf(h_temp, sizeof h_temp, "sampling temperature, 0 = greedy (default %g)", (double)so.temperature);
    snprintf(h_k, sizeof h_k, "keep the k most likely tokens, 0 = off (default %d)", so.top_k);
    snprintf(h_p, sizeof h_p, "nucleus sampling mass, 1 = off (default %g)", (double)so.top_p);
    snprintf(h_minp, sizeof h_minp, "drop tokens below p * max prob, 0 = off (default %g)", (double)so.min_p);
    snprintf(h_rep, sizeof h_rep, "penalty for tokens already seen, 1 = off (default %g)",
             (double)so.repetition_penalty);
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &ckpt, "FILE", "model checkpoint, e.g. checkpoints/model.ckpt, or a .gguf (required)"),
        FLAG_STR("tokenizer", &tok_path, "FILE", "the tokenizer the model was trained with (required; a .gguf --checkpoint defaults to its own)"),
        FLAG_STR("prompt", &prompt, "TEXT", "text to continue (default: start a new document)"),
        FLAG_INT("max-tokens", &max_tokens, 1, 1 << 24, "tokens to generate per sample (default 256)"),
        FLAG_FLOAT("temperature", &so.temperature, 0, 100, h_temp),
        FLAG_INT("top-k", &so.top_k, 0, 1 << 24, h_k),
        FLAG_FLOAT_GT("top-p", &so.top_p, 0, 1, h_p),
        FLAG_FLOAT("min-p", &so.min_p, 0, 1, h_minp),
        FLAG_FLOAT_GT("repetition-penalty", &so.repetition_penalty, 0, 100, h_rep),
        FLAG_I64("seed", &seed, 0, 9e15, "random seed (default 1337)"),
        FLAG_SET("stream", &stream, "print tokens as they are generated (default)"),
        FLAG_CLEAR("no-stream", &stream, "print each sample when it is complete"),
        FLAG_CLEAR("no-echo", &echo, "do not print the prompt before the continuation"),
        FLAG_INT("num-samples", &samples, 1, 100000, "independent samples, separated by a line (default 1)"),
        CLI_COMPUTE_FLAGS(cc),
        CLI_BF16_FLAG(cc),
    };
    cli_command c = {"generate",
                     "generate --checkpoint model.ckpt --tokenizer tok.bin [--prompt TEXT] [flags]",
                     "Samples text from a trained model. The text goes to stdout, speed to stderr.",
                     "No BOS token is added (training data has none); an empty prompt starts after\n"
                     "an EOS, like the start of a new document. Generation stops at EOS.",
                     flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!ckpt) return cli_usage(c.name, "--checkpoint is required");
    if (!tok_path && !smj_is_gguf(ckpt)) return cli_usage(c.name, "--tokenizer is required (optional for a .gguf)");
    so.seed = (uint64_t)seed;

    smj_ctx *ctx = NULL;
    smj_model *m = NULL;
    smj_tokenizer *tok = NULL;
    smj_session *sess = NULL;
    int32_t *prompt_ids = NULL, *hist = NULL;
    float *scratch = NULL;
    size_t n_prompt = 0;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) goto done;
    if ((rc = load_pair(c.name, ctx, ckpt, tok_path, &m, &tok))) goto done;
    const smj_model_config *cfg = smj_model_get_config(m);
    int32_t eos = smj_tokenizer_special_id(tok, SMJ_TOKEN_EOS);
    smj_status s = smj_tokenizer_encode(ctx, tok, (const uint8_t *)prompt, strlen(prompt),
                                        &prompt_ids, &n_prompt);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot encode --prompt");
        goto done;
    }
    /* The context that is fed: the prompt, or a lone EOS for an empty one. */
    const int32_t *feed = n_prompt ? prompt_ids : &eos;
    int n_feed = n_prompt ? (int)n_prompt : 1;
    if (n_prompt >= (size_t)cfg->max_seq_len) {
        rc = cli_error(c.name, "--prompt is %zu tokens; the model's context is %d", n_prompt,
                       cfg->max_seq_len);
        goto done;
    }
    int max_len = n_feed + max_tokens;
    if (max_len > cfg->max_seq_len) max_len = cfg->max_seq_len;
    int V = cfg->vocab_size;
    hist = malloc((size_t)max_len * sizeof *hist);
    scratch = malloc((size_t)V * sizeof *scratch);
    if (!hist || !scratch) {
        rc = cli_error(c.name, "out of memory");
        goto done;
    }
    if ((s = smj_session_create(m, max_len, &sess)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot create a session");
        goto done;
    }
    uint64_t rng = so.seed;
    int greedy = so.temperature <= 0.0f && so.repetition_penalty == 1.0f;
    int64_t generated = 0;
    int context_full = 0;
    double t0 = cli_now();
    for (int k = 0; k < samples; k++) {
        if (k > 0) printf("\n---\n");
        if (echo) fputs(prompt, stdout);
        if (stream) fflush(stdout);
        smj_session_reset(sess);
        const float *logits = NULL;
        if ((s = smj_session_feed(sess, feed, n_feed, &logits)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot feed the prompt");
            goto done;
        }
        memcpy(hist, feed, (size_t)n_feed * sizeof *hist);
        int n_hist = n_feed, i = 0, eos_seen = 0;
        /* Greedy without a penalty: chunks of smj_session_greedy, whose
         * steps follow each other on the device; the last token (never
         * fed) and everything else go through the loop below. */
        int budget = max_tokens < max_len - n_feed ? max_tokens : max_len - n_feed;
        while (greedy && !eos_seen && i + 1 < budget) {
            int32_t out[GREEDY_CHUNK];
            int n = budget - 1 - i < GREEDY_CHUNK ? budget - 1 - i : GREEDY_CHUNK;
            if ((s = smj_session_greedy(sess, n, out, &logits)) != SMJ_OK) {
                rc = cli_lib_error(c.name, ctx, s, "decoding failed");
                goto done;
            }
            for (int j = 0; j < n && !eos_seen; j++) {
                eos_seen = out[j] == eos;
                if (eos_seen) break;
                write_token(tok, out[j], stream);
                generated++;
                hist[n_hist++] = out[j];
                i++;
            }
        }
        for (; i < max_tokens && !eos_seen; i++) {
            int32_t id = smj_sample(logits, V, &so, hist, n_hist, &rng, scratch);
            if (id == eos) break;
            write_token(tok, id, stream);
            generated++;
            hist[n_hist++] = id;
            if (n_hist >= max_len) {
                context_full = n_hist >= cfg->max_seq_len && i + 1 < max_tokens;
                break;
            }
            if ((s = smj_session_feed(sess, &id, 1, &logits)) != SMJ_OK) {
                rc = cli_lib_error(c.name, ctx, s, "decoding failed");
                goto done;
            }
        }
    }
    printf("\n");
    fflush(stdout);
    double dt = cli_now() - t0;
    if (context_full)
        fprintf(stderr, "(stopped: the model's context of %d tokens is full)\n", cfg->max_seq_len);
    fprintf(stderr, "%lld tokens in %.2fs (%.1f tok/s), prompt %zu tokens\n",
            (long long)generated, dt, dt > 0 ? (double)generated / dt : 0.0, n_prompt);
done:
    smj_session_free(sess);
    free(scratch);
    free(hist);
    smj_free(prompt_ids);
    smj_tokenizer_free(tok);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    const char *ckpt = NULL, *tok_path = NULL, *input = NULL;
    int T = 0, B = 4;
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &ckpt, "FILE", "model checkpoint or a .gguf (required)"),
        FLAG_STR("tokenizer", &tok_path, "FILE", "the tokenizer the model was trained with (required; a .gguf --checkpoint defaults to its own)"),
        FLAG_STR("input", &input, "FILE", "text to score (required)"),
        FLAG_INT("seq-len", &T, 1, 1 << 20, "window length (default: the model's context)"),
        FLAG_INT("batch-size", &B, 1, 65536, "windows per forward pass (default 4)"),
        CLI_COMPUTE_FLAGS(cc),
        CLI_BF16_FLAG(cc),
    };
    cli_command c = {"perplexity",
                     "perplexity --checkpoint model.ckpt --tokenizer tok.bin --input text.txt",
                     "Scores a text with a model: mean loss, perplexity and bits per byte.", NULL,
                     flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!ckpt) return cli_usage(c.name, "--checkpoint is required");
    if (!tok_path && !smj_is_gguf(ckpt)) return cli_usage(c.name, "--tokenizer is required (optional for a .gguf)");
    if (!input) return cli_usage(c.name, "--input is required");

    smj_ctx *ctx = NULL;
    smj_model *m = NULL;
    smj_tokenizer *tok = NULL;
    uint8_t *text = NULL;
    size_t n_text = 0, n = 0;
    int32_t *ids = NULL, *in = NULL, *tg = NULL;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) goto done;
    if ((rc = load_pair(c.name, ctx, ckpt, tok_path, &m, &tok))) goto done;
    const smj_model_config *cfg = smj_model_get_config(m);
    if (T == 0) T = cfg->max_seq_len;
    if (T > cfg->max_seq_len) {
        rc = cli_usage(c.name, "--seq-len %d exceeds the model's context %d", T, cfg->max_seq_len);
        goto done;
    }
    if ((rc = cli_read_file(c.name, input, &text, &n_text))) goto done;
    smj_status s = smj_tokenizer_encode(ctx, tok, text, n_text, &ids, &n);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot encode --input");
        goto done;
    }
    if (n < 2) {
        rc = cli_error(c.name, "'%s' encodes to %zu token(s); need at least 2", input, n);
        goto done;
    }
    in = malloc((size_t)B * T * sizeof *in);
    tg = malloc((size_t)B * T * sizeof *tg);
    if (!in || !tg) {
        rc = cli_error(c.name, "out of memory");
        goto done;
    }
    /* Windows start at 0, T, 2T, ...; the last one may be short: its
     * missing positions get input 0 and target -1 (ignored by the loss). */
    int64_t n_pred = (int64_t)n - 1, n_windows = (n_pred + T - 1) / T;
    double nats = 0;
    double t0 = cli_now();
    for (int64_t w0 = 0; w0 < n_windows; w0 += B) {
        int b = n_windows - w0 < B ? (int)(n_windows - w0) : B;
        int64_t count = 0;
        for (int r = 0; r < b; r++)
            for (int t = 0; t < T; t++) {
                int64_t i = (w0 + r) * T + t;
                int ok = i < n_pred;
                in[r * T + t] = ok ? ids[i] : 0;
                tg[r * T + t] = ok ? ids[i + 1] : -1;
                count += ok;
            }
        float loss = 0;
        if ((s = smj_model_forward(m, in, tg, b, T, &loss)) != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "forward pass failed");
            goto done;
        }
        nats += (double)loss * (double)count;
    }
    double dt = cli_now() - t0;
    /* Bytes of the predicted tokens: everything but the first token. */
    size_t first_len = 0;
    smj_tokenizer_token_bytes(tok, ids[0], &first_len);
    double pred_bytes = (double)(n_text - first_len);
    double mean = nats / (double)n_pred;
    char b1[32], b2[32];
    printf("tokens:         %s (%s bytes)\n", cli_fmt_count(b1, sizeof b1, (int64_t)n),
           cli_fmt_count(b2, sizeof b2, (int64_t)n_text));
    printf("loss:           %.4f nats/token\n", mean);
    printf("perplexity:     %.3f\n", exp(mean));
    printf("bits per byte:  %.4f\n", pred_bytes > 0 ? nats / log(2.0) / pred_bytes : 0.0);
    fprintf(stderr, "scored %lld windows of %d tokens in %.2fs\n", (long long)n_windows, T, dt);
done:
    free(tg);
    free(in);
    smj_free(ids);
    free(text);
    smj_tokenizer_free(tok);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}
