/* decode.cu — one token at a time (batch-1 decoding): decode_block, all
 * blocks of a model in one launch (Llama's, with or without attention
 * biases, and the GPT-2 family's), decode_linear, the final norm + LM head,
 * and decode_argmax, a greedy step's choice and bookkeeping on the device.
 *
 * Why: a decoding step of a 110M model streams ~440 MB of f32 weights
 * (220 MB as bf16), ~0.1 ms on an H200, but as ~15 kernels per block each
 * one is too small to fill the GPU and the step was launch- and
 * latency-bound (0.78 ms). Here one persistent kernel (a block of 512
 * threads per SM) runs every block of the model, five phases a block,
 * separated by grid-wide barriers:
 *
 *   A  n1 = norm(x) (every block, into shared memory: RMSNorm, or LayerNorm
 *      where the norm has a bias); rows of Wq, Wk, Wv (+ their biases), a
 *      warp per row (a warp per rotation pair (i, i + HS/2) of q and k,
 *      rotated at once); k, v go straight to cache row p, q to scratch.
 *   B  attention: a block per (head, 1/ns of the keys 0..p); its warps take
 *      keys in turn (k and v rows loaded together), their (max, sum,
 *      unnormalized output) are merged in shared memory and written out;
 *      the block that finishes a head last (a per-head counter) merges the
 *      head's ns results into att [NH*HS].
 *   C  r = x + Wo att (+ bo), a warp per row.
 *   D  n2 = norm(r) (every block); h = silu(Wgate n2) * (Wup n2), a warp
 *      per row pair, or gelu(Wup n2 + bup), a warp per row.
 *   E  y = r + Wdown h (+ bdown), a warp per row (then the next block's A).
 *
 * Each weight phase's rows are split evenly over the grid's blocks (units:
 * unit0). At each block's start the grid asks L2 for that block's weights,
 * and for the next block's cache rows. A warp's product streams its weight
 * row with 16-byte loads (4 f32 or 8 bf16 values), several issued before any
 * is used; the vector it multiplies sits in shared memory. Data made inside
 * the launch (q, the new cache row, the head results, att, r, h, the blocks'
 * outputs) is read through L2 (ld.global.cg): L1 is not coherent across
 * SMs. Values a phase needs besides its product (rope tables, biases, the residual)
 * are loaded before the product, so their latency hides behind it. The
 * barrier is one 64-bit arrival count (red.release + ld.acquire polled by
 * one thread a block) in memory the backend keeps for its lifetime
 * (smj_cuda.dec_sync, with the per-head counters, which the merging block
 * resets); the kernel is launched cooperatively (all blocks resident), also
 * inside a recorded graph. Summation orders differ from the ops one by one,
 * so results agree with them to rounding (tests/cuda/test_cuda_decode.c
 * checks both weight types, one block and several, against the reference's
 * definition).
 *
 * Measured (H200, bench/RESULTS.md round 12): ~26 us a block, almost all of
 * it dependent L2 round trips (~0.5 us each: the barrier's two, each
 * phase's vector read, attention's merge); staging the weights in shared
 * memory ahead of their phase (cp.async) took phase A from 4.8 to 3.3 us
 * but attention from 3.8 to 4.9 and E from 2.3 to 3.7, and was not kept. */
#include "cuda_common.cuh"

#define DB_THREADS 512
#define DB_WARPS (DB_THREADS / 32)
#define DB_U 8 /* 16-byte loads in flight per lane and row */
#define DB_MAXSPLIT 128 /* blocks a head's keys are split over, at most */


/* ------------------------------------------------------------ pieces */

static __device__ __forceinline__ float bf_lo(unsigned u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float bf_hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }

/* a[0..P) · the P weights in the 16-byte piece w (P = 4 f32 or 8 bf16) */
static __device__ __forceinline__ float piece_dot(const float *a, uint4 w, float) {
    float4 x = *(const float4 *)a;
    return x.x * __uint_as_float(w.x) + x.y * __uint_as_float(w.y) + x.z * __uint_as_float(w.z) +
           x.w * __uint_as_float(w.w);
}
static __device__ __forceinline__ float piece_dot(const float *a, uint4 w, __nv_bfloat16) {
    float4 x0 = *(const float4 *)a, x1 = *(const float4 *)(a + 4);
    return x0.x * bf_lo(w.x) + x0.y * bf_hi(w.x) + x0.z * bf_lo(w.y) + x0.w * bf_hi(w.y) + x1.x * bf_lo(w.z) +
           x1.y * bf_hi(w.z) + x1.z * bf_lo(w.w) + x1.w * bf_hi(w.w);
}
static __device__ __forceinline__ float wval(const float *w, int64_t k) { return __ldg(w + k); }
static __device__ __forceinline__ float wval(const __nv_bfloat16 *w, int64_t k) {
    return __bfloat162float(w[k]);
}

/* s[i] = a[0..K) · row w[i] (R = 1 or 2 rows), by one warp; every lane gets
 * the sums. a in shared memory (16-byte aligned); vec: rows 16-byte aligned
 * and K a multiple of the piece, else one value at a time. */
template <typename WT, int R>
static __device__ __forceinline__ void warp_dot(const float *a, const WT *w0, const WT *w1, int K, int vec,
                                                float *s) {
    constexpr int P = 16 / sizeof(WT), U = DB_U / R;
    int lane = threadIdx.x & 31;
    float acc[R];
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0;
    if (vec) {
        int np = K / P;
        const uint4 *p0 = (const uint4 *)w0, *p1 = (const uint4 *)w1;
        for (int i0 = lane; i0 < np; i0 += 32 * U) {
            uint4 b[R][U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < np) {
                    b[0][u] = __ldg(p0 + i);
                    if (R == 2) b[R - 1][u] = __ldg(p1 + i);
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < np) {
                    acc[0] += piece_dot(a + i * P, b[0][u], WT());
                    if (R == 2) acc[R - 1] += piece_dot(a + i * P, b[R - 1][u], WT());
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            acc[0] += a[k] * wval(w0, k);
            if (R == 2) acc[R - 1] += a[k] * wval(w1, k);
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++) s[i] = warp_sum(acc[i]);
}

/* Block-wide sum (every thread gets it; red [warps], free on entry). */
static __device__ __forceinline__ float block_sum(float v, float *red) {
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += red[i];
    return t;
}

/* Every block: s[0..C) = the norm of x with weight w, as rmsnorm_fwd (b
 * NULL) or layernorm_fwd (bias b) computes it, x read through L2 (it may
 * have been written in this launch). NW > 0: a thread's first NW entries of
 * w (and b) are loaded with x's, not after the reduction: one round trip to
 * L2 instead of two (the model's norm weights do not stay in L1: the
 * weights streamed through it in a step evict them). Taken with bf16
 * weights (NW 4: +3.3% tokens/s, Llama 110M on an H200); with fp32 weights
 * the kernels' 128 registers are already short (they spill) and it was 1.3%
 * slower (bench/RESULTS.md round 35), so NW 0 there: the same code as before. */
template <int NW>
static __device__ void norm_rows(float *s, const float *x, const float *w, const float *b, int C, float eps,
                                 float *red) {
    float ss = 0, mean = 0, wr[NW > 0 ? NW : 1], br[NW > 0 ? NW : 1];
#pragma unroll
    for (int j = 0; j < NW; j++) {
        int i = threadIdx.x + j * blockDim.x;
        wr[j] = i < C ? __ldg(w + i) : 0.0f;
        br[j] = b && i < C ? __ldg(b + i) : 0.0f;
    }
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = __ldcg(x + i);
        s[i] = v;
        ss += b ? v : v * v;
    }
    ss = block_sum(ss, red);
    if (b) { /* the mean, then the variance about it (each thread its own values) */
        mean = ss / (float)C;
        ss = 0;
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += (s[i] - mean) * (s[i] - mean);
        __syncthreads(); /* every thread has read red */
        ss = block_sum(ss, red);
    }
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
#pragma unroll
    for (int j = 0; j < NW; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < C) s[i] = b ? (s[i] - mean) * rs * wr[j] + br[j] : (s[i] * rs) * wr[j];
    }
    for (int i = threadIdx.x + NW * blockDim.x; i < C; i += blockDim.x)
        s[i] = b ? (s[i] - mean) * rs * __ldg(w + i) + __ldg(b + i) : (s[i] * rs) * __ldg(w + i);
    __syncthreads();
}
/* the weights loaded with x for bf16 weights only (above) */
template <typename WT> struct norm_pre { static constexpr int NW = sizeof(WT) == 2 ? 4 : 0; };

/* Every block: s[0..n) = v[0..n) (made in this launch: read through L2). */
static __device__ void load_vec(float *s, const float *v, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = __ldcg(v + i);
    __syncthreads();
}

/* Merges n (<= DB_MAXSPLIT) partial softmax results in[i] = (max, sum,
 * unnormalized out [HS]) (stride HS + 2, shared memory) by the block: warp
 * 0 finds the max, the weights exp(max_i - max) (into wsm [n + 2]) and the
 * sum, then the threads over dims. fin = 0 writes the merged (max, sum,
 * out) to dst [HS + 2]; fin = 1 the normalized output to dst [HS]. */
static __device__ void merge_parts(float *dst, const float *in, int n, int HS, int fin, float *wsm) {
    if (threadIdx.x < 32) {
        int lane = threadIdx.x;
        float M = -INFINITY, L = 0;
        for (int i = lane; i < n; i += 32) M = fmaxf(M, in[i * (HS + 2)]);
        M = warp_max(M);
        for (int i = lane; i < n; i += 32) {
            float w = M == -INFINITY ? 0.0f : expf(in[i * (HS + 2)] - M);
            wsm[i] = w;
            L += in[i * (HS + 2) + 1] * w;
        }
        L = warp_sum(L);
        if (lane == 0) { wsm[n] = M; wsm[n + 1] = L; }
    }
    __syncthreads();
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float acc = 0;
        for (int i = 0; i < n; i++) acc += in[i * (HS + 2) + 2 + d] * wsm[i];
        if (fin) dst[d] = acc / wsm[n + 1];
        else dst[2 + d] = acc;
    }
    if (!fin && threadIdx.x == 0) { dst[0] = wsm[n]; dst[1] = wsm[n + 1]; }
}

/* L2 prefetch of bytes [0, nb) of p by the whole grid: the weights of the
 * phases to come stream from memory while the block waits at barriers. */
static __device__ __forceinline__ void prefetch_l2(const void *p, int64_t nb) {
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    for (int64_t o = t * 128; o < nb; o += st * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)p + o));
}

/* p + o, or NULL for a tensor the block does not have (always without the
 * extras X: biases, LayerNorm, GELU; the plain Llama kernel has no trace of
 * them) */
template <bool X>
static __device__ __forceinline__ const float *at(const float *p, int64_t o) { return X && p ? p + o : nullptr; }
/* b[i], or 0 without a bias */
static __device__ __forceinline__ float bias(const float *b, int64_t i) { return b ? __ldg(b + i) : 0.0f; }

/* ------------------------------------------------------------ decode_block */

/* The weight phases: A (Wq, Wk, Wv), C (Wo), D (Wgate, Wup), E (Wdown).
 * Each is split in units (A: a rotation pair of q or k rows, or one row of
 * v; C, E: a row; D: a gate row with its up row), block b taking units
 * [b nu / G, (b + 1) nu / G) of nu. */
enum { PH_A, PH_C, PH_D, PH_E, PH_N };

struct DecArgs {
    float *y;
    const float *x, *n1w, *n2w, *n1b, *n2b;          /* norms (biases NULL: RMSNorm) */
    const void *wq, *wk, *wv, *wo, *wg, *wu, *wd;   /* wg NULL: GELU MLP */
    const float *bq, *bk, *bv, *bo, *bu, *bd;      /* biases (NULL: none) */
    float *kc, *vc;
    const float *cs, *sn;
    const int32_t *pos;
    float *q, *part, *att, *r, *h, *xb; /* scratch: [QD], [NH, nsplit, HS+2], [QD], [C], [H], [2, C] */
    unsigned long long *bar;            /* barrier arrivals, ever increasing */
    unsigned *cnt;                      /* per-head counters [NH] */
    int64_t lstride, kvstride;          /* layer l's weights at + l lstride elements, cache rows + l kvstride */
    int L, C, NH, NKV, HS, H, cap, nsplit, vec, wbytes;
    int nu[PH_N]; /* units of each weight phase */
    float eps, scale;
};

static __device__ __forceinline__ int unit0(int nu, int b) { return (int)((int64_t)b * nu / gridDim.x); }

/* Row `half` of unit u of phase ph in layer l (NULL: the unit has one row). */
template <typename WT>
static __device__ __forceinline__ const WT *unit_row(const DecArgs &a, int ph, int l, int u, int half) {
    int64_t lo = (int64_t)l * a.lstride;
    if (ph == PH_A) {
        int HS = a.HS, h2 = HS / 2, rope = a.cs != NULL;
        int nq = rope ? a.NH * h2 : a.NH * HS, nk = rope ? a.NKV * h2 : a.NKV * HS, j;
        const void *W;
        if (u < nq + nk) {
            int isk = u >= nq;
            j = isk ? u - nq : u;
            W = isk ? a.wk : a.wq;
            if (rope) j = (j / h2) * HS + j % h2 + half * h2;
            else if (half) return NULL;
        } else {
            if (half) return NULL;
            W = a.wv;
            j = u - nq - nk;
        }
        return (const WT *)W + lo + (int64_t)j * a.C;
    }
    if (ph == PH_D) { /* SwiGLU: gate row, up row; GELU: the up row */
        if (!a.wg) return half ? NULL : (const WT *)a.wu + lo + (int64_t)u * a.C;
        return (const WT *)(half ? a.wu : a.wg) + lo + (int64_t)u * a.C;
    }
    if (half) return NULL;
    return ph == PH_C ? (const WT *)a.wo + lo + (int64_t)u * a.NH * a.HS : (const WT *)a.wd + lo + (int64_t)u * a.H;
}

/* All blocks of the grid wait here until every one has arrived; what each
 * wrote before is visible to all after. bar counts arrivals over the
 * backend's lifetime (64 bits: it never wraps); this barrier is passed when
 * it reaches `target` (the launch's base + G per barrier so far). */
static __device__ __forceinline__ void grid_sync(unsigned long long *bar, unsigned long long &target) {
    target += gridDim.x;
    __syncthreads();
    if (threadIdx.x == 0) { /* the release covers the block's writes ordered before it by __syncthreads */
        asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(bar) : "memory");
        unsigned long long v;
        do {
            asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(bar) : "memory");
        } while ((long long)(v - target) < 0);
    }
    __syncthreads();
}

/* L layers (layer l's weights at + l lstride, its caches at + l kvstride):
 * y = the last layer's output; in between, two scratch rows. */
template <typename WT, int NC, bool X>
__global__ void __launch_bounds__(DB_THREADS, 1) k_decode_block(DecArgs a) {
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    __shared__ float red[DB_WARPS], wsm[DB_MAXSPLIT + 2];
    __shared__ unsigned long long base;
    int p = *a.pos;
    if (p < 0 || p >= a.cap) return; /* every block alike, before any barrier */
    int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
    int C = a.C, HS = a.HS, h2 = HS / 2;
    int64_t QD = (int64_t)a.NH * HS, KD = (int64_t)a.NKV * HS, es = a.wbytes;
    if (threadIdx.x == 0) {
        /* no block passes the first barrier before every block has started,
         * so the count read here is still the launch's base (+ arrivals) */
        unsigned long long v;
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(a.bar) : "memory");
        base = v - v % gridDim.x;
    }
    prefetch_l2(a.kc, (int64_t)p * KD * 4);
    prefetch_l2(a.vc, (int64_t)p * KD * 4);
    __syncthreads();
    unsigned long long tgt = base;
    for (int l = 0; l < a.L; l++) {
        int64_t lw = (int64_t)l * a.lstride;
        const float *xin = l == 0 ? a.x : a.xb + (int64_t)((l - 1) & 1) * C;
        float *yout = l == a.L - 1 ? a.y : a.xb + (int64_t)(l & 1) * C;
        float *kc = a.kc + (int64_t)l * a.kvstride, *vc = a.vc + (int64_t)l * a.kvstride;
        float *krow = kc + (int64_t)p * KD, *vrow = vc + (int64_t)p * KD;
        if (l + 1 < a.L) { /* the next layer's cache rows, into L2 */
            prefetch_l2(kc + a.kvstride, (int64_t)p * KD * 4);
            prefetch_l2(vc + a.kvstride, (int64_t)p * KD * 4);
        }
        { /* this layer's weights, into L2 */
            int64_t CQ = C * QD, CH = (int64_t)C * a.H;
            prefetch_l2((const char *)a.wq + lw * es, QD * C * es);
            prefetch_l2((const char *)a.wk + lw * es, KD * C * es);
            prefetch_l2((const char *)a.wv + lw * es, KD * C * es);
            prefetch_l2((const char *)a.wo + lw * es, CQ * es);
            if (a.wg) prefetch_l2((const char *)a.wg + lw * es, CH * es);
            prefetch_l2((const char *)a.wu + lw * es, CH * es);
            prefetch_l2((const char *)a.wd + lw * es, CH * es);
        }

        /* A: q, k (rotated in pairs when there are tables), v */
        norm_rows<norm_pre<WT>::NW>(sm, xin, a.n1w + lw, at<X>(a.n1b, lw), C, a.eps, red);
        {
            int rope = a.cs != NULL;
            int nq = rope ? a.NH * h2 : (int)QD, nk = rope ? a.NKV * h2 : (int)KD;
            int u0 = unit0(a.nu[PH_A], blockIdx.x), u1 = unit0(a.nu[PH_A], blockIdx.x + 1);
            for (int u = u0 + wi; u < u1; u += DB_WARPS) {
                float s[2];
                const WT *w0 = unit_row<WT>(a, PH_A, l, u, 0);
                if (u < nq + nk) {
                    int isk = u >= nq, j = isk ? u - nq : u;
                    float *dst = isk ? krow : a.q;
                    const float *bb = at<X>(isk ? a.bk : a.bq, lw);
                    if (rope) { /* tables and biases loaded before the product */
                        int64_t r0 = (int64_t)(j / h2) * HS + j % h2, tp = (int64_t)p * h2 + j % h2;
                        float co = __ldg(a.cs + tp), si = __ldg(a.sn + tp), b0 = bias(bb, r0), b1 = bias(bb, r0 + h2);
                        warp_dot<WT, 2>(sm, w0, unit_row<WT>(a, PH_A, l, u, 1), C, a.vec, s);
                        if (lane == 0) {
                            float o0, o1;
                            rope_rot(s[0] + b0, s[1] + b1, co, si, o0, o1);
                            dst[r0] = o0;
                            dst[r0 + h2] = o1;
                        }
                    } else {
                        float b0 = bias(bb, j);
                        warp_dot<WT, 1>(sm, w0, NULL, C, a.vec, s);
                        if (lane == 0) dst[j] = s[0] + b0;
                    }
                } else {
                    float b0 = bias(at<X>(a.bv, lw), u - nq - nk);
                    warp_dot<WT, 1>(sm, w0, NULL, C, a.vec, s);
                    if (lane == 0) vrow[u - nq - nk] = s[0] + b0;
                }
            }
        }
        grid_sync(a.bar, tgt);

        /* B: attention over cache rows 0..p: block u takes head u / ns, its
         * keys split ns ways; in the block warp w takes keys w, w + 16, ...
         * (their k and v rows loaded together) and the warps' (max, sum,
         * output) are merged in shared memory, then across the head's blocks
         * by the block that finishes last. */
        {
            int ns = a.nsplit, G = a.NH / a.NKV;
            int len = (p + ns) / ns; /* keys per block: ceil((p + 1) / ns) */
            for (int u = blockIdx.x; u < a.NH * ns; u += gridDim.x) {
                int hh = u / ns, si = u % ns, j0 = si * len, j1 = j0 + len < p + 1 ? j0 + len : p + 1;
                const float *kb = kc + (int64_t)(hh / G) * HS, *vb = vc + (int64_t)(hh / G) * HS;
                float qv[NC], o[NC], m = -INFINITY, lsum = 0;
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    int d = lane + 32 * c;
                    qv[c] = d < HS ? __ldcg(a.q + (int64_t)hh * HS + d) * a.scale : 0;
                    o[c] = 0;
                }
                constexpr int KG = NC == 1 ? 8 : 16 / NC; /* keys loaded together (registers) */
                for (int j = j0 + wi; j < j1; j += KG * DB_WARPS) {
                    float kv[KG][NC], vv[KG][NC], sc[KG], mx = m;
#pragma unroll
                    for (int t = 0; t < KG; t++) {
                        int jj = j + t * DB_WARPS;
#pragma unroll
                        for (int c = 0; c < NC; c++) {
                            int d = lane + 32 * c;
                            int in = jj < j1 && d < HS;
                            kv[t][c] = in ? __ldcg(kb + (int64_t)jj * KD + d) : 0;
                            vv[t][c] = in ? __ldcg(vb + (int64_t)jj * KD + d) : 0;
                        }
                    }
#pragma unroll
                    for (int t = 0; t < KG; t++) {
                        float acc = 0;
#pragma unroll
                        for (int c = 0; c < NC; c++) acc += qv[c] * kv[t][c];
                        acc = warp_sum(acc);
                        sc[t] = j + t * DB_WARPS < j1 ? acc : -INFINITY;
                        mx = fmaxf(mx, sc[t]);
                    }
                    float corr = expf(m - mx);
                    lsum *= corr;
#pragma unroll
                    for (int c = 0; c < NC; c++) o[c] *= corr;
#pragma unroll
                    for (int t = 0; t < KG; t++) {
                        float pt = expf(sc[t] - mx); /* 0 past the keys */
                        lsum += pt;
#pragma unroll
                        for (int c = 0; c < NC; c++) o[c] += pt * vv[t][c];
                    }
                    m = mx;
                }
                /* the block's warps -> one (m, l, o) */
                float *ws = sm + wi * (HS + 2);
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    int d = lane + 32 * c;
                    if (d < HS) ws[2 + d] = o[c];
                }
                if (lane == 0) { ws[0] = m; ws[1] = lsum; }
                __syncthreads();
                float *pr = a.part + ((int64_t)hh * ns + si) * (HS + 2);
                merge_parts(pr, sm, DB_WARPS, HS, 0, wsm);
                __syncthreads(); /* sm reused by the next unit */
                __shared__ unsigned last;
                if (threadIdx.x == 0) {
                    __threadfence();
                    last = atomicAdd(a.cnt + hh, 1u) == (unsigned)ns - 1;
                }
                __syncthreads();
                if (last) { /* the head's other blocks are done: merge theirs */
                    __threadfence();
                    const float *ph = a.part + (int64_t)hh * ns * (HS + 2);
                    for (int i = threadIdx.x; i < ns * (HS + 2); i += blockDim.x) sm[i] = __ldcg(ph + i);
                    __syncthreads();
                    merge_parts(a.att + (int64_t)hh * HS, sm, ns, HS, 1, wsm);
                    if (threadIdx.x == 0) a.cnt[hh] = 0; /* ready for the next layer or launch */
                }
                __syncthreads();
            }
        }
        grid_sync(a.bar, tgt);

        /* C: r = x + Wo att + bo */
        load_vec(sm, a.att, (int)QD);
        {
            int u0 = unit0(C, blockIdx.x), u1 = unit0(C, blockIdx.x + 1);
            for (int u = u0 + wi; u < u1; u += DB_WARPS) {
                float s[1], xr = __ldcg(xin + u), b0 = bias(at<X>(a.bo, lw), u); /* loaded before the product */
                warp_dot<WT, 1>(sm, unit_row<WT>(a, PH_C, l, u, 0), NULL, (int)QD, a.vec, s);
                if (lane == 0) a.r[u] = xr + (s[0] + b0);
            }
        }
        grid_sync(a.bar, tgt);

        /* D: h = silu(Wgate n2) * (Wup n2 + bup), or gelu(Wup n2 + bup) */
        norm_rows<norm_pre<WT>::NW>(sm, a.r, a.n2w + lw, at<X>(a.n2b, lw), C, a.eps, red);
        {
            int u0 = unit0(a.H, blockIdx.x), u1 = unit0(a.H, blockIdx.x + 1);
            for (int u = u0 + wi; u < u1; u += DB_WARPS) {
                float s[2], b0 = bias(at<X>(a.bu, lw), u);
                if (!X || a.wg) {
                    warp_dot<WT, 2>(sm, unit_row<WT>(a, PH_D, l, u, 0), unit_row<WT>(a, PH_D, l, u, 1), C, a.vec,
                                    s);
                    if (lane == 0) a.h[u] = silu_f(s[0]) * (s[1] + b0);
                } else {
                    warp_dot<WT, 1>(sm, unit_row<WT>(a, PH_D, l, u, 0), NULL, C, a.vec, s);
                    if (lane == 0) a.h[u] = gelu_f(s[0] + b0);
                }
            }
        }
        grid_sync(a.bar, tgt);

        /* E: y = r + Wdown h + bdown */
        load_vec(sm, a.h, a.H);
        {
            int u0 = unit0(C, blockIdx.x), u1 = unit0(C, blockIdx.x + 1);
            for (int u = u0 + wi; u < u1; u += DB_WARPS) {
                float s[1], rr = __ldcg(a.r + u), b0 = bias(at<X>(a.bd, lw), u); /* loaded before the product */
                warp_dot<WT, 1>(sm, unit_row<WT>(a, PH_E, l, u, 0), NULL, a.H, a.vec, s);
                if (lane == 0) yout[u] = rr + (s[0] + b0);
            }
        }
        if (l + 1 < a.L) grid_sync(a.bar, tgt);
    }
}

static int al16(const void *p) { return (uintptr_t)p % 16 == 0; }

template <typename WT, int NC>
static int launch_block(smj_cuda *c, DecArgs &a, size_t smem) {
    int G = c->n_sm;
    int x = a.n1b || a.n2b || a.bq || a.bk || a.bv || a.bo || a.bu || a.bd || !a.wg; /* not a plain Llama block */
    void (*fn)(DecArgs) = x ? k_decode_block<WT, NC, true> : k_decode_block<WT, NC, false>;
    if (!smem_ok(c, (const void *)fn, smem)) return 0;
    int per_sm = 0;
    if (!CK(c, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, DB_THREADS, smem)) || per_sm < 1) return 0;
    int64_t QD = (int64_t)a.NH * a.HS;
    size_t nf = (size_t)QD + (size_t)a.NH * a.nsplit * (a.HS + 2) + (size_t)QD + a.C + a.H + 2 * (size_t)a.C + 64;
    float *s = (float *)scratch(c, sizeof(float) * nf);
    if (!s) return 0;
    a.q = s;
    a.part = a.q + QD;
    a.att = a.part + (int64_t)a.NH * a.nsplit * (a.HS + 2);
    a.r = a.att + QD;
    a.h = a.r + a.C;
    a.xb = a.h + a.H;
    a.bar = (unsigned long long *)c->dec_sync;
    a.cnt = c->dec_sync + 2;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative; /* all blocks resident: the barrier needs it */
    at[0].val.cooperative = 1;
    cfg.gridDim = dim3((unsigned)G);
    cfg.blockDim = dim3(DB_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    CK(c, cudaLaunchKernelEx(&cfg, fn, a));
    LAUNCHED(c);
    return 1;
}

int cu_decode_block(const smj_exec *ex, float *y, const float *x, const smj_block_weights *w, int L,
                    int64_t lstride, float *kc, float *vc, int64_t kvstride, const float *cs, const float *sn,
                    const int32_t *pos, int C, int NH, int NKV, int HS, int H, int cap, float eps, float scale) {
    OP_BEGIN("decode_block");
    int bf = w->wtype == SMJ_WTYPE_BF16;
    int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, big = QD > C ? QD : C;
    if (H > big) big = H;
    if (DB_WARPS * (HS + 2) > big) big = DB_WARPS * (HS + 2); /* phase B's per-warp results */
    /* a head's keys split over this many blocks (their results fit the vector region) */
    int ns = c->n_sm / (NH > 0 ? NH : 1);
    if (ns > DB_MAXSPLIT) ns = DB_MAXSPLIT;
    if ((int64_t)ns * (HS + 2) > big) ns = (int)(big / (HS + 2));
    size_t vbytes = sizeof(float) * (size_t)((big + 3) / 4 * 4);
    /* what the kernel does not take: the ops one by one run it */
    if ((!bf && w->wtype != SMJ_WTYPE_F32) || HS < 2 || HS > 256 || NKV < 1 || NH % NKV || NH > SMJ_CUDA_DEC_HEADS ||
        (cs && HS % 2) || cap < 1 || L < 1 || vbytes > c->smem_optin || !c->dec_sync || c->no_dec_block) {
        op_end(c);
        return 0;
    }
    int P = bf ? 8 : 4;
    const void *ws[] = {w->wq, w->wk, w->wv, w->wo, w->wgate, w->wup, w->wdown};
    int vec = C % P == 0 && QD % P == 0 && H % P == 0 && (L == 1 || lstride % P == 0);
    for (int i = 0; i < 7; i++) vec = vec && al16(ws[i]);
    DecArgs a = {};
    a.y = y; a.x = x; a.n1w = w->attn_norm; a.n2w = w->ffn_norm; a.n1b = w->attn_norm_b; a.n2b = w->ffn_norm_b;
    a.bq = w->bq; a.bk = w->bk; a.bv = w->bv; a.bo = w->bo; a.bu = w->bup; a.bd = w->bdown;
    a.wq = w->wq; a.wk = w->wk; a.wv = w->wv; a.wo = w->wo; a.wg = w->wgate; a.wu = w->wup; a.wd = w->wdown;
    a.kc = kc; a.vc = vc; a.cs = cs; a.sn = sn; a.pos = pos;
    a.lstride = lstride; a.kvstride = kvstride;
    a.L = L; a.C = C; a.NH = NH; a.NKV = NKV; a.HS = HS; a.H = H; a.cap = cap; a.nsplit = ns > 1 ? ns : 1;
    a.vec = vec; a.wbytes = bf ? 2 : 4; a.eps = eps; a.scale = scale;
    a.nu[PH_A] = (int)(cs ? (QD + KD) / 2 + KD : QD + 2 * KD); /* rotation pairs of q, k; rows of v */
    a.nu[PH_C] = C; a.nu[PH_D] = H; a.nu[PH_E] = C;
    int ok;
#define F(NC) ok = bf ? launch_block<__nv_bfloat16, NC>(c, a, vbytes) : launch_block<float, NC>(c, a, vbytes)
    NC_DISPATCH(HS, F);
#undef F
    op_end(c);
    return ok;
}

/* ------------------------------------------------------------ decode_linear */

/* out[N] = W[N,K] · n: a block of 512 an SM makes n (the norm of x, or x)
 * in shared memory, then each warp takes a contiguous range of rows, two
 * at a time (both rows' loads in flight). One block an SM pays the norm
 * once (eight blocks of 256, the earlier layout, paid it in four waves):
 * the Llama 110M LM head 22.4 -> 17.9 us a token on an H200. */
template <typename WT>
__global__ void __launch_bounds__(512, 1) k_decode_linear(float *out, const float *x, const float *norm, const WT *W,
                                                          int64_t N, int K, float eps, int vec) {
    extern __shared__ float4 smem4[];
    float *sm = (float *)smem4;
    __shared__ float red[16];
    if (norm) {
        norm_rows<norm_pre<WT>::NW>(sm, x, norm, NULL, K, eps, red);
    } else {
        load_vec(sm, x, K);
    }
    int64_t nw = (int64_t)gridDim.x * 16, gw = (int64_t)blockIdx.x * 16 + (threadIdx.x >> 5);
    int64_t r1 = (gw + 1) * N / nw;
    for (int64_t row = gw * N / nw; row < r1; row += 2) {
        float s[2];
        if (row + 1 < r1) {
            warp_dot<WT, 2>(sm, W + row * K, W + (row + 1) * K, K, vec, s);
            if ((threadIdx.x & 31) == 0) { out[row] = s[0]; out[row + 1] = s[1]; }
        } else {
            warp_dot<WT, 1>(sm, W + row * K, NULL, K, vec, s);
            if ((threadIdx.x & 31) == 0) out[row] = s[0];
        }
    }
}

void cu_decode_linear(const smj_exec *ex, float *out, const float *x, const float *norm, const void *W, int wtype,
                      int64_t N, int K, float eps) {
    OP_BEGIN("decode_linear");
    if (N <= 0 || K <= 0) { op_end(c); return; }
    if (wtype != SMJ_WTYPE_F32 && wtype != SMJ_WTYPE_BF16) {
        record(c, SMJ_ERR_UNSUPPORTED, "decode_linear: weight type %d (want f32 or bf16)", wtype);
        return;
    }
    cast_written(c, out, N);
    size_t smem = sizeof(float) * (size_t)((K + 3) / 4 * 4);
    int vec = K % (wtype == SMJ_WTYPE_BF16 ? 8 : 4) == 0 && al16(W);
    unsigned grid = blocks_for(N, 32, c->n_sm); /* two rows a warp at least */
    if (wtype == SMJ_WTYPE_BF16) {
        if (!smem_ok(c, (const void *)k_decode_linear<__nv_bfloat16>, smem)) return;
        k_decode_linear<__nv_bfloat16><<<grid, 512, smem, c->stream>>>(out, x, norm, (const __nv_bfloat16 *)W, N, K,
                                                                        eps, vec);
    } else {
        if (!smem_ok(c, (const void *)k_decode_linear<float>, smem)) return;
        k_decode_linear<float><<<grid, 512, smem, c->stream>>>(out, x, norm, (const float *)W, N, K, eps, vec);
    }
    LAUNCHED(c);
    op_end(c);
}

/* ------------------------------------------------------------ decode_argmax */

/* (value, index) candidates of the argmax: index INT32_MAX = none yet (NaNs
 * never become one); a larger value wins, then the smaller index. */
static __device__ __forceinline__ void arg_better(float &v, int &i, float v2, int i2) {
    if (i2 != INT32_MAX && (i == INT32_MAX || v2 > v || (v2 == v && i2 < i))) { v = v2; i = i2; }
}

/* smj_sample's greedy scan (the first of the largest; NaN never larger;
 * logits[0] NaN gives 0) over the grid: each block scans its range of the
 * logits into a candidate (cv, ci [gridDim]); the block that finishes last
 * (a counter, reset by it) picks among them (the order does not matter:
 * arg_better is a total order) and does the step's bookkeeping. */
__global__ void __launch_bounds__(256) k_decode_argmax(int32_t *next, int32_t *hist, int32_t *pos, const float *l,
                                                       int V, float *cv, int *ci, unsigned *cnt) {
    __shared__ float sv[8];
    __shared__ int si[8];
    __shared__ unsigned last;
    int per = (int)(((int64_t)V + gridDim.x - 1) / gridDim.x), lo = blockIdx.x * per;
    int hi = lo + per < V ? lo + per : V;
    float v = -INFINITY;
    int i = INT32_MAX;
    for (int k = lo + threadIdx.x; k < hi; k += blockDim.x) {
        float x = l[k];
        if (x == x) arg_better(v, i, x, k);
    }
    for (int o = 16; o > 0; o >>= 1) arg_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    if ((threadIdx.x & 31) == 0) { sv[threadIdx.x >> 5] = v; si[threadIdx.x >> 5] = i; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) arg_better(v, i, sv[w], si[w]);
        cv[blockIdx.x] = v;
        ci[blockIdx.x] = i;
        __threadfence();
        last = atomicAdd(cnt, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    v = -INFINITY;
    i = INT32_MAX;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) arg_better(v, i, __ldcg(cv + b), __ldcg(ci + b));
    for (int o = 16; o > 0; o >>= 1) arg_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) { sv[threadIdx.x >> 5] = v; si[threadIdx.x >> 5] = i; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) arg_better(v, i, sv[w], si[w]);
        int id = l[0] != l[0] || i == INT32_MAX ? 0 : i, p = *pos;
        next[0] = id;
        hist[p + 1] = id;
        *pos = p + 1;
        *cnt = 0; /* ready for the next launch */
    }
}

void cu_decode_argmax(const smj_exec *ex, int32_t *next, int32_t *hist, int32_t *pos, const float *logits, int V) {
    OP_BEGIN("decode_argmax");
    if (!c->dec_sync) {
        record(c, SMJ_ERR_UNSUPPORTED, "decode_argmax: no device memory for its counters");
        return;
    }
    /* about 1,024 logits a block, at most DEC_ARGMAX_BLOCKS blocks */
    unsigned grid = blocks_for(V, 1024, DEC_ARGMAX_BLOCKS);
    unsigned *cnt = c->dec_sync + DEC_ARGMAX_OFF;
    k_decode_argmax<<<grid, 256, 0, c->stream>>>(next, hist, pos, logits, V, (float *)(cnt + 1),
                                                 (int *)(cnt + 1 + DEC_ARGMAX_BLOCKS), cnt);
    LAUNCHED(c);
    op_end(c);
}
