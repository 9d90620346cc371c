/* flash.cu — tensor-core flash attention (causal, GQA), forward and
 * backward, for the CUDA backend's bf16 mode. O(T) memory: score tiles live
 * in registers, never in device memory.
 *
 * Layouts are the op table's (ops.h): q/out [B,Tq,NH,HS], k/v [B,Tk,NKV,HS]
 * (batch stride kv_bstride), lse [B,NH,Tq]; fp32 in device memory. The
 * kernels read bf16 copies: the kept copies where ops wrote them (rope_fwd
 * writes q's and k's in bf16 mode), else casts into the scratch buffer made
 * by the host side below. Tiles arrive by cp.async into shared memory and
 * are multiplied with mma.sync m16n8k16 (bf16 in, fp32 accumulate; sm_80+).
 *
 * Tiles of 64 keys, 4 warps; the fragment layouts are in flash.cuh.
 * Operands come from shared memory through ldmatrix (.trans where the
 * product wants the other orientation).
 *
 * forward  (one block per query tile, head, batch; the last query tiles,
 *          which see the most keys, are launched first): 128 queries per
 *          block at head size 64 (a warp owns 32 rows, so each K/V fragment
 *          feeds two products), 64 at 128; Q's fragments stay in registers;
 *          online softmax in the log2 domain (ex2.approx); key tiles past
 *          the causal diagonal are skipped, only diagonal/tail tiles are
 *          masked; out = O / l (and its bf16 copy when asked), lse saved.
 *          The next K tile loads while the scores and softmax run, the next
 *          V tile while P·V runs.
 * backward (deterministic, no atomics): k_flash_rowstats gives D =
 *          rowsum(dO o O) and lse·log2(e); one kernel per query tile for dQ
 *          (Q, dO fragments in registers; recomputes S, P, dP over its key
 *          tiles) and one per (key tile, KV head) for dK, dV that loops over
 *          the query heads of its group and the query tiles at or after the
 *          diagonal (K, V fragments in registers at head size 64):
 *            P = exp(scale S - lse), dV += P^T dO, dP = dO V^T,
 *            dS = P (dP - D), dQ = scale dS K, dK += scale dS^T Q.
 *          P and dS are rounded to bf16 as the products' A operands. The
 *          next tiles load while the current ones are multiplied; one
 *          barrier per tile.
 *
 * Hopper (a build for sm_90a, head size 64): flash_sm90.cu's wgmma kernels
 * take the same inputs (flash_sm90_ok; SMJ_CUDA_ATTN=mma keeps these).
 *
 * Head sizes 64 and 128 (flash_ok); others take the cuBLAS path.
 */
#include "flash.cuh"

/* ------------------------------------------------------------ forward */

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
    const int w = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
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
        const bool mask = k0 + FB - 1 > off + q0 + wr || k0 + FB > Tk;
        uint32_t pa[MT][4][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            if (mask) softmax_tile<ND, true, true>(s[mt], o[mt], m[mt], l[mt], pa[mt], q0 + wr + mt * 16 + g, k0, off, Tk, sl2);
            else softmax_tile<ND, true, false>(s[mt], o[mt], m[mt], l[mt], pa[mt], q0 + wr + mt * 16 + g, k0, off, Tk, sl2);
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
    const int64_t oo = (int64_t)b * Tq * qrs + (int64_t)h * HS;
    float *ob = out ? out + oo : NULL;
    bf16 *ob16 = out16 ? out16 + oo : NULL;
    float *lb = lse + ((int64_t)b * NH + h) * Tq;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) write_rows<ND>(ob, ob16, lb, o[mt], m[mt], l[mt], q0 + wr + mt * 16 + g, Tq, qrs);
#endif
}

/* ------------------------------------------------------------ backward */

/* Row statistics for the backward, [B,NH,Tp] (T rounded up to 4, so each
 * row starts 16-byte aligned): D = rowsum(dO o O) and lse in the log2
 * domain; d16 (or NULL): dO's bf16 copy, written on the way. A warp per 32
 * rows t0.. of one (batch, head): HS / 4 lanes per row (HS 64 or 128:
 * flash_ok), four values a lane, 16-byte loads, every row's loads issued
 * before the first sum; then lane l writes row t0 + l's D and L2 (lse read
 * and D, L2 written 128 contiguous bytes a warp; a warp per two rows of
 * [B,T,NH] before: 53 -> 37 us a Llama 110M layer at T = 1024, B = 32 on
 * an H200, the same bits). dO and O: fp32, or their exact bf16 copies (the
 * same values). */
template <int HS, typename DO, typename O>
__global__ void __launch_bounds__(256) k_flash_rowstats(float *D, float *L2, bf16 *d16, const DO *dout, const O *out,
                                                        const float *lse, int B, int T, int Tp, int NH) {
    constexpr int LPR = HS / 4, RPP = 32 / LPR, NP = 32 / RPP; /* lanes a row, rows a pass, passes */
    const int64_t wi = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5, tiles = (T + 31) / 32;
    if (wi >= (int64_t)B * NH * tiles) return;
    const int lane = threadIdx.x & 31, i = lane % LPR, sub = lane / LPR;
    const int64_t bh = wi / tiles; /* b * NH + h */
    const int t0 = (int)(wi % tiles) * 32, h = (int)(bh % NH), b = (int)(bh / NH);
    float4 x[NP], y[NP];
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const int t = t0 + RPP * k + sub;
        const int64_t row = ((int64_t)b * T + (t < T ? t : 0)) * NH + h;
        x[k] = ld4(dout + row * HS, i);
        y[k] = ld4(out + row * HS, i);
    }
    float mine = 0.f;
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const int t = t0 + RPP * k + sub;
        /* explicit roundings: the same in every instantiation (dO, O as
         * fp32 or their exact copies) */
        const float4 a = x[k], o = y[k];
        float s = __fmaf_rn(a.w, o.w, __fmaf_rn(a.z, o.z, __fmaf_rn(a.y, o.y, __fmul_rn(a.x, o.x))));
        if (d16 && t < T) st_bf16x4(d16 + (((int64_t)b * T + t) * NH + h) * HS + 4 * i, x[k]);
#pragma unroll
        for (int o = LPR / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        /* row t0 + RPP k + sub's sum, in its LPR lanes: lane RPP k + sub keeps it */
        s = __shfl_sync(0xffffffffu, s, (lane % RPP) * LPR);
        if (lane / RPP == k) mine = s;
    }
    const int t = t0 + lane;
    if (t >= T) return;
    D[bh * Tp + t] = mine;
    L2[bh * Tp + t] = lse[bh * T + t] * LOG2E;
}


/* dQ for one (query tile, head, batch) over bf16 q, k, v, dO: Q and dO
 * fragments stay in registers; the next K and V tiles arrive by cp.async
 * while this one is multiplied. */
template <int HS>
__global__ void __launch_bounds__(FTHREADS, HS <= 64 ? 3 : 1)
    k_flash_bwd_dq(float *dq, const bf16 *dout, const float *L2, const float *D, const bf16 *q, const bf16 *k,
                   const bf16 *v, int T, int Tp, int NH, int NKV, float sl2, float scale, int64_t gqs) {
#if __CUDA_ARCH__ >= 800
    constexpr int LDS = FL<HS>::LDS, ND = HS / 8, QF = HS / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sO = sQ + FB * LDS, *sKb = sO + FB * LDS, *sVb = sKb + 2 * FB * LDS;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (NH / NKV), q0 = qt * FB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = (int64_t)NKV * HS;
    const int64_t qoff = ((int64_t)b * T + q0) * qrs + (int64_t)h * HS;
    const bf16 *kb = k + (int64_t)b * T * krs + (int64_t)hk * HS;
    const bf16 *vb = v + (int64_t)b * T * krs + (int64_t)hk * HS;
    cp_tile<FB, HS>(sQ, q + qoff, qrs, min(FB, T - q0));
    cp_tile<FB, HS>(sO, dout + qoff, qrs, min(FB, T - q0));
    cp_tile<FB, HS>(sKb, kb, krs, min(FB, T));
    cp_tile<FB, HS>(sVb, vb, krs, min(FB, T));
    cp_commit();
    const int r0 = q0 + w * 16 + g, r1 = r0 + 8;
    const int64_t st = ((int64_t)b * NH + h) * Tp;
    const float L0 = r0 < T ? L2[st + r0] : 0.f, L1 = r1 < T ? L2[st + r1] : 0.f;
    const float D0 = r0 < T ? D[st + r0] : 0.f, D1 = r1 < T ? D[st + r1] : 0.f;
    cp_wait<0>();
    __syncthreads();
    uint32_t qf[QF][4], of[QF][4];
#pragma unroll
    for (int kk = 0; kk < QF; kk++) {
        frag_a<LDS>(qf[kk], sQ, w * 16, kk * 16);
        frag_a<LDS>(of[kk], sO, w * 16, kk * 16);
    }
    float acc[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
    const int nkt = min(T - 1, q0 + FB - 1) / FB + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FB, k1 = k0 + FB;
        const bf16 *sK = sKb + (kt & 1) * FB * LDS, *sV = sVb + (kt & 1) * FB * LDS;
        if (kt + 1 < nkt) {
            cp_tile<FB, HS>(sKb + ((kt + 1) & 1) * FB * LDS, kb + (int64_t)k1 * krs, krs, min(FB, T - k1));
            cp_tile<FB, HS>(sVb + ((kt + 1) & 1) * FB * LDS, vb + (int64_t)k1 * krs, krs, min(FB, T - k1));
        }
        cp_commit();
        float s[8][4], dp[8][4];
        scores2<HS>(s, dp, qf, of, sK, sV); /* S = Q K^T, dP = dO V^T */
        if (k0 + FB - 1 > q0 + w * 16 || k0 + FB > T) /* dS; masked on the diagonal and at the end */
            dq_ds<true>(&s[0][0], &dp[0][0], L0, L1, D0, D1, k0, r0, T, sl2);
        else
            dq_ds<false>(&s[0][0], &dp[0][0], L0, L1, D0, D1, k0, r0, T, sl2);
        uint32_t da[4][4];
        to_frags(da, dp);
        accum_pv<HS>(acc, da, sK); /* dQ += dS K */
        cp_wait<0>();
        __syncthreads(); /* the next tiles are in; this one's buffers are free */
    }
    float *ob = dq + (int64_t)b * T * gqs + (int64_t)h * HS; /* dq's rows gqs apart */
#pragma unroll
    for (int d = 0; d < ND; d++) {
        if (r0 < T) *(float2 *)(ob + (int64_t)r0 * gqs + d * 8 + 2 * t) = make_float2(acc[d][0] * scale, acc[d][1] * scale);
        if (r1 < T) *(float2 *)(ob + (int64_t)r1 * gqs + d * 8 + 2 * t) = make_float2(acc[d][2] * scale, acc[d][3] * scale);
    }
#endif
}

/* dK, dV for one (key tile, KV head, batch) over bf16 inputs: loops over
 * the group's query heads and the query tiles from the diagonal on; the
 * next (head, query tile)'s Q, dO and row statistics arrive by cp.async
 * while this one is multiplied. Warp w owns keys k0 + 16w .. +15; its score
 * blocks are S^T (keys x queries); K's and V's fragments stay in registers
 * at head size 64. */
template <int HS>
__global__ void __launch_bounds__(FTHREADS) k_flash_bwd_dkv(float *dk, float *dv, bf16 *dv16, const bf16 *dout,
                                                            const float *L2, const float *D, const bf16 *q,
                                                            const bf16 *k, const bf16 *v, int T, int Tp, int NH,
                                                            int NKV, float sl2, float scale, int64_t gks) {
#if __CUDA_ARCH__ >= 800
    constexpr int LDS = FL<HS>::LDS, ND = HS / 8, QF = HS / 16;
    constexpr bool KREG = HS <= 64;
    constexpr int KF = KREG ? QF : 1;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = (bf16 *)smem, *sV = sK + FB * LDS, *sQb = sV + FB * LDS, *sOb = sQb + 2 * FB * LDS;
    float *sLb = (float *)(sOb + 2 * FB * LDS), *sDb = sLb + 2 * FB;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, G = NH / NKV, k0 = kt * FB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = (int64_t)NKV * HS;
    const int64_t koff = ((int64_t)b * T + k0) * krs + (int64_t)hk * HS;
    const int nqt = (T + FB - 1) / FB, per = nqt - kt, nit = G * per; /* (head, query tile) pairs */
    /* iteration i: head hk*G + i/per, query tile kt + i%per; its loads */
    auto fetch = [&](int i, int buf) {
        int h = hk * G + i / per, qq = (kt + i % per) * FB;
        int64_t qoff = ((int64_t)b * T + qq) * qrs + (int64_t)h * HS, st = ((int64_t)b * NH + h) * Tp;
        cp_tile<FB, HS>(sQb + buf * FB * LDS, q + qoff, qrs, min(FB, T - qq));
        cp_tile<FB, HS>(sOb + buf * FB * LDS, dout + qoff, qrs, min(FB, T - qq));
        cp_stats(sLb + buf * FB, L2 + st, qq, T);
        cp_stats(sDb + buf * FB, D + st, qq, T);
    };
    cp_tile<FB, HS>(sK, k + koff, krs, min(FB, T - k0));
    cp_tile<FB, HS>(sV, v + koff, krs, min(FB, T - k0));
    fetch(0, 0);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
    const int j0 = k0 + w * 16 + g, j1 = j0 + 8; /* key rows of this thread */
    uint32_t kf[KF][4], vf[KF][4];
    if constexpr (KREG) {
#pragma unroll
        for (int kk = 0; kk < QF; kk++) {
            frag_a<LDS>(kf[kk], sK, w * 16, kk * 16);
            frag_a<LDS>(vf[kk], sV, w * 16, kk * 16);
        }
    }
    float ak[ND][4], av[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++) {
        ak[d][0] = ak[d][1] = ak[d][2] = ak[d][3] = 0.f;
        av[d][0] = av[d][1] = av[d][2] = av[d][3] = 0.f;
    }
    for (int it = 0; it < nit; it++) {
        const int cur = it & 1, q0 = (kt + it % per) * FB;
        if (it + 1 < nit) fetch(it + 1, cur ^ 1);
        cp_commit();
        const bf16 *sQ = sQb + cur * FB * LDS, *sO = sOb + cur * FB * LDS;
        const float *sL = sLb + cur * FB, *sD = sDb + cur * FB;
        float s[8][4], dp[8][4];
        if constexpr (KREG) {
            scores2<HS>(s, dp, kf, vf, sQ, sO); /* S^T = K Q^T, dP^T = V dO^T */
        } else {
            scores<HS>(s, sK, w * 16, sQ);
            scores<HS>(dp, sV, w * 16, sO);
        }
        if (q0 == k0 || q0 + FB > T) /* P^T, dS^T; masked on the diagonal and at the end */
            dkv_ds<true>(&s[0][0], &dp[0][0], sL, sD, j0, q0, T, sl2);
        else
            dkv_ds<false>(&s[0][0], &dp[0][0], sL, sD, j0, q0, T, sl2);
        uint32_t pa[4][4];
        to_frags(pa, s);
        accum_pv<HS>(av, pa, sO); /* dV += P^T dO */
        to_frags(pa, dp);
        accum_pv<HS>(ak, pa, sQ); /* dK += dS^T Q */
        cp_wait<0>();
        __syncthreads(); /* the next tiles are in; this iteration's buffers are free */
    }
#pragma unroll
    for (int d = 0; d < ND; d++) {
        /* dk's, dv's rows gks apart (dv16: only when they are dense) */
        int64_t o0 = ((int64_t)b * T + k0 + w * 16 + g) * gks + (int64_t)hk * HS + d * 8 + 2 * t, o1 = o0 + 8 * gks;
        if (j0 < T) {
            *(float2 *)(dk + o0) = make_float2(ak[d][0] * scale, ak[d][1] * scale);
            if (dv) *(float2 *)(dv + o0) = make_float2(av[d][0], av[d][1]);
        }
        if (j1 < T) {
            *(float2 *)(dk + o1) = make_float2(ak[d][2] * scale, ak[d][3] * scale);
            if (dv) *(float2 *)(dv + o1) = make_float2(av[d][2], av[d][3]);
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

/* q, k, v as the columns of one fused tensor [rows, QD + 2 KD] (rows qrs =
 * krs apart, k = q + QD, v = k + KD, one batch stride) with a bf16 copy of
 * the whole tensor (a product wrote it; a bound saved tensor): that copy,
 * whose strided rows Hopper's kernels read; else NULL. */
static const bf16 *fused_copy(smj_cuda *c, const float *q, const float *k, const float *v, int64_t rows, int64_t QD,
                              int64_t KD, int64_t qrs, int64_t krs) {
    if (qrs != krs || qrs != QD + 2 * KD || k != q + QD || v != k + KD || qrs % 8) return NULL;
    const bf16 *f = exact_copy(c, q, rows * qrs);
    if (!f) f = kept_copy(c, q, rows * qrs);
    return f && al16(f) ? f : NULL;
}

/* bf16 q, k, v for the forward: the kept copies where ops wrote them
 * (rope_fwd writes q's and k's), else casts into the scratch buffer, k and
 * v compacted to batch stride Tk·NKV·HS. */
void flash_fwd(smj_cuda *c, float *out, bf16 *out16, float *lse, const float *q, const float *k, const float *v,
               int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t qrs, int64_t krs, int64_t kv_bstride,
               float scale) {
    const int BQ = HS <= 64 ? 2 * FB : FB;
    dim3 grid((unsigned)((Tq + BQ - 1) / BQ), (unsigned)NH, (unsigned)B);
    size_t sm = (size_t)(BQ + 4 * FB) * (HS + 8) * sizeof(bf16);
    float sl2 = scale * LOG2E;
    int64_t nq = (int64_t)B * Tq * NH * HS, nkv = (int64_t)Tk * NKV * HS, oq = (nq + 63) / 64 * 64,
            okv = (B * nkv + 63) / 64 * 64;
    prof_phase(c, "attention_fwd: bf16 casts");
    const bool qs = qrs != (int64_t)NH * HS, ks = krs != (int64_t)NKV * HS;
    /* rows qrs / krs apart (column ranges of a fused buffer; then k's and
     * v's batch stride is Tk krs): Hopper's kernels read the fused tensor's
     * copy where there is one, else they are cast into dense rows */
    const bf16 *f = qs && Tq == Tk && flash_sm90_ok(c, HS)
                        ? fused_copy(c, q, k, v, (int64_t)B * Tq, (int64_t)NH * HS, (int64_t)NKV * HS, qrs, krs)
                        : NULL;
    if (f) {
        prof_phase(c, "attention_fwd (flash)");
        flash_fwd_sm90(c, out, out16, lse, f, f + NH * HS, f + (NH + NKV) * HS, B, Tq, Tk, NH, NKV, (int64_t)Tk * krs,
                       sl2, qrs, krs);
        return;
    }
    const bf16 *qh = qs ? NULL : kept_copy(c, q, nq), *kh = NULL, *vh = NULL;
    if (!ks && (kv_bstride == nkv || B == 1)) {
        kh = kept_copy(c, k, B * nkv);
        vh = kept_copy(c, v, B * nkv);
        bf16 *hv = vh ? NULL : home_of(c, v, B * nkv); /* v's cast where bf16_home says */
        if (hv) { fp32_in(c, v, B * nkv); to_bf16(c, hv, v, B * nkv, 0, 1); vh = hv; }
    }
    bf16 *sc = (!qh || !kh || !vh) ? (bf16 *)scratch(c, sizeof(bf16) * (size_t)(oq + 2 * okv)) : NULL;
    int64_t kvn = (int64_t)(B - 1) * kv_bstride + nkv; /* the range the casts read */
    if ((!qh || !kh || !vh) && !sc) return;
    if (!qh && qs) { fp32_in(c, q, ((int64_t)B * Tq - 1) * qrs + NH * HS); to_bf16(c, sc, q, NH * HS, qrs, B * Tq); qh = sc; }
    if (!qh) { fp32_in(c, q, nq); to_bf16(c, sc, q, nq, 0, 1); qh = sc; }
    if (ks) { /* (flash_strided_ok: kv_bstride == Tk krs) */
        int64_t span = ((int64_t)B * Tk - 1) * krs + NKV * HS;
        fp32_in(c, k, span);
        fp32_in(c, v, span);
        to_bf16(c, sc + oq, k, NKV * HS, krs, B * Tk);
        to_bf16(c, sc + oq + okv, v, NKV * HS, krs, B * Tk);
        kh = sc + oq;
        vh = sc + oq + okv;
    }
    if (!kh) { fp32_in(c, k, kvn); to_bf16(c, sc + oq, k, nkv, kv_bstride, B); kh = sc + oq; }
    if (!vh) { fp32_in(c, v, kvn); to_bf16(c, sc + oq + okv, v, nkv, kv_bstride, B); vh = sc + oq + okv; }
    prof_phase(c, "attention_fwd (flash)");
    if (flash_sm90_ok(c, HS)) {
        flash_fwd_sm90(c, out, out16, lse, qh, kh, vh, B, Tq, Tk, NH, NKV, nkv, sl2, (int64_t)NH * HS, (int64_t)NKV * HS);
        return;
    }
#define F(H)                                                                                                   \
    if (smem_ok(c, (const void *)k_flash_fwd<H>, sm)) {                                                        \
        k_flash_fwd<H><<<grid, FTHREADS, sm, c->stream>>>(out, out16, lse, qh, kh, vh, Tq, Tk, NH, NKV, nkv, sl2); \
        LAUNCHED(c);                                                                                           \
    }
    if (HS == 64) { F(64) } else { F(128) }
#undef F
}

/* The backward's inputs as bf16 (kept copies where valid, else casts), its
 * row statistics and, with db, the bias gradients' partial rows (one a
 * block of 64 rows), all in one scratch request: D | L2 | partials | q | k
 * | v | dO. */
void flash_bwd(smj_cuda *c, float *dq, float *dk, float *dv, bf16 *dq16, bf16 *dk16, bf16 *dv16, const float *cs,
               const float *sn, const float *dout, const float *out, const float *lse, const float *q, const float *k,
               const float *v, int B, int T, int NH, int NKV, int HS, int64_t qrs, int64_t krs, int64_t dqrs,
               int64_t dkrs, float scale, float *db) {
    int Tp = (T + 3) / 4 * 4;
    int64_t rows = (int64_t)B * T * NH, nq = rows * HS, nk = (int64_t)B * T * NKV * HS;
    int64_t orow = ((int64_t)B * NH * Tp + 63) / 64 * 64, oq = (nq + 63) / 64 * 64, ok = (nk + 63) / 64 * 64;
    const int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, prow = (int64_t)B * ((T + 63) / 64);
    const int64_t opart = db ? (prow * (QD + 2 * KD) + 63) / 64 * 64 : 0;
    char *sc = (char *)scratch(c, sizeof(float) * (2 * (size_t)orow + (size_t)opart) +
                                      sizeof(bf16) * (size_t)(2 * oq + 2 * ok));
    if (!sc) return;
    float *D = (float *)sc, *L2 = D + orow, *part = db ? L2 + orow : NULL;
    bf16 *b16 = (bf16 *)(L2 + orow + opart);
    prof_phase(c, "attn bwd: D, bf16 casts");
    const float *src[4] = {q, k, v, dout};
    const int64_t n[4] = {nq, nk, nk, nq}, at[4] = {0, oq, oq + ok, oq + 2 * ok};
    /* q, k, v rows qrs, krs apart (column ranges of a fused buffer): cast into dense rows */
    const int64_t w[4] = {(int64_t)NH * HS, (int64_t)NKV * HS, (int64_t)NKV * HS, (int64_t)NH * HS},
                  rs[4] = {qrs, krs, krs, (int64_t)NH * HS};
    const bf16 *h16[4] = {NULL, NULL, NULL, NULL};
    /* the columns of one fused q|k|v tensor with a copy: Hopper's kernels read its rows */
    int64_t iqs = w[0], iks = w[1];
    const bf16 *f = qrs != w[0] && flash_sm90_ok(c, HS) ? fused_copy(c, q, k, v, (int64_t)B * T, w[0], w[1], qrs, krs)
                                                         : NULL;
    if (f) {
        h16[0] = f, h16[1] = f + w[0], h16[2] = f + w[0] + w[1];
        iqs = iks = qrs;
    }
    for (int i = 0; i < 4; i++) {
        const bool strided = rs[i] != w[i];
        if (f && i < 3) continue;
        h16[i] = strided ? NULL : kept_copy(c, src[i], n[i]);
        if (!h16[i] && i < 3) {
            int64_t rows_bt = (int64_t)B * T;
            fp32_in(c, src[i], strided ? (rows_bt - 1) * rs[i] + w[i] : n[i]);
            if (strided) to_bf16(c, b16 + at[i], src[i], w[i], rs[i], rows_bt);
            else to_bf16(c, b16 + at[i], src[i], n[i], 0, 1);
            h16[i] = b16 + at[i];
        }
    }
    /* dO's copy, when none is kept, is written by the statistics kernel;
     * dO and O read as their exact copies where there are (dO: the
     * product's bf16 output bf16_only promised; O: a bound saved tensor) */
    bf16 *d16 = h16[3] ? NULL : b16 + at[3];
    if (d16) h16[3] = d16;
    fp32_in(c, lse, rows);
    const bf16 *o16 = exact_copy(c, out, nq), *de = exact_copy(c, dout, nq);
    if (o16 && !al16(o16)) o16 = NULL;
    if (de && !al16(de)) de = NULL;
    if (!o16) fp32_in(c, out, nq);
    if (!de) fp32_in(c, dout, nq);
#define R(H)                                                                                           \
    do {                                                                                               \
        unsigned g = blocks_for((int64_t)B * NH * ((T + 31) / 32) * 32, 256, INT32_MAX);               \
        if (de && o16) k_flash_rowstats<H><<<g, 256, 0, c->stream>>>(D, L2, d16, de, o16, lse, B, T, Tp, NH); \
        else if (de) k_flash_rowstats<H><<<g, 256, 0, c->stream>>>(D, L2, d16, de, out, lse, B, T, Tp, NH); \
        else if (o16) k_flash_rowstats<H><<<g, 256, 0, c->stream>>>(D, L2, d16, dout, o16, lse, B, T, Tp, NH); \
        else k_flash_rowstats<H><<<g, 256, 0, c->stream>>>(D, L2, d16, dout, out, lse, B, T, Tp, NH);     \
    } while (0)
    /* Hopper's dQ kernel makes the statistics itself from exact copies of
     * dO and O (with no dO copy to write: then rowstats' pass is saved) */
    const bool sm90 = flash_sm90_ok(c, HS), own = sm90 && de && o16 && !d16;
    if (!own) {
        if (HS == 64) R(64);
        else R(128);
        LAUNCHED(c);
    }
#undef R
    dim3 gq((unsigned)((T + FB - 1) / FB), (unsigned)NH, (unsigned)B);
    dim3 gk((unsigned)((T + FB - 1) / FB), (unsigned)NKV, (unsigned)B);
    /* dQ: Q, dO and two K, V buffers; dK dV: K, V, two Q, dO buffers and two L2, D rows */
    size_t sq = (size_t)6 * FB * (HS + 8) * sizeof(bf16), skv = sq + 4 * FB * sizeof(float);
    float sl2 = scale * LOG2E;
    if (sm90) {
        float *pq = part, *pk = part ? part + prow * QD : NULL, *pv = part ? pk + prow * KD : NULL;
        flash_bwd_sm90(c, dq, dk, dv, dq16, dk16, dv16, cs, sn, h16[3], L2, D, own ? o16 : NULL, lse, h16[0], h16[1],
                       h16[2], B, T, Tp, NH, NKV, sl2, scale, dqrs, dkrs, iqs, iks, pq, pk, pv);
        if (part) { /* the partial rows added in order (no atomics) */
            const float *pp[3] = {pq, pk, pv};
            const int64_t wd[3] = {QD, KD, KD}, at[3] = {0, QD, QD + KD};
            for (int i = 0; i < 3; i++) colsum_add(c, db + at[i], pp[i], (int)prow, wd[i]);
        }
        return;
    }
    /* (the mma.sync kernels write dq, dk in fp32 unrotated: callers pass
     * dq16, dk16, cs, sn only where flash_sm90_ok) */
#define F(H)                                                                                                        \
    if (smem_ok(c, (const void *)k_flash_bwd_dq<H>, sq) && smem_ok(c, (const void *)k_flash_bwd_dkv<H>, skv)) {     \
        prof_phase(c, "attn bwd: flash dQ");                                                                        \
        k_flash_bwd_dq<H><<<gq, FTHREADS, sq, c->stream>>>(dq, h16[3], L2, D, h16[0], h16[1], h16[2], T, Tp, NH,   \
                                                           NKV, sl2, scale, dqrs);                                       \
        LAUNCHED(c);                                                                                                \
        prof_phase(c, "attn bwd: flash dK dV");                                                                     \
        k_flash_bwd_dkv<H><<<gk, FTHREADS, skv, c->stream>>>(dk, dv, dv16, h16[3], L2, D, h16[0], h16[1], h16[2], T, \
                                                             Tp, NH, NKV, sl2, scale, dkrs);                            \
        LAUNCHED(c);                                                                                                \
    }
    if (HS == 64) { F(64) } else { F(128) }
#undef F
}
