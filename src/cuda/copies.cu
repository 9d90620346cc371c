/* copies.cu — the CUDA backend's bf16 copies of fp32 tensors (bf16 mode)
 * and the ops that manage them.
 *
 *  - Kept operand copies (smj_cuda.bc, BC_N slots): a product's bf16 cast of
 *    an operand, kept for the next products (cast_of, kept_copy), and the
 *    copies ops write beside their outputs (shadow_of). Valid while the
 *    source is unchanged: cast_written drops what an op writes, OP_BEGIN
 *    ops drop all (gen), a host write drops all (host_writes).
 *  - Copies in the caller's memory (smj_cuda.ext): a tensor's 16-bit
 *    storage under --fp16-activations: written by the op itself where
 *    bf16_home names it (home_of), or the source of bf16_unpack/bf16_bind
 *    (exact copies: ops may read them in place of the fp32 values,
 *    exact_copy).
 *  - Lazy tensors: a copy standing for fp32 values not written (bf16_bind;
 *    an output bf16_only promised to products, fp32_out), written by an
 *    unpack kernel when an op reads the tensor in 32 bits (fp32_in; every
 *    op not opened with OP_BEGIN_L: lazy_all), when its slot is reused or
 *    when an op writes part of it; dropped unwritten by bf16_drop and by
 *    outputs that overwrite them whole (cast_overwritten).
 * The ops: bf16_pack / bf16_unpack (--fp16-activations' storage, the CPU
 * backend's rounding bit for bit) and the hints bf16_bind, bf16_home,
 * bf16_only, bf16_drop (ops.h).
 */
#include "cuda_common.cuh"

static void materialize_bc(smj_cuda *c, int i);

/* The kept-copy slot for src[0, n): of those not allocated yet or already
 * holding n values (so the blocks of a larger operand, the LM head's
 * dlogits, take turns in one grown slot), else of all (grown to n), the
 * first whose copy is no longer valid, else the least recently used one;
 * a lazy one (its fp32 values written first) only when every other is the
 * running op's; never one the running op has used (its other operand may
 * be there); registered as valid now. NULL on failure. (Stale ones first,
 * in index order, rather than by age: a step that starts with every copy
 * stale then takes the same slots as the step before, which a recorded
 * train step needs; by age the choices cycled over several steps.) */
static __nv_bfloat16 *slot_take(smj_cuda *c, const float *src, int64_t n) {
    int lru = -1;
    bool lru_stale = false;
    for (int pass = 0; pass < 3 && lru < 0; pass++)
        for (int i = 0; i < BC_N; i++) {
            auto &e = c->bc[i];
            bool fits = !e.cap || e.cap >= (size_t)n;
            if (e.used > c->op_clock || (pass < 2 && e.lazy) || (pass == 0 && !fits)) continue;
            const bool stale = !e.lazy && (!e.src || e.gen != c->gen || e.hw != host_writes);
            if (lru < 0 || (stale && !lru_stale) || (!stale && !lru_stale && e.used < c->bc[lru].used)) {
                lru = i;
                lru_stale = stale;
            }
        }
    if (lru < 0) {
        lru = 0;
        for (int i = 1; i < BC_N; i++)
            if (c->bc[i].used < c->bc[lru].used) lru = i;
    }
    if ((size_t)n > c->bc[lru].cap && c->capturing) { /* a graph cannot hold memory freed after it */
        capture_fail(c, "a copy slot would grow");
        return NULL;
    }
    trace_mix(c, (uint64_t)lru, "slot", lru);
    if (c->bc[lru].src && c->bc[lru].lazy) materialize_bc(c, lru); /* its fp32 values live only here */
    auto &e = c->bc[lru];
    e.src = NULL;
    if ((size_t)n > e.cap) {
        if (e.buf) CK(c, cudaFree(e.buf));
        e.buf = NULL;
        e.cap = 0;
        size_t cap = (size_t)n + (size_t)n / 8 + 1024;
        if (!CK(c, cudaMalloc(&e.buf, cap * sizeof(__nv_bfloat16)))) return NULL;
        e.cap = cap;
    }
    e.src = src;
    e.n = n;
    e.gen = c->gen;
    e.hw = host_writes;
    e.used = ++c->clock;
    return e.buf;
}

/* The parameters' copy (smj_cuda.wm) at src[0, n) when it is valid, holds
 * that range at a 16-byte aligned place and n is a size kept copies take
 * (bc_max), else NULL. */
static const __nv_bfloat16 *wm_view(smj_cuda *c, const float *src, int64_t n) {
    auto &w = c->wm;
    if (!w.src || src < w.src || src + n > w.src + w.n || (src - w.src) % 8 || n > c->bc_max || w.gen != c->gen)
        return NULL;
    if (w.hw != host_writes.load()) { /* host writes since: none into the parameters keeps it */
        if (host_touched(w.hw, w.src, sizeof(float) * (size_t)w.n)) {
            w.src = NULL;
            return NULL;
        }
        w.hw = host_writes.load();
    }
    return w.b + (src - w.src);
}
__nv_bfloat16 *wm_for(smj_cuda *c, const float *p, int64_t n) {
    auto &w = c->wm;
    w.src = NULL;
    if (c->prec != PREC_BF16 || CAPTURE_NOCOPY(c) || n <= 0 || (uintptr_t)p % 16) return NULL;
    if ((size_t)n > w.cap) {
        if (c->capturing) { /* a graph cannot hold memory freed after it */
            capture_fail(c, "the parameters' copy would grow");
            return NULL;
        }
        if (w.b) CK(c, cudaFree(w.b));
        w.b = NULL;
        w.cap = 0;
        if (cudaMalloc(&w.b, sizeof(__nv_bfloat16) * (size_t)n) != cudaSuccess) {
            (void)cudaGetLastError(); /* no copy: the products cast as before */
            return NULL;
        }
        w.cap = (size_t)n;
    }
    w.n = n;
    return w.b;
}
void wm_made(smj_cuda *c, const float *p) {
    c->wm.src = p;
    c->wm.gen = c->gen;
    c->wm.hw = host_writes.load();
}

/* A bf16 copy of src[n] for a bf16 product: a kept copy when one is still
 * valid (same src and n, made since the last gen bump and host write, src
 * not written since), else a new cast into a slot (operands over bc_max
 * elements go to dst, a scratch area, and are not kept). NULL on failure. */
const __nv_bfloat16 *kept_copy(smj_cuda *c, const float *src, int64_t n) {
    const __nv_bfloat16 *w = wm_view(c, src, n);
    if (w) return w;
    for (int i = 0; i < BC_N; i++)
        if (c->bc[i].src == src && c->bc[i].n == n && c->bc[i].gen == c->gen && c->bc[i].hw == host_writes) {
            c->bc[i].used = ++c->clock;
            return c->bc[i].buf;
        }
    for (int i = 0; i < EXT_N; i++)
        if (c->ext[i].src == src && c->ext[i].n == n && c->ext[i].gen == c->gen && c->ext[i].hw == host_writes)
            return c->ext[i].b;
    return NULL;
}

const __nv_bfloat16 *cast_of(smj_cuda *c, const float *src, int64_t n, __nv_bfloat16 *dst) {
    if (CAPTURE_NOCOPY(c)) { /* a graph must not hold a copy slot, which later ops reassign */
        capture_fail(c, "a product would cast");
        return NULL;
    }
    const __nv_bfloat16 *k = kept_copy(c, src, n);
    if (k) return k;
    fp32_in(c, src, n);
    if (n > c->bc_max) {
        to_bf16(c, dst, src, n, 0, 1);
        return dst;
    }
    __nv_bfloat16 *b = slot_take(c, src, n);
    if (b) to_bf16(c, b, src, n, 0, 1);
    return b;
}

void cast_pair(smj_cuda *c, const float *A, int64_t na, __nv_bfloat16 *da, const float *B, int64_t nb,
               __nv_bfloat16 *db, const __nv_bfloat16 **a16, const __nv_bfloat16 **b16) {
    *a16 = CAPTURE_NOCOPY(c) ? NULL : kept_copy(c, A, na);
    *b16 = CAPTURE_NOCOPY(c) ? NULL : kept_copy(c, B, nb);
    if (*a16 && *b16) return;
    const char *name = c->pname;
    prof_phase(c, "matmul: bf16 casts");
    if (!*a16) *a16 = cast_of(c, A, na, da);
    if (!*b16) *b16 = cast_of(c, B, nb, db);
    prof_phase(c, name);
}

/* ---- lazy tensors: copies standing for unwritten fp32 values; copies in
 * the caller's memory (smj_cuda.ext) */

__global__ void k_bf16_unpack(float *out, const uint16_t *x, int64_t n, int wide);
static int wide_ok(const void *f32, const void *b16) { return (uintptr_t)f32 % 16 == 0 && (uintptr_t)b16 % 8 == 0; }
static void unpack_run(smj_cuda *c, const float *dst, const __nv_bfloat16 *b, int64_t n) {
    k_bf16_unpack<<<blocks_for((n + 3) / 4, 256, (int64_t)c->n_sm * 32), 256, 0, c->stream>>>(
        (float *)dst, (const uint16_t *)b, n, wide_ok(dst, b));
    LAUNCHED(c);
}
/* dst[0, n) = the values of b[0, n): storage apart, or b at dst itself (a
 * copy kept in its own tensor's first half: the LM head's chunks). In place
 * value i is written over the copy's values 2i and 2i + 1, so the launches
 * take values [lo, hi) from the top down, lo = ceil(hi / 2): a launch reads
 * bytes [2 lo, 2 hi) and writes [4 lo, 4 hi), past what it and the launches
 * after it read; value 0 last, alone (its thread reads, then writes). */
static void unpack_launch(smj_cuda *c, const float *dst, const __nv_bfloat16 *b, int64_t n) {
    if ((const void *)b != (const void *)dst) {
        unpack_run(c, dst, b, n);
        return;
    }
    for (int64_t hi = n; hi > 0;) {
        int64_t lo = hi > 1 ? (hi + 1) / 2 : 0;
        unpack_run(c, dst + lo, b + lo, hi - lo);
        hi = lo;
    }
}
void bf16_to_f32(smj_cuda *c, float *dst, const __nv_bfloat16 *b, int64_t n) {
    if (n > 0) unpack_launch(c, dst, b, n);
}
/* A lazy slot's fp32 values written (it stays, a valid copy). */
static void materialize_bc(smj_cuda *c, int i) {
    if (!c->bc[i].lazy) return;
    c->bc[i].lazy = 0;
    c->n_lazy--;
    unpack_launch(c, c->bc[i].src, c->bc[i].buf, c->bc[i].n);
}

/* The end of entry i's tensor storage: src + n, or for a tight one (bf16
 * alone in its own storage) the end of its n bf16 values. */
static const float *ext_hi(const smj_cuda *c, int i) {
    return c->ext[i].src + (c->ext[i].tight ? (c->ext[i].n + 1) / 2 : c->ext[i].n);
}
static bool ext_valid(const smj_cuda *c, int i) {
    return c->ext[i].src && c->ext[i].gen == c->gen && c->ext[i].hw == host_writes;
}
static void ext_drop(smj_cuda *c, int i) {
    if (c->ext[i].lazy) c->n_lazy--;
    c->ext[i].src = NULL;
    c->ext[i].lazy = c->ext[i].tight = 0;
}
/* A lazy entry's fp32 values written (it stays, an exact copy, unless it
 * was kept at its tensor's start: written over, it goes). A tight one has
 * no room for them: the running op broke bf16_tight's promise (an error;
 * the entry goes, nothing written). */
static void materialize(smj_cuda *c, int i) {
    auto &e = c->ext[i];
    if (!e.lazy) return;
    if (e.tight) {
        record(c, SMJ_ERR_INVALID, "%s would write the fp32 values of a bf16-only tensor with no room for them "
               "(%lld values, bf16_tight)", c->op ? c->op : "an op", (long long)e.n);
        ext_drop(c, i);
        return;
    }
    e.lazy = 0;
    c->n_lazy--;
    unpack_launch(c, e.src, e.b, e.n);
    if ((const void *)e.b == (const void *)e.src) ext_drop(c, i);
}
/* Registers b as the bf16 copy of src[0, n), in a free or stale entry when
 * there is one, else in the oldest but a tight lazy one (a lazy one
 * written first). */
static void ext_add(smj_cuda *c, const float *src, int64_t n, const __nv_bfloat16 *b, int exact, int lazy,
                    int tight) {
    int at = -1;
    for (int i = 0; i < EXT_N && at < 0; i++)
        if (!c->ext[i].lazy && !ext_valid(c, i)) at = i;
    for (int k = 0; k < EXT_N && at < 0; k++) {
        int i = c->ext_next;
        c->ext_next = (i + 1) % EXT_N;
        if (!(c->ext[i].tight && c->ext[i].lazy)) at = i;
    }
    if (at < 0) { /* (EXT_N tight tensors alive: not reached) */
        record(c, SMJ_ERR_INVALID, "%s: no entry left to keep a bf16 copy in", c->op ? c->op : "an op");
        return;
    }
    materialize(c, at);
    ext_drop(c, at);
    c->ext[at] = {src, n, b, c->gen, host_writes, exact, lazy, tight};
    if (lazy) c->n_lazy++;
}
/* The bf16 storage b[0, n) is about to be written: entries stored there
 * go (a lazy one written first). */
static void claim16(smj_cuda *c, const __nv_bfloat16 *b, int64_t n) {
    for (int i = 0; i < EXT_N; i++)
        if (c->ext[i].src && c->ext[i].b < b + n && b < c->ext[i].b + c->ext[i].n) {
            materialize(c, i);
            ext_drop(c, i);
        }
}

void lazy_all(smj_cuda *c) {
    for (int i = 0; c->n_lazy && i < EXT_N; i++)
        if (c->ext[i].lazy) materialize(c, i);
    for (int i = 0; c->n_lazy && i < BC_N; i++)
        if (c->bc[i].lazy) materialize_bc(c, i);
}
void fp32_in(smj_cuda *c, const float *p, int64_t n) {
    for (int i = 0; c->n_lazy && i < EXT_N; i++)
        if (c->ext[i].lazy && c->ext[i].src < p + n && p < ext_hi(c, i)) materialize(c, i);
    for (int i = 0; c->n_lazy && i < BC_N; i++)
        if (c->bc[i].lazy && c->bc[i].src < p + n && p < c->bc[i].src + c->bc[i].n) materialize_bc(c, i);
}
/* Lazy tensors overlapping p[0, n) go: unwritten when wholly inside it
 * (dead or about to be overwritten: drop), else written first (cast_written). */
static void lazy_out(smj_cuda *c, const float *p, int64_t n, int drop) {
    for (int i = 0; c->n_lazy && i < EXT_N; i++) {
        auto &e = c->ext[i];
        if (!e.lazy || !(e.src < p + n && p < ext_hi(c, i))) continue;
        if (!drop || e.src < p || ext_hi(c, i) > p + n) materialize(c, i);
        ext_drop(c, i);
    }
    for (int i = 0; c->n_lazy && i < BC_N; i++) {
        auto &e = c->bc[i];
        if (!e.lazy || !(e.src < p + n && p < e.src + e.n)) continue;
        if (!drop || e.src < p || e.src + e.n > p + n) materialize_bc(c, i);
        e.lazy = 0;
        e.src = NULL;
        c->n_lazy--;
    }
}
void cast_overwritten(smj_cuda *c, const float *p, int64_t n) {
    lazy_out(c, p, n, 1);
    cast_written(c, p, n);
}
float *fp32_out(smj_cuda *c, float *p, int64_t n, const __nv_bfloat16 *copy) {
    for (int k = 0; copy && k < c->n_only; k++) {
        if (c->only[k].src != p || c->only[k].n != n) continue;
        for (int i = 0; i < BC_N; i++)
            if (c->bc[i].src == p && c->bc[i].n == n && c->bc[i].buf == copy && !c->bc[i].lazy) {
                c->bc[i].lazy = 1;
                c->n_lazy++;
                return NULL;
            }
        for (int i = 0; i < EXT_N; i++)
            if (c->ext[i].src == p && c->ext[i].n == n && c->ext[i].b == copy && !c->ext[i].lazy) {
                c->ext[i].lazy = c->ext[i].exact = 1;
                c->n_lazy++;
                return NULL;
            }
    }
    if (tight_out(c, p, n))
        record(c, SMJ_ERR_INVALID, "%s would write the fp32 values of a bf16-only output with no room for them "
               "(%lld values, bf16_tight)", c->op ? c->op : "an op", (long long)n);
    return p;
}
const __nv_bfloat16 *exact_copy(smj_cuda *c, const float *p, int64_t n) {
    for (int i = 0; i < EXT_N; i++)
        if (c->ext[i].src == p && c->ext[i].n == n && c->ext[i].exact && ext_valid(c, i)) return c->ext[i].b;
    for (int i = 0; c->n_lazy && i < BC_N; i++) /* a lazy slot stands for its tensor: exact */
        if (c->bc[i].src == p && c->bc[i].n == n && c->bc[i].lazy) {
            c->bc[i].used = ++c->clock; /* the running op's: not retaken by its shadow_of */
            return c->bc[i].buf;
        }
    return NULL;
}
const __nv_bfloat16 *exact_in(smj_cuda *c, const float *p, int64_t n) {
    const __nv_bfloat16 *e = n > 0 ? exact_copy(c, p, n) : NULL;
    if (e && (uintptr_t)e % 8) e = NULL;
    if (!e) fp32_in(c, p, n);
    return e;
}
int only_promised(const smj_cuda *c, const float *p, int64_t n) {
    for (int k = 0; k < c->n_only; k++)
        if (c->only[k].src == p && c->only[k].n == n) return 1;
    return 0;
}
/* The home named for p[0, n) (the caller's memory: any size unless
 * SMJ_CUDA_BF16_KEEP lowers ext_max, as for bound copies, so that with it
 * no copy of any kind is kept and every product casts both operands the
 * same way; a tight one at any size, being p's only storage), 16-byte
 * aligned, apart from p's storage or at its start (unpack_launch); -1: none. */
static int home_find(const smj_cuda *c, const float *p, int64_t n) {
    if (c->prec != PREC_BF16 || CAPTURE_NOCOPY(c)) return -1;
    for (int i = 0; i < c->n_home; i++) {
        const __nv_bfloat16 *b = c->home[i].b;
        const bool apart = (const void *)(b + n) <= (const void *)p || (const void *)(p + n) <= (const void *)b;
        if (c->home[i].src == p && c->home[i].n == n && (uintptr_t)b % 16 == 0 && (apart || (const void *)b == p) &&
            (n <= c->ext_max || c->home[i].tight))
            return i;
    }
    return -1;
}
int tight_out(const smj_cuda *c, const float *p, int64_t n) {
    int i = home_find(c, p, n);
    return i >= 0 && c->home[i].tight;
}
int tight_in(const smj_cuda *c, const float *p, int64_t n) {
    for (int i = 0; c->n_lazy && i < EXT_N; i++)
        if (c->ext[i].tight && c->ext[i].lazy && c->ext[i].src == p && c->ext[i].n == n) return 1;
    return 0;
}
__nv_bfloat16 *home_of(smj_cuda *c, const float *p, int64_t n) {
    int i = home_find(c, p, n);
    if (i < 0) return NULL;
    __nv_bfloat16 *b = c->home[i].b;
    claim16(c, b, n);
    ext_add(c, p, n, b, 0, 0, c->home[i].tight);
    return b;
}
int copy_room(const smj_cuda *c, const float *p, int64_t n) {
    return home_find(c, p, n) >= 0 || (n >= SHADOW_MIN && n <= c->bc_max);
}
int cast_big(smj_cuda *c, const float *p, int64_t n) {
    return n > c->bc_max && (CAPTURE_NOCOPY(c) || !kept_copy(c, p, n));
}

__nv_bfloat16 *shadow_of(smj_cuda *c, const float *p, int64_t n) {
    __nv_bfloat16 *h = home_of(c, p, n);
    if (h) return h;
    if (c->prec != PREC_BF16 || n < SHADOW_MIN || n > c->bc_max || CAPTURE_NOCOPY(c)) return NULL;
    return slot_take(c, p, n);
}

/* An op writes C[0, n) (and may read it: a lazy tensor there is written
 * first). */
void cast_written(smj_cuda *c, const float *C, int64_t n) {
    if (c->wm.src && c->wm.src < C + n && C < c->wm.src + c->wm.n) c->wm.src = NULL;
    for (int i = 0; i < BC_N; i++)
        if (c->bc[i].src && c->bc[i].src < C + n && C < c->bc[i].src + c->bc[i].n) {
            materialize_bc(c, i);
            c->bc[i].src = NULL;
        }
    for (int i = 0; i < EXT_N; i++)
        if (c->ext[i].src && c->ext[i].src < C + n && C < ext_hi(c, i)) {
            materialize(c, i);
            ext_drop(c, i);
        }
}

/* ------------------------------------------------------------ bf16 storage ops */

/* bf16 storage of saved activations: the same integer rounding as the CPU
 * backend (nearest, ties to even, subnormals kept, NaN quiet), four values
 * per thread when both pointers allow the wide loads. */
__device__ __forceinline__ uint16_t bf16_bits(float f) {
    uint32_t b = __float_as_uint(f);
    return (uint16_t)((b & 0x7FFFFFFFu) > 0x7F800000u ? (b >> 16) | 0x40u : (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
__global__ void k_bf16_pack(uint16_t *out, const float *x, int64_t n, int wide) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = wide ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        float4 v = ((const float4 *)x)[i];
        ushort4 o = {bf16_bits(v.x), bf16_bits(v.y), bf16_bits(v.z), bf16_bits(v.w)};
        ((ushort4 *)out)[i] = o;
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) out[i] = bf16_bits(x[i]);
}
__global__ void k_bf16_unpack(float *out, const uint16_t *x, int64_t n, int wide) {
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
    int64_t n4 = wide ? n / 4 : 0;
    for (int64_t i = i0; i < n4; i += st) {
        ushort4 v = ((const ushort4 *)x)[i];
        float4 o = {__uint_as_float((uint32_t)v.x << 16), __uint_as_float((uint32_t)v.y << 16),
                    __uint_as_float((uint32_t)v.z << 16), __uint_as_float((uint32_t)v.w << 16)};
        ((float4 *)out)[i] = o;
    }
    for (int64_t i = 4 * n4 + i0; i < n; i += st) out[i] = __uint_as_float((uint32_t)x[i] << 16);
}
/* pack writes no fp32 data: the kept copies stay, except those in the
 * caller's memory it overwrites; nothing to do when the op that wrote x
 * left its copy there (bf16_home). unpack's source becomes its output's
 * exact copy (smj_cuda.ext; from SHADOW_MIN values on, any size: ext_max); bind registers
 * the same without writing out (lazy) or, with n = 0, ends every binding. */
void cu_bf16_pack(const smj_exec *ex, uint16_t *out, const float *x, int64_t n) {
    OP_BEGIN_L("bf16_pack");
    const __nv_bfloat16 *o = (const __nv_bfloat16 *)out;
    for (int i = 0; i < EXT_N; i++)
        if (c->ext[i].src == x && c->ext[i].n == n && c->ext[i].b == o && ext_valid(c, i)) {
            op_end(c);
            return;
        }
    fp32_in(c, x, n);
    claim16(c, o, n);
    if (n > 0) { k_bf16_pack<<<EW_GRID((n + 3) / 4)>>>(out, x, n, wide_ok(x, out)); LAUNCHED(c); }
    op_end(c);
}
static void unpack(smj_cuda *c, float *out, const uint16_t *x, int64_t n, int lazy) {
    int keep = c->prec == PREC_BF16 && n >= SHADOW_MIN && n <= c->ext_max && !CAPTURE_NOCOPY(c) &&
               (lazy || (const void *)x != (const void *)out); /* (in place: written over) */
    cast_overwritten(c, out, n);
    if (n > 0 && !(keep && lazy)) unpack_launch(c, out, (const __nv_bfloat16 *)x, n);
    if (keep) ext_add(c, out, n, (const __nv_bfloat16 *)x, 1, lazy, 0);
}
void cu_bf16_unpack(const smj_exec *ex, float *out, const uint16_t *x, int64_t n) {
    OP_BEGIN_L("bf16_unpack");
    unpack(c, out, x, n, 0);
    op_end(c);
}
void cu_bf16_bind(const smj_exec *ex, float *out, const uint16_t *x, int64_t n) {
    OP_BEGIN_L("bf16_bind");
    unpack(c, out, x, n, 1);
    op_end(c);
}
/* Hints, not ops of their own: home and only are for the next op (op_end
 * forgets them); drop discards lazy tensors inside x[0, n) (NULL: all). */
void cu_bf16_home(const smj_exec *ex, const float *x, uint16_t *x16, int64_t n) {
    smj_cuda *c = S(ex);
    if (c->n_home < HOME_N) c->home[c->n_home++] = {x, n, (__nv_bfloat16 *)x16, 0};
}
void cu_bf16_only(const smj_exec *ex, const float *x, int64_t n) {
    smj_cuda *c = S(ex);
    if (c->n_only < HOME_N) c->only[c->n_only++] = {x, n};
}
/* Taken in bf16 mode (not while recording a decoding step), for x 16-byte
 * aligned: home_find then finds the home at any size, and the ops that
 * write such outputs (matmul, xent_bwd, xent_fwd_bwd) write them as bf16
 * alone (tight_out). */
int cu_bf16_tight(const smj_exec *ex, const float *x, int64_t n) {
    smj_cuda *c = S(ex);
    if (c->prec != PREC_BF16 || CAPTURE_NOCOPY(c) || (uintptr_t)x % 16 || n < 1 || c->n_home >= HOME_N ||
        c->n_only >= HOME_N)
        return 0;
    c->home[c->n_home++] = {x, n, (__nv_bfloat16 *)x, 1};
    c->only[c->n_only++] = {x, n};
    return 1;
}
void cu_bf16_drop(const smj_exec *ex, const float *x, int64_t n) {
    smj_cuda *c = S(ex);
    if (x) { lazy_out(c, x, n, 1); return; }
    for (int i = 0; c->n_lazy && i < EXT_N; i++)
        if (c->ext[i].lazy) ext_drop(c, i);
    for (int i = 0; c->n_lazy && i < BC_N; i++)
        if (c->bc[i].lazy) { c->bc[i].lazy = 0; c->bc[i].src = NULL; c->n_lazy--; }
}
