/* cmd_data.c — the text-to-tokens commands: `tokenizer` and `prepare`.
 *
 * tokenizer: reads a file of any bytes, trains a byte-level BPE of the
 *   requested vocabulary, saves it (atomically) and reports the merges, the
 *   time taken and the compression on the training text (bytes per token).
 *
 * prepare: encodes a text file into a token dataset for `train`.
 *   Documents: by default the whole file is ONE document. With
 *   --doc-separator STR (escapes \n \t \r \\ understood, e.g. '\n\n') the text
 *   is split on STR and empty pieces are dropped. Each document is encoded and
 *   followed by the tokenizer's EOS id, so a model learns where documents
 *   end (there is no BOS; `generate` relies on the same convention).
 *   Validation: with --val-output the last --val-fraction (default 0.1) of
 *   the documents goes to the validation file — or, when there is a single
 *   document, the last fraction of its tokens. Both files are written
 *   atomically; if the second write fails the first is removed, so a failed
 *   prepare leaves no new output behind.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

int cmd_tokenizer(int argc, char **argv) {
    const char *input = NULL, *output = NULL;
    int vocab = 8192;
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("input", &input, "FILE", "training text (any bytes) (required)"),
        FLAG_INT("vocab-size", &vocab, 259, 1 << 20,
                 "total vocabulary: 256 bytes + merges + 3 special tokens (default 8192)"),
        FLAG_STR("output", &output, "FILE", "where to save the tokenizer (required)"),
        CLI_COMPUTE_FLAGS(cc),
    };
    cli_command c = {"tokenizer", "tokenizer --input corpus.txt --vocab-size N --output tok.bin",
                     "Trains a byte-level BPE tokenizer (GPT-2 pre-tokenization) on a text file.",
                     NULL, flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!input) return cli_usage(c.name, "--input is required");
    if (!output) return cli_usage(c.name, "--output is required");

    smj_ctx *ctx = NULL;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) return rc;
    uint8_t *text = NULL;
    size_t n = 0;
    smj_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if ((rc = cli_read_file(c.name, input, &text, &n))) goto done;
    if (n == 0) {
        rc = cli_error(c.name, "'%s' is empty", input);
        goto done;
    }
    char b1[32], b2[32], b3[32];
    fprintf(stderr, "training tokenizer on %s (%s) to vocab %d\n", input,
            cli_fmt_bytes(b1, sizeof b1, (double)n), vocab);
    double t0 = cli_now();
    smj_tokenizer_train_options o = {.vocab_size = vocab, .verbose = 0};
    smj_status s = smj_tokenizer_train(ctx, text, n, &o, &tok);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "training failed");
        goto done;
    }
    double t_train = cli_now() - t0;
    if ((s = smj_tokenizer_save(ctx, tok, output)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot save the tokenizer");
        goto done;
    }
    if ((s = smj_tokenizer_encode(ctx, tok, text, n, &ids, &n_ids)) != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot encode the input");
        goto done;
    }
    int v = smj_tokenizer_vocab_size(tok);
    fprintf(stderr, "vocab size: %d (%d merges + 256 bytes + 3 special)\n", v, v - 256 - 3);
    fprintf(stderr, "time: %s\n", cli_fmt_duration(b2, sizeof b2, t_train));
    fprintf(stderr, "compression: %.2f bytes/token (%s bytes -> %s tokens)\n",
            n_ids ? (double)n / (double)n_ids : 0.0, cli_fmt_count(b1, sizeof b1, (int64_t)n),
            cli_fmt_count(b3, sizeof b3, (int64_t)n_ids));
    fprintf(stderr, "saved %s\n", output);
done:
    smj_free(ids);
    smj_tokenizer_free(tok);
    free(text);
    smj_ctx_free(ctx);
    return rc;
}

/* A growable array of token ids. */
typedef struct {
    int32_t *ids;
    int64_t n, cap;
} id_buf;

static int id_buf_append(id_buf *b, const int32_t *ids, int64_t n) {
    if (b->n + n > b->cap) {
        int64_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        int32_t *p = realloc(b->ids, (size_t)cap * sizeof *p);
        if (!p) return -1;
        b->ids = p;
        b->cap = cap;
    }
    if (n) memcpy(b->ids + b->n, ids, (size_t)n * sizeof *ids);
    b->n += n;
    return 0;
}

/* Encodes text[0..n) as one document followed by eos into out. 0 or 1. */
static int encode_doc(const char *cmd, smj_ctx *ctx, const smj_tokenizer *tok, const uint8_t *text,
                      size_t n, int32_t eos, id_buf *out) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    smj_status s = smj_tokenizer_encode(ctx, tok, text, n, &ids, &n_ids);
    if (s != SMJ_OK) return cli_lib_error(cmd, ctx, s, "encoding failed");
    int bad = id_buf_append(out, ids, (int64_t)n_ids) || id_buf_append(out, &eos, 1);
    smj_free(ids);
    return bad ? cli_error(cmd, "out of memory") : 0;
}

int cmd_prepare(int argc, char **argv) {
    const char *input = NULL, *tok_path = NULL, *output = NULL, *val_output = NULL;
    const char *sep_arg = NULL;
    float val_frac = 0.1f;
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("input", &input, "FILE", "text to encode (required)"),
        FLAG_STR("tokenizer", &tok_path, "FILE", "tokenizer from `smedjan tokenizer` (required)"),
        FLAG_STR("output", &output, "FILE", "training dataset to write (required)"),
        FLAG_STR("val-output", &val_output, "FILE", "also write a validation dataset"),
        FLAG_FLOAT_GT("val-fraction", &val_frac, 0, 0.9,
                      "share of documents (or tokens) for validation (default 0.1)"),
        FLAG_STR("doc-separator", &sep_arg, "STR",
                 "split the text into documents on STR, e.g. '\\n\\n' (default: one document)"),
        CLI_COMPUTE_FLAGS(cc),
    };
    cli_command c = {
        "prepare",
        "prepare --input corpus.txt --tokenizer tok.bin --output train.bin "
        "[--val-output val.bin] [--doc-separator STR]",
        "Encodes a text file into a token dataset for `smedjan train`. Every document is\n"
        "followed by the EOS token.",
        "By default the whole file is one document. With --val-output, the last documents\n"
        "(or, for a single document, its last tokens) form the validation split.",
        flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!input) return cli_usage(c.name, "--input is required");
    if (!tok_path) return cli_usage(c.name, "--tokenizer is required");
    if (!output) return cli_usage(c.name, "--output is required");
    if (cli_seen(&c, "val-fraction") && !val_output)
        return cli_usage(c.name, "--val-fraction needs --val-output");
    if (val_output && strcmp(val_output, output) == 0)
        return cli_usage(c.name, "--val-output must differ from --output");

    char *sep = NULL;
    size_t sep_len = 0;
    if (sep_arg) {
        sep = strdup(sep_arg);
        if (!sep) return cli_error(c.name, "out of memory");
        sep_len = cli_unescape(sep);
    }
    smj_ctx *ctx = NULL;
    smj_tokenizer *tok = NULL;
    uint8_t *text = NULL;
    size_t n = 0;
    id_buf all = {0};
    int64_t *doc_end = NULL; /* token offset where each document ends */
    int64_t n_docs = 0, cap_docs = 0;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) goto done;
    smj_status s = smj_tokenizer_load(ctx, tok_path, &tok);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot load the tokenizer");
        goto done;
    }
    if ((rc = cli_read_file(c.name, input, &text, &n))) goto done;
    int32_t eos = smj_tokenizer_special_id(tok, SMJ_TOKEN_EOS);
    int vocab = smj_tokenizer_vocab_size(tok);
    if (eos < 0) { /* an imported tokenizer without an EOS token (docs/HF.md) */
        rc = cli_error(c.name, "tokenizer '%s' has no EOS token to end documents with", tok_path);
        goto done;
    }

    /* Split into documents and encode each one. */
    size_t pos = 0;
    while (pos < n) {
        size_t end = n;
        if (sep_len) {
            const uint8_t *hit = memmem(text + pos, n - pos, sep, sep_len);
            if (hit) end = (size_t)(hit - text);
        }
        if (end > pos) {
            if ((rc = encode_doc(c.name, ctx, tok, text + pos, end - pos, eos, &all))) goto done;
            if (n_docs == cap_docs) {
                cap_docs = cap_docs ? cap_docs * 2 : 1024;
                int64_t *p = realloc(doc_end, (size_t)cap_docs * sizeof *p);
                if (!p) {
                    rc = cli_error(c.name, "out of memory");
                    goto done;
                }
                doc_end = p;
            }
            doc_end[n_docs++] = all.n;
        }
        pos = end + sep_len;
    }
    if (all.n == 0) {
        rc = cli_error(c.name, "'%s' holds no text to encode", input);
        goto done;
    }

    /* The split point: whole documents when there are several, else tokens. */
    int64_t n_train = all.n, val_docs = 0;
    if (val_output) {
        if (n_docs >= 2) {
            val_docs = (int64_t)ceil((double)val_frac * (double)n_docs);
            if (val_docs >= n_docs) val_docs = n_docs - 1;
            n_train = doc_end[n_docs - val_docs - 1];
        } else {
            n_train = all.n - (int64_t)ceil((double)val_frac * (double)all.n);
        }
        if (n_train < 2 || all.n - n_train < 2) {
            rc = cli_error(c.name, "'%s' is too short to split (%lld tokens)", input,
                           (long long)all.n);
            goto done;
        }
    }
    s = smj_dataset_write(ctx, output, all.ids, n_train, vocab);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot write the dataset");
        goto done;
    }
    if (val_output) {
        s = smj_dataset_write(ctx, val_output, all.ids + n_train, all.n - n_train, vocab);
        if (s != SMJ_OK) {
            unlink(output);
            rc = cli_lib_error(c.name, ctx, s, "cannot write the validation dataset");
            goto done;
        }
    }
    char b1[32], b2[32];
    fprintf(stderr, "%s: %s bytes, %lld document%s -> %s tokens (%.2f bytes/token)\n", input,
            cli_fmt_count(b1, sizeof b1, (int64_t)n), (long long)n_docs, n_docs == 1 ? "" : "s",
            cli_fmt_count(b2, sizeof b2, all.n), (double)n / (double)all.n);
    fprintf(stderr, "train: %s tokens -> %s\n", cli_fmt_count(b1, sizeof b1, n_train), output);
    if (val_output)
        fprintf(stderr, "val:   %s tokens%s -> %s\n", cli_fmt_count(b2, sizeof b2, all.n - n_train),
                val_docs ? " (last documents)" : " (last tokens)", val_output);
done:
    free(doc_end);
    free(all.ids);
    free(text);
    free(sep);
    smj_tokenizer_free(tok);
    smj_ctx_free(ctx);
    return rc;
}
