/* flash.cuh — the device helpers both flash-attention files share
 * (flash.cu: mma.sync kernels for sm_80+, and flash_sm90.cu: wgmma kernels
 * for Hopper): mma.sync and ldmatrix wrappers, fragment conversions,
 * cp.async loads, the online-softmax tile and the forward's epilogue.
 *
 * mma fragment layout (PTX ISA, m16n8k16): lane = 4g + t;
 *   A (16x16): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
 *   B (16x8, "col"): b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
 *   C (16x8): c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
 * so two adjacent C tiles of a score row block, rounded to bf16, are the A
 * fragment of the next product (P·V) without a trip through shared memory.
 * A wgmma accumulator (m64nN) has the same layout per warp (warp w of the
 * warpgroup owns rows 16w..16w+15), so the helpers serve both. */
#ifndef SMJ_CUDA_FLASH_CUH
#define SMJ_CUDA_FLASH_CUH
#include "cuda_common.cuh"
#define FB 64       /* queries and keys per tile */
#define FTHREADS 128 /* 4 warps */
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
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

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

/* s = A1 · Y1^T and dp = A2 · Y2^T: two 16x64 score blocks of a warp whose
 * A fragments (16 rows, HS cols) are in registers, Y1 and Y2 64-row tiles
 * in shared memory (the backward's S and dP, or S^T and dP^T). */
template <int HS>
__device__ __forceinline__ void scores2(float s[8][4], float dp[8][4], const uint32_t a1[][4],
                                        const uint32_t a2[][4], const bf16 *y1, const bf16 *y2) {
    constexpr int LDS = FL<HS>::LDS;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++)
#pragma unroll
        for (int j2 = 0; j2 < 4; j2++) {
            uint32_t b1[4], b2[4];
            frag_b_nk<LDS>(b1, y1, j2 * 16, kk * 16);
            frag_b_nk<LDS>(b2, y2, j2 * 16, kk * 16);
            mma16816(s[2 * j2], a1[kk], b1[0], b1[1]);
            mma16816(s[2 * j2 + 1], a1[kk], b1[2], b1[3]);
            mma16816(dp[2 * j2], a2[kk], b2[0], b2[1]);
            mma16816(dp[2 * j2 + 1], a2[kk], b2[2], b2[3]);
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

/* ------------------------------------------------------------ loads */

/* (cp16, cp_commit, cp_wait: cuda_common.cuh) */
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

/* Online softmax of a warp's 16 x 8NJ score block s (rows r0 = its first row
 * + g and r0 + 8, keys k0..k0 + 8NJ - 1; with MASK, keys past a row's position
 * or Tk are -inf): the raw scores' maxima, the running maxima m in the
 * scaled log2 domain (sl2 > 0), the sums l and output rows o (ND n8 tiles)
 * rescaled (unless RESCALE is false: the factors for rows r0, r0 + 8 are
 * returned), then s becomes the probabilities' bf16 A fragments pa. A row
 * with no visible key yet keeps max -inf: scale factors 1, p 0. MASK is a
 * template argument so that tiles below the diagonal carry no masking
 * code (a runtime flag was if-converted into every element's path). */
/* (FRAGS false: s is left as the probabilities, pa unwritten; the caller
 * converts with to_frags once the registers of pa are free) */
template <int ND, bool RESCALE, bool MASK, int NJ = 8, bool FRAGS = true> /* s: [NJ][4] (NJ n8 key tiles), pa: [NJ / 2][4] */
__device__ __forceinline__ float2 softmax_tile(float (*s)[4], float o[ND][4], float m[2], float l[2],
                                               uint32_t (*pa)[4], int r0, int k0, int off, int Tk, float sl2) {
    const int t = threadIdx.x & 3, r1 = r0 + 8;
    float mx0 = -INFINITY, mx1 = -INFINITY;
    /* (MASK) each row's last visible key less the thread's first key: each
     * element then compares a constant offset against it */
    const int lim0 = min(off + r0, Tk - 1) - k0 - 2 * t, lim1 = min(off + r1, Tk - 1) - k0 - 2 * t;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float x = s[j][e];
            if (MASK && j * 8 + (e & 1) > (e < 2 ? lim0 : lim1)) x = -INFINITY;
            s[j][e] = x;
            if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
        }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    mx0 = fmaxf(m[0], mx0 * sl2);
    mx1 = fmaxf(m[1], mx1 * sl2);
    const float b0 = mx0 == -INFINITY ? 0.f : mx0, b1 = mx1 == -INFINITY ? 0.f : mx1;
    const float c0 = ex2_sfu(m[0] - b0), c1 = ex2_sfu(m[1] - b1);
    l[0] *= c0;
    l[1] *= c1;
    if (RESCALE)
#pragma unroll
        for (int d = 0; d < ND; d++) {
            o[d][0] *= c0; o[d][1] *= c0; o[d][2] *= c1; o[d][3] *= c1;
        }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        s[j][0] = ex2_sfu(fmaf(s[j][0], sl2, -b0)); s[j][1] = ex2_sfu(fmaf(s[j][1], sl2, -b0));
        s[j][2] = ex2_sfu(fmaf(s[j][2], sl2, -b1)); s[j][3] = ex2_sfu(fmaf(s[j][3], sl2, -b1));
        l[0] += s[j][0] + s[j][1];
        l[1] += s[j][2] + s[j][3];
    }
    m[0] = mx0;
    m[1] = mx1;
#pragma unroll
    for (int q = 0; q < NJ / 8; q++)
        if (FRAGS) to_frags(pa + 4 * q, s + 8 * q);
    return make_float2(c0, c1); /* (RESCALE false: the caller rescales o by these) */
}

/* The forward's rows r0 and r0 + 8 (those in [0, Tq)): out = o / l (and
 * its bf16 copy when ob16), lse = (m + log2 l) ln 2; ob, ob16 at the
 * block's (batch, head), rows qrs apart. */
template <int ND>
__device__ __forceinline__ void write_rows(float *ob, bf16 *ob16, float *lb, float o[ND][4], const float m[2],
                                           const float l[2], int r0, int Tq, int64_t qrs) {
    const int t = threadIdx.x & 3, r1 = r0 + 8;
    float l0 = l[0], l1 = l[1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        float2 v0 = make_float2(o[d][0] * i0, o[d][1] * i0), v1 = make_float2(o[d][2] * i1, o[d][3] * i1);
        int64_t e0 = (int64_t)r0 * qrs + d * 8 + 2 * t, e1 = (int64_t)r1 * qrs + d * 8 + 2 * t;
        if (ob && (unsigned)r0 < (unsigned)Tq) *(float2 *)(ob + e0) = v0;
        if (ob && (unsigned)r1 < (unsigned)Tq) *(float2 *)(ob + e1) = v1;
        if (ob16 && (unsigned)r0 < (unsigned)Tq) *(uint32_t *)(ob16 + e0) = pack_bf16(v0.x, v0.y);
        if (ob16 && (unsigned)r1 < (unsigned)Tq) *(uint32_t *)(ob16 + e1) = pack_bf16(v1.x, v1.y);
    }
    if (t == 0 && (unsigned)r0 < (unsigned)Tq) lb[r0] = (m[0] + log2f(l0)) * LN2;
    if (t == 0 && (unsigned)r1 < (unsigned)Tq) lb[r1] = (m[1] + log2f(l1)) * LN2;
}

/* 64 floats of a [.., T] statistics row from row0 -> shared (rows >= T: 0),
 * asynchronously (row0 % 4 == 0, rows 16-byte aligned). */
__device__ __forceinline__ void cp_stats(float *dst, const float *src, int row0, int T) {
    const int e = threadIdx.x; /* blocks have at least FB / 4 threads */
    if (e < FB / 4) {
        int n = T - row0 - 4 * e;
        cp16(dst + 4 * e, src + (n > 0 ? row0 + 4 * e : 0), n >= 4 ? 16 : n > 0 ? 4 * n : 0);
    }
}

/* ------------------------------------------------------------ backward */

/* dS = P (dP - D), P = 2^(S sl2 - L2) (0 past a row's position or T with
 * MASK), into dp: a warp's 16x64 block (rows r0, r0 + 8; keys from k0) in
 * the dQ kernels, the C layout as [32]. */
template <bool MASK>
__device__ __forceinline__ void dq_ds(const float s[32], float dp[32], float L0, float L1, float D0, float D1, int k0,
                                      int r0, int T, float sl2) {
    const int t = threadIdx.x & 3;
    /* (MASK) each row's last visible key less the thread's first key */
    const int lim0 = min(r0, T - 1) - k0 - 2 * t, lim1 = min(r0 + 8, T - 1) - k0 - 2 * t;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const int e = i & 3;
        float p = ex2_sfu(fmaf(s[i], sl2, -(e < 2 ? L0 : L1)));
        if (MASK && (i >> 2) * 8 + (e & 1) > (e < 2 ? lim0 : lim1)) p = 0.f;
        dp[i] = p * (dp[i] - (e < 2 ? D0 : D1));
    }
}

/* P^T = 2^(S^T sl2 - L2) (0 where a key is past the query or the query
 * past T with MASK) into s and dS^T = P^T (dP^T - D) into dp: a warp's 16
 * keys j0, j0 + 8 against the 64 queries from q0, whose statistics are at
 * cL, cD (shared memory), in the dK/dV kernels. */
template <bool MASK>
__device__ __forceinline__ void dkv_ds(float s[32], float dp[32], const float *cL, const float *cD, int j0, int q0,
                                       int T, float sl2) {
    const int t = threadIdx.x & 3;
    /* (MASK) the query offsets from the thread's first, q0 + 2t: visible
     * from each key's own (lo) up to T (hi) */
    const int lo0 = j0 - q0 - 2 * t, lo1 = lo0 + 8, hi = T - q0 - 2 * t;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float2 l2 = *(const float2 *)(cL + j * 8 + 2 * t), dd = *(const float2 *)(cD + j * 8 + 2 * t);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int x = 4 * j + e;
            float p = ex2_sfu(fmaf(s[x], sl2, -((e & 1) ? l2.y : l2.x)));
            if (MASK) {
                const int c = j * 8 + (e & 1);
                if (c < (e < 2 ? lo0 : lo1) || c >= hi) p = 0.f;
            }
            s[x] = p;
            dp[x] = p * (dp[x] - ((e & 1) ? dd.y : dd.x));
        }
    }
}

#endif
