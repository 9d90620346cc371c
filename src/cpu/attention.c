/* attention.c — causal softmax attention on the CPU, as small GEMMs.
 *
 * One task per (batch, head) in the forward and per (batch, kv head) in the
 * backward (so GQA's shared dK/dV need no atomics). A task gathers its head's
 * K and V rows into contiguous [Tk, HS] buffers, then walks the queries in
 * blocks of QB rows: a block only needs the keys up to its last position, so
 * causal masking wastes at most one triangle per block. Scores, softmax and
 * the products with V go through smj_sgemm on one thread (the parallelism is
 * across tasks), which runs them at near the GEMM kernel's rate.
 *
 *   forward:  S = Q K^T * scale; P = softmax(S) (masked); O = P V; lse kept.
 *   backward: P recomputed from lse; dP = dO V^T; dS = P (dP - rowdot(dO, O)) * scale;
 *             dQ = dS K; dK += dS^T Q; dV += P^T dO.
 *
 * Decoding (a handful of queries) takes the row-wise path: no gathering,
 * dot products straight from the cache.
 */
#include "attention.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "vecmath.h"

enum { QB = 128 };

static inline float dotf(const float *a, const float *b, int n) {
    float s = 0;
    #pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* rows [n, HS] at stride rs -> dst [n, HS] (and back) */
static void gather(float *dst, const float *src, int n, int HS, int64_t rs) {
    for (int i = 0; i < n; i++) memcpy(dst + (int64_t)i * HS, src + i * rs, sizeof(float) * HS);
}
static void scatter(float *dst, const float *src, int n, int HS, int64_t rs) {
    for (int i = 0; i < n; i++) memcpy(dst + i * rs, src + (int64_t)i * HS, sizeof(float) * HS);
}

/* Row-wise forward for few queries (decoding): one (b, h) per task. */
static void rows_fwd(int nt, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                     int Tq, int Tk, int NH, int NKV, int HS, int64_t qrs, int64_t rs, int64_t kv_bstride,
                     float scale) {
    int grp = NH / NKV;
    #pragma omp parallel num_threads(nt)
    {
        float *s = malloc(sizeof(float) * (size_t)Tk);
        #pragma omp for schedule(dynamic, 1) collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                if (!s) continue;
                const float *kb = k + b * kv_bstride + (int64_t)(h / grp) * HS;
                const float *vb = v + b * kv_bstride + (int64_t)(h / grp) * HS;
                for (int t = 0; t < Tq; t++) {
                    const float *qr = q + ((int64_t)b * Tq + t) * qrs + (int64_t)h * HS;
                    int last = Tk - Tq + t;
                    for (int j = 0; j <= last; j++) s[j] = dotf(qr, kb + j * rs, HS) * scale;
                    float mx = smj_max(s, last + 1);
                    float sum = smj_exp_sub_sum(s, s, mx, last + 1), inv = 1.0f / sum;
                    float *o = out + (((int64_t)b * Tq + t) * NH + h) * HS;
                    for (int i = 0; i < HS; i++) o[i] = 0;
                    for (int j = 0; j <= last; j++) {
                        float p = s[j] * inv;
                        const float *vr = vb + j * rs;
                        #pragma omp simd
                        for (int i = 0; i < HS; i++) o[i] += p * vr[i];
                    }
                    lse[((int64_t)b * NH + h) * Tq + t] = mx + logf(sum);
                }
            }
        free(s);
    }
}

void smj_cpu_attention_fwd(int nt, float *out, float *lse, const float *q, const float *k, const float *v,
                           int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                           int64_t kv_bstride, float scale) {
    int64_t krs = kv_rs ? kv_rs : (int64_t)NKV * HS, qrs = q_rs ? q_rs : (int64_t)NH * HS, ors = (int64_t)NH * HS;
    if (Tq < 8) {
        rows_fwd(nt, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, qrs, krs, kv_bstride, scale);
        return;
    }
    int grp = NH / NKV;
    #pragma omp parallel num_threads(nt)
    {
        float *kh = malloc(sizeof(float) * ((size_t)2 * Tk * HS + (size_t)2 * QB * HS + (size_t)QB * Tk));
        float *vh = kh + (int64_t)Tk * HS, *qb = vh + (int64_t)Tk * HS, *ob = qb + QB * HS, *S = ob + QB * HS;
        #pragma omp for schedule(dynamic, 1) collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                if (!kh) continue;
                gather(kh, k + b * kv_bstride + (int64_t)(h / grp) * HS, Tk, HS, krs);
                gather(vh, v + b * kv_bstride + (int64_t)(h / grp) * HS, Tk, HS, krs);
                for (int q0 = 0; q0 < Tq; q0 += QB) {
                    int nq = Tq - q0 < QB ? Tq - q0 : QB, kend = Tk - Tq + q0 + nq;
                    const float *qsrc = q + ((int64_t)b * Tq + q0) * qrs + (int64_t)h * HS;
                    gather(qb, qsrc, nq, HS, qrs);
                    smj_sgemm(1, S, qb, kh, nq, kend, HS, 0, 1, 0);
                    for (int i = 0; i < nq; i++) {
                        float *row = S + (int64_t)i * kend;
                        int n = Tk - Tq + q0 + i + 1;
                        for (int j = 0; j < n; j++) row[j] *= scale;
                        float mx = smj_max(row, n);
                        float sum = smj_exp_sub_sum(row, row, mx, n), inv = 1.0f / sum;
                        for (int j = 0; j < n; j++) row[j] *= inv;
                        for (int j = n; j < kend; j++) row[j] = 0;
                        lse[((int64_t)b * NH + h) * Tq + q0 + i] = mx + logf(sum);
                    }
                    smj_sgemm(1, ob, S, vh, nq, HS, kend, 0, 0, 0);
                    scatter(out + ((int64_t)b * Tq + q0) * ors + (int64_t)h * HS, ob, nq, HS, ors);
                }
            }
        free(kh);
    }
}

void smj_cpu_attention_bwd(int nt, float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v, int B, int T,
                           int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs,
                           float scale) {
    int grp = NH / NKV;
    /* q rows qrs apart, k, v krs, dq dqrs, dk, dv dkrs; dout, out dense (ors) */
    int64_t krs = kv_rs ? kv_rs : (int64_t)NKV * HS, qrs = q_rs ? q_rs : (int64_t)NH * HS, ors = (int64_t)NH * HS;
    int64_t dqrs = dq_rs ? dq_rs : qrs, dkrs = dkv_rs ? dkv_rs : krs;
    size_t th = (size_t)T * HS, bh = (size_t)QB * HS;
    #pragma omp parallel num_threads(nt)
    {
        float *kh = malloc(sizeof(float) * (4 * th + 4 * bh + 2 * (size_t)QB * T + QB));
        float *vh = kh + th, *dkh = vh + th, *dvh = dkh + th;
        float *qb = dvh + th, *dob = qb + bh, *ob = dob + bh, *dqb = ob + bh;
        float *P = dqb + bh, *dS = P + (size_t)QB * T, *D = dS + (size_t)QB * T;
        #pragma omp for schedule(dynamic, 1) collapse(2)
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < NKV; kvh++) {
                if (!kh) continue;
                int64_t ko = (int64_t)b * T * krs + (int64_t)kvh * HS;
                gather(kh, k + ko, T, HS, krs);
                gather(vh, v + ko, T, HS, krs);
                memset(dkh, 0, sizeof(float) * th);
                memset(dvh, 0, sizeof(float) * th);
                for (int h = kvh * grp; h < (kvh + 1) * grp; h++)
                    for (int q0 = 0; q0 < T; q0 += QB) {
                        int nq = T - q0 < QB ? T - q0 : QB, kend = q0 + nq;
                        int64_t qo = ((int64_t)b * T + q0) * qrs + (int64_t)h * HS;
                        int64_t oo = ((int64_t)b * T + q0) * ors + (int64_t)h * HS;
                        gather(qb, q + qo, nq, HS, qrs);
                        gather(dob, dout + oo, nq, HS, ors);
                        gather(ob, out + oo, nq, HS, ors);
                        smj_sgemm(1, P, qb, kh, nq, kend, HS, 0, 1, 0);     /* S */
                        smj_sgemm(1, dS, dob, vh, nq, kend, HS, 0, 1, 0);   /* dP */
                        for (int i = 0; i < nq; i++) {
                            float *pr = P + (int64_t)i * kend, *dr = dS + (int64_t)i * kend;
                            int n = q0 + i + 1;
                            float L = lse[((int64_t)b * NH + h) * T + q0 + i];
                            D[i] = dotf(dob + (int64_t)i * HS, ob + (int64_t)i * HS, HS);
                            for (int j = 0; j < n; j++) pr[j] *= scale;
                            smj_exp_sub_scale(pr, pr, L, 1.0f, n);
                            for (int j = n; j < kend; j++) pr[j] = 0;
                            float d = D[i];
                            #pragma omp simd
                            for (int j = 0; j < kend; j++) dr[j] = pr[j] * (dr[j] - d) * scale;
                        }
                        smj_sgemm(1, dqb, dS, kh, nq, HS, kend, 0, 0, 0);
                        scatter(dq + ((int64_t)b * T + q0) * dqrs + (int64_t)h * HS, dqb, nq, HS, dqrs);
                        smj_sgemm(1, dkh, dS, qb, kend, HS, nq, 1, 0, 1);
                        smj_sgemm(1, dvh, P, dob, kend, HS, nq, 1, 0, 1);
                    }
                scatter(dk + (int64_t)b * T * dkrs + (int64_t)kvh * HS, dkh, T, HS, dkrs);
                scatter(dv + (int64_t)b * T * dkrs + (int64_t)kvh * HS, dvh, T, HS, dkrs);
            }
        free(kh);
    }
}
