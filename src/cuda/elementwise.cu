/* elementwise.cu — the CUDA backend's element-wise ops: swiglu fwd/bwd,
 * add, scale, adamw and gelu fwd/bwd (the GPT-2 family). Grid-stride loops
 * (EW_GRID; swiglu by rows, row_walk), 16-byte accesses where the pointers allow; in bf16 mode the
 * ops read their inputs' exact bf16 copies where there are and write their
 * outputs' copies beside (or instead of) the fp32 values, as copies.cu's
 * bookkeeping asks (shadow_of, home_of, fp32_out). Split from
 * cuda_backend.cu, whose op table points here (cuda_common.cuh).
 */
#include "cuda_common.cuh"

/* ------------------------------------------------------------ element-wise */

/* SwiGLU in fp32 (sigmoid_sfu; within 1e-6 of the double reference). Walked by
 * rows (row_walk): out / dout are dense [N, H], gate, up, dgate, dup and
 * their copies rows ld apart, so a value's two places come from its row and
 * column without a division. VW values per thread: 8 when every pointer, fp32 or
 * bf16, is 16-byte aligned (a bf16 operand then one 16-byte access), 4 when
 * the fp32 ones are (8-byte bf16 accesses), else 1, H and ld multiples of
 * VW; every element's arithmetic is the same in each. Forward: out NULL:
 * its fp32 values not written (fp32_out); o16: out's bf16 copy (shadow_of)
 * or NULL; g16, u16: copies of the inputs to write (home_of) or NULL; gate
 * and up read as G: fp32, or bf16 (their exact copies). Backward: dgate,
 * dup NULL: not written (fp32_out); dg16, du16: their copies or NULL; dout
 * read as D, gate and up as G (fp32 or exact bf16 copies). */
/* A block's threads over rows of nv vectors: the whole block along a row
 * (nv >= blockDim.x), else blockDim.x / nv rows at once, a thread a vector;
 * rows then gridDim.x * rpb apart. */
struct row_walk {
    int64_t r, rst;
    int v0, vst;
    __device__ __forceinline__ explicit row_walk(int nv) {
        const int T = blockDim.x, rpb = nv >= T ? 1 : T / nv, r0 = nv >= T ? 0 : threadIdx.x / nv;
        v0 = nv >= T ? threadIdx.x : threadIdx.x % nv;
        vst = nv >= T ? T : nv;
        r = r0 < rpb ? (int64_t)blockIdx.x * rpb + r0 : INT64_MAX; /* threads past rpb rows: none */
        rst = (int64_t)gridDim.x * rpb;
    }
};
/* VW values of fp32 data or its bf16 copy as loaded (bf16 kept packed, so
 * a thread holds several loads in flight in few registers): ld at element
 * e (a multiple of VW), f unpacks value i */
template <int VW, typename T> struct pk;
template <> struct pk<8, __nv_bfloat16> {
    uint4 r;
    __device__ __forceinline__ void ld(const __nv_bfloat16 *p, int64_t e) { r = ((const uint4 *)p)[e >> 3]; }
    __device__ __forceinline__ float f(int i) const {
        const uint32_t w = i < 2 ? r.x : i < 4 ? r.y : i < 6 ? r.z : r.w;
        return __uint_as_float(i & 1 ? w & 0xffff0000u : w << 16);
    }
};
template <> struct pk<4, __nv_bfloat16> {
    uint2 r;
    __device__ __forceinline__ void ld(const __nv_bfloat16 *p, int64_t e) { r = ((const uint2 *)p)[e >> 2]; }
    __device__ __forceinline__ float f(int i) const {
        const uint32_t w = i < 2 ? r.x : r.y;
        return __uint_as_float(i & 1 ? w & 0xffff0000u : w << 16);
    }
};
template <> struct pk<8, float> {
    float4 a, b;
    __device__ __forceinline__ void ld(const float *p, int64_t e) { ld8(p, e >> 3, a, b); }
    __device__ __forceinline__ float f(int i) const {
        const float4 &q = i < 4 ? a : b;
        return (i & 3) == 0 ? q.x : (i & 3) == 1 ? q.y : (i & 3) == 2 ? q.z : q.w;
    }
};
template <> struct pk<4, float> {
    float4 a;
    __device__ __forceinline__ void ld(const float *p, int64_t e) { a = ((const float4 *)p)[e >> 2]; }
    __device__ __forceinline__ float f(int i) const { return i == 0 ? a.x : i == 1 ? a.y : i == 2 ? a.z : a.w; }
};
template <typename T> struct pk<1, T> {
    T r;
    __device__ __forceinline__ void ld(const T *p, int64_t e) { r = p[e]; }
    __device__ __forceinline__ float f(int) const { return ld1(&r, 0); }
};
/* VW values stored as fp32 (o; NULL: not) and bf16 (o16; NULL: not) at
 * element e */
template <int VW> __device__ __forceinline__ void stv(float *o, __nv_bfloat16 *o16, int64_t e, const float *x) {
    if constexpr (VW == 1) {
        if (o) o[e] = x[0];
        if (o16) o16[e] = __float2bfloat16_rn(x[0]);
    } else {
        const float4 a = make_float4(x[0], x[1], x[2], x[3]);
        if constexpr (VW == 8) {
            const float4 b = make_float4(x[4], x[5], x[6], x[7]);
            if (o) {
                ((float4 *)o)[e >> 2] = a;
                ((float4 *)o)[(e >> 2) + 1] = b;
            }
            if (o16) st_bf16x8(o16 + e, a, b);
        } else {
            if (o) ((float4 *)o)[e >> 2] = a;
            if (o16) st_bf16x4(o16 + e, a);
        }
    }
}
template <int VW, typename T> __device__ __forceinline__ void stv(float *o, __nv_bfloat16 *o16, int64_t e,
                                                                 const pk<VW, T> &x) {
    float v[VW];
#pragma unroll
    for (int i = 0; i < VW; i++) v[i] = x.f(i);
    stv<VW>(o, o16, e, v);
}
/* A thread's vectors over N rows of nv, U at a time (row_walk's order),
 * f(rr, vv) for each U: every load of the U issued before the first value
 * is used. On an H200 (Llama 110M, T = 1024, B = 32) two took the forward
 * from 1.30 to 1.22 ms a step (the sigmoid from the special function unit
 * had taken it from 1.46 to 1.30: it was issue-bound); four measured no
 * faster there and slower in the backward (2.13 against 1.97 ms). */
template <int U, typename F> __device__ __forceinline__ void walk_u(int64_t N, int nv, F &&f) {
    const row_walk w(nv);
    int64_t r = w.r;
    int v = w.v0;
    while (r < N) {
        int64_t rr[U]; /* the next U vectors' rows (>= N: none) and columns */
        int vv[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            rr[k] = r;
            vv[k] = v;
            v += w.vst;
            if (v >= nv) {
                v = w.v0;
                r += w.rst;
            }
        }
        f(rr, vv);
    }
}
template <int VW, int U, typename G>
__global__ void k_swiglu_fwd(float *out, __nv_bfloat16 *o16, __nv_bfloat16 *g16, __nv_bfloat16 *u16, const G *gate,
                             const G *up, int64_t N, int H, int64_t ld) {
    walk_u<U>(N, H / VW, [&](const int64_t *rr, const int *vv) {
        pk<VW, G> g[U], u[U];
#pragma unroll
        for (int k = 0; k < U; k++)
            if (rr[k] < N) {
                const int64_t j = rr[k] * ld + (int64_t)vv[k] * VW;
                g[k].ld(gate, j);
                u[k].ld(up, j);
            }
#pragma unroll
        for (int k = 0; k < U; k++)
            if (rr[k] < N) {
                const int64_t e = rr[k] * H + (int64_t)vv[k] * VW, j = rr[k] * ld + (int64_t)vv[k] * VW;
                float o[VW];
#pragma unroll
                for (int i = 0; i < VW; i++) o[i] = silu_f(g[k].f(i)) * u[k].f(i);
                stv<VW>(out, o16, e, o);
                if (g16) stv<VW>(NULL, g16, j, g[k]);
                if (u16) stv<VW>(NULL, u16, j, u[k]);
            }
    });
}
__device__ __forceinline__ void swiglu_d(float d, float g, float u, float &dg, float &du) {
    const float s = sigmoid_sfu(g);
    dg = d * u * s * (1.0f + g * (1.0f - s));
    du = d * g * s;
}
template <int VW, int U, typename D, typename G>
__global__ void k_swiglu_bwd(float *dgate, float *dup, __nv_bfloat16 *dg16, __nv_bfloat16 *du16, const D *dout,
                             const G *gate, const G *up, int64_t N, int H, int64_t ld) {
    walk_u<U>(N, H / VW, [&](const int64_t *rr, const int *vv) {
        pk<VW, D> d[U];
        pk<VW, G> g[U], u[U];
#pragma unroll
        for (int k = 0; k < U; k++)
            if (rr[k] < N) {
                const int64_t e = rr[k] * H + (int64_t)vv[k] * VW, j = rr[k] * ld + (int64_t)vv[k] * VW;
                d[k].ld(dout, e);
                g[k].ld(gate, j);
                u[k].ld(up, j);
            }
#pragma unroll
        for (int k = 0; k < U; k++)
            if (rr[k] < N) {
                const int64_t j = rr[k] * ld + (int64_t)vv[k] * VW;
                float a[VW], b[VW];
#pragma unroll
                for (int i = 0; i < VW; i++) swiglu_d(d[k].f(i), g[k].f(i), u[k].f(i), a[i], b[i]);
                stv<VW>(dgate, dg16, j, a);
                stv<VW>(dup, du16, j, b);
            }
    });
}
/* o16: out's copy to write (a place named by bf16_home) or NULL. */
__global__ void k_add(float *out, __nv_bfloat16 *o16, const float *a, const float *b, int64_t n, int wide) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = wide ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        float4 x = ((const float4 *)a)[i], y = ((const float4 *)b)[i];
        float4 o = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
        ((float4 *)out)[i] = o;
        if (o16) st_bf16x4(o16 + 4 * i, o);
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) {
        out[i] = a[i] + b[i];
        if (o16) o16[i] = __float2bfloat16_rn(out[i]);
    }
}
__global__ void k_scale(float *x, float s, int64_t n, int wide) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = wide ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        float4 v = ((float4 *)x)[i];
        ((float4 *)x)[i] = make_float4(v.x * s, v.y * s, v.z * s, v.w * s);
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) x[i] *= s;
}
/* AdamW per element in float, as the CPU backend computes it (bc1 = 1 -
 * b1^t, sbc2 = sqrt(1 - b2^t)); IEEE division and square root (it was in
 * double as the reference; with adamw_runs the update went from 1.15 ms
 * in 50 launches to 0.78 in one a Llama 110M step on an H200). Four
 * elements a thread (16-byte accesses: 64 bytes of loads in flight) when
 * every pointer is 16-byte aligned (wide), then the tail. */
__device__ __forceinline__ void adamw1(float &p, float &m, float &v, float g, float lr, float b1, float b2, float eps,
                                       float wd, float bc1, float sbc2) {
    const float mi = b1 * m + (1.0f - b1) * g, vi = b2 * v + (1.0f - b2) * g * g;
    m = mi;
    v = vi;
    p -= lr * ((mi / bc1) / (sqrtf(vi) / sbc2 + eps) + wd * p);
}
__device__ __forceinline__ void adamw4(float4 &P, float4 &M, float4 &V, float4 G, float lr, float b1, float b2,
                                       float eps, float wd, float bc1, float sbc2) {
    adamw1(P.x, M.x, V.x, G.x, lr, b1, b2, eps, wd, bc1, sbc2);
    adamw1(P.y, M.y, V.y, G.y, lr, b1, b2, eps, wd, bc1, sbc2);
    adamw1(P.z, M.z, V.z, G.z, lr, b1, b2, eps, wd, bc1, sbc2);
    adamw1(P.w, M.w, V.w, G.w, lr, b1, b2, eps, wd, bc1, sbc2);
}
/* the gradient times the clipping coefficient, rounded as k_scale rounds (this file: no FMA contraction) */
__device__ __forceinline__ float4 gscaled(float4 G, float gs) { return make_float4(G.x * gs, G.y * gs, G.z * gs, G.w * gs); }
__global__ void k_adamw(float *p, float *m, float *v, const float *g, float gs, int64_t n, float lr, float b1,
                        float b2, float eps, float wd, float bc1, float sbc2, int wide) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = wide ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        float4 P = ((float4 *)p)[i], M = ((float4 *)m)[i], Vv = ((float4 *)v)[i], G = gscaled(((const float4 *)g)[i], gs);
        adamw4(P, M, Vv, G, lr, b1, b2, eps, wd, bc1, sbc2);
        ((float4 *)p)[i] = P;
        ((float4 *)m)[i] = M;
        ((float4 *)v)[i] = Vv;
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) adamw1(p[i], m[i], v[i], g[i] * gs, lr, b1, b2, eps, wd, bc1, sbc2);
}

static int al16x(const void *a, const void *b, const void *c3, const void *d, const void *e) {
    return ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c3 | (uintptr_t)d | (uintptr_t)e) % 16 == 0;
}
/* Values a thread (the element-wise kernels' vw): 8 when wide (the fp32
 * pointers 16-byte aligned) and the bf16 ones (NULL: none) 16-byte aligned
 * too, 4 when wide, else 1. */
static int vw_of(int wide, const void *b0, const void *b1, const void *b2, const void *b3, const void *b4) {
    return !wide ? 1 : al16x(b0, b1, b2, b3, b4) ? 8 : 4;
}

/* SwiGLU's pair (gate, up), or (dgate, dup), as the bookkeeping sees it:
 * one fused tensor [N, 2H] when up = gate + H and ld = 2H (t = 1: both
 * keyed by gate's whole rows, up at offset H), else two tensors of their
 * rows' span (t = 2). */
typedef struct { const float *p[2]; int64_t n[2], off[2]; int t; } pair_keys;
static pair_keys keys_of(const float *g, const float *u, int64_t N, int H, int64_t ld) {
    if (u == g + H && ld == 2 * (int64_t)H) return (pair_keys){{g, g}, {N * ld, N * ld}, {0, H}, 1};
    int64_t span = N > 0 ? (N - 1) * ld + H : 0;
    return (pair_keys){{g, u}, {span, span}, {0, 0}, 2};
}
/* exact copies of both members (the same offsets as the fp32 values), or
 * NULL, NULL */
static void pair_exact(smj_cuda *c, const pair_keys *k, int wide, const __nv_bfloat16 **g16,
                       const __nv_bfloat16 **u16) {
    const __nv_bfloat16 *e0 = exact_copy(c, k->p[0], k->n[0]), *e1 = k->t == 1 ? e0 : exact_copy(c, k->p[1], k->n[1]);
    *g16 = e0 && e1 ? e0 + k->off[0] : NULL;
    *u16 = e0 && e1 ? e1 + k->off[1] : NULL;
    if (*g16 && wide && ((uintptr_t)*g16 | (uintptr_t)*u16) % 8) *g16 = *u16 = NULL;
}
static void pair_fp32_in(smj_cuda *c, const pair_keys *k) {
    for (int i = 0; i < k->t; i++) fp32_in(c, k->p[i], k->n[i]);
}
/* the places bf16_home names for the pair (NULL, NULL: none) */
static void pair_home(smj_cuda *c, const pair_keys *k, __nv_bfloat16 **g16, __nv_bfloat16 **u16) {
    __nv_bfloat16 *h0 = home_of(c, k->p[0], k->n[0]), *h1 = k->t == 1 ? h0 : home_of(c, k->p[1], k->n[1]);
    *g16 = h0 ? h0 + k->off[0] : NULL;
    *u16 = h1 ? h1 + k->off[1] : NULL;
}
/* An output pair's copies (shadow_of) and where its fp32 values go
 * (fp32_out); after cast_written of both. */
static void pair_out(smj_cuda *c, const pair_keys *k, float **g, float **u, __nv_bfloat16 **g16,
                     __nv_bfloat16 **u16) {
    __nv_bfloat16 *s[2] = {NULL, NULL};
    float *f[2] = {NULL, NULL};
    for (int i = 0; i < k->t; i++) {
        s[i] = shadow_of(c, k->p[i], k->n[i]);
        f[i] = fp32_out(c, (float *)k->p[i], k->n[i], s[i]);
    }
    if (k->t == 1) { s[1] = s[0]; f[1] = f[0]; }
    *g16 = s[0] ? s[0] + k->off[0] : NULL;
    *u16 = s[1] ? s[1] + k->off[1] : NULL;
    *g = f[0] ? f[0] + k->off[0] : NULL;
    *u = f[1] ? f[1] + k->off[1] : NULL;
}
/* vw for rows of H values ld apart (row starts keep 16-byte alignment) */
static int vw_rows(int vw, int H, int64_t ld) {
    if (vw == 8 && (H % 8 || ld % 8)) vw = 4;
    if (vw == 4 && (H % 4 || ld % 4)) vw = 1;
    return vw;
}
/* k_swiglu_*<VW> for vw's values a thread over N rows of H (row_walk's
 * blocks of 256 threads, up to 32 an SM) */
#define SWIGLU_LAUNCH(K, vw, N, H, ...)                                                                 \
    do {                                                                                                \
        const int nv_ = (H) / (vw), rpb_ = nv_ >= 256 ? 1 : 256 / nv_;                                  \
        const unsigned nb_ = blocks_for((N), rpb_, (int64_t)c->n_sm * 32);                             \
        if ((vw) == 8) K<8, 2><<<nb_, 256, 0, c->stream>>>(__VA_ARGS__);                                \
        else if ((vw) == 4) K<4, 2><<<nb_, 256, 0, c->stream>>>(__VA_ARGS__);                           \
        else K<1, 4><<<nb_, 256, 0, c->stream>>>(__VA_ARGS__);                                          \
    } while (0)
void cu_swiglu_fwd(const smj_exec *ex, float *out, const float *gate, const float *up, int64_t N, int H, int64_t ld) {
    OP_BEGIN_L("swiglu_fwd");
    if (!ld) ld = H;
    int64_t n = N * H;
    cast_written(c, out, n);
    if (n > 0) {
        pair_keys k = keys_of(gate, up, N, H, ld);
        int wide = al16x(out, gate, up, out, out);
        const __nv_bfloat16 *ge, *ue;
        pair_exact(c, &k, wide, &ge, &ue);
        __nv_bfloat16 *o16 = shadow_of(c, out, n);
        float *o = fp32_out(c, out, n, o16);
        if (ge) { /* the inputs' exact copies (a product wrote them as bf16 alone): homes already hold them */
            int vw = vw_rows(vw_of(wide, o16, ge, ue, NULL, NULL), H, ld);
            SWIGLU_LAUNCH(k_swiglu_fwd, vw, N, H, o, o16, NULL, NULL, ge, ue, N, H, ld);
        } else {
            pair_fp32_in(c, &k);
            __nv_bfloat16 *g16, *u16;
            pair_home(c, &k, &g16, &u16);
            int vw = vw_rows(vw_of(wide, o16, g16, u16, NULL, NULL), H, ld);
            SWIGLU_LAUNCH(k_swiglu_fwd, vw, N, H, o, o16, g16, u16, gate, up, N, H, ld);
        }
        LAUNCHED(c);
    }
    op_end(c);
}
void cu_swiglu_bwd(const smj_exec *ex, float *dgate, float *dup, const float *dout, const float *gate,
                   const float *up, int64_t N, int H, int64_t ld) {
    OP_BEGIN_L("swiglu_bwd");
    if (!ld) ld = H;
    int64_t n = N * H;
    pair_keys ko = keys_of(dgate, dup, N, H, ld);
    for (int i = 0; i < ko.t; i++) cast_written(c, ko.p[i], ko.n[i]);
    if (n > 0) {
        pair_keys k = keys_of(gate, up, N, H, ld);
        int wide = al16x(dgate, dup, dout, gate, up);
        const __nv_bfloat16 *g16, *u16, *d16 = exact_copy(c, dout, n);
        pair_exact(c, &k, wide, &g16, &u16);
        if (d16 && wide && (uintptr_t)d16 % 8) d16 = NULL;
        if (!d16) fp32_in(c, dout, n);
        if (!g16) pair_fp32_in(c, &k);
        float *dg, *du;
        __nv_bfloat16 *dg16, *du16;
        pair_out(c, &ko, &dg, &du, &dg16, &du16);
        int vw = vw_rows(vw_of(wide, dg16, du16, d16, g16, u16), H, ld);
        if (d16 && g16) SWIGLU_LAUNCH(k_swiglu_bwd, vw, N, H, dg, du, dg16, du16, d16, g16, u16, N, H, ld);
        else if (d16) SWIGLU_LAUNCH(k_swiglu_bwd, vw, N, H, dg, du, dg16, du16, d16, gate, up, N, H, ld);
        else if (g16) SWIGLU_LAUNCH(k_swiglu_bwd, vw, N, H, dg, du, dg16, du16, dout, g16, u16, N, H, ld);
        else SWIGLU_LAUNCH(k_swiglu_bwd, vw, N, H, dg, du, dg16, du16, dout, gate, up, N, H, ld);
        LAUNCHED(c);
    }
    op_end(c);
}
void cu_add(const smj_exec *ex, float *out, const float *a, const float *b, int64_t n) {
    OP_BEGIN_L("add");
    fp32_in(c, a, n);
    fp32_in(c, b, n);
    cast_written(c, out, n);
    if (n > 0) {
        k_add<<<EW_GRID((n + 3) / 4)>>>(out, home_of(c, out, n), a, b, n, al16x(out, a, b, out, out));
        LAUNCHED(c);
    }
    op_end(c);
}
void cu_scale(const smj_exec *ex, float *x, float s, int64_t n) {
    OP_BEGIN("scale");
    if (n > 0) { k_scale<<<EW_GRID((n + 3) / 4)>>>(x, s, n, (uintptr_t)x % 16 == 0); LAUNCHED(c); }
    op_end(c);
}
void cu_adamw(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, int64_t n, float lr,
              float b1, float b2, float eps, float wd, int64_t t) {
    OP_BEGIN("adamw");
    float bc1 = (float)(1.0 - pow(b1, (double)t)), sbc2 = sqrtf((float)(1.0 - pow(b2, (double)t)));
    if (n > 0) {
        k_adamw<<<EW_GRID((n + 3) / 4)>>>(p, m, v, g, gs, n, lr, b1, b2, eps, wd, bc1, sbc2, al16x(p, m, v, g, p));
        LAUNCHED(c);
    }
    op_end(c);
}

/* adamw_runs: blocks of ADAM_TILE elements of one run each (the runs'
 * first blocks in tile0; a block finds its run by a search every thread of
 * it makes alike), the table passed by value (__grid_constant__: read in
 * place, not copied per thread). One launch for the whole update where
 * adamw per run makes ~4 a layer. pb (bf16 mode; NULL: none): the updated
 * range's bf16 copy from element pb0 on, written beside the update (wm_for),
 * which a step's products then read instead of casting every weight twice:
 * 168 casts, 0.91 ms a Llama 110M step at T = 1024 on an H200. */
#define ADAM_RUNS 512
#define ADAM_TILE 4096
typedef struct {
    int64_t off[ADAM_RUNS], len[ADAM_RUNS];
    float wd[ADAM_RUNS];
    int tile0[ADAM_RUNS], nr;
} adam_runs;
__global__ void __launch_bounds__(256) k_adamw_runs(float *p, float *m, float *v, const float *g, float gs,
                                                    const smj_step_ctl *ctl, const __grid_constant__ adam_runs R,
                                                    float lr, float b1, float b2, float eps, float bc1, float sbc2,
                                                    int wide, __nv_bfloat16 *pb, int64_t pb0) {
    int lo = 0, hi = R.nr - 1;
    while (lo < hi) { /* the last run whose first block is at or before this one */
        const int mid = (lo + hi + 1) >> 1;
        if (R.tile0[mid] <= (int)blockIdx.x) lo = mid;
        else hi = mid - 1;
    }
    const int64_t s = R.off[lo] + (int64_t)((int)blockIdx.x - R.tile0[lo]) * ADAM_TILE,
                  e = min(s + ADAM_TILE, R.off[lo] + R.len[lo]);
    const float wd = R.wd[lo];
    int64_t i = s + threadIdx.x;
    if (ctl) { /* the trainer's decision, made on the device (grad_ctl) */
        if (ctl->skip) { /* no update; the copy still made (the host counts it made) */
            for (; pb && i < e; i += 256) pb[i - pb0] = __float2bfloat16_rn(p[i]);
            return;
        }
        gs = ctl->gs, lr = ctl->lr, bc1 = ctl->bc1, sbc2 = ctl->sbc2;
    }
    if (wide && s % 4 == 0) {
        const int64_t e4 = s + (e - s) / 4 * 4;
#pragma unroll 4
        for (int64_t j = s / 4 + threadIdx.x; j < e4 / 4; j += 256) {
            float4 P = ((float4 *)p)[j], M = ((float4 *)m)[j], V = ((float4 *)v)[j], G = gscaled(((const float4 *)g)[j], gs);
            adamw4(P, M, V, G, lr, b1, b2, eps, wd, bc1, sbc2);
            ((float4 *)p)[j] = P;
            ((float4 *)m)[j] = M;
            ((float4 *)v)[j] = V;
            if (pb) { /* the parameters' bf16 copy, rounded as to_bf16 rounds */
                __nv_bfloat162 *o = (__nv_bfloat162 *)(pb + 4 * j - pb0);
                o[0] = __floats2bfloat162_rn(P.x, P.y);
                o[1] = __floats2bfloat162_rn(P.z, P.w);
            }
        }
        i = e4 + threadIdx.x;
    }
    for (; i < e; i += 256) {
        adamw1(p[i], m[i], v[i], g[i] * gs, lr, b1, b2, eps, wd, bc1, sbc2);
        if (pb) pb[i - pb0] = __float2bfloat16_rn(p[i]);
    }
}
int cu_adamw_runs(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, const smj_step_ctl *ctl,
                  const int64_t *off, const int64_t *len, const unsigned char *decay, int nr, float lr, float b1,
                  float b2, float eps, float wd, int64_t t) {
    if (nr > ADAM_RUNS) return 0;
    adam_runs R; /* (12 KB, copied into the launch) */
    int64_t tiles = 0, lo = INT64_MAX, hi = 0;
    R.nr = 0;
    for (int r = 0; r < nr; r++) {
        if (len[r] <= 0) continue;
        lo = off[r] < lo ? off[r] : lo;
        hi = off[r] + len[r] > hi ? off[r] + len[r] : hi;
        R.off[R.nr] = off[r], R.len[R.nr] = len[r], R.wd[R.nr] = decay[r] ? wd : 0.0f, R.tile0[R.nr] = (int)tiles;
        tiles += (len[r] + ADAM_TILE - 1) / ADAM_TILE;
        R.nr++;
        if (tiles > INT32_MAX / 2) return 0;
    }
    OP_BEGIN("adamw");
    float bc1 = (float)(1.0 - pow(b1, (double)t)), sbc2 = sqrtf((float)(1.0 - pow(b2, (double)t)));
    if (tiles > 0) {
        /* the updated range's bf16 copy (bf16 mode): the step's products read their weights there */
        const int wide = al16x(p, m, v, g, p);
        __nv_bfloat16 *pb = wide && lo % 4 == 0 ? wm_for(c, p + lo, hi - lo) : NULL;
        k_adamw_runs<<<(unsigned)tiles, 256, 0, c->stream>>>(p, m, v, g, gs, ctl, R, lr, b1, b2, eps, bc1, sbc2, wide, pb, lo);
        LAUNCHED(c);
        if (pb && c->err == SMJ_OK) wm_made(c, p + lo);
    }
    op_end(c);
    return 1;
}

/* ------------------------------------------------------------ gelu (GPT-2 family) */

/* out = gelu(x) (BWD: out = dout gelu'(x)), four values a thread with
 * 16-byte accesses where n and the pointers allow (V4); o16: out's bf16
 * copy (shadow_of: the products after read it) or NULL; out NULL: the copy
 * alone (an output bf16_only promised). x and dout: fp32 or their exact
 * bf16 copies (X, D). */
template <bool BWD, bool V4, typename X, typename D>
__global__ void k_gelu(float *out, __nv_bfloat16 *o16, const D *dout, const X *x, int64_t n) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = V4 ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        float4 v = ld4(x, i), o;
        if (BWD) {
            float4 g = ld4(dout, i);
            o = make_float4(g.x * gelu_d(v.x), g.y * gelu_d(v.y), g.z * gelu_d(v.z), g.w * gelu_d(v.w));
        } else {
            o = make_float4(gelu_f(v.x), gelu_f(v.y), gelu_f(v.z), gelu_f(v.w));
        }
        if (out) ((float4 *)out)[i] = o;
        if (o16) st_bf16x4(o16 + 4 * i, o);
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) {
        float o = BWD ? ld1(dout, i) * gelu_d(ld1(x, i)) : gelu_f(ld1(x, i));
        if (out) out[i] = o;
        if (o16) o16[i] = __float2bfloat16_rn(o);
    }
}
template <bool BWD, typename X, typename D>
static void gelu_go(smj_cuda *c, float *out, __nv_bfloat16 *o16, const D *dout, const X *x, int64_t n, bool v4) {
    if (v4) k_gelu<BWD, true><<<EW_GRID((n + 3) / 4)>>>(out, o16, dout, x, n);
    else k_gelu<BWD, false><<<EW_GRID(n)>>>(out, o16, dout, x, n);
}
/* x and dout read as their exact bf16 copies where there are (the
 * backward's pre-GELU product, bound under --fp16-activations, or written
 * as bf16 alone by its product; dout: a product's output bf16_only
 * promised), else in 32 bits (OP_BEGIN_L: other bound tensors stay
 * unwritten); out as bf16 alone where bf16_only promises it. */
template <bool BWD> static void gelu_launch(smj_cuda *c, float *out, const float *dout, const float *x, int64_t n) {
    const __nv_bfloat16 *x16 = exact_in(c, x, n), *d16 = dout ? exact_in(c, dout, n) : NULL;
    cast_written(c, out, n);
    if (n <= 0) return;
    __nv_bfloat16 *o16 = shadow_of(c, out, n);
    float *o = fp32_out(c, out, n, o16);
    bool v4 = (((uintptr_t)out | (uintptr_t)x | (uintptr_t)dout) % 16 == 0) && (uintptr_t)o16 % 8 == 0;
    if (x16 && d16) gelu_go<BWD>(c, o, o16, d16, x16, n, v4);
    else if (x16) gelu_go<BWD>(c, o, o16, dout, x16, n, v4);
    else if (d16) gelu_go<BWD>(c, o, o16, d16, x, n, v4);
    else gelu_go<BWD>(c, o, o16, dout, x, n, v4);
    LAUNCHED(c);
}
/* gelu_bwd_bias: block p takes rows [p R, (p+1) R) of H values, a thread
 * four columns at a time (16-byte rows: H % 4 == 0), each row's dx =
 * dout gelu'(x) stored (fp32 and/or the bf16 copy), the column sums of
 * its rows into part[p, :]; colsum_add then adds the blocks' rows in
 * order (no atomics: deterministic). x and dout: fp32 or exact copies. */
template <typename X, typename D>
__global__ void k_gelu_bwd_bias(float *dx, __nv_bfloat16 *d16, float *part, const D *dout, const X *x, int64_t N,
                                int H, int R) {
    const int H4 = H / 4;
    const int64_t r0 = (int64_t)blockIdx.x * R, r1 = r0 + R < N ? r0 + R : N;
    for (int cg = threadIdx.x; cg < H4; cg += blockDim.x) {
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
        for (int64_t r = r0; r < r1; r++) {
            const int64_t i = r * H4 + cg; /* in fours */
            float4 v = ld4(x, i), g = ld4(dout, i);
            float4 o = make_float4(g.x * gelu_d(v.x), g.y * gelu_d(v.y), g.z * gelu_d(v.z), g.w * gelu_d(v.w));
            if (dx) ((float4 *)dx)[i] = o;
            if (d16) st_bf16x4(d16 + 4 * i, o);
            s = make_float4(s.x + o.x, s.y + o.y, s.z + o.z, s.w + o.w);
        }
        ((float4 *)(part + (int64_t)blockIdx.x * H))[cg] = s;
    }
}
template <typename X, typename D>
static void gelu_bias_go(smj_cuda *c, int P, float *dx, __nv_bfloat16 *d16, float *part, const D *dout, const X *x,
                         int64_t N, int H, int R) {
    k_gelu_bwd_bias<<<(unsigned)P, 256, 0, c->stream>>>(dx, d16, part, dout, x, N, H, R);
}
/* The column sums' row blocks: R rows each (about four blocks an SM); returns their count. */
static int row_blocks(const smj_cuda *c, int64_t N, int64_t *R) {
    int64_t r = (N + (int64_t)c->n_sm * 4 - 1) / ((int64_t)c->n_sm * 4);
    *R = r < 1 ? 1 : r;
    return (int)((N + *R - 1) / *R);
}
/* Declines (0, nothing written) rows not in fours or not 16-byte aligned. */
int cu_gelu_bwd_bias(const smj_exec *ex, float *dx, float *db, const float *dout, const float *x, int64_t N, int H) {
    if (N <= 0 || H <= 0 || H % 4 || ((uintptr_t)dx | (uintptr_t)dout | (uintptr_t)x) % 16) return 0;
    OP_BEGIN_L("gelu_bwd_bias");
    const int64_t n = N * H;
    cast_written(c, db, H); /* (read too) */
    const __nv_bfloat16 *x16 = exact_in(c, x, n), *g16 = exact_in(c, dout, n);
    cast_written(c, dx, n);
    int64_t R;
    int P = row_blocks(c, N, &R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * H);
    if (!part) return 1;
    cast_written(c, part, (int64_t)P * H);
    /* the products after read dx: its bf16 copy beside it, or alone where
     * bf16_only promises it */
    __nv_bfloat16 *o16 = shadow_of(c, dx, n);
    float *o = fp32_out(c, dx, n, o16);
    if (x16 && g16) gelu_bias_go(c, P, o, o16, part, g16, x16, N, H, (int)R);
    else if (x16) gelu_bias_go(c, P, o, o16, part, dout, x16, N, H, (int)R);
    else if (g16) gelu_bias_go(c, P, o, o16, part, g16, x, N, H, (int)R);
    else gelu_bias_go(c, P, o, o16, part, dout, x, N, H, (int)R);
    LAUNCHED(c);
    colsum_add(c, db, part, P, H);
    op_end(c);
    return 1;
}
/* part[p, :] = the column sums of rows [p R, (p+1) R) of x [N, H], a
 * thread four columns at a time */
template <typename X>
__global__ void k_colsum_rows(float *part, const X *x, int64_t N, int H, int R) {
    const int H4 = H / 4;
    const int64_t r0 = (int64_t)blockIdx.x * R, r1 = r0 + R < N ? r0 + R : N;
    for (int cg = threadIdx.x; cg < H4; cg += blockDim.x) {
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
        for (int64_t r = r0; r < r1; r++) {
            float4 v = ld4(x, r * H4 + cg);
            s = make_float4(s.x + v.x, s.y + v.y, s.z + v.z, s.w + v.w);
        }
        ((float4 *)(part + (int64_t)blockIdx.x * H))[cg] = s;
    }
}
void colsum_rows_add(smj_cuda *c, float *db, const void *x, int b16, int64_t N, int H) {
    int64_t R;
    int P = row_blocks(c, N, &R);
    float *part = (float *)scratch(c, sizeof(float) * (size_t)P * H);
    if (!part) return;
    cast_written(c, part, (int64_t)P * H);
    if (b16) k_colsum_rows<<<(unsigned)P, 256, 0, c->stream>>>(part, (const __nv_bfloat16 *)x, N, H, (int)R);
    else k_colsum_rows<<<(unsigned)P, 256, 0, c->stream>>>(part, (const float *)x, N, H, (int)R);
    LAUNCHED(c);
    colsum_add(c, db, part, P, H);
}
void cu_gelu_fwd(const smj_exec *ex, float *out, const float *x, int64_t n) {
    OP_BEGIN_L("gelu_fwd");
    gelu_launch<false>(c, out, NULL, x, n);
    op_end(c);
}
void cu_gelu_bwd(const smj_exec *ex, float *dx, const float *dout, const float *x, int64_t n) {
    OP_BEGIN_L("gelu_bwd");
    gelu_launch<true>(c, dx, dout, x, n);
    op_end(c);
}
