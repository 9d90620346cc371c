/* decode_bw.cu — what one batch-1 decode layer could cost on this card,
 * for the design of decode_block (2.96k tok/s with bf16 weights, ~26 us a
 * Llama 110M layer, latency-bound). A layer's bf16 weights (Wq|Wk|Wv, Wo,
 * Wgate|Wup, Wdown: 7.08M values, 14.2 MB) streamed in P = 5 phases with a
 * barrier after each (decode_block's shape), by
 *   grid:     every SM, a block each, a grid barrier (one 64-bit arrival
 *             counter, as decode_block's grid_sync);
 *   cluster:  one thread-block cluster of CS SMs (8, or 16 where the card
 *             allows non-portable sizes), barrier.cluster between phases;
 * reading 12 distinct layers (170 MB: mostly from DRAM) or one layer again
 * and again (from L2), by plain 16-byte loads (8 in flight a thread) or by
 * the copy engine (thread 0 keeping six 32 KB bulk copies in flight into
 * shared memory), and the barriers alone (no bytes); and by the grid with
 * each block's share of the next layer copied into shared memory while the
 * current one runs (k_grid_pf: two ~107 KB buffers, a bulk copy a phase;
 * optionally later layers asked of L2 too, and the dependent read of the
 * vector the phase before wrote after each barrier). Prints us a layer.
 * The questions: can one cluster (cheap barriers, DSMEM for the vectors)
 * stream a layer fast enough that ~9 us a layer (8k tok/s) is in reach,
 * and how far below decode_block's ~24 us can weights staged a layer ahead
 * take the grid?
 *   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/dbw bench/decode_bw.cu && /tmp/dbw
 * (-DDBW_PHASES=P for P phases a layer instead of 5).
 */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
namespace cg = cooperative_groups;

#include "bench_check.cuh"

/* PHASES: barriers a layer (decode_block has 5); -DDBW_PHASES=2 or 3 asks
 * what a design with fewer phases a layer could reach */
#ifndef DBW_PHASES
#define DBW_PHASES 5
#endif
enum { THREADS = 1024, UN = 8, PHASES = DBW_PHASES };

/* block `part` of `parts` reads its share of n16 16-byte words at w, UN
 * loads a thread in flight; the words folded into acc (kept: no dead code) */
__device__ __forceinline__ unsigned stream(const uint4 *w, long long n16, int part, int parts, unsigned acc) {
    const long long lo = n16 * part / parts, hi = n16 * (part + 1) / parts;
    for (long long i = lo + threadIdx.x; i < hi; i += (long long)UN * blockDim.x) {
        uint4 v[UN];
#pragma unroll
        for (int u = 0; u < UN; u++) {
            const long long j = i + (long long)u * blockDim.x;
            v[u] = j < hi ? __ldg(w + j) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < UN; u++) acc += v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    return acc;
}

/* waits until the mbarrier at shared address bar has completed the phase of parity par */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t par) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(par) : "memory");
}

/* The same bytes by the copy engine: thread 0 keeps NB bulk copies of up
 * to CH bytes in flight into shared memory (cp.async.bulk, an mbarrier a
 * stage); nothing reads them (the bytes' arrival is what is timed). c: the
 * block's running count of copies (the stages' parities). */
enum { NB = 6, CH = 32768 };
__device__ __forceinline__ void bulk(const uint4 *w, long long n16, int part, int parts, uint32_t sbuf, uint32_t sbar,
                                     unsigned &c) {
    if (threadIdx.x != 0) return;
    const long long lo = n16 * part / parts * 16, hi = n16 * (part + 1) / parts * 16;
    const char *g = (const char *)w;
    for (long long o = lo; o < hi; o += CH, c++) {
        const uint32_t st = c % NB, bar = sbar + 8 * st, n = (uint32_t)(hi - o < CH ? hi - o : CH);
        if (c >= NB) { /* the stage's previous copy has landed */
            const uint32_t par = ((c / NB) - 1) & 1;
            mbar_wait(bar, par);
        }
        asm volatile("{\n.reg .b64 t;\nmbarrier.arrive.expect_tx.shared::cta.b64 t, [%0], %1;\n}\n" ::"r"(bar), "r"(n)
                     : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                         sbuf + st * CH),
                     "l"(g + o), "r"(n), "r"(bar)
                     : "memory");
    }
}
/* thread 0: every copy asked for has landed */
__device__ __forceinline__ void bulk_drain(uint32_t sbar, unsigned c) {
    if (threadIdx.x != 0) return;
    for (unsigned k = c > NB ? c - NB : 0; k < c; k++) {
        const uint32_t bar = sbar + 8 * (k % NB), par = (k / NB) & 1;
        mbar_wait(bar, par);
    }
}
__device__ __forceinline__ void bulk_init(uint32_t sbar, int n = NB) {
    if (threadIdx.x == 0) {
        for (int i = 0; i < n; i++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(sbar + 8 * i) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
}

__device__ __forceinline__ void grid_bar(unsigned long long *bar, unsigned long long &target) {
    target += gridDim.x;
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(bar) : "memory");
        unsigned long long v;
        do {
            asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(bar) : "memory");
        } while ((long long)(v - target) < 0);
    }
    __syncthreads();
}

/* The launch's base count of the barrier (every block alike: none passes the
 * first barrier before all have started) */
__device__ __forceinline__ unsigned long long bar_base(unsigned long long *bar) {
    __shared__ unsigned long long base;
    if (threadIdx.x == 0) {
        unsigned long long v;
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(bar) : "memory");
        base = v - v % gridDim.x;
    }
    __syncthreads();
    return base;
}

/* L layers of nl 16-byte words each (layer l at w + (l % nd) nl: nd
 * distinct layers), PHASES phases a layer, a barrier after each */
template <bool BULK>
__global__ void __launch_bounds__(THREADS, 1) k_grid(const uint4 *w, long long nl, int nd, int L,
                                                     unsigned long long *bar, unsigned *out) {
    extern __shared__ __align__(128) unsigned char sm[];
    const uint32_t sbuf = (uint32_t)__cvta_generic_to_shared(sm), sbar = sbuf + NB * CH;
    unsigned c = 0;
    if (BULK) bulk_init(sbar);
    unsigned long long tgt = bar_base(bar);
    unsigned acc = 0;
    const long long np = nl / PHASES;
    for (int l = 0; l < L; l++)
        for (int ph = 0; ph < PHASES; ph++) {
            if (BULK) {
                bulk(w + (long long)(l % nd) * nl + ph * np, np, blockIdx.x, gridDim.x, sbuf, sbar, c);
                bulk_drain(sbar, c);
            } else {
                acc = stream(w + (long long)(l % nd) * nl + ph * np, np, blockIdx.x, gridDim.x, acc);
            }
            grid_bar(bar, tgt);
        }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

/* A layer's weights a layer ahead in shared memory: two buffers of a
 * block's share of a layer (~107 KB each), thread 0 asking the copy engine
 * for layer l + 1's share (one bulk copy a phase, an mbarrier each) when
 * layer l starts; a phase waits for its own copy only, reads it from shared
 * memory (every word, folded into acc) and, with XV, first reads the whole
 * vector the phase before wrote (VN floats; each block writes its slice
 * before the barrier) — the dependent exchange of a real phase. */
enum { VN = 2048 };
template <bool XV, int PF>
__global__ void __launch_bounds__(THREADS, 1) k_grid_pf(const uint4 *w, long long nl, int nd, int L,
                                                        unsigned long long *bar, unsigned *out, float *vec,
                                                        long long cap16) {
    extern __shared__ __align__(128) unsigned char sm[];
    const uint4 *s4 = (const uint4 *)sm;
    const uint32_t sbuf = (uint32_t)__cvta_generic_to_shared(sm), sbar = sbuf + 2 * (uint32_t)cap16 * 16;
    const long long np = nl / PHASES;
    const int part = blockIdx.x, parts = gridDim.x;
    bulk_init(sbar, 2 * PHASES);
    unsigned long long tgt = bar_base(bar);
    unsigned acc = 0;
    /* layer l's share into buffer l % 2: phase ph's words [lo, hi) after the phases before */
    auto ask = [&](int l) {
        if (threadIdx.x != 0 || l >= L) return;
        long long off = 0;
        for (int ph = 0; ph < PHASES; ph++) {
            const long long lo = np * part / parts, hi = np * (part + 1) / parts;
            const uint32_t bar8 = sbar + 8 * ((l & 1) * PHASES + ph), n = (uint32_t)((hi - lo) * 16);
            asm volatile("{\n.reg .b64 t;\nmbarrier.arrive.expect_tx.shared::cta.b64 t, [%0], %1;\n}\n" ::"r"(bar8), "r"(n)
                         : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                             sbuf + (uint32_t)(((l & 1) * cap16 + off) * 16)),
                         "l"(w + (long long)(l % nd) * nl + ph * np + lo), "r"(n), "r"(bar8)
                         : "memory");
            off += hi - lo;
        }
    };
    /* PF > 0: layers l + 2 .. l + 1 + PF asked of L2 too (cp.async.bulk.prefetch.L2) */
    auto l2 = [&](int l) {
        if (threadIdx.x != 0 || l >= L) return;
        const long long lo = nl * part / parts, hi = nl * (part + 1) / parts;
        for (long long o = lo; o < hi; o += CH / 16) {
            const uint32_t n = (uint32_t)((hi - o < CH / 16 ? hi - o : CH / 16) * 16);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(w + (long long)(l % nd) * nl + o), "r"(n)
                         : "memory");
        }
    };
    ask(0);
    for (int k = 1; k <= PF; k++) l2(k);
    for (int l = 0; l < L; l++) {
        ask(l + 1);
        if (PF) l2(l + 1 + PF);
        long long off = 0;
        for (int ph = 0; ph < PHASES; ph++) {
            const long long lo = np * part / parts, hi = np * (part + 1) / parts;
            if (XV && (l | ph)) /* the vector the phase before wrote */
                for (int i = threadIdx.x; i < VN; i += blockDim.x) acc += __float_as_uint(__ldcg(vec + i));
            const uint32_t bar8 = sbar + 8 * ((l & 1) * PHASES + ph), par = (l >> 1) & 1;
            mbar_wait(bar8, par);
            for (long long i = threadIdx.x; i < hi - lo; i += blockDim.x) {
                uint4 v = s4[(l & 1) * cap16 + off + i];
                acc += v.x ^ v.y ^ v.z ^ v.w;
            }
            off += hi - lo;
            if (XV) { /* this block's slice of the phase's output */
                const int per = (VN + parts - 1) / parts;
                for (int i = threadIdx.x; i < per && part * per + i < VN; i += blockDim.x) vec[part * per + i] = (float)(acc & 7);
            }
            grid_bar(bar, tgt);
        }
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

template <bool BULK>
__global__ void __launch_bounds__(THREADS, 1) k_cluster(const uint4 *w, long long nl, int nd, int L, unsigned *out) {
    extern __shared__ __align__(128) unsigned char sm[];
    const uint32_t sbuf = (uint32_t)__cvta_generic_to_shared(sm), sbar = sbuf + NB * CH;
    unsigned c = 0;
    if (BULK) bulk_init(sbar);
    cg::cluster_group cl = cg::this_cluster();
    const int part = (int)cl.block_rank(), parts = (int)cl.num_blocks();
    unsigned acc = 0;
    const long long np = nl / PHASES;
    for (int l = 0; l < L; l++)
        for (int ph = 0; ph < PHASES; ph++) {
            if (BULK) {
                bulk(w + (long long)(l % nd) * nl + ph * np, np, part, parts, sbuf, sbar, c);
                bulk_drain(sbar, c);
            } else {
                acc = stream(w + (long long)(l % nd) * nl + ph * np, np, part, parts, acc);
            }
            cl.sync();
        }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

static float median(float *t, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { float x = t[j]; t[j] = t[j - 1]; t[j - 1] = x; }
    return t[n / 2];
}

int main(void) {
    int dev = 0, nsm = 0;
    CK(cudaSetDevice(dev));
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, dev));
    nsm = pr.multiProcessorCount;
    printf("device: %s, %d SMs, L2 %d MB\n", pr.name, nsm, pr.l2CacheSize >> 20);
    const long long layer_bytes = 7077888LL * 2; /* Llama 110M: 7.08M bf16 weights a layer */
    const long long nl = layer_bytes / 16 / PHASES * PHASES;
    const int L = 12;
    uint4 *w;
    unsigned *out;
    unsigned long long *bar;
    CK(cudaMalloc(&w, (size_t)nl * 16 * L));
    CK(cudaMemset(w, 1, (size_t)nl * 16 * L));
    CK(cudaMalloc(&out, (size_t)nsm * THREADS * sizeof(unsigned)));
    CK(cudaMalloc(&bar, sizeof(unsigned long long)));
    CK(cudaMemset(bar, 0, sizeof(unsigned long long)));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const int smem = NB * CH + 8 * NB;
    CK(cudaFuncSetAttribute(k_cluster<false>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    CK(cudaFuncSetAttribute(k_cluster<true>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    CK(cudaFuncSetAttribute(k_cluster<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CK(cudaFuncSetAttribute(k_grid<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    /* a block's share of a layer, in 16-byte words (each phase's share at most np / nsm + 1) */
    long long cap16 = PHASES * (nl / PHASES / nsm + 1);
    const int pf_smem = (int)(2 * cap16 * 16 + 8 * 2 * PHASES);
    float *vec;
    CK(cudaMalloc(&vec, VN * sizeof(float)));
    CK(cudaMemset(vec, 0, VN * sizeof(float)));
    CK(cudaFuncSetAttribute(k_grid_pf<false, 0>, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem));
    CK(cudaFuncSetAttribute(k_grid_pf<true, 0>, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem));
    CK(cudaFuncSetAttribute(k_grid_pf<false, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem));
    CK(cudaFuncSetAttribute(k_grid_pf<false, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem));
    CK(cudaFuncSetAttribute(k_grid_pf<true, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, pf_smem));
    printf("a layer ahead in smem: %d bytes of shared memory a block\n", pf_smem);

    /* what: label; cs: cluster size (0: the grid); n: words a layer (0:
     * barriers only); nd: distinct layers (1: from L2, L: from DRAM); bulk:
     * the copy engine; th: threads a block */
    struct run { const char *what; int cs; long long n; int nd, bulk, th; };
    const run runs[] = {
        {"grid, barriers only", 0, 0, 1, 0, 512},
        {"grid, L2, loads 512 thr", 0, nl, 1, 0, 512},
        {"grid, DRAM, loads 512 thr", 0, nl, L, 0, 512},
        {"grid, DRAM, loads 1024 thr", 0, nl, L, 0, 1024},
        {"grid, DRAM, bulk copies", 0, nl, L, 1, 128},
        {"grid, DRAM, a layer ahead in smem", 0, nl, L, 2, 512},
        {"grid, the same + vector exchange", 0, nl, L, 3, 512},
        {"grid, L2, a layer ahead in smem", 0, nl, 1, 2, 512},
        {"grid, DRAM, smem 1 ahead + L2 2 ahead", 0, nl, L, 4, 512},
        {"grid, DRAM, smem 1 ahead + L2 3 ahead", 0, nl, L, 5, 512},
        {"grid, the same + vector exchange", 0, nl, L, 6, 512},
        {"cluster 8, barriers only", 8, 0, 1, 0, 512},
        {"cluster 8, L2, loads 1024 thr", 8, nl, 1, 0, 1024},
        {"cluster 8, DRAM, loads 1024 thr", 8, nl, L, 0, 1024},
        {"cluster 8, L2, bulk copies", 8, nl, 1, 1, 128},
        {"cluster 8, DRAM, bulk copies", 8, nl, L, 1, 128},
        {"cluster 16, barriers only", 16, 0, 1, 0, 512},
        {"cluster 16, L2, loads 1024 thr", 16, nl, 1, 0, 1024},
        {"cluster 16, DRAM, loads 1024 thr", 16, nl, L, 0, 1024},
        {"cluster 16, L2, bulk copies", 16, nl, 1, 1, 128},
        {"cluster 16, DRAM, bulk copies", 16, nl, L, 1, 128},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        const run &R = runs[r];
        float t[7];
        int ok = 1;
        for (int it = 0; it < 9 && ok; it++) {
            CK(cudaEventRecord(e0));
            cudaError_t e;
            if (!R.cs && R.bulk >= 2) {
                void *args[] = {(void *)&w, (void *)&R.n, (void *)&R.nd, (void *)&L, (void *)&bar, (void *)&out,
                                (void *)&vec, (void *)&cap16};
                void *fn = R.bulk == 2 ? (void *)k_grid_pf<false, 0> : R.bulk == 3 ? (void *)k_grid_pf<true, 0>
                         : R.bulk == 4 ? (void *)k_grid_pf<false, 1> : R.bulk == 5 ? (void *)k_grid_pf<false, 2>
                                       : (void *)k_grid_pf<true, 2>;
                e = cudaLaunchCooperativeKernel(fn, dim3(nsm), dim3(R.th), args, pf_smem, 0);
            } else if (!R.cs) {
                void *args[] = {(void *)&w, (void *)&R.n, (void *)&R.nd, (void *)&L, (void *)&bar, (void *)&out};
                e = cudaLaunchCooperativeKernel(R.bulk ? (void *)k_grid<true> : (void *)k_grid<false>, dim3(nsm),
                                                dim3(R.th), args, R.bulk ? smem : 0, 0);
            } else {
                cudaLaunchConfig_t cfg = {};
                cudaLaunchAttribute at[1];
                at[0].id = cudaLaunchAttributeClusterDimension;
                at[0].val.clusterDim.x = R.cs;
                at[0].val.clusterDim.y = 1;
                at[0].val.clusterDim.z = 1;
                cfg.gridDim = dim3(R.cs);
                cfg.blockDim = dim3(R.th);
                cfg.dynamicSmemBytes = R.bulk ? smem : 0;
                cfg.attrs = at;
                cfg.numAttrs = 1;
                e = R.bulk ? cudaLaunchKernelEx(&cfg, k_cluster<true>, (const uint4 *)w, R.n, R.nd, L, out)
                           : cudaLaunchKernelEx(&cfg, k_cluster<false>, (const uint4 *)w, R.n, R.nd, L, out);
            }
            if (e != cudaSuccess) {
                printf("%-34s not launched: %s\n", R.what, cudaGetErrorString(e));
                cudaGetLastError();
                ok = 0;
                break;
            }
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (it >= 2) t[it - 2] = ms;
        }
        if (!ok) continue;
        const float us = median(t, 7) * 1000.0f / L;
        const double gbs = R.n ? (double)R.n * 16 / (us * 1e-6) / 1e9 : 0;
        printf("%-34s %8.2f us a layer (%d barriers), %7.0f GB/s\n", R.what, us, PHASES, gbs);
        fflush(stdout);
    }
    return 0;
}
