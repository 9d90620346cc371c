/* xent.cu — cross-entropy: xent_fwd (the loss and lse of each row),
 * xent_bwd (dlogits from them) and the optional xent_fwd_bwd (both in one
 * kernel, for a train step, whose dloss is known in the forward).
 *
 * Rows of logits [N, ld] (V <= ld values each; the LM head's rows are
 * padded, the padding's dlogits written 0), fp32 or read through their
 * exact bf16 copy (the 16-bit logits of --fp16-activations). A block per row
 * in the forward: each thread keeps the max of its values and the sum of
 * exp(x - max) (online), the partials combined in a fixed order.
 * xent_fwd_bwd runs the forward's pass, then the backward's values from a
 * second read of the row while it is still in L2 (the same threads in the
 * same order: its loss, lse and dlogits are bit for bit those of xent_fwd
 * then xent_bwd).
 */
#include "cuda_common.cuh"

/* (m, s) += (m2, s2): two partial log-sum-exps, each the sum s of exp(x - m)
 * over its values with m their max (-inf, 0: none yet). */
static __device__ __forceinline__ void lse_add(float &m, float &s, float m2, float s2) {
    float M = fmaxf(m, m2);
    if (M == -INFINITY) return;
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

/* e^x as __expf computes it (x times log2 e, rounded, then the hardware's
 * 2^t), with results below 2^-126 flushed to zero: the same bits except
 * where __expf would give a subnormal (which a sum of at least 1 does not
 * feel). __expf's subnormal results cost three instructions more an
 * exponential (a compare, and a scaling before and after), and this
 * kernel's time is in its instructions (Nsight Compute on an H200:
 * k_xent_fb issue-bound, 83% of cycles issuing, DRAM 53%). */
static __device__ __forceinline__ float xexp(float x) { return ex2_sfu(x * 1.44269504f); }

/* One block per row, one pass over it (online: each thread keeps the max
 * of its values and the sum of exp(x - max), rescaled when the max grows),
 * in groups of eight values (V4 rows: 16-byte loads, or two 8-byte ones
 * where a bf16 copy's rows are not 16-byte aligned: the same values in the
 * same order), UG groups' loads issued before their values are used
 * (bytes in flight: one load at a time kept the kernel at half the
 * bandwidth); the partials are combined in a fixed order. exp is the
 * hardware's (xexp: ~2 ulp near the max, whose terms make the sum). The
 * logits are L: fp32, or their exact bf16 copy (the same values). */
template <bool A16, typename L> static __device__ __forceinline__ void ld8x(const L *l, int64_t i, float4 &a, float4 &b) {
    if (sizeof(L) == 4 || A16) {
        ld8(l, i, a, b);
    } else {
        a = ld4(l, 2 * i);
        b = ld4(l, 2 * i + 1);
    }
}
static __device__ __forceinline__ void lse_acc8(float &m, float &s, float4 a, float4 b) {
    float mx = fmaxf(fmaxf(fmaxf(a.x, a.y), fmaxf(a.z, a.w)), fmaxf(fmaxf(b.x, b.y), fmaxf(b.z, b.w)));
    if (mx > m) { s *= xexp(m - mx); m = mx; }
    if (m != -INFINITY)
        s += ((xexp(a.x - m) + xexp(a.y - m)) + (xexp(a.z - m) + xexp(a.w - m))) +
             ((xexp(b.x - m) + xexp(b.y - m)) + (xexp(b.z - m) + xexp(b.w - m)));
}
/* A thread's values 8i..8i+7 for i = threadIdx.x + k blockDim.x < n8, k =
 * 0, 1, ..., UG groups' loads issued before their values are used (the
 * order of the sums does not depend on UG). */
constexpr int UG = 2;
/* k_xent_fb stages a bf16 row of up to this many bytes in shared memory
 * (two blocks an SM at most: GPT-2's 50,304-value rows take 100,608) */
constexpr size_t XENT_SM = 112 * 1024;
template <bool A16, typename L> static __device__ __forceinline__ void lse_run8(float &m, float &s, const L *l, int n8) {
    const int bd = blockDim.x;
    int j = threadIdx.x;
    for (; j + (UG - 1) * bd < n8; j += UG * bd) {
        float4 a[UG], b[UG];
#pragma unroll
        for (int u = 0; u < UG; u++) ld8x<A16>(l, j + u * bd, a[u], b[u]);
#pragma unroll
        for (int u = 0; u < UG; u++) lse_acc8(m, s, a[u], b[u]);
    }
    for (; j < n8; j += bd) {
        float4 a, b;
        ld8x<A16>(l, j, a, b);
        lse_acc8(m, s, a, b);
    }
}
/* A thread's values j0 + threadIdx.x + k blockDim.x < V one at a time. */
template <typename L> static __device__ __forceinline__ void lse_run1(float &m, float &s, const L *l, int j0, int V) {
    for (int j = j0 + threadIdx.x; j < V; j += blockDim.x) {
        float x = ld1(l, j);
        if (x > m) { s *= xexp(m - x); m = x; }
        if (m != -INFINITY) s += xexp(x - m); /* (all -inf so far: nothing to add) */
    }
}
/* The threads' partials combined in a fixed order (lanes by shuffles, then
 * the warps in order); thread 0 writes row n's lse and loss and returns
 * lse as a float (other threads: 0). */
template <typename L>
static __device__ __forceinline__ float lse_row(float m, float s, float *losses, float *lse, const L *l, int32_t t,
                                                int64_t n) {
    __shared__ float shm[32], shs[32];
    for (int o = 16; o > 0; o >>= 1) lse_add(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    if ((threadIdx.x & 31) == 0) { shm[threadIdx.x >> 5] = m; shs[threadIdx.x >> 5] = s; }
    __syncthreads();
    if (threadIdx.x != 0) return 0.0f;
    for (int w = 1; w < (int)(blockDim.x >> 5); w++) lse_add(m, s, shm[w], shs[w]);
    double z = (double)m + log((double)s);
    lse[n] = (float)z;
    losses[n] = t < 0 ? 0.0f : (float)(z - ld1(l, t));
    return (float)z;
}
template <bool V4, bool A16, typename L>
__global__ void k_xent_fwd(float *losses, float *lse, const L *logits, const int32_t *targets, int V, int ld) {
    int64_t n = blockIdx.x;
    const L *l = logits + n * ld;
    float m = -INFINITY, s = 0;
    if (V4) lse_run8<A16>(m, s, l, V / 8);
    lse_run1(m, s, l, V4 ? V / 8 * 8 : 0, V);
    lse_row(m, s, losses, lse, l, targets[n], n);
}

/* dl = dloss (softmax - onehot) over columns < V, 0 over V..ld (a padded
 * head), eight values per thread (V4: ld % 4 == 0 and 16-byte aligned: two
 * 16-byte loads issued together); l - lse in float is the rounded exact
 * difference, as in double; exp as the forward's. dl NULL: not written
 * (fp32_out); d16 (or NULL): dl's bf16 copy; logits as L (fp32 or their
 * exact bf16 copy; may be d16 itself: dlogits over the copy, in place). */
static __device__ __forceinline__ float xent_d1(float x, float z, int32_t t, int j, int V, float dloss) {
    return t < 0 || j >= V ? 0.0f : dloss * (xexp(x - z) - (j == t ? 1.0f : 0.0f));
}
static __device__ __forceinline__ float4 xent_d4(float4 x, float z, int32_t t, int j, int V, float dloss) {
    return make_float4(xent_d1(x.x, z, t, j, V, dloss), xent_d1(x.y, z, t, j + 1, V, dloss),
                       xent_d1(x.z, z, t, j + 2, V, dloss), xent_d1(x.w, z, t, j + 3, V, dloss));
}
template <bool V4, typename L>
__global__ void k_xent_bwd(float *dl, __nv_bfloat16 *d16, const L *logits, const float *lse,
                           const int32_t *targets, float dloss, int V, int ld, int w16) {
    int64_t n = blockIdx.y;
    int j = 8 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (j >= ld) return;
    int32_t t = targets[n];
    float z = lse[n];
    int64_t i = n * ld + j;
    if (V4) {
        bool two = j + 4 < ld;
        float4 x0, x1;
        if (sizeof(L) == 2 && w16) /* 16-byte bf16 rows (ld % 8 == 0): one load, one store of eight */
            ld8(logits, i / 8, x0, x1);
        else
            x0 = ld4(logits + i, 0), x1 = two ? ld4(logits + i + 4, 0) : x0;
        float4 o0 = xent_d4(x0, z, t, j, V, dloss), o1 = xent_d4(x1, z, t, j + 4, V, dloss);
        if (dl) *(float4 *)(dl + i) = o0;
        if (two && dl) *(float4 *)(dl + i + 4) = o1;
        if (d16 && w16) {
            st_bf16x8(d16 + i, o0, o1);
        } else if (d16) {
            st_bf16x4(d16 + i, o0);
            if (two) st_bf16x4(d16 + i + 4, o1);
        }
    } else {
        for (int e = 0; e < 8 && j + e < ld; e++) {
            float o = xent_d1(ld1(logits, i + e), z, t, j + e, V, dloss);
            if (dl) dl[i + e] = o;
            if (d16) d16[i + e] = __float2bfloat16_rn(o);
        }
    }
}

void cu_xent_fwd(const smj_exec *ex, float *losses, float *lse, const float *logits, const int32_t *targets,
                        int64_t N, int V, int ld) {
    /* OP_BEGIN_L: the chunked LM head (--fused-ce) alternates matmul and
     * cross-entropy, and the head's bf16 weight copy stays valid across it */
    OP_BEGIN_L("xent_fwd");
    const __nv_bfloat16 *le = exact_in(c, logits, N * ld);
    cast_written(c, losses, N);
    cast_written(c, lse, N);
    for (int64_t n0 = 0; n0 < N; n0 += INT32_MAX) {
        int64_t nn = N - n0 < INT32_MAX ? N - n0 : INT32_MAX;
        unsigned th = V >= 16384 ? 512 : 256;
        bool v4 = ld % 4 == 0 && (uintptr_t)logits % 16 == 0;
        const float *lf = logits + n0 * ld;
        const __nv_bfloat16 *lb = le ? le + n0 * ld : NULL;
        /* (a bf16 copy's rows 16-byte aligned: one load a group of eight) */
        bool a16 = lb && ld % 8 == 0 && (uintptr_t)lb % 16 == 0;
        float *lo = losses + n0, *zo = lse + n0;
        const int32_t *to = targets + n0;
        if (lb && a16 && v4) k_xent_fwd<true, true><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, lb, to, V, ld);
        else if (lb && v4) k_xent_fwd<true, false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, lb, to, V, ld);
        else if (lb) k_xent_fwd<false, false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, lb, to, V, ld);
        else if (v4) k_xent_fwd<true, false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, lf, to, V, ld);
        else k_xent_fwd<false, false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, lf, to, V, ld);
        LAUNCHED(c);
    }
    op_end(c);
}

void cu_xent_bwd(const smj_exec *ex, float *dlogits, const float *logits, const float *lse,
                        const int32_t *targets, float dloss, int64_t N, int V, int ld) {
    OP_BEGIN_L("xent_bwd"); /* see cu_xent_fwd */
    fp32_in(c, lse, N);
    const __nv_bfloat16 *le = exact_in(c, logits, N * ld);
    /* in place over logits read through their copy: the fp32 values are
     * not wanted (a lazy tensor there goes unwritten) */
    if (le && dlogits == logits) cast_overwritten(c, dlogits, N * ld);
    else cast_written(c, dlogits, N * ld);
    /* the LM head's products read dlogits: its bf16 copy is written beside
     * it (when it is small enough to keep: the model's blocks of rows) */
    __nv_bfloat16 *d16 = N > 0 && ld > 0 ? shadow_of(c, dlogits, N * ld) : NULL;
    float *dl = fp32_out(c, dlogits, N * ld, d16); /* NULL: only the copy is written (bf16_only) */
    for (int64_t n0 = 0; n0 < N; n0 += 65535) {
        int64_t nn = N - n0 < 65535 ? N - n0 : 65535;
        dim3 grid((unsigned)((ld + 2047) / 2048), (unsigned)nn);
        __nv_bfloat16 *b = d16 ? d16 + n0 * ld : NULL;
        float *o = dl ? dl + n0 * ld : NULL;
        bool v4 = ld % 4 == 0 && (uintptr_t)dlogits % 16 == 0 && (uintptr_t)logits % 16 == 0;
        const float *lf = logits + n0 * ld;
        const __nv_bfloat16 *lb = le ? le + n0 * ld : NULL;
        /* the bf16 rows (read, written) 16-byte aligned: eight values an access */
        int w16 = v4 && ld % 8 == 0 && (!lb || (uintptr_t)lb % 16 == 0) && (!b || (uintptr_t)b % 16 == 0);
        if (lb && v4) k_xent_bwd<true><<<grid, 256, 0, c->stream>>>(o, b, lb, lse + n0, targets + n0, dloss, V, ld, w16);
        else if (lb) k_xent_bwd<false><<<grid, 256, 0, c->stream>>>(o, b, lb, lse + n0, targets + n0, dloss, V, ld, w16);
        else if (v4) k_xent_bwd<true><<<grid, 256, 0, c->stream>>>(o, b, lf, lse + n0, targets + n0, dloss, V, ld, w16);
        else k_xent_bwd<false><<<grid, 256, 0, c->stream>>>(o, b, lf, lse + n0, targets + n0, dloss, V, ld, w16);
        LAUNCHED(c);
    }
    op_end(c);
}


/* ------------------------------------------------------------ xent_fwd_bwd */

/* k_xent_fwd's pass over row n (V4 rows: the same threads in the same
 * order, so the same lse bit for bit), then k_xent_bwd's values from a
 * second read of the row. SM (bf16 rows read 16 bytes at a time, up to
 * XENT_SM bytes of them): the row's first 8 n8 values are copied into
 * shared memory first (cp.async, every thread its own groups) and both
 * passes read them there, so the row comes from memory once; otherwise the
 * second read is mostly from L2 (the block has just read it): each thread
 * re-reads its own values, last read first (the lines most recently
 * brought in). In place (dl or d16 over the logits) is safe: a thread
 * writes only values it has read, and thread 0 reads the target's logit
 * before the barrier after which the writes start. (Keeping the values in
 * registers between the passes measured slower: one or two blocks an SM,
 * their loads and exps no longer overlapped.) */
template <bool A16, typename L, bool SM = false>
__global__ void k_xent_fb(float *losses, float *lse, float *dl, __nv_bfloat16 *d16, const L *logits,
                          const int32_t *targets, float dloss, int V, int ld) {
    __shared__ float zs;
    extern __shared__ uint4 srow[];
    int64_t n = blockIdx.x, row = n * ld;
    const L *l = logits + row;
    const int n8 = V / 8, bd = blockDim.x, tid = threadIdx.x;
    if (SM) {
        for (int i = tid; i < n8; i += bd) cp16(srow + i, (const uint4 *)l + i, 16);
        cp_commit();
        cp_wait<0>();
        __syncthreads();
    }
    const L *r = SM ? (const L *)srow : l; /* the first 8 n8 values, read by both passes */
    float m = -INFINITY, s = 0;
    lse_run8<A16>(m, s, r, n8);
    lse_run1(m, s, l, 8 * n8, V);
    int32_t t = targets[n];
    float z = lse_row(m, s, losses, lse, l, t, n);
    if (tid == 0) zs = z;
    __syncthreads();
    z = zs;
    if (dl) dl += row;
    if (d16) d16 += row;
    for (int j = 8 * n8 + tid; j < ld; j += bd) { /* the last V % 8 values, then the padding (0) */
        float o = xent_d1(j < V ? ld1(l, j) : 0.0f, z, t, j, V, dloss);
        if (dl) dl[j] = o;
        if (d16) d16[j] = __float2bfloat16_rn(o);
    }
    /* values 0 .. 8 n8 - 1 (all below V): dloss e^(x - z), the target's
     * then rewritten by its thread as dloss (e^(x - z) - 1) (xent_d1's
     * values, without its checks on every value); its logit is read first,
     * as the row may be written in place */
    const bool own = t >= 0 && t < 8 * n8 && (t >> 3) % bd == tid;
    const float xt = own ? ld1(l, t) : 0.0f;
    for (int i = tid < n8 ? tid + (n8 - 1 - tid) / bd * bd : -1; i >= 0; i -= bd) {
        float4 a, b;
        ld8x<A16>(r, i, a, b);
        if (t < 0) {
            a = b = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        } else {
            a = make_float4(dloss * xexp(a.x - z), dloss * xexp(a.y - z), dloss * xexp(a.z - z), dloss * xexp(a.w - z));
            b = make_float4(dloss * xexp(b.x - z), dloss * xexp(b.y - z), dloss * xexp(b.z - z), dloss * xexp(b.w - z));
        }
        if (dl) {
            *(float4 *)(dl + 8 * i) = a;
            *(float4 *)(dl + 8 * i + 4) = b;
        }
        if (d16 && A16) {
            st_bf16x8(d16 + 8 * i, a, b);
        } else if (d16) {
            st_bf16x4(d16 + 8 * i, a);
            st_bf16x4(d16 + 8 * i + 4, b);
        }
    }
    if (own) {
        const float o = xent_d1(xt, z, t, t, V, dloss);
        if (dl) dl[t] = o;
        if (d16) d16[t] = __float2bfloat16_rn(o);
    }
}

/* Rows that take four values at a time (ld % 4 == 0, 16-byte aligned:
 * k_xent_fwd's V4 rows, in its order) in one kernel; other rows, and every row with
 * SMJ_CUDA_XENT_FUSED=0, decline. */
int cu_xent_fwd_bwd(const smj_exec *ex, float *losses, float *lse, float *dlogits, const float *logits,
                    const int32_t *targets, float dloss, int64_t N, int V, int ld) {
    const smj_cuda *c0 = S(ex);
    if (!c0->xent_fused || N < 1 || ld % 4 != 0 || (uintptr_t)logits % 16 || (uintptr_t)dlogits % 16) return 0;
    OP_BEGIN_L("xent_fwd_bwd"); /* see cu_xent_fwd */
    const __nv_bfloat16 *le = exact_in(c, logits, N * ld);
    cast_written(c, losses, N);
    cast_written(c, lse, N);
    if (le && dlogits == logits) cast_overwritten(c, dlogits, N * ld); /* as cu_xent_bwd */
    else cast_written(c, dlogits, N * ld);
    __nv_bfloat16 *d16 = shadow_of(c, dlogits, N * ld);
    float *dl = fp32_out(c, dlogits, N * ld, d16);
    unsigned th = V >= 16384 ? 512 : 256; /* cu_xent_fwd's */
    /* a bf16 row staged in shared memory (k_xent_fb's SM): up to two an SM */
    const size_t srow = (size_t)(V / 8) * 16;
    const bool sm = srow <= XENT_SM && srow <= c->smem_optin;
    for (int64_t n0 = 0; n0 < N; n0 += INT32_MAX) {
        int64_t nn = N - n0 < INT32_MAX ? N - n0 : INT32_MAX;
        float *o = dl ? dl + n0 * ld : NULL;
        __nv_bfloat16 *b = d16 ? d16 + n0 * ld : NULL;
        /* the bf16 rows read and written 16-byte aligned: eight values an access */
        const __nv_bfloat16 *lb = le ? le + n0 * ld : NULL;
        const bool a16 = ld % 8 == 0 && (uintptr_t)lb % 16 == 0 && (uintptr_t)b % 16 == 0;
        float *lo = losses + n0, *zo = lse + n0;
        const int32_t *to = targets + n0;
        if (lb && a16 && sm && smem_ok(c, (const void *)k_xent_fb<true, __nv_bfloat16, true>, srow))
            k_xent_fb<true, __nv_bfloat16, true><<<(unsigned)nn, th, srow, c->stream>>>(lo, zo, o, b, lb, to, dloss, V, ld);
        else if (lb && a16) k_xent_fb<true><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, o, b, lb, to, dloss, V, ld);
        else if (lb) k_xent_fb<false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, o, b, lb, to, dloss, V, ld);
        else if (a16) k_xent_fb<true><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, o, b, logits + n0 * ld, to, dloss, V, ld);
        else k_xent_fb<false><<<(unsigned)nn, th, 0, c->stream>>>(lo, zo, o, b, logits + n0 * ld, to, dloss, V, ld);
        LAUNCHED(c);
    }
    op_end(c);
    return 1;
}
