/* util.c — small helpers every subcommand uses: one-line error reporting,
 * creating the library context from --threads/--backend, reading whole
 * files, a monotonic clock and human-readable number formatting.
 *
 * Nothing here exits the process; each helper that can fail prints its
 * message in the "smedjan <cmd>: ..." form and returns the exit status the
 * caller should return (1 runtime, 2 usage).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "cli.h"

static void vreport(const char *cmd, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "smedjan %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return 2;
}

int cli_lib_error(const char *cmd, const smj_ctx *ctx, smj_status s, const char *what) {
    const char *msg = ctx ? smj_ctx_error(ctx) : NULL;
    if (!msg || !*msg) msg = smj_status_str(s);
    return cli_error(cmd, "%s: %s", what, msg);
}

/* Commands that use the GPU by default when there is one. */
static int auto_cuda_cmd(const char *cmd) {
    static const char *const names[] = {"train", "generate", "perplexity", "bench"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(cmd, names[i]) == 0) return 1;
    return 0;
}

/* The one-line note for --bf16-matmul where it does nothing. */
static void bf16_note(const char *cmd, const cli_compute *cc, smj_ctx *ctx) {
    if (cc->bf16_matmul && strcmp(smj_ctx_backend_name(ctx), "cuda") != 0)
        fprintf(stderr, "smedjan %s: note: --bf16-matmul applies to the CUDA backend only; the %s backend "
                        "computes in fp32\n", cmd, smj_ctx_backend_name(ctx));
}

int cli_make_ctx(const char *cmd, const cli_compute *cc, smj_ctx **out) {
    *out = NULL;
    smj_ctx_options o = {.threads = cc->threads, .backend = SMJ_BACKEND_CPU, .bf16_matmul = cc->bf16_matmul};
    if (strcmp(cc->backend, "ref") == 0) o.backend = SMJ_BACKEND_REF;
    else if (strcmp(cc->backend, "cpu") != 0)
        return cli_usage(cmd, "--backend: expected cpu or ref, got '%s'", cc->backend);
    const char *dev = cc->device && *cc->device ? cc->device : NULL;
    if (dev && strcmp(dev, "cpu") != 0 && strcmp(dev, "cuda") != 0)
        return cli_usage(cmd, "--device: expected cpu or cuda, got '%s'", dev);
    int cuda = dev && strcmp(dev, "cuda") == 0;
    if (cuda && o.backend == SMJ_BACKEND_REF)
        return cli_usage(cmd, "--backend ref runs on the CPU; it cannot be combined with --device cuda");
#ifdef SMJ_HAVE_CUDA
    if (!dev && o.backend == SMJ_BACKEND_CPU && auto_cuda_cmd(cmd)) {
        smj_ctx_options oc = o;
        oc.backend = SMJ_BACKEND_CUDA;
        smj_ctx *c = smj_ctx_create(&oc);
        if (c && smj_ctx_status(c) == SMJ_OK) {
            *out = c;
            bf16_note(cmd, cc, c);
            return 0;
        }
        smj_ctx_free(c); /* no usable GPU: the CPU it is */
    }
#else
    (void)auto_cuda_cmd;
#endif
    if (cuda) o.backend = SMJ_BACKEND_CUDA;
    *out = smj_ctx_create(&o);
    if (!*out) return cli_error(cmd, "out of memory creating the context");
    smj_status s = smj_ctx_status(*out);
    if (s != SMJ_OK) {
        int rc = cli_error(cmd, "--device cuda: %s", smj_ctx_error(*out));
        smj_ctx_free(*out);
        *out = NULL;
        return rc;
    }
    bf16_note(cmd, cc, *out);
    return 0;
}

int cli_read_file(const char *cmd, const char *path, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cli_error(cmd, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            fclose(f);
            return cli_error(cmd, "out of memory reading '%s'", path);
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *nb = cap > ((size_t)1 << 62) ? NULL : realloc(buf, cap * 2 + 1);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return cli_error(cmd, "cannot read '%s': read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

int cli_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int cli_make_dir(const char *cmd, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        return cli_error(cmd, "'%s' exists and is not a directory", path);
    }
    if (mkdir(path, 0777) != 0)
        return cli_error(cmd, "cannot create directory '%s': %s", path, strerror(errno));
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_fmt_count(char *buf, size_t n, int64_t v) {
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    size_t nd = strlen(digits), o = 0;
    if (v < 0 && o + 1 < n) buf[o++] = '-';
    for (size_t i = 0; i < nd && o + 2 < n; i++) {
        if (i > 0 && (nd - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

const char *cli_fmt_params(char *buf, size_t n, int64_t v) {
    double x = (double)v;
    if (x >= 1e9) snprintf(buf, n, "%.2fB", x / 1e9);
    else if (x >= 1e6) snprintf(buf, n, "%.1fM", x / 1e6);
    else if (x >= 1e3) snprintf(buf, n, "%.1fK", x / 1e3);
    else snprintf(buf, n, "%lld", (long long)v);
    return buf;
}

const char *cli_fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) snprintf(buf, n, "%.1f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0) snprintf(buf, n, "%.1f KiB", b / 1024.0);
    else snprintf(buf, n, "%.0f B", b);
    return buf;
}

const char *cli_fmt_duration(char *buf, size_t n, double s) {
    if (s < 0 || s != s) s = 0;
    if (s < 60) {
        snprintf(buf, n, "%.1fs", s);
    } else if (s < 3600) {
        long t = (long)(s + 0.5);
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    } else {
        long t = (long)(s / 60 + 0.5);
        snprintf(buf, n, "%ldh%02ldm", t / 60, t % 60);
    }
    return buf;
}

size_t cli_unescape(char *s) {
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] != '\\' || !s[i + 1]) {
            s[o++] = s[i];
            continue;
        }
        switch (s[++i]) {
        case 'n': s[o++] = '\n'; break;
        case 't': s[o++] = '\t'; break;
        case 'r': s[o++] = '\r'; break;
        case '\\': s[o++] = '\\'; break;
        default: s[o++] = '\\'; s[o++] = s[i]; break;
        }
    }
    s[o] = 0;
    return o;
}
