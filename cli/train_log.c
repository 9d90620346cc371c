/* train_log.c — metrics.csv and the progress line of `smedjan train`.
 *
 * metrics.csv has one row per optimizer step:
 *     step,loss,lr,grad_norm,tok_per_s,val_loss,skipped
 * loss and grad_norm are printed with 9 significant digits so that two runs
 * can be compared as text (the resume test does exactly that); val_loss is
 * empty on steps without an evaluation. Each row is flushed as written, so
 * the file is current even when the run is killed.
 */
#include "train_log.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

/* Rewrites path keeping the header and rows whose step <= keep_step.
 * Returns 0 or 1 (printed). */
static int metrics_truncate(const char *cmd, const char *path, int64_t keep_step) {
    uint8_t *data = NULL;
    size_t n = 0;
    if (cli_read_file(cmd, path, &data, &n)) return 1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(data);
        return cli_error(cmd, "cannot write '%s': %s", tmp, strerror(errno));
    }
    fputs(METRICS_HEADER "\n", f);
    char *line = (char *)data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *end = NULL;
        long long step = strtoll(line, &end, 10);
        if (end != line && *end == ',' && step <= keep_step) fprintf(f, "%s\n", line);
        line = nl ? nl + 1 : NULL;
    }
    free(data);
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return cli_error(cmd, "cannot rewrite '%s': %s", path, strerror(errno));
    }
    return 0;
}

FILE *metrics_open(const char *cmd, const char *path, int64_t resume_step) {
    int fresh = resume_step < 0 || !cli_file_exists(path);
    if (!fresh && metrics_truncate(cmd, path, resume_step)) return NULL;
    FILE *f = fopen(path, fresh ? "w" : "a");
    if (!f) {
        cli_error(cmd, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (fresh) {
        fputs(METRICS_HEADER "\n", f);
        fflush(f);
    }
    return f;
}

void metrics_row(FILE *f, const smj_step_stats *st, double tok_per_s, double val_loss) {
    char val[32] = "";
    if (!isnan(val_loss)) snprintf(val, sizeof val, "%.6f", val_loss);
    fprintf(f, "%lld,%.9g,%.6g,%.9g,%.0f,%s,%d\n", (long long)st->step, (double)st->loss,
            (double)st->lr, (double)st->grad_norm, tok_per_s, val, st->skipped);
    fflush(f);
}

void progress_init(progress *p) {
    p->tty = isatty(2);
    p->line_open = 0;
}

void progress_step(progress *p, const smj_step_stats *st, int64_t total, double tok_per_s,
                   double eta_s) {
    char tok[32], eta[32];
    cli_fmt_count(tok, sizeof tok, (int64_t)(tok_per_s + 0.5));
    cli_fmt_duration(eta, sizeof eta, eta_s);
    fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.1e | gnorm %.3f | %s tok/s | ETA %s%s",
            p->tty ? "\r\033[K" : "", (long long)st->step, (long long)total, (double)st->loss,
            (double)st->lr, (double)st->grad_norm, tok, eta, p->tty ? "" : "\n");
    p->line_open = p->tty;
    fflush(stderr);
}

void progress_note(progress *p, const char *fmt, ...) {
    progress_end(p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void progress_end(progress *p) {
    if (p->line_open) fputc('\n', stderr);
    p->line_open = 0;
}
