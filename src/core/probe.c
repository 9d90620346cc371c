/* probe.c — what a context's backend can do, measured and reported:
 * the matmul ceiling (the rate of one large square product through the
 * backend's own matmul op, in the context's precision), device memory and
 * the per-op device-time profile of device backends. `smedjan bench` prints
 * these beside its throughput (MFU against the card's peak and against the
 * measured ceiling).
 */
#include <time.h>
#include "core.h"
#include "../ops/ops.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

smj_status smj_ctx_matmul_tflops(smj_ctx *ctx, int n, double *tflops) {
    *tflops = 0;
    SMJ_CHECK(ctx, n >= 16 && n <= 32768, SMJ_ERR_INVALID, "matmul probe size %d must be in [16, 32768]", n);
    const smj_backend *be = ctx->backend;
    size_t nn = (size_t)n * (size_t)n;
    float *A = be->alloc(sizeof(float) * nn), *B = be->alloc(sizeof(float) * nn), *C = be->alloc(sizeof(float) * nn);
    float *h = malloc(sizeof(float) * nn);
    smj_status st = SMJ_OK;
    if (!A || !B || !C || !h) {
        st = smj_set_error(ctx, SMJ_ERR_NOMEM, "out of memory for a %d x %d matmul probe", n, n);
        goto done;
    }
    /* random data: zeros run faster than real operands on some hardware */
    smj_rng rng;
    smj_rng_seed(&rng, 7);
    for (size_t i = 0; i < nn; i++) h[i] = (float)smj_rng_uniform(&rng) - 0.5f;
    be->upload(A, h, sizeof(float) * nn);
    for (size_t i = 0; i < nn; i++) h[i] = (float)smj_rng_uniform(&rng) - 0.5f;
    be->upload(B, h, sizeof(float) * nn);
    /* warm-up, then repeat until ~0.3 s; C = A · B^T as a forward linear */
    be->matmul(&ctx->exec, C, A, B, n, n, n, 0, 1, 0);
    if ((st = smj_ctx_status(ctx)) != SMJ_OK) goto done;
    int reps = 0;
    double t0 = now_s(), t = 0;
    do {
        be->matmul(&ctx->exec, C, A, B, n, n, n, 0, 1, 0);
        reps++;
        if (reps % 4 == 0 || reps == 1) {
            if ((st = smj_ctx_status(ctx)) != SMJ_OK) goto done; /* synchronizes device backends */
            t = now_s() - t0;
        }
    } while (t < 0.3 && reps < 1000);
    if ((st = smj_ctx_status(ctx)) != SMJ_OK) goto done;
    t = now_s() - t0;
    *tflops = 2.0 * (double)n * n * n * reps / t / 1e12;
done:
    be->free(A);
    be->free(B);
    be->free(C);
    free(h);
    return st;
}

smj_status smj_ctx_device_memory(smj_ctx *ctx, size_t *used, size_t *total) {
    *used = *total = 0;
    const smj_backend *be = ctx->backend;
    SMJ_CHECK(ctx, be->mem_info, SMJ_ERR_UNSUPPORTED, "the %s backend has no device memory", be->name);
    SMJ_CHECK(ctx, be->mem_info(&ctx->exec, used, total), SMJ_ERR_UNSUPPORTED,
              "the %s backend could not read the device's memory", be->name);
    return SMJ_OK;
}

smj_status smj_ctx_profile(smj_ctx *ctx, int on) {
    const smj_backend *be = ctx->backend;
    SMJ_CHECK(ctx, be->profile, SMJ_ERR_UNSUPPORTED, "the %s backend keeps no per-op profile", be->name);
    be->profile(&ctx->exec, on);
    return smj_ctx_status(ctx);
}

int smj_ctx_profile_rows(smj_ctx *ctx, smj_profile_row *rows, int max_rows) {
    const smj_backend *be = ctx->backend;
    return be->profile_rows && max_rows > 0 ? be->profile_rows(&ctx->exec, rows, max_rows) : 0;
}
