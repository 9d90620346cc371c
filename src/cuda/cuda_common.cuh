/* cuda_common.cuh — what the CUDA backend's files share: the per-context
 * state (smj_cuda), error recording (CK/CKB/LAUNCHED), the profiler hooks,
 * the scratch buffer, launch-size helpers, warp/block reductions and the two
 * matmul building blocks other ops reuse (gemm, to_bf16). The design notes
 * of the backend are at the top of cuda_backend.cu; docs/CUDA.md is the
 * user's guide. Internal to src/cuda/: nothing here is public.
 */
#ifndef SMJ_CUDA_COMMON_CUH
#define SMJ_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <atomic>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../ops/ops.h"
}

/* ------------------------------------------------------------ state */

#include "limits.h"
#define BC_N SMJ_CUDA_BC_N     /* bf16 operand copies kept (smj_cuda.bc) */
#define EXT_N 32               /* bf16 copies in the caller's memory (smj_cuda.ext) */
#define PROF_ROWS 96           /* profile rows (ops, their phases, products by shape) */
#define PROF_SHAPES 48         /* products' names with shapes (SMJ_CUDA_PROFILE_SHAPES=1) */
#define HOME_N 8               /* bf16_home places for the next op */
#define BC_MAX SMJ_CUDA_BC_MAX /* largest operand kept, elements (256 MiB as bf16) */

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    int device, n_sm, sync_each;
    size_t smem_optin;           /* max dynamic shared memory per block */
    void *scratch;               /* device scratch, grown on demand */
    size_t scratch_bytes;
    unsigned long scratch_gen;   /* bumped when the scratch moves (a recorded graph holds its address) */
    double *h_sum;               /* pinned: the sumsq result */
    smj_status err;              /* first failure */
    int capturing, capture_failed; /* inside graph_begin/end: failures end the capture, not the context */
    int capture_keep;            /* a train step's capture: copies kept as in a run (graph_begin) */
    unsigned long n_ops;         /* ops begun (a train step's graph is refused once others ran) */
    uint64_t trace;              /* hash of the launches since graph_trace (trace_mix) */
    uint64_t trace_want;         /* a train step's capture: the trace it must match */
    void *snap;                  /* the copies' bookkeeping at graph_begin (cuda_backend.cu) */
    const char *capture_why;     /* what ended the capture (SMJ_CUDA_GRAPH_LOG) */
    struct trace_log *tlog;      /* SMJ_CUDA_GRAPH_LOG=1: what the trace hashed, to say where two differ */
    uint64_t tlog_prev;          /* the last nonempty trace (the log's prev) */
    int no_graphs;               /* SMJ_CUDA_GRAPHS=0 */
    int no_dec_block;            /* SMJ_CUDA_DECODE_BLOCK=0: decode_block declines */
    char errmsg[512];
    const char *op;              /* op running now (for messages) */
    int prec;                    /* matmul precision: PREC_* (SMJ_CUDA_MATMUL) */
    int attn;                    /* SMJ_CUDA_ATTN: ATTN_AUTO, ATTN_FUSED (fp32 kernels), ATTN_GEMM (cuBLAS),
                                    ATTN_MMA (flash.cu's mma.sync kernels on a Hopper GPU too),
                                    ATTN_WGMMA (flash_sm90.cu's, the default where they run) */
    int cc;                      /* compute capability, 10 * major + minor */
    int tma;                     /* Hopper's attention forward and dQ kernels load their tiles by TMA
                                    (flash_sm90.cu; SMJ_CUDA_TMA=0: by cp.async) */
    int fwd_tile;                /* SMJ_CUDA_FWD_TILE: keys a tile in Hopper's attention forward, 128 (the
                                    warp-specialized kernel; needs TMA; the default) or 64 (two warpgroups) */
    void *tmap_encode;           /* the driver's cuTensorMapEncodeTiled (flash_sm90.cu), once looked up */
    int tmap_looked;
    int xent_fused;              /* SMJ_CUDA_XENT_FUSED=0: xent_fwd_bwd declines (xent.cu) */
    int gemm;                    /* SMJ_CUDA_GEMM: how bf16 products are called, GEMM_* (blaslt.cu) */
    int own_gemm;                /* SMJ_CUDA_OWN_GEMM: gemm_sm90.cu's forward product never (0, the default:
                                    cuBLASLt's timed choice is faster in the step), where its tiles fill the
                                    GPU (1), for every shape it can take (2: the tests) */
    /* Device time per op from event pairs, resolved in batches: with
     * SMJ_CUDA_PROFILE=1 for the whole run, printed to stderr when the
     * context is freed; or between smj_ctx_profile(ctx, 1) and (ctx, 0). */
    int profile;                 /* timing now (SMJ_CUDA_PROFILE or smj_ctx_profile) */
    int profile_env;             /* SMJ_CUDA_PROFILE: print the table at fini */
    int prof_shapes;             /* SMJ_CUDA_PROFILE_SHAPES=1: a product's row names its shape */
    struct { const char *name; double ms; long calls; } prof[PROF_ROWS];
    int nprof;
    cudaEvent_t *pev;            /* [2 * PROF_EV]: start/end per pending op */
    int *pidx;                   /* [PROF_EV]: prof[] entry of each pending op */
    int npend;
    const char *pname;           /* profile name of the op running now */
    char pshape[PROF_SHAPES][48]; /* products' names with their shapes, never rewritten (the rows' names
                                     stay valid while the context lives) */
    int npshape;
    /* bf16 mode: bf16 copies of matmul operands, kept for the following
     * matmuls (q, k, v read the same normed input; dW and dX products the
     * same output gradient). Ops that feed products write the copy of
     * their output themselves (shadow_of: rmsnorm, swiglu, rope_bwd,
     * attention), so those products cast nothing. A copy stays valid
     * until its source may have changed: an op opened with OP_BEGIN bumps
     * gen (drops all); one opened with OP_BEGIN_W (matmul, cross-entropy,
     * the shadow writers) drops only the copies of the ranges it writes
     * (cast_written); a host write (upload, zero, alloc) drops all. See
     * cast_of() in cuda_backend.cu. */
    struct {
        const float *src; int64_t n; __nv_bfloat16 *buf; size_t cap; unsigned long gen, hw, used; int lazy;
    } bc[BC_N];
    /* Copies in the caller's memory (--fp16-activations' 16-bit storage of
     * saved tensors), valid under the rules above:
     *  - bf16_home names where the next op writes the copy of a tensor
     *    (home_of): the copy lands in the storage bf16_pack would write, so
     *    the pack finds it there and does nothing;
     *  - bf16_unpack's source is its output's copy, exact (the fp32 values
     *    are the bf16 ones), so ops may read it instead of the fp32 values
     *    (exact_copy: bit-identical results);
     *  - bf16_bind registers the same without writing the fp32 values
     *    (lazy): ops that read the tensor in 32 bits first write them
     *    (fp32_in, materialize). Ops opened with OP_BEGIN_L call fp32_in for
     *    what they read in 32 bits; every other op writes all lazy tensors
     *    first. bf16_drop drops lazy ones unwritten.
     * Writing a copy's storage (bf16_pack, a home) drops it, writing a lazy
     * one's first. The oldest entry is replaced when all are taken.
     *  - tight: a home bf16_tight named (at src, whose storage holds only
     *    the n bf16 values): never written as fp32; where the rules above
     *    would write it, an error is recorded instead (materialize), and it
     *    is never the entry replaced. */
    struct {
        const float *src; int64_t n; const __nv_bfloat16 *b; unsigned long gen, hw; int exact, lazy, tight;
    } ext[EXT_N];
    int ext_next, n_lazy;
    struct { const float *src; int64_t n; __nv_bfloat16 *b; int tight; } home[HOME_N]; /* for the next op */
    int n_home;
    /* bf16_only's promises for the next op: an op that writes the copy of
     * such an output (fp32_out) leaves its fp32 values unwritten and the
     * copy (a slot or a home) lazy, written only if an op reads it in 32
     * bits (a slot being reused writes it first); bf16_drop discards. */
    struct { const float *src; int64_t n; } only[HOME_N];
    int n_only;
    unsigned long gen, clock, op_clock; /* op_clock: clock when the running op began */
    int64_t bc_max;              /* largest operand kept in a slot (BC_MAX; SMJ_CUDA_BF16_KEEP) */
    int64_t ext_max;             /* largest copy in the caller's memory kept (any; SMJ_CUDA_BF16_KEEP) */
    /* The parameters' bf16 copy (bf16 mode, copies.cu: wm_view): made by
     * adamw_runs beside its update (the range it updates, which is the
     * model's parameters), so a step's products read their weights from it
     * instead of casting each weight twice (forward, backward). Valid under
     * the kept copies' rules, except that only host writes into its range
     * drop it (the trainer zeroes the gradients each step: host_touched). */
    struct { const float *src; int64_t n; __nv_bfloat16 *b; size_t cap; unsigned long gen, hw; } wm;
    unsigned *dec_sync;          /* [DEC_SYNC_N]: decode_block's barrier count (64 bits, in [0, 2)) and
                                    per-head counters [SMJ_CUDA_DEC_HEADS], decode_argmax's counter and
                                    candidates (DEC_ARGMAX_OFF); counters zero between launches (decode.cu) */
    float *qbuf;                 /* qmatmul's dequantized weight for many rows (qmatmul.cu) */
    size_t qbuf_bytes;
    struct smj_lt *lt;           /* cuBLASLt handle, workspace, algorithms per shape (blaslt.cu) */
} smj_cuda;

enum { PREC_FP32 = 0, PREC_TF32 = 1, PREC_BF16 = 2, PREC_BF16X = 3 };
/* bf16 products: cublasGemmEx; cuBLASLt with its heuristic's algorithm per
 * shape; cuBLASLt with the fastest of its first candidates, timed per shape */
enum { GEMM_EX = 0, GEMM_LT = 1, GEMM_TUNE = 2 };
enum { ATTN_AUTO = 0, ATTN_FUSED = 1, ATTN_GEMM = 2, ATTN_MMA = 3, ATTN_WGMMA = 4 };
/* flash kernels allowed */
#define ATTN_FLASH(c) ((c)->attn == ATTN_AUTO || (c)->attn == ATTN_MMA || (c)->attn == ATTN_WGMMA)
extern const char *const prec_name[4]; /* "fp32", "tf32", "bf16", "bf16x" */
#define PROF_EV 4096

static inline smj_cuda *S(const smj_exec *ex) { return (smj_cuda *)ex->impl; }
static inline unsigned blocks_for(int64_t n, int threads, int64_t cap) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b < cap ? b : cap);
}

/* Error recording: the FIRST failure is kept (status + message). */
void record(smj_cuda *c, smj_status st, const char *fmt, ...);
int ck_cuda(smj_cuda *c, cudaError_t e, const char *what, const char *file, int line);
int ck_blas(smj_cuda *c, cublasStatus_t e, const char *what, const char *file, int line);
void launched(smj_cuda *c, const char *file, int line);
#define CK(c, call) ck_cuda((c), (call), #call, __FILE__, __LINE__)
#define CKB(c, call) ck_blas((c), (call), #call, __FILE__, __LINE__)
/* After every launch: launch errors now, execution errors in sync mode. */
#define LAUNCHED(c) launched((c), __FILE__, __LINE__)

/* Every op starts with OP_BEGIN (names the op for messages and the
 * profiler) and ends with op_end; prof_phase splits an op's time. */
void prof_begin(smj_cuda *c, const char *name);
void prof_end(smj_cuda *c);
const char *prof_matmul(smj_cuda *c, const char *kind, int64_t M, int64_t N, int64_t K);
void prof_phase(smj_cuda *c, const char *name);
void prof_flush(smj_cuda *c);
void prof_print(smj_cuda *c);
void op_end(smj_cuda *c);
#define OP_BEGIN(name) \
    smj_cuda *c = S(ex); c->op = name; c->n_ops++; prof_begin(c, name); lazy_all(c); c->gen++; c->op_clock = c->clock
/* The same for an op that names each range it writes with cast_written
 * before its kernels run (the kept bf16 copies of other data survive it). */
#define OP_BEGIN_W(name) \
    smj_cuda *c = S(ex); c->op = name; c->n_ops++; c->op_clock = c->clock; prof_begin(c, name); lazy_all(c)
/* The same for an op that also calls fp32_in for every range it reads in
 * 32 bits (bound tensors stay unwritten, see smj_cuda.ext). */
#define OP_BEGIN_L(name) smj_cuda *c = S(ex); c->op = name; c->n_ops++; c->op_clock = c->clock; prof_begin(c, name)
/* Recording a graph that must not hold the backend's own bf16 copies (a
 * decoding step's: later ops reassign them); a train step's keeps them. */
#define CAPTURE_NOCOPY(c) ((c)->capturing && !(c)->capture_keep)
/* Mixes v into the launch hash (graph_trace); tag and n name it in the log
 * (graphs.cu). */
struct trace_log *trace_log_new(void);
void trace_log_add(smj_cuda *c, uint64_t v, const char *tag, int n);
static inline void trace_mix(smj_cuda *c, uint64_t v, const char *tag, int n) {
    c->trace = (c->trace ^ v) * 0x100000001b3ull;
    if (c->tlog) trace_log_add(c, v, tag, n);
}
/* Ends the graph being recorded (it is dropped; the caller runs the ops). */
static inline void capture_fail(smj_cuda *c, const char *why) {
    if (!c->capture_failed) c->capture_why = why;
    c->capture_failed = 1;
}

/* bf16 operand copies (cuda_backend.cu). cast_written: an op writes
 * p[0, n), copies overlapping it are dropped. shadow_of: in bf16 mode, a
 * buffer for the bf16 copy of p[0, n) that the calling op (an OP_BEGIN_W
 * op, after its cast_written calls) writes beside its fp32 output, kept as
 * if a matmul had cast it; NULL when none is wanted (fp32 modes, n under
 * SHADOW_MIN or over bc_max with no home, out of memory): the op then writes fp32 only
 * and a product reading p casts as before. */
#define SHADOW_MIN 4096
void cast_written(smj_cuda *c, const float *p, int64_t n);
/* the kept bf16 copy of src[0, n) if one is valid, else NULL */
const __nv_bfloat16 *kept_copy(smj_cuda *c, const float *src, int64_t n);
__nv_bfloat16 *shadow_of(smj_cuda *c, const float *p, int64_t n);
/* Bound tensors (smj_cuda.ext): lazy_all writes the fp32 values of every
 * lazy one (at the start of ops not opened with OP_BEGIN_L); fp32_in those
 * overlapping p[0, n), which the op reads in 32 bits. */
void lazy_all(smj_cuda *c);
void fp32_in(smj_cuda *c, const float *p, int64_t n);
/* An exact bf16 copy of p[0, n) (its fp32 values are the copy's: a copy in
 * the caller's memory marked exact, or a lazy one), or NULL: an op may read
 * it in place of the fp32 values, bit for bit the same. */
const __nv_bfloat16 *exact_copy(smj_cuda *c, const float *p, int64_t n);
/* What an op reading p[0, n) calls: p's exact copy where there is one its
 * kernels can read four values at a time (8-byte aligned), else NULL after
 * fp32_in (the fp32 values then hold p). */
const __nv_bfloat16 *exact_in(smj_cuda *c, const float *p, int64_t n);
/* p's place named by bf16_home for this op (registered as p's copy, which
 * the op must then write), or NULL. */
__nv_bfloat16 *home_of(smj_cuda *c, const float *p, int64_t n);
/* Whether shadow_of gives output p[0, n) a copy: a home named for it (any
 * size unless SMJ_CUDA_BF16_KEEP lowers ext_max), or a size kept copies take. */
int copy_room(const smj_cuda *c, const float *p, int64_t n);
/* Whether a product casts operand p[0, n) into the scratch buffer: over
 * bc_max with no copy kept (the LM head's chunk kept in its home has one). */
int cast_big(smj_cuda *c, const float *p, int64_t n);
/* Where the op stores output p[0, n)'s fp32 values, given the copy it
 * writes (shadow_of's; NULL: none): p, or NULL when bf16_only promised p
 * is read only through the copy, which then stands for it (lazy). */
float *fp32_out(smj_cuda *c, float *p, int64_t n, const __nv_bfloat16 *copy);
/* dst[0, n) = the values of bf16 data b (one unpack kernel). */
void bf16_to_f32(smj_cuda *c, float *dst, const __nv_bfloat16 *b, int64_t n);
/* Whether bf16_only promised p[0, n) for the running op (products whose
 * output is promised write it in bf16 alone). */
int only_promised(const smj_cuda *c, const float *p, int64_t n);
/* Whether bf16_tight named output p[0, n) for the running op: the op must
 * write it as bf16 alone, in its home, whatever its shape (p has no room
 * for the fp32 values). */
int tight_out(const smj_cuda *c, const float *p, int64_t n);
/* Whether p[0, n) is such a tensor, bf16 alone (products read it through
 * its copy, whatever their shape). */
int tight_in(const smj_cuda *c, const float *p, int64_t n);
/* cast_written for an output the op does not read: a lazy tensor wholly
 * inside it is dropped unwritten. */
void cast_overwritten(smj_cuda *c, const float *p, int64_t n);

/* bf16 copy of src[n] for a product (copies.cu): kept, else cast into a
 * slot (over bc_max values: into dst, not kept); NULL on failure. */
const __nv_bfloat16 *cast_of(smj_cuda *c, const float *src, int64_t n, __nv_bfloat16 *dst);
/* A product's two operands (cast_of each, into da, db when over bc_max),
 * the casts timed as the phase "matmul: bf16 casts" (entered only when one
 * is not kept). */
void cast_pair(smj_cuda *c, const float *A, int64_t na, __nv_bfloat16 *da, const float *B, int64_t nb,
               __nv_bfloat16 *db, const __nv_bfloat16 **a16, const __nv_bfloat16 **b16);
/* Host writes into device memory by any context (cuda_backend.cu's memory
 * hooks): the backend's one process-wide value; copies made before the
 * last host write are stale. */
extern std::atomic<unsigned long> host_writes;
/* whether a host write numbered since or later (up to host_writes now)
 * wrote into p[0, n) (or is no longer on record: true) */
bool host_touched(unsigned long since, const void *p, size_t n);
/* The parameters' bf16 copy (smj_cuda.wm) for adamw_runs to write beside
 * p[0, n)'s update (the old copy dropped), or NULL (not bf16 mode, out of
 * memory); wm_made(c, p) after the update registers it as p's. */
__nv_bfloat16 *wm_for(smj_cuda *c, const float *p, int64_t n);
void wm_made(smj_cuda *c, const float *p);
/* The bf16 storage ops (copies.cu). */
void cu_bf16_pack(const smj_exec *ex, uint16_t *out, const float *x, int64_t n);
void cu_bf16_unpack(const smj_exec *ex, float *out, const uint16_t *x, int64_t n);
void cu_bf16_bind(const smj_exec *ex, float *out, const uint16_t *x, int64_t n);
void cu_bf16_home(const smj_exec *ex, const float *x, uint16_t *x16, int64_t n);
void cu_bf16_only(const smj_exec *ex, const float *x, int64_t n);
int cu_bf16_tight(const smj_exec *ex, const float *x, int64_t n);
void cu_bf16_drop(const smj_exec *ex, const float *x, int64_t n);
/* The grid of the element-wise kernels: 256 threads, at most 32 blocks an SM. */
#define EW_GRID(n) blocks_for((n), 256, (int64_t)c->n_sm * 32), 256, 0, c->stream

/* The context's device scratch buffer, grown to at least bytes (contents
 * not kept across growth); NULL (error recorded) when out of memory. */
void *scratch(smj_cuda *c, size_t bytes);

/* fp32 -> bf16 copies and the cuBLAS product (cuda_backend.cu). */
void to_bf16(smj_cuda *c, __nv_bfloat16 *dst, const float *src, int64_t n, int64_t sst, int nb);
int gemm(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
         int64_t sA, const void *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC, int batch,
         cudaDataType ty);

/* Sets fn's dynamic shared-memory limit when bytes is over the default;
 * 0 (error recorded) when the GPU has less. */
int smem_ok(smj_cuda *c, const void *fn, size_t bytes);
/* gemm_sm90.cu: C[M,N] (bf16) = A[M,K] · B[N,K]^T, all bf16 row-major with
 * leading dimensions lda, ldb, ldc, fp32 sums; 1 when launched, 0 where it
 * declines (c->own_gemm, not Hopper sm_90a, a layout TMA cannot take) */
int gemm_nt_sm90(smj_cuda *c, int64_t M, int64_t N, int64_t K, const __nv_bfloat16 *A, int64_t lda,
                 const __nv_bfloat16 *B, int64_t ldb, __nv_bfloat16 *C, int64_t ldc);

/* Tensor-core flash attention (flash.cu), bf16 mode: flash_ok says whether
 * it takes these arguments (sm_80+, Tq >= 16, HS 64 or 128, 16-byte aligned
 * rows); both read bf16 copies of their inputs (kept or cast). out16 /
 * dv16: bf16 copies of out / dv written beside them (shadow_of) or NULL;
 * out / dv NULL: the copy alone (fp32_out). qrs, krs: the row strides of
 * q (and dq), k and v (and dk, dv); strided rows are cast into dense ones,
 * k's and v's then with batch stride Tk krs. */
int flash_ok(smj_cuda *c, int Tq, int HS, int64_t kv_bstride, const void *p0, const void *p1, const void *p2,
             const void *p3);
void flash_fwd(smj_cuda *c, float *out, __nv_bfloat16 *out16, float *lse, const float *q, const float *k,
               const float *v, int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t qrs, int64_t krs,
               int64_t kv_bstride, float scale);
/* flash_bwd: dq, dk, dv (fp32, NULL: not written) and their bf16 copies
 * dq16, dk16, dv16 (NULL: none) at rows dqrs, dkrs apart; with rope tables
 * cs, sn (Hopper's kernels only, see flash_sm90_ok) dq, dk rotated back as
 * rope_bwd does; with db (Hopper's kernels only; NULL: none) their column
 * sums added to db[0, QD), db[QD, QD + KD), db[QD + KD, QD + 2 KD) (the
 * biases of the products q, k, v come from). */
void flash_bwd(smj_cuda *c, float *dq, float *dk, float *dv, __nv_bfloat16 *dq16, __nv_bfloat16 *dk16,
               __nv_bfloat16 *dv16, const float *cs, const float *sn, const float *dout, const float *out,
               const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int NKV, int HS,
               int64_t qrs, int64_t krs, int64_t dqrs, int64_t dkrs, float scale, float *db);
/* Hopper's wgmma kernels (flash_sm90.cu): flash_sm90_ok says whether they
 * run here (a build for sm_90a, compute capability 9.0, head size 64,
 * SMJ_CUDA_ATTN auto or wgmma); the launchers take flash_fwd's / flash_bwd's
 * bf16 inputs and row statistics, q's rows iqs apart, k's and v's iks
 * (dense, or the columns of one fused q|k|v copy). flash_bwd_sm90 with o16
 * (O's exact bf16 copy) makes the statistics L2 and D itself from o16 and
 * lse; else it reads them. */
int flash_sm90_ok(smj_cuda *c, int HS);
void flash_fwd_sm90(smj_cuda *c, float *out, __nv_bfloat16 *out16, float *lse, const __nv_bfloat16 *q,
                    const __nv_bfloat16 *k, const __nv_bfloat16 *v, int B, int Tq, int Tk, int NH, int NKV,
                    int64_t kv_bstride, float sl2, int64_t iqs, int64_t iks);
void flash_bwd_sm90(smj_cuda *c, float *dq, float *dk, float *dv, __nv_bfloat16 *dq16, __nv_bfloat16 *dk16,
                    __nv_bfloat16 *dv16, const float *cs, const float *sn, const __nv_bfloat16 *dout, float *L2,
                    float *D, const __nv_bfloat16 *o16, const float *lse, const __nv_bfloat16 *q,
                    const __nv_bfloat16 *k, const __nv_bfloat16 *v, int B, int T, int Tp, int NH, int NKV, float sl2,
                    float scale, int64_t gqs, int64_t gks, int64_t iqs, int64_t iks, float *pq, float *pk, float *pv);

/* Ops defined outside cuda_backend.cu (attention.cu). */
void cu_attention_fwd(const smj_exec *ex, float *out, float *lse, const float *q, const float *k, const float *v,
                      int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                      int64_t kv_bstride, float scale);
void cu_attention_bwd(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                      const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                      int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale);
int cu_attention_bwd_rope(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, const float *out,
                          const float *lse, const float *q, const float *k, const float *v, const float *cs,
                          const float *sn, int B, int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                          int64_t dq_rs, int64_t dkv_rs, float scale);

/* Four fp32 values stored as bf16 (round to nearest even), 8 bytes. */
static __device__ __forceinline__ void st_bf16x4(__nv_bfloat16 *p, float4 v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 u = {*(uint32_t *)&lo, *(uint32_t *)&hi};
    *(uint2 *)p = u;
}
/* Values i (ld1) or 4i..4i+3 (ld4; 16 / 8 bytes aligned) of fp32 data or of
 * its bf16 copy (kernels templated on what they read). */
static __device__ __forceinline__ float4 ld4(const float *p, int64_t i) { return ((const float4 *)p)[i]; }
/* four bf16 values in 8 bytes as fp32 */
static __device__ __forceinline__ float4 bf16x4_f32(uint2 u) {
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}
static __device__ __forceinline__ float4 ld4(const __nv_bfloat16 *p, int64_t i) {
    return bf16x4_f32(((const uint2 *)p)[i]);
}
/* Values 8i..8i+7 as two float4 (a: the first four): fp32 data 16 bytes
 * aligned, or its bf16 copy 16 bytes aligned (one 16-byte load). */
static __device__ __forceinline__ void ld8(const float *p, int64_t i, float4 &a, float4 &b) {
    a = ((const float4 *)p)[2 * i];
    b = ((const float4 *)p)[2 * i + 1];
}
static __device__ __forceinline__ void ld8(const __nv_bfloat16 *p, int64_t i, float4 &a, float4 &b) {
    uint4 u = ((const uint4 *)p)[i];
    a = make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                    __uint_as_float(u.y & 0xffff0000u));
    b = make_float4(__uint_as_float(u.z << 16), __uint_as_float(u.z & 0xffff0000u), __uint_as_float(u.w << 16),
                    __uint_as_float(u.w & 0xffff0000u));
}
/* cp.async: 16 bytes global -> shared without registers; src_bytes 0
 * fills zeros (rows past the end). Groups: commit, then wait until at most
 * N groups are still in flight. */
static __device__ __forceinline__ void cp16(void *dst, const void *src, int src_bytes) {
#if __CUDA_ARCH__ >= 800
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
#endif
}
static __device__ __forceinline__ void cp_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> static __device__ __forceinline__ void cp_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
/* Eight fp32 values (a, then b) stored as bf16 (round to nearest even), 16 bytes. */
static __device__ __forceinline__ void st_bf16x8(__nv_bfloat16 *p, float4 a, float4 b) {
    __nv_bfloat162 q0 = __floats2bfloat162_rn(a.x, a.y), q1 = __floats2bfloat162_rn(a.z, a.w);
    __nv_bfloat162 q2 = __floats2bfloat162_rn(b.x, b.y), q3 = __floats2bfloat162_rn(b.z, b.w);
    uint4 u = {*(uint32_t *)&q0, *(uint32_t *)&q1, *(uint32_t *)&q2, *(uint32_t *)&q3};
    *(uint4 *)p = u;
}
static __device__ __forceinline__ float ld1(const float *p, int64_t i) { return p[i]; }
static __device__ __forceinline__ float ld1(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }

/* The normalization ops (norms.cu). */
void cu_rmsnorm_fwd(const smj_exec *ex, float *out, float *rstd, const float *x, const float *w, int64_t N, int C,
                    float eps);
void cu_add_rmsnorm_fwd(const smj_exec *ex, float *sum, float *out, float *rstd, const float *a, const float *b,
                        const float *w, int64_t N, int C, float eps);
void cu_rmsnorm_bwd(const smj_exec *ex, float *dx, float *dw, const float *dout, const float *x, const float *w,
                    const float *rstd, int64_t N, int C, int acc);
void cu_add_layernorm_fwd(const smj_exec *ex, float *sum, float *out, float *mean, float *rstd, const float *a,
                          const float *b, const float *w, const float *bias, int64_t N, int C, float eps);
void cu_layernorm_fwd(const smj_exec *ex, float *out, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, int64_t N, int C, float eps);
int cu_attention_bwd_bias(const smj_exec *ex, float *dq, float *dk, float *dv, float *db, const float *dout,
                          const float *out, const float *lse, const float *q, const float *k, const float *v, int B,
                          int T, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs,
                          float scale);
int cu_gelu_bwd_bias(const smj_exec *ex, float *dx, float *db, const float *dout, const float *x, int64_t N, int H);
/* embedding_bwd (embed_bwd.cu). */
void cu_embedding_bwd(const smj_exec *ex, float *dwte, const int32_t *ids, const float *dout, int64_t N, int C);
/* Adds the P rows of part [P, C] to dw [C] in a fixed order (norms.cu). */
void colsum_add(smj_cuda *c, float *dw, const float *part, int P, int64_t C);
/* db[H] += the column sums of x [N, H] (bf16 when b16, else fp32; H % 4
 * == 0, rows 16-byte aligned): per-block partials, then colsum_add. */
void colsum_rows_add(smj_cuda *c, float *db, const void *x, int b16, int64_t N, int H);
int cu_matmul_bias(const smj_exec *ex, float *Cm, const float *A, const float *Bm, const float *bias, int64_t M,
                   int64_t N, int64_t K, int tA, int tB);
int cu_matmul_bias_gelu(const smj_exec *ex, float *out, float *pre, const float *A, const float *Bm,
                        const float *bias, int64_t M, int64_t N, int64_t K, int tA, int tB);
int cu_matmul_dgelu(const smj_exec *ex, float *Cm, float *db, const float *A, const float *Bm, const float *x,
                    int64_t M, int64_t N, int64_t K, int tA, int tB);
void lt_free(smj_cuda *c);
int lt_gemm(smj_cuda *c, int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
            const void *B, int64_t ldb, float beta, void *C, int64_t ldc, cudaDataType_t ct);
void cu_layernorm_bwd(const smj_exec *ex, float *dx, float *dw, float *db, const float *dout, const float *x,
                      const float *w, const float *mean, const float *rstd, int64_t N, int C, int acc);

/* RoPE's rotation of the pair (a, b) by (co, si), without contraction into
 * FMAs, so rope_fwd and decode_attention round alike. */
static __device__ __forceinline__ void rope_rot(float a, float b, float co, float si, float &o0, float &o1) {
    o0 = __fsub_rn(__fmul_rn(a, co), __fmul_rn(b, si));
    o1 = __fadd_rn(__fmul_rn(b, co), __fmul_rn(a, si));
}

/* The special function unit's 2^t (~2 ulp; 0 below 2^-126, inf from
 * 2^128) and 1/t (~1 ulp): one instruction each, the same bits for the same
 * input wherever they run. */
static __device__ __forceinline__ float ex2_sfu(float t) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(t));
    return y;
}
static __device__ __forceinline__ float rcp_sfu(float t) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(t));
    return y;
}

/* GELU, tanh form: 0.5 v (1 + tanh u) = v s with s = 1 / (1 + e^-2u), and
 * gelu' = s + 2 v s (1 - s) u'. All in float: -2u = c1 + c3 (the linear and
 * cubic terms), their sum's rounding and the linear term's (with the
 * constant's own: K1 = K1H + K1L) carried in lo; e^hi = 2^t with t =
 * hi log2 e rounded, t's own error carried into lo too (as te ln 2), and
 * applied as e^-2u = 2^t (1 + lo); no 1 + tanh u to cancel. 2^t and the
 * reciprocal come from the special function unit (~2 ulp and ~1 ulp): GELU
 * is compute-bound on a GPU at these sizes (an IEEE expf and __frcp_rn cost
 * ~15 more instructions a value of ~60). Error bound against the
 * reference's double tanh form: ~5e-7 relative where x >= -2, far below
 * 1e-7 absolute elsewhere; gelu' ~5e-7 absolute (the op checker's limits:
 * 1e-6, 1e-7, 1e-6). Other roundings are explicit (_rn), so any file's
 * build gives the same bits. e overflows to inf for u below ~-44: s = 0 and
 * 1 - s = 1 there; past |x| = 16, e is 0 or inf and lo is not applied (x^3
 * may overflow). */
#define GELU_K 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_L2E 1.44269504088896340736 /* log2 e */
static __device__ __forceinline__ void gelu_s(float x, float &s, float &oms) {
    const float K1H = (float)(-2.0 * GELU_K), K1L = (float)(-2.0 * GELU_K - (double)K1H),
                K3 = (float)(-2.0 * GELU_K * 0.044715), L2H = (float)GELU_L2E,
                L2L = (float)(GELU_L2E - (double)L2H), LN2 = (float)0.69314718055994530942;
    float c1 = __fmul_rn(K1H, x), c3 = __fmul_rn(__fmul_rn(K3, __fmul_rn(x, x)), x);
    float hi = __fadd_rn(c1, c3);
    float lo = __fadd_rn(__fsub_rn(c3, __fsub_rn(hi, c1)), __fadd_rn(__fmaf_rn(K1H, x, -c1), __fmul_rn(K1L, x)));
    float t = __fmul_rn(hi, L2H);
    float te = __fadd_rn(__fmaf_rn(hi, L2H, -t), __fmul_rn(hi, L2L)); /* hi log2 e - t */
    float e = ex2_sfu(t);
    if (fabsf(x) < 16.0f && !isinf(e)) e = __fmaf_rn(e, __fmaf_rn(te, LN2, lo), e);
    s = rcp_sfu(__fadd_rn(1.0f, e));
    oms = isinf(e) ? 1.0f : __fmul_rn(e, s);
}
/* The sigmoid 1 / (1 + e^-g) from the special function unit (ex2_sfu,
 * rcp_sfu): e^-g = 2^t with t = -g log2 e rounded, t's rounding carried
 * back as e (1 + te ln 2) (where |g| < 64; beyond, e is 0, inf or so large
 * that the sigmoid's error is far below 1e-30 absolute). ~2e-7 relative
 * against the double reference for |g| < 64. An IEEE expf and division
 * made SwiGLU issue-bound (~34 instructions a value; on an H200 the
 * forward ran at 3.3 TB/s where its bytes alone allow ~4.4). silu_f: g
 * times it (SwiGLU, training and decoding alike). */
static __device__ __forceinline__ float sigmoid_sfu(float g) {
    const float L2H = (float)GELU_L2E, L2L = (float)(GELU_L2E - (double)L2H), LN2 = (float)0.69314718055994530942;
    const float t = __fmul_rn(-g, L2H);
    float e = ex2_sfu(t);
    if (fabsf(g) < 64.0f) {
        const float te = __fadd_rn(__fmaf_rn(-g, L2H, -t), __fmul_rn(-g, L2L)); /* -g log2 e - t */
        e = __fmaf_rn(e, __fmul_rn(te, LN2), e);
    }
    return rcp_sfu(__fadd_rn(1.0f, e));
}
static __device__ __forceinline__ float silu_f(float g) { return __fmul_rn(g, sigmoid_sfu(g)); }
static __device__ __forceinline__ float gelu_f(float x) {
    float s, oms;
    gelu_s(x, s, oms);
    return __fmul_rn(x, s);
}
static __device__ __forceinline__ float gelu_d(float x) {
    float s, oms;
    gelu_s(x, s, oms);
    if (s == 0.0f) return __fmul_rn(0.0f, x); /* (NaN for x = -inf, as the reference) */
    if (oms == 0.0f) return s;
    float du = __fmul_rn((float)GELU_K, __fadd_rn(1.0f, __fmul_rn((float)(3.0 * 0.044715), __fmul_rn(x, x))));
    return __fadd_rn(s, __fmul_rn(__fmul_rn(__fmul_rn(__fmul_rn(2.0f, x), s), oms), du));
}
/* The layout of smj_cuda.dec_sync (unsigned words). */
#define DEC_ARGMAX_BLOCKS 256                      /* decode_argmax's grid, at most */
#define DEC_ARGMAX_OFF (2 + SMJ_CUDA_DEC_HEADS)    /* its counter, then values and indices [DEC_ARGMAX_BLOCKS] each */
#define DEC_SYNC_N (DEC_ARGMAX_OFF + 1 + 2 * DEC_ARGMAX_BLOCKS)
/* The optional decode ops: decode_attention (attention.cu), decode_block,
 * decode_linear and decode_argmax (decode.cu). */
void cu_decode_attention(const smj_exec *ex, float *out, float *q, float *k, const float *v, float *kc, float *vc,
                         const float *cs, const float *sn, const int32_t *pos, int NH, int NKV, int HS, int cap,
                         float scale);
int cu_decode_block(const smj_exec *ex, float *y, const float *x, const smj_block_weights *w, int L,
                    int64_t lstride, float *kc, float *vc, int64_t kvstride, const float *cs, const float *sn,
                    const int32_t *pos, int C, int NH, int NKV, int HS, int H, int cap, float eps, float scale);
void cu_decode_linear(const smj_exec *ex, float *out, const float *x, const float *norm, const void *W, int wtype,
                      int64_t N, int K, float eps);
void cu_decode_argmax(const smj_exec *ex, int32_t *next, int32_t *hist, int32_t *pos, const float *logits, int V);
/* The graph hooks (graphs.cu). */
int cu_graph_begin(const smj_exec *ex, const uint64_t *trace);
void *cu_graph_end(const smj_exec *ex);
int cu_graph_launch(const smj_exec *ex, void *g);
void cu_graph_free(void *g);
uint64_t cu_graph_trace(const smj_exec *ex);
/* The element-wise ops (elementwise.cu). */
void cu_swiglu_fwd(const smj_exec *ex, float *out, const float *gate, const float *up, int64_t N, int H, int64_t ld);
void cu_swiglu_bwd(const smj_exec *ex, float *dgate, float *dup, const float *dout, const float *gate,
                   const float *up, int64_t N, int H, int64_t ld);
void cu_add(const smj_exec *ex, float *out, const float *a, const float *b, int64_t n);
void cu_scale(const smj_exec *ex, float *x, float s, int64_t n);
void cu_adamw(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, int64_t n, float lr,
              float b1, float b2, float eps, float wd, int64_t t);
int cu_adamw_runs(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, const smj_step_ctl *ctl,
                  const int64_t *off, const int64_t *len, const unsigned char *decay, int nr, float lr, float b1,
                  float b2, float eps, float wd, int64_t t);
void cu_gelu_fwd(const smj_exec *ex, float *out, const float *x, int64_t n);
void cu_gelu_bwd(const smj_exec *ex, float *dx, const float *dout, const float *x, int64_t n);
/* Cross-entropy (xent.cu); xent_fwd_bwd is an optional op. */
void cu_xent_fwd(const smj_exec *ex, float *losses, float *lse, const float *logits, const int32_t *targets,
                 int64_t N, int V, int ld);
void cu_xent_bwd(const smj_exec *ex, float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                 float dloss, int64_t N, int V, int ld);
int cu_xent_fwd_bwd(const smj_exec *ex, float *losses, float *lse, float *dlogits, const float *logits,
                    const int32_t *targets, float dloss, int64_t N, int V, int ld);
/* qmatmul (qmatmul.cu), an optional op. */
void cu_qmatmul(const smj_exec *ex, float *Cm, const float *A, const void *Wq, int wtype, int64_t M, int64_t N,
                int64_t K, int acc);

/* F(NC) with NC = values per lane when a warp's lanes cover a head of HS
 * (<= 256) dims, d = lane + 32 c. */
#define NC_DISPATCH(HS, F)                                  \
    do {                                                    \
        if ((HS) <= 32) F(1);                               \
        else if ((HS) <= 64) F(2);                          \
        else if ((HS) <= 128) F(4);                         \
        else F(8);                                          \
    } while (0)

/* ------------------------------------------------------------ reductions */

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Block-wide sum in double (blockDim.x a multiple of 32, <= 1024); every
 * thread gets the result. */
static __device__ double block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}
static __device__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = -INFINITY;
    for (int i = 0; i < nw; i++) t = fmaxf(t, sh[i]);
    return t;
}

#endif
