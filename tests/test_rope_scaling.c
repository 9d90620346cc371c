/* test_rope_scaling.c — RoPE scaling and attention biases (the HF interop
 * additions to the model):
 *  - inverse frequencies of every rope type (default, linear, dynamic NTK,
 *    llama3, YaRN with and without truncation, attention factors) against
 *    the transformers formulas written out here in double;
 *  - the model's cos/sin tables (times the YaRN attention factor), and the
 *    dynamic type's per-length rows: rebuilt past the original context,
 *    restored below it, identical to the default RoPE within it;
 *  - whole-model directional gradient checks with q/k/v/o biases and scaled
 *    RoPE (both backends), and each bias gradient element against a central
 *    finite difference;
 *  - bias adds over more rows than the ones vector (B*T > max_seq_len);
 *  - checkpoints keep every new config field, and a checkpoint without the
 *    new keys (an older file) loads with them off.
 * End-to-end parity with transformers for each type is in test_hf.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/core/core.h"
#include "../src/io/container.h"
#include "../src/model/model.h"
#include "util/check.h"
#include "util/gradcheck.h"

/* ------------------------------------------------- reference formulas (double) */

static double ref_default(double theta, int i, int d) { return 1.0 / pow(theta, 2.0 * i / d); }

/* transformers' modeling_rope_utils.py, in double */
static void ref_inv_freq(const smj_model_config *c, int64_t L, double *inv, double *attn) {
    int d = c->head_dim;
    double theta = c->rope_theta, f = c->rope_factor;
    *attn = 1.0;
    for (int i = 0; i < d / 2; i++) {
        double x = ref_default(theta, i, d);
        switch (c->rope_type) {
        case SMJ_ROPE_LINEAR: x /= f; break;
        case SMJ_ROPE_DYNAMIC: {
            double orig = c->rope_orig_max_pos, l = L > orig ? (double)L : orig;
            double base = theta * pow(f * l / orig - (f - 1), (double)d / (d - 2));
            x = 1.0 / pow(base, 2.0 * i / d);
            break;
        }
        case SMJ_ROPE_LLAMA3: {
            double old = c->rope_orig_max_pos, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
            double wl = 2 * M_PI / x;
            if (wl > old / lo) x /= f;
            else if (wl >= old / hi) {
                double s = (old / wl - lo) / (hi - lo);
                x = (1 - s) * x / f + s * x;
            }
            break;
        }
        case SMJ_ROPE_YARN: {
            double orig = c->rope_orig_max_pos, bf = c->rope_beta_fast ? c->rope_beta_fast : 32,
                   bs = c->rope_beta_slow ? c->rope_beta_slow : 1;
            double lo = d * log(orig / (bf * 2 * M_PI)) / (2 * log(theta));
            double hi = d * log(orig / (bs * 2 * M_PI)) / (2 * log(theta));
            if (!c->rope_yarn_no_truncate) { lo = floor(lo); hi = ceil(hi); }
            lo = fmax(lo, 0);
            hi = fmin(hi, d - 1);
            if (lo == hi) hi += 0.001;
            double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1), extrap_w = 1 - ramp;
            x = (x / f) * (1 - extrap_w) + x * extrap_w;
            *attn = c->rope_attn_factor > 0 ? c->rope_attn_factor : f <= 1 ? 1 : 0.1 * log(f) + 1;
            break;
        }
        default: break;
        }
        inv[i] = x;
    }
}

static smj_model_config base_cfg(int HS, float theta) {
    smj_model_config c = {.vocab_size = 50, .dim = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = HS, .ffn_hidden = 32, .max_seq_len = 256, .rope_theta = theta,
                          .norm_eps = 1e-5f};
    return c;
}

static void check_inv(const smj_model_config *c, int64_t L, const char *tag) {
    float inv[512], attn;
    double ref[512], rattn;
    smj_rope_inv_freq(c, L, inv, &attn);
    ref_inv_freq(c, L, ref, &rattn);
    double worst = 0;
    for (int i = 0; i < c->head_dim / 2; i++) worst = fmax(worst, fabs(inv[i] - ref[i]) / ref[i]);
    CHECK(worst < 2e-6, "%s (HS %d, theta %g, L %lld): inv_freq rel error %.3g", tag, c->head_dim,
          (double)c->rope_theta, (long long)L, worst);
    CHECK(fabs(attn - rattn) <= 1e-6 * rattn, "%s: attention factor %.9g vs %.9g", tag, (double)attn, rattn);
}

static void test_inv_freq(void) {
    static const struct { int HS; float theta; } S[] = {{16, 10000.0f}, {64, 500000.0f}, {128, 1e6f}, {8, 10000.0f}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        smj_model_config c = base_cfg(S[k].HS, S[k].theta);
        check_inv(&c, 1, "default");
        c.rope_type = SMJ_ROPE_LINEAR;
        c.rope_factor = 4.0f;
        check_inv(&c, 1, "linear");
        c.rope_type = SMJ_ROPE_DYNAMIC;
        c.rope_factor = 2.0f;
        c.rope_orig_max_pos = 64;
        for (int64_t L = 1; L <= 1024; L *= 4) check_inv(&c, L, "dynamic");
        {   /* within the original context, dynamic is exactly the default */
            float a[512], b[512], t1, t2;
            smj_model_config d = base_cfg(S[k].HS, S[k].theta);
            smj_rope_inv_freq(&c, 64, a, &t1);
            smj_rope_inv_freq(&d, 64, b, &t2);
            CHECK(memcmp(a, b, sizeof(float) * (size_t)(S[k].HS / 2)) == 0, "dynamic at L <= original == default");
        }
        c.rope_type = SMJ_ROPE_LLAMA3;
        c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f;
        c.rope_high_freq_factor = 4.0f;
        c.rope_orig_max_pos = 8192;
        check_inv(&c, 1, "llama3 (8192)");
        c.rope_orig_max_pos = 32;
        check_inv(&c, 1, "llama3 (32)");
        c.rope_low_freq_factor = 2.0f;
        c.rope_high_freq_factor = 3.0f;
        check_inv(&c, 1, "llama3 (2, 3)");
        c.rope_low_freq_factor = c.rope_high_freq_factor = 0;
        c.rope_type = SMJ_ROPE_YARN;
        c.rope_factor = 4.0f;
        c.rope_orig_max_pos = 32768;
        check_inv(&c, 1, "yarn defaults");
        c.rope_orig_max_pos = 64;
        c.rope_beta_fast = 8.0f;
        c.rope_beta_slow = 2.0f;
        c.rope_attn_factor = 1.25f;
        check_inv(&c, 1, "yarn betas");
        c.rope_yarn_no_truncate = 1;
        check_inv(&c, 1, "yarn no truncate");
        c.rope_factor = 1.0f; /* factor 1: attention factor 1, inv = default */
        c.rope_attn_factor = 0;
        check_inv(&c, 1, "yarn factor 1");
    }
}

/* ------------------------------------------------------------- tables */

static void test_tables(smj_ctx *ctx) {
    smj_model_config c = base_cfg(16, 10000.0f);
    c.max_seq_len = 64;
    c.rope_type = SMJ_ROPE_YARN;
    c.rope_factor = 4.0f;
    c.rope_orig_max_pos = 16;
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 1, &m));
    if (m) {
        double ref[8], attn, worst = 0;
        ref_inv_freq(&c, 1, ref, &attn);
        for (int p = 0; p < 64; p++)
            for (int i = 0; i < 8; i++) {
                worst = fmax(worst, fabs(m->rope_cos[p * 8 + i] - cos(p * ref[i]) * attn));
                worst = fmax(worst, fabs(m->rope_sin[p * 8 + i] - sin(p * ref[i]) * attn));
            }
        CHECK(worst < 2e-5, "yarn tables: max |diff| %.3g", worst);
        CHECK(fabs(attn - 1.1386294) < 1e-6, "yarn attention factor 0.1 ln 4 + 1");
    }
    smj_model_free(m);

    /* dynamic: identical to the default model within the original context;
     * past it the rows hold the base of the forward's length, and return */
    smj_model_config d = base_cfg(16, 10000.0f), plain = d;
    d.max_seq_len = plain.max_seq_len = 96;
    d.rope_type = SMJ_ROPE_DYNAMIC;
    d.rope_factor = 2.0f;
    d.rope_orig_max_pos = 32;
    smj_model *md = NULL, *mp = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &d, 5, &md));
    CHECK_OK(ctx, smj_model_create(ctx, &plain, 5, &mp));
    if (md && mp) {
        int32_t ids[96];
        for (int i = 0; i < 96; i++) ids[i] = (i * 17 + 3) % 50;
        int V = 50;
        CHECK_OK(ctx, smj_model_forward(md, ids, NULL, 1, 32, NULL));
        float *a = malloc(sizeof(float) * 32 * V);
        memcpy(a, smj_model_logits(md), sizeof(float) * 32 * V);
        CHECK_OK(ctx, smj_model_forward(mp, ids, NULL, 1, 32, NULL));
        CHECK(memcmp(a, smj_model_logits(mp), sizeof(float) * 32 * V) == 0, "dynamic == default at T <= original");
        CHECK_OK(ctx, smj_model_forward(md, ids, NULL, 1, 80, NULL));
        double ref[8], attn, worst = 0;
        ref_inv_freq(&d, 80, ref, &attn);
        for (int p = 0; p < 80; p++)
            for (int i = 0; i < 8; i++) worst = fmax(worst, fabs(md->rope_cos[p * 8 + i] - cos(p * ref[i])));
        CHECK(worst < 2e-5, "dynamic rows for T = 80: max |diff| %.3g", worst);
        CHECK(md->rope_cos[90 * 8 + 1] == mp->rope_cos[90 * 8 + 1], "rows past the forward untouched");
        CHECK_OK(ctx, smj_model_forward(md, ids, NULL, 1, 32, NULL));
        CHECK(memcmp(a, smj_model_logits(md), sizeof(float) * 32 * V) == 0, "back to the default rows at T = 32");
        CHECK(memcmp(md->rope_cos, mp->rope_cos, sizeof(float) * 32 * 8) == 0, "default rows restored");
        /* a session past the original context: each new token uses the base of its own length */
        smj_session *s = NULL;
        CHECK_OK(ctx, smj_session_create(md, 96, &s));
        const float *lg = NULL;
        if (s) CHECK_OK(ctx, smj_session_feed(s, ids, 40, &lg));
        if (s) CHECK_OK(ctx, smj_session_feed(s, ids + 40, 1, &lg));
        ref_inv_freq(&d, 41, ref, &attn);
        CHECK(fabs(md->rope_cos[40 * 8 + 3] - cos(40 * ref[3])) < 2e-5, "session row 40 uses the base of length 41");
        smj_session_free(s);
        free(a);
    }
    smj_model_free(md);
    smj_model_free(mp);
}

/* ------------------------------------------------------------ gradients */

static double loss_of(smj_ctx *ctx, smj_model *m, const int32_t *x, const int32_t *y, int B, int T) {
    float l = 0;
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &l));
    return l;
}

static smj_model_config grad_cfg(int variant) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
                          .ffn_hidden = 40, .max_seq_len = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    if (variant == 0) { /* Qwen3-style: QK-norm, all four biases, YaRN */
        c.qk_norm = 1; c.attn_bias = 1; c.attn_out_bias = 1;
        c.rope_type = SMJ_ROPE_YARN; c.rope_factor = 4.0f; c.rope_orig_max_pos = 4; c.rope_attn_factor = 1.3f;
    } else if (variant == 1) { /* Qwen2-style q/k/v biases, dynamic past its original context */
        c.attn_bias = 1; c.rope_type = SMJ_ROPE_DYNAMIC; c.rope_factor = 2.0f; c.rope_orig_max_pos = 5;
    } else { /* Llama attention_bias, llama3 */
        c.attn_bias = 1; c.attn_out_bias = 1; c.tied_embeddings = 1;
        c.rope_type = SMJ_ROPE_LLAMA3; c.rope_factor = 8.0f; c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4;
        c.rope_orig_max_pos = 8;
    }
    return c;
}

static void gradient_check(smj_backend_kind kind, int variant) {
    smj_ctx_options o = {.threads = 2, .backend = kind};
    smj_ctx *ctx = smj_ctx_create(&o);
    smj_model_config c = grad_cfg(variant);
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 7 + (uint64_t)variant, &m));
    if (!m) { smj_ctx_free(ctx); return; }
    int B = 2, T = 9;
    int32_t x[18], y[18];
    for (int i = 0; i < 18; i++) { x[i] = (i * 13 + 5) % 50; y[i] = (i * 29 + 3) % 50; }
    y[4] = -1;
    int n = smj_model_num_tensors(m);
    for (int i = 0; i < n; i++) { /* curvature worth checking; biases away from 0 */
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        int bias = strstr(v.name, ".bias") != NULL;
        for (int64_t j = 0; j < v.numel; j++)
            v.data[j] = v.ndim >= 2 ? v.data[j] * 8.0f : bias ? 0.3f * (float)sin(0.7 * (double)j + i) : 1.0f + 0.1f * (float)sin((double)j);
    }
    char label[64];
    snprintf(label, sizeof label, "rope/bias variant %d", variant);
    gradcheck_directional(ctx, m, x, y, B, T, label);
    int64_t P = smj_model_num_params(m), off = 0;
    float *p0 = malloc(sizeof(float) * (size_t)P), *g = malloc(sizeof(float) * (size_t)P);
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        memcpy(p0 + off, v.data, sizeof(float) * (size_t)v.numel);
        memcpy(g + off, v.grad, sizeof(float) * (size_t)v.numel);
        off += v.numel;
    }
    /* each bias element (a few per tensor) against a central difference */
    off = 0;
    int checked = 0;
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        for (int64_t j = 0; j < v.numel; j++) v.data[j] = p0[off + j];
        off += v.numel;
    }
    off = 0;
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (strstr(v.name, ".bias"))
            for (int64_t j = 0; j < v.numel; j += v.numel / 3 + 1) {
                float keep = v.data[j];
                double h = 1e-2;
                v.data[j] = keep + (float)h;
                double lp = loss_of(ctx, m, x, y, B, T);
                v.data[j] = keep - (float)h;
                double lm = loss_of(ctx, m, x, y, B, T);
                v.data[j] = keep;
                double num = (lp - lm) / (2 * h), an = g[off + j];
                CHECK(fabs(num - an) <= 2e-3 * fabs(an) + 1e-4, "%s variant %d: d/d %s[%lld]: fd %.6g vs grad %.6g",
                      smj_ctx_backend_name(ctx), variant, v.name, (long long)j, num, an);
                checked++;
            }
        off += v.numel;
    }
    CHECK(checked >= 6, "variant %d: bias elements checked: %d", variant, checked);
    free(p0); free(g);
    smj_model_free(m);
    smj_ctx_free(ctx);
}

/* Bias adds over B*T rows > the ones vector (max_seq_len): batch rows equal single-row forwards. */
static void test_bias_rows(smj_ctx *ctx) {
    smj_model_config c = grad_cfg(2);
    c.max_seq_len = 8;
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 3, &m));
    if (!m) return;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (strstr(v.name, ".bias"))
            for (int64_t j = 0; j < v.numel; j++) v.data[j] = 0.5f * (float)cos((double)j + i);
    }
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (i * 7 + 1) % 50;
    CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 3, 8, NULL));
    float *all = malloc(sizeof(float) * 24 * 50);
    memcpy(all, smj_model_logits(m), sizeof(float) * 24 * 50);
    double worst = 0;
    for (int b = 0; b < 3; b++) {
        CHECK_OK(ctx, smj_model_forward(m, ids + 8 * b, NULL, 1, 8, NULL));
        worst = fmax(worst, max_abs_diff(all + 8 * 50 * b, smj_model_logits(m), 8 * 50));
    }
    CHECK(worst < 1e-5, "batched bias rows: max |diff| %.3g", worst);
    free(all);
    smj_model_free(m);
}

/* ----------------------------------------------------------- checkpoints */

static void test_checkpoint(smj_ctx *ctx) {
    smj_model_config c = grad_cfg(0);
    c.rope_beta_fast = 24.0f;
    c.rope_beta_slow = 1.5f;
    c.rope_yarn_no_truncate = 1;
    smj_model *m = NULL, *back = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 11, &m));
    if (!m) return;
    char path[700];
    snprintf(path, sizeof path, "%s/rope.ckpt", test_tmpdir());
    CHECK_OK(ctx, smj_model_save(m, path));
    CHECK_OK(ctx, smj_model_load(ctx, path, &back));
    if (back) {
        CHECK(memcmp(smj_model_get_config(back), &c, sizeof c) == 0, "checkpoint keeps every config field");
        CHECK(smj_model_num_tensors(back) == smj_model_num_tensors(m), "bias tensors saved");
        CHECK(memcmp(back->params, m->params, sizeof(float) * (size_t)m->n_params) == 0, "weights kept");
    }
    smj_model_free(back);
    back = NULL;
    for (int k = 0; k < 3; k++) { /* llama3 and dynamic too */
        smj_model_config d = grad_cfg(k);
        smj_model *a = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &d, 1, &a));
        if (!a) continue;
        CHECK_OK(ctx, smj_model_save(a, path));
        smj_model_config r;
        int ts = -1;
        CHECK_OK(ctx, smj_checkpoint_read_config(ctx, path, &r, &ts));
        CHECK(memcmp(&r, &d, sizeof d) == 0 && ts == 0, "config %d read back", k);
        smj_model_free(a);
    }
    smj_model_free(m);

    /* an older checkpoint: metadata without the new keys loads with them off */
    smj_model_config o = {.vocab_size = 50, .dim = 24, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
                          .ffn_hidden = 40, .max_seq_len = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    CHECK_OK(ctx, smj_model_create(ctx, &o, 2, &m));
    if (!m) return;
    char meta[4096] = "";
    smj_config_to_meta(&o, meta, sizeof meta);
    char *cut = strstr(meta, "attn_bias=");
    CHECK(cut != NULL, "new keys written");
    if (cut) *cut = 0;
    smj_ct_entry *e = calloc((size_t)m->n_tensors, sizeof *e);
    for (int i = 0; i < m->n_tensors; i++) {
        snprintf(e[i].name, sizeof e[i].name, "%s", m->specs[i].name);
        e[i].dtype = SMJ_DT_F32;
        e[i].ndim = (uint32_t)m->specs[i].ndim;
        memcpy(e[i].shape, m->specs[i].shape, sizeof e[i].shape);
        e[i].data = m->params + m->specs[i].offset;
    }
    snprintf(path, sizeof path, "%s/old.ckpt", test_tmpdir());
    CHECK_OK(ctx, smj_container_write(ctx, path, SMJ_CT_MODEL, meta, e, m->n_tensors));
    free(e);
    CHECK_OK(ctx, smj_model_load(ctx, path, &back));
    if (back) CHECK(memcmp(smj_model_get_config(back), &o, sizeof o) == 0, "old checkpoint: new fields read as 0");
    smj_model_free(back);
    smj_model_free(m);

    /* invalid values are refused by validation */
    smj_model_config bad = grad_cfg(2);
    bad.rope_high_freq_factor = bad.rope_low_freq_factor;
    CHECK(smj_config_validate(ctx, &bad) == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "llama3"), "llama3 factors");
    bad = grad_cfg(2);
    bad.rope_type = 9;
    CHECK(smj_config_validate(ctx, &bad) == SMJ_ERR_INVALID, "unknown rope type");
    bad = grad_cfg(1);
    bad.rope_factor = 0;
    CHECK(smj_config_validate(ctx, &bad) == SMJ_ERR_INVALID, "factor 0");
    bad = grad_cfg(1);
    bad.attn_bias = 2;
    CHECK(smj_config_validate(ctx, &bad) == SMJ_ERR_INVALID, "attn_bias 2");
    smj_model_config nb = grad_cfg(0);
    {
        smj_model *t = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &nb, 1, &t));
        if (t) CHECK(smj_config_num_params(&nb) == smj_model_num_params(t), "num_params counts the biases");
        int zero = 1;
        for (int i = 0; t && i < smj_model_num_tensors(t); i++) {
            smj_tensor_view v;
            smj_model_tensor(t, i, &v);
            if (strstr(v.name, ".bias"))
                for (int64_t j = 0; j < v.numel; j++) zero &= v.data[j] == 0.0f;
        }
        CHECK(zero, "biases start at zero");
        smj_model_free(t);
    }
}

int main(void) {
    test_inv_freq();
    smj_ctx_options o = {.threads = 2, .backend = SMJ_BACKEND_CPU};
    smj_ctx *ctx = smj_ctx_create(&o);
    test_tables(ctx);
    for (int v = 0; v < 3; v++) {
        gradient_check(SMJ_BACKEND_REF, v);
        gradient_check(SMJ_BACKEND_CPU, v);
    }
    test_bias_rows(ctx);
    test_checkpoint(ctx);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_rope_scaling");
}
