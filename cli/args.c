/* args.c — the flag parser and --help printer behind every subcommand.
 *
 * A subcommand declares its flags as a table of cli_flag (see cli.h) whose
 * dst pointers already hold the defaults; cli_parse() walks argv once,
 * converts and range-checks each value and writes it through dst. Anything
 * not in the table, a missing value, a value that is not a number or lies
 * outside its range is a usage error: one line naming the flag, status 2.
 *
 * Only long flags exist ("--steps 10" or "--steps=10"); there are no
 * positional arguments, so every stray word is an error too.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static cli_flag *find_flag(cli_command *c, const char *name, size_t len) {
    for (int i = 0; i < c->n_flags; i++)
        if (strlen(c->flags[i].name) == len && memcmp(c->flags[i].name, name, len) == 0)
            return &c->flags[i];
    return NULL;
}

/* "between 1 and 100" or "> 0 and <= 10" — for error messages. */
static void describe_range(const cli_flag *f, char *buf, size_t n) {
    if (f->open_min)
        snprintf(buf, n, "> %.10g and <= %.10g", f->min, f->max);
    else
        snprintf(buf, n, "between %.10g and %.10g", f->min, f->max);
}

/* Converts and stores one value; returns 0 or 2 (message printed). */
static int set_value(const cli_command *c, cli_flag *f, const char *v) {
    char range[96];
    if (f->kind == CLI_STR || f->kind == CLI_OPT_STR) {
        *(const char **)f->dst = v;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    if (f->kind == CLI_INT || f->kind == CLI_I64) {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno == ERANGE)
            return cli_usage(c->name, "--%s: expected an integer, got '%s'", f->name, v);
        if ((double)x < f->min || (double)x > f->max || (f->open_min && (double)x <= f->min)) {
            describe_range(f, range, sizeof range);
            return cli_usage(c->name, "--%s: must be %s, got %s", f->name, range, v);
        }
        if (f->kind == CLI_INT) *(int *)f->dst = (int)x;
        else *(int64_t *)f->dst = (int64_t)x;
        return 0;
    }
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x))
        return cli_usage(c->name, "--%s: expected a number, got '%s'", f->name, v);
    if (x < f->min || x > f->max || (f->open_min && x <= f->min)) {
        describe_range(f, range, sizeof range);
        return cli_usage(c->name, "--%s: must be %s, got %s", f->name, range, v);
    }
    *(float *)f->dst = (float)x;
    return 0;
}

int cli_parse(cli_command *c, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(c, stdout);
            return CLI_HELP_SHOWN;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return cli_usage(c->name, "unexpected argument '%s' (flags start with --; see --help)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = find_flag(c, name, len);
        if (!f)
            return cli_usage(c->name, "unknown flag '--%.*s' (see 'smedjan %s --help')", (int)len,
                             name, c->name);
        f->seen = 1;
        if (f->kind == CLI_SET || f->kind == CLI_CLEAR) {
            if (eq) return cli_usage(c->name, "--%s takes no value", f->name);
            *(int *)f->dst = f->kind == CLI_SET;
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (f->kind == CLI_OPT_STR) {
            /* The value is optional: take the next word unless it is a flag. */
            v = (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) ? argv[++i] : "";
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return cli_usage(c->name, "--%s needs a value (%s)", f->name, f->meta ? f->meta : "");
        }
        int rc = set_value(c, f, v);
        if (rc) return rc;
    }
    return 0;
}

int cli_seen(const cli_command *c, const char *name) {
    for (int i = 0; i < c->n_flags; i++)
        if (strcmp(c->flags[i].name, name) == 0) return c->flags[i].seen;
    return 0;
}

void cli_print_help(const cli_command *c, FILE *f) {
    fprintf(f, "usage: smedjan %s\n\n%s\n", c->usage, c->summary);
    if (c->n_flags) fprintf(f, "\nflags:\n");
    for (int i = 0; i < c->n_flags; i++) {
        const cli_flag *fl = &c->flags[i];
        if (!fl->help) continue;
        char left[64];
        if (fl->kind == CLI_SET || fl->kind == CLI_CLEAR)
            snprintf(left, sizeof left, "--%s", fl->name);
        else if (fl->kind == CLI_OPT_STR)
            snprintf(left, sizeof left, "--%s [%s]", fl->name, fl->meta);
        else
            snprintf(left, sizeof left, "--%s %s", fl->name, fl->meta);
        fprintf(f, "  %-26s %s\n", left, fl->help);
    }
    fprintf(f, "  %-26s %s\n", "--help", "show this help");
    if (c->notes) fprintf(f, "\n%s\n", c->notes);
}
