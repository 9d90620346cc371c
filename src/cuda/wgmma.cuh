/* wgmma.cuh — Hopper (sm_90a) primitives the wgmma kernels share
 * (flash_sm90.cu's attention, gemm_sm90.cu's products): shared-memory
 * matrix descriptors, the wgmma fences, mbarriers, TMA loads and stores,
 * and the driver's tensor-map encoder looked up at run time (no libcuda
 * link). Device code compiles to nothing outside sm_90a (WG_SM90), so the
 * sm_80 pass of a multi-arch build carries empty kernels. */
#ifndef SMJ_CUDA_WGMMA_CUH
#define SMJ_CUDA_WGMMA_CUH
#include "cuda_common.cuh"
#include <cuda.h> /* CUtensorMap */
#include <cudaTypedefs.h>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_SM90 1
#endif

/* smem matrix descriptor, 128-byte swizzle: start >> 4 (bits 0-13), leading
 * byte offset >> 4 (16-29; unused here: one swizzle atom along the
 * contiguous dimension), stride byte offset >> 4 (32-45: 1024, the next
 * 8 rows), swizzle mode 1 (62-63). The high word is the same for every
 * tile here (WG_DESC_HI), so the kernels carry the low word alone (wg_lo)
 * and step through tiles by adding to it (a byte offset >> 4), and the
 * products pair it with the constant: fewer registers and instructions a
 * tile than whole 64-bit descriptors computed at each use. */
#define WG_DESC_HI 0x40000040u
__device__ __forceinline__ uint32_t wg_lo(uint32_t saddr) { return ((saddr & 0x3FFFF) >> 4) | (1u << 16); }
__device__ __forceinline__ void wg_fence() {
#ifdef WG_SM90
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_commit() {
#ifdef WG_SM90
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_wait0() {
#ifdef WG_SM90
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
/* writes by the generic proxy (cp.async) become visible to wgmma's reads */
__device__ __forceinline__ void wg_proxy_fence() {
#ifdef WG_SM90
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* ---- TMA (the tensor memory accelerator) and shared-memory barriers:
 * one thread asks for a whole box (64 columns of bf16 by up to 256 rows),
 * the copy engine writes it in the 128-byte swizzled layout wgmma reads
 * and signals an mbarrier with the bytes written; consumers wait on the
 * barrier's phase instead of a block barrier, and arrive on an "empty"
 * barrier when their products have read a stage. */
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#ifdef WG_SM90
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#ifdef WG_SM90
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/* the producer's arrival: the barrier's phase completes when bytes more have landed */
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
#ifdef WG_SM90
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar), "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#ifdef WG_SM90
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
#endif
}
/* waits until the barrier's phase with this parity has completed */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#ifdef WG_SM90
    uint32_t done = 0;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
#endif
}
/* the box at (c0, c1, c2) of a 3-D tensor map -> shared dst, completing on bar */
__device__ __forceinline__ void tma_load3(uint32_t dst, const CUtensorMap *tm, int c0, int c1, int c2, uint32_t bar) {
#ifdef WG_SM90
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
                 "%4}], [%5];\n" ::"r"(dst),
                 "l"((uint64_t)tm), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
#endif
}
/* the box at (c0, c1) of a 2-D tensor map -> shared dst, completing on bar */
__device__ __forceinline__ void tma_load2(uint32_t dst, const CUtensorMap *tm, int c0, int c1, uint32_t bar) {
#ifdef WG_SM90
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
                 "[%4];\n" ::"r"(dst),
                 "l"((uint64_t)tm), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
#endif
}
/* shared src -> the box at (c0, c1) of a 2-D tensor map (parts outside the
 * tensor are not written), in the thread's current bulk group */
__device__ __forceinline__ void tma_store2(const CUtensorMap *tm, int c0, int c1, uint32_t src) {
#ifdef WG_SM90
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"((uint64_t)tm),
                 "r"(c0), "r"(c1), "r"(src)
                 : "memory");
#endif
}
__device__ __forceinline__ void bulk_commit() {
#ifdef WG_SM90
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
/* waits until the thread's bulk stores have read their shared memory (READ)
 * or are complete */
template <bool READ> __device__ __forceinline__ void bulk_wait0() {
#ifdef WG_SM90
    if (READ) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
    else asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

/* The driver's cuTensorMapEncodeTiled, looked up once per context (NULL
 * where the driver has none). */
static inline PFN_cuTensorMapEncodeTiled_v12000 tmap_encoder(smj_cuda *c) {
    if (!c->tmap_looked) {
        c->tmap_looked = 1;
        void *fn = NULL;
        cudaDriverEntryPointQueryResult qr;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &qr) ==
                cudaSuccess &&
            qr == cudaDriverEntryPointSuccess)
            c->tmap_encode = fn;
        else
            (void)cudaGetLastError();
    }
    return (PFN_cuTensorMapEncodeTiled_v12000)c->tmap_encode;
}
#endif
