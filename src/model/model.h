/* model.h — the dense decoder model inside the library.
 *
 * A model is a table of tensor specs (built from the config by
 * smj_model_build_specs) plus the forward/backward in llama.c. The table
 * decides everything else: one contiguous buffer each for parameters and
 * gradients (the trainer adds two for the AdamW moments), their byte layout
 * in checkpoints, the names exported to other formats, and which tensors get
 * weight decay. A new family (other mixers, MoE, GPT-2's LayerNorm/biases)
 * is a new role list plus its own block functions, not a copied file.
 *
 * Names follow HuggingFace (model.layers.{i}.self_attn.q_proj.weight, ...)
 * and linear weights are stored [out, in] as HF does, so import and export
 * are copies.
 *
 * Typed weights (GGUF models): each spec has a dtype. Models we create,
 * train, load from checkpoints or import from HF are all SMJ_DTYPE_F32 and
 * are laid out exactly as before: one contiguous f32 parameter buffer
 * (offsets in floats) that checkpoints, the trainer's f32 grads/moments and
 * the parity tests see unchanged. smj_model_load_gguf keeps the 2-D weights
 * it can multiply in their GGML blocks (dtype = SMJ_WTYPE_F16/Q8_0/Q4_0):
 * those tensors live in a second buffer, qmem, at 64-byte-aligned byte
 * offsets, and take no room in params (which then holds only the f32
 * tensors: norms, and weights of other types, dequantized). Linear layers
 * on such a tensor go through the backend's qmatmul (smj_model_linear); a
 * typed token embedding is read by dequantizing only the looked-up rows
 * (smj_model_embed). Typed tensors have no f32 view (smj_model_tensor and
 * smj_model_ptr refuse them), and such a model cannot train.
 */
#ifndef SMJ_MODEL_H
#define SMJ_MODEL_H

#include "../ops/ops.h"

/* Every kind of tensor a dense Llama-family model has. */
typedef enum {
    R_EMBED, R_ATTN_NORM, R_WQ, R_BQ, R_WK, R_BK, R_WV, R_BV, R_WO, R_BO, R_Q_NORM, R_K_NORM, R_FFN_NORM,
    R_WGATE, R_WUP, R_WDOWN, R_FINAL_NORM, R_LM_HEAD,
    /* GPT-2 only (gpt2.c) */
    R_POS_EMBED, R_ATTN_NORM_B, R_WQKV, R_BQKV, R_FFN_NORM_B, R_BUP, R_BDOWN, R_FINAL_NORM_B, R_COUNT
} smj_role;

/* smj_model_config.rope_type */
typedef enum {
    SMJ_ROPE_DEFAULT = 0, SMJ_ROPE_LINEAR, SMJ_ROPE_DYNAMIC, SMJ_ROPE_LLAMA3, SMJ_ROPE_YARN, SMJ_ROPE_COUNT
} smj_rope_type;
/* "default", "linear", "dynamic", "llama3", "yarn"; NULL for another value. */
const char *smj_rope_type_name(int rope_type);
/* The HF name back to the type; -1 when unknown. */
int smj_rope_type_parse(const char *name);

/* RoPE frequencies as transformers computes them (fp32, modeling_rope_utils):
 * inv_freq [HS/2] for a sequence of total length seq_len (only the dynamic
 * type depends on it), and the cos/sin multiplier (*attn, yarn's attention
 * factor, else 1). */
void smj_rope_inv_freq(const smj_model_config *c, int64_t seq_len, float *inv_freq, float *attn);
/* Rows [p0, p1) of the cos/sin tables [*, HS/2] for inv_freq and attn. */
void smj_rope_rows(const smj_model_config *c, const float *inv_freq, float attn, int p0, int p1, float *cs,
                   float *sn);

typedef struct {
    char name[96];
    smj_role role;
    int layer;        /* -1 for model-level tensors */
    int ndim;
    int64_t shape[4]; /* shape[ndim-1] innermost */
    int64_t numel;
    int64_t offset;   /* f32: in floats from the start of params; typed: in bytes from qmem */
    int decay;        /* AdamW weight decay applies (2-D tensors only) */
    int dtype;        /* SMJ_DTYPE_F32, or a GGML block type (SMJ_WTYPE_*) kept in qmem */
    int64_t nbytes;   /* bytes of the tensor's storage (numel * 4 for f32) */
} smj_tensor_spec;

/* smj_tensor_spec.dtype of an ordinary f32 tensor (GGML's id for f32). */
#define SMJ_DTYPE_F32 0

/* Saved activations of one block for the backward, all [N = B*T rows]. */
typedef struct {
    float *ln1, *ln1_rstd;         /* [N,C], [N] */
    float *q_pre, *k_pre;          /* [N,NH*HS], [N,NKV*HS] before QK-norm (qk_norm only) */
    float *q_rstd, *k_rstd;        /* [N*NH], [N*NKV] */
    float *q, *k, *v;              /* [N,NH*HS], [N,NKV*HS] x2, after norm + RoPE; with
                                      qkv_fused the column ranges of one [N, NH*HS + 2*NKV*HS]
                                      tensor at q (one product, rows that wide apart) */
    int qkv_fused;                 /* Llama without QK-norm or attention biases, Wq|Wk|Wv
                                      side by side in f32 (carve_acts decides) */
    float *att, *lse;              /* [N,NH*HS], [B,NH,T] */
    float *res_mid;                /* [N,C] residual after attention */
    float *ln2, *ln2_rstd;         /* [N,C], [N] */
    float *gate, *hsw;             /* Llama: gate|up, two [N,H] tensors in 2*N*H values:
                                      fused [N,2H] (one product: up = gate + H, rows 2H
                                      apart) where the weights sit side by side, else
                                      gate [N,H] then up [N,H] (smj_gu_views); hsw [N,H]
                                      = silu(gate) * up. GPT-2: gate [N,H] pre-GELU. */
    float *tmp;                    /* [N,C] scratch (shared by all blocks) */
    uint16_t *saved16;             /* fp16_activations without checkpointing: bf16 copies of
                                      the block's SAVE tensors (llama.c's block_slots) */
    /* GPT-2 only: LayerNorm means, the fused q|k|v product (attention reads
     * its rows in place, row stride 3C; saved for the backward), and, in a
     * session, the row indices 3n (device int32) with which the embedding
     * op copies k and v into the cache rows (gpt2.c) */
    float *ln1_mean, *ln2_mean;    /* [N] each */
    float *qkv;                    /* [N,3C] */
    int32_t *idx3;                 /* [N]: a session's only */
} smj_block_acts;

struct smj_model {
    smj_ctx *ctx;
    const smj_backend *be;
    smj_model_config cfg;
    int n_tensors;
    smj_tensor_spec *specs;
    int *index;      /* [R_COUNT * (L+1)] spec index by (role, layer), -1 if absent */
    int64_t n_params;  /* floats in params (= every parameter unless some are typed) */
    float *params;   /* [n_params] */
    float *grads;    /* [n_params], allocated at the first backward */
    float *rope_cos, *rope_sin; /* [max_seq_len, HS/2] */
    /* dynamic RoPE only (host): the sequence length each table row was built
     * for (rows are rebuilt when a forward needs another), and row scratch */
    int64_t *rope_row_len;
    float *rope_host;           /* [2, max_seq_len, HS/2] */
    float *ones;                /* [max_seq_len] of 1.0 (bias add/grad via matmul), attn_bias only */

    /* activations for the largest (B, T) seen so far */
    int act_B, act_T;
    float *act_mem;
    float *res;      /* [L+1, N, C] residual stream entering each block (+ final); NULL with
                        fp16_activations, which keeps it as bf16 in res16 and runs the forward
                        through stage [2, N, C] (smj_res_fwd) */
    uint16_t *res16;
    float *stage;
    int homing;      /* in a forward with targets under fp16_activations: the ops write the bf16
                        copies of what the backward keeps straight into its 16-bit storage
                        (bf16_home, see smj_acts_home) */
    smj_block_acts *blk;  /* [L] */
    float *lnf, *lnf_rstd, *logits, *losses, *xlse; /* [N,C] [N] [N,head_ld] [N] [N] */
    int64_t head_ld;   /* smj_vocab_rows for an f32 head, else V */
    int64_t logits_ld; /* floats between rows of logits in the last forward: head_ld with targets, else V */
    int32_t *ids, *tgts;  /* [N] each, on the backend */
    /* backward scratch */
    float *bwd_mem;
    float *dres, *dln, *datt, *dqn, *dkn, *dh;
    float *dq;       /* Llama: dq, dk, dv in N*(QD + 2*KD) values (block_backward lays them out) */
    float *dgate;    /* Llama: dgate|dup [N,2H] (fused as the forward's gate|up); GPT-2: [N,H] */
    float *dqkv;     /* GPT-2: [N,3C] */
    float *lnf_mean; /* GPT-2: [N] (forward) */
    int32_t *pos;    /* GPT-2: [N] position ids on the backend (forward) */
    int last_B, last_T, have_targets;
    int head_done;   /* the last forward (a train step's, under fused_ce) took the LM head's gradient */
    int64_t n_valid; /* targets >= 0 in the last forward */
    /* a batch uploaded ahead of its forward (smj_model_stage_batch) */
    int staged, staged_B, staged_T;
    const int32_t *staged_in, *staged_tg; /* the host arrays it came from */
    int64_t staged_valid;
    float *loss_host;  /* [loss_host_n]: the losses read back (kept: a fresh 128 KiB
                          buffer a step cost the GPU ~0.2 ms of idling on its pages) */
    int64_t loss_host_n;

    /* Training-memory options (smj_model_set_train_options). With fused_ce
     * the activation walk carves no logits [N, V]: a forward with targets
     * computes them chunk by chunk in ce_buf [ce_rows + 1 (at most N), V]
     * (m->logits is then NULL), which shares the backward's memory with the
     * blocks' datt, dq, dh and dgate (carve_bwd; in full_logits for a model that has
     * not run a backward: ce_ready), and a forward without targets
     * writes all logits into full_logits (allocated on demand, full_cap
     * floats). With gradient_checkpointing every blk[l] points at the same
     * single block's activations; the backward recomputes block l from its
     * input before its backward (smj_acts_load). With fp16_activations what
     * the backward reads is kept as bf16 (see carve_acts in llama.c).
     * topt is what the walk and the forward use (ce_chunk_rows resolved
     * where automatic means the backend's own, smj_ce_chunk_rows_auto),
     * topt_set what smj_model_set_train_options was given. */
    smj_train_options topt, topt_set;
    float *ce_buf;
    /* fp16_activations without fused_ce, N at least two blocks of rows
     * (logits16_rows in llama.c): a forward with targets keeps its logits as
     * bf16 [N, V] here (m->logits is NULL), a block of l16_rows rows at a
     * time through ce_buf; the backward binds each block back into ce_buf.
     * NULL otherwise. */
    uint16_t *logits16;
    int64_t l16_rows;
    float *full_logits;
    int64_t full_cap;

    /* The typed tensors' GGML blocks (backend memory; specs[i].offset bytes
     * in), NULL when every tensor is f32 (every model but a GGUF one). */
    uint8_t *qmem;
    int64_t qbytes;
};

/* Fills a spec whose ndim/shape are set: role, layer, name (name_fmt with
 * the layer), size, f32 storage at float offset *off (then advanced), and
 * weight decay for 2-D tensors. Shared by every family's table walk. */
void smj_spec_place(smj_tensor_spec *t, smj_role role, int layer, const char *name_fmt, int64_t *off);
/* The LM head's rows: the vocabulary rounded up to a multiple of 64. Its
 * f32 weight (lm_head, or the embedding when tied) is laid out with that
 * many rows, the ones past the vocabulary zero (smj_spec_pad floats after
 * the tensor, never updated: their gradients are 0), and the logits' rows
 * are that many floats apart, so the head's products run on aligned shapes
 * (GPT-2's 50,257 rows put cuBLAS on kernels 3-5x slower on an H200). */
int64_t smj_vocab_rows(const smj_model_config *c);
/* Block l's gate and up inside gu (2*N*H values): fused [N, 2H], one
 * product over the side-by-side weights (returns the row stride 2H), or
 * [N, H] each, one after the other (returns H; quantized weights). */
int64_t smj_gu_views(smj_model *m, int l, float *gu, int64_t N, float **g, float **u);
int64_t smj_spec_pad(const smj_model_config *c, smj_role role);
smj_status smj_model_build_specs(smj_ctx *ctx, const smj_model_config *cfg, smj_tensor_spec **specs,
                                 int *n, int64_t *n_params);
/* Allocates buffers for cfg (weights zero) — used by create and load. */
smj_status smj_model_alloc(smj_ctx *ctx, const smj_model_config *cfg, smj_model **out);
/* The same with typed tensors: dtype[i] / nbytes[i] for spec i (in the
 * order smj_model_build_specs gives); dtype SMJ_DTYPE_F32 keeps a tensor in
 * params, another type puts nbytes of blocks in qmem (the caller uploads
 * them at specs[i].offset). The backend must have qmatmul when any is typed. */
smj_status smj_model_alloc_typed(smj_ctx *ctx, const smj_model_config *cfg, const int *dtype,
                                 const int64_t *nbytes, smj_model **out);
/* Pointer to the f32 tensor (role, layer) inside buf (params or grads);
 * NULL if absent or typed (kept in qmem). */
float *smj_model_ptr(const smj_model *m, float *buf, smj_role role, int layer);
/* A train step's batch without a host copy between its kernels (the
 * trainer's device path, whose step may be a recorded graph): stage_batch
 * checks the tokens and uploads them before the step's work (n_valid in
 * m->staged_valid), the forward of the same shape after it uses them;
 * smj_model_forward_backward with loss NULL leaves the per-row losses on
 * the device (m->losses). */
smj_status smj_model_stage_batch(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T);
/* out[N,C] = rows ids of the token embedding (ids_host on the host,
 * ids_dev the same ids on the backend): the embedding op for an f32 table,
 * or the looked-up rows dequantized from their GGML blocks for a typed one. */
smj_status smj_model_embed(smj_model *m, float *out, const int32_t *ids_host, const int32_t *ids_dev,
                           int64_t N);
/* out[N,O] = in[N,I] · W^T for the linear weight (role, layer) ([O,I] as
 * HF stores it): matmul on the f32 parameters, or the backend's qmatmul on
 * the weight's GGML blocks when the model keeps it quantized. */
void smj_model_linear(smj_model *m, smj_role role, int layer, float *out, const float *in, int64_t N,
                      int64_t O, int64_t I);
/* The f32 parameters where the host can read and write them, for code
 * that walks tensors with plain loops (HF and GGUF import/export): m->params
 * itself on a host backend; on a device backend (CUDA) a malloc'd copy
 * (downloaded; NULL when out of memory), which smj_model_params_release
 * uploads when written (1) and frees. A tensor view's values are at
 * host + (view.data - m->params). */
float *smj_model_params_host(smj_model *m);
void smj_model_params_release(smj_model *m, float *host, int written);

/* Allocates gradients if needed. */
smj_status smj_model_ensure_grads(smj_model *m);

/* A residual add left to the op after it: sum = a + b, done in the same
 * pass as the norm that reads sum (add_rmsnorm_fwd, add_layernorm_fwd). The
 * training forward leaves each block's last add (y = res_mid + tmp) to the
 * next block's first norm or the final norm, and GPT-2's wte + wpe to the
 * first block's: one pass over the residual stream a block less. */
typedef struct {
    float *sum;
    const float *a, *b;
} smj_res_add;

/* One block's forward on rows [B, T] whose first query has absolute position
 * pos0. a->k/a->v receive the new keys/values; kbase/vbase (batch stride
 * kv_bstride) hold all Tk keys the queries attend to (Tk = pos0 + T for
 * training and decoding alike). x [N,C] in, y [N,C] out. in (or NULL): x
 * is in->sum, the block's first norm adds it. out (or NULL): y is left
 * unwritten, *out the add that makes it (out->sum = y). */
void smj_block_forward(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int B, int T,
                       int pos0, const float *kbase, const float *vbase, int Tk, int64_t kv_bstride,
                       const smj_res_add *in, smj_res_add *out);

/* A session's copy of the weights its one-token steps read through
 * decode_block and decode_linear: at params' offsets, of type wtype.
 * SMJ_WTYPE_BF16 (bf16 mode): every tensor (bf16_pack: half the bytes a
 * step streams), GPT-2's Conv1D weights transposed (smj_gpt2_dec_pack).
 * SMJ_WTYPE_F32 (GPT-2 in fp32 mode): only its Conv1D weights, transposed;
 * the other tensors are read from params. decode_block reads rows [out,
 * in], so GPT-2's blocks take it only through such a copy. */
typedef struct {
    const void *p;
    int wtype;
} smj_dec_copy;

/* One token through block l with the position read from memory (*pos, a
 * backend int), so the same calls serve every position (a recorded graph):
 * the backend's decode_block when it has one and takes the block (no
 * QK-norm), else the ops one by one, where a->k, a->v are scratch rows and
 * decode_attention rotates, stores them in the caches kc, vc [cap, NKV*HS]
 * at row *pos and attends over rows 0..*pos. dc: the session's copy (NULL:
 * none; decode_block then reads params).
 * smj_block_decode_ok: the backend has decode_attention and the model suits
 * it (rope tables that do not change with the length, f32 weights). */
int smj_block_decode_ok(const smj_model *m);
void smj_block_decode(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, float *kc, float *vc,
                      int cap, const int32_t *pos, const smj_dec_copy *dc);
/* All blocks at once: y = the last block's output for x, through one
 * decode_block call over every layer (caches kc, vc [L, cap, KD]). Returns
 * 1, or 0 when it cannot (no decode_block, QK-norm, GPT-2 without dc, blocks
 * not evenly spaced in the parameters, sizes the backend declines): nothing
 * done, run smj_block_decode block by block. */
int smj_stack_decode(smj_model *m, float *y, const float *x, float *kc, float *vc, int cap, const int32_t *pos,
                     const smj_dec_copy *dc);
/* A decoding step's final norm and LM head: logits [V] from x [C] (lnf
 * [C], mean and rstd [1] scratch), through decode_linear when the backend
 * has it (reading the head from a bf16 dc when given), else the norm + the
 * product (GPT-2: its layernorm, then the product). */
void smj_decode_head(smj_model *m, float *logits, const float *x, float *lnf, float *mean, float *rstd,
                     const smj_dec_copy *dc);
/* (decode.c) Block l's weights for decode_block; 0 where the backend has
 * none or the block has QK-norm, which decode_block does not take. A
 * decoding step's rope tables (none for GPT-2: learned positions). */
int smj_dec_weights(smj_model *m, int l, const smj_dec_copy *dc, smj_block_weights *w);
void smj_dec_rope(const smj_model *m, const float **cs, const float **sn);

/* smj_sample's greedy choice (infer/sampler.c): the first index of the
 * largest logit, a NaN never larger (logits[0] NaN gives 0). */
int32_t smj_argmax(const float *logits, int V);
/* smj_sample's softmax weights, in place: l[i] = e^((l[i] - mx) / T) in
 * float (mx the largest logit; a polynomial within 2 ulp of exp, 0 below
 * e^-87), returning their sum in double (eight partial sums, added in
 * order). */
double smj_sample_weights(float *l, int V, float mx, float temperature);

/* Makes the rope tables right for rows [p0, p0 + n) of a sequence whose
 * total length is p0 + n (a no-op unless rope_type is dynamic). */
void smj_rope_prepare(smj_model *m, int p0, int n);

/* out[N,O] += ones[N,1]·b[1,O] and db[1,O] += ones[1,N]·dout[N,O] (m->ones). */
void smj_model_bias_fwd(smj_model *m, float *out, const float *b, int64_t N, int64_t O);
void smj_model_bias_bwd(smj_model *m, float *db, const float *dout, int64_t N, int64_t O);
/* out[N,O] = A[N,K]·W + b (W stored [K,O], or [O,K] when transW): the
 * backend's matmul_bias where it takes the product, else matmul + bias. */
void smj_model_matmul_bias(smj_model *m, float *out, const float *A, const float *W, const float *b, int64_t N,
                           int64_t O, int64_t K, int transW);

/* ---- the GPT-2 family (gpt2.c); llama.c dispatches on cfg.arch. */
smj_status smj_gpt2_build_specs(smj_ctx *ctx, const smj_model_config *c, smj_tensor_spec **specs, int *n,
                                int64_t *n_params);
int64_t smj_gpt2_num_params(const smj_model_config *c);
/* The block (smj_block_forward's contract; kbase NULL: attend over this
 * block's own keys, read in place from a->qkv (training); else a session's
 * cache, into whose rows a->k, a->v the block copies its k and v through
 * a->idx3 = 3n). */
void smj_gpt2_block_forward(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, int B, int T,
                            int pos0, const float *kbase, const float *vbase, int Tk, int64_t kv_bstride,
                            const smj_res_add *in, smj_res_add *out);
/* out[N,C] = wte[ids] + wpe[pos] (tmp [N,C] scratch; ids, pos on the
 * backend); with pend, the add is left to the first block (*pend). */
void smj_gpt2_embed(smj_model *m, float *out, float *tmp, const int32_t *ids_dev, const int32_t *pos_dev, int64_t N,
                    smj_res_add *pend);
/* smj_block_decode of a GPT-2 block: the ops one by one, decode_attention
 * without rotation. */
void smj_gpt2_block_decode(smj_model *m, int l, smj_block_acts *a, const float *x, float *y, float *kc, float *vc,
                           int cap, const int32_t *pos);
/* Fills a session's smj_dec_copy dst (wtype BF16: bf16_pack of params;
 * F32: only these) with each block's Conv1D weights ([in, out]) transposed
 * to [out, in]; tmp: host scratch of smj_gpt2_dec_scratch(c) bytes. */
int64_t smj_gpt2_dec_scratch(const smj_model_config *c);
void smj_gpt2_dec_pack(smj_model *m, void *dst, int wtype, void *tmp);
/* ln_f over N rows (of x, or with in of in->a + in->b, written to in->sum = x). */
void smj_gpt2_final_norm(smj_model *m, float *out, float *mean, float *rstd, const float *x, int64_t N,
                         const smj_res_add *in);
/* Backward of the blocks, ln_f and embeddings; m->dln holds dL/d(ln_f out) [N,C]. */
void smj_gpt2_backward(smj_model *m, int B, int T);

/* Floats of the activation and backward-scratch buffers for (B, T) under
 * the training options o (NULL = all off), and of the model's fixed
 * buffers besides parameters (RoPE tables, the bias ones vector). With
 * parameters, gradients and the two AdamW moments these are every byte a
 * model and its trainer allocate through the backend. */
int64_t smj_act_floats(const smj_model_config *c, int B, int T, const smj_train_options *o);
int64_t smj_bwd_floats(const smj_model_config *c, int B, int T, const smj_train_options *o);
int64_t smj_fixed_floats(const smj_model_config *c);
/* fused_ce: rows per chunk for N rows (at most N; chunks are this many rows,
 * a last chunk of 1 row is merged into the one before, so the buffer holds
 * min(N, rows + 1) rows). */
int64_t smj_ce_chunk_rows(const smj_model_config *c, const smj_train_options *o, int64_t N);
/* Without fused_ce: rows per block of the LM head's backward (N, or with
 * bf16 products and logits over SMJ_CUDA_BC_MAX values, the most rows, a
 * multiple of 64, whose dlogits a device backend keeps as one bf16 copy). */
int64_t smj_head_bwd_rows(const smj_model_config *c, int64_t N, int bf16_matmul);
/* The residual stream as the training forward sees it: the fp32 [N,C]
 * input of block l (l = L: the final norm's input), where the forward
 * writes and reads it (with fp16_activations two buffers alternate). */
float *smj_res_fwd(smj_model *m, int l, int64_t N);
/* After block l's forward (and for l = L after the last block): keeps what
 * the backward needs (with fp16_activations the bf16 copies of the block's
 * input and, without checkpointing, of its SAVE tensors; nothing else)
 * and ends its SAVE tensors' bf16-only state; for l = L, every lazy
 * tensor's (smj_acts_release). */
void smj_acts_save(smj_model *m, int l, int B, int T);
/* Before block l's backward (l = L: the final norm's): returns block l's
 * fp32 input and puts the block's activations in place: from the bf16
 * copies, or by running the block's forward again under gradient
 * checkpointing (the output goes to a->tmp). */
const float *smj_acts_load(smj_model *m, int l, int B, int T);
/* In a forward with targets under fp16_activations, just before the op that
 * writes p, block l's SAVE tensor or its output (the next block's input):
 * names p's 16-bit storage to the backend as the place for the bf16 copy
 * the op may write (bf16_home), so smj_acts_save's packing finds it done. */
void smj_acts_home(smj_model *m, int l, const float *p, int64_t N);
/* The same for a SAVE tensor that nothing reads in 32 bits before the
 * backward (only products, and ops reading bf16 copies): the op may also
 * leave p's fp32 values unwritten (bf16_only; smj_acts_save ends it). */
void smj_acts_home_only(smj_model *m, int l, const float *p, int64_t N);
/* Declares every lazily kept tensor dead (bf16_drop(NULL)): the bindings of
 * smj_acts_load and the backward's bf16-only gradients, the forward's
 * bf16-only SAVE tensors; before each block's backward, after the backward,
 * after the forward's last packing, before activation memory is freed. */
void smj_acts_release(smj_model *m);
/* Around a tensor that only products (and ops reading bf16 copies) read —
 * the backward's gradients, the forward's attention projection under
 * --fp16-activations: bf16_only before the op writing it (bf16 mode; a
 * backend keeping copies then writes it only as bf16), bf16_drop once it is
 * dead. */
void smj_only16(smj_model *m, const float *p, int64_t n);
/* smj_only16 for an output the next op writes without reading it (a
 * product's, swiglu's or attention's gradient): its bf16 copy may live in
 * the first half of its own storage (bf16_home at p), so no copy slot of
 * the backend holds it, whatever its size. */
void smj_fresh16(smj_model *m, float *p, int64_t n);
void smj_drop16(smj_model *m, const float *p, int64_t n);

#endif
