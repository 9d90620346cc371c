/* cli.h — what the files of the `smedjan` command-line program share.
 *
 * The program is a thin layer over the public library header smedjan.h and
 * nothing else. Each subcommand lives in a cmd_*.c file and has the shape
 *
 *     int cmd_NAME(int argc, char **argv);   argv[0] is the subcommand name
 *
 * returning the process exit status: 0 success, 1 a runtime failure (a file
 * that cannot be read, a corrupt checkpoint, a diverged run), 2 a usage error
 * (a bad or unknown flag), 130 an interrupted training run.
 *
 * Flags are declared as a table of cli_flag entries that cli_parse() fills;
 * the same table prints --help, so help text and parsing never drift apart.
 * Errors are printed as one line on stderr, "smedjan <cmd>: <message>".
 */
#ifndef SMJ_CLI_H
#define SMJ_CLI_H

#include <stdint.h>
#include <stdio.h>
#include "smedjan.h"

/* ------------------------------------------------------------ flag parsing */

typedef enum {
    CLI_STR,     /* --name VALUE          -> const char ** */
    CLI_OPT_STR, /* --name [VALUE]        -> const char ** ("" when no value) */
    CLI_INT,     /* --name N              -> int * */
    CLI_I64,     /* --name N              -> int64_t * */
    CLI_FLOAT,   /* --name X              -> float * */
    CLI_SET,     /* --name                -> int *, set to 1 */
    CLI_CLEAR    /* --name                -> int *, set to 0 (e.g. --no-stream) */
} cli_kind;

typedef struct {
    const char *name; /* long name without the leading "--" */
    cli_kind kind;
    void *dst;
    double min, max;  /* accepted range of numeric values (inclusive) */
    int open_min;     /* 1: the value must be strictly greater than min */
    const char *meta; /* value placeholder shown in --help */
    const char *help; /* one line of help; NULL hides the flag (debug flags) */
    int seen;         /* set by cli_parse when the flag was given */
} cli_flag;

#define FLAG_STR(n, d, m, h) {.name = (n), .kind = CLI_STR, .dst = (d), .meta = (m), .help = (h)}
#define FLAG_OPT_STR(n, d, m, h) \
    {.name = (n), .kind = CLI_OPT_STR, .dst = (d), .meta = (m), .help = (h)}
#define FLAG_INT(n, d, lo, hi, h) \
    {.name = (n), .kind = CLI_INT, .dst = (d), .min = (lo), .max = (hi), .meta = "N", .help = (h)}
#define FLAG_I64(n, d, lo, hi, h) \
    {.name = (n), .kind = CLI_I64, .dst = (d), .min = (lo), .max = (hi), .meta = "N", .help = (h)}
#define FLAG_FLOAT(n, d, lo, hi, h) \
    {.name = (n), .kind = CLI_FLOAT, .dst = (d), .min = (lo), .max = (hi), .meta = "X", .help = (h)}
/* A float that must be > lo. */
#define FLAG_FLOAT_GT(n, d, lo, hi, h) {.name = (n), .kind = CLI_FLOAT, .dst = (d), .min = (lo), \
    .max = (hi), .open_min = 1, .meta = "X", .help = (h)}
#define FLAG_SET(n, d, h) {.name = (n), .kind = CLI_SET, .dst = (d), .help = (h)}
#define FLAG_CLEAR(n, d, h) {.name = (n), .kind = CLI_CLEAR, .dst = (d), .help = (h)}

typedef struct {
    const char *name;    /* subcommand name, e.g. "train" */
    const char *usage;   /* synopsis after "smedjan " */
    const char *summary; /* one paragraph describing what it does */
    const char *notes;   /* printed after the flags; may be NULL */
    cli_flag *flags;
    int n_flags;
} cli_command;

#define CLI_NFLAGS(arr) ((int)(sizeof(arr) / sizeof((arr)[0])))

/* Parses argv[1..argc) (argv[0] is the subcommand) into the flag table.
 * Accepts "--name value" and "--name=value". Returns 0 when parsing
 * succeeded, CLI_HELP_SHOWN after printing --help to stdout, or 2 after
 * printing a one-line usage error naming the flag to stderr. */
#define CLI_HELP_SHOWN (-1)
int cli_parse(cli_command *c, int argc, char **argv);
/* 1 when the flag `name` appeared on the command line. */
int cli_seen(const cli_command *c, const char *name);
/* Prints the full help of c to f. */
void cli_print_help(const cli_command *c, FILE *f);

/* ---------------------------------------------------------------- errors */

/* Prints "smedjan <cmd>: <message>" on stderr; returns 1 (runtime failure). */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, returning 2 (usage error). */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "smedjan <cmd>: <what>: <library message>" for a failed library call;
 * returns 1. Falls back to smj_status_str when the context has no message. */
int cli_lib_error(const char *cmd, const smj_ctx *ctx, smj_status s, const char *what);

/* ------------------------------------------------------ compute options */

/* --threads, --device and the hidden --backend flag, shared by every compute
 * command. */
typedef struct {
    int threads;         /* 0 = all cores */
    const char *backend; /* "cpu" (default) or "ref" */
    const char *device;  /* "cpu", "cuda", or NULL = automatic (see cli_make_ctx) */
    int bf16_matmul;     /* --bf16-matmul (commands that list CLI_BF16_FLAG) */
} cli_compute;

#define CLI_COMPUTE_DEFAULTS {0, "cpu", NULL, 0}
#define CLI_COMPUTE_FLAGS(cc) \
    FLAG_INT("threads", &(cc).threads, 0, 4096, "worker threads (default 0 = all cores)"), \
    FLAG_STR("device", &(cc).device, "cpu|cuda", \
             "where to compute (default: cuda for train/generate/perplexity/bench when the build has it and a GPU is present, else cpu)"), \
    FLAG_STR("backend", &(cc).backend, "cpu|ref", NULL)

/* --bf16-matmul, for the commands that multiply matrices (train, bench,
 * generate, perplexity): smj_ctx_options.bf16_matmul. */
#define CLI_BF16_FLAG(cc) \
    FLAG_SET("bf16-matmul", &(cc).bf16_matmul, \
             "CUDA: bf16 tensor-core matmuls with fp32 accumulation (default fp32; the CPU ignores it)")

/* Creates the library context for cc. --device cuda needs a CUDA build
 * (make CUDA=1) and a usable GPU, else it fails with the reason; without
 * --device, train/generate/perplexity/bench use CUDA when available and the
 * CPU otherwise, every other command the CPU. --bf16-matmul on a context
 * that is not CUDA prints a one-line note (it has no effect there). Returns 0, 2 for a bad
 * --backend/--device or 1 when the context cannot be made (message printed
 * in both cases). */
int cli_make_ctx(const char *cmd, const cli_compute *cc, smj_ctx **out);

/* ------------------------------------------------------------- utilities */

/* Reads a whole file into a new malloc'd buffer (NUL-terminated for
 * convenience, *len excludes the NUL). On failure prints the error for cmd
 * and returns 1; 0 on success. */
int cli_read_file(const char *cmd, const char *path, uint8_t **data, size_t *len);
int cli_file_exists(const char *path);
/* mkdir -p for one directory level below an existing parent; 0 or 1 (printed). */
int cli_make_dir(const char *cmd, const char *path);

/* Seconds from a monotonic clock. */
double cli_now(void);

/* Formatting into caller buffers (returned for use in printf). */
const char *cli_fmt_count(char *buf, size_t n, int64_t v);    /* 12,345 */
const char *cli_fmt_params(char *buf, size_t n, int64_t v);   /* 2.1M, 350K, 1.3B */
const char *cli_fmt_bytes(char *buf, size_t n, double bytes); /* 812 MiB, 1.2 GiB */
const char *cli_fmt_duration(char *buf, size_t n, double s);  /* 3m12s, 1h02m, 4.2s */

/* Turns the escapes \n \t \r and \\ into their bytes, in place (any other
 * backslash stays as it is); returns the new length. Used for
 * --doc-separator '\n\n'. */
size_t cli_unescape(char *s);

/* Model shape flags shared by train and bench (see model_flags.c). */
typedef struct {
    const char *size; /* preset name or "custom" */
    int dim, layers, heads, kv_heads, head_dim, max_seq;
    float ffn_mult, rope_theta;
    int qk_norm, untied;
    const char *arch; /* "llama" or "gpt2" */
} cli_model_flags;

#define CLI_MODEL_FLAGS_DEFAULTS {"tiny", 0, 0, 0, 0, 0, 0, 0.0f, 0.0f, 0, 0, "llama"}
#define CLI_MODEL_FLAGS(mf) \
    FLAG_STR("size", &(mf).size, "NAME", "model preset: tiny|small|medium|large|xl|custom (default tiny)"), \
    FLAG_INT("dim", &(mf).dim, 8, 65536, "model width (required with --size custom)"), \
    FLAG_INT("layers", &(mf).layers, 1, 1024, "transformer layers (required with --size custom)"), \
    FLAG_INT("heads", &(mf).heads, 1, 1024, "query heads (required with --size custom)"), \
    FLAG_INT("kv-heads", &(mf).kv_heads, 1, 1024, "key/value heads for GQA (default = --heads)"), \
    FLAG_INT("head-dim", &(mf).head_dim, 1, 4096, "width of one head (default dim/heads)"), \
    FLAG_FLOAT_GT("ffn-mult", &(mf).ffn_mult, 0, 64, "SwiGLU width multiplier: hidden = int(dim*X) rounded up to 256 (default 2.67, as the presets)"), \
    FLAG_SET("qk-norm", &(mf).qk_norm, "RMSNorm on each query and key head (Qwen3 style)"), \
    FLAG_SET("untied", &(mf).untied, "separate LM head instead of tied embeddings"), \
    FLAG_FLOAT_GT("rope-theta", &(mf).rope_theta, 0, 1e9, "RoPE base frequency (default from preset)"), \
    FLAG_INT("max-seq", &(mf).max_seq, 1, 1 << 20, "longest context the model supports (default: preset's, at least --seq-len)"), \
    FLAG_STR("arch", &(mf).arch, "NAME", "model family: llama (default) or gpt2 (LayerNorm, learned positions, GELU MLP of 4*dim)")

/* The training-memory flags (train, bench, sizes, info): smj_train_options. */
typedef struct {
    int fused_ce, grad_ckpt, fp16_act, ce_rows;
} cli_mem_flags;

#define CLI_MEM_FLAGS(mm) \
    FLAG_SET("fused-ce", &(mm).fused_ce, \
             "LM head + cross-entropy in chunks of rows: no [batch*seq, vocab] logits buffer"), \
    FLAG_SET("gradient-checkpointing", &(mm).grad_ckpt, \
             "keep only each block's input; recompute the block in the backward (~1/3 more compute)"), \
    FLAG_SET("fp16-activations", &(mm).fp16_act, \
             "keep what the backward reads as bf16 (less activation memory; gradients to bf16 rounding)"), \
    FLAG_INT("ce-chunk-rows", &(mm).ce_rows, 0, 1 << 30, \
             "rows per --fused-ce chunk (default 0: about 32 MiB of logits a chunk, 512 MiB on a GPU; " \
             "twice the rows on a GPU with --fp16-activations --bf16-matmul, whose chunks are bf16)")

/* The library options for mm, for a model of cfg on ctx (NULL: a host
 * estimate). --fused-ce without --ce-chunk-rows on a GPU: the library's
 * automatic chunks there, smj_ce_chunk_rows_auto (2^27 / V rows, 4096 at
 * V = 32768: ~18% faster than the host's 32 MiB chunks; twice that with
 * --fp16-activations and --bf16-matmul, and there the backend puts twice
 * the rows in each chunk), set explicitly so that the memory estimates
 * count them. */
smj_train_options cli_train_options(const cli_mem_flags *mm, const smj_model_config *cfg, const smj_ctx *ctx);
/* 0, or the usage error (printed) of flags that do not go together
 * (--ce-chunk-rows without --fused-ce). */
int cli_check_mem_flags(const char *cmd, const cli_mem_flags *mm);
/* " with --fused-ce ..." for the options that are on ("" when none). */
const char *cli_train_options_str(const smj_train_options *o, char *buf, size_t n);
/* One line "<what> ~TOTAL (weights W, grads G, AdamW A, activations X, scratch S)[ with --flags]"
 * for training cfg at (B, T) under the options of mm; on a CUDA context (ctx may be NULL) the
 * device workspace is added: "... + CUDA workspace ~X = ~Y on the device". */
void cli_print_train_memory(FILE *f, const char *what, const smj_model_config *cfg, int B, int T,
                            const cli_mem_flags *mm, const smj_ctx *ctx, int bf16_matmul);

/* Builds *cfg from the preset/custom flags in mf for vocabulary vocab and
 * training context T (seen: the command, to know which flags were given).
 * Validates with smj_config_validate. Returns 0, 1 or 2 (message printed). */
int cli_build_config(const char *cmd, smj_ctx *ctx, const cli_command *c,
                     const cli_model_flags *mf, int vocab, int T, smj_model_config *cfg);
/* Prints the model shape and size (one block) to f. */
void cli_print_config(FILE *f, const smj_model_config *cfg);
/* 1 when any shape flag (everything but --size) was given. */
int cli_shape_flags_seen(const cli_command *c);

/* ------------------------------------------------------------ subcommands */

int cmd_tokenizer(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_sizes(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
