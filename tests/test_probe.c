/* test_probe.c — the measuring API of src/core/probe.c, which `smedjan
 * bench` prints: the matmul ceiling (bad sizes refused, a positive finite
 * rate otherwise), and on host backends the refusal of device memory and
 * per-op profiles. In a CUDA build with a usable GPU the same program also
 * checks the device side: memory in use within the total, a profile of a
 * forward pass that names the matmul and attention ops, is sorted by time,
 * and honours max_rows; without a GPU that part prints SKIP.
 */
#include <math.h>
#include <string.h>
#include "util/check.h"

static smj_model *tiny_model(smj_ctx *ctx) {
    smj_model_config cfg;
    smj_model *m = NULL;
    if (smj_config_preset(ctx, "tiny", 512, &cfg) != SMJ_OK) return NULL;
    cfg.max_seq_len = 64;
    cfg.n_layers = 2;
    if (smj_model_create(ctx, &cfg, 3, &m) != SMJ_OK) return NULL;
    return m;
}

static void host_side(smj_backend_kind kind, const char *name) {
    smj_ctx_options o = {.threads = 2, .backend = kind};
    smj_ctx *ctx = smj_ctx_create(&o);
    double tf = -1;
    CHECK(smj_ctx_matmul_tflops(ctx, 8, &tf) == SMJ_ERR_INVALID && tf == 0 &&
              strstr(smj_ctx_error(ctx), "probe size 8"),
          "%s: matmul probe of n = 8 not refused: %s", name, smj_ctx_error(ctx));
    CHECK(smj_ctx_matmul_tflops(ctx, 40000, &tf) == SMJ_ERR_INVALID, "%s: n = 40000 not refused", name);
    CHECK_OK(ctx, smj_ctx_matmul_tflops(ctx, 64, &tf));
    CHECK(isfinite(tf) && tf > 0 && tf < 1e4, "%s: matmul probe gave %g TFLOP/s", name, tf);
    size_t used = 1, total = 1;
    CHECK(smj_ctx_device_memory(ctx, &used, &total) == SMJ_ERR_UNSUPPORTED && used == 0 && total == 0,
          "%s: host backend reported device memory", name);
    CHECK(smj_ctx_profile(ctx, 1) == SMJ_ERR_UNSUPPORTED && strstr(smj_ctx_error(ctx), "profile"),
          "%s: host backend accepted a profile: %s", name, smj_ctx_error(ctx));
    smj_profile_row r[4];
    CHECK(smj_ctx_profile_rows(ctx, r, 4) == 0, "%s: host backend returned profile rows", name);
    smj_ctx_free(ctx);
}

static void device_side(void) {
    smj_ctx_options o = {.threads = 2, .backend = SMJ_BACKEND_CUDA};
    smj_ctx *ctx = smj_ctx_create(&o);
    if (!ctx || smj_ctx_status(ctx) != SMJ_OK) {
        printf("SKIP device part: %s\n", ctx ? smj_ctx_error(ctx) : "out of memory");
        smj_ctx_free(ctx);
        return;
    }
    size_t used = 0, total = 0;
    CHECK_OK(ctx, smj_ctx_device_memory(ctx, &used, &total));
    CHECK(used > 0 && total > used, "device memory: used %zu of %zu", used, total);
    double tf = 0;
    CHECK_OK(ctx, smj_ctx_matmul_tflops(ctx, 512, &tf));
    CHECK(isfinite(tf) && tf > 0.1, "device matmul probe gave %g TFLOP/s", tf);
    smj_model *m = tiny_model(ctx);
    CHECK(m != NULL, "model: %s", smj_ctx_error(ctx));
    if (m) {
        int32_t in[2 * 64], tg[2 * 64];
        for (int i = 0; i < 128; i++) in[i] = (i * 7) % 512, tg[i] = (i * 11) % 512;
        float loss = 0;
        CHECK_OK(ctx, smj_ctx_profile(ctx, 1));
        CHECK_OK(ctx, smj_model_forward(m, in, tg, 2, 64, &loss));
        CHECK_OK(ctx, smj_ctx_profile(ctx, 0));
        smj_profile_row r[64];
        int n = smj_ctx_profile_rows(ctx, r, 64), seen_mm = 0, seen_att = 0, sorted = 1;
        CHECK(n > 3 && n <= 64, "profile of a forward has %d rows", n);
        for (int i = 0; i < n && i < 64; i++) {
            seen_mm |= strstr(r[i].name, "matmul") != NULL;
            seen_att |= strstr(r[i].name, "attention") != NULL;
            if (i && r[i].ms > r[i - 1].ms) sorted = 0;
            CHECK(r[i].calls > 0 && r[i].ms >= 0, "row %s: %ld calls, %g ms", r[i].name, r[i].calls, r[i].ms);
        }
        CHECK(seen_mm && seen_att && sorted, "profile rows: matmul %d, attention %d, sorted %d", seen_mm, seen_att,
              sorted);
        smj_profile_row two[2];
        CHECK(smj_ctx_profile_rows(ctx, two, 2) == n && strcmp(two[0].name, r[0].name) == 0,
              "max_rows 2: count or first row differs");
        /* a new profile starts empty */
        CHECK_OK(ctx, smj_ctx_profile(ctx, 1));
        CHECK_OK(ctx, smj_ctx_profile(ctx, 0));
        CHECK(smj_ctx_profile_rows(ctx, r, 64) == 0, "a restarted profile kept old rows");
        smj_model_free(m);
    }
    smj_ctx_free(ctx);
}

int main(void) {
    host_side(SMJ_BACKEND_CPU, "cpu");
    host_side(SMJ_BACKEND_REF, "ref");
    device_side();
    return check_summary("test_probe");
}
