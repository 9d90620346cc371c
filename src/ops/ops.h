/* ops.h — the op table: every computation a model does goes through it.
 *
 * A backend is a struct of function pointers, one per op, listed once in
 * SMJ_OPS below. Backends: "ref" (plain scalar loops, never optimized: the
 * oracle) and "cpu" (SIMD + OpenMP). A CUDA backend will fill the same table
 * with device pointers; model code never touches memory except through ops
 * and the backend's alloc/copy hooks.
 *
 * Shape letters: B batch, T time (Tq queries, Tk keys), C channels,
 * NH query heads, NKV key/value heads, HS head size, H FFN hidden, V vocab,
 * N = B*T rows. All tensors are row-major with the last dimension innermost.
 *
 * Accumulation rule (every backward): parameter gradients are ADDED (+=);
 * activation gradients are WRITTEN (=) unless the op says "accumulates".
 */
#ifndef SMJ_OPS_H
#define SMJ_OPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/core.h"

typedef struct smj_backend smj_backend;

/* X(name) for every op; the checker (tests/test_ops.c) has one case per op
 * and static_asserts the count. */
#define SMJ_OPS(X) \
    X(matmul) X(embedding_fwd) X(embedding_bwd) X(rmsnorm_fwd) X(rmsnorm_bwd) X(add_rmsnorm_fwd) \
    X(rope_fwd) X(rope_bwd) X(attention_fwd) X(attention_bwd) X(swiglu_fwd) X(swiglu_bwd) \
    X(add) X(xent_fwd) X(xent_bwd) X(adamw) X(sumsq) X(scale) \
    X(layernorm_fwd) X(add_layernorm_fwd) X(layernorm_bwd) X(gelu_fwd) X(gelu_bwd) X(bf16_pack) X(bf16_unpack)

enum {
#define SMJ_OP_ENUM(n) SMJ_OP_##n,
    SMJ_OPS(SMJ_OP_ENUM)
#undef SMJ_OP_ENUM
    SMJ_OP_COUNT
};

/* Optional ops: not every backend has them (the field is then NULL; callers
 * check). Not covered by tests/test_ops.c: tests/test_qmatmul.c checks
 * qmatmul; tests/cuda/test_cuda_model.c matmul_bias, matmul_bias_gelu and
 * matmul_dgelu; tests/cuda/test_cuda_ops.c attention_bwd_rope,
 * attention_bwd_bias, gelu_bwd_bias, adamw_runs, grad_ctl and xent_fwd_bwd; tests/cuda/test_cuda_decode.c the decode ops;
 * tests/cuda/test_cuda_bf16.c the 16-bit storage hints (the host backends'
 * are their definitions). */
#define SMJ_OPS_OPTIONAL(X) X(qmatmul) X(matmul_bias) X(matmul_bias_gelu) X(matmul_dgelu) X(attention_bwd_rope) \
    X(attention_bwd_bias) X(gelu_bwd_bias) X(decode_attention) \
    X(decode_block) \
    X(decode_linear) X(decode_argmax) X(bf16_home) X(bf16_bind) X(bf16_only) X(bf16_drop) X(bf16_tight) X(adamw_runs) \
    X(xent_fwd_bwd) X(grad_ctl)

/* The end of a train step on the device (grad_ctl, adamw_runs with a
 * control block): the trainer writes lr, t and AdamW's bias corrections
 * for the update (smj_step_ctl_set) before the step's ops; grad_ctl writes
 * sumsq, loss_sum, gs and skip from the step's gradients and losses; adamw_runs
 * reads them there, so the update is queued behind the backward without a
 * host round trip (the trainer reads the block after). Backend memory. */
typedef struct {
    double sumsq;     /* sum of the gradients' squares (as sumsq) */
    double loss_sum;  /* sum of the step's per-row losses */
    float gs;         /* clipping coefficient (1: none) */
    int32_t skip;     /* 1: no update (a non-finite loss or norm, skipping on) */
    int64_t t;        /* the update's AdamW step count */
    float lr, bc1, sbc2; /* learning rate; 1 - b1^t and sqrt(1 - b2^t) as float */
    int32_t pad;
} smj_step_ctl;
static inline void smj_step_ctl_set(smj_step_ctl *c, float lr, float b1, float b2, int64_t t) {
    c->sumsq = c->loss_sum = 0;
    c->gs = 1.0f;
    c->skip = 0;
    c->t = t;
    c->lr = lr;
    c->bc1 = (float)(1.0 - pow(b1, (double)t));
    c->sbc2 = sqrtf((float)(1.0 - pow(b2, (double)t)));
    c->pad = 0;
}

/* Weight types of qmatmul: the GGML type ids (ggml.h's enum ggml_type), with
 * GGML's block layouts (see src/gguf/gguf.h):
 *   F16  : IEEE half per value
 *   Q8_0 : 32 values -> 34 bytes: fp16 d, int8 qs[32];            x = qs[j] * d
 *   Q4_0 : 32 values -> 18 bytes: fp16 d, uint8 qs[16] (low nibble value j,
 *          high nibble value j + 16);                             x = (q - 8) * d */
enum { SMJ_WTYPE_F16 = 1, SMJ_WTYPE_Q4_0 = 2, SMJ_WTYPE_Q8_0 = 8 };
/* Weight types of the decode ops (decode_block, decode_linear): f32, or
 * bf16 (GGML's id too: the top half of the f32 bits as bf16_pack rounds). */
enum { SMJ_WTYPE_F32 = 0, SMJ_WTYPE_BF16 = 30 };

/* One block's weights for decode_block: linear weights [out, in] as the
 * model stores them (wq [NH*HS, C], wk/wv [NKV*HS, C], wo [C, NH*HS],
 * wgate/wup [H, C], wdown [C, H]), all of type wtype; norms and biases f32.
 * A Llama block has RMSNorms (attn_norm_b, ffn_norm_b NULL) and SwiGLU; the
 * GPT-2 family LayerNorms (their biases non-NULL) and GELU (wgate NULL).
 * Each product's bias (bq [NH*HS], bk, bv [NKV*HS], bo, bdown [C], bup
 * [H]) may be NULL: none. */
typedef struct {
    const float *attn_norm, *ffn_norm;
    const void *wq, *wk, *wv, *wo, *wgate, *wup, *wdown;
    int wtype; /* SMJ_WTYPE_F32 or SMJ_WTYPE_BF16 */
    const float *attn_norm_b, *ffn_norm_b;
    const float *bq, *bk, *bv, *bo, *bup, *bdown;
} smj_block_weights;

#define SMJ_OP_OPTIONAL_FIELDS \
    /* C[M,N] = (acc ? C : 0) + A[M,K] · W[N,K]^T, with W stored row-major as \
     * N rows of K values in GGML blocks of wtype (SMJ_WTYPE_*; K a multiple \
     * of 32 for the block types; row n starts at byte n * row_bytes). \
     * Inference only (no backward). Backends may quantize A internally (the \
     * CPU one rounds A to 8-bit blocks of 32 for Q8_0/Q4_0, as llama.cpp \
     * does), so results match the exact product to about 1e-2 relative. */ \
    void (*qmatmul)(const smj_exec *ex, float *Cm, const float *A, const void *Wq, int wtype, \
                    int64_t M, int64_t N, int64_t K, int acc); \
 \
    /* C[M,N] = op(A)·op(B) + bias[N] on every row: matmul (acc 0), then \
     * the bias added (a backend may add it to the product before rounding \
     * it). Returns 1, or 0 when the backend does not take these sizes or \
     * modes (nothing written: run matmul and add the bias). */ \
    int (*matmul_bias)(const smj_exec *ex, float *Cm, const float *A, const float *Bm, const float *bias, \
                       int64_t M, int64_t N, int64_t K, int transA, int transB); \
 \
    /* pre[M,N] = op(A)·op(B) + bias[N] (matmul_bias), then out = \
     * gelu_fwd(pre): a product and the GELU after it in one pass (GPT-2's \
     * c_fc; pre is what gelu's backward reads). Returns 1, or 0 when the \
     * backend does not take these sizes or modes (nothing written: run \
     * matmul_bias, then gelu_fwd). */ \
    int (*matmul_bias_gelu)(const smj_exec *ex, float *out, float *pre, const float *A, const float *Bm, \
                            const float *bias, int64_t M, int64_t N, int64_t K, int transA, int transB); \
 \
    /* C[M,N] = op(A)·op(B) (matmul, acc 0), then C = gelu_bwd(C, x) with x \
     * [M,N] the GELU's input, then db[N] += C's column sums: the product of \
     * GELU's output gradient, GELU's backward and the bias gradient of the \
     * product before it in one op (GPT-2's c_proj dX and c_fc bias). \
     * Returns 1, or 0 when the backend does not take these sizes or modes \
     * (nothing written: run matmul, gelu_bwd and the bias gradient). */ \
    int (*matmul_dgelu)(const smj_exec *ex, float *Cm, float *db, const float *A, const float *Bm, const float *x, \
                        int64_t M, int64_t N, int64_t K, int transA, int transB); \
 \
    /* xent_fwd, then xent_bwd of the lse it wrote, in one op (a train \
     * step, whose dloss is known in the forward: the logits read once). \
     * dlogits may alias logits. Returns 1, or 0 when the backend does not \
     * take these sizes or layouts (nothing written: run the two ops). */ \
    int (*xent_fwd_bwd)(const smj_exec *ex, float *losses, float *lse, float *dlogits, const float *logits, \
                        const int32_t *targets, float dloss, int64_t N, int V, int ld); \
 \
    /* attention_bwd, then dq's NH heads and dk's NKV heads rotated back as \
     * rope_bwd does them (positions 0..T-1, tables cos/sin [>= T, HS/2]; \
     * pos0 0) in one pass. Returns 1, or 0 when the backend does not take \
     * these sizes or modes (nothing written: run attention_bwd, then \
     * rope_bwd on dq and dk). */ \
    int (*attention_bwd_rope)(const smj_exec *ex, float *dq, float *dk, float *dv, const float *dout, \
                              const float *out, const float *lse, const float *q, const float *k, \
                              const float *v, const float *cos, const float *sin, int B, int T, int NH, \
                              int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, \
                              float scale); \
 \
    /* attention_bwd, then db[QD + 2 KD] += the column sums of dq | dk | dv \
     * (the biases of the products q, k, v come from, side by side: GPT-2's \
     * c_attn). Returns 1, or 0 when the backend does not take these sizes \
     * or modes (nothing written: run attention_bwd and the bias gradient). */ \
    int (*attention_bwd_bias)(const smj_exec *ex, float *dq, float *dk, float *dv, float *db, \
                              const float *dout, const float *out, const float *lse, const float *q, \
                              const float *k, const float *v, int B, int T, int NH, int NKV, int HS, \
                              int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale); \
 \
    /* gelu_bwd over N rows of H values (dx = dout · gelu'(x)), then db[H] += \
     * dx's column sums: the bias gradient of the product whose output x is \
     * (GPT-2's c_fc). Returns 1, or 0 when the backend does not take these \
     * sizes (nothing written: run gelu_bwd and the bias gradient). */ \
    int (*gelu_bwd_bias)(const smj_exec *ex, float *dx, float *db, const float *dout, const float *x, int64_t N, \
                         int H); \
 \
    /* The optimizer step over runs of one buffer in one call: for r < nr, \
     * adamw on elements [off[r], off[r] + len[r]) of p, m, v, g with weight \
     * decay wd where decay[r], else 0 (runs disjoint, in any order). The \
     * same values as those adamw calls. With a control block ctl (NULL: \
     * none) gs, lr and t are its (the arguments are ignored) and nothing is \
     * updated where ctl->skip, all read when the update runs. Returns 1, or \
     * 0 when the backend does not take this many runs (nothing written: \
     * call adamw per run). */ \
    int (*adamw_runs)(const smj_exec *ex, float *p, float *m, float *v, const float *g, float gs, \
                      const smj_step_ctl *ctl, const int64_t *off, const int64_t *len, const unsigned char *decay, \
                      int nr, float lr, float b1, float b2, float eps, float wd, int64_t t); \
 \
    /* A train step's end on the device: ctl->sumsq = sumsq(g, n) (the same \
     * value), ctl->loss_sum = the sum of losses[0, nl) in double, \
     * ctl->skip = skip_nonfinite and the norm sqrt(sumsq) or loss_sum \
     * not finite, ctl->gs = clip / (norm + 1e-6) as float \
     * where clip > 0, norm > clip and that is < 1, else 1 (the trainer's \
     * rule); the other fields stay. */ \
    void (*grad_ctl)(const smj_exec *ex, smj_step_ctl *ctl, const float *g, int64_t n, const float *losses, \
                    int64_t nl, float clip, int skip_nonfinite); \
 \
    /* One token's attention at a position read from memory (decoding under \
     * a recorded graph, where the position must be data, not an argument): \
     * p = *pos (0 <= p < cap). With rope tables (cos/sin [>p, HS/2]; NULL: no \
     * rotation) q [NH*HS] and k [NKV*HS] are rotated in place as rope_fwd \
     * does at position p; then kc[p] = k and vc[p] = v (caches [cap, \
     * NKV*HS]); out [NH*HS] = attention_fwd of q over cache rows 0..p. */ \
    void (*decode_attention)(const smj_exec *ex, float *out, float *q, float *k, const float *v, \
                             float *kc, float *vc, const float *cos, const float *sin, \
                             const int32_t *pos, int NH, int NKV, int HS, int cap, float scale); \
 \
    /* One token through L blocks at the position *pos read from memory, \
     * as the ops one by one compute it, block after block (norm: \
     * rmsnorm_fwd, or layernorm_fwd where the norm has a bias; "+ b": the \
     * bias added where there is one): n1 = norm(x, attn_norm); q, k, v = \
     * Wq n1 + bq, Wk n1 + bk, Wv n1 + bv; att = decode_attention (q, k \
     * rotated when there are rope tables, k, v stored at row *pos of kc, \
     * vc [cap, NKV*HS]); r = x + Wo att + bo; n2 = norm(r, ffn_norm); u = \
     * Wup n2 + bup; h = swiglu(Wgate n2, u), or gelu(u) when wgate is NULL; \
     * y = r + Wdown h + bdown. Block l's tensors are w's pointers + \
     * l*lstride elements (of their own types), its caches kc, vc + \
     * l*kvstride floats; y [C] is the last block's output (x, y distinct). \
     * H the FFN width. Nothing happens when *pos is outside [0, cap). \
     * Returns 1, or 0 when the backend does not take these sizes (nothing \
     * done: run the ops one by one). */ \
    int (*decode_block)(const smj_exec *ex, float *y, const float *x, const smj_block_weights *w, int L, \
                        int64_t lstride, float *kc, float *vc, int64_t kvstride, const float *cos, \
                        const float *sin, const int32_t *pos, int C, int NH, int NKV, int HS, int H, int cap, \
                        float eps, float scale); \
    /* out[N] = W[N,K] · n for one row, n = rmsnorm(x, norm) (norm [K]; eps) \
     * or x itself when norm is NULL; W of type wtype (SMJ_WTYPE_F32/BF16). \
     * A decoding step's final norm and LM head. */ \
    void (*decode_linear)(const smj_exec *ex, float *out, const float *x, const float *norm, const void *W, \
                          int wtype, int64_t N, int K, float eps); \
    /* A greedy step's bookkeeping, on the device (steps then follow each \
     * other without the host): id = the index of the largest of logits \
     * [0, V) as smj_sample's greedy scan picks it (the first of equal ones; \
     * a NaN is never larger; logits[0] NaN gives 0); next[0] = id, \
     * hist[*pos + 1] = id, then *pos += 1. */ \
    void (*decode_argmax)(const smj_exec *ex, int32_t *next, int32_t *hist, int32_t *pos, const float *logits, \
                          int V); \
 \
    /* Saved activations in 16 bits (--fp16-activations) without the extra \
     * passes, for backends that keep bf16 copies of op outputs. \
     * bf16_home: a hint, no effect on any value: if the next op (only the \
     * next one; bf16_home calls in a row all apply to it) writes a bf16 \
     * copy of x[0, n) (its output, or an input it reads), the copy may be \
     * written to x16, where a later bf16_pack(x16, x, n) then finds it and \
     * does nothing. \
     * bf16_bind: out = the value of x16 (what bf16_unpack gives), where the \
     * backend may keep x16 as out's value and leave out's storage unwritten \
     * until an op reads out in 32 bits. \
     * (x16 lies apart from x's storage, or at its start: a tensor whose \
     * values live as bf16 in its own memory's first half.) \
     * bf16_only: a promise about the next op's output x[0, n) (like \
     * bf16_home, for that op only): its values will be read only rounded \
     * to bf16 (by products in bf16 mode, by bf16_pack), so a backend that \
     * writes x's bf16 copy may leave x's storage unwritten; an op that \
     * reads x in 32 bits then sees the rounded values. \
     * bf16_drop: x[0, n) will not be read before it is written again (p \
     * NULL: no tensor will): a backend may discard the fp32 values it has \
     * not written (bound or bf16-only tensors). The caller reads such \
     * tensors only through ops (never download) and drops them before \
     * freeing their memory. \
     * bf16_tight: bf16_home(x, x, n) and bf16_only(x, n) for the next op, \
     * whose output x[0, n) then has only n bf16 values of storage (half \
     * its fp32 size): 1 when the backend takes that promise: the next op (a \
     * product, xent_bwd or xent_fwd_bwd) writes the output as bf16 alone, \
     * at x, and no op ever writes its fp32 values (an op reading it in 32 \
     * bits, or writing over its storage before bf16_drop, is an error the \
     * backend records instead); 0 when it cannot (nothing was registered: \
     * give x its fp32 storage). The same answer for the same context and \
     * arguments. (Backends without the op, NULL, never take it.) */ \
    int (*bf16_tight)(const smj_exec *ex, const float *x, int64_t n); \
    void (*bf16_home)(const smj_exec *ex, const float *x, uint16_t *x16, int64_t n); \
    void (*bf16_bind)(const smj_exec *ex, float *out, const uint16_t *x16, int64_t n); \
    void (*bf16_only)(const smj_exec *ex, const float *x, int64_t n); \
    void (*bf16_drop)(const smj_exec *ex, const float *x, int64_t n);

/* The op signatures over an element type R (float for backends; double for
 * the gradient checker's reference). */
#define SMJ_OP_FIELDS(R) \
    /* C[M,N] = (acc ? C : 0) + op(A)[M,K] · op(B)[K,N]; op(X) = X^T when \
     * transX (then A is stored [K,M], B is stored [N,K]). */ \
    void (*matmul)(const smj_exec *ex, R *Cm, const R *A, const R *Bm, int64_t M, int64_t N, \
                   int64_t K, int transA, int transB, int acc); \
 \
    /* out[N,C] = wte[ids[n], :]. */ \
    void (*embedding_fwd)(const smj_exec *ex, R *out, const int32_t *ids, const R *wte, int64_t N, int C); \
    /* dwte[ids[n], :] += dout[n, :]. */ \
    void (*embedding_bwd)(const smj_exec *ex, R *dwte, const int32_t *ids, const R *dout, int64_t N, int C); \
 \
    /* Rows of C: out = x * rstd * w, rstd[n] = 1/sqrt(mean(x^2) + eps). */ \
    void (*rmsnorm_fwd)(const smj_exec *ex, R *out, R *rstd, const R *x, const R *w, int64_t N, \
                        int C, float eps); \
    /* dx = (acc ? dx : 0) + the gradient (acc: the residual stream's \
     * gradient takes the norm's branch in place), dw += . Uses the saved \
     * rstd [N]. */ \
    void (*rmsnorm_bwd)(const smj_exec *ex, R *dx, R *dw, const R *dout, const R *x, \
                        const R *w, const R *rstd, int64_t N, int C, int acc); \
    /* The residual add and the norm after it in one pass: sum = a + b \
     * (sum may alias a or b), then out, rstd = rmsnorm_fwd of sum. */ \
    void (*add_rmsnorm_fwd)(const smj_exec *ex, R *sum, R *out, R *rstd, const R *a, const R *b, const R *w, \
                            int64_t N, int C, float eps); \
 \
    /* In place on x[B,T,NH,HS], HF half-split rotation: for i < HS/2, \
     * (x_i, x_{i+HS/2}) rotated by angle of position pos0+t, using tables \
     * cos/sin [maxT, HS/2]. Rows (one per b, t) rs elements apart (0: \
     * dense, NH*HS); columns NH*HS..rs of a row are left as they are, so \
     * x may be the q|k columns of a fused [B*T, QD + 2*KD] tensor. */ \
    void (*rope_fwd)(const smj_exec *ex, R *x, const R *cos, const R *sin, int B, int T, int NH, \
                     int HS, int pos0, int64_t rs); \
    /* In place on dx: the inverse rotation. */ \
    void (*rope_bwd)(const smj_exec *ex, R *dx, const R *cos, const R *sin, int B, int T, int NH, \
                     int HS, int pos0, int64_t rs); \
 \
    /* Causal softmax attention. q [B,Tq,NH,HS]; k, v [B,Tk,NKV,HS] whose \
     * batch stride is kv_bstride elements; query t sits at absolute position \
     * Tk-Tq+t and sees keys 0..that position. out [B,Tq,NH,HS]; \
     * lse [B,NH,Tq] = log-sum-exp of the scaled scores (kept for backward). \
     * Row strides: q's rows (one per b, t) q_rs elements apart, k's and v's \
     * kv_rs (0: dense, NH*HS and NKV*HS), so q, k, v may be column ranges \
     * of one fused [B*T, NH*HS + 2*NKV*HS] product. */ \
    void (*attention_fwd)(const smj_exec *ex, R *out, R *lse, const R *q, const R *k, \
                          const R *v, int B, int Tq, int Tk, int NH, int NKV, int HS, \
                          int64_t q_rs, int64_t kv_rs, int64_t kv_bstride, float scale); \
    /* dq, dk, dv written (Tq == Tk; k, v batch stride T rows); q's rows \
     * q_rs apart, k's and v's kv_rs (0: dense, as above); dq's rows dq_rs \
     * apart, dk's and dv's dkv_rs (0: as q's, as k's), so the gradients \
     * may be column ranges of one fused [B*T, NH*HS + 2*NKV*HS] tensor \
     * whether the inputs are or not. */ \
    void (*attention_bwd)(const smj_exec *ex, R *dq, R *dk, R *dv, const R *dout, \
                          const R *out, const R *lse, const R *q, const R *k, \
                          const R *v, int B, int T, int NH, int NKV, int HS, int64_t q_rs, \
                          int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs, float scale); \
 \
    /* out[N,H] = silu(gate) * up; gate's and up's rows ld elements apart \
     * (0: dense, H), so they may be the two halves of one fused [N, 2H] \
     * product (up = gate + H, ld = 2H). */ \
    void (*swiglu_fwd)(const smj_exec *ex, R *out, const R *gate, const R *up, int64_t N, int H, \
                       int64_t ld); \
    /* dgate, dup written, their rows ld apart as gate's and up's. */ \
    void (*swiglu_bwd)(const smj_exec *ex, R *dgate, R *dup, const R *dout, const R *gate, \
                       const R *up, int64_t N, int H, int64_t ld); \
 \
    /* out = a + b (out may alias a or b). */ \
    void (*add)(const smj_exec *ex, R *out, const R *a, const R *b, int64_t n); \
 \
    /* Cross-entropy of logits [N,V] against targets [N] (target < 0 ignored); \
     * rows ld >= V apart (the LM head's rows are padded: smj_head_ld). \
     * losses[n] = logsumexp(logits[n]) - logits[n, target]  (0 if ignored), \
     * lse[n] saved for the backward. */ \
    void (*xent_fwd)(const smj_exec *ex, R *losses, R *lse, const R *logits, const int32_t *targets, \
                     int64_t N, int V, int ld); \
    /* dlogits[n,:V] = dloss * (softmax(logits[n]) - onehot(target)), written, \
     * and dlogits[n, V..ld) = 0 (a padded head's products read them); may \
     * alias logits (in place). Ignored rows get 0. */ \
    void (*xent_bwd)(const smj_exec *ex, R *dlogits, const R *logits, const R *lse, \
                     const int32_t *targets, float dloss, int64_t N, int V, int ld); \
 \
    /* One AdamW update of n parameters (bias-corrected, decoupled decay) \
     * with the gradient g·gs (gs: the clipping coefficient, 1 for none; \
     * the product rounded as scale's x *= s rounds, g left as it is): \
     * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; \
     * p -= lr * (m/bc1 / (sqrt(v/bc2) + eps) + wd * p), bc = 1 - beta^t. */ \
    void (*adamw)(const smj_exec *ex, R *p, R *m, R *v, const R *g, float gs, int64_t n, float lr, \
                  float beta1, float beta2, float eps, float wd, int64_t t); \
 \
    /* Returns sum of x^2 in double (NaN/Inf propagate). */ \
    double (*sumsq)(const smj_exec *ex, const R *x, int64_t n); \
    /* x *= s. */ \
    void (*scale)(const smj_exec *ex, R *x, float s, int64_t n); \
 \
    /* LayerNorm over rows of C, PyTorch's semantics (biased variance, eps \
     * inside the sqrt): mean[n], rstd[n] = 1/sqrt(mean((x - mean)^2) + eps) \
     * saved; out = (x - mean) * rstd * w + b. b may be NULL (no bias); w not. */ \
    void (*layernorm_fwd)(const smj_exec *ex, R *out, R *mean, R *rstd, const R *x, const R *w, \
                          const R *b, int64_t N, int C, float eps); \
    /* The residual add and the LayerNorm after it in one pass: sum = a + b \
     * (sum may alias a or b), then out, mean, rstd = layernorm_fwd of sum. */ \
    void (*add_layernorm_fwd)(const smj_exec *ex, R *sum, R *out, R *mean, R *rstd, const R *a, const R *b, \
                              const R *w, const R *bias, int64_t N, int C, float eps); \
    /* dx = (acc ? dx : 0) + the gradient (as rmsnorm_bwd); dw +=, db += \
     * (db may be NULL). Uses the saved mean, rstd. */ \
    void (*layernorm_bwd)(const smj_exec *ex, R *dx, R *dw, R *db, const R *dout, const R *x, \
                          const R *w, const R *mean, const R *rstd, int64_t N, int C, int acc); \
 \
    /* GELU, tanh form (PyTorch's gelu(approximate='tanh'), HF's gelu_new): \
     * out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */ \
    void (*gelu_fwd)(const smj_exec *ex, R *out, const R *x, int64_t n); \
    /* dx = dout * gelu'(x), written. */ \
    void (*gelu_bwd)(const smj_exec *ex, R *dx, const R *dout, const R *x, int64_t n); \
 \
    /* 16-bit storage of saved activations (--fp16-activations). bf16 = the \
     * top half of the fp32 bits, rounded to nearest even (subnormals kept, \
     * overflow to Inf); a NaN stays a NaN. out[i] = bf16(x[i]). */ \
    void (*bf16_pack)(const smj_exec *ex, uint16_t *out, const R *x, int64_t n); \
    /* out[i] = the value of x[i] (exact). */ \
    void (*bf16_unpack)(const smj_exec *ex, R *out, const uint16_t *x, int64_t n);

struct smj_backend {
    const char *name;
    /* Memory hooks: every model buffer comes from alloc (zeroed, 64-byte
     * aligned) and reaches the host through download/upload. For host
     * backends these are smj_alloc and memcpy. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*upload)(void *dst_dev, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src_dev, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    /* Optional per-context lifecycle of device backends (NULL for host
     * backends). init runs in smj_ctx_create and sets ex->impl, or returns a
     * status with the reason in err (the backend is unavailable); fini runs
     * in smj_ctx_free. error returns the first device failure recorded since
     * init (SMJ_OK when none) with its message in err. */
    smj_status (*init)(smj_exec *ex, char *err, size_t errlen);
    void (*fini)(smj_exec *ex);
    smj_status (*error)(const smj_exec *ex, char *err, size_t errlen);
    /* Optional measuring hooks of device backends (NULL for host backends):
     * profile(ex, 1) clears and starts the per-op device-time table, (ex, 0)
     * stops it; profile_rows copies it (largest first, at most max rows) and
     * returns the row count; mem_info gives the device's bytes in use and
     * total (0 when it cannot). See smj_ctx_profile in smedjan.h. */
    void (*profile)(const smj_exec *ex, int on);
    int (*profile_rows)(const smj_exec *ex, smj_profile_row *rows, int max);
    int (*mem_info)(const smj_exec *ex, size_t *used, size_t *total);
    /* Optional graph hooks of device backends (NULL elsewhere): between
     * graph_begin (1: recording; 0: not possible now) and graph_end the ops
     * called are recorded, not run; graph_end returns the recorded sequence
     * ready to run (NULL when recording failed: nothing ran, run the ops
     * again), graph_launch runs it once more (same pointers, same arguments:
     * what changes between runs must be data, e.g. decode_attention's
     * position) and returns 1, or 0 without running anything when the
     * recording no longer fits the backend's buffers (free it, run the ops,
     * record again), graph_free drops it.
     * trace NULL (decoding): the recording keeps no bf16 operand copies of
     * the backend's own (a product that would cast ends it). trace non-NULL
     * (a train step): the ops are recorded as they would run, kept copies
     * included, and graph_end fails unless the recording's launches hash to
     * *trace (graph_trace of the same work run just before: the step is in
     * a steady state, which replaying repeats); a failed recording leaves
     * the backend's bookkeeping as it was at graph_begin. Such a graph is
     * refused once other ops have run or the parameters were written from
     * the host since its last launch. graph_trace returns the hash of the
     * launches (kernel sites, copy slots, product algorithms) since its
     * last call and starts a new one. */
    int (*graph_begin)(const smj_exec *ex, const uint64_t *trace);
    void *(*graph_end)(const smj_exec *ex);
    int (*graph_launch)(const smj_exec *ex, void *graph);
    void (*graph_free)(void *graph);
    uint64_t (*graph_trace)(const smj_exec *ex);
    /* ex: the context's execution state (threads; device stream/handles). */

    SMJ_OP_FIELDS(float)

    /* Optional ops (SMJ_OPS_OPTIONAL): a backend may leave any of them NULL,
     * so every caller checks the pointer first (a quantized model refuses to
     * run on a backend without qmatmul, with a clear error). */
    SMJ_OP_OPTIONAL_FIELDS
};

extern const smj_backend smj_backend_ref;
extern const smj_backend smj_backend_cpu;
#ifdef SMJ_HAVE_CUDA
extern const smj_backend smj_backend_cuda; /* src/cuda/cuda_backend.cu */
#endif
/* The op table of kind; NULL when this build does not have it. */
const smj_backend *smj_backend_get(smj_backend_kind kind);

/* The reference in double precision (tests only). */
typedef struct { SMJ_OP_FIELDS(double) } smj_ref64;
extern const smj_ref64 smj_ref64_ops;

#endif
