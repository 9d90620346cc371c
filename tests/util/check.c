/* check.c — see check.h. */
#include "check.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

long check_count, check_failed;

void check_fail(const char *file, int line, const char *fmt, ...) {
    check_failed++;
    if (check_failed > 50) return;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int check_summary(const char *name) {
    printf("%s: %ld checks, %ld failed\n", name, check_count, check_failed);
    if (check_count == 0) fprintf(stderr, "%s: no check ran\n", name);
    return check_failed || check_count == 0;
}

double rel_l2(const float *a, const float *b, int64_t n) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        d += e * e;
        r += (double)b[i] * b[i];
    }
    if (d != d) return INFINITY;
    return sqrt(d) / (sqrt(r) > 1e-30 ? sqrt(r) : 1e-30);
}

double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e != e) return INFINITY;
        if (e > m) m = e;
    }
    return m;
}

int run_cmd(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *test_tmpdir(void) {
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/smj-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    }
    return dir;
}

const char *smj_bin(void) {
    const char *b = getenv("SMJ_BIN");
    return b && *b ? b : "build/smedjan";
}

void bf16_test_inputs(float *x, int64_t n, uint64_t seed) {
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x3F800000u, 0xBF800000u,
        0x3F808000u, 0x3F818000u, 0xBF808000u, 0xBF818000u, /* ties: to even (down), to even (up) */
        0x3F808001u, 0x3F807FFFu,                           /* just above / below halfway */
        0x00000001u, 0x00008000u, 0x00018000u, 0x007FFFFFu, 0x807FFFFFu, /* subnormals */
        0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu, 0xFF7FFFFFu, /* largest finite: stays, ties up to Inf, Inf */
        0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00001u, 0x7F800001u, /* Inf, NaN (quiet, signalling) */
        0x40490FDBu, 0x3EAAAAABu};                          /* pi, 1/3 */
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint32_t b;
        if (i < (int64_t)(sizeof special / sizeof special[0])) b = special[i];
        else if (i % 3 == 0) b = (uint32_t)(s >> 32);
        else {
            double mag = pow(10.0, -30.0 + 60.0 * (double)(s >> 11) / 9007199254740992.0);
            float f = (float)((s & 1) ? -mag : mag);
            memcpy(&b, &f, 4);
        }
        memcpy(x + i, &b, 4);
    }
}
