/* train_log.h — the record a training run leaves: metrics.csv and the
 * progress display on stderr. Used only by cmd_train.c.
 */
#ifndef SMJ_CLI_TRAIN_LOG_H
#define SMJ_CLI_TRAIN_LOG_H

#include <stdint.h>
#include <stdio.h>
#include "smedjan.h"

#define METRICS_HEADER "step,loss,lr,grad_norm,tok_per_s,val_loss,skipped"

/* Opens <path> for appending one row per step. A fresh run (resume_step < 0)
 * starts a new file with the header. A resumed run keeps the header and the
 * rows with step <= resume_step (dropping rows a crashed run wrote after its
 * last checkpoint, so the file reads like one uninterrupted run), creating
 * the file when it is missing. Returns NULL after printing an error. */
FILE *metrics_open(const char *cmd, const char *path, int64_t resume_step);
/* Appends one row and flushes; val_loss is NAN when no evaluation happened. */
void metrics_row(FILE *f, const smj_step_stats *st, double tok_per_s, double val_loss);

/* The progress display: a line redrawn with \r on a terminal, else plain
 * lines. progress_note() prints a message on its own line without mangling
 * a live line. */
typedef struct {
    int tty;         /* stderr is a terminal */
    int line_open;   /* a \r line is on screen without its newline */
} progress;

void progress_init(progress *p);
void progress_step(progress *p, const smj_step_stats *st, int64_t total, double tok_per_s,
                   double eta_s);
void progress_note(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends a live line (before the final summary). */
void progress_end(progress *p);

#endif
