/* flash.cu — tensor-core flash attention (causal, GQA), forward and
 * backward, for the CUDA backend's bf16 mode. O(T) memory: score tiles live
 * in registers, never in device memory.
 *
 * Layouts are the op table's (ops.h): q/out [B,Tq,NH,HS], k/v [B,Tk,NKV,HS]
 * (batch stride kv_bstride), lse [B,NH,Tq]; all fp32 in device memory. Each
 * block reads its fp32 tiles, rounds them to bf16 into shared memory and
 * multiplies with mma.sync m16n8k16 (bf16 in, fp32 accumulate; sm_80+).
 *
 * Tiles: 64 queries x 64 keys, 4 warps; warp w owns 16 rows of the tile.
 * mma fragment layout (PTX ISA, m16n8k16): lane = 4g + t;
 *   A (16x16): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
 *   B (16x8, "col"): b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
 *   C (16x8): c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
 * so two adjacent C tiles of a score row block, rounded to bf16, are the A
 * fragment of the next product (P·V) without a trip through shared memory.
 * Operands come from shared memory through ldmatrix (.trans where the
 * product wants the other orientation).
 *
 * forward  (one block per query tile, head, batch; the last query tiles,
 *          which see the most keys, are launched first): online softmax in
 *          the log2 domain; key tiles past the causal diagonal are skipped,
 *          only diagonal/tail tiles are masked; out = O / l, lse saved.
 * backward (deterministic, no atomics): D = rowsum(dO o O) (attention.cu's
 *          k_att_delta); one kernel per query tile for dQ (recomputes
 *          S, P, dP over its key tiles) and one per (key tile, KV head) for
 *          dK, dV that loops over the query heads of its group and the
 *          query tiles at or after the diagonal:
 *            P = exp(scale S - lse), dV += P^T dO, dP = dO V^T,
 *            dS = P (dP - D), dQ = scale dS K, dK += scale dS^T Q.
 *          P and dS are rounded to bf16 as the products' A operands.
 *
 * Pipelining: the tile after the current one is fetched into registers
 * before the current one is multiplied and stored into the other of two
 * shared buffers after (Prefetch), one barrier per tile; the dK/dV kernel
 * does this at head size 64 only (at 128 the registers are full).
 *
 * Head sizes 64 and 128 (flash_ok); others take the cuBLAS path.
 */
#include "cuda_common.cuh"

#define FB 64       /* queries and keys per tile */
#define FTHREADS 128 /* 4 warps x 16 rows */
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef __nv_bfloat16 bf16;

/* shared row stride in bf16: HS + 8 (16 bytes) keeps ldmatrix conflict-free */
template <int HS> struct FL { static constexpr int LDS = HS + 8; };

/* ldmatrix x4: four 8x8 bf16 matrices, lane l gives row l%8 of matrix l/8;
 * TRANS loads each transposed. */
template <bool TRANS> __device__ __forceinline__ void ldsm(uint32_t r[4], const bf16 *p) {
#if __CUDA_ARCH__ >= 800
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
/* d += a · b (16x8 fp32 tile) */
__device__ __forceinline__ void mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
/* 2^x, one MUFU instruction (flush to zero; 2^-inf = 0): exp2f adds a
 * denormal range fix-up the probabilities do not need. */
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* 64 rows of HS fp32 (row stride rs floats; rows >= nrows are zero) -> bf16
 * shared [64][LDS]. src rows 16-byte aligned. */
template <int HS>
__device__ __forceinline__ void load_tile(bf16 *dst, const float *src, int64_t rs, int nrows) {
    constexpr int Q4 = HS / 4, LDS = FL<HS>::LDS;
    for (int e = threadIdx.x; e < FB * Q4; e += FTHREADS) {
        int r = e / Q4, c4 = e - r * Q4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nrows) v = __ldg((const float4 *)(src + (int64_t)r * rs) + c4);
        uint2 u;
        u.x = pack_bf16(v.x, v.y);
        u.y = pack_bf16(v.z, v.w);
        *(uint2 *)(dst + r * LDS + 4 * c4) = u;
    }
}

/* A tile's fp32 values in registers between the issue of its loads and its
 * store to shared memory: the next tile is fetched before the current one
 * is multiplied and stored after, so its global latency hides behind the
 * tensor-core work (each thread holds HS/8 float4). */
template <int HS> struct Prefetch {
    static constexpr int NV = FB * HS / 4 / FTHREADS, Q4 = HS / 4;
    float4 r[NV];
    __device__ __forceinline__ void fetch(const float *src, int64_t rs, int nrows) {
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int e = threadIdx.x + i * FTHREADS, row = e / Q4, c4 = e - row * Q4;
            r[i] = row < nrows ? __ldg((const float4 *)(src + (int64_t)row * rs) + c4) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    __device__ __forceinline__ void store(bf16 *dst) const {
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int e = threadIdx.x + i * FTHREADS, row = e / Q4, c4 = e - row * Q4;
            uint2 u;
            u.x = pack_bf16(r[i].x, r[i].y);
            u.y = pack_bf16(r[i].z, r[i].w);
            *(uint2 *)(dst + row * FL<HS>::LDS + 4 * c4) = u;
        }
    }
};

/* A fragment (16 rows from row0, 16 cols from col0) of a [.][LDS] tile. */
template <int LDS>
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16 *s, int row0, int col0) {
    int lane = threadIdx.x & 31;
    ldsm<false>(a, s + (row0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LDS + col0 + 8 * (lane >> 4));
}
/* B fragments of two adjacent n8 blocks (n0, n0+8) over k0..k0+15 where the
 * tile is stored [n][k] (rows = n): b[0],b[1] for n0, b[2],b[3] for n0+8. */
template <int LDS>
__device__ __forceinline__ void frag_b_nk(uint32_t b[4], const bf16 *s, int n0, int k0) {
    int lane = threadIdx.x & 31;
    ldsm<false>(b, s + (n0 + (lane & 7) + 8 * (lane >> 4)) * LDS + k0 + 8 * ((lane >> 3) & 1));
}
/* The same where the tile is stored [k][n] (rows = k): transposed loads. */
template <int LDS>
__device__ __forceinline__ void frag_b_kn(uint32_t b[4], const bf16 *s, int k0, int n0) {
    int lane = threadIdx.x & 31;
    ldsm<true>(b, s + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LDS + n0 + 8 * (lane >> 4));
}

/* acc[8][4] = X_w (16 rows at xrow of sX, HS cols) · Y^T (64 rows of sY):
 * the 16x64 score block of a warp. */
template <int HS>
__device__ __forceinline__ void scores(float acc[8][4], const bf16 *sX, int xrow, const bf16 *sY) {
    constexpr int LDS = FL<HS>::LDS;
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
        uint32_t a[4];
        frag_a<LDS>(a, sX, xrow, kk * 16);
#pragma unroll
        for (int j2 = 0; j2 < 4; j2++) {
            uint32_t b[4];
            frag_b_nk<LDS>(b, sY, j2 * 16, kk * 16);
            mma16816(acc[2 * j2], a, b[0], b[1]);
            mma16816(acc[2 * j2 + 1], a, b[2], b[3]);
        }
    }
}

/* acc[HS/8][4] += P (16x64, as bf16 A fragments pa[4][4]) · Y (64 rows of sY
 * stored [k][n], HS cols). */
template <int HS>
__device__ __forceinline__ void accum_pv(float acc[HS / 8][4], const uint32_t pa[4][4], const bf16 *sY) {
    constexpr int LDS = FL<HS>::LDS;
#pragma unroll
    for (int kb = 0; kb < 4; kb++)
#pragma unroll
        for (int d2 = 0; d2 < HS / 16; d2++) {
            uint32_t b[4];
            frag_b_kn<LDS>(b, sY, kb * 16, d2 * 16);
            mma16816(acc[2 * d2], pa[kb], b[0], b[1]);
            mma16816(acc[2 * d2 + 1], pa[kb], b[2], b[3]);
        }
}

/* C tiles [8][4] (a 16x64 block) -> bf16 A fragments of four k16 steps. */
__device__ __forceinline__ void to_frags(uint32_t pa[4][4], const float s[8][4]) {
#pragma unroll
    for (int kb = 0; kb < 4; kb++) {
        pa[kb][0] = pack_bf16(s[2 * kb][0], s[2 * kb][1]);
        pa[kb][1] = pack_bf16(s[2 * kb][2], s[2 * kb][3]);
        pa[kb][2] = pack_bf16(s[2 * kb + 1][0], s[2 * kb + 1][1]);
        pa[kb][3] = pack_bf16(s[2 * kb + 1][2], s[2 * kb + 1][3]);
    }
}

/* ------------------------------------------------------------ forward */

/* cp.async: 16 bytes global -> shared without registers; src_bytes 0
 * fills zeros (rows past the end). Groups: commit, then wait until at most
 * N groups are still in flight. */
__device__ __forceinline__ void cp16(void *dst, const void *src, int src_bytes) {
#if __CUDA_ARCH__ >= 800
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
#endif
}
__device__ __forceinline__ void cp_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
/* R rows of HS bf16 (row stride rs elements, a multiple of 8; rows >=
 * nrows zero) -> shared [R][LDS], asynchronously. */
template <int R, int HS>
__device__ __forceinline__ void cp_tile(bf16 *dst, const bf16 *src, int64_t rs, int nrows) {
    constexpr int CPR = HS / 8, LDS = FL<HS>::LDS;
#pragma unroll
    for (int e = threadIdx.x; e < R * CPR; e += FTHREADS) {
        int r = e / CPR, c8 = e - r * CPR;
        bool ok = r < nrows;
        cp16(dst + r * LDS + 8 * c8, src + (ok ? (int64_t)r * rs : 0) + 8 * c8, ok ? 16 : 0);
    }
}

/* One block per (query tile, head, batch) over bf16 q, k, v (k/v batch
 * stride kv_bstride); warp w owns MT m16 row blocks (32 rows at head size
 * 64: each K/V fragment read from shared memory feeds two products). K and
 * V tiles arrive by cp.async into two buffers each: the next K is in flight
 * while this tile's scores and softmax run, the next V while P·V runs. */
template <int HS>
__global__ void __launch_bounds__(FTHREADS) k_flash_fwd(float *out, bf16 *out16, float *lse, const bf16 *q,
                                                        const bf16 *k, const bf16 *v, int Tq, int Tk, int NH,
                                                        int NKV, int64_t kv_bstride, float sl2) {
#if __CUDA_ARCH__ >= 800
    constexpr int MT = HS <= 64 ? 2 : 1, BQ = FB * MT, LDS = FL<HS>::LDS, ND = HS / 8, QF = HS / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sKb = sQ + BQ * LDS, *sVb = sKb + 2 * FB * LDS; /* K, V: two buffers each */
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (NH / NKV), q0 = qt * BQ, off = Tk - Tq;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = (int64_t)NKV * HS;
    const bf16 *kb = k + (int64_t)b * kv_bstride + (int64_t)hk * HS;
    const bf16 *vb = v + (int64_t)b * kv_bstride + (int64_t)hk * HS;
    cp_tile<BQ, HS>(sQ, q + ((int64_t)b * Tq + q0) * qrs + (int64_t)h * HS, qrs, min(BQ, Tq - q0));
    cp_tile<FB, HS>(sKb, kb, krs, min(FB, Tk));
    cp_commit();
    cp_tile<FB, HS>(sVb, vb, krs, min(FB, Tk));
    cp_commit();
    cp_wait<1>(); /* Q and the first K */
    __syncthreads();
    const int wr = w * 16 * MT; /* the warp's first row in the tile */
    uint32_t qf[MT][QF][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < QF; kk++) frag_a<LDS>(qf[mt][kk], sQ, wr + mt * 16, kk * 16);
    float o[MT][ND][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int d = 0; d < ND; d++) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }
    const int last = min(Tk - 1, off + min(q0 + BQ - 1, Tq - 1)); /* last key any row sees */
    const int nkt = last / FB + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FB, k1 = k0 + FB;
        const bool more = kt + 1 < nkt;
        const bf16 *sK = sKb + (kt & 1) * FB * LDS, *sV = sVb + (kt & 1) * FB * LDS;
        if (more) cp_tile<FB, HS>(sKb + ((kt + 1) & 1) * FB * LDS, kb + (int64_t)k1 * krs, krs, min(FB, Tk - k1));
        cp_commit();
        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 8; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < QF; kk++)
#pragma unroll
            for (int j2 = 0; j2 < 4; j2++) {
                uint32_t bb[4];
                frag_b_nk<LDS>(bb, sK, j2 * 16, kk * 16);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(s[mt][2 * j2], qf[mt][kk], bb[0], bb[1]);
                    mma16816(s[mt][2 * j2 + 1], qf[mt][kk], bb[2], bb[3]);
                }
            }
        /* online softmax per row: the maxima of the raw scores (masked keys
         * -inf), the running maxima m in the scaled log2 domain (sl2 > 0) */
        const bool mask = k0 + FB - 1 > off + q0 + wr || k0 + FB > Tk;
        uint32_t pa[MT][4][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int r0 = q0 + wr + mt * 16 + g, r1 = r0 + 8;
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[mt][j][e];
                    if (mask) {
                        int key = k0 + j * 8 + 2 * t + (e & 1), row = e < 2 ? r0 : r1;
                        if (key > off + row || key >= Tk) x = -INFINITY;
                    }
                    s[mt][j][e] = x;
                    if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
                }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            mx0 = fmaxf(m[mt][0], mx0 * sl2);
            mx1 = fmaxf(m[mt][1], mx1 * sl2);
            /* a row with no visible key yet keeps max -inf: scale factors 1, p 0 */
            const float b0 = mx0 == -INFINITY ? 0.f : mx0, b1 = mx1 == -INFINITY ? 0.f : mx1;
            const float c0 = ex2(m[mt][0] - b0), c1 = ex2(m[mt][1] - b1);
            l[mt][0] *= c0;
            l[mt][1] *= c1;
#pragma unroll
            for (int d = 0; d < ND; d++) {
                o[mt][d][0] *= c0; o[mt][d][1] *= c0; o[mt][d][2] *= c1; o[mt][d][3] *= c1;
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[mt][j][0] = ex2(fmaf(s[mt][j][0], sl2, -b0)); s[mt][j][1] = ex2(fmaf(s[mt][j][1], sl2, -b0));
                s[mt][j][2] = ex2(fmaf(s[mt][j][2], sl2, -b1)); s[mt][j][3] = ex2(fmaf(s[mt][j][3], sl2, -b1));
                l[mt][0] += s[mt][j][0] + s[mt][j][1];
                l[mt][1] += s[mt][j][2] + s[mt][j][3];
            }
            m[mt][0] = mx0;
            m[mt][1] = mx1;
            to_frags(pa[mt], s[mt]);
        }
        cp_wait<1>(); /* this tile's V (the next K may still be in flight) */
        __syncthreads();
        if (more) cp_tile<FB, HS>(sVb + ((kt + 1) & 1) * FB * LDS, vb + (int64_t)k1 * krs, krs, min(FB, Tk - k1));
        cp_commit();
#pragma unroll
        for (int kb2 = 0; kb2 < 4; kb2++)
#pragma unroll
            for (int d2 = 0; d2 < HS / 16; d2++) {
                uint32_t bv[4];
                frag_b_kn<LDS>(bv, sV, kb2 * 16, d2 * 16);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(o[mt][2 * d2], pa[mt][kb2], bv[0], bv[1]);
                    mma16816(o[mt][2 * d2 + 1], pa[mt][kb2], bv[2], bv[3]);
                }
            }
        cp_wait<1>(); /* the next K */
        __syncthreads(); /* ... visible to all; this tile's buffers are free */
    }
    cp_wait<0>();
    float *ob = out + (int64_t)b * Tq * qrs + (int64_t)h * HS;
    bf16 *ob16 = out16 ? out16 + (ob - out) : NULL;
    float *lb = lse + ((int64_t)b * NH + h) * Tq;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const int r0 = q0 + wr + mt * 16 + g, r1 = r0 + 8;
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
        for (int d = 0; d < ND; d++) {
            float2 v0 = make_float2(o[mt][d][0] * i0, o[mt][d][1] * i0), v1 = make_float2(o[mt][d][2] * i1, o[mt][d][3] * i1);
            int64_t e0 = (int64_t)r0 * qrs + d * 8 + 2 * t, e1 = (int64_t)r1 * qrs + d * 8 + 2 * t;
            if (r0 < Tq) *(float2 *)(ob + e0) = v0;
            if (r1 < Tq) *(float2 *)(ob + e1) = v1;
            if (ob16 && r0 < Tq) *(uint32_t *)(ob16 + e0) = pack_bf16(v0.x, v0.y);
            if (ob16 && r1 < Tq) *(uint32_t *)(ob16 + e1) = pack_bf16(v1.x, v1.y);
        }
        if (t == 0 && r0 < Tq) lb[r0] = (m[mt][0] + log2f(l0)) * LN2;
        if (t == 0 && r1 < Tq) lb[r1] = (m[mt][1] + log2f(l1)) * LN2;
    }
#endif
}

/* ------------------------------------------------------------ backward */

/* lse (natural) -> log2 domain and D of 64 rows from row0 into shared
 * (rows >= T: 0). */
__device__ __forceinline__ void load_rowstats(float *sL, float *sD, const float *lse, const float *D, int row0,
                                              int T) {
    for (int i = threadIdx.x; i < FB; i += FTHREADS) {
        bool ok = row0 + i < T;
        sL[i] = ok ? lse[row0 + i] * LOG2E : 0.f;
        sD[i] = ok ? D[row0 + i] : 0.f;
    }
}

/* dQ for one (query tile, head, batch). */
template <int HS>
__global__ void __launch_bounds__(FTHREADS, HS <= 64 ? 3 : 1) k_flash_bwd_dq(float *dq, const float *dout, const float *lse,
                                                           const float *D, const float *q, const float *k,
                                                           const float *v, int T, int NH, int NKV, float sl2,
                                                           float scale) {
#if __CUDA_ARCH__ >= 800
    constexpr int LDS = FL<HS>::LDS, ND = HS / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sO = sQ + FB * LDS, *sKb = sO + FB * LDS, *sVb = sKb + 2 * FB * LDS;
    float *sL = (float *)(sVb + 2 * FB * LDS), *sD = sL + FB;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (NH / NKV), q0 = qt * FB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = (int64_t)NKV * HS;
    const int64_t qoff = ((int64_t)b * T + q0) * qrs + (int64_t)h * HS;
    const float *kb = k + (int64_t)b * T * krs + (int64_t)hk * HS;
    const float *vb = v + (int64_t)b * T * krs + (int64_t)hk * HS;
    load_tile<HS>(sQ, q + qoff, qrs, min(FB, T - q0));
    load_tile<HS>(sO, dout + qoff, qrs, min(FB, T - q0));
    load_rowstats(sL, sD, lse + ((int64_t)b * NH + h) * T, D + ((int64_t)b * NH + h) * T, q0, T);
    load_tile<HS>(sKb, kb, krs, min(FB, T));
    load_tile<HS>(sVb, vb, krs, min(FB, T));
    __syncthreads();
    const int rl0 = w * 16 + g, rl1 = rl0 + 8, r0 = q0 + rl0, r1 = q0 + rl1;
    const float L0 = sL[rl0], L1 = sL[rl1], D0 = sD[rl0], D1 = sD[rl1];
    float acc[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
    const int nkt = min(T - 1, q0 + FB - 1) / FB + 1;
    Prefetch<HS> pf;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FB, k1 = k0 + FB;
        const bool more = kt + 1 < nkt;
        bf16 *sK = sKb + (kt & 1) * FB * LDS, *sV = sVb + (kt & 1) * FB * LDS;
        if (more) pf.fetch(kb + (int64_t)k1 * krs, krs, min(FB, T - k1));
        const bool mask = k0 + FB - 1 > q0 + w * 16 || k0 + FB > T;
        float s[8][4];
        scores<HS>(s, sQ, w * 16, sK);
        if (more) {
            pf.store(sKb + ((kt + 1) & 1) * FB * LDS);
            pf.fetch(vb + (int64_t)k1 * krs, krs, min(FB, T - k1));
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = ex2(fmaf(s[j][e], sl2, -(e < 2 ? L0 : L1)));
                if (mask) {
                    int key = k0 + j * 8 + 2 * t + (e & 1), row = e < 2 ? r0 : r1;
                    if (key > row || key >= T) p = 0.f;
                }
                s[j][e] = p;
            }
        float dp[8][4];
        scores<HS>(dp, sO, w * 16, sV);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            dp[j][0] = s[j][0] * (dp[j][0] - D0); dp[j][1] = s[j][1] * (dp[j][1] - D0);
            dp[j][2] = s[j][2] * (dp[j][2] - D1); dp[j][3] = s[j][3] * (dp[j][3] - D1);
        }
        if (more) pf.store(sVb + ((kt + 1) & 1) * FB * LDS);
        uint32_t da[4][4];
        to_frags(da, dp);
        accum_pv<HS>(acc, da, sK);
        __syncthreads(); /* the next tile is in; this one's buffers are free */
    }
    float *ob = dq + qoff - (int64_t)q0 * qrs;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        if (r0 < T) *(float2 *)(ob + (int64_t)r0 * qrs + d * 8 + 2 * t) = make_float2(acc[d][0] * scale, acc[d][1] * scale);
        if (r1 < T) *(float2 *)(ob + (int64_t)r1 * qrs + d * 8 + 2 * t) = make_float2(acc[d][2] * scale, acc[d][3] * scale);
    }
#endif
}

/* dK, dV for one (key tile, KV head, batch): loops over the group's query
 * heads and the query tiles from the diagonal on. Warp w owns keys
 * k0 + 16w .. +15; its score blocks are S^T (keys x queries). */
template <int HS>
__global__ void __launch_bounds__(FTHREADS) k_flash_bwd_dkv(float *dk, float *dv, bf16 *dv16, const float *dout,
                                                            const float *lse, const float *D, const float *q,
                                                            const float *k, const float *v, int T, int NH, int NKV,
                                                            float sl2, float scale) {
#if __CUDA_ARCH__ >= 800
    constexpr int LDS = FL<HS>::LDS, ND = HS / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    /* query-side tiles double-buffered where the registers allow (HS 64):
     * the next (head, query tile)'s Q, dO, lse and D are fetched while this
     * one is multiplied */
    constexpr bool PF = HS <= 64;
    constexpr int NB = PF ? 2 : 1;
    bf16 *sK = (bf16 *)smem, *sV = sK + FB * LDS, *sQb = sV + FB * LDS, *sOb = sQb + NB * FB * LDS;
    float *sLb = (float *)(sOb + NB * FB * LDS), *sDb = sLb + NB * FB;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, G = NH / NKV, k0 = kt * FB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = (int64_t)NKV * HS;
    const int64_t koff = ((int64_t)b * T + k0) * krs + (int64_t)hk * HS;
    const int nqt = (T + FB - 1) / FB, per = nqt - kt, nit = G * per; /* (head, query tile) pairs */
    /* iteration i: head hk*G + i/per, query tile kt + i%per */
    auto qoff_of = [&](int i) {
        return ((int64_t)b * T + (int64_t)(kt + i % per) * FB) * qrs + (int64_t)(hk * G + i / per) * HS;
    };
    auto stats_of = [&](int i) { return ((int64_t)b * NH + hk * G + i / per) * T; };
    load_tile<HS>(sK, k + koff, krs, min(FB, T - k0));
    load_tile<HS>(sV, v + koff, krs, min(FB, T - k0));
    load_tile<HS>(sQb, q + qoff_of(0), qrs, min(FB, T - k0));
    load_tile<HS>(sOb, dout + qoff_of(0), qrs, min(FB, T - k0));
    load_rowstats(sLb, sDb, lse + stats_of(0), D + stats_of(0), k0, T);
    __syncthreads();
    const int j0 = k0 + w * 16 + g, j1 = j0 + 8; /* key rows of this thread */
    float ak[ND][4], av[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++) {
        ak[d][0] = ak[d][1] = ak[d][2] = ak[d][3] = 0.f;
        av[d][0] = av[d][1] = av[d][2] = av[d][3] = 0.f;
    }
    for (int it = 0; it < nit; it++) {
        const int qt = kt + it % per, q0 = qt * FB, cur = PF ? (it & 1) : 0, nxt = PF ? (cur ^ 1) : 0;
        const bool more = it + 1 < nit;
        const int n0 = (kt + (it + 1) % per) * FB; /* next iteration's first query */
        bf16 *sQ = sQb + cur * FB * LDS, *sO = sOb + cur * FB * LDS;
        const float *sL = sLb + cur * FB, *sD = sDb + cur * FB;
        Prefetch<PF ? HS : 16> pf;
        float nl = 0.f, nd = 0.f; /* the next lse, D rows (threads < FB) */
        if constexpr (PF)
            if (more) pf.fetch(q + qoff_of(it + 1), qrs, min(FB, T - n0));
        const bool mask = qt == kt || q0 + FB > T;
        float s[8][4];
        scores<HS>(s, sK, w * 16, sQ); /* S^T: rows keys, cols queries */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int ql = j * 8 + 2 * t + (e & 1);
                float p = ex2(fmaf(s[j][e], sl2, -sL[ql]));
                if (mask) {
                    int key = e < 2 ? j0 : j1;
                    if (key > q0 + ql || q0 + ql >= T) p = 0.f;
                }
                s[j][e] = p;
            }
        if constexpr (PF)
            if (more) {
                pf.store(sQb + nxt * FB * LDS);
                pf.fetch(dout + qoff_of(it + 1), qrs, min(FB, T - n0));
                if (threadIdx.x < FB && n0 + (int)threadIdx.x < T) {
                    nl = lse[stats_of(it + 1) + n0 + threadIdx.x] * LOG2E;
                    nd = D[stats_of(it + 1) + n0 + threadIdx.x];
                }
            }
        uint32_t pa[4][4];
        to_frags(pa, s);
        accum_pv<HS>(av, pa, sO); /* dV += P^T dO */
        float dp[8][4];
        scores<HS>(dp, sV, w * 16, sO); /* dP^T = V dO^T */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[j][e] = s[j][e] * (dp[j][e] - sD[j * 8 + 2 * t + (e & 1)]);
        to_frags(pa, dp);
        accum_pv<HS>(ak, pa, sQ); /* dK += dS^T Q */
        if constexpr (PF) {
            if (more) {
                pf.store(sOb + nxt * FB * LDS);
                if (threadIdx.x < FB) {
                    sLb[nxt * FB + threadIdx.x] = nl;
                    sDb[nxt * FB + threadIdx.x] = nd;
                }
            }
            __syncthreads(); /* the next tiles are in; this iteration's buffers are free */
        } else if (more) {
            __syncthreads();
            load_tile<HS>(sQb, q + qoff_of(it + 1), qrs, min(FB, T - n0));
            load_tile<HS>(sOb, dout + qoff_of(it + 1), qrs, min(FB, T - n0));
            load_rowstats(sLb, sDb, lse + stats_of(it + 1), D + stats_of(it + 1), n0, T);
            __syncthreads();
        }
    }
#pragma unroll
    for (int d = 0; d < ND; d++) {
        int64_t o0 = koff + (int64_t)(w * 16 + g) * krs + d * 8 + 2 * t, o1 = o0 + 8 * krs;
        if (j0 < T) {
            *(float2 *)(dk + o0) = make_float2(ak[d][0] * scale, ak[d][1] * scale);
            *(float2 *)(dv + o0) = make_float2(av[d][0], av[d][1]);
        }
        if (j1 < T) {
            *(float2 *)(dk + o1) = make_float2(ak[d][2] * scale, ak[d][3] * scale);
            *(float2 *)(dv + o1) = make_float2(av[d][2], av[d][3]);
        }
        if (dv16 && j0 < T) *(uint32_t *)(dv16 + o0) = pack_bf16(av[d][0], av[d][1]);
        if (dv16 && j1 < T) *(uint32_t *)(dv16 + o1) = pack_bf16(av[d][2], av[d][3]);
    }
#endif
}

/* ------------------------------------------------------------ host side */

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

int flash_ok(smj_cuda *c, int Tq, int HS, int64_t kv_bstride, const void *p0, const void *p1, const void *p2,
             const void *p3) {
    return c->cc >= 80 && Tq >= 16 && (HS == 64 || HS == 128) && kv_bstride % 4 == 0 && al16(p0) && al16(p1) &&
           al16(p2) && al16(p3);
}

static size_t fl_smem(int HS, int tiles) { return (size_t)tiles * FB * (HS + 8) * sizeof(bf16) + 2 * FB * sizeof(float); }

/* bf16 q, k, v for the forward: the kept copies where ops wrote them
 * (rope_fwd writes q's and k's), else casts into the scratch buffer, k and
 * v compacted to batch stride Tk·NKV·HS. */
void flash_fwd(smj_cuda *c, float *out, bf16 *out16, float *lse, const float *q, const float *k, const float *v,
               int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    const int BQ = HS <= 64 ? 2 * FB : FB;
    dim3 grid((unsigned)((Tq + BQ - 1) / BQ), (unsigned)NH, (unsigned)B);
    size_t sm = (size_t)(BQ + 4 * FB) * (HS + 8) * sizeof(bf16);
    float sl2 = scale * LOG2E;
    int64_t nq = (int64_t)B * Tq * NH * HS, nkv = (int64_t)Tk * NKV * HS, oq = (nq + 63) / 64 * 64,
            okv = (B * nkv + 63) / 64 * 64;
    prof_phase(c, "attention_fwd: bf16 casts");
    const bf16 *qh = kept_copy(c, q, nq), *kh = NULL, *vh = NULL;
    if (kv_bstride == nkv || B == 1) {
        kh = kept_copy(c, k, B * nkv);
        vh = kept_copy(c, v, B * nkv);
    }
    bf16 *sc = (!qh || !kh || !vh) ? (bf16 *)scratch(c, sizeof(bf16) * (size_t)(oq + 2 * okv)) : NULL;
    if (!qh) { if (!sc) return; to_bf16(c, sc, q, nq, 0, 1); qh = sc; }
    if (!kh) { if (!sc) return; to_bf16(c, sc + oq, k, nkv, kv_bstride, B); kh = sc + oq; }
    if (!vh) { if (!sc) return; to_bf16(c, sc + oq + okv, v, nkv, kv_bstride, B); vh = sc + oq + okv; }
    prof_phase(c, "attention_fwd (flash)");
#define F(H)                                                                                                   \
    if (smem_ok(c, (const void *)k_flash_fwd<H>, sm)) {                                                        \
        k_flash_fwd<H><<<grid, FTHREADS, sm, c->stream>>>(out, out16, lse, qh, kh, vh, Tq, Tk, NH, NKV, nkv, sl2); \
        LAUNCHED(c);                                                                                           \
    }
    if (HS == 64) { F(64) } else { F(128) }
#undef F
}

void flash_bwd(smj_cuda *c, float *dq, float *dk, float *dv, bf16 *dv16, const float *dout, const float *D,
               const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int NKV, int HS,
               float scale) {
    dim3 gq((unsigned)((T + FB - 1) / FB), (unsigned)NH, (unsigned)B);
    dim3 gk((unsigned)((T + FB - 1) / FB), (unsigned)NKV, (unsigned)B);
    /* dQ: Q, dO and two K, V buffers; dK dV: K, V and Q, dO (two of each at HS 64) */
    size_t sq = fl_smem(HS, 6), skv = HS <= 64 ? fl_smem(HS, 6) + 2 * FB * sizeof(float) : fl_smem(HS, 4);
    float sl2 = scale * LOG2E;
#define F(H)                                                                                                        \
    if (smem_ok(c, (const void *)k_flash_bwd_dq<H>, sq) && smem_ok(c, (const void *)k_flash_bwd_dkv<H>, skv)) {     \
        prof_phase(c, "attn bwd: flash dQ");                                                                        \
        k_flash_bwd_dq<H><<<gq, FTHREADS, sq, c->stream>>>(dq, dout, lse, D, q, k, v, T, NH, NKV, sl2, scale);     \
        LAUNCHED(c);                                                                                                \
        prof_phase(c, "attn bwd: flash dK dV");                                                                     \
        k_flash_bwd_dkv<H><<<gk, FTHREADS, skv, c->stream>>>(dk, dv, dv16, dout, lse, D, q, k, v, T, NH, NKV, sl2,    \
                                                             scale);                                                \
        LAUNCHED(c);                                                                                               \
    }
    if (HS == 64) { F(64) } else { F(128) }
#undef F
}
