/* opgrad.c — see opgrad.h. Each case keeps its inputs on the backend (its
 * memory hooks), a fixed upstream gradient u on the host, and a loss
 * callback that runs the forward op(s) and returns sum(u * y) in double;
 * dir_check perturbs one input along a direction and compares the central
 * difference with the backward's gradient. */
#include "opgrad.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

static const smj_backend *be;
static const smj_exec *ex;
static const char *lab;
static smj_rng rng;

static float *hrand(int64_t n, float s) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; p && i < n; i++) p[i] = s * (2.0f * (float)smj_rng_uniform(&rng) - 1.0f);
    return p;
}
static float *dev(const float *h, int64_t n) { /* zeroed when h is NULL (alloc zeroes) */
    float *d = be->alloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (d && h) be->upload(d, h, sizeof(float) * (size_t)n);
    return d;
}
static int32_t *dev_ids(const int32_t *h, int64_t n) {
    int32_t *d = be->alloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (d) be->upload(d, h, sizeof(int32_t) * (size_t)n);
    return d;
}
static float *host(const float *d, int64_t n) {
    float *h = malloc(sizeof(float) * (size_t)n);
    be->download(h, d, sizeof(float) * (size_t)n);
    return h;
}
/* sum(u * y) for device y [n] */
static double dot_dev(const float *u, const float *y, int64_t n) {
    float *h = host(y, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)u[i] * h[i];
    free(h);
    return s;
}

typedef double (*loss_fn)(void *st);

/* Input X (device, n values xh) and its gradient G (host): the derivative
 * of loss along the gradient's direction and a random one, by central
 * differences (steps 1e-2, 2.5e-2), against G . d. */
static void dir_check(const char *op, const char *what, loss_fn loss, void *st, float *X, const float *xh,
                      const float *G, int64_t n) {
    float *d = malloc(sizeof(float) * (size_t)n), *p = malloc(sizeof(float) * (size_t)n);
    double gn = 0;
    for (int64_t i = 0; i < n; i++) gn += (double)G[i] * G[i];
    gn = sqrt(gn);
    for (int dir = 0; dir < 2; dir++) {
        double h = dir == 0 ? 1e-2 : 2.5e-2, dn = 0, gd = 0, l[2];
        for (int64_t i = 0; i < n; i++) d[i] = dir == 0 ? G[i] : 2.0f * (float)smj_rng_uniform(&rng) - 1.0f;
        for (int64_t i = 0; i < n; i++) dn += (double)d[i] * d[i];
        dn = sqrt(dn);
        for (int64_t i = 0; i < n; i++) {
            d[i] = dn > 0 ? (float)(d[i] / dn) : 0.0f;
            gd += (double)G[i] * d[i];
        }
        for (int k = 0; k < 2; k++) {
            for (int64_t i = 0; i < n; i++) p[i] = xh[i] + (float)((k ? h : -h) * d[i]);
            be->upload(X, p, sizeof(float) * (size_t)n);
            l[k] = loss(st);
        }
        double num = (l[1] - l[0]) / (2 * h), rel = fabs(num - gd) / fmax(fmax(fabs(gd), 0.05 * gn), 1e-30);
        printf("%s %-13s %-7s direction %d: finite difference %.7g, gradient %.7g, rel %.2g\n", lab, op, what, dir,
               num, gd, rel);
        CHECK(rel < 2e-3, "%s/%s %s: directional derivative %d: finite difference %.6g vs gradient %.6g (rel %.2g)",
              lab, op, what, dir, num, gd, rel);
    }
    be->upload(X, xh, sizeof(float) * (size_t)n);
    free(d);
    free(p);
}
/* the backend's gradient of X (device) as a host array, then dir_check */
static void dir_check_dev(const char *op, const char *what, loss_fn loss, void *st, float *X, const float *xh,
                          const float *Gd, int64_t n) {
    float *G = host(Gd, n);
    dir_check(op, what, loss, st, X, xh, G, n);
    free(G);
}

/* ------------------------------------------------------------ cases */

/* matmul, the model's two forms: C = A B^T (W [N,K], Llama's linears) and
 * C = A B (W [K,N], GPT-2's Conv1D), gradients by the transposed products
 * the model's backward runs: dA = U W (or U W^T), dW = U^T A (or A^T U). */
typedef struct { float *A, *W, *C; const float *u; int64_t M, N, K; int tB; } mm_st;
static double mm_loss(void *p) {
    mm_st *s = p;
    be->matmul(ex, s->C, s->A, s->W, s->M, s->N, s->K, 0, s->tB, 0);
    return dot_dev(s->u, s->C, s->M * s->N);
}
static void case_matmul(void) {
    for (int tB = 1; tB >= 0; tB--) {
        int64_t M = 7, N = 13, K = 24;
        float *Ah = hrand(M * K, 1), *Wh = hrand(N * K, 1), *u = hrand(M * N, 1);
        mm_st s = {dev(Ah, M * K), dev(Wh, N * K), dev(NULL, M * N), u, M, N, K, tB};
        float *du = dev(u, M * N), *dA = dev(NULL, M * K), *dW = dev(NULL, N * K);
        be->matmul(ex, dA, du, s.W, M, K, N, 0, tB ? 0 : 1, 0);
        if (tB) be->matmul(ex, dW, du, s.A, N, K, M, 1, 0, 0); /* [N,K] = U^T A */
        else be->matmul(ex, dW, s.A, du, K, N, M, 1, 0, 0);   /* [K,N] = A^T U */
        const char *what = tB ? "A W^T" : "A W";
        char wa[16], ww[16];
        snprintf(wa, sizeof wa, "%s:A", what);
        snprintf(ww, sizeof ww, "%s:W", what);
        dir_check_dev("matmul", wa, mm_loss, &s, s.A, Ah, dA, M * K);
        dir_check_dev("matmul", ww, mm_loss, &s, s.W, Wh, dW, N * K);
        be->free(s.A); be->free(s.W); be->free(s.C); be->free(du); be->free(dA); be->free(dW);
        free(Ah); free(Wh); free(u);
    }
}

typedef struct { float *W, *y; int32_t *ids; const float *u; int64_t N; int C; } emb_st;
static double emb_loss(void *p) {
    emb_st *s = p;
    be->embedding_fwd(ex, s->y, s->ids, s->W, s->N, s->C);
    return dot_dev(s->u, s->y, s->N * s->C);
}
static void case_embedding(void) {
    int64_t N = 40, V = 17;
    int C = 24;
    int32_t ids[40];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 7 + i / 5) % V); /* repeats */
    float *Wh = hrand(V * C, 1), *u = hrand(N * C, 1);
    emb_st s = {dev(Wh, V * C), dev(NULL, N * C), dev_ids(ids, N), u, N, C};
    float *dW = dev(NULL, V * C), *du = dev(u, N * C);
    be->embedding_bwd(ex, dW, s.ids, du, N, C);
    dir_check_dev("embedding", "wte", emb_loss, &s, s.W, Wh, dW, V * C);
    be->free(s.W); be->free(s.y); be->free(s.ids); be->free(dW); be->free(du);
    free(Wh); free(u);
}

typedef struct { float *x, *w, *y, *r; const float *u; int64_t N; int C; } rms_st;
static double rms_loss(void *p) {
    rms_st *s = p;
    be->rmsnorm_fwd(ex, s->y, s->r, s->x, s->w, s->N, s->C, 1e-5f);
    return dot_dev(s->u, s->y, s->N * s->C);
}
static void case_rmsnorm(void) {
    static const int S[][2] = {{6, 67}, {5, 64}, {3, 768}}; /* scalar rows, four-wide, a model's width */
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t N = S[k][0];
        int C = S[k][1];
        float *xh = hrand(N * C, 2), *wh = hrand(C, 1), *u = hrand(N * C, 1);
        rms_st s = {dev(xh, N * C), dev(wh, C), dev(NULL, N * C), dev(NULL, N), u, N, C};
        rms_loss(&s); /* rstd for the backward */
        float *dx = dev(NULL, N * C), *dw = dev(NULL, C), *du = dev(u, N * C);
        be->rmsnorm_bwd(ex, dx, dw, du, s.x, s.w, s.r, N, C, 0);
        dir_check_dev("rmsnorm", "x", rms_loss, &s, s.x, xh, dx, N * C);
        dir_check_dev("rmsnorm", "w", rms_loss, &s, s.w, wh, dw, C);
        be->free(s.x); be->free(s.w); be->free(s.y); be->free(s.r); be->free(dx); be->free(dw); be->free(du);
        free(xh); free(wh); free(u);
    }
}

typedef struct { float *x, *y, *cs, *sn; const float *u; int B, T, NH, HS, p0; } rope_st;
static double rope_loss(void *p) {
    rope_st *s = p;
    int64_t n = (int64_t)s->B * s->T * s->NH * s->HS;
    float *h = host(s->x, n); /* the forward rotates in place: on a copy */
    be->upload(s->y, h, sizeof(float) * (size_t)n);
    free(h);
    be->rope_fwd(ex, s->y, s->cs, s->sn, s->B, s->T, s->NH, s->HS, s->p0, 0);
    return dot_dev(s->u, s->y, n);
}
static void case_rope(void) {
    int B = 2, T = 5, NH = 3, HS = 16, p0 = 3, maxT = T + p0;
    int64_t n = (int64_t)B * T * NH * HS;
    float *cs = malloc(sizeof(float) * (size_t)(maxT * HS / 2)), *sn = malloc(sizeof(float) * (size_t)(maxT * HS / 2));
    for (int t = 0; t < maxT; t++)
        for (int i = 0; i < HS / 2; i++) {
            double a = t * pow(10000.0, -2.0 * i / HS);
            cs[t * HS / 2 + i] = (float)cos(a);
            sn[t * HS / 2 + i] = (float)sin(a);
        }
    float *xh = hrand(n, 1), *u = hrand(n, 1);
    rope_st s = {dev(xh, n), dev(NULL, n), dev(cs, maxT * HS / 2), dev(sn, maxT * HS / 2), u, B, T, NH, HS, p0};
    float *dx = dev(u, n);
    be->rope_bwd(ex, dx, s.cs, s.sn, B, T, NH, HS, p0, 0);
    dir_check_dev("rope", "x", rope_loss, &s, s.x, xh, dx, n);
    be->free(s.x); be->free(s.y); be->free(s.cs); be->free(s.sn); be->free(dx);
    free(xh); free(u); free(cs); free(sn);
}

typedef struct { float *q, *k, *v, *o, *l; const float *u; int B, T, NH, NKV, HS; } att_st;
static double att_loss(void *p) {
    att_st *s = p;
    be->attention_fwd(ex, s->o, s->l, s->q, s->k, s->v, s->B, s->T, s->T, s->NH, s->NKV, s->HS, 0, 0,
                      (int64_t)s->T * s->NKV * s->HS, 1.0f / sqrtf((float)s->HS));
    return dot_dev(s->u, s->o, (int64_t)s->B * s->T * s->NH * s->HS);
}
static void case_attention(void) {
    /* B, T, NH, NKV, HS: a few keys (a GPU's fused kernels), past 16 (its
     * product path), GQA in both */
    static const int S[][5] = {{2, 9, 4, 2, 16}, {1, 20, 4, 1, 64}, {1, 33, 2, 2, 32}};
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int B = S[c][0], T = S[c][1], NH = S[c][2], NKV = S[c][3], HS = S[c][4];
        int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
        float *qh = hrand(nq, 1), *kh = hrand(nk, 1), *vh = hrand(nk, 1), *u = hrand(nq, 1);
        att_st s = {dev(qh, nq), dev(kh, nk), dev(vh, nk), dev(NULL, nq), dev(NULL, (int64_t)B * NH * T), u,
                    B, T, NH, NKV, HS};
        att_loss(&s); /* out, lse for the backward */
        float *dq = dev(NULL, nq), *dk = dev(NULL, nk), *dv = dev(NULL, nk), *du = dev(u, nq);
        be->attention_bwd(ex, dq, dk, dv, du, s.o, s.l, s.q, s.k, s.v, B, T, NH, NKV, HS, 0, 0, 0, 0, 1.0f / sqrtf((float)HS));
        char what[32];
        snprintf(what, sizeof what, "T%d", T);
        float *g[3] = {host(dq, nq), host(dk, nk), host(dv, nk)};
        dir_check("attention q", what, att_loss, &s, s.q, qh, g[0], nq);
        dir_check("attention k", what, att_loss, &s, s.k, kh, g[1], nk);
        dir_check("attention v", what, att_loss, &s, s.v, vh, g[2], nk);
        for (int i = 0; i < 3; i++) free(g[i]);
        be->free(s.q); be->free(s.k); be->free(s.v); be->free(s.o); be->free(s.l);
        be->free(dq); be->free(dk); be->free(dv); be->free(du);
        free(qh); free(kh); free(vh); free(u);
    }
}

/* SwiGLU as the model runs it: gate|up one fused [N, 2H] tensor (odd H:
 * the backend's scalar path), then two dense tensors. */
typedef struct { float *g, *up, *y; const float *u; int64_t N, ld; int H; } swi_st;
static double swi_loss(void *p) {
    swi_st *s = p;
    be->swiglu_fwd(ex, s->y, s->g, s->up, s->N, s->H, s->ld);
    return dot_dev(s->u, s->y, s->N * s->H);
}
static void case_swiglu(void) {
    static const int S[][2] = {{13, 96}, {7, 37}}; /* N, H */
    for (int c = 0; c < 2; c++) {
        int64_t N = S[c][0], H = S[c][1], n = N * H;
        float *gh = hrand(2 * n, 4), *u = hrand(n, 1);
        float *gu = dev(gh, 2 * n), *dgu = dev(NULL, 2 * n), *du = dev(u, n);
        swi_st s = {gu, gu + H, dev(NULL, n), u, N, 2 * H, (int)H}; /* fused */
        be->swiglu_bwd(ex, dgu, dgu + H, du, s.g, s.up, N, (int)H, 2 * H);
        dir_check_dev("swiglu", c ? "gate|up (odd H)" : "gate|up", swi_loss, &s, gu, gh, dgu, 2 * n);
        s.up = gu + n; /* gate [N,H], then up [N,H] */
        s.ld = H;
        be->swiglu_bwd(ex, dgu, dgu + n, du, s.g, s.up, N, (int)H, 0);
        dir_check_dev("swiglu", "gate, up", swi_loss, &s, gu, gh, dgu, 2 * n);
        be->free(gu); be->free(s.y); be->free(dgu); be->free(du);
        free(gh); free(u);
    }
}

typedef struct { float *lg, *loss, *lse; int32_t *t; int64_t N; int V, ld; float dl; } xe_st;
static double xe_loss(void *p) {
    xe_st *s = p;
    be->xent_fwd(ex, s->loss, s->lse, s->lg, s->t, s->N, s->V, s->ld);
    float *h = host(s->loss, s->N);
    double sum = 0;
    for (int64_t i = 0; i < s->N; i++) sum += h[i];
    free(h);
    return s->dl * sum;
}
static void case_xent(void) {
    static const int S[][3] = {{5, 37, 40}, {3, 1000, 1000}}; /* N, V, ld: padded rows, a wide one */
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int64_t N = S[c][0];
        int V = S[c][1], ld = S[c][2];
        int32_t t[5];
        for (int i = 0; i < N; i++) t[i] = i == 1 ? -1 : (int32_t)((i * 13 + 5) % V); /* one ignored */
        float *lh = hrand(N * ld, 4);
        xe_st s = {dev(lh, N * ld), dev(NULL, N), dev(NULL, N), dev_ids(t, N), N, V, ld, 1.0f / (float)N};
        xe_loss(&s); /* lse for the backward */
        float *dl = dev(NULL, N * ld);
        be->xent_bwd(ex, dl, s.lg, s.lse, s.t, s.dl, N, V, ld);
        char what[32];
        snprintf(what, sizeof what, "V%d", V);
        dir_check_dev("cross-entropy", what, xe_loss, &s, s.lg, lh, dl, N * ld);
        be->free(s.lg); be->free(s.loss); be->free(s.lse); be->free(s.t); be->free(dl);
        free(lh);
    }
}

typedef struct { float *x, *w, *b, *y, *m, *r; const float *u; int64_t N; int C; } ln_st;
static double ln_loss(void *p) {
    ln_st *s = p;
    be->layernorm_fwd(ex, s->y, s->m, s->r, s->x, s->w, s->b, s->N, s->C, 1e-5f);
    return dot_dev(s->u, s->y, s->N * s->C);
}
static void case_layernorm(void) {
    static const int S[][2] = {{6, 67}, {4, 768}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t N = S[k][0];
        int C = S[k][1];
        float *xh = hrand(N * C, 2), *wh = hrand(C, 1), *bh = hrand(C, 1), *u = hrand(N * C, 1);
        ln_st s = {dev(xh, N * C), dev(wh, C), dev(bh, C), dev(NULL, N * C), dev(NULL, N), dev(NULL, N), u, N, C};
        ln_loss(&s);
        float *dx = dev(NULL, N * C), *dw = dev(NULL, C), *db = dev(NULL, C), *du = dev(u, N * C);
        be->layernorm_bwd(ex, dx, dw, db, du, s.x, s.w, s.m, s.r, N, C, 0);
        dir_check_dev("layernorm", "x", ln_loss, &s, s.x, xh, dx, N * C);
        dir_check_dev("layernorm", "w", ln_loss, &s, s.w, wh, dw, C);
        dir_check_dev("layernorm", "b", ln_loss, &s, s.b, bh, db, C);
        be->free(s.x); be->free(s.w); be->free(s.b); be->free(s.y); be->free(s.m); be->free(s.r);
        be->free(dx); be->free(dw); be->free(db); be->free(du);
        free(xh); free(wh); free(bh); free(u);
    }
}

typedef struct { float *x, *y; const float *u; int64_t n; } gelu_st;
static double gelu_loss(void *p) {
    gelu_st *s = p;
    be->gelu_fwd(ex, s->y, s->x, s->n);
    return dot_dev(s->u, s->y, s->n);
}
static void case_gelu(void) {
    int64_t n = 1031;
    float *xh = hrand(n, 4), *u = hrand(n, 1);
    gelu_st s = {dev(xh, n), dev(NULL, n), u, n};
    float *dx = dev(NULL, n), *du = dev(u, n);
    be->gelu_bwd(ex, dx, du, s.x, n);
    dir_check_dev("gelu", "x", gelu_loss, &s, s.x, xh, dx, n);
    be->free(s.x); be->free(s.y); be->free(dx); be->free(du);
    free(xh); free(u);
}

void opgrad_all(const smj_backend *backend, const smj_exec *exec, const char *label) {
    be = backend;
    ex = exec;
    lab = label;
    smj_rng_seed(&rng, 2024);
    case_matmul();
    case_embedding();
    case_rmsnorm();
    case_rope();
    case_attention();
    case_swiglu();
    case_xent();
    case_layernorm();
    case_gelu();
}
