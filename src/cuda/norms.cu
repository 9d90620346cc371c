/* norms.cu — the normalization ops of the CUDA backend: rmsnorm forward
 * and backward, the residual add fused with the norm after it
 * (add_rmsnorm_fwd), and GPT-2's layernorm. One warp per row with 16-byte
 * accesses where rows allow; the weight gradients go through per-block
 * column partials summed in a fixed order (colsum_add: no atomics,
 * deterministic). Ops that feed products write the bf16 copy of their
 * output beside it in bf16 mode (shadow_of, see cuda_common.cuh).
 */
#include "cuda_common.cuh"

/* ------------------------------------------------------------ rmsnorm */

/* Four floats per access where rows allow (C % 4 == 0, 16-byte aligned):
 * the row kernels below take V4 as a template argument. */
static bool rows_v4(int64_t C, const void *p0, const void *p1, const void *p2) {
    return C % 4 == 0 && (uintptr_t)p0 % 16 == 0 && (uintptr_t)p1 % 16 == 0 && (uintptr_t)p2 % 16 == 0;
}

/* One warp per row; o16: out's bf16 copy (shadow_of) or NULL; out NULL:
 * its fp32 values not written (bf16_only, fp32_out). With b
 * (add_rmsnorm_fwd) the row is x + b, written to sum (s16: its copy, a
 * place named by bf16_home, or NULL) on the first pass and read back by the
 * same lanes on the second. */
template <bool V4, typename BT = float> /* BT: b's type (bf16: its exact copy) */
__global__ void k_rmsnorm_fwd(float *out, __nv_bfloat16 *o16, float *rstd, const float *x, const float *w, int64_t N,
                              int C, float eps, const BT *b, float *sum, __nv_bfloat16 *s16) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C;
    float ss = 0;
    if (V4) {
        for (int i = lane; i < C / 4; i += 32) {
            float4 v = ((const float4 *)xr)[i];
            if (b) {
                float4 u = ld4(b + n * C, i);
                v = make_float4(v.x + u.x, v.y + u.y, v.z + u.z, v.w + u.w);
                ((float4 *)(sum + n * C))[i] = v;
                if (s16) st_bf16x4(s16 + n * C + 4 * i, v);
            }
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = lane; i < C; i += 32) {
            float v = xr[i];
            if (b) {
                v += ld1(b + n * C, i);
                sum[n * C + i] = v;
                if (s16) s16[n * C + i] = __float2bfloat16_rn(v);
            }
            ss += v * v;
        }
    }
    if (b) xr = sum + n * C;
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[n] = r;
    if (V4) {
        for (int i = lane; i < C / 4; i += 32) {
            float4 v = ((const float4 *)xr)[i], g = ((const float4 *)w)[i];
            float4 o = {(v.x * r) * g.x, (v.y * r) * g.y, (v.z * r) * g.z, (v.w * r) * g.w};
            if (out) ((float4 *)(out + n * C))[i] = o;
            if (o16) st_bf16x4(o16 + n * C + 4 * i, o);
        }
    } else {
        for (int i = lane; i < C; i += 32) {
            float o = (xr[i] * r) * w[i];
            if (out) out[n * C + i] = o;
            if (o16) o16[n * C + i] = __float2bfloat16_rn(o);
        }
    }
}

/* Rows of C <= 1,024 values (V4 rows), one warp per row with the row in
 * registers (each lane NV float4, every load of the row issued before the
 * first use): RMSNorm (LN false; with b, add_rmsnorm_fwd: sum = x + b
 * written as the row is read) or LayerNorm (LN: mean, then the variance of
 * the deviations from the registers; bias may be NULL). Each lane sums its
 * values in k_rmsnorm_fwd<true>'s order, so RMSNorm gives its bits; the
 * second pass reads no memory. */
template <int NV, bool LN, typename BT = float>
__global__ void __launch_bounds__(128)
    k_norm_fwd_r(float *out, __nv_bfloat16 *o16, float *mean, float *rstd, const float *x, const float *w,
                 const float *bias, int64_t N, int C, float eps, const BT *b, float *sum, __nv_bfloat16 *s16) {
    const int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, C4 = C >> 2;
    if (n >= N) return;
    float4 v[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = lane + 32 * j;
        if (i < C4) v[j] = ((const float4 *)(x + n * C))[i];
    }
    if (b) {
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int i = lane + 32 * j;
            if (i >= C4) continue;
            const float4 u = ld4(b + n * C, i);
            v[j] = make_float4(v[j].x + u.x, v[j].y + u.y, v[j].z + u.z, v[j].w + u.w);
            ((float4 *)(sum + n * C))[i] = v[j];
            if (s16) st_bf16x4(s16 + n * C + 4 * i, v[j]);
        }
    }
    float m = 0.f, ss = 0.f;
    if (LN) {
#pragma unroll
        for (int j = 0; j < NV; j++)
            if (lane + 32 * j < C4) ss += v[j].x + v[j].y + v[j].z + v[j].w;
        m = warp_sum(ss) / (float)C;
        ss = 0.f;
    }
#pragma unroll
    for (int j = 0; j < NV; j++)
        if (lane + 32 * j < C4) {
            const float4 d = make_float4(v[j].x - m, v[j].y - m, v[j].z - m, v[j].w - m);
            ss += d.x * d.x + d.y * d.y + d.z * d.z + d.w * d.w;
        }
    const float r = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);
    if (lane == 0) {
        rstd[n] = r;
        if (LN) mean[n] = m;
    }
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = lane + 32 * j;
        if (i >= C4) continue;
        const float4 g = ((const float4 *)w)[i];
        float4 o;
        if (LN) {
            const float4 z = bias ? ((const float4 *)bias)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            o = make_float4((v[j].x - m) * r * g.x, (v[j].y - m) * r * g.y, (v[j].z - m) * r * g.z,
                            (v[j].w - m) * r * g.w);
            if (bias) o = make_float4(o.x + z.x, o.y + z.y, o.z + z.z, o.w + z.w);
        } else {
            o = make_float4((v[j].x * r) * g.x, (v[j].y * r) * g.y, (v[j].z * r) * g.z, (v[j].w * r) * g.w);
        }
        if (out) ((float4 *)(out + n * C))[i] = o;
        if (o16) st_bf16x4(o16 + n * C + 4 * i, o);
    }
}
/* Whether k_norm_fwd_r takes rows of C values at these pointers (NULL:
 * none): C % 4 == 0, C <= 1,024, 16-byte accesses. */
static bool norm_r_fits(int C, const void *out, const void *x, const void *w, const void *bias, const void *b,
                        const void *sum) {
    return rows_v4(C, out, x, w) && rows_v4(C, bias, b, sum) && C / 4 <= 256;
}
/* Launches k_norm_fwd_r for rows of C values: 0 (nothing launched) unless
 * norm_r_fits. */
template <bool LN, typename BT = float>
static int norm_fwd_r(smj_cuda *c, float *out, __nv_bfloat16 *o16, float *mean, float *rstd, const float *x,
                      const float *w, const float *bias, int64_t N, int C, float eps, const BT *b, float *sum,
                      __nv_bfloat16 *s16) {
    const int C4 = C / 4;
    if (!norm_r_fits(C, out, x, w, bias, sum, sum) || (b && !(sizeof(BT) == 4 ? rows_v4(C, b, b, b) : (uintptr_t)b % 8 == 0)))
        return 0;
    const unsigned nb = blocks_for(N, 4, INT32_MAX);
#define F(NV)                                                                                                      \
    k_norm_fwd_r<NV, LN, BT><<<nb, 128, 0, c->stream>>>(out, o16, mean, rstd, x, w, bias, N, C, eps, b, sum, s16)
    if (C4 <= 32) F(1);
    else if (C4 <= 64) F(2);
    else if (C4 <= 128) F(4);
    else if (C4 <= 192) F(6);
    else F(8);
#undef F
    LAUNCHED(c);
    return 1;
}

/* The same with a block of 256 threads per row, for a few long rows
 * (decoding), where one warp walking C/32 values one after another is
 * latency-bound (~10 us for C = 768). Sums in the order warp, then warps. */
__global__ void __launch_bounds__(256) k_rmsnorm_fwd_row(float *out, float *rstd, const float *x, const float *w,
                                                         int C, float eps) {
    __shared__ float red[8];
    int64_t n = blockIdx.x;
    int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
    const float *xr = x + n * C;
    float ss = 0;
    for (int i = threadIdx.x; i < C; i += 256) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    if (lane == 0) red[wi] = ss;
    __syncthreads();
    ss = 0;
    for (int i = 0; i < 8; i++) ss += red[i];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    for (int i = threadIdx.x; i < C; i += 256) out[n * C + i] = (xr[i] * r) * w[i];
}

void cu_rmsnorm_fwd(const smj_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N,
                           int C, float eps) {
    OP_BEGIN_L("rmsnorm_fwd");
    fp32_in(c, x, N * C);
    fp32_in(c, w, C);
    cast_written(c, out, N * C);
    cast_written(c, rstd, N);
    if (N > 0 && N < c->n_sm && C >= 256) {
        k_rmsnorm_fwd_row<<<(unsigned)N, 256, 0, c->stream>>>(out, rstd, x, w, C, eps);
        LAUNCHED(c);
    } else if (N > 0) {
        __nv_bfloat16 *o16 = shadow_of(c, out, N * C);
        float *o = fp32_out(c, out, N * C, o16);
        if (norm_fwd_r<false, float>(c, o, o16, NULL, rstd, x, w, NULL, N, C, eps, NULL, NULL, NULL)) {
            op_end(c);
            return;
        }
        if (rows_v4(C, out, x, w))
            k_rmsnorm_fwd<true, float><<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(o, o16, rstd, x, w, N, C,
                                                                                            eps, NULL, NULL, NULL);
        else
            k_rmsnorm_fwd<false, float><<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(o, o16, rstd, x, w, N, C,
                                                                                             eps, NULL, NULL, NULL);
        LAUNCHED(c);
    }
    op_end(c);
}

/* sum = a + b and its norm in one pass (a warp per row); for a few long rows
 * (decoding) the add, then the block-per-row norm. */
void cu_add_rmsnorm_fwd(const smj_exec *ex, float *sum, float *out, float *rstd, const float *a, const float *b,
                               const float *w, int64_t N, int C, float eps) {
    if (N > 0 && N < S(ex)->n_sm && C >= 256) {
        smj_backend_cuda.add(ex, sum, a, b, N * C);
        cu_rmsnorm_fwd(ex, out, rstd, sum, w, N, C, eps);
        return;
    }
    OP_BEGIN_L("add_rmsnorm_fwd");
    fp32_in(c, a, N * C);
    /* b read as its exact bf16 copy where there is one (a product's output
     * bf16_only promised under --fp16-activations: the block's Wo·att) */
    const __nv_bfloat16 *b16 = exact_in(c, b, N * C);
    fp32_in(c, w, C);
    cast_written(c, sum, N * C);
    cast_written(c, out, N * C);
    cast_written(c, rstd, N);
    if (N > 0) {
        __nv_bfloat16 *o16 = shadow_of(c, out, N * C), *s16 = home_of(c, sum, N * C);
        float *o = fp32_out(c, out, N * C, o16);
        if (b16 ? norm_fwd_r<false>(c, o, o16, NULL, rstd, a, w, NULL, N, C, eps, b16, sum, s16)
                : norm_fwd_r<false>(c, o, o16, NULL, rstd, a, w, NULL, N, C, eps, b, sum, s16)) {
            op_end(c);
            return;
        }
        const bool v4 = rows_v4(C, out, a, w) && rows_v4(C, sum, sum, sum) &&
                        (b16 ? (uintptr_t)b16 % 8 == 0 : rows_v4(C, b, b, b));
#define F(V4, BP)                                                                                                  \
    k_rmsnorm_fwd<V4><<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(o, o16, rstd, a, w, N, C, eps, BP, sum, s16)
        if (b16) {
            if (v4) F(true, b16);
            else F(false, b16);
        } else {
            if (v4) F(true, b);
            else F(false, b);
        }
#undef F
        LAUNCHED(c);
    }
    op_end(c);
}

/* dx = (acc ? dx : 0) + r w dy - r^3 x mean(w dy x) (dx16: its bf16 copy,
 * or NULL), and dw's partial sums in the same pass: block p takes rows
 * [p R, (p+1) R), one warp per row at a time; each warp adds dy x r of its
 * rows into its own shared row of C floats, then the block sums its warps'
 * rows in order into part[p, :] (colsum_add sums the blocks' rows: fixed
 * order, no atomics). x and dout: fp32, or their exact bf16 copies (X, D =
 * bf16: the same values). */
template <bool V4, typename X, typename D>
__global__ void k_rmsnorm_bwd(float *dx, __nv_bfloat16 *dx16, float *part, const D *dout, const X *x,
                              const float *w, const float *rstd, int64_t N, int C, int R, int acc) {
    extern __shared__ float accw[]; /* [warps][C] */
    int nw = blockDim.x >> 5, wi = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *aw = accw + (int64_t)wi * C;
    for (int i = lane; i < C; i += 32) aw[i] = 0.f;
    int64_t n0 = (int64_t)blockIdx.x * R, n1 = n0 + R < N ? n0 + R : N;
    for (int64_t n = n0 + wi; n < n1; n += nw) {
        const X *xr = x + n * C;
        const D *dy = dout + n * C;
        float dot = 0;
        if (V4) {
            for (int i = lane; i < C / 4; i += 32) {
                float4 a = ((const float4 *)w)[i], d = ld4(dy, i), v = ld4(xr, i);
                dot += a.x * d.x * v.x + a.y * d.y * v.y + a.z * d.z * v.z + a.w * d.w * v.w;
            }
        } else {
            for (int i = lane; i < C; i += 32) dot += w[i] * ld1(dy, i) * ld1(xr, i);
        }
        dot = warp_sum(dot) / (float)C;
        float r = rstd[n], r3 = r * r * r;
        if (V4) {
            for (int i = lane; i < C / 4; i += 32) {
                float4 a = ((const float4 *)w)[i], d = ld4(dy, i), v = ld4(xr, i);
                float4 o = {r * a.x * d.x - r3 * v.x * dot, r * a.y * d.y - r3 * v.y * dot,
                            r * a.z * d.z - r3 * v.z * dot, r * a.w * d.w - r3 * v.w * dot};
                if (acc) {
                    float4 p = ((const float4 *)(dx + n * C))[i];
                    o = make_float4(p.x + o.x, p.y + o.y, p.z + o.z, p.w + o.w);
                }
                ((float4 *)(dx + n * C))[i] = o;
                if (dx16) st_bf16x4(dx16 + n * C + 4 * i, o);
                float4 s = ((float4 *)aw)[i]; /* 16-byte shared accesses: no bank conflicts */
                s.x += d.x * v.x * r;
                s.y += d.y * v.y * r;
                s.z += d.z * v.z * r;
                s.w += d.w * v.w * r;
                ((float4 *)aw)[i] = s;
            }
        } else {
            for (int i = lane; i < C; i += 32) {
                float xv = ld1(xr, i), e = ld1(dy, i), o = (acc ? dx[n * C + i] : 0.0f) + (r * w[i] * e - r3 * xv * dot);
                dx[n * C + i] = o;
                if (dx16) dx16[n * C + i] = __float2bfloat16_rn(o);
                aw[i] += e * xv * r;
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float s = 0;
        for (int k = 0; k < nw; k++) s += accw[(int64_t)k * C + i];
        part[(int64_t)blockIdx.x * C + i] = s;
    }
}
/* The same for rows of C <= 128 NV values (V4 rows): each lane keeps its
 * NV float4 of dy, x (and dx with acc) in registers, all loads of a row
 * issued before the first use, w's in registers for every row. */
template <int NV, typename X, typename D>
__global__ void k_rmsnorm_bwd_r(float *dx, __nv_bfloat16 *dx16, float *part, const D *dout, const X *x,
                                const float *w, const float *rstd, int64_t N, int C, int R, int acc) {
    extern __shared__ float accw[]; /* [warps][C] */
    const int nw = blockDim.x >> 5, wi = threadIdx.x >> 5, lane = threadIdx.x & 31, C4 = C >> 2;
    float4 *aw = (float4 *)(accw + (int64_t)wi * C), wv[NV];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = lane + 32 * j;
        if (i < C4) {
            aw[i] = make_float4(0.f, 0.f, 0.f, 0.f);
            wv[j] = ((const float4 *)w)[i];
        }
    }
    int64_t n0 = (int64_t)blockIdx.x * R, n1 = n0 + R < N ? n0 + R : N;
    for (int64_t n = n0 + wi; n < n1; n += nw) {
        const D *dy = dout + n * C;
        float4 *dxr = (float4 *)(dx + n * C);
        float4 d[NV], v[NV], p[NV];
        float dot = 0;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int i = lane + 32 * j;
            if (i < C4) {
                d[j] = ld4(dy, i);
                v[j] = ld4(x + n * C, i);
                p[j] = acc ? dxr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
#pragma unroll
        for (int j = 0; j < NV; j++)
            if (lane + 32 * j < C4)
                dot += wv[j].x * d[j].x * v[j].x + wv[j].y * d[j].y * v[j].y + wv[j].z * d[j].z * v[j].z +
                       wv[j].w * d[j].w * v[j].w;
        dot = warp_sum(dot) / (float)C;
        const float r = rstd[n], r3 = r * r * r;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int i = lane + 32 * j;
            if (i >= C4) continue;
            const float4 a = wv[j], e = d[j], u = v[j];
            float4 o = {p[j].x + (r * a.x * e.x - r3 * u.x * dot), p[j].y + (r * a.y * e.y - r3 * u.y * dot),
                        p[j].z + (r * a.z * e.z - r3 * u.z * dot), p[j].w + (r * a.w * e.w - r3 * u.w * dot)};
            dxr[i] = o;
            if (dx16) st_bf16x4(dx16 + n * C + 4 * i, o);
            float4 s = aw[i];
            s.x += e.x * u.x * r;
            s.y += e.y * u.y * r;
            s.z += e.z * u.z * r;
            s.w += e.w * u.w * r;
            aw[i] = s;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float s = 0;
        for (int k = 0; k < nw; k++) s += accw[(int64_t)k * C + i];
        part[(int64_t)blockIdx.x * C + i] = s;
    }
}
/* dw[c] += the sum of part[p, c] over p < P, in a fixed order: a block
 * takes 32 columns, its 16 warps (threadIdx.y) rows y, y + 16, y + 32, ...
 * (eight loads in flight a thread), then the 16 partial sums are added in
 * warp order. One thread a column over all P rows (P ~ 4 per SM) left each
 * sum a chain of dependent L2 round trips, tens of microseconds a call. */
__global__ void __launch_bounds__(512) k_colsum_add(float *dw, const float *part, int P, int C) {
    __shared__ float sh[16][33];
    const int cc = blockIdx.x * 32 + threadIdx.x;
    float s = 0;
    if (cc < C) {
        int p = threadIdx.y;
        for (; p + 7 * 16 < P; p += 8 * 16) {
            float v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = part[(int64_t)(p + 16 * u) * C + cc];
#pragma unroll
            for (int u = 0; u < 8; u++) s += v[u];
        }
        for (; p < P; p += 16) s += part[(int64_t)p * C + cc];
    }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && cc < C) {
        float t = 0;
        for (int k = 0; k < 16; k++) t += sh[k][threadIdx.x];
        dw[cc] += t;
    }
}
void colsum_add(smj_cuda *c, float *dw, const float *part, int P, int64_t C) {
    if (C <= 0) return;
    k_colsum_add<<<(unsigned)((C + 31) / 32), dim3(32, 16), 0, c->stream>>>(dw, part, P, (int)C);
    LAUNCHED(c);
}

/* Launches rmsnorm_bwd's kernel for x read as X, dout as D (fp32, or their
 * exact bf16 copies); 0 when the shared memory cannot be had. */
template <typename X, typename D>
static int rms_bwd_launch(smj_cuda *c, int NV, bool v4, size_t sm, int P, int nw, float *dx, __nv_bfloat16 *dx16,
                          float *part, const D *dout, const X *x, const float *w, const float *rstd, int64_t N, int C,
                          int R, int acc) {
    const void *fn = NV == 1 ? (const void *)k_rmsnorm_bwd_r<1, X, D>
                   : NV == 2 ? (const void *)k_rmsnorm_bwd_r<2, X, D>
                   : NV == 4 ? (const void *)k_rmsnorm_bwd_r<4, X, D>
                   : NV == 6 ? (const void *)k_rmsnorm_bwd_r<6, X, D>
                   : NV == 8 ? (const void *)k_rmsnorm_bwd_r<8, X, D>
                   : v4      ? (const void *)k_rmsnorm_bwd<true, X, D>
                             : (const void *)k_rmsnorm_bwd<false, X, D>;
    if (!smem_ok(c, fn, sm)) return 0;
#define F(K) K<<<(unsigned)P, 32 * nw, sm, c->stream>>>(dx, dx16, part, dout, x, w, rstd, N, C, R, acc)
    switch (NV) {
    case 1: F((k_rmsnorm_bwd_r<1, X, D>)); break;
    case 2: F((k_rmsnorm_bwd_r<2, X, D>)); break;
    case 4: F((k_rmsnorm_bwd_r<4, X, D>)); break;
    case 6: F((k_rmsnorm_bwd_r<6, X, D>)); break;
    case 8: F((k_rmsnorm_bwd_r<8, X, D>)); break;
    default: if (v4) F((k_rmsnorm_bwd<true, X, D>)); else F((k_rmsnorm_bwd<false, X, D>));
    }
#undef F
    LAUNCHED(c);
    return 1;
}

void cu_rmsnorm_bwd(const smj_exec *ex, float *dx, float *dw, const float *dout, const float *x,
                           const float *w, const float *rstd, int64_t N, int C, int acc) {
    OP_BEGIN_L("rmsnorm_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    cast_written(c, dx, N * C); /* (read too with acc: a lazy dx is written first) */
    cast_written(c, dw, C);
    fp32_in(c, w, C);
    fp32_in(c, rstd, N);
    /* x and dout as their exact bf16 copies where there are (a bound saved
     * tensor; a product's output promised to be read through its copy) */
    const __nv_bfloat16 *x16 = exact_in(c, x, N * C), *d16 = exact_in(c, dout, N * C);
    /* up to 8 warps a block, each with a shared row of C floats (48 KiB in
     * all; one warp and the GPU's opt-in limit for rows over 12,288) */
    int nw = (int)(49152 / ((int64_t)C * 4));
    if (nw > 8) nw = 8;
    if (nw < 1) nw = 1;
    size_t sm = (size_t)nw * C * sizeof(float);
    bool v4 = rows_v4(C, dx, dout, x) && (uintptr_t)w % 16 == 0;
    /* rows of up to 1,024 values in registers (NV float4 a lane) */
    const int C4 = C / 4, NV = !v4 || C4 > 256 ? 0 : C4 <= 32 ? 1 : C4 <= 64 ? 2 : C4 <= 128 ? 4 : C4 <= 192 ? 6 : 8;
    /* two blocks per SM (one wave), each at least nw rows: on an H200 (Llama
     * 110M, T = 1024, B = 32) 2.54 -> 2.47 ms a step against four (round 37) */
    int64_t R = (N + (int64_t)c->n_sm * 2 - 1) / ((int64_t)c->n_sm * 2);
    if (R < nw) R = nw;
    int P = (int)((N + R - 1) / R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * C);
    if (!part) return;
    cast_written(c, part, (int64_t)P * C);
    /* dx feeds products (the residual gradient: dW and dX of the block
     * below; dq/dk under QK-norm): its bf16 copy is written beside it */
    __nv_bfloat16 *dx16 = shadow_of(c, dx, N * C);
    int ok = x16 && d16   ? rms_bwd_launch(c, NV, v4, sm, P, nw, dx, dx16, part, d16, x16, w, rstd, N, C, (int)R, acc)
             : x16        ? rms_bwd_launch(c, NV, v4, sm, P, nw, dx, dx16, part, dout, x16, w, rstd, N, C, (int)R, acc)
             : d16        ? rms_bwd_launch(c, NV, v4, sm, P, nw, dx, dx16, part, d16, x, w, rstd, N, C, (int)R, acc)
                          : rms_bwd_launch(c, NV, v4, sm, P, nw, dx, dx16, part, dout, x, w, rstd, N, C, (int)R, acc);
    if (!ok) return;
    colsum_add(c, dw, part, P, C);
    op_end(c);
}

/* ------------------------------------------------------------ layernorm (GPT-2 family) */

/* One warp per row, two passes as the reference: the mean, then the
 * variance of the deviations (biased, eps inside the sqrt); o16: out's
 * bf16 copy (shadow_of: the next product reads it) or NULL; out NULL: the
 * copy alone. */
__global__ void k_layernorm_fwd(float *out, __nv_bfloat16 *o16, float *mean, float *rstd, const float *x,
                                const float *w, const float *b, int64_t N, int C, float eps) {
    int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + n * C;
    float s = 0, v = 0;
    for (int i = lane; i < C; i += 32) s += xr[i];
    float m = warp_sum(s) / (float)C;
    for (int i = lane; i < C; i += 32) v += (xr[i] - m) * (xr[i] - m);
    float r = 1.0f / sqrtf(warp_sum(v) / (float)C + eps);
    if (lane == 0) { mean[n] = m; rstd[n] = r; }
    for (int i = lane; i < C; i += 32) {
        float y = b ? (xr[i] - m) * r * w[i] + b[i] : (xr[i] - m) * r * w[i];
        if (out) out[n * C + i] = y;
        if (o16) o16[n * C + i] = __float2bfloat16_rn(y);
    }
}

/* The same with a block of 256 threads per row, for a few long rows
 * (decoding; as k_rmsnorm_fwd_row): sums in the order warp, then warps. */
__global__ void __launch_bounds__(256) k_layernorm_fwd_row(float *out, float *mean, float *rstd, const float *x,
                                                           const float *w, const float *b, int C, float eps) {
    __shared__ float red[8];
    int64_t n = blockIdx.x;
    int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
    const float *xr = x + n * C;
    float s = 0, v = 0;
    for (int i = threadIdx.x; i < C; i += 256) s += xr[i];
    s = warp_sum(s);
    if (lane == 0) red[wi] = s;
    __syncthreads();
    s = 0;
    for (int i = 0; i < 8; i++) s += red[i];
    float m = s / (float)C;
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += 256) v += (xr[i] - m) * (xr[i] - m);
    v = warp_sum(v);
    if (lane == 0) red[wi] = v;
    __syncthreads();
    v = 0;
    for (int i = 0; i < 8; i++) v += red[i];
    float r = 1.0f / sqrtf(v / (float)C + eps);
    if (threadIdx.x == 0) { mean[n] = m; rstd[n] = r; }
    for (int i = threadIdx.x; i < C; i += 256) out[n * C + i] = (xr[i] - m) * r * w[i] + (b ? b[i] : 0.0f);
}

void cu_layernorm_fwd(const smj_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                             const float *b, int64_t N, int C, float eps) {
    OP_BEGIN_L("layernorm_fwd"); /* other lazy tensors (a block's bf16-only ones) stay unwritten */
    fp32_in(c, x, N * C);
    fp32_in(c, w, C);
    if (b) fp32_in(c, b, C);
    cast_written(c, out, N * C);
    cast_written(c, mean, N);
    cast_written(c, rstd, N);
    if (N > 0 && N < c->n_sm && C >= 256) {
        k_layernorm_fwd_row<<<(unsigned)N, 256, 0, c->stream>>>(out, mean, rstd, x, w, b, C, eps);
        LAUNCHED(c);
    } else if (N > 0 && C > 0) {
        /* the products after read out: its bf16 copy beside it, or alone
         * where bf16_only promises it */
        __nv_bfloat16 *o16 = shadow_of(c, out, N * C);
        if (norm_fwd_r<true, float>(c, fp32_out(c, out, N * C, o16), o16, mean, rstd, x, w, b, N, C, eps, NULL, NULL,
                                    NULL)) {
            op_end(c);
            return;
        }
        k_layernorm_fwd<<<blocks_for(N, 4, INT32_MAX), 128, 0, c->stream>>>(fp32_out(c, out, N * C, o16), o16, mean,
                                                                          rstd, x, w, b, N, C, eps);
        LAUNCHED(c);
    }
    op_end(c);
}

/* sum = a + b and its LayerNorm in one pass (norm_fwd_r: a warp per row
 * held in registers, the sum written as the row is read, its 16-bit home
 * beside it where one is named); other rows (a few long ones, as in
 * decoding; C > 1,024; unaligned) take the add, then layernorm_fwd. */
void cu_add_layernorm_fwd(const smj_exec *ex, float *sum, float *out, float *mean, float *rstd, const float *a,
                          const float *b, const float *w, const float *bias, int64_t N, int C, float eps) {
    if (N <= 0 || (N < S(ex)->n_sm && C >= 256) || !norm_r_fits(C, out, a, w, bias, b, sum)) {
        smj_backend_cuda.add(ex, sum, a, b, N * C);
        cu_layernorm_fwd(ex, out, mean, rstd, sum, w, bias, N, C, eps);
        return;
    }
    OP_BEGIN_L("add_layernorm_fwd");
    fp32_in(c, a, N * C);
    fp32_in(c, b, N * C);
    fp32_in(c, w, C);
    if (bias) fp32_in(c, bias, C);
    cast_written(c, sum, N * C);
    cast_written(c, out, N * C);
    cast_written(c, mean, N);
    cast_written(c, rstd, N);
    __nv_bfloat16 *o16 = shadow_of(c, out, N * C), *s16 = home_of(c, sum, N * C);
    norm_fwd_r<true>(c, fp32_out(c, out, N * C, o16), o16, mean, rstd, a, w, bias, N, C, eps, b, sum, s16);
    op_end(c);
}

/* xh = (x - mean) r, g = w dy: dx = (acc ? dx : 0) + r (g - mean(g) - xh
 * mean(g xh)); dw += dy xh, db += dy. One pass, as k_rmsnorm_bwd: a warp
 * per row (its values read twice, the second time from L1), the block's
 * rows' dw and db terms summed in shared memory per warp, then per block
 * into part[blockIdx, :] and part[P + blockIdx, :] (colsum_add sums the
 * blocks in order). V4: 16-byte accesses (C % 4 == 0, aligned rows). */
template <bool V4, typename X, typename D>
__global__ void k_layernorm_bwd(float *dx, __nv_bfloat16 *dx16, float *part, const D *dout, const X *x, const float *w,
                                const float *mean, const float *rstd, int64_t N, int C, int R, int P, int acc) {
    extern __shared__ float accw[]; /* [warps][2C]: dw terms, then db terms */
    int nw = blockDim.x >> 5, wi = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *aw = accw + (int64_t)wi * 2 * C, *ab = aw + C;
    for (int i = lane; i < 2 * C; i += 32) aw[i] = 0.f;
    int64_t n0 = (int64_t)blockIdx.x * R, n1 = n0 + R < N ? n0 + R : N;
    for (int64_t n = n0 + wi; n < n1; n += nw) {
        const X *xr = x + n * C;
        const D *dy = dout + n * C;
        float *d = dx + n * C;
        float m = mean[n], r = rstd[n], sg = 0, sgx = 0;
        if (V4) {
            for (int i = lane; i < C / 4; i += 32) {
                float4 a = ((const float4 *)w)[i], g = ld4(dy, i), v = ld4(xr, i);
                sg += a.x * g.x + a.y * g.y + a.z * g.z + a.w * g.w;
                sgx += a.x * g.x * ((v.x - m) * r) + a.y * g.y * ((v.y - m) * r) + a.z * g.z * ((v.z - m) * r) +
                       a.w * g.w * ((v.w - m) * r);
            }
        } else {
            for (int i = lane; i < C; i += 32) {
                float g = w[i] * ld1(dy, i);
                sg += g;
                sgx += g * ((ld1(xr, i) - m) * r);
            }
        }
        sg = warp_sum(sg) / (float)C;
        sgx = warp_sum(sgx) / (float)C;
        if (V4) {
            for (int i = lane; i < C / 4; i += 32) {
                float4 a = ((const float4 *)w)[i], g = ld4(dy, i), v = ld4(xr, i);
                float4 h = {(v.x - m) * r, (v.y - m) * r, (v.z - m) * r, (v.w - m) * r};
                float4 o = {r * (a.x * g.x - sg - h.x * sgx), r * (a.y * g.y - sg - h.y * sgx),
                            r * (a.z * g.z - sg - h.z * sgx), r * (a.w * g.w - sg - h.w * sgx)};
                if (acc) {
                    float4 p = ((const float4 *)d)[i];
                    o = make_float4(p.x + o.x, p.y + o.y, p.z + o.z, p.w + o.w);
                }
                ((float4 *)d)[i] = o;
                if (dx16) st_bf16x4(dx16 + n * C + 4 * i, o);
                float4 sw = ((float4 *)aw)[i], sb = ((float4 *)ab)[i]; /* 16-byte shared accesses */
                sw.x += g.x * h.x; sw.y += g.y * h.y; sw.z += g.z * h.z; sw.w += g.w * h.w;
                sb.x += g.x; sb.y += g.y; sb.z += g.z; sb.w += g.w;
                ((float4 *)aw)[i] = sw;
                ((float4 *)ab)[i] = sb;
            }
        } else {
            for (int i = lane; i < C; i += 32) {
                float h = (ld1(xr, i) - m) * r, e = ld1(dy, i), o = (acc ? d[i] : 0.0f) + r * (w[i] * e - sg - h * sgx);
                d[i] = o;
                if (dx16) dx16[n * C + i] = __float2bfloat16_rn(o);
                aw[i] += e * h;
                ab[i] += e;
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
        float s = 0;
        for (int k = 0; k < nw; k++) s += accw[(int64_t)k * 2 * C + i];
        if (i < C) part[(int64_t)blockIdx.x * C + i] = s;
        else part[((int64_t)P + blockIdx.x) * C + i - C] = s;
    }
}

/* dw, db: per-block column partials, then colsum_add sums them in fixed
 * order (no atomics: deterministic). OP_BEGIN_L: x and dout read as their
 * exact bf16 copies where there are (x: a bound saved tensor under
 * --fp16-activations; dout: a product's output bf16_only promised), else
 * in 32 bits, as w and the statistics; other bound tensors stay
 * unwritten. dx feeds products (the residual gradient): its bf16 copy is
 * written beside it. */
template <typename X, typename D>
static int ln_bwd_launch(smj_cuda *c, bool v4, size_t sm, int P, int nw, float *dx, __nv_bfloat16 *dx16, float *part,
                          const D *dout, const X *x, const float *w, const float *mean, const float *rstd, int64_t N,
                          int C, int R, int acc) {
    const void *fn = v4 ? (const void *)k_layernorm_bwd<true, X, D> : (const void *)k_layernorm_bwd<false, X, D>;
    if (!smem_ok(c, fn, sm)) return 0;
    if (v4) k_layernorm_bwd<true><<<(unsigned)P, 32 * nw, sm, c->stream>>>(dx, dx16, part, dout, x, w, mean, rstd, N, C, R, P, acc);
    else k_layernorm_bwd<false><<<(unsigned)P, 32 * nw, sm, c->stream>>>(dx, dx16, part, dout, x, w, mean, rstd, N, C, R, P, acc);
    LAUNCHED(c);
    return 1;
}
void cu_layernorm_bwd(const smj_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                      const float *w, const float *mean, const float *rstd, int64_t N, int C, int acc) {
    OP_BEGIN_L("layernorm_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    cast_written(c, dx, N * C); /* (read too with acc: a lazy dx is written first) */
    cast_written(c, dw, C);
    if (db) cast_written(c, db, C);
    fp32_in(c, w, C);
    fp32_in(c, mean, N);
    fp32_in(c, rstd, N);
    const __nv_bfloat16 *x16 = exact_in(c, x, N * C), *d16 = exact_in(c, dout, N * C);
    /* up to 8 warps a block, each with two shared rows of C floats (48 KiB
     * in all; one warp and the GPU's opt-in limit for rows over 6,144) */
    int nw = (int)(49152 / ((int64_t)C * 8));
    if (nw > 8) nw = 8;
    if (nw < 1) nw = 1;
    size_t sm = (size_t)nw * 2 * C * sizeof(float);
    bool v4 = rows_v4(C, dx, dout, x) && (uintptr_t)w % 16 == 0;
    /* two blocks per SM (one wave), each at least nw rows, as rmsnorm_bwd
     * (there measured; GPT-2's step not timed apart with it, round 38) */
    int64_t R = (N + (int64_t)c->n_sm * 2 - 1) / ((int64_t)c->n_sm * 2);
    if (R < nw) R = nw;
    int P = (int)((N + R - 1) / R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * C * 2);
    if (!part) return;
    cast_written(c, part, (int64_t)P * C * 2);
    __nv_bfloat16 *dx16 = shadow_of(c, dx, N * C);
    if (dx16 && (uintptr_t)dx16 % 8) v4 = false;
    int ok = x16 && d16 ? ln_bwd_launch(c, v4, sm, P, nw, dx, dx16, part, d16, x16, w, mean, rstd, N, C, (int)R, acc)
             : x16      ? ln_bwd_launch(c, v4, sm, P, nw, dx, dx16, part, dout, x16, w, mean, rstd, N, C, (int)R, acc)
             : d16      ? ln_bwd_launch(c, v4, sm, P, nw, dx, dx16, part, d16, x, w, mean, rstd, N, C, (int)R, acc)
                        : ln_bwd_launch(c, v4, sm, P, nw, dx, dx16, part, dout, x, w, mean, rstd, N, C, (int)R, acc);
    if (!ok) return;
    colsum_add(c, dw, part, P, C);
    if (db) {
        colsum_add(c, db, part + (int64_t)P * C, P, C);
    }
    op_end(c);
}
