/* attention.cu — the attention ops of the CUDA backend (causal softmax
 * attention, GQA, KV-cache decoding; forward and backward). Which kernel
 * runs when is described at the top of cuda_backend.cu and in docs/CUDA.md.
 */
#include "cuda_common.cuh"

/* ------------------------------------------------------------ attention */

/* Tiles of TQ queries x TK keys, 128 threads (4 warps). In a tile product
 * thread (warp w, lane l) owns rows w + 4r (r < 8) and column l, or for
 * [rows x HS] accumulators rows w + 4r and dims l + 32j (j < NC, NC =
 * ceil(HS/32)). Shared tiles are [32][LD] with LD = HS rounded up to odd
 * (conflict-free column reads); score tiles are [32][33]. */
#define AT 32
#define ATHREADS 128
#define AROWS 8 /* rows per thread: AT / 4 warps */

__device__ __forceinline__ void load_rows(float *dst, int ld, const float *src, int64_t row_stride, int nrows,
                                          int HS) {
    for (int e = threadIdx.x; e < AT * HS; e += ATHREADS) {
        int r = e / HS, d = e - r * HS;
        dst[r * ld + d] = r < nrows ? src[(int64_t)r * row_stride + d] : 0.0f;
    }
}

/* s[r] = X[w+4r] · Y[lane] over HS. */
__device__ __forceinline__ void tile_dot(float s[AROWS], const float *X, const float *Y, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < AROWS; r++) s[r] = 0;
    const float *y = Y + lane * ld;
    for (int d = 0; d < HS; d++) {
        float yv = y[d];
#pragma unroll
        for (int r = 0; r < AROWS; r++) s[r] += X[(w + 4 * r) * ld + d] * yv;
    }
}

/* acc[r][j] += sum_k P[w+4r][k] · V[k][lane+32j]  (P [32][33], V [32][ld]) */
template <int NC>
__device__ __forceinline__ void tile_pv(float acc[AROWS][NC], const float *P, const float *V, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int k = 0; k < AT; k++) {
        float v[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) v[j] = lane + 32 * j < HS ? V[k * ld + lane + 32 * j] : 0.0f;
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float p = P[(w + 4 * r) * 33 + k];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] += p * v[j];
        }
    }
}

/* acc[r][j] += sum_i P[i][w+4r] · X[i][lane+32j]  (the transposed product) */
template <int NC>
__device__ __forceinline__ void tile_ptx(float acc[AROWS][NC], const float *P, const float *X, int ld, int HS) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int i = 0; i < AT; i++) {
        float x[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) x[j] = lane + 32 * j < HS ? X[i * ld + lane + 32 * j] : 0.0f;
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float p = P[i * 33 + w + 4 * r];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] += p * x[j];
        }
    }
}

/* Forward: one block per (query tile, head, batch). */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_fwd(float *out, float *lse, const float *q, const float *k,
                                                            const float *v, int Tq, int Tk, int NH, int NKV, int HS,
                                                            int64_t kv_bstride, float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Qs = sh, *Ks = Qs + AT * ld, *Vs = Ks + AT * ld, *P = Vs + AT * ld; /* P [32][33] */
    float *row_m = P + AT * 33, *row_l = row_m + AT, *row_a = row_l + AT;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, grp = NH / NKV, kvh = h / grp;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0 = qt * AT, nq = Tq - t0 < AT ? Tq - t0 : AT, off = Tk - Tq;
    const float *qb = q + (((int64_t)b * Tq + t0) * NH + h) * HS;
    const float *kb = k + b * kv_bstride + (int64_t)kvh * HS, *vb = v + b * kv_bstride + (int64_t)kvh * HS;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    load_rows(Qs, ld, qb, qstride, nq, HS);
    if (threadIdx.x < AT) { row_m[threadIdx.x] = -INFINITY; row_l[threadIdx.x] = 0; }
    float acc[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[r][j] = 0;
    int last_key = off + t0 + nq - 1; /* the last key any row of this tile sees */
    for (int k0 = 0; k0 <= last_key; k0 += AT) {
        int nk = Tk - k0 < AT ? Tk - k0 : AT;
        __syncthreads();
        load_rows(Ks, ld, kb + (int64_t)k0 * kstride, kstride, nk, HS);
        load_rows(Vs, ld, vb + (int64_t)k0 * kstride, kstride, nk, HS);
        __syncthreads();
        float s[AROWS];
        tile_dot(s, Qs, Ks, ld, HS);
        /* online softmax: warp w owns rows w + 4r; lane = key */
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            int i = w + 4 * r, key = k0 + lane;
            int ok = i < nq && key <= off + t0 + i;
            float sc = ok ? s[r] * scale : -INFINITY;
            float mo = row_m[i], mn = fmaxf(mo, warp_max(sc));
            float p = ok ? expf(sc - mn) : 0.0f;
            float ps = warp_sum(p);
            P[i * 33 + lane] = p;
            if (lane == 0) {
                float a = mn == -INFINITY ? 1.0f : expf(mo - mn); /* mo = -inf -> 0 */
                row_a[i] = a;
                row_l[i] = row_l[i] * a + ps;
                row_m[i] = mn;
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            float a = row_a[w + 4 * r];
#pragma unroll
            for (int j = 0; j < NC; j++) acc[r][j] *= a;
        }
        tile_pv<NC>(acc, P, Vs, ld, HS);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nq) continue;
        float l = row_l[i], inv = 1.0f / l;
        float *o = out + (((int64_t)b * Tq + t0 + i) * NH + h) * HS;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) o[lane + 32 * j] = acc[r][j] * inv;
        if (lane == 0) lse[((int64_t)b * NH + h) * Tq + t0 + i] = row_m[i] + logf(l);
    }
}

static size_t att_smem(int HS, int tiles, int ptiles) {
    return sizeof(float) * ((size_t)tiles * AT * (HS | 1) + (size_t)ptiles * AT * 33 + 3 * AT);
}

int smem_ok(smj_cuda *c, const void *fn, size_t bytes) {
    if (bytes > c->smem_optin) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: these sizes need %zu bytes of shared memory per block, the GPU has %zu", c->op,
               bytes, c->smem_optin);
        return 0;
    }
    if (bytes > 48 * 1024) return CK(c, cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 1;
}

static int att_args_ok(smj_cuda *c, int NH, int NKV, int HS) {
    if (HS < 1 || HS > 256 || NKV < 1 || NH % NKV != 0) {
        record(c, SMJ_ERR_UNSUPPORTED, "%s: head size %d (must be 1..256) or heads %d/%d not supported", c->op, HS,
               NH, NKV);
        return 0;
    }
    return 1;
}

/* attention through cuBLAS products (below); when it applies */
static int att_use_gemm(smj_cuda *c, int Tq, int Tk, int NH) {
    return c->attn != ATTN_FUSED && Tq >= 16 && (int64_t)NH * Tq * Tk * 10 <= SMJ_CUDA_ATT_SCORES;
}
static void att_fwd_gemm(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale);
static void att_bwd_gemm(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale);
static void att_fwd_bf16(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale);
static void att_bwd_bf16(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale);

/* Decoding, one query per (batch, head) (Tq = 1): the keys are split into
 * chunks of DCH across blocks (grid [splits, NH, B]), so a long cache
 * keeps every SM busy instead of one block per head walking all keys
 * (flash-decoding). In a block, warp w owns keys w, w + 4, ... of the
 * chunk (DCH / 4 of them, their loads issued together): it scores them
 * (lanes over HS), and after the block's max and sum it accumulates their
 * p · v rows (lane l holds dims l + 32j, j < NC); the four warps' rows are
 * summed in shared memory. Each block writes its chunk's max m, sum l of
 * exp(score - m) and unnormalized output o[HS] to part [B, NH, splits,
 * HS + 2]; k_att_decode_merge rescales and combines them. */
#define DCH 32
#define DW (DCH / 4) /* keys per warp */
template <int NC>
__global__ void __launch_bounds__(128) k_att_decode(float *part, const float *q, const float *k, const float *v, int Tk,
                                                    int NH, int NKV, int HS, int64_t kv_bstride, float scale,
                                                    int splits, const int32_t *pos) {
    __shared__ float qs[32 * NC], red[4], os[4][32 * NC];
    if (pos) Tk = *pos + 1; /* decode_attention: the key count is data; later chunks are empty */
    int s = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t ld = (int64_t)NKV * HS;
    const float *kb = k + b * kv_bstride + (int64_t)kvh * HS, *vb = v + b * kv_bstride + (int64_t)kvh * HS;
    int j0 = s * DCH, n = Tk - j0 < DCH ? Tk - j0 : DCH;
    for (int d = threadIdx.x; d < 32 * NC; d += 128) qs[d] = d < HS ? q[((int64_t)b * NH + h) * HS + d] * scale : 0;
    __syncthreads();
    float sc[DW];
#pragma unroll
    for (int i = 0; i < DW; i++) {
        int j = w + 4 * i;
        float acc = 0;
        if (j < n) {
            const float *kr = kb + (int64_t)(j0 + j) * ld;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                if (d < HS) acc += qs[d] * kr[d];
            }
        }
        sc[i] = j < n ? warp_sum(acc) : -INFINITY;
    }
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < DW; i++) m = fmaxf(m, sc[i]);
    if (lane == 0) red[w] = m;
    __syncthreads();
    m = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
    __syncthreads();
    float l = 0, o[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) o[c] = 0;
#pragma unroll
    for (int i = 0; i < DW; i++) {
        int j = w + 4 * i;
        if (j >= n) break;
        float p = expf(sc[i] - m);
        l += p;
        const float *vr = vb + (int64_t)(j0 + j) * ld;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < HS) o[c] += p * vr[d];
        }
    }
    if (lane == 0) red[w] = l;
#pragma unroll
    for (int c = 0; c < NC; c++) os[w][lane + 32 * c] = o[c];
    __syncthreads();
    float *pr = part + (((int64_t)b * NH + h) * splits + s) * (HS + 2);
    for (int d = threadIdx.x; d < HS; d += 128) pr[2 + d] = os[0][d] + os[1][d] + os[2][d] + os[3][d];
    if (threadIdx.x == 0) { pr[0] = m; pr[1] = red[0] + red[1] + red[2] + red[3]; }
}

/* out [B,1,NH,HS] and lse [B,NH,1] from the chunks' (m, l, o): grid [NH, B]. */
__global__ void k_att_decode_merge(float *out, float *lse, const float *part, int NH, int HS, int splits) {
    int h = blockIdx.x, b = blockIdx.y;
    const float *pr = part + ((int64_t)b * NH + h) * splits * (HS + 2);
    float M = -INFINITY, L = 0;
    for (int s = 0; s < splits; s++) M = fmaxf(M, pr[s * (HS + 2)]);
    for (int s = 0; s < splits; s++) L += pr[s * (HS + 2) + 1] * expf(pr[s * (HS + 2)] - M);
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float o = 0;
        for (int s = 0; s < splits; s++) o += pr[s * (HS + 2) + 2 + d] * expf(pr[s * (HS + 2)] - M);
        out[((int64_t)b * NH + h) * HS + d] = o / L;
    }
    if (threadIdx.x == 0) lse[(int64_t)b * NH + h] = M + logf(L);
}

static void att_decode(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                       int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    int splits = (Tk + DCH - 1) / DCH;
    float *part = (float *)scratch(c, sizeof(float) * (size_t)B * NH * splits * (HS + 2));
    if (!part) return;
    dim3 grid((unsigned)splits, (unsigned)NH, (unsigned)B);
#define F(NC)                                                                                                  \
    k_att_decode<NC><<<grid, 128, 0, c->stream>>>(part, q, k, v, Tk, NH, NKV, HS, kv_bstride, scale, splits, NULL)
    NC_DISPATCH(HS, F);
#undef F
    LAUNCHED(c);
    k_att_decode_merge<<<dim3((unsigned)NH, (unsigned)B), HS < 32 ? 32 : (HS + 31) / 32 * 32, 0, c->stream>>>(
        out, lse, part, NH, HS, splits);
    LAUNCHED(c);
}

/* decode_attention's first step: p = *pos; q and k rotated at p as
 * rope_fwd does (no tables: none), then cache rows p of kc, vc = k, v. One
 * block. */
__global__ void k_decode_store(float *q, float *k, const float *v, float *kc, float *vc, const float *cs,
                               const float *sn, const int32_t *pos, int NH, int NKV, int HS, int cap) {
    int p = *pos, h2 = HS / 2, nq = NH * h2, nk = NKV * h2;
    int64_t KD = (int64_t)NKV * HS;
    if (p < 0 || p >= cap) return; /* outside the contract: no write out of the caches (k_att_decode reads none) */
    if (cs) {
        for (int idx = threadIdx.x; idx < nq + nk; idx += blockDim.x) {
            int j = idx < nq ? idx : idx - nq, i = j % h2;
            float *x = (idx < nq ? q : k) + (int64_t)(j / h2) * HS;
            int64_t tp = (int64_t)p * h2 + i;
            float o0, o1;
            rope_rot(x[i], x[i + h2], cs[tp], 1.0f * sn[tp], o0, o1);
            x[i] = o0;
            x[i + h2] = o1;
        }
        __syncthreads(); /* k rotated (by any thread) before it is copied */
    }
    for (int64_t i = threadIdx.x; i < KD; i += blockDim.x) {
        kc[(int64_t)p * KD + i] = k[i];
        vc[(int64_t)p * KD + i] = v[i];
    }
}

/* The position is read on the device, so a recorded graph replays for any
 * position: the key chunks are laid out for the whole cache (cap), and
 * those past the position come out empty (max -inf, sum 0), which the
 * merge adds exactly: the result equals attention_fwd's decode path bit for
 * bit. */
void cu_decode_attention(const smj_exec *ex, float *out, float *q, float *k, const float *v, float *kc, float *vc,
                         const float *cs, const float *sn, const int32_t *pos, int NH, int NKV, int HS, int cap,
                         float scale) {
    OP_BEGIN("decode_attention");
    if (!att_args_ok(c, NH, NKV, HS)) return;
    if (cap <= 0) { op_end(c); return; }
    if (cs && HS % 2) {
        record(c, SMJ_ERR_UNSUPPORTED, "decode_attention: rotary tables need an even head size, got %d", HS);
        return;
    }
    k_decode_store<<<1, 256, 0, c->stream>>>(q, k, v, kc, vc, cs, sn, pos, NH, NKV, HS, cap);
    LAUNCHED(c);
    int splits = (cap + DCH - 1) / DCH;
    size_t np = (size_t)NH * splits * (HS + 2);
    float *part = (float *)scratch(c, sizeof(float) * (np + (size_t)NH));
    if (!part) return;
    dim3 grid((unsigned)splits, (unsigned)NH, 1);
    int64_t KD = (int64_t)NKV * HS;
#define F(NC)                                                                                                  \
    k_att_decode<NC><<<grid, 128, 0, c->stream>>>(part, q, kc, vc, cap, NH, NKV, HS, (int64_t)cap * KD, scale, \
                                                  splits, pos)
    NC_DISPATCH(HS, F);
#undef F
    LAUNCHED(c);
    k_att_decode_merge<<<dim3((unsigned)NH, 1), HS < 32 ? 32 : (HS + 31) / 32 * 32, 0, c->stream>>>(
        out, part + np, part, NH, HS, splits);
    LAUNCHED(c);
    op_end(c);
}

/* ------------------------------------------------------------ strided rows
 *
 * q, k, v (and dq, dk, dv) as column ranges of fused [rows, W] buffers
 * (GPT-2's q|k|v product). Flash attention takes them as they are: its
 * bf16 casts read the strided rows, its backward kernels write dq, dk, dv
 * at their row strides. The other paths get dense rows: copied into
 * stream-ordered temporary memory (cudaMemcpy2DAsync), the op run on them,
 * the backward's gradients copied back into their strided rows. */
static int rows_copy(smj_cuda *c, float *dst, int64_t drs, const float *src, int64_t srs, int64_t rows, int64_t w) {
    if (rows <= 0) return 1;
    return CK(c, cudaMemcpy2DAsync(dst, sizeof(float) * (size_t)drs, src, sizeof(float) * (size_t)srs,
                                   sizeof(float) * (size_t)w, (size_t)rows, cudaMemcpyDeviceToDevice, c->stream));
}
/* n rows of w values rs apart from p: the range an op reads or writes */
static int64_t span(int64_t n, int64_t rs, int64_t w) { return n > 0 ? (n - 1) * rs + w : 0; }

static void att_fwd_rows(const smj_exec *ex, float *out, float *lse, const float *q, const float *k,
                         const float *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t qrs, int64_t krs,
                         int64_t kv_bstride, float scale);
static void att_bwd_rows(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, int64_t qrs, int64_t krs, int64_t dqrs, int64_t dkrs, float scale);
/* The flash kernels take this call (bf16 mode, head size 64/128, aligned
 * rows; strided k, v rows only as a fused buffer's: batch stride Tk krs). */
static int fwd_flash(smj_cuda *c, int Tq, int Tk, int NKV, int HS, int64_t krs, int64_t kv_bstride, const void *q,
                     const void *k, const void *v, const void *out) {
    return c->prec == PREC_BF16 && ATTN_FLASH(c) && flash_ok(c, Tq, HS, kv_bstride, q, k, v, out) &&
           !(Tq == 1 && ATTN_FLASH(c)) && (krs == (int64_t)NKV * HS || kv_bstride == (int64_t)Tk * krs) &&
           krs % 4 == 0;
}
static int bwd_flash(smj_cuda *c, int T, int HS, int64_t qrs, int64_t krs, int64_t dqrs, int64_t dkrs, const void *q,
                     const void *k, const void *v, const void *dout, const void *out, const void *dq, const void *dk,
                     const void *dv) {
    return c->prec == PREC_BF16 && ATTN_FLASH(c) && flash_ok(c, T, HS, 0, q, k, v, dout) &&
           flash_ok(c, T, HS, 0, out, dq, dk, dv) && (qrs | krs | dqrs | dkrs) % 4 == 0; /* rows 16-byte aligned */
}

void cu_attention_fwd(const smj_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                      int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                      int64_t kv_bstride, float scale) {
    const int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, qrs = q_rs ? q_rs : QD, krs = kv_rs ? kv_rs : KD;
    smj_cuda *c = S(ex);
    if ((qrs == QD && krs == KD) || B <= 0 || Tq <= 0 || Tk <= 0 || NH <= 0 || HS <= 0 ||
        fwd_flash(c, Tq, Tk, NKV, HS, krs, kv_bstride, q, k, v, out)) { /* flash casts strided rows itself */
        att_fwd_rows(ex, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, qrs, krs, kv_bstride, scale);
        return;
    }
    c->op = "attention_fwd";
    const int64_t nq = (int64_t)B * Tq * QD, nk = (int64_t)B * Tk * KD;
    fp32_in(c, q, span((int64_t)B * Tq, qrs, QD));
    fp32_in(c, k, (int64_t)(B - 1) * kv_bstride + span(Tk, krs, KD));
    fp32_in(c, v, (int64_t)(B - 1) * kv_bstride + span(Tk, krs, KD));
    float *t = NULL;
    if (!CK(c, cudaMallocAsync((void **)&t, sizeof(float) * (size_t)(nq + 2 * nk), c->stream))) return;
    cast_written(c, t, nq + 2 * nk); /* copies kept for an earlier buffer at this address go */
    int ok = rows_copy(c, t, QD, q, qrs, (int64_t)B * Tq, QD);
    for (int b = 0; ok && b < B; b++)
        ok = rows_copy(c, t + nq + (int64_t)b * Tk * KD, KD, k + b * kv_bstride, krs, Tk, KD) &&
             rows_copy(c, t + nq + nk + (int64_t)b * Tk * KD, KD, v + b * kv_bstride, krs, Tk, KD);
    if (ok) att_fwd_rows(ex, out, lse, t, t + nq, t + nq + nk, B, Tq, Tk, NH, NKV, HS, QD, KD, (int64_t)Tk * KD, scale);
    cast_written(c, t, nq + 2 * nk); /* nothing kept may name freed memory */
    CK(c, cudaFreeAsync(t, c->stream));
}

void cu_attention_bwd(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                      const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int NKV,
                      int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale) {
    const int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, qrs = q_rs ? q_rs : QD, krs = kv_rs ? kv_rs : KD;
    const int64_t dqrs = dq_rs ? dq_rs : qrs, dkrs = dkv_rs ? dkv_rs : krs;
    smj_cuda *c = S(ex);
    if ((qrs == QD && krs == KD && dqrs == QD && dkrs == KD) || B <= 0 || T <= 0 || NH <= 0 || HS <= 0 ||
        bwd_flash(c, T, HS, qrs, krs, dqrs, dkrs, q, k, v, dout, out, dq, dk, dv)) { /* flash takes strided rows itself */
        att_bwd_rows(ex, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, qrs, krs, dqrs, dkrs, scale);
        return;
    }
    c->op = "attention_bwd";
    const int64_t N = (int64_t)B * T, nq = N * QD, nk = N * KD;
    fp32_in(c, q, span(N, qrs, QD));
    fp32_in(c, k, span(N, krs, KD));
    fp32_in(c, v, span(N, krs, KD));
    float *t = NULL; /* q | k | v | dq | dk | dv, dense */
    if (!CK(c, cudaMallocAsync((void **)&t, sizeof(float) * (size_t)(2 * nq + 4 * nk), c->stream))) return;
    cast_written(c, t, 2 * nq + 4 * nk); /* copies kept for an earlier buffer at this address go */
    float *tq = t, *tk = tq + nq, *tv = tk + nk, *gq = tv + nk, *gk = gq + nq, *gv = gk + nk;
    if (rows_copy(c, tq, QD, q, qrs, N, QD) && rows_copy(c, tk, KD, k, krs, N, KD) && rows_copy(c, tv, KD, v, krs, N, KD)) {
        att_bwd_rows(ex, gq, gk, gv, dout, out, lse, tq, tk, tv, B, T, NH, NKV, HS, QD, KD, QD, KD, scale);
        c->op = "attention_bwd";
        cast_written(c, dq, span(N, dqrs, QD));
        cast_written(c, dk, span(N, dkrs, KD));
        cast_written(c, dv, span(N, dkrs, KD));
        if (rows_copy(c, dq, dqrs, gq, QD, N, QD) && rows_copy(c, dk, dkrs, gk, KD, N, KD))
            rows_copy(c, dv, dkrs, gv, KD, N, KD);
    }
    cast_written(c, t, 2 * nq + 4 * nk); /* nothing kept may name freed memory */
    CK(c, cudaFreeAsync(t, c->stream));
}

/* qrs, krs: dense unless fwd_flash (the other paths read dense rows) */
static void att_fwd_rows(const smj_exec *ex, float *out, float *lse, const float *q, const float *k,
                         const float *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t qrs, int64_t krs,
                         int64_t kv_bstride, float scale) {
    OP_BEGIN_L("attention_fwd");
    if (!att_args_ok(c, NH, NKV, HS)) return;
    if (B <= 0 || Tq <= 0 || NH <= 0) { op_end(c); return; }
    cast_written(c, out, (int64_t)B * Tq * NH * HS);
    cast_written(c, lse, (int64_t)B * NH * Tq);
    int64_t nq = (int64_t)B * Tq * NH * HS, nkv = (int64_t)(B - 1) * kv_bstride + (int64_t)Tk * NKV * HS;
    int fl = fwd_flash(c, Tq, Tk, NKV, HS, krs, kv_bstride, q, k, v, out);
    if (!fl) { /* flash reads kept copies where there are (flash_fwd: fp32_in before its casts) */
        fp32_in(c, q, nq);
        fp32_in(c, k, nkv);
        fp32_in(c, v, nkv);
    }
    if (Tq == 1 && ATTN_FLASH(c)) {
        c->pname = "attention_fwd (decode)";
        att_decode(c, out, lse, q, k, v, B, Tk, NH, NKV, HS, kv_bstride, scale);
        op_end(c);
        return;
    }
    if (fl) {
        c->pname = "attention_fwd: bf16 casts"; /* flash_fwd names its kernel's phase */
        /* the output projection reads out next: its bf16 copy is written too
         * (alone when bf16_only promised out) */
        __nv_bfloat16 *o16 = shadow_of(c, out, nq);
        flash_fwd(c, fp32_out(c, out, nq, o16), o16, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, qrs, krs, kv_bstride,
                  scale);
        op_end(c);
        return;
    }
    if (att_use_gemm(c, Tq, Tk, NH)) {
        if (c->prec == PREC_BF16) att_fwd_bf16(c, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, kv_bstride, scale);
        else att_fwd_gemm(c, out, lse, q, k, v, B, Tq, Tk, NH, NKV, HS, kv_bstride, scale);
        op_end(c);
        return;
    }
    size_t smem = att_smem(HS, 3, 1);
    dim3 grid((unsigned)((Tq + AT - 1) / AT), (unsigned)NH, (unsigned)B);
#define F(NC)                                                                                              \
    do {                                                                                                   \
        if (smem_ok(c, (const void *)k_attention_fwd<NC>, smem)) {                                         \
            k_attention_fwd<NC><<<grid, ATHREADS, smem, c->stream>>>(out, lse, q, k, v, Tq, Tk, NH, NKV,  \
                                                                     HS, kv_bstride, scale);               \
            LAUNCHED(c);                                                                                   \
        }                                                                                                  \
    } while (0)
    NC_DISPATCH(HS, F);
#undef F
    op_end(c);
}

/* D[b,h,t] = dout · out over HS, laid out like lse: one thread per row,
 * summed in the order tile_dot sums dout · v, so that where out == v (one
 * visible key) ds = p (dp - D) cancels exactly, as in the reference. */
__global__ void k_att_delta(float *D, const float *dout, const float *out, int B, int T, int NH, int HS) {
    int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* over [B, T, NH] */
    if (row >= (int64_t)B * T * NH) return;
    const float *a = dout + row * HS, *o = out + row * HS;
    float s = 0;
    for (int i = 0; i < HS; i++) s += a[i] * o[i];
    int h = (int)(row % NH);
    int64_t bt = row / NH;
    int t = (int)(bt % T), b = (int)(bt / T);
    D[((int64_t)b * NH + h) * T + t] = s;
}

/* dq for one (query tile, head, batch): loop over key tiles. */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_bwd_dq(float *dq, const float *dout, const float *lse,
                                                               const float *D, const float *q, const float *k,
                                                               const float *v, int T, int NH, int NKV, int HS,
                                                               float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Qs = sh, *dOs = Qs + AT * ld, *Ks = dOs + AT * ld, *Vs = Ks + AT * ld, *DS = Vs + AT * ld;
    float *rl = DS + AT * 33, *rd = rl + AT;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0 = qt * AT, nq = T - t0 < AT ? T - t0 : AT;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    int64_t qoff = (((int64_t)b * T + t0) * NH + h) * HS;
    const float *kb = k + (int64_t)b * T * kstride + (int64_t)kvh * HS;
    const float *vb = v + (int64_t)b * T * kstride + (int64_t)kvh * HS;
    load_rows(Qs, ld, q + qoff, qstride, nq, HS);
    load_rows(dOs, ld, dout + qoff, qstride, nq, HS);
    if (threadIdx.x < AT) {
        int i = threadIdx.x;
        rl[i] = i < nq ? lse[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
        rd[i] = i < nq ? D[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
    }
    float acc[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[r][j] = 0;
    for (int k0 = 0; k0 <= t0 + nq - 1; k0 += AT) {
        int nk = T - k0 < AT ? T - k0 : AT;
        __syncthreads();
        load_rows(Ks, ld, kb + (int64_t)k0 * kstride, kstride, nk, HS);
        load_rows(Vs, ld, vb + (int64_t)k0 * kstride, kstride, nk, HS);
        __syncthreads();
        float s[AROWS], dp[AROWS];
        tile_dot(s, Qs, Ks, ld, HS);
        tile_dot(dp, dOs, Vs, ld, HS);
#pragma unroll
        for (int r = 0; r < AROWS; r++) {
            int i = w + 4 * r, key = k0 + lane;
            int ok = i < nq && key <= t0 + i;
            float p = ok ? expf(s[r] * scale - rl[i]) : 0.0f;
            DS[i * 33 + lane] = p * (dp[r] - rd[i]);
        }
        __syncthreads();
        tile_pv<NC>(acc, DS, Ks, ld, HS);
    }
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nq) continue;
        float *o = dq + qoff + (int64_t)i * qstride;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) o[lane + 32 * j] = acc[r][j] * scale;
    }
}

/* dk, dv for one (key tile, kv head, batch): loop over the group's query
 * heads and the query tiles at or after the key tile. */
template <int NC>
__global__ void __launch_bounds__(ATHREADS) k_attention_bwd_dkv(float *dk, float *dv, const float *dout,
                                                                const float *lse, const float *D, const float *q,
                                                                const float *k, const float *v, int T, int NH,
                                                                int NKV, int HS, float scale) {
    extern __shared__ float sh[];
    int ld = HS | 1;
    float *Ks = sh, *Vs = Ks + AT * ld, *Qs = Vs + AT * ld, *dOs = Qs + AT * ld, *P = dOs + AT * ld;
    float *DS = P + AT * 33, *rl = DS + AT * 33, *rd = rl + AT;
    int kt = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, grp = NH / NKV;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int k0 = kt * AT, nk = T - k0 < AT ? T - k0 : AT;
    int64_t qstride = (int64_t)NH * HS, kstride = (int64_t)NKV * HS;
    int64_t koff = ((int64_t)b * T + k0) * kstride + (int64_t)kvh * HS;
    load_rows(Ks, ld, k + koff, kstride, nk, HS);
    load_rows(Vs, ld, v + koff, kstride, nk, HS);
    float adk[AROWS][NC], adv[AROWS][NC];
#pragma unroll
    for (int r = 0; r < AROWS; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) adk[r][j] = adv[r][j] = 0;
    for (int hh = 0; hh < grp; hh++) {
        int h = kvh * grp + hh;
        for (int t0 = k0; t0 < T; t0 += AT) { /* query tiles aligned with key tiles: t0 = k0 + 32m */
            int nq = T - t0 < AT ? T - t0 : AT;
            int64_t qoff = (((int64_t)b * T + t0) * NH + h) * HS;
            __syncthreads();
            load_rows(Qs, ld, q + qoff, qstride, nq, HS);
            load_rows(dOs, ld, dout + qoff, qstride, nq, HS);
            if (threadIdx.x < AT) {
                int i = threadIdx.x;
                rl[i] = i < nq ? lse[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
                rd[i] = i < nq ? D[((int64_t)b * NH + h) * T + t0 + i] : 0.0f;
            }
            __syncthreads();
            float s[AROWS], dp[AROWS];
            tile_dot(s, Qs, Ks, ld, HS);  /* rows: queries, lane: key */
            tile_dot(dp, dOs, Vs, ld, HS);
#pragma unroll
            for (int r = 0; r < AROWS; r++) {
                int i = w + 4 * r, key = k0 + lane;
                int ok = i < nq && lane < nk && key <= t0 + i;
                float p = ok ? expf(s[r] * scale - rl[i]) : 0.0f;
                P[i * 33 + lane] = p;
                DS[i * 33 + lane] = p * (dp[r] - rd[i]);
            }
            __syncthreads();
            tile_ptx<NC>(adv, P, dOs, ld, HS);
            tile_ptx<NC>(adk, DS, Qs, ld, HS);
        }
    }
#pragma unroll
    for (int r = 0; r < AROWS; r++) {
        int i = w + 4 * r;
        if (i >= nk) continue;
        int64_t o = koff + (int64_t)i * kstride;
#pragma unroll
        for (int j = 0; j < NC; j++)
            if (lane + 32 * j < HS) {
                dk[o + lane + 32 * j] = adk[r][j] * scale;
                dv[o + lane + 32 * j] = adv[r][j];
            }
    }
}

/* Where Hopper's backward writes dq, dk, dv (f: fp32, NULL where not
 * written; h: bf16 copies or NULL). The three as the columns of one fused
 * tensor (rows QD + 2 KD apart) are one output for the copies: a bf16_only
 * promise of the whole tensor has all three written as bf16 alone; dense
 * gradients get their copies beside (the products read them next), as
 * promised or kept. */
static void grad_outs(smj_cuda *c, float *dq, float *dk, float *dv, int64_t N, int64_t QD, int64_t KD, int64_t dqrs,
                      int64_t dkrs, float *f[3], __nv_bfloat16 *h[3]) {
    f[0] = dq, f[1] = dk, f[2] = dv;
    h[0] = h[1] = h[2] = NULL;
    if (dk == dq + QD && dv == dk + KD && dqrs == QD + 2 * KD && dkrs == dqrs) { /* one tensor */
        cast_written(c, dq, N * dqrs);
        __nv_bfloat16 *w = shadow_of(c, dq, N * dqrs);
        float *o = fp32_out(c, dq, N * dqrs, w);
        for (int i = 0; i < 3; i++) {
            const int64_t at = i == 0 ? 0 : i == 1 ? QD : QD + KD;
            f[i] = o ? o + at : NULL;
            h[i] = w ? w + at : NULL;
        }
        return;
    }
    const int64_t w[3] = {QD, KD, KD}, rs[3] = {dqrs, dkrs, dkrs};
    for (int i = 0; i < 3; i++) cast_written(c, f[i], span(N, rs[i], w[i]));
    for (int i = 0; i < 3; i++)
        if (rs[i] == w[i]) {
            h[i] = shadow_of(c, f[i], N * w[i]);
            f[i] = fp32_out(c, f[i], N * w[i], h[i]);
        }
}

/* The fused backwards of Hopper's kernels: flash_bwd with the rotation
 * (tables cs, sn) or the bias gradient's column sums (db) in its epilogues;
 * 0, nothing written, where those kernels do not take the arguments. The
 * gradients and their copies as grad_outs says. */
static int fused_bwd(const smj_exec *ex, float *dq, float *dk, float *dv, float *db, const float *dout,
                     const float *out, const float *lse, const float *q, const float *k, const float *v,
                     const float *cs, const float *sn, int B, int T, int NH, int NKV, int HS, int64_t q_rs,
                     int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale) {
    const int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, qrs = q_rs ? q_rs : QD, krs = kv_rs ? kv_rs : KD;
    const int64_t dqrs = dq_rs ? dq_rs : qrs, dkrs = dkv_rs ? dkv_rs : krs, N = (int64_t)B * T;
    if (B <= 0 || T <= 0 || NKV < 1 || NH % NKV || !flash_sm90_ok(S(ex), HS) ||
        !bwd_flash(S(ex), T, HS, qrs, krs, dqrs, dkrs, q, k, v, dout, out, dq, dk, dv))
        return 0;
    OP_BEGIN_L("attention_bwd");
    if (cs) {
        fp32_in(c, cs, (int64_t)T * (HS / 2));
        fp32_in(c, sn, (int64_t)T * (HS / 2));
    }
    if (db) cast_written(c, db, QD + 2 * KD); /* (read too) */
    float *f[3];
    __nv_bfloat16 *h[3];
    grad_outs(c, dq, dk, dv, N, QD, KD, dqrs, dkrs, f, h);
    flash_bwd(c, f[0], f[1], f[2], h[0], h[1], h[2], cs, sn, dout, out, lse, q, k, v, B, T, NH, NKV, HS, qrs, krs, dqrs,
              dkrs, scale, db);
    op_end(c);
    return 1;
}

/* attention_bwd_rope (optional op): the rotation in the epilogues of
 * Hopper's dQ and dK kernels (declines elsewhere: the model runs
 * attention_bwd and rope_bwd). */
int cu_attention_bwd_rope(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                          const float *lse, const float *q, const float *k, const float *v, const float *cs,
                          const float *sn, int B, int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                          int64_t dq_rs, int64_t dkv_rs, float scale) {
    return fused_bwd(ex, dq, dk, dv, NULL, dout, out, lse, q, k, v, cs, sn, B, T, NH, NKV, HS, q_rs, kv_rs, dq_rs,
                     dkv_rs, scale);
}

/* attention_bwd_bias (optional op): the bias gradient's column sums in the
 * epilogues of Hopper's kernels, each block's rows summed into a partial
 * row, the partial rows added in order (declines elsewhere: the model runs
 * attention_bwd and its own bias gradient). */
int cu_attention_bwd_bias(const smj_exec *ex, float *dq, float *dk, float *dv, float *db, const float *dout,
                          const float *out, const float *lse, const float *q, const float *k, const float *v, int B,
                          int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs,
                          float scale) {
    return fused_bwd(ex, dq, dk, dv, db, dout, out, lse, q, k, v, NULL, NULL, B, T, NH, NKV, HS, q_rs, kv_rs, dq_rs,
                     dkv_rs, scale);
}

/* qrs, krs (inputs), dqrs, dkrs (gradients): dense unless bwd_flash (the
 * other paths read and write dense rows) */
static void att_bwd_rows(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, int64_t qrs, int64_t krs, int64_t dqrs, int64_t dkrs, float scale) {
    OP_BEGIN_L("attention_bwd");
    if (!att_args_ok(c, NH, NKV, HS)) return;
    if (B <= 0 || T <= 0 || NH <= 0) { op_end(c); return; }
    const int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, N = (int64_t)B * T, nq = N * QD, nk = N * KD;
    cast_written(c, dq, span(N, dqrs, QD));
    cast_written(c, dk, span(N, dkrs, KD));
    cast_written(c, dv, span(N, dkrs, KD));
    int flash = bwd_flash(c, T, HS, qrs, krs, dqrs, dkrs, q, k, v, dout, out, dq, dk, dv);
    if (!flash) { /* the paths below read every input in 32 bits; flash_bwd says what it reads */
        const float *in[6] = {dout, out, lse, q, k, v};
        const int64_t len[6] = {nq, nq, (int64_t)B * T * NH, nq, nk, nk};
        for (int i = 0; i < 6; i++) fp32_in(c, in[i], len[i]);
    }
    if (flash && flash_sm90_ok(c, HS) && dk == dq + QD && dv == dk + KD && dqrs == QD + 2 * KD && dkrs == dqrs) {
        /* one fused dq|dk|dv (GPT-2's): its copy written beside it, or alone where promised */
        float *f[3];
        __nv_bfloat16 *h[3];
        grad_outs(c, dq, dk, dv, N, QD, KD, dqrs, dkrs, f, h);
        flash_bwd(c, f[0], f[1], f[2], h[0], h[1], h[2], NULL, NULL, dout, out, lse, q, k, v, B, T, NH, NKV, HS, qrs,
                  krs, dqrs, dkrs, scale, NULL);
        op_end(c);
        return;
    }
    if (flash) {
        /* dv's products come next (rope_bwd runs on dq, dk first): its bf16 copy is written too */
        __nv_bfloat16 *dv16 = dkrs != KD ? NULL : shadow_of(c, dv, nk); /* dv NULL below: only the copy (bf16_only) */
        flash_bwd(c, dq, dk, fp32_out(c, dv, nk, dv16), NULL, NULL, dv16, NULL, NULL, dout, out, lse, q, k, v, B, T, NH,
                  NKV, HS, qrs, krs, dqrs, dkrs, scale, NULL);
        op_end(c);
        return;
    }
    if (att_use_gemm(c, T, T, NH)) {
        if (c->prec == PREC_BF16) att_bwd_bf16(c, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, scale);
        else att_bwd_gemm(c, dq, dk, dv, dout, out, lse, q, k, v, B, T, NH, NKV, HS, scale);
        op_end(c);
        return;
    }
    int64_t rows = (int64_t)B * T * NH;
    float *D = (float *)scratch(c, sizeof(float) * (size_t)rows);
    if (!D) return;
    k_att_delta<<<blocks_for(rows, 128, INT32_MAX), 128, 0, c->stream>>>(D, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    size_t smem_q = att_smem(HS, 4, 1), smem_kv = att_smem(HS, 4, 2);
    dim3 gq((unsigned)((T + AT - 1) / AT), (unsigned)NH, (unsigned)B);
    dim3 gk((unsigned)((T + AT - 1) / AT), (unsigned)NKV, (unsigned)B);
#define F(NC)                                                                                                \
    do { if (smem_ok(c, (const void *)k_attention_bwd_dq<NC>, smem_q) &&                                     \
        smem_ok(c, (const void *)k_attention_bwd_dkv<NC>, smem_kv)) {                                        \
        k_attention_bwd_dq<NC><<<gq, ATHREADS, smem_q, c->stream>>>(dq, dout, lse, D, q, k, v, T, NH, NKV, HS, \
                                                                    scale);                                  \
        LAUNCHED(c);                                                                                         \
        k_attention_bwd_dkv<NC><<<gk, ATHREADS, smem_kv, c->stream>>>(dk, dv, dout, lse, D, q, k, v, T, NH,  \
                                                                      NKV, HS, scale);                       \
        LAUNCHED(c);                                                                                         \
    } } while (0)
    NC_DISPATCH(HS, F);
#undef F
    op_end(c);
}

/* ------------------------------------------------------------ attention through GEMMs
 *
 * For Tq >= 16 (training, prefill; att_use_gemm) attention is done as
 * batched cuBLAS products over score matrices materialized in the scratch
 * buffer, a chunk of batch rows at a time ([nb][NH][Tq][Tk] floats):
 *   fwd: S = Q K^T; P = softmax(scale S) with the causal mask, LSE saved
 *        (one warp per row); O = P V.
 *   bwd: S = Q K^T again, P = exp(scale S - LSE); dV += P^T dO; dP = dO V^T;
 *        dS = P (dP - D), D = rowsum(dO o O); dQ = scale dS K;
 *        dK += scale dS^T Q (the += runs over the query heads of a KV group,
 *        in order, so GQA needs no atomics and stays deterministic).
 * The products go through gemm(), so they follow the matmul precision: with
 * PREC_BF16 Q, K, V, dO are rounded to bf16 copies and P, dS are written as
 * bf16, S and dP stay fp32. The masked half of each causal score matrix is
 * still multiplied (zeros): about 2x the necessary tensor-core work, bought
 * for simplicity. SMJ_CUDA_ATTN=fused keeps the fused kernels above. */

template <typename PT> __device__ __forceinline__ PT to_pt(float x);
template <> __device__ __forceinline__ float to_pt<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 to_pt<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/* One warp per score row r of [rows = nb*NH*Tq][Tk]: query i = r % Tq sees
 * keys 0..off+i. Writes P (masked keys 0) and lse. */
template <typename PT>
__global__ void k_att_softmax(PT *P, float *lse, const float *S, int64_t rows, int Tq, int Tk, int off, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int i = (int)(r % Tq), nv = off + i + 1;
    if (nv > Tk) nv = Tk;
    const float *s = S + r * Tk;
    float m = -INFINITY, l = 0;
    for (int j = lane; j < nv; j += 32) {
        float x = s[j] * scale;
        if (x > m) { l = l * expf(m - x) + 1.0f; m = x; }
        else l += expf(x - m);
    }
    float M = warp_max(m);
    l = m == -INFINITY ? 0.0f : l * expf(m - M);
    l = warp_sum(l);
    float z = M + logf(l);
    PT *p = P + r * Tk;
    for (int j = lane; j < Tk; j += 32) p[j] = to_pt<PT>(j < nv ? expf(s[j] * scale - z) : 0.0f);
    if (lane == 0) lse[r] = z;
}

/* P = exp(scale S - lse) (masked 0), one warp per row (backward). */
template <typename PT>
__global__ void k_att_p(PT *P, const float *S, const float *lse, int64_t rows, int T, float scale) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv = (int)(r % T) + 1;
    float z = lse[r];
    const float *s = S + r * T;
    PT *p = P + r * T;
    for (int j = lane; j < T; j += 32) p[j] = to_pt<PT>(j < nv ? expf(s[j] * scale - z) : 0.0f);
}

/* dS = P (dP - D[row]), written over P (same element: in place is safe).
 * P and dP never alias (__restrict__). This scalar form took 2.5 ms a call
 * in bf16 (B 16, T 1024, 12 heads; SMJ_CUDA_PROFILE), 10x the bytes it
 * moves; the bf16 path uses the 16-byte version below when T % 8 == 0. */
template <typename PT>
__global__ void k_att_ds(PT *__restrict__ P, const float *__restrict__ dP, const float *__restrict__ D, int64_t rows,
                         int T) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv = (int)(r % T) + 1;
    float d = D[r];
    PT *p = P + r * T;
    const float *dp = dP + r * T;
    for (int j = lane; j < nv; j += 32) p[j] = to_pt<PT>((float)p[j] * (dp[j] - d));
}
/* bf16, T % 8 == 0: 8 elements a lane (16-byte P, 2 x 16-byte dP), up to
 * the visible keys rounded up to 8 (the rest of P is 0 and stays 0). */
__global__ void k_att_ds_bf16x8(__nv_bfloat16 *__restrict__ P, const float *__restrict__ dP,
                                const float *__restrict__ D, int64_t rows, int T) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int nv8 = ((int)(r % T) + 1 + 7) >> 3;
    float d = D[r];
    uint4 *p = (uint4 *)(P + r * T);
    const float4 *dp = (const float4 *)(dP + r * T);
    for (int j = lane; j < nv8; j += 32) {
        uint4 pv = p[j];
        float4 a = dp[2 * j], b = dp[2 * j + 1];
        __nv_bfloat162 *h = (__nv_bfloat162 *)&pv;
        float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
        float2 f2 = __bfloat1622float2(h[2]), f3 = __bfloat1622float2(h[3]);
        h[0] = __floats2bfloat162_rn(f0.x * (a.x - d), f0.y * (a.y - d));
        h[1] = __floats2bfloat162_rn(f1.x * (a.z - d), f1.y * (a.w - d));
        h[2] = __floats2bfloat162_rn(f2.x * (b.x - d), f2.y * (b.y - d));
        h[3] = __floats2bfloat162_rn(f3.x * (b.z - d), f3.y * (b.w - d));
        p[j] = pv;
    }
}

static size_t al256(size_t x) { return (x + 255) / 256 * 256; }

/* Rows per chunk of batch rows so that the score buffers stay under ~4 GiB. */
static int att_chunk(int B, int64_t per_b) {
    int64_t nb = SMJ_CUDA_ATT_SCORES / (per_b > 0 ? per_b : 1);
    if (nb < 1) nb = 1;
    return nb < B ? (int)nb : B;
}

/* fp32 data (PREC_FP32, TF32, BF16X: the compute type is gemm()'s), in the
 * tensors' own layout: one strided-batched product per (batch row, query
 * head of a GQA group) over the KV heads. */
static void att_fwd_gemm(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)Tq * Tk, ldq = (int64_t)NH * HS, ldk = (int64_t)NKV * HS;
    int nb = att_chunk(B, NH * TT * 4);
    float *Sb = (float *)scratch(c, (size_t)nb * NH * TT * 4); /* P overwrites S */
    if (!Sb) return;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * Tq * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 1, Tq, Tk, HS, 1.0f, q + sq, ldq, (int64_t)grp * HS, k + b * kv_bstride, ldk, HS, 0.0f,
                     Sb + ss, Tk, grp * TT, NKV, CUDA_R_32F);
            }
        int64_t rows = (int64_t)n * NH * Tq;
        k_att_softmax<float><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Sb, lse + (int64_t)b0 * NH * Tq,
                                                                                   Sb, rows, Tq, Tk, Tk - Tq, scale);
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * Tq * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 0, Tq, HS, Tk, 1.0f, Sb + ss, Tk, grp * TT, v + b * kv_bstride, ldk, HS, 0.0f, out + sq,
                     ldq, (int64_t)grp * HS, NKV, CUDA_R_32F);
            }
    }
}

static void att_bwd_gemm(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)T * T, nkv = (int64_t)T * NKV * HS, rows_all = (int64_t)B * NH * T;
    int nb = att_chunk(B, NH * TT * 8);
    size_t o_s = al256((size_t)rows_all * 4), o_dp = o_s + al256((size_t)nb * NH * TT * 4);
    char *sc = (char *)scratch(c, o_dp + (size_t)nb * NH * TT * 4);
    if (!sc) return;
    float *Dd = (float *)sc, *Sb = (float *)(sc + o_s), *dPb = (float *)(sc + o_dp); /* P over S, dS over dP */
    k_att_delta<<<blocks_for(rows_all, 128, INT32_MAX), 128, 0, c->stream>>>(Dd, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    int64_t ldq = (int64_t)NH * HS, ldk = (int64_t)NKV * HS, sq_h = (int64_t)grp * HS, ss_h = (int64_t)grp * TT;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        int64_t rows = (int64_t)n * NH * T, r0 = (int64_t)b0 * NH * T;
        unsigned g = blocks_for(rows, 8, INT32_MAX);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                gemm(c, 0, 1, T, T, HS, 1.0f, q + sq, ldq, sq_h, k + b * nkv, ldk, HS, 0.0f, Sb + ss, T, ss_h, NKV,
                     CUDA_R_32F);
            }
        k_att_p<float><<<g, 256, 0, c->stream>>>(Sb, Sb, lse + r0, rows, T, scale);
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                int64_t sk = (int64_t)b * nkv;
                /* dV[kvh] (+)= P^T dO; dP = dO V^T */
                gemm(c, 1, 0, T, HS, T, 1.0f, Sb + ss, T, ss_h, dout + sq, ldq, sq_h, hh ? 1.0f : 0.0f, dv + sk, ldk,
                     HS, NKV, CUDA_R_32F);
                gemm(c, 0, 1, T, T, HS, 1.0f, dout + sq, ldq, sq_h, v + sk, ldk, HS, 0.0f, dPb + ss, T, ss_h, NKV,
                     CUDA_R_32F);
            }
        k_att_ds<float><<<g, 256, 0, c->stream>>>(Sb, dPb, Dd + r0, rows, T); /* dS over P */
        LAUNCHED(c);
        for (int b = b0; b < b0 + n; b++)
            for (int hh = 0; hh < grp; hh++) {
                int64_t sq = ((int64_t)b * T * NH + hh) * HS, ss = ((int64_t)(b - b0) * NH + hh) * TT;
                int64_t sk = (int64_t)b * nkv;
                /* dQ = scale dS K; dK[kvh] (+)= scale dS^T Q */
                gemm(c, 0, 0, T, HS, T, scale, Sb + ss, T, ss_h, k + sk, ldk, HS, 0.0f, dq + sq, ldq, sq_h, NKV,
                     CUDA_R_32F);
                gemm(c, 1, 0, T, HS, T, scale, Sb + ss, T, ss_h, q + sq, ldq, sq_h, hh ? 1.0f : 0.0f, dk + sk, ldk,
                     HS, NKV, CUDA_R_32F);
            }
    }
}

/* bf16 products (PREC_BF16): Q, K, V (and dO) are cast to bf16 copies in
 * head-major layout [B][H][T][HS], so that one strided-batched product
 * covers every (batch row, KV head) pair of a chunk (one launch per query
 * head of a GQA group, not one per batch row); results land in head-major
 * fp32 scratch and are permuted back. */
__global__ void k_cast_hm(__nv_bfloat16 *dst, const float *src, int B, int T, int H, int HS, int64_t bstride) {
    int64_t n = (int64_t)B * T * H * HS;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* over [B][H][T] */
        int t = (int)(r % T);
        int64_t bh = r / T;
        int h = (int)(bh % H), b = (int)(bh / H);
        dst[i] = __float2bfloat16_rn(src[(int64_t)b * bstride + ((int64_t)t * H + h) * HS + d]);
    }
}
/* dst [B][T][H][HS] = src [B][H][T][HS] (fp32) */
__global__ void k_hm_back(float *dst, const float *src, int B, int T, int H, int HS) {
    int64_t n = (int64_t)B * T * H * HS;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* over [B][T][H] */
        int h = (int)(r % H);
        int64_t bt = r / H;
        int t = (int)(bt % T), b = (int)(bt / T);
        dst[i] = src[(((int64_t)b * H + h) * T + t) * HS + d];
    }
}
static void cast_hm(smj_cuda *c, __nv_bfloat16 *dst, const float *src, int B, int T, int H, int HS, int64_t bs) {
    k_cast_hm<<<blocks_for((int64_t)B * T * H * HS, 256, (int64_t)c->n_sm * 16), 256, 0, c->stream>>>(dst, src, B, T,
                                                                                                     H, HS, bs);
    LAUNCHED(c);
}
static void hm_back(smj_cuda *c, float *dst, const float *src, int B, int T, int H, int HS) {
    k_hm_back<<<blocks_for((int64_t)B * T * H * HS, 256, (int64_t)c->n_sm * 16), 256, 0, c->stream>>>(dst, src, B, T,
                                                                                                     H, HS);
    LAUNCHED(c);
}

static void att_fwd_bf16(smj_cuda *c, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                         int Tq, int Tk, int NH, int NKV, int HS, int64_t kv_bstride, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)Tq * Tk, nq = (int64_t)B * Tq * NH * HS, nkv = (int64_t)B * Tk * NKV * HS;
    int nb = att_chunk(B, NH * TT * 6);
    size_t o_p = al256((size_t)nb * NH * TT * 4), o_q = o_p + al256((size_t)nb * NH * TT * 2);
    size_t o_k = o_q + al256((size_t)nq * 2), o_v = o_k + al256((size_t)nkv * 2), o_o = o_v + al256((size_t)nkv * 2);
    char *sc = (char *)scratch(c, o_o + (size_t)nq * 4);
    if (!sc) return;
    float *Sb = (float *)sc, *Oh = (float *)(sc + o_o);
    __nv_bfloat16 *Pb = (__nv_bfloat16 *)(sc + o_p), *Qh = (__nv_bfloat16 *)(sc + o_q);
    __nv_bfloat16 *Kh = (__nv_bfloat16 *)(sc + o_k), *Vh = (__nv_bfloat16 *)(sc + o_v);
    prof_phase(c, "attn fwd: casts");
    cast_hm(c, Qh, q, B, Tq, NH, HS, (int64_t)Tq * NH * HS);
    cast_hm(c, Kh, k, B, Tk, NKV, HS, kv_bstride);
    cast_hm(c, Vh, v, B, Tk, NKV, HS, kv_bstride);
    int64_t qh = (int64_t)Tq * HS, kh = (int64_t)Tk * HS;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        prof_phase(c, "attn fwd: S=QK^T");
        for (int hh = 0; hh < grp; hh++)
            gemm(c, 0, 1, Tq, Tk, HS, 1.0f, Qh + ((int64_t)b0 * NH + hh) * qh, HS, grp * qh,
                 Kh + (int64_t)b0 * NKV * kh, HS, kh, 0.0f, Sb + hh * TT, Tk, grp * TT, n * NKV, CUDA_R_16BF);
        int64_t rows = (int64_t)n * NH * Tq;
        prof_phase(c, "attn fwd: softmax");
        k_att_softmax<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(
            Pb, lse + (int64_t)b0 * NH * Tq, Sb, rows, Tq, Tk, Tk - Tq, scale);
        LAUNCHED(c);
        prof_phase(c, "attn fwd: O=PV");
        for (int hh = 0; hh < grp; hh++)
            gemm(c, 0, 0, Tq, HS, Tk, 1.0f, Pb + hh * TT, Tk, grp * TT, Vh + (int64_t)b0 * NKV * kh, HS, kh, 0.0f,
                 Oh + ((int64_t)b0 * NH + hh) * qh, HS, grp * qh, n * NKV, CUDA_R_16BF);
    }
    prof_phase(c, "attn fwd: casts");
    hm_back(c, out, Oh, B, Tq, NH, HS);
}

static void att_bwd_bf16(smj_cuda *c, float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                         int NKV, int HS, float scale) {
    int grp = NH / NKV;
    int64_t TT = (int64_t)T * T, nq = (int64_t)B * T * NH * HS, nkv = (int64_t)B * T * NKV * HS;
    int64_t rows_all = (int64_t)B * NH * T;
    int nb = att_chunk(B, NH * TT * 10);
    size_t o_s = al256((size_t)rows_all * 4), o_dp = o_s + al256((size_t)nb * NH * TT * 4);
    size_t o_p = o_dp + al256((size_t)nb * NH * TT * 4), o_q = o_p + al256((size_t)nb * NH * TT * 2);
    size_t o_do = o_q + al256((size_t)nq * 2), o_k = o_do + al256((size_t)nq * 2), o_v = o_k + al256((size_t)nkv * 2);
    size_t o_dq = o_v + al256((size_t)nkv * 2), o_dk = o_dq + al256((size_t)nq * 4), o_dv = o_dk + al256((size_t)nkv * 4);
    char *sc = (char *)scratch(c, o_dv + (size_t)nkv * 4);
    if (!sc) return;
    float *Dd = (float *)sc, *Sb = (float *)(sc + o_s), *dPb = (float *)(sc + o_dp);
    float *dQh = (float *)(sc + o_dq), *dKh = (float *)(sc + o_dk), *dVh = (float *)(sc + o_dv);
    __nv_bfloat16 *Pb = (__nv_bfloat16 *)(sc + o_p), *Qh = (__nv_bfloat16 *)(sc + o_q);
    __nv_bfloat16 *dOh = (__nv_bfloat16 *)(sc + o_do), *Kh = (__nv_bfloat16 *)(sc + o_k);
    __nv_bfloat16 *Vh = (__nv_bfloat16 *)(sc + o_v);
    k_att_delta<<<blocks_for(rows_all, 128, INT32_MAX), 128, 0, c->stream>>>(Dd, dout, out, B, T, NH, HS);
    LAUNCHED(c);
    prof_phase(c, "attn bwd: D, casts");
    cast_hm(c, Qh, q, B, T, NH, HS, (int64_t)T * NH * HS);
    cast_hm(c, dOh, dout, B, T, NH, HS, (int64_t)T * NH * HS);
    cast_hm(c, Kh, k, B, T, NKV, HS, (int64_t)T * NKV * HS);
    cast_hm(c, Vh, v, B, T, NKV, HS, (int64_t)T * NKV * HS);
    int64_t th = (int64_t)T * HS;
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb, nbat = n * NKV;
        int64_t rows = (int64_t)n * NH * T, r0 = (int64_t)b0 * NH * T;
        const __nv_bfloat16 *Kc = Kh + (int64_t)b0 * NKV * th, *Vc = Vh + (int64_t)b0 * NKV * th;
        float *dKc = dKh + (int64_t)b0 * NKV * th, *dVc = dVh + (int64_t)b0 * NKV * th;
        prof_phase(c, "attn bwd: S=QK^T");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            gemm(c, 0, 1, T, T, HS, 1.0f, Qh + qo, HS, grp * th, Kc, HS, th, 0.0f, Sb + hh * TT, T, grp * TT, nbat,
                 CUDA_R_16BF);
        }
        prof_phase(c, "attn bwd: P");
        k_att_p<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, Sb, lse + r0, rows, T, scale);
        LAUNCHED(c);
        prof_phase(c, "attn bwd: dV, dP");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            /* dV (+)= P^T dO; dP = dO V^T */
            gemm(c, 1, 0, T, HS, T, 1.0f, Pb + hh * TT, T, grp * TT, dOh + qo, HS, grp * th, hh ? 1.0f : 0.0f, dVc,
                 HS, th, nbat, CUDA_R_16BF);
            gemm(c, 0, 1, T, T, HS, 1.0f, dOh + qo, HS, grp * th, Vc, HS, th, 0.0f, dPb + hh * TT, T, grp * TT, nbat,
                 CUDA_R_16BF);
        }
        prof_phase(c, "attn bwd: dS");
        if (T % 8 == 0)
            k_att_ds_bf16x8<<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, dPb, Dd + r0, rows, T);
        else
            k_att_ds<__nv_bfloat16><<<blocks_for(rows, 8, INT32_MAX), 256, 0, c->stream>>>(Pb, dPb, Dd + r0, rows, T);
        LAUNCHED(c);
        prof_phase(c, "attn bwd: dQ, dK");
        for (int hh = 0; hh < grp; hh++) {
            int64_t qo = ((int64_t)b0 * NH + hh) * th;
            /* dQ = scale dS K; dK (+)= scale dS^T Q */
            gemm(c, 0, 0, T, HS, T, scale, Pb + hh * TT, T, grp * TT, Kc, HS, th, 0.0f, dQh + qo, HS, grp * th, nbat,
                 CUDA_R_16BF);
            gemm(c, 1, 0, T, HS, T, scale, Pb + hh * TT, T, grp * TT, Qh + qo, HS, grp * th, hh ? 1.0f : 0.0f, dKc,
                 HS, th, nbat, CUDA_R_16BF);
        }
    }
    prof_phase(c, "attn bwd: D, casts");
    hm_back(c, dq, dQh, B, T, NH, HS);
    hm_back(c, dk, dKh, B, T, NKV, HS);
    hm_back(c, dv, dVh, B, T, NKV, HS);
}
