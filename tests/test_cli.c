/* test_cli.c — end-to-end tests of the `smedjan` program (smj_bin()).
 *
 * Everything runs in a fresh temp directory with tiny settings so the whole
 * program takes seconds:
 *   1. help/version: every subcommand's --help exits 0 and prints usage;
 *   2. the pipeline: a generated text -> tokenizer (vocab 300) -> prepare
 *      with a validation split -> train a 1-layer, 32-wide model for 6 steps
 *      with checkpoints every 3 -> the files it promises exist and
 *      metrics.csv has 6 rows; then info, generate (same seed, same text),
 *      perplexity, sizes and bench;
 *   3. resume: 3 of 6 steps (--stop-at 3) then --resume must reproduce the
 *      loss column of the uninterrupted run character for character;
 *   4. Ctrl-C: a running train exits 130 with its state saved;
 *   5. bad input: missing and corrupt files, truncated checkpoints, bad
 *      numbers and unknown flags/commands must fail with a non-zero status
 *      and ONE line on stderr naming the file or flag, leaving no output.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "util/check.h"

static char dir[600];

/* dir/name in a rotating set of static buffers (enough for one command). */
static const char *P(const char *name) {
    static char bufs[8][1200];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Whole file as a NUL-terminated string (NULL when missing). */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static int exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* Column col (0-based) of every data row of a metrics.csv, one per line. */
static char *csv_column(const char *path, int col) {
    char *s = read_text(path);
    if (!s) return NULL;
    char *out = calloc(strlen(s) + 1, 1);
    size_t o = 0;
    char *line = strchr(s, '\n'); /* skip the header */
    while (line && *++line) {
        char *nl = strchr(line, '\n'), *p = line;
        for (int i = 0; i < col && p; i++) p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL;
        while (p && *p && *p != ',' && *p != '\n') out[o++] = *p++;
        out[o++] = '\n';
        line = nl;
    }
    free(s);
    return out;
}

/* Runs `smedjan ARGS` with stdout to /dev/null and stderr to dir/err;
 * returns the exit status. */
#define RUN(...) run_cmd("%s " __VA_ARGS__)
#define SMJ smj_bin()

/* The failure contract: status want_rc (or any non-zero when 0), exactly one
 * non-empty line on stderr, mentioning needle. */
static void expect_failure(int rc, int want_rc, const char *needle, const char *what) {
    CHECK(want_rc ? rc == want_rc : rc != 0, "%s: exit status %d, want %d", what, rc, want_rc);
    char *err = read_text(P("err"));
    CHECK(err && count_lines(err) == 1 && err[0] != '\n', "%s: want one stderr line, got '%s'",
          what, err ? err : "(none)");
    CHECK(err && strstr(err, needle), "%s: stderr '%s' does not mention '%s'", what,
          err ? err : "", needle);
    CHECK(err && strncmp(err, "smedjan", 7) == 0, "%s: message should start with 'smedjan'", what);
    free(err);
}

static void make_corpus(void) {
    static const char *words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran",
                                  "to", "see", "big", "red", "sun", "in", "sky", "forge", "iron"};
    char *text = malloc(16384);
    size_t o = 0;
    uint64_t x = 42;
    for (int doc = 0; doc < 40; doc++) {
        for (int w = 0; w < 25; w++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            o += (size_t)sprintf(text + o, "%s%s", w ? " " : "", words[x % 18]);
        }
        o += (size_t)sprintf(text + o, ".\n\n");
    }
    write_file(P("corpus.txt"), text, o);
    free(text);
}

static const char *model_flags =
    "--size custom --dim 32 --layers 1 --heads 2 --batch-size 2 --seq-len 16 --threads 2";

static void test_help(void) {
    static const char *cmds[] = {"tokenizer", "prepare", "train", "generate", "perplexity",
                                 "info", "sizes", "bench"};
    CHECK(RUN("--help >%s", SMJ, P("out")) == 0, "smedjan --help");
    CHECK(RUN("help >%s", SMJ, P("out")) == 0, "smedjan help");
    char *out = read_text(P("out"));
    CHECK(out && strstr(out, "generate") && strstr(out, "perplexity"), "help lists commands");
    free(out);
    CHECK(RUN("--version >%s", SMJ, P("out")) == 0, "--version");
    out = read_text(P("out"));
    CHECK(out && strstr(out, SMJ_VERSION_STRING), "--version prints %s", SMJ_VERSION_STRING);
    free(out);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        CHECK(RUN("%s --help >%s", SMJ, cmds[i], P("out")) == 0, "%s --help", cmds[i]);
        out = read_text(P("out"));
        char want[64];
        snprintf(want, sizeof want, "usage: smedjan %s", cmds[i]);
        CHECK(out && strstr(out, want), "%s --help prints its usage", cmds[i]);
        free(out);
    }
    CHECK(RUN("2>%s", SMJ, P("err")) == 2, "no command is a usage error");
}

static void test_pipeline(void) {
    int rc = RUN("tokenizer --input %s --vocab-size 300 --output %s 2>%s", SMJ, P("corpus.txt"),
                 P("tok.bin"), P("log"));
    CHECK(rc == 0 && exists(P("tok.bin")), "tokenizer: rc %d", rc);
    char *log = read_text(P("log"));
    CHECK(log && strstr(log, "bytes/token"), "tokenizer reports the compression");
    free(log);
    rc = RUN("prepare --input %s --tokenizer %s --output %s --val-output %s "
             "--doc-separator '\\n\\n' 2>%s", SMJ, P("corpus.txt"), P("tok.bin"),
             P("train.bin"), P("val.bin"), P("log"));
    CHECK(rc == 0 && exists(P("train.bin")) && exists(P("val.bin")), "prepare: rc %d", rc);

    rc = RUN("train --dataset %s --tokenizer %s --val-dataset %s %s --steps 6 "
             "--checkpoint-interval 3 --checkpoint-dir %s 2>%s", SMJ, P("train.bin"),
             P("tok.bin"), P("val.bin"), model_flags, P("ck"), P("log"));
    CHECK(rc == 0, "train: rc %d", rc);
    CHECK(exists(P("ck/model.ckpt")) && exists(P("ck/state.bin")) && exists(P("ck/best.ckpt")),
          "train writes model.ckpt, state.bin, best.ckpt");
    char *m = read_text(P("ck/metrics.csv"));
    CHECK(m && strncmp(m, "step,loss,lr,grad_norm,tok_per_s,val_loss,skipped\n", 49) == 0,
          "metrics.csv header");
    CHECK(count_lines(m) == 7, "metrics.csv has 6 rows, got %d lines", count_lines(m));
    free(m);
    char *val = csv_column(P("ck/metrics.csv"), 5);
    CHECK(val && strncmp(val, "\n\n", 2) == 0 && val[2] != '\n' && strlen(val) > 12,
          "val_loss logged at steps 3 and 6: '%s'", val ? val : "");
    free(val);

    rc = RUN("info --checkpoint %s >%s 2>%s", SMJ, P("ck/model.ckpt"), P("out"), P("err"));
    char *out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "model.layers.0.self_attn.q_proj.weight"),
          "info lists tensors (rc %d)", rc);
    free(out);
    rc = RUN("info --checkpoint %s >%s 2>%s", SMJ, P("ck/state.bin"), P("out"), P("err"));
    out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "training state"), "info on a training state (rc %d)", rc);
    free(out);

    int rc1 = RUN("generate --checkpoint %s --tokenizer %s --prompt 'the cat' --max-tokens 5 "
              "--seed 1 >%s 2>%s", SMJ, P("ck/model.ckpt"), P("tok.bin"), P("gen1"), P("err"));
    int rc2 = RUN("generate --checkpoint %s --tokenizer %s --prompt 'the cat' --max-tokens 5 "
                  "--seed 1 --no-stream >%s 2>%s", SMJ, P("ck/model.ckpt"), P("tok.bin"),
                  P("gen2"), P("err"));
    char *g1 = read_text(P("gen1")), *g2 = read_text(P("gen2"));
    CHECK(rc1 == 0 && rc2 == 0, "generate: rc %d %d", rc1, rc2);
    CHECK(g1 && g2 && strcmp(g1, g2) == 0 && strncmp(g1, "the cat", 7) == 0,
          "generate is deterministic for a seed: '%s' vs '%s'", g1, g2);
    free(g1);
    free(g2);
    /* greedy (chunks of smj_session_greedy) == sampling that keeps only the top token */
    rc1 = RUN("generate --checkpoint %s --tokenizer %s --prompt 'the' --max-tokens 40 --temperature 0 >%s 2>%s",
              SMJ, P("ck/model.ckpt"), P("tok.bin"), P("gen1"), P("err"));
    rc2 = RUN("generate --checkpoint %s --tokenizer %s --prompt 'the' --max-tokens 40 --temperature 0.5 --top-k 1 "
              ">%s 2>%s", SMJ, P("ck/model.ckpt"), P("tok.bin"), P("gen2"), P("err"));
    g1 = read_text(P("gen1"));
    g2 = read_text(P("gen2"));
    CHECK(rc1 == 0 && rc2 == 0 && g1 && g2 && strcmp(g1, g2) == 0 && strlen(g1) > 10,
          "generate --temperature 0 (rc %d) equals --top-k 1 sampling (rc %d): '%s' vs '%s'", rc1, rc2, g1, g2);
    free(g1);
    free(g2);

    rc = RUN("perplexity --checkpoint %s --tokenizer %s --input %s >%s 2>%s", SMJ,
             P("ck/model.ckpt"), P("tok.bin"), P("corpus.txt"), P("out"), P("err"));
    out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "perplexity:") && strstr(out, "bits per byte:"),
          "perplexity (rc %d)", rc);
    free(out);
    rc = RUN("sizes >%s", SMJ, P("out"));
    out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "tiny") && strstr(out, "params"), "sizes (rc %d)", rc);
    free(out);
    rc = RUN("bench %s --steps 2 --warmup 1 --decode-tokens 8 --vocab-size 300 >%s 2>%s", SMJ,
             model_flags, P("out"), P("err"));
    out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "\"train_tok_s\":") && strstr(out, "\"peak_rss_mb\":"),
          "bench prints a JSON line (rc %d)", rc);
    free(out);
}

static void test_resume(void) {
    const char *common = "--steps 6 --checkpoint-interval 3";
    int rc = RUN("train --dataset %s --tokenizer %s --val-dataset %s %s %s --stop-at 3 "
                 "--checkpoint-dir %s 2>%s", SMJ, P("train.bin"), P("tok.bin"), P("val.bin"),
                 model_flags, common, P("ck2"), P("log"));
    CHECK(rc == 0, "train --stop-at 3: rc %d", rc);
    char *m = read_text(P("ck2/metrics.csv"));
    CHECK(count_lines(m) == 4, "3 rows before the resume");
    free(m);
    rc = RUN("train --dataset %s --tokenizer %s --val-dataset %s %s %s --resume "
             "--checkpoint-dir %s 2>%s", SMJ, P("train.bin"), P("tok.bin"), P("val.bin"),
             model_flags, common, P("ck2"), P("log"));
    CHECK(rc == 0, "train --resume: rc %d", rc);
    char *a = csv_column(P("ck/metrics.csv"), 1), *b = csv_column(P("ck2/metrics.csv"), 1);
    CHECK(a && b && strcmp(a, b) == 0, "resumed losses differ:\n%s---\n%s", a, b);
    free(a);
    free(b);
    a = csv_column(P("ck/metrics.csv"), 5);
    b = csv_column(P("ck2/metrics.csv"), 5);
    CHECK(a && b && strcmp(a, b) == 0, "resumed val losses differ:\n%s---\n%s", a, b);
    free(a);
    free(b);
    rc = RUN("train --dataset %s --tokenizer %s %s %s --resume --checkpoint-dir %s 2>%s", SMJ,
             P("train.bin"), P("tok.bin"), model_flags, common, P("ck2"), P("log"));
    CHECK(rc == 0, "resuming a finished run is a no-op: rc %d", rc);
}

/* The memory flags: --gradient-checkpointing reproduces the plain run's
 * losses bit for bit, with --fused-ce too to float rounding; train, sizes,
 * info and bench print the estimate for the flags; --bf16-matmul is
 * accepted and noted on the CPU. */
static void test_memory_flags(void) {
    static const char *const flags[2] = {"--gradient-checkpointing", "--fused-ce --gradient-checkpointing"};
    for (int k = 0; k < 2; k++) {
        int rc = RUN("train --dataset %s --tokenizer %s --val-dataset %s %s --steps 6 --checkpoint-interval 3 "
                     "%s --checkpoint-dir %s 2>%s", SMJ, P("train.bin"), P("tok.bin"), P("val.bin"), model_flags,
                     flags[k], P(k ? "ck_mem2" : "ck_mem1"), P("log"));
        CHECK(rc == 0, "train %s: rc %d", flags[k], rc);
        char *log = read_text(P("log")), want[96];
        snprintf(want, sizeof want, "with %s", flags[k]);
        CHECK(log && strstr(log, "memory: ~") && strstr(log, want), "train %s prints its estimate:\n%s", flags[k],
              log ? log : "");
        free(log);
        for (int col = 1; col <= 5; col += 4) {
            char *a = csv_column(P("ck/metrics.csv"), col), *b = csv_column(P(k ? "ck_mem2/metrics.csv" : "ck_mem1/metrics.csv"), col);
            if (k == 0) {
                CHECK(a && b && strcmp(a, b) == 0, "%s: losses differ:\n%s---\n%s", flags[k], a, b);
            } else {
                int same = a && b;
                for (char *p = a, *q = b; same && *p && *q; p = strchr(p, '\n') + 1, q = strchr(q, '\n') + 1) {
                    double x = atof(p), y = atof(q);
                    same = fabs(x - y) <= 1e-5 * fabs(x) && (*p == '\n') == (*q == '\n');
                }
                CHECK(same, "%s: losses differ:\n%s---\n%s", flags[k], a, b);
            }
            free(a);
            free(b);
        }
    }
    int rc = RUN("sizes --ce-chunk-rows 64 >%s 2>%s", SMJ, P("out"), P("err"));
    char *err = read_text(P("err"));
    CHECK(rc == 2 && err && strstr(err, "--ce-chunk-rows") && strstr(err, "--fused-ce"),
          "--ce-chunk-rows without --fused-ce is a usage error (rc %d)", rc);
    free(err);
    rc = RUN("sizes --fused-ce --ce-chunk-rows 64 --batch-size 8 --seq-len 128 >%s", SMJ, P("out"));
    char *small = read_text(P("out"));
    rc |= RUN("sizes --fused-ce --batch-size 8 --seq-len 128 >%s", SMJ, P("out"));
    char *dflt = read_text(P("out"));
    CHECK(rc == 0 && small && dflt && strcmp(small, dflt) != 0, "--ce-chunk-rows changes the fused-ce estimate (rc %d)",
          rc);
    free(small);
    free(dflt);
    rc = RUN("sizes --fused-ce --gradient-checkpointing >%s", SMJ, P("out"));
    char *out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "tiny") && strstr(out, "with --fused-ce --gradient-checkpointing"),
          "sizes with the memory flags (rc %d)", rc);
    free(out);
    rc = RUN("info --checkpoint %s --fused-ce --batch-size 4 --seq-len 16 >%s 2>%s", SMJ, P("ck/model.ckpt"), P("out"),
             P("err"));
    out = read_text(P("out"));
    CHECK(rc == 0 && out && strstr(out, "B=4 T=16 ~") && strstr(out, "with --fused-ce"), "info --fused-ce (rc %d)",
          rc);
    free(out);
    rc = RUN("bench %s --steps 1 --warmup 0 --decode-tokens 2 --vocab-size 300 --fused-ce --gradient-checkpointing "
             "--bf16-matmul --device cpu >%s 2>%s", SMJ, model_flags, P("out"), P("err"));
    out = read_text(P("err"));
    CHECK(rc == 0 && out && strstr(out, "estimate  training ~") && strstr(out, "--gradient-checkpointing") &&
              strstr(out, "note: --bf16-matmul"),
          "bench with the memory flags and --bf16-matmul (rc %d): %s", rc, out ? out : "");
    free(out);
    rc = RUN("generate --checkpoint %s --tokenizer %s --max-tokens 2 --bf16-matmul --device cpu >%s 2>%s", SMJ,
             P("ck/model.ckpt"), P("tok.bin"), P("out"), P("err"));
    out = read_text(P("err"));
    CHECK(rc == 0 && out && strstr(out, "note: --bf16-matmul applies to the CUDA backend only"),
          "generate --bf16-matmul --device cpu notes it (rc %d)", rc);
    free(out);
}

/* --init: continued training from a model checkpoint (its shape and weights,
 * fresh optimizer): the first loss equals the checkpoint's loss on that batch,
 * so it is well below a fresh model's first loss. */
static void test_init(void) {
    int rc = RUN("train --dataset %s --tokenizer %s --steps 40 --lr 1e-2 %s --checkpoint-dir %s 2>%s", SMJ,
                 P("train.bin"), P("tok.bin"), model_flags, P("ck_base"), P("log"));
    CHECK(rc == 0, "train 40 steps: rc %d", rc);
    rc = RUN("train --dataset %s --tokenizer %s --steps 3 --init %s --batch-size 2 --seq-len 16 "
             "--threads 2 --checkpoint-dir %s 2>%s", SMJ, P("train.bin"), P("tok.bin"), P("ck_base/model.ckpt"),
             P("ck_init"), P("log"));
    CHECK(rc == 0, "train --init: rc %d", rc);
    char *fresh = csv_column(P("ck_base/metrics.csv"), 1), *cont = csv_column(P("ck_init/metrics.csv"), 1);
    double f0 = fresh ? atof(fresh) : 0, c0 = cont ? atof(cont) : 1e9;
    CHECK(fresh && cont && c0 < f0 - 0.5, "--init continues from the trained weights: first loss %.4f vs fresh %.4f",
          c0, f0);
    free(fresh);
    free(cont);
    rc = RUN("train --dataset %s --tokenizer %s --init %s --resume --checkpoint-dir %s 2>%s", SMJ, P("train.bin"),
             P("tok.bin"), P("ck_base/model.ckpt"), P("ck_init"), P("err"));
    expect_failure(rc, 2, "--init", "--init with --resume");
    rc = RUN("train --dataset %s --tokenizer %s --init %s --checkpoint-dir %s 2>%s", SMJ, P("train.bin"),
             P("tok.bin"), P("corpus.txt"), P("ck_init2"), P("err"));
    expect_failure(rc, 1, "corpus.txt", "--init of a text file");
}

/* Ctrl-C during training: the step finishes, the state is saved, status 130,
 * and --resume carries on from there. */
static void test_interrupt(void) {
    int rc = run_cmd("%s train --dataset %s --tokenizer %s %s --steps 100000000 "
                     "--checkpoint-dir %s 2>%s & pid=$!; "
                     "i=0; while [ \"$(cat %s 2>/dev/null | wc -l)\" -lt 4 ] && [ $i -lt 1200 ] && "
                     "kill -0 $pid 2>/dev/null; do sleep 0.05; i=$((i+1)); done; "
                     "kill -INT $pid; wait $pid", SMJ, P("train.bin"), P("tok.bin"), model_flags,
                     P("ck3"), P("log"), P("ck3/metrics.csv"));
    CHECK(rc == 130, "interrupted train exits 130, got %d", rc);
    CHECK(exists(P("ck3/state.bin")) && exists(P("ck3/model.ckpt")), "interrupt saves the state");
    char *log = read_text(P("log"));
    CHECK(log && strstr(log, "interrupted at step"), "interrupt is reported");
    free(log);
    rc = RUN("info --checkpoint %s >/dev/null 2>%s", SMJ, P("ck3/state.bin"), P("err"));
    CHECK(rc == 0, "the saved state is readable");
}

static void test_bad_input(void) {
    uint8_t junk[4096];
    uint64_t x = 7;
    for (size_t i = 0; i < sizeof junk; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        junk[i] = (uint8_t)x;
    }
    write_file(P("junk.bin"), junk, sizeof junk);
    char *ck = read_text(P("ck/model.ckpt"));
    FILE *f = fopen(P("ck/model.ckpt"), "rb");
    long n = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fclose(f);
    }
    write_file(P("half.ckpt"), ck ? ck : "", (size_t)n / 2);
    free(ck);

    int rc = RUN("tokenizer --input %s --vocab-size 300 --output %s 2>%s", SMJ, P("missing.txt"),
                 P("o1.bin"), P("err"));
    expect_failure(rc, 1, "missing.txt", "tokenizer with a missing input");
    CHECK(!exists(P("o1.bin")), "failed tokenizer leaves no output");
    rc = RUN("prepare --input %s --tokenizer %s --output %s 2>%s", SMJ, P("corpus.txt"),
             P("junk.bin"), P("o2.bin"), P("err"));
    expect_failure(rc, 1, "junk.bin", "prepare with a junk tokenizer");
    CHECK(!exists(P("o2.bin")), "failed prepare leaves no output");
    rc = RUN("prepare --input %s --tokenizer %s --output %s 2>%s", SMJ, P("missing.txt"),
             P("tok.bin"), P("o3.bin"), P("err"));
    expect_failure(rc, 1, "missing.txt", "prepare with a missing input");
    CHECK(!exists(P("o3.bin")), "failed prepare leaves no output");

    rc = RUN("train --dataset %s --tokenizer %s %s --steps 2 --checkpoint-dir %s 2>%s", SMJ,
             P("junk.bin"), P("tok.bin"), model_flags, P("ckbad"), P("err"));
    expect_failure(rc, 1, "junk.bin", "train with a junk dataset");
    rc = RUN("train --dataset %s --tokenizer %s %s --steps 2 --checkpoint-dir %s 2>%s", SMJ,
             P("train.bin"), P("junk.bin"), model_flags, P("ckbad"), P("err"));
    expect_failure(rc, 1, "junk.bin", "train with a junk tokenizer");
    rc = RUN("train --dataset %s --tokenizer %s %s --resume %s --checkpoint-dir %s 2>%s", SMJ,
             P("train.bin"), P("tok.bin"), model_flags, P("half.ckpt"), P("ckbad"), P("err"));
    expect_failure(rc, 1, "half.ckpt", "train --resume of a truncated file");
    rc = RUN("generate --checkpoint %s --tokenizer %s 2>%s", SMJ, P("junk.bin"), P("tok.bin"),
             P("err"));
    expect_failure(rc, 1, "junk.bin", "generate with a junk checkpoint");
    rc = RUN("generate --checkpoint %s --tokenizer %s 2>%s", SMJ, P("half.ckpt"), P("tok.bin"),
             P("err"));
    expect_failure(rc, 1, "half.ckpt", "generate with a truncated checkpoint");
    rc = RUN("generate --checkpoint %s --tokenizer %s 2>%s", SMJ, P("ck/model.ckpt"),
             P("junk.bin"), P("err"));
    expect_failure(rc, 1, "junk.bin", "generate with a junk tokenizer");
    rc = RUN("info --checkpoint %s >/dev/null 2>%s", SMJ, P("half.ckpt"), P("err"));
    expect_failure(rc, 1, "half.ckpt", "info on a truncated checkpoint");
    rc = RUN("info --checkpoint %s >/dev/null 2>%s", SMJ, P("missing.ckpt"), P("err"));
    expect_failure(rc, 1, "missing.ckpt", "info on a missing file");
    rc = RUN("perplexity --checkpoint %s --tokenizer %s --input %s 2>%s", SMJ, P("ck/model.ckpt"),
             P("tok.bin"), P("missing.txt"), P("err"));
    expect_failure(rc, 1, "missing.txt", "perplexity with a missing input");

    static const struct { const char *flags, *needle; } usage[] = {
        {"--steps abc", "--steps"},          {"--lr -1", "--lr"},
        {"--batch-size 0", "--batch-size"},  {"--bogus 1", "--bogus"},
        {"--schedule nope", "--schedule"},   {"--seq-len", "--seq-len"},
        {"--size huge", "huge"},             {"--grad-clip x1", "--grad-clip"},
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        rc = RUN("train --dataset %s --tokenizer %s --checkpoint-dir %s %s 2>%s", SMJ,
                 P("train.bin"), P("tok.bin"), P("ckbad"), usage[i].flags, P("err"));
        expect_failure(rc, 2, usage[i].needle, usage[i].flags);
    }
    rc = RUN("frobnicate 2>%s", SMJ, P("err"));
    expect_failure(rc, 2, "frobnicate", "unknown subcommand");
    CHECK(!exists(P("ckbad/model.ckpt")), "failed runs save no checkpoint");

    /* A dataset made with a larger tokenizer does not fit a smaller one. */
    rc = RUN("tokenizer --input %s --vocab-size 400 --output %s 2>/dev/null", SMJ,
             P("corpus.txt"), P("tok400.bin"));
    rc |= RUN("prepare --input %s --tokenizer %s --output %s 2>/dev/null", SMJ, P("corpus.txt"),
              P("tok400.bin"), P("train400.bin"));
    CHECK(rc == 0, "tokenizer/prepare with vocab 400");
    rc = RUN("train --dataset %s --tokenizer %s %s --steps 2 --checkpoint-dir %s 2>%s", SMJ,
             P("train400.bin"), P("tok.bin"), model_flags, P("ckbad"), P("err"));
    expect_failure(rc, 1, "vocab", "dataset vocab larger than the tokenizer's");
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    make_corpus();
    test_help();
    test_pipeline();
    test_resume();
    test_memory_flags();
    test_init();
    test_interrupt();
    test_bad_input();
    run_cmd("rm -rf '%s'", dir);
    return check_summary("test_cli");
}
