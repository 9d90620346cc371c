/* flash_sm90.cu — flash attention (causal, GQA) at head size 64 with
 * Hopper's warpgroup MMA (wgmma, sm_90a): the forward and both backward
 * kernels, the default on a Hopper GPU in a build for sm_90a
 * (SMJ_CUDA_ATTN=mma selects flash.cu's mma.sync kernels instead). The
 * layouts, row statistics and host-side casts are flash.cu's; these kernels
 * take its bf16 inputs and write the same outputs.
 *
 * wgmma: a warpgroup (4 warps, 128 threads) multiplies a 64-row A by an
 * N-column B asynchronously, the operands read by the tensor cores from
 * shared memory (A may come from registers). Tiles sit in shared memory in
 * the 128-byte swizzled layout wgmma reads: row r of 64 bf16 (128 bytes) at
 * r * 128, its 16-byte chunk c at chunk c ^ (r % 8); tiles 1024-byte
 * aligned. One such tile serves as a K-major operand (the head dimension
 * is the reduction: S = Q K^T) and as an MN-major one (the rows are the
 * reduction: O += P V). The accumulators have the mma.sync C layout per
 * warp, so softmax_tile, to_frags and write_rows (flash.cuh) apply as they
 * are, and rounded scores are the register A operand of the next product.
 *
 * forward  warp-specialized as FA3's (k_flash_fwd_ws, by TMA): a
 *          persistent block an SM, a producer warpgroup streaming Q and
 *          128-key K/V tiles, three consumer warpgroups of 64 queries each
 *          sharing them (S as m64n128 products); SMJ_CUDA_FWD_TILE=64 and
 *          where no tensor map can be made: 256 threads, two warpgroups of
 *          64 queries over 64-key tiles, two blocks an SM, pipelined in
 *          FA3's order (k_flash_fwd_wg).
 * dQ       one warpgroup, 64 queries a block, four blocks an SM; per key
 *          tile S = Q K^T and dP = dO V^T (both from shared memory),
 *          dS = P (dP - D) in registers, dQ += dS K (dS from registers,
 *          K MN-major).
 * dK, dV   one warpgroup, 64 keys a block, two blocks an SM; over the
 *          group's query heads and the 64-query tiles from the diagonal
 *          on: S^T = K Q^T, dP^T = V dO^T, P^T and dS^T in registers,
 *          dV += P^T dO and dK += dS^T Q (Q and dO MN-major).
 * The backward's blocks of one warpgroup run out of step with each other
 * (one's softmax beside another's products), where two warpgroups of a
 * block meet at every tile's barrier: on an H200 (Llama 110M, T = 1024,
 * B = 32) dQ 2.63 -> 2.45 ms a step and dK dV 4.6 -> 4.1 against blocks of
 * two warpgroups; the 64-key forward measured slower so (2.6 -> 2.8 ms: it spills
 * more at four blocks an SM).
 * Tiles: the forward's and dQ's by TMA (thread 0 asks the copy engine for
 * each 64 x 64 tile; stages with "full" and "empty" mbarriers instead of a
 * block barrier a tile), dK dV's by cp.async (every thread, once-computed
 * offsets: tile_ld), as everything with SMJ_CUDA_TMA=0 or where a tensor
 * map cannot describe the layout. On an H200 TMA took the forward 2.8 ->
 * 2.6 ms and dQ 2.4 -> 2.2 ms a step at T = 1024; dK dV measured no faster
 * with it (nor at three blocks an SM with one register set), and FA3's
 * ping-pong of the forward's two warpgroups (named barriers) slower.
 * Deterministic: each output row has one owner block, no atomics. */
#include "flash.cuh"
#include "wgmma.cuh"

/* keeps the compiler from moving accumulator reads or writes across the
 * asynchronous instructions */
__device__ __forceinline__ void wg_reg_fence(float d[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(d[i])::"memory");
}
#define WG_D32(d)                                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),  \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WG_R32                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
/* d (64x64 fp32, accumulate when acc) += A (smem, K-major) · B^T (smem, K-major), k16;
 * a, b: the descriptors' low words */
__device__ __forceinline__ void wg_ss(float d[32], uint32_t a, uint32_t b, int acc) {
#ifdef WG_SM90
    asm volatile("{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %34, 0;\n"
                 "mov.b64 da, {%32, %35};\nmov.b64 db, {%33, %35};\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32 ", da, db, p, 1, 1, 0, 0;\n}\n"
                 : WG_D32(d)
                 : "r"(a), "r"(b), "r"(acc), "r"(WG_DESC_HI));
#endif
}
/* d += A (registers, the m16k16 fragments of the warp's 16 rows) · B (smem, MN-major), k16 */
__device__ __forceinline__ void wg_rs(float d[32], const uint32_t a[4], uint32_t b) {
#ifdef WG_SM90
    asm volatile("{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, 1, 0;\nmov.b64 db, {%36, %37};\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32
                 ", {%32, %33, %34, %35}, db, p, 1, 1, 1;\n}\n"
                 : WG_D32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b), "r"(WG_DESC_HI));
#endif
}
/* d (64x64 fp32, accumulate when acc) += A (registers, the m16k16 fragments
 * of the warp's 16 rows) · B^T (smem, K-major), k16. With A from registers
 * a product reads half the shared memory of wg_ss's (B alone): wg_ss reads
 * 4 KB an instruction, 32 cycles at 128 bytes a cycle, as long as the tensor
 * cores take for its multiply-adds. */
__device__ __forceinline__ void wg_rs_k(float d[32], const uint32_t a[4], uint32_t b, int acc) {
#ifdef WG_SM90
    asm volatile("{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, %36, 0;\nmov.b64 db, {%37, %38};\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_R32
                 ", {%32, %33, %34, %35}, db, p, 1, 1, 0;\n}\n"
                 : WG_D32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(acc), "r"(b), "r"(WG_DESC_HI));
#endif
}
/* The A fragments (as to_frags makes them) of the warp's 16 rows of a 64 x
 * 64 bf16 tile in the 128-byte swizzled layout at shared address s (1024-
 * byte aligned): row r's 16-byte chunk c at r * 128 + (c ^ (r % 8)) * 16. */
__device__ __forceinline__ void sw_frags(uint32_t a[4][4], uint32_t s) {
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3, r = 16 * ((threadIdx.x >> 5) & 3) + g;
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint32_t at = s + (uint32_t)(r + 8 * (j & 1)) * 128 + (uint32_t)(((2 * kk + (j >> 1)) ^ g) << 4) + 4 * t;
            asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(a[kk][j]) : "r"(at) : "memory");
        }
}
/* acc += P (64 rows as bf16 register fragments, k = 16 K16) · B (K16 / 4
 * tiles of 64 rows, MN-major, one after the other; the first's descriptor
 * low word db), issued; the caller fences before and commits and waits
 * after. */
template <int K16> __device__ __forceinline__ void wg_issue_pb(float acc[32], uint32_t (*pa)[4], uint32_t db) {
    wg_reg_fence(acc);
#pragma unroll
    for (int i = 0; i < 4 * K16; i++) asm volatile("" : "+r"(pa[i >> 2][i & 3])::"memory");
#pragma unroll
    for (int kb2 = 0; kb2 < K16; kb2++) wg_rs(acc, pa[kb2], db + kb2 * 128);
}
/* A thread's part in loading tiles of 64 bf16 columns (rows rs apart) into
 * the swizzled layout, by a block of NT threads: its 16-byte chunk ch =
 * tid % 8 of rows tid / 8, then every NT / 8 rows on. The offsets are
 * computed once, so a tile costs a few instructions a chunk in the loops
 * (computing them per tile had been ~30% of the forward's instructions). */
template <int NT> struct tile_ld {
    int64_t o;   /* r * rs + 8 * ch, elements */
    uint32_t so; /* r * 128 + (ch ^ (r % 8)) * 16, bytes (NT / 8 rows on: the same chunk order) */
    int r;
    __device__ __forceinline__ explicit tile_ld(int64_t rs) {
        const int ch = threadIdx.x & 7;
        r = threadIdx.x >> 3;
        o = (int64_t)r * rs + 8 * ch;
        so = (uint32_t)(r * 128 + ((ch ^ (r & 7)) << 4));
    }
    /* R rows from src, rs apart as constructed (rows >= nrows zero) -> the
     * tile at shared address dst, asynchronously */
    template <int R> __device__ __forceinline__ void load(uint32_t dst, const bf16 *src, int64_t rs, int nrows) const {
        static_assert(R * 8 % NT == 0 && NT % 64 == 0, "whole rounds of NT threads, 8-row steps");
#pragma unroll
        for (int i = 0; i < R * 8 / NT; i++) {
            const bool ok = r + i * (NT / 8) < nrows;
            const bf16 *g = ok ? src + o + (int64_t)i * (NT / 8) * rs : src;
#if __CUDA_ARCH__ >= 800
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + so + i * (NT / 8) * 128),
                         "l"(g), "r"(ok ? 16 : 0));
#endif
        }
    }
};
/* a one-off tile: R rows of 64 bf16 -> the swizzled tile at dst */
template <int R, int NT>
__device__ __forceinline__ void cp_tile_sw(uint32_t dst, const bf16 *src, int64_t rs, int nrows) {
    tile_ld<NT>(rs).template load<R>(dst, src, rs, nrows);
}


/* (one thread) a kernel's barriers, 8 bytes apart from b: Q's "full" one,
 * nfull stages' "full" ones (one arrival: the producer's, with its bytes),
 * then nempty "empty" ones (nt arrivals: every consumer thread) */
__device__ __forceinline__ void mbar_init_stages(uint32_t b, int nfull, int nempty, int nt) {
    for (int i = 0; i <= nfull; i++) mbar_init(b + 8 * i, 1);
    for (int i = 0; i < nempty; i++) mbar_init(b + 8 * (1 + nfull + i), nt);
    mbar_init_fence();
}
/* the kernels' tensor maps (TMA): q, k, v (and dO for dQ) as
 * [B][rows][columns] bf16, boxes of 64 rows x 64 columns, 128-byte swizzle,
 * rows past the tensor's read as 0 (flash_fwd_sm90, flash_bwd_sm90 make
 * them) */
struct fwd_maps {
    CUtensorMap q, k, v;
};
struct dq_maps {
    CUtensorMap q, o, k, v;
};

/* ------------------------------------------------------------ forward */

template <bool TMA>
__global__ void __launch_bounds__(256, 2)
    k_flash_fwd_wg(float *out, bf16 *out16, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int Tq, int Tk,
                   int NH, int NKV, int64_t kv_bstride, float sl2, int64_t iqs, int64_t iks,
                   const __grid_constant__ fwd_maps tm) {
#ifdef WG_SM90
    /* Pipelined in FA3's order: per tile kt, S_{kt+1} = Q K_{kt+1}^T and
     * O += P_kt V_kt are issued together; the softmax of S_{kt+1} runs while
     * the PV product does (P in two register sets, o rescaled only after
     * PV_kt is done). K tiles are three buffers (kt + 2 loads while kt + 1
     * is multiplied), V two, both asked for a step ahead. Every warpgroup
     * runs every tile of its block (a tile past its rows' diagonal comes out
     * fully masked, p = 0), so the sequence of asynchronous products is the
     * same on every path and the compiler keeps it pipelined (ptxas reports
     * no serialization). Two blocks an SM (128 registers, a small spill)
     * run faster than one (166 registers): 2.90 against 3.40 ms a step on
     * an H200 (Llama 110M, T = 1024, B = 32).
     * TMA: K and V in NS stages each, filled by thread 0 (also a consumer)
     * through the copy engine; a warpgroup waits for a stage's "full"
     * barrier and arrives on its "empty" one when its product has read it;
     * K_j's stage is refilled (K_{j+NS}) at step j + 1, V_j's at step j + 2,
     * so the two warpgroups may run up to about two steps apart, where
     * cp.async's block barrier holds them together every tile. */
    constexpr int HS = 64, BQ = 128, NT = 256, ND = HS / 8, TB = FB * 128; /* tile bytes */
    constexpr int NS = TMA ? 4 : 3, NSV = TMA ? 4 : 2;                     /* K, V buffers */
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(smem) + 1023) & ~1023u;
    const uint32_t sQ = s0, sK = s0 + BQ * 128, sV = sK + NS * TB;
    /* (TMA) barriers: Q full, then per stage K full, V full, K empty, V empty */
    const uint32_t bq = sV + NSV * TB, bfk = bq + 8, bfv = bfk + 8 * NS, bek = bfv + 8 * NS, bev = bek + 8 * NS;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (NH / NKV), q0 = qt * BQ, off = Tk - Tq;
    const int wg = threadIdx.x >> 7, w = (threadIdx.x >> 5) & 3, g = (threadIdx.x & 31) >> 2;
    const int64_t qrs = (int64_t)NH * HS, krs = iks; /* out's rows; k's and v's (iqs: q's) */
    const bf16 *kb = k + (int64_t)b * kv_bstride + (int64_t)hk * HS;
    const bf16 *vb = v + (int64_t)b * kv_bstride + (int64_t)hk * HS;
    const int last = min(Tk - 1, off + min(q0 + BQ - 1, Tq - 1)); /* last key any row sees */
    const int nkt = last / FB + 1;
    /* cp.async groups: {Q, K_0}, then {K_j, V_j-1} for j >= 1, each asked
     * for a step before it is needed (two steps ahead measured no faster) */
    const tile_ld<NT> ld(krs); /* K's and V's rows alike */
    auto load_kv = [&](int j) {
        if (j < nkt) ld.load<FB>(sK + (j % 3) * TB, kb + (int64_t)j * FB * krs, krs, Tk - j * FB);
        if (j - 1 < nkt) ld.load<FB>(sV + ((j - 1) & 1) * TB, vb + (int64_t)(j - 1) * FB * krs, krs, Tk - (j - 1) * FB);
        cp_commit();
    };
    /* (TMA, thread 0) K_j, V_j into their stages */
    auto tma_k = [&](int j) {
        const uint32_t st = (uint32_t)(j % NS);
        mbar_expect(bfk + 8 * st, TB);
        tma_load3(sK + st * TB, &tm.k, hk * HS, j * FB, b, bfk + 8 * st);
    };
    auto tma_v = [&](int j) {
        const uint32_t st = (uint32_t)(j % NSV);
        mbar_expect(bfv + 8 * st, TB);
        tma_load3(sV + st * TB, &tm.v, hk * HS, j * FB, b, bfv + 8 * st);
    };
    if (TMA) {
        if (threadIdx.x == 0) mbar_init_stages(bq, 2 * NS, 2 * NS, NT);
        __syncthreads();
        if (threadIdx.x == 0) {
            /* (a box wholly past the rows is not asked for: the second
             * warpgroup's rows then hold stale values, never written out) */
            const bool two = q0 + FB < Tq;
            mbar_expect(bq, two ? 2 * TB : TB);
            tma_load3(sQ, &tm.q, h * HS, q0, b, bq);
            if (two) tma_load3(sQ + TB, &tm.q, h * HS, q0 + FB, b, bq);
            for (int j = 0; j < NS && j < nkt; j++) tma_k(j);
            for (int j = 0; j < NSV && j < nkt; j++) tma_v(j);
        }
        __syncwarp();
        mbar_wait(bq, 0);
        mbar_wait(bfk, 0);
    } else {
        cp_tile_sw<BQ, NT>(sQ, q + ((int64_t)b * Tq + q0) * iqs + (int64_t)h * HS, iqs, min(BQ, Tq - q0));
        ld.load<FB>(sK, kb, krs, Tk);
        cp_commit();
        load_kv(1);
        cp_wait<1>(); /* Q and the first K */
        wg_proxy_fence();
        __syncthreads();
    }
    const int wr = wg * 64 + w * 16; /* the warp's first row in the tile */
    constexpr uint32_t TD = TB >> 4;                 /* a tile's step in a descriptor */
    const uint32_t dq = wg_lo(sQ + wg * 64 * 128), dk0 = wg_lo(sK), dv0 = wg_lo(sV);
    float o[32], sa[32], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 32; i++) o[i] = 0.f;
    auto issue_s = [&](float *acc, uint32_t dkb) { /* dkb: the K tile's descriptor */
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++) wg_ss(acc, dq + 2 * kk, dkb + 2 * kk, kk);
        wg_commit();
    };
    auto softmax = [&](float *acc, int kt, uint32_t pa[4][4]) {
        const int k0 = kt * FB;
        float (*sc)[4] = reinterpret_cast<float (*)[4]>(acc), (*oc)[4] = reinterpret_cast<float (*)[4]>(o);
        if (k0 + FB - 1 > off + q0 + wr || k0 + FB > Tk) /* the diagonal or the end */
            return softmax_tile<ND, false, true>(sc, oc, m, l, pa, q0 + wr + g, k0, off, Tk, sl2);
        return softmax_tile<ND, false, false>(sc, oc, m, l, pa, q0 + wr + g, k0, off, Tk, sl2);
    };
    auto rescale = [&](float2 c) {
#pragma unroll
        for (int d = 0; d < ND; d++) {
            o[4 * d] *= c.x; o[4 * d + 1] *= c.x; o[4 * d + 2] *= c.y; o[4 * d + 3] *= c.y;
        }
    };
    auto issue_pv = [&](int kt, uint32_t pa[4][4]) {
        wg_fence();
        wg_issue_pb<4>(o, pa, dv0 + (kt % NSV) * TD);
        wg_commit();
    };
    /* tile 0's scores and softmax (o is 0: nothing to rescale); P in two
     * register sets, the one a PV product reads being left alone while it
     * runs */
    uint32_t pa[4][4], pb[4][4];
    issue_s(sa, dk0);
    wg_wait0();
    wg_reg_fence(sa);
    if (TMA) mbar_arrive(bek); /* K_0 read */
    softmax(sa, 0, pa);
    /* then per tile kt (FA3's order): issue S_{kt+1}, issue O += P_kt V_kt,
     * wait for S_{kt+1} (PV_kt may still run), its softmax (o is not
     * touched), wait for PV_kt, rescale o by the new factors */
    /* (TMA) thread 0 refills K_{kt-1}'s stage with K_{kt-1+NS} and
     * V_{kt-2}'s with V_{kt-2+NSV} once both warpgroups have read them; every
     * thread then waits for K_{kt+1}, V_kt */
    auto tma_step = [&](int kt, bool s_next) {
        if (threadIdx.x == 0) {
            if (kt >= 1 && kt - 1 + NS < nkt) {
                mbar_wait(bek + 8 * ((kt - 1) % NS), (uint32_t)((kt - 1) / NS) & 1);
                tma_k(kt - 1 + NS);
            }
            if (kt >= 2 && kt - 2 + NSV < nkt) {
                mbar_wait(bev + 8 * ((kt - 2) % NSV), (uint32_t)((kt - 2) / NSV) & 1);
                tma_v(kt - 2 + NSV);
            }
        }
        __syncwarp();
        if (s_next) mbar_wait(bfk + 8 * ((kt + 1) % NS), (uint32_t)((kt + 1) / NS) & 1);
        mbar_wait(bfv + 8 * (kt % NSV), (uint32_t)(kt / NSV) & 1);
    };
    auto step = [&](int kt, float *sn, uint32_t pc[4][4], uint32_t pn[4][4]) {
        if (TMA) {
            tma_step(kt, true);
        } else {
            cp_wait<0>(); /* K_{kt+1} and V_kt landed (asked for a step before) */
            wg_proxy_fence();
            __syncthreads();
            load_kv(kt + 2);
        }
        issue_s(sn, dk0 + ((kt + 1) % NS) * TD);
        issue_pv(kt, pc);
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
        wg_reg_fence(sn);
        if (TMA) mbar_arrive(bek + 8 * ((kt + 1) % NS)); /* K_{kt+1} read */
        float2 c = softmax(sn, kt + 1, pn);
        wg_wait0();
        wg_reg_fence(o);
        if (TMA) mbar_arrive(bev + 8 * (kt % NSV)); /* V_kt read */
        rescale(c);
    };
    int kt = 0;
    for (; kt + 2 < nkt; kt += 2) {
        step(kt, sa, pa, pb);
        step(kt + 1, sa, pb, pa);
    }
    /* the last tile's O += P V */
    auto last_pv = [&](int kt, uint32_t pc[4][4]) {
        if (TMA) {
            tma_step(kt, false);
        } else {
            cp_wait<0>();
            wg_proxy_fence();
            __syncthreads();
        }
        issue_pv(kt, pc);
    };
    if (kt + 1 < nkt) {
        step(kt, sa, pa, pb);
        last_pv(kt + 1, pb);
    } else {
        last_pv(kt, pa);
    }
    wg_wait0();
    wg_reg_fence(o);
    cp_wait<0>();
    const int64_t oo = (int64_t)b * Tq * qrs + (int64_t)h * HS;
    float *ob = out ? out + oo : NULL;
    bf16 *ob16 = out16 ? out16 + oo : NULL;
    float *lb = lse + ((int64_t)b * NH + h) * Tq;
    write_rows<ND>(ob, ob16, lb, reinterpret_cast<float (*)[4]>(o), m, l, q0 + wr + g, Tq, qrs);
#endif
}

/* d (64x128 fp32: 64 registers, the C layout of 16 n8 tiles) += A (smem,
 * K-major) · B^T (smem, K-major: 128 rows), k16 */
#define WG_D64(d) WG_D32(d), WG_D32((d + 32))
#define WG_R64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
__device__ __forceinline__ void wg_ss128(float d[64], uint32_t a, uint32_t b, int acc) {
#ifdef WG_SM90
    asm volatile("{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %66, 0;\n"
                 "mov.b64 da, {%64, %67};\nmov.b64 db, {%65, %67};\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_R64 ", da, db, p, 1, 1, 0, 0;\n}\n"
                 : WG_D64(d)
                 : "r"(a), "r"(b), "r"(acc), "r"(WG_DESC_HI));
#endif
}

/* The forward, warp-specialized as FA3's (the default where tensor maps
 * can be made; SMJ_CUDA_FWD_TILE=64: k_flash_fwd_wg). A persistent block of
 * four warpgroups on every SM. The first gives up its registers
 * (setmaxnreg 32) and its thread 0 streams, by TMA, each work tile's Q (192
 * rows, two buffers) and its 128-key K and V tiles (NS stages: a tile is
 * two 64-row boxes, one after the other in shared memory, the same
 * swizzled layout). Three consumer warpgroups (setmaxnreg 160) own 64 of
 * the 192 queries each and share every K and V tile: S = Q K^T as m64n128
 * products, the softmax over 16 n8 tiles, O += P V as eight k16 steps (P
 * from registers, V MN-major), in FA3's order: S_{kt+1} issued with PV_kt,
 * S_{kt+1}'s softmax while PV_kt runs (left as probabilities), then o
 * rescaled and P converted once PV_kt is done (one register set for P). A
 * stage is released per warp (12 "empty" arrivals); a warpgroup whose rows
 * end before the block's last key tile waits for and releases the tiles it
 * does not use. Work tiles end at Tq (a partial tile is the first rows,
 * the shortest) and go longest first, strided over the blocks. The
 * warpgroup and warp indices come from lane 0 by shuffle, so the compiler
 * knows them uniform and keeps the products' descriptors in uniform
 * registers (computed from threadIdx, each was moved there by R2UR every
 * product; round 28: 2.56-2.60 -> 2.28-2.34 ms at T = 1024, 6.85-7.07 ->
 * 6.45-6.47 at T = 4096).
 * On an H200 (Llama 110M, B = 32 at T = 1024, B = 8 at 4096; round 27)
 * 2.44-2.51 ms a step against 2.51-2.55, and 6.71-6.79 against 7.09-7.28,
 * for the kernel it replaced: one warpgroup of 64 queries over 128-key
 * tiles a block, three blocks an SM, one K/V stream each. Tried: tiles
 * starting at row 0 (the partial one last, as long as the longest: ~4%
 * slower at T = 1024); two consumer warpgroups of 128 queries (240
 * registers; 2.51-2.67 / 7.49-7.64 ms); five stages (no different);
 * round 28: P's row sums by the tensor cores (m64n8k16 against a tile of
 * ones; no faster), a work tile's last PV overlapped with the next tile's
 * first S (no faster at T = 1024, within noise at 4096). */
__global__ void __launch_bounds__(512, 1)
    k_flash_fwd_ws(float *out, bf16 *out16, float *lse, int Tq, int Tk, int NH, int NKV, int B, float sl2,
                   const __grid_constant__ fwd_maps tm) {
#ifdef WG_SM90
    constexpr int HS = 64, NC = 3 /* consumer warpgroups */, BQ = 64 * NC, BK = 128, NS = 4, NCW = 4 * NC, ND = HS / 8;
    constexpr int TB = FB * 128, KB = 2 * TB, QB = NC * TB;
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t s0 = ((uint32_t)__cvta_generic_to_shared(smem) + 1023) & ~1023u;
    const uint32_t sQ = s0, sK = s0 + 2 * QB, sV = sK + NS * KB;
    /* barriers: Q full x2, K full, V full (NS each), then Q empty x2, K empty, V empty */
    const uint32_t bfq = sV + NS * KB, bfk = bfq + 16, bfv = bfk + 8 * NS;
    const uint32_t beq = bfv + 8 * NS, bek = beq + 16, bev = bek + 8 * NS;
    const int nqt = (Tq + BQ - 1) / BQ, ntiles = nqt * NH * B, off = Tk - Tq;
    /* (from lane 0: uniform, see above) */
    const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0);
    if (threadIdx.x == 0) mbar_init_stages(bfq, 1 + 2 * NS, 2 + 2 * NS, NCW);
    __syncthreads();
    auto decode = [&](int idx, int &q0, int &h, int &b) { /* the longest tiles first */
        const int qi = idx / (NH * B), r = idx % (NH * B);
        q0 = Tq - (qi + 1) * BQ; /* (tiles end at Tq: a partial one is the first, the shortest) */
        h = r % NH;
        b = r / NH;
    };
    /* key tiles rows [r0, r0 + n) see (r0 + n <= Tq; 0: none of them is a row) */
    auto key_tiles = [&](int r0, int n) { return r0 + n <= 0 ? 0 : min(Tk - 1, off + r0 + n - 1) / BK + 1; };
    auto phase = [](int u) { return (uint32_t)u & 1; };
    if (wg == 0) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 32;\n" ::: "memory");
        if (threadIdx.x != 0) return;
        int it = 0, n = 0;
        for (int idx = blockIdx.x; idx < ntiles; idx += gridDim.x, n++) {
            int q0, h, b;
            decode(idx, q0, h, b);
            const int hk = h / (NH / NKV), nkt = key_tiles(q0, BQ), qs = n & 1;
            if (n >= 2) mbar_wait(beq + 8 * qs, phase((n >> 1) - 1));
            mbar_expect(bfq + 8 * qs, QB);
            for (int r = 0; r < NC; r++) tma_load3(sQ + qs * QB + r * TB, &tm.q, h * HS, q0 + r * FB, b, bfq + 8 * qs);
            for (int j = 0; j < nkt; j++, it++) {
                const int st = it % NS, u = it / NS;
                if (u >= 1) mbar_wait(bek + 8 * st, phase(u - 1));
                mbar_expect(bfk + 8 * st, KB);
                tma_load3(sK + st * KB, &tm.k, hk * HS, j * BK, b, bfk + 8 * st);
                tma_load3(sK + st * KB + TB, &tm.k, hk * HS, j * BK + FB, b, bfk + 8 * st);
                if (u >= 1) mbar_wait(bev + 8 * st, phase(u - 1));
                mbar_expect(bfv + 8 * st, KB);
                tma_load3(sV + st * KB, &tm.v, hk * HS, j * BK, b, bfv + 8 * st);
                tma_load3(sV + st * KB + TB, &tm.v, hk * HS, j * BK + FB, b, bfv + 8 * st);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 160;\n" ::: "memory"); /* (128 x 32 + 384 x 160 = 64 K) */
    const int cw = wg - 1, w = __shfl_sync(0xffffffffu, ((int)threadIdx.x >> 5) & 3, 0), lane = threadIdx.x & 31,
              g = lane >> 2;
    const int64_t qrs = (int64_t)NH * HS;
    constexpr uint32_t KD = KB >> 4;
    const uint32_t dk0 = wg_lo(sK), dv0 = wg_lo(sV);
    /* a warp's release of a stage (its part of the warpgroup's products is done) */
    auto release = [&](uint32_t bar) {
        __syncwarp();
        if (lane == 0) mbar_arrive(bar);
    };
    auto wait_k = [&](int i) { mbar_wait(bfk + 8 * (i % NS), phase(i / NS)); };
    auto wait_v = [&](int i) { mbar_wait(bfv + 8 * (i % NS), phase(i / NS)); };
    int it = 0, n = 0;
    for (int idx = blockIdx.x; idx < ntiles; idx += gridDim.x, n++) {
        int q0, h, b;
        decode(idx, q0, h, b);
        const int nkt = key_tiles(q0, BQ), q0w = q0 + 64 * cw, nkw = key_tiles(q0w, 64), qs = n & 1;
        const int wr = w * 16;
        mbar_wait(bfq + 8 * qs, phase(n >> 1));
        const uint32_t dq = wg_lo(sQ + qs * QB + cw * TB);
        float o[32], sa[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        uint32_t pa[8][4];
#pragma unroll
        for (int i = 0; i < 32; i++) o[i] = 0.f;
        auto issue_s = [&](int i) { /* S = Q K_i^T (i: the stream's tile) */
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) wg_ss128(sa, dq + 2 * kk, dk0 + (i % NS) * KD + 2 * kk, kk);
            wg_commit();
        };
        auto issue_pv = [&](int i) {
            wg_fence();
            wg_issue_pb<8>(o, pa, dv0 + (i % NS) * KD);
            wg_commit();
        };
        /* softmax of tile kt in place (FRAGS: convert to pa as well) */
        auto softmax = [&](int kt, auto frags) -> float2 {
            constexpr bool F = decltype(frags)::value;
            const int k0 = kt * BK;
            float (*sc)[4] = reinterpret_cast<float (*)[4]>(sa), (*oc)[4] = reinterpret_cast<float (*)[4]>(o);
            if (k0 + BK - 1 > off + q0w + wr || k0 + BK > Tk)
                return softmax_tile<ND, false, true, 16, F>(sc, oc, m, l, pa, q0w + wr + g, k0, off, Tk, sl2);
            return softmax_tile<ND, false, false, 16, F>(sc, oc, m, l, pa, q0w + wr + g, k0, off, Tk, sl2);
        };
        if (nkw > 0) {
            wait_k(it);
            issue_s(it);
            wg_wait0();
            wg_reg_fence(sa);
            wg_reg_fence(sa + 32);
            release(bek + 8 * (it % NS));
            softmax(0, std::true_type{});
            for (int kt = 0; kt + 1 < nkw; kt++) {
                wait_k(it + kt + 1);
                issue_s(it + kt + 1);
                wait_v(it + kt);
                issue_pv(it + kt);
                asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
                wg_reg_fence(sa);
                wg_reg_fence(sa + 32);
                release(bek + 8 * ((it + kt + 1) % NS));
                const float2 c = softmax(kt + 1, std::false_type{});
                wg_wait0();
                wg_reg_fence(o);
                release(bev + 8 * ((it + kt) % NS));
#pragma unroll
                for (int d = 0; d < ND; d++) {
                    o[4 * d] *= c.x; o[4 * d + 1] *= c.x; o[4 * d + 2] *= c.y; o[4 * d + 3] *= c.y;
                }
                to_frags(pa, reinterpret_cast<float (*)[4]>(sa));
                to_frags(pa + 4, reinterpret_cast<float (*)[4]>(sa + 32));
            }
            wait_v(it + nkw - 1);
            issue_pv(it + nkw - 1);
            wg_wait0();
            wg_reg_fence(o);
            release(bev + 8 * ((it + nkw - 1) % NS));
        }
        release(beq + 8 * qs); /* every S product of this warpgroup is done */
        for (int j = nkw; j < nkt; j++) { /* tiles past this warpgroup's rows */
            wait_k(it + j);
            release(bek + 8 * ((it + j) % NS));
            wait_v(it + j);
            release(bev + 8 * ((it + j) % NS));
        }
        it += nkt;
        if (nkw > 0) {
            const int64_t oo = (int64_t)b * Tq * qrs + (int64_t)h * HS;
            write_rows<ND>(out ? out + oo : NULL, out16 ? out16 + oo : NULL, lse + ((int64_t)b * NH + h) * Tq,
                           reinterpret_cast<float (*)[4]>(o), m, l, q0w + wr + g, Tq, qrs);
        }
    }
#endif
}

/* ------------------------------------------------------------ backward */

/* s = A1 · B1^T and dp = A2 · B2^T for a warpgroup's 64 rows, reduced over
 * the head dimension (four k16 steps each), all four operands K-major tiles
 * in shared memory (descriptors); issued together, then waited for. */
__device__ __forceinline__ void wg_two_scores(float s[32], float dp[32], uint32_t a1, uint32_t b1, uint32_t a2,
                                              uint32_t b2) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wg_ss(s, a1 + 2 * kk, b1 + 2 * kk, kk);
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wg_ss(dp, a2 + 2 * kk, b2 + 2 * kk, kk);
    wg_commit();
    wg_wait0();
    wg_reg_fence(s);
    wg_reg_fence(dp);
}

/* A warp's share of a gradient's 64 columns in the accumulator layout (the
 * thread's rows r0 and r0 + 8 at positions r0, r0 + 8, columns 8 d + 2 t
 * and + 1), times scale; with rope tables (cs, sn [>= T, 32]; NULL: none)
 * rotated back as rope_bwd does (rope_rot with -sin: the same rounding; the
 * pair i, i + 32 sits in one thread, at d and d + 4); written at rows rs
 * apart from o as fp32 and/or from o16 as bf16 (NULL: not written); the
 * values (of rows < T) added into cols, the thread's 16 columns in the
 * order of v (for col_sums; unused, the compiler drops it). */
__device__ __forceinline__ void grad_rows(const float acc[32], float scale, int r0, int T, int t, float *o, bf16 *o16,
                                          int64_t rs, const float *cs, const float *sn, float cols[16]) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int r = r0 + 8 * hh;
        if (r >= T) continue;
        float v[16];
#pragma unroll
        for (int d = 0; d < 8; d++) {
            v[2 * d] = acc[4 * d + 2 * hh] * scale;
            v[2 * d + 1] = acc[4 * d + 2 * hh + 1] * scale;
        }
        if (cs) {
#pragma unroll
            for (int d = 0; d < 4; d++) {
                const float2 co = *(const float2 *)(cs + (int64_t)r * 32 + 8 * d + 2 * t),
                             si = *(const float2 *)(sn + (int64_t)r * 32 + 8 * d + 2 * t);
                rope_rot(v[2 * d], v[2 * d + 8], co.x, -si.x, v[2 * d], v[2 * d + 8]);
                rope_rot(v[2 * d + 1], v[2 * d + 9], co.y, -si.y, v[2 * d + 1], v[2 * d + 9]);
            }
        }
#pragma unroll
        for (int d = 0; d < 8; d++) {
            const int64_t e = (int64_t)r * rs + 8 * d + 2 * t;
            if (o) *(float2 *)(o + e) = make_float2(v[2 * d], v[2 * d + 1]);
            if (o16) *(uint32_t *)(o16 + e) = pack_bf16(v[2 * d], v[2 * d + 1]);
        }
#pragma unroll
        for (int j = 0; j < 16; j++) cols[j] += v[j];
    }
}

/* The block's column sums of one gradient's 64 columns into prow[0, 64)
 * (a bias gradient's partial row): each thread's cols (grad_rows's) summed
 * over the warp's eight row groups by shuffles, then over the block's NW
 * warps in order through red (NW x 64 floats of shared memory the tiles no
 * longer need): a fixed order, no atomics. Every thread of the block calls
 * it. */
template <int NW>
__device__ __forceinline__ void col_sums(float cols[16], float *red, float *prow) {
#pragma unroll
    for (int o = 4; o < 32; o <<= 1)
#pragma unroll
        for (int j = 0; j < 16; j++) cols[j] += __shfl_xor_sync(0xffffffffu, cols[j], o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = lane & 3;
    __syncthreads(); /* every warp is done with the tiles (and with red's last use) */
    if (lane < 4)
#pragma unroll
        for (int d = 0; d < 8; d++) {
            red[w * 64 + 8 * d + 2 * t] = cols[2 * d];
            red[w * 64 + 8 * d + 2 * t + 1] = cols[2 * d + 1];
        }
    __syncthreads();
    if (threadIdx.x < 64) {
        float s = 0;
        for (int k = 0; k < NW; k++) s += red[k * 64 + threadIdx.x];
        prow[threadIdx.x] = s;
    }
}

/* One row's sum of dO o O (bf16 rows of HS = 64; 0 where !ok), to the bit
 * k_flash_rowstats's: its 16 partial sums of four columns each (a mul and
 * three fmas), added by its butterfly (i with i ^ 8, ^ 4, ^ 2, ^ 1). Here
 * the quad's lane t holds partials 4t .. 4t + 3 (16 columns, two 16-byte
 * loads a row): ^ 8 and ^ 4 are the quad's shuffles, ^ 2 and ^ 1 its own.
 * Every lane of the warp calls it. */
__device__ __forceinline__ float quad_rowdot(const bf16 *a, const bf16 *b, int t, bool ok) {
    const uint4 *pa = (const uint4 *)a + 2 * t, *pb = (const uint4 *)b + 2 * t, z = make_uint4(0, 0, 0, 0);
    const uint4 x[2] = {ok ? __ldg(pa) : z, ok ? __ldg(pa + 1) : z};
    const uint4 y[2] = {ok ? __ldg(pb) : z, ok ? __ldg(pb + 1) : z};
    const uint32_t u[8] = {x[0].x, x[0].y, x[0].z, x[0].w, x[1].x, x[1].y, x[1].z, x[1].w};
    const uint32_t v[8] = {y[0].x, y[0].y, y[0].z, y[0].w, y[1].x, y[1].y, y[1].z, y[1].w};
    auto lo = [](uint32_t w) { return __uint_as_float(w << 16); };
    auto hi = [](uint32_t w) { return __uint_as_float(w & 0xffff0000u); };
    float p[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t u0 = u[2 * j], u1 = u[2 * j + 1], v0 = v[2 * j], v1 = v[2 * j + 1];
        p[j] = __fmaf_rn(hi(u1), hi(v1),
                         __fmaf_rn(lo(u1), lo(v1), __fmaf_rn(hi(u0), hi(v0), __fmul_rn(lo(u0), lo(v0)))));
    }
#pragma unroll
    for (int j = 0; j < 4; j++) p[j] += __shfl_xor_sync(0xffffffffu, p[j], 2);
#pragma unroll
    for (int j = 0; j < 4; j++) p[j] += __shfl_xor_sync(0xffffffffu, p[j], 1);
    return (p[0] + p[2]) + (p[1] + p[3]);
}

/* dQ for 64 queries (one warpgroup) of one head and batch: Q and dO stay
 * in shared memory, K and V tiles arrive in two buffers each (the next
 * while this one is multiplied). TMA: thread 0 asks the copy engine for
 * the tiles; a stage's "full" barrier replaces the block barrier, its
 * "empty" one tells thread 0 the stage may take the tile after next.
 * Tried (round 28): pipelined as dK/dV (tile kt's S and dP issued beside
 * kt - 1's dQ product, three K/V stages, 145 registers: three blocks an
 * SM): slower (7.5-7.8 ms a step against 6.8-7.2 at T = 4096 B = 8).
 * With o16 (O's exact bf16 copy) the block makes its rows' statistics
 * itself (D from dO and O, L2 from lse; k_flash_rowstats's work, one pass
 * over dO and O less) and writes them for the dK dV kernel after it. */
template <bool TMA>
__global__ void __launch_bounds__(128, 4)
    k_flash_bwd_dq_wg(float *dq, bf16 *dq16, const float *cs, const float *sn, const bf16 *dout, float *L2, float *D,
                      const bf16 *o16, const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int Tp,
                      int NH, int NKV, float sl2, float scale, int64_t gqs, int64_t iqs, int64_t iks, float *pq,
                      const __grid_constant__ dq_maps tm) {
#ifdef WG_SM90
    constexpr int HS = 64, BQ = 64, NT = 128, TB = FB * 128;
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t sQ = ((uint32_t)__cvta_generic_to_shared(smem) + 1023) & ~1023u, sO = sQ + BQ * 128,
                   sK = sO + BQ * 128, sV = sK + 2 * TB;
    /* (TMA) barriers: Q and dO full, then per stage K|V full, K|V empty */
    const uint32_t bq = sV + 2 * TB, bf = bq + 8, be = bf + 16;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (NH / NKV), q0 = qt * BQ;
    const int w = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = iks; /* dO's rows; k's and v's (iqs: q's) */
    const int64_t qoff = ((int64_t)b * T + q0) * qrs + (int64_t)h * HS;
    const bf16 *kb = k + (int64_t)b * T * krs + (int64_t)hk * HS, *vb = v + (int64_t)b * T * krs + (int64_t)hk * HS;
    const int nkt = min(T - 1, q0 + BQ - 1) / FB + 1;
    const tile_ld<NT> ld(krs); /* K's and V's rows alike */
    auto load_kv = [&](int j) { /* group j: K_j, V_j (group 0 also Q, dO) */
        if (j < nkt) {
            ld.load<FB>(sK + (j & 1) * TB, kb + (int64_t)j * FB * krs, krs, T - j * FB);
            ld.load<FB>(sV + (j & 1) * TB, vb + (int64_t)j * FB * krs, krs, T - j * FB);
        }
        cp_commit();
    };
    auto tma_kv = [&](int j) { /* (TMA, thread 0) K_j, V_j into stage j % 2 */
        const uint32_t st = (uint32_t)(j & 1);
        mbar_expect(bf + 8 * st, 2 * TB);
        tma_load3(sK + st * TB, &tm.k, hk * HS, j * FB, b, bf + 8 * st);
        tma_load3(sV + st * TB, &tm.v, hk * HS, j * FB, b, bf + 8 * st);
    };
    if (TMA) {
        if (threadIdx.x == 0) mbar_init_stages(bq, 2, 2, NT);
        __syncthreads();
        if (threadIdx.x == 0) {
            mbar_expect(bq, 2 * TB);
            tma_load3(sQ, &tm.q, h * HS, q0, b, bq);
            tma_load3(sO, &tm.o, h * HS, q0, b, bq);
            for (int j = 0; j < 2 && j < nkt; j++) tma_kv(j);
        }
        __syncwarp();
    } else {
        cp_tile_sw<BQ, NT>(sQ, q + ((int64_t)b * T + q0) * iqs + (int64_t)h * HS, iqs, min(BQ, T - q0));
        cp_tile_sw<BQ, NT>(sO, dout + qoff, qrs, min(BQ, T - q0));
        load_kv(0);
    }
    const int wr = w * 16, r0 = q0 + wr + g, r1 = r0 + 8; /* the thread's rows */
    const int64_t st = ((int64_t)b * NH + h) * Tp;
    float L0, L1, D0, D1;
    if (o16) {
        const int64_t o0 = qoff + (int64_t)(wr + g) * qrs, o1 = o0 + 8 * qrs;
        D0 = quad_rowdot(dout + o0, o16 + o0, t, r0 < T);
        D1 = quad_rowdot(dout + o1, o16 + o1, t, r1 < T);
        const int64_t sl = ((int64_t)b * NH + h) * T;
        L0 = r0 < T ? lse[sl + r0] * LOG2E : 0.f;
        L1 = r1 < T ? lse[sl + r1] * LOG2E : 0.f;
        if (t == 0 && r0 < T) D[st + r0] = D0, L2[st + r0] = L0;
        if (t == 0 && r1 < T) D[st + r1] = D1, L2[st + r1] = L1;
    } else {
        L0 = r0 < T ? L2[st + r0] : 0.f, L1 = r1 < T ? L2[st + r1] : 0.f;
        D0 = r0 < T ? D[st + r0] : 0.f, D1 = r1 < T ? D[st + r1] : 0.f;
    }
    const uint32_t dQd = wg_lo(sQ), dOd = wg_lo(sO);
    float acc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) acc[i] = 0.f;
    if (TMA) mbar_wait(bq, 0);
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * FB;
        if (TMA) {
            /* thread 0: tile kt - 1's stage, read by every thread, takes tile kt + 1 */
            if (threadIdx.x == 0 && kt >= 1 && kt + 1 < nkt) {
                mbar_wait(be + 8 * ((kt - 1) & 1), (uint32_t)((kt - 1) >> 1) & 1);
                tma_kv(kt + 1);
            }
            __syncwarp();
            mbar_wait(bf + 8 * (kt & 1), (uint32_t)(kt >> 1) & 1); /* tile kt is in */
        } else {
            cp_wait<0>(); /* tile kt is in */
            wg_proxy_fence();
            __syncthreads(); /* ... for every thread; tile kt - 1's buffers are free */
            load_kv(kt + 1);
        }
        const uint32_t cK = sK + (kt & 1) * TB, cV = sV + (kt & 1) * TB;
        float s[32], dp[32];
        wg_two_scores(s, dp, dQd, wg_lo(cK), dOd, wg_lo(cV)); /* S = Q K^T, dP = dO V^T */
        if (k0 + FB - 1 > q0 + wr || k0 + FB > T) /* the diagonal or the end */
            dq_ds<true>(s, dp, L0, L1, D0, D1, k0, r0, T, sl2);
        else
            dq_ds<false>(s, dp, L0, L1, D0, D1, k0, r0, T, sl2);
        uint32_t da[4][4];
        to_frags(da, reinterpret_cast<float (*)[4]>(dp));
        wg_fence();
        wg_issue_pb<4>(acc, da, wg_lo(cK)); /* dQ += dS K */
        wg_commit();
        wg_wait0();
        wg_reg_fence(acc);
        if (TMA) mbar_arrive(be + 8 * (kt & 1)); /* tile kt read */
    }
    const int64_t ob = (int64_t)b * T * gqs + (int64_t)h * HS; /* dq's rows gqs apart */
    float cols[16] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    grad_rows(acc, scale, r0, T, t, dq ? dq + ob : NULL, dq16 ? dq16 + ob : NULL, gqs, cs, sn, cols);
    if (pq) /* dq's column sums over the block's rows: a partial row of its bias gradient */
        col_sums<NT / 32>(cols, (float *)(smem + (sQ - (uint32_t)__cvta_generic_to_shared(smem))),
                 pq + ((int64_t)b * gridDim.x + blockIdx.x) * NH * HS + (int64_t)h * HS);
#endif
}

/* dK, dV for 64 keys (one warpgroup) of one KV head and batch: K and V
 * stay in shared memory (the B operands of dK and dV's products) and in
 * registers (the A operands of the scores'); the loop runs over the group's
 * query heads and the 64-query tiles from the block's first key on. The
 * score blocks are S^T (keys x queries), so lse and D are per column.
 * Pipelined as the forward: per iteration i, S^T and dP^T of i + 1 are
 * issued before the dV and dK products of i, and P^T, dS^T of i + 1 are
 * computed while those run (into fp32 registers; their bf16 fragments once
 * i's products are done, one set). Q, dO and the statistics are three
 * buffers: i + 2's load goes where i - 1's was, which the warpgroup has
 * finished with at i's barrier. */
__global__ void __launch_bounds__(128, 2)
    k_flash_bwd_dkv_wg(float *dk, float *dv, bf16 *dk16, bf16 *dv16, const float *cs, const float *sn,
                       const bf16 *dout, const float *L2, const float *D, const bf16 *q, const bf16 *k, const bf16 *v,
                       int T, int Tp, int NH, int NKV, float sl2, float scale, int64_t gks, int64_t iqs, int64_t iks,
                       float *pk, float *pv) {
#ifdef WG_SM90
    constexpr int HS = 64, BK = 64, NT = 128, TB = FB * 128, NB = 3;
    extern __shared__ __align__(16) unsigned char smem[];
    const uint32_t raw = (uint32_t)__cvta_generic_to_shared(smem), sK = (raw + 1023) & ~1023u, sV = sK + BK * 128,
                   sQ = sV + BK * 128, sO = sQ + NB * TB;
    float *sL = (float *)(smem + (sO + NB * TB - raw)), *sD = sL + NB * FB;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, G = NH / NKV, k0 = kt * BK;
    const int w = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    const int64_t qrs = (int64_t)NH * HS, krs = iks; /* dO's rows; k's and v's (iqs: q's) */
    const int64_t koff = ((int64_t)b * T + k0) * krs + (int64_t)hk * HS;
    const int qt0 = k0 / FB, per = (T + FB - 1) / FB - qt0, nit = G * per; /* (head, query tile) pairs */
    const tile_ld<NT> ldq(iqs), ldo(qrs);
    /* fetch and grads take the iterations in order: their head and query
     * tile are counted on, not divided out (a division by per was ~30
     * instructions an iteration in the loop's critical path; round 28:
     * 13.25-13.55 -> 11.83-12.33 ms a step at T = 4096 B = 8 on an H200) */
    int fh = hk * G, ft = 0, fb = 0, gt = 0;
    auto fetch = [&]() { /* the next iteration's tiles into buffer fb */
        const int h = fh, qq = (qt0 + ft) * FB, buf = fb;
        if (++ft == per) ft = 0, fh++;
        if (++fb == NB) fb = 0;
        const int64_t qoff = ((int64_t)b * T + qq) * qrs + (int64_t)h * HS, st = ((int64_t)b * NH + h) * Tp;
        ldq.load<FB>(sQ + buf * TB, q + ((int64_t)b * T + qq) * iqs + (int64_t)h * HS, iqs, T - qq);
        ldo.load<FB>(sO + buf * TB, dout + qoff, qrs, T - qq);
        cp_stats(sL + buf * FB, L2 + st, qq, T);
        cp_stats(sD + buf * FB, D + st, qq, T);
    };
    cp_tile_sw<BK, NT>(sK, k + koff, krs, min(BK, T - k0));
    cp_tile_sw<BK, NT>(sV, v + koff, krs, min(BK, T - k0));
    fetch();
    cp_commit();
    if (nit > 1) fetch();
    cp_commit();
    const int kw = k0 + w * 16, j0 = kw + g; /* the warp's first key, the thread's */
    uint32_t ka[4][4], va[4][4]; /* K and V as A fragments, for every iteration's S^T and dP^T */
    auto issue_scores = [&](int i, float *s, float *dp) { /* S^T = K Q^T, dP^T = V dO^T */
        const uint32_t cQ = sQ + (i % NB) * TB, cO = sO + (i % NB) * TB;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wg_rs_k(s, ka[kk], wg_lo(cQ) + 2 * kk, kk);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wg_rs_k(dp, va[kk], wg_lo(cO) + 2 * kk, kk);
        wg_commit();
    };
    /* P^T and dS^T of iteration i from its scores, in place (fp32) */
    auto grads = [&](int i, float *s, float *dp) {
        wg_reg_fence(s);
        wg_reg_fence(dp);
        const int q0 = (qt0 + gt) * FB;
        if (++gt == per) gt = 0;
        const float *cL = sL + (i % NB) * FB, *cD = sD + (i % NB) * FB;
        if (kw + 15 > q0 || q0 + FB > T) /* the diagonal or the end */
            dkv_ds<true>(s, dp, cL, cD, j0, q0, T, sl2);
        else
            dkv_ds<false>(s, dp, cL, cD, j0, q0, T, sl2);
    };
    float ak[32], av[32], sc[32], dp[32];
#pragma unroll
    for (int i = 0; i < 32; i++) ak[i] = av[i] = 0.f;
    uint32_t pa[4][4], da[4][4]; /* P^T, dS^T as bf16 A fragments (one set: rewritten once their products are done) */
    auto frags = [&]() {
#pragma unroll
        for (int i = 0; i < 16; i++) asm volatile("" : "+r"(pa[i >> 2][i & 3]), "+r"(da[i >> 2][i & 3])::"memory");
        to_frags(pa, reinterpret_cast<float (*)[4]>(sc));
        to_frags(da, reinterpret_cast<float (*)[4]>(dp));
    };
    cp_wait<1>(); /* K, V and iteration 0's tiles */
    wg_proxy_fence();
    __syncthreads();
    sw_frags(ka, sK);
    sw_frags(va, sV);
    issue_scores(0, sc, dp);
    wg_wait0();
    grads(0, sc, dp);
    frags();
    auto issue_grads = [&](int i) {
        const uint32_t cQ = sQ + (i % NB) * TB, cO = sO + (i % NB) * TB;
        wg_fence();
        wg_issue_pb<4>(av, pa, wg_lo(cO)); /* dV += P^T dO */
        wg_issue_pb<4>(ak, da, wg_lo(cQ)); /* dK += dS^T Q */
        wg_commit();
    };
    /* iteration i < nit - 1 (its fragments ready): the scores of i + 1,
     * then dV and dK of i; i + 1's P^T and dS^T while those run, its
     * fragments once they are done. The same sequence of asynchronous
     * products on every path (ptxas keeps them pipelined). */
    for (int i = 0; i + 1 < nit; i++) {
        cp_wait<0>(); /* i + 1's tiles (asked for a step before) */
        wg_proxy_fence();
        __syncthreads(); /* ... for every thread; i - 1's buffers are free */
        if (i + 2 < nit) fetch();
        cp_commit();
        issue_scores(i + 1, sc, dp);
        issue_grads(i);
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); /* the scores of i + 1 */
        grads(i + 1, sc, dp);
        wg_wait0();
        wg_reg_fence(av);
        wg_reg_fence(ak);
        frags();
    }
    issue_grads(nit - 1);
    wg_wait0();
    wg_reg_fence(av);
    wg_reg_fence(ak);
    const int64_t ob = (int64_t)b * T * gks + (int64_t)hk * HS; /* dk's, dv's rows gks apart */
    float ck[16] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float cv[16] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    grad_rows(ak, scale, j0, T, t, dk ? dk + ob : NULL, dk16 ? dk16 + ob : NULL, gks, cs, sn, ck);
    grad_rows(av, 1.0f, j0, T, t, dv ? dv + ob : NULL, dv16 ? dv16 + ob : NULL, gks, NULL, NULL, cv);
    if (pk) { /* dk's and dv's column sums over the block's keys: partial rows of their bias gradients */
        const int64_t pr = ((int64_t)b * gridDim.x + blockIdx.x) * NKV * HS + (int64_t)hk * HS;
        col_sums<NT / 32>(ck, (float *)(smem + (sK - raw)), pk + pr);
        col_sums<NT / 32>(cv, (float *)(smem + (sK - raw)), pv + pr);
    }
#endif
}

/* ------------------------------------------------------------ host side */

/* Whether this context runs attention at head size HS with the kernels
 * above: a Hopper GPU (compute capability 9.0), a build with sm_90a code,
 * head size 64, and SMJ_CUDA_ATTN unset/auto (or wgmma). */
int flash_sm90_ok(smj_cuda *c, int HS) {
#ifdef SMJ_SM90A
    return HS == 64 && c->cc == 90 && (c->attn == ATTN_AUTO || c->attn == ATTN_WGMMA);
#else
    (void)c; (void)HS;
    return 0;
#endif
}

/* Launches (flash_sm90_ok true): bf16 inputs as flash_fwd / flash_bwd made
 * them, q's rows iqs apart, k's and v's iks (dense, or the columns of one
 * fused q|k|v copy); out, dO dense. */
/* A 3-D tensor map over bf16 [B][rows][cols] at base (rows rs elements
 * apart, batches bs), boxes of 64 x 64, the 128-byte swizzle; 0 where the
 * driver has no cuTensorMapEncodeTiled or the layout does not fit TMA
 * (16-byte aligned base and strides). */
static int tmap3(smj_cuda *c, CUtensorMap *m, const bf16 *base, int64_t cols, int64_t rows, int64_t B, int64_t rs,
                 int64_t bs) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = tmap_encoder(c);
    if (!enc || (uintptr_t)base % 16 || (rs * 2) % 16 || (bs * 2) % 16) return 0;
    const cuuint64_t dim[3] = {(cuuint64_t)cols, (cuuint64_t)rows, (cuuint64_t)B};
    const cuuint64_t str[2] = {(cuuint64_t)rs * 2, (cuuint64_t)bs * 2};
    const cuuint32_t box[3] = {64, 64, 1}, es[3] = {1, 1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)base, dim, str, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
           CUDA_SUCCESS;
}

void flash_fwd_sm90(smj_cuda *c, float *out, bf16 *out16, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                    int B, int Tq, int Tk, int NH, int NKV, int64_t kv_bstride, float sl2, int64_t iqs, int64_t iks) {
    dim3 grid((unsigned)((Tq + 127) / 128), (unsigned)NH, (unsigned)B);
    fwd_maps tm;
    memset(&tm, 0, sizeof tm);
    const int64_t QD = (int64_t)NH * 64, KD = (int64_t)NKV * 64;
    if (c->tma && tmap3(c, &tm.q, q, QD, Tq, B, iqs, (int64_t)Tq * iqs) &&
        tmap3(c, &tm.k, k, KD, Tk, B, iks, kv_bstride) && tmap3(c, &tm.v, v, KD, Tk, B, iks, kv_bstride)) {
        if (c->fwd_tile == 128) {
            const int ntiles = (Tq + 191) / 192 * NH * B; /* persistent: at most a block an SM */
            size_t sm = (size_t)(6 * FB + 16 * FB) * 128 + 1024 + 256; /* Q x2 (192 rows) | K x4 | V x4 | barriers */
            if (smem_ok(c, (const void *)k_flash_fwd_ws, sm)) {
                k_flash_fwd_ws<<<min(ntiles, c->n_sm), 512, sm, c->stream>>>(out, out16, lse, Tq, Tk, NH, NKV, B, sl2,
                                                                             tm);
                LAUNCHED(c);
            }
            return;
        }
        size_t sm = (size_t)(2 * FB + 8 * FB) * 128 + 1024 + 256; /* Q | K x4 | V x4 | barriers */
        if (smem_ok(c, (const void *)k_flash_fwd_wg<true>, sm)) {
            k_flash_fwd_wg<true><<<grid, 256, sm, c->stream>>>(out, out16, lse, q, k, v, Tq, Tk, NH, NKV, kv_bstride,
                                                                sl2, iqs, iks, tm);
            LAUNCHED(c);
        }
        return;
    }
    size_t sm = (size_t)(2 * FB + 5 * FB) * 128 + 1024; /* Q | K x3 | V x2 */
    if (smem_ok(c, (const void *)k_flash_fwd_wg<false>, sm)) {
        k_flash_fwd_wg<false><<<grid, 256, sm, c->stream>>>(out, out16, lse, q, k, v, Tq, Tk, NH, NKV, kv_bstride, sl2,
                                                             iqs, iks, tm);
        LAUNCHED(c);
    }
}

void flash_bwd_sm90(smj_cuda *c, float *dq, float *dk, float *dv, bf16 *dq16, bf16 *dk16, bf16 *dv16, const float *cs,
                    const float *sn, const bf16 *dout, float *L2, float *D, const bf16 *o16, const float *lse,
                    const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int Tp, int NH, int NKV, float sl2,
                    float scale, int64_t gqs, int64_t gks, int64_t iqs, int64_t iks, float *pq, float *pk, float *pv) {
    const unsigned nt = (unsigned)((T + 63) / 64);
    const size_t sq = (size_t)(2 * 64 + 4 * FB) * 128 + 1024 + 64;                     /* Q | dO | K x2 | V x2 (| barriers) */
    const size_t skv = (size_t)(2 * 64 + 6 * FB) * 128 + 6 * FB * sizeof(float) + 1024; /* K | V | Q, dO, L2, D x3 */
    dq_maps tm;
    memset(&tm, 0, sizeof tm);
    const int64_t QD = (int64_t)NH * 64, KD = (int64_t)NKV * 64;
    const bool tma = c->tma && tmap3(c, &tm.q, q, QD, T, B, iqs, (int64_t)T * iqs) &&
                     tmap3(c, &tm.o, dout, QD, T, B, QD, (int64_t)T * QD) && tmap3(c, &tm.k, k, KD, T, B, iks, (int64_t)T * iks) &&
                     tmap3(c, &tm.v, v, KD, T, B, iks, (int64_t)T * iks);
    const void *kq = tma ? (const void *)k_flash_bwd_dq_wg<true> : (const void *)k_flash_bwd_dq_wg<false>;
    if (!smem_ok(c, kq, sq) || !smem_ok(c, (const void *)k_flash_bwd_dkv_wg, skv)) return;
    prof_phase(c, "attn bwd: flash dQ");
    if (tma)
        k_flash_bwd_dq_wg<true><<<dim3(nt, (unsigned)NH, (unsigned)B), 128, sq, c->stream>>>(
            dq, dq16, cs, sn, dout, L2, D, o16, lse, q, k, v, T, Tp, NH, NKV, sl2, scale, gqs, iqs, iks, pq, tm);
    else
        k_flash_bwd_dq_wg<false><<<dim3(nt, (unsigned)NH, (unsigned)B), 128, sq, c->stream>>>(
            dq, dq16, cs, sn, dout, L2, D, o16, lse, q, k, v, T, Tp, NH, NKV, sl2, scale, gqs, iqs, iks, pq, tm);
    LAUNCHED(c);
    prof_phase(c, "attn bwd: flash dK dV");
    k_flash_bwd_dkv_wg<<<dim3(nt, (unsigned)NKV, (unsigned)B), 128, skv, c->stream>>>(
        dk, dv, dk16, dv16, cs, sn, dout, L2, D, q, k, v, T, Tp, NH, NKV, sl2, scale, gks, iqs, iks, pk, pv);
    LAUNCHED(c);
}
