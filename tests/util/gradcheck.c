/* gradcheck.c — see gradcheck.h. */
#include "gradcheck.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "check.h"

static uint64_t mix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* all parameters (grad = 0) or gradients (grad = 1) into one host array */
static void gather_all(smj_model *m, int grad, float *dst) {
    int64_t off = 0;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        smj_model_tensor_get(m, i, grad, dst + off);
        off += v.numel;
    }
}
static void scatter_all(smj_model *m, const float *src) {
    int64_t off = 0;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        smj_model_tensor_set(m, i, src + off);
        off += v.numel;
    }
}

void gradcheck_directional(smj_ctx *ctx, smj_model *m, const int32_t *x, const int32_t *y, int B, int T,
                           const char *label) {
    int64_t P = smj_model_num_params(m);
    float *p0 = malloc(sizeof(float) * (size_t)P), *g = malloc(sizeof(float) * (size_t)P);
    float *d = malloc(sizeof(float) * (size_t)P), *p = malloc(sizeof(float) * (size_t)P);
    float loss = 0;
    CHECK(p0 && g && d && p, "%s: out of memory", label);
    if (!p0 || !g || !d || !p) goto done;
    CHECK_OK(ctx, smj_model_zero_grad(m));
    CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
    CHECK_OK(ctx, smj_model_backward(m, 1.0f));
    gather_all(m, 0, p0);
    gather_all(m, 1, g);
    double gnorm = 0;
    for (int64_t j = 0; j < P; j++) gnorm += (double)g[j] * g[j];
    gnorm = sqrt(gnorm);
    for (int dir = 0; dir < 2; dir++) {
        double dn = 0, gd = 0, h = dir == 0 ? 2e-3 : 5e-3, l[2] = {0, 0};
        uint64_t s = 99;
        for (int64_t j = 0; j < P; j++) d[j] = dir == 0 ? g[j] : (float)((int64_t)(mix(&s) % 2001) - 1000) / 1000.0f;
        for (int64_t j = 0; j < P; j++) dn += (double)d[j] * d[j];
        dn = sqrt(dn);
        for (int64_t j = 0; j < P; j++) { d[j] /= (float)dn; gd += (double)g[j] * d[j]; }
        for (int k = 0; k < 2; k++) {
            float sgn = k ? 1.0f : -1.0f;
            for (int64_t j = 0; j < P; j++) p[j] = p0[j] + sgn * (float)h * d[j];
            scatter_all(m, p);
            CHECK_OK(ctx, smj_model_forward(m, x, y, B, T, &loss));
            l[k] = loss;
        }
        double num = (l[1] - l[0]) / (2 * h), rel = fabs(num - gd) / fmax(fabs(gd), 0.05 * gnorm);
        printf("%s [%s]: directional derivative %d: finite difference %.7g, gradient %.7g, rel %.2g\n", label,
               smj_ctx_backend_name(ctx), dir, num, gd, rel);
        CHECK(rel < 2e-3, "%s [%s]: directional derivative %d: finite difference %.6g vs gradient %.6g (rel %.2g)",
              label, smj_ctx_backend_name(ctx), dir, num, gd, rel);
    }
    scatter_all(m, p0);
done:
    free(p0); free(g); free(d); free(p);
}
