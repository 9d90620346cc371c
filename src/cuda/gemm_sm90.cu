/* gemm_sm90.cu — our own bf16 product for Hopper (sm_90a), the forward's
 * C[M,N] = A[M,K] · B[N,K]^T with a bf16 C (X W^T, W stored [out, in]; both
 * operands K-major, as wgmma reads them), fp32 accumulation: the seam for
 * products with epilogues cuBLASLt has not (SwiGLU, RoPE). Off by default
 * (SMJ_CUDA_OWN_GEMM=0): in the Llama 110M step on an H200 cuBLASLt's timed
 * choice is faster (below). SMJ_CUDA_OWN_GEMM=1 takes it for forward
 * products whose tiles fill the GPU, =2 for every shape it can (the tests).
 *
 * A persistent block an SM, three warpgroups:
 *   producer   (40 registers, setmaxnreg) one thread asks the copy engine
 *              (TMA, 128-byte swizzle) for each 64-wide K slice of a
 *              tile's A (128 rows) and B (256 rows) into a ring of three
 *              stages: a "full" mbarrier a stage with its bytes, an
 *              "empty" one with an arrival from each consumer;
 *   consumers  (232 registers) own 64 rows of the 128 x 256 tile each and
 *              issue m64n256k16 wgmma from shared memory, freeing a stage
 *              once the products after it are issued and it is read
 *              (wait_group 1). The 64 x 256 result goes as bf16 into four
 *              64 x 64 swizzled blocks of shared memory (conflict-free from
 *              the accumulator layout) and out by TMA stores, which drain
 *              while the consumer multiplies its next tile.
 * Tiles are taken n-fastest (a block's neighbours share A's rows; B, a
 * weight, stays in L2). Rows, columns and K past the tensors are the copy
 * engine's: loads fill zeros, stores clip, so any M, N, K (lda, ldb, ldc
 * multiples of 8, 16-byte aligned pointers) are served. Deterministic: each
 * output tile has one owner and a fixed K order.
 *
 * Measured on an H200 (bench/RESULTS.md round 33). In the Llama 110M step
 * (--bf16-matmul --fp16-activations --fused-ce, T = 1024, B = 32), a call:
 * Q|K|V 182 us against cuBLASLt's 160, gate|up 318 / 274, Wo 67 / 61, the
 * LM head's chunks ~420 / ~137 (train tok/s 0.964x with
 * SMJ_CUDA_OWN_GEMM=1). Alone (bench/gemm_own.cu, sustained, uniform
 * operands) it is level: 0.94, 1.00, 1.03 (down), 1.08 (Wo) of cuBLASLt's
 * speed, the LM head chunk 0.49 (n-fastest tiles stream the 50 MB weight
 * past each row block); the same bits. In the step cuBLASLt's products run
 * 15-20% faster than alone (higher clocks), ours ~5%; a likely reason: its
 * epilogue is not overlapped with the tensor cores (both consumers store
 * at once). */
#include "wgmma.cuh"

typedef __nv_bfloat16 bf16;
enum { GM_BM = 128, GM_BN = 256, GM_BK = 64, GM_NTH = 384, GM_ST = 3 };
#define GM_A_BYTES (GM_BM * GM_BK * 2u)
#define GM_STAGE (GM_A_BYTES + GM_BN * GM_BK * 2u)
#define GM_E_BYTES (64u * GM_BN * 2u) /* a consumer's output block */
#define GM_SMEM ((size_t)GM_ST * GM_STAGE + 2 * GM_E_BYTES + 1024 + 64)

/* d (64 x 256 fp32, accumulate when acc) += A (64 rows, smem) · B^T (256 rows, smem), k16 */
__device__ __forceinline__ void wg_ss256(float d[128], uint32_t a, uint32_t b, int acc) {
#ifdef WG_SM90
    asm volatile(
        "{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %130, 0;\n"
        "mov.b64 da, {%128, %131};\nmov.b64 db, {%129, %131};\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, "
        "%12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
        "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
        "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, "
        "%78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, "
        "%100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, "
        "%118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, da, db, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
          "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
          "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),
          "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
          "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),
          "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),
          "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
          "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]),
          "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]),
          "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]),
          "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a), "r"(b), "r"(acc), "r"(WG_DESC_HI));
#endif
}

/* ta: A [M rows][K], boxes 64 x 128; tb: B [N rows][K], boxes 64 x 256; tc:
 * C [M rows][N], boxes 64 x 64 (all bf16, 128-byte swizzle) */
__global__ void __launch_bounds__(GM_NTH, 1)
    k_gemm_nt_sm90(int M, int N, int K, const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
                   const __grid_constant__ CUtensorMap tc) {
#ifdef WG_SM90
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t base = ((uint32_t)__cvta_generic_to_shared(smem) + 1023) & ~1023u,
                   eb = base + GM_ST * GM_STAGE, full = eb + 2 * GM_E_BYTES, empty = full + 8 * GM_ST;
    const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
    const int nN = (N + GM_BN - 1) / GM_BN, nK = (K + GM_BK - 1) / GM_BK;
    const int ntiles = (M + GM_BM - 1) / GM_BM * nN;
    if (threadIdx.x == 0) {
        for (int s = 0; s < GM_ST; s++) mbar_init(full + 8 * s, 1), mbar_init(empty + 8 * s, 2);
        mbar_init_fence();
    }
    __syncthreads();
    if (wg == 0) { /* the producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid == 0) {
            int it = 0;
            for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
                const int m0 = tile / nN * GM_BM, n0 = tile % nN * GM_BN;
                for (int kb = 0; kb < nK; kb++, it++) {
                    const int s = it % GM_ST, f = it / GM_ST;
                    if (f > 0) mbar_wait(empty + 8 * s, (uint32_t)(f - 1) & 1);
                    mbar_expect(full + 8 * s, GM_STAGE); /* boxes past the tensor count whole (zero-filled) */
                    tma_load2(base + s * GM_STAGE, &ta, kb * GM_BK, m0, full + 8 * s);
                    tma_load2(base + s * GM_STAGE + GM_A_BYTES, &tb, kb * GM_BK, n0, full + 8 * s);
                }
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int c = wg - 1, r = 16 * (tid >> 5) + ((tid & 31) >> 2), t = tid & 3;
    const uint32_t e = eb + c * GM_E_BYTES; /* four 64 x 64 blocks of 8 KB */
    float d[128];
    int it = 0;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int m0 = tile / nN * GM_BM, n0 = tile % nN * GM_BN;
        for (int kb = 0; kb < nK; kb++, it++) {
            const int s = it % GM_ST;
            mbar_wait(full + 8 * s, (uint32_t)(it / GM_ST) & 1);
            const uint32_t da = wg_lo(base + s * GM_STAGE + c * 64 * 128), db = wg_lo(base + s * GM_STAGE + GM_A_BYTES);
            wg_fence();
#pragma unroll
            for (int k = 0; k < 4; k++) wg_ss256(d, da + 2 * k, db + 2 * k, kb | k);
            wg_commit();
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            if (kb > 0 && tid == 0) mbar_arrive(empty + 8 * ((it - 1) % GM_ST)); /* the stage before is read */
        }
        wg_wait0();
#pragma unroll
        for (int i = 0; i < 128; i++) asm volatile("" : "+f"(d[i])::"memory");
        if (tid == 0) mbar_arrive(empty + 8 * ((it - 1) % GM_ST));
        /* the last tile's stores have read e; then row r (and r + 8) of each
         * block: its 16-byte chunk j % 8 at chunk (j % 8) ^ (r % 8) */
        if (tid == 0) bulk_wait0<true>();
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + c) : "memory");
#pragma unroll
        for (int j = 0; j < 32; j++) {
            const uint32_t at = e + (j >> 3) * 8192 + r * 128 + (uint32_t)(((j & 7) ^ (r & 7)) << 4) + 4 * t;
            __nv_bfloat162 v0 = __floats2bfloat162_rn(d[4 * j], d[4 * j + 1]);
            __nv_bfloat162 v1 = __floats2bfloat162_rn(d[4 * j + 2], d[4 * j + 3]);
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at), "r"(*(uint32_t *)&v0) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at + 8 * 128), "r"(*(uint32_t *)&v1) : "memory");
        }
        wg_proxy_fence(); /* the generic proxy's writes, visible to the copy engine */
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + c) : "memory");
        if (tid == 0) {
#pragma unroll
            for (int q = 0; q < 4; q++) tma_store2(&tc, n0 + 64 * q, m0 + 64 * c, e + q * 8192);
            bulk_commit();
        }
    }
    if (tid == 0) bulk_wait0<false>();
#else
    (void)M; (void)N; (void)K; (void)ta; (void)tb; (void)tc;
#endif
}

/* a 2-D tensor map over bf16 [rows][cols] at p (rows ld elements apart),
 * boxes of 64 columns x box_rows, 128-byte swizzle */
static int tmap2(smj_cuda *c, CUtensorMap *m, const bf16 *p, int64_t cols, int64_t rows, int64_t ld, int box_rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = tmap_encoder(c);
    if (!enc || (uintptr_t)p % 16 || ld % 8) return 0;
    const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, str[1] = {(cuuint64_t)ld * 2};
    const cuuint32_t box[2] = {64, (cuuint32_t)box_rows}, es[2] = {1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)p, dim, str, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

int gemm_nt_sm90(smj_cuda *c, int64_t M, int64_t N, int64_t K, const bf16 *A, int64_t lda, const bf16 *B, int64_t ldb,
                 bf16 *C, int64_t ldc) {
#ifdef SMJ_SM90A
    if (!c->own_gemm || c->cc != 90 || !c->tma || M <= 0 || N <= 0 || K <= 0) return 0;
    const int64_t tiles = (M + GM_BM - 1) / GM_BM * ((N + GM_BN - 1) / GM_BN);
    /* SMJ_CUDA_OWN_GEMM=1: where the tiles fill the SMs at least once; 2
     * (the tests): every shape */
    if (c->own_gemm == 1 && (tiles < c->n_sm || N < GM_BN)) return 0;
    CUtensorMap ta, tb, tcm;
    if (!tmap2(c, &ta, A, K, M, lda, GM_BM) || !tmap2(c, &tb, B, K, N, ldb, GM_BN) || !tmap2(c, &tcm, C, N, M, ldc, 64))
        return 0;
    if (GM_SMEM > c->smem_optin || !smem_ok(c, (const void *)k_gemm_nt_sm90, GM_SMEM)) return 0;
    prof_phase(c, "matmul NT (fwd, own)");
    const unsigned grid = (unsigned)(tiles < c->n_sm ? tiles : c->n_sm);
    k_gemm_nt_sm90<<<grid, GM_NTH, GM_SMEM, c->stream>>>((int)M, (int)N, (int)K, ta, tb, tcm);
    LAUNCHED(c);
    return 1;
#else
    (void)c; (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
    return 0;
#endif
}
