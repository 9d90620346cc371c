/* check.h — the tiny assertion kit every test program uses.
 *
 * CHECK(cond, fmt, ...) counts a check and reports a failure with file:line;
 * the program's exit code is the verdict: return check_summary() from main,
 * which prints "<name>: N checks, M failed" and returns 1 on any failure or
 * when no check ran at all (a test that asserts nothing fails).
 */
#ifndef SMJ_TEST_CHECK_H
#define SMJ_TEST_CHECK_H
#include <stdio.h>
#include <stdint.h>
#include "smedjan.h"

extern long check_count, check_failed;
void check_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int check_summary(const char *name);

#define CHECK(cond, ...) do { check_count++; if (!(cond)) check_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_OK(ctx, expr) do { smj_status s_ = (expr); CHECK(s_ == SMJ_OK, "%s -> %s: %s", #expr, \
    smj_status_str(s_), smj_ctx_error(ctx)); } while (0)

/* Relative L2 error ||a-b|| / max(||b||, tiny), in double. */
double rel_l2(const float *a, const float *b, int64_t n);
double max_abs_diff(const float *a, const float *b, int64_t n);
/* Runs a shell command, returns its exit status (-1 if it did not exit). */
int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A fresh empty directory under $TMPDIR for this test program. */
const char *test_tmpdir(void);
/* Path of the smedjan binary (env SMJ_BIN, default build/smedjan). */
const char *smj_bin(void);
/* Inputs for the bf16 storage ops (bf16_pack/unpack): special values first
 * (signed zeros, halfway cases that round down and up, subnormals, the
 * largest finite values with and without overflow, Inf, NaN), then, seeded,
 * random bit patterns and random values of magnitudes 1e-30..1e30. */
void bf16_test_inputs(float *x, int64_t n, uint64_t seed);
#endif
