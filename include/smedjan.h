/* smedjan.h — the public interface of libsmedjan.
 *
 * smedjan trains and runs decoder-only language models from raw text with no
 * framework underneath. This header is all a program needs: the `smedjan`
 * CLI is written against it and nothing else.
 *
 * Conventions
 *  - Every object is an opaque handle made by smj_X_create/open/load and freed
 *    by smj_X_free; free(NULL) is allowed.
 *  - Every call that can fail returns smj_status. The human-readable reason
 *    (naming the file, tensor or flag) is in smj_ctx_error(ctx) until the next
 *    failing call on the same context.
 *  - The library never exits, aborts, prints or keeps global state. Threads,
 *    the compute backend and the error buffer live in a smj_ctx.
 *  - Token ids are int32. Sizes are int64 where they can exceed 2^31.
 *  - Shapes: B batch, T time, C model width, V vocabulary.
 */
#ifndef SMEDJAN_H
#define SMEDJAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMJ_VERSION_STRING "0.1.0"

typedef enum {
    SMJ_OK = 0,
    SMJ_ERR_INVALID,     /* a bad argument or flag value */
    SMJ_ERR_NOMEM,       /* an allocation failed */
    SMJ_ERR_IO,          /* open/read/write/rename failed */
    SMJ_ERR_FORMAT,      /* a file is corrupt, truncated or of the wrong kind */
    SMJ_ERR_UNSUPPORTED, /* valid, but not something this build can do */
    SMJ_ERR_NONFINITE,   /* a loss or gradient was NaN or Inf */
    SMJ_ERR_DIVERGED     /* too many consecutive non-finite steps */
} smj_status;

const char *smj_status_str(smj_status s);

/* ---------------------------------------------------------------- context */

typedef enum { SMJ_BACKEND_CPU = 0, SMJ_BACKEND_REF = 1, SMJ_BACKEND_CUDA = 2 } smj_backend_kind;

typedef struct {
    int threads;              /* 0 = all cores (OpenMP's default) */
    smj_backend_kind backend; /* CPU (optimized), REF (scalar reference) or CUDA (GPU 0;
                                 builds made with `make CUDA=1`, docs/CUDA.md) */
    /* --- appended fields: zero means off / the default --- */
    int bf16_matmul;          /* 0 = fp32 matmuls (default); 1 = bf16 tensor-core matmuls with
                                 fp32 accumulation (CUDA only; the CPU backends ignore it), and
                                 decoding sessions read bf16 copies of the weights where the
                                 backend runs a block per step (CUDA; the reference backend):
                                 2 bytes per parameter per session, made at creation and reset */
} smj_ctx_options;

typedef struct smj_ctx smj_ctx;

/* opts may be NULL (defaults). Returns NULL only when out of memory. */
smj_ctx *smj_ctx_create(const smj_ctx_options *opts);
/* Free the sessions, trainers and models made in ctx first. */
void smj_ctx_free(smj_ctx *ctx);
const char *smj_ctx_error(const smj_ctx *ctx);
/* SMJ_OK when the context can compute. Otherwise SMJ_ERR_UNSUPPORTED when
 * the backend asked for is not available (CUDA in a build without it, or no
 * usable GPU), or the status of the first device error a CUDA context
 * recorded (ops return no status, so a CUDA context keeps its first failure;
 * see docs/CUDA.md). The reason is then in smj_ctx_error. Check it after
 * smj_ctx_create with SMJ_BACKEND_CUDA, and after a failed or non-finite
 * step; a context whose status is not SMJ_OK must only be freed. */
smj_status smj_ctx_status(smj_ctx *ctx);
const char *smj_ctx_backend_name(const smj_ctx *ctx);
int smj_ctx_threads(const smj_ctx *ctx);
/* smj_ctx_options.bf16_matmul as given (the host backends ignore it). */
int smj_ctx_bf16_matmul(const smj_ctx *ctx);
/* Memory the library allocates on behalf of the caller (encode results,
 * decoded text) is released with smj_free. */
void smj_free(void *p);

/* Measuring the backend (src/core/probe.c; `smedjan bench` prints these).
 * smj_ctx_matmul_tflops: the rate of one n x n x n product through the
 * backend's matmul op in the context's precision (random operands, a
 * warm-up, then repeats for ~0.3 s): the ceiling MFU is measured against.
 * smj_ctx_device_memory: bytes in use on the device (all processes' and the
 * runtime's included) and its total; SMJ_ERR_UNSUPPORTED on host backends.
 * smj_ctx_profile: on = 1 clears and starts a per-op device-time profile, 0
 * stops it (SMJ_ERR_UNSUPPORTED on host backends); smj_ctx_profile_rows
 * copies up to max_rows rows, largest time first, and returns how many
 * there are (names stay valid while the context lives). */
smj_status smj_ctx_matmul_tflops(smj_ctx *ctx, int n, double *tflops);
smj_status smj_ctx_device_memory(smj_ctx *ctx, size_t *used, size_t *total);
typedef struct {
    const char *name; /* op, or a phase of one ("matmul: bf16 casts") */
    double ms;        /* device time */
    long calls;
} smj_profile_row;
smj_status smj_ctx_profile(smj_ctx *ctx, int on);
int smj_ctx_profile_rows(smj_ctx *ctx, smj_profile_row *rows, int max_rows);

/* --------------------------------------------------------------- tokenizer */

typedef struct smj_tokenizer smj_tokenizer;

typedef enum { SMJ_TOKEN_PAD = 0, SMJ_TOKEN_BOS = 1, SMJ_TOKEN_EOS = 2 } smj_special;

typedef struct {
    int vocab_size; /* total ids: 256 bytes + merges + special tokens */
    int verbose;    /* unused by the library; reserved */
} smj_tokenizer_train_options;

/* Byte-level BPE trained on text[0..n) with GPT-2 pre-tokenization. */
smj_status smj_tokenizer_train(smj_ctx *ctx, const uint8_t *text, size_t n,
                               const smj_tokenizer_train_options *opts, smj_tokenizer **out);
smj_status smj_tokenizer_load(smj_ctx *ctx, const char *path, smj_tokenizer **out);
smj_status smj_tokenizer_save(smj_ctx *ctx, const smj_tokenizer *tok, const char *path);
void smj_tokenizer_free(smj_tokenizer *tok);
int smj_tokenizer_vocab_size(const smj_tokenizer *tok);
int smj_tokenizer_special_id(const smj_tokenizer *tok, smj_special which);
/* Encodes text (any bytes; special-token text is NOT interpreted) into a new
 * array *ids of *n_ids tokens, released with smj_free. A tokenizer imported
 * from a tokenizer.json with an NFC normalizer first applies Unicode NFC to
 * the text (decode does not, so only NFC text round-trips exactly). */
smj_status smj_tokenizer_encode(smj_ctx *ctx, const smj_tokenizer *tok, const uint8_t *text,
                                size_t n, int32_t **ids, size_t *n_ids);
/* The bytes of one token (special tokens decode to nothing). *len gets the
 * length; returns NULL for an id out of range. */
const uint8_t *smj_tokenizer_token_bytes(const smj_tokenizer *tok, int32_t id, size_t *len);
/* Decodes ids into a new NUL-terminated buffer *text (*len bytes, without the
 * NUL), released with smj_free. */
smj_status smj_tokenizer_decode(smj_ctx *ctx, const smj_tokenizer *tok, const int32_t *ids,
                                size_t n_ids, uint8_t **text, size_t *len);

/* ----------------------------------------------------------------- dataset */

/* A token file written by smj_dataset_write and memory-mapped for reading. */
typedef struct smj_dataset smj_dataset;

/* Writes ids atomically (temp file + rename). vocab_size decides the token
 * width (2 bytes when it fits, else 4). */
smj_status smj_dataset_write(smj_ctx *ctx, const char *path, const int32_t *ids, int64_t n,
                             int vocab_size);
smj_status smj_dataset_open(smj_ctx *ctx, const char *path, smj_dataset **out);
void smj_dataset_free(smj_dataset *ds);
int64_t smj_dataset_num_tokens(const smj_dataset *ds);
int smj_dataset_vocab_size(const smj_dataset *ds);
int32_t smj_dataset_token(const smj_dataset *ds, int64_t i);
/* Fills inputs/targets [B, T] with B consecutive windows of T+1 tokens
 * starting at *pos, then advances *pos by B*T (wrapping at the end; a wrap
 * increments *epoch when epoch is not NULL). Needs num_tokens >= T+1. */
smj_status smj_dataset_next_batch(smj_ctx *ctx, const smj_dataset *ds, int B, int T,
                                  int64_t *pos, int64_t *epoch, int32_t *inputs, int32_t *targets);

/* ------------------------------------------------------------------- model */

typedef struct {
    int vocab_size;  /* V */
    int dim;         /* C */
    int n_layers;    /* L */
    int n_heads;     /* NH, query heads */
    int n_kv_heads;  /* NKV, key/value heads; NH % NKV == 0 (GQA) */
    int head_dim;    /* HS; need not equal C/NH */
    int ffn_hidden;  /* H, SwiGLU hidden width */
    int max_seq_len; /* longest T the RoPE tables cover */
    float rope_theta;
    float norm_eps;
    int tied_embeddings; /* LM head shares the token embedding */
    int qk_norm;         /* Qwen3-style RMSNorm on each q and k head */
    /* --- appended fields: zero means off / the default --- */
    int attn_bias;       /* biases on q_proj, k_proj, v_proj (Qwen2; HF attention_bias) */
    int attn_out_bias;   /* bias on o_proj (HF Llama/Qwen3 attention_bias; not Qwen2) */
    /* RoPE scaling (HF rope_parameters / rope_scaling; docs/HF.md). */
    int rope_type;              /* 0 default, 1 linear, 2 dynamic (NTK), 3 llama3, 4 yarn */
    float rope_factor;          /* linear, dynamic, llama3, yarn */
    float rope_low_freq_factor; /* llama3 */
    float rope_high_freq_factor;/* llama3 */
    int rope_orig_max_pos;      /* llama3, yarn: original context; dynamic: the length
                                   beyond which the base grows (HF max_position_embeddings) */
    float rope_beta_fast;       /* yarn; 0 = 32 */
    float rope_beta_slow;       /* yarn; 0 = 1 */
    float rope_attn_factor;     /* yarn: cos/sin multiplier; 0 = 0.1*ln(factor)+1 (1 when factor <= 1) */
    int rope_yarn_no_truncate;  /* yarn: 1 = no floor/ceil of the correction range (HF truncate: false) */
    /* The model family (SMJ_ARCH_*): 0 = Llama (so zeroed configs stay Llama), 1 = GPT-2
     * (LayerNorm with biases, learned positions [max_seq_len, C], fused c_attn
     * Conv1D weights [in, out], GELU (tanh) MLP of ffn_hidden, biases
     * everywhere, no RoPE: rope_* fields unused; n_kv_heads = n_heads,
     * head_dim = dim / n_heads). */
    int arch;
} smj_model_config;

enum { SMJ_ARCH_LLAMA = 0, SMJ_ARCH_GPT2 = 1 };

/* Fills *cfg from a preset name ("tiny", "small", "medium", "large", "xl").
 * Returns SMJ_ERR_INVALID (with the list of names) for an unknown one. */
smj_status smj_config_preset(smj_ctx *ctx, const char *name, int vocab_size, smj_model_config *cfg);
/* Name of preset i (NULL past the end) — for listing. */
const char *smj_config_preset_name(int i);
/* The Llama-family hidden width for dim and ffn_mult (rounded up to 256). */
int smj_config_ffn_hidden(int dim, float ffn_mult);
smj_status smj_config_validate(smj_ctx *ctx, const smj_model_config *cfg);
int64_t smj_config_num_params(const smj_model_config *cfg);
/* Training flops per token: 6*N + 12*L*T*C (N = parameters). */
double smj_config_flops_per_token(const smj_model_config *cfg, int T);
/* Training-memory options of a model (smj_model_set_train_options). Zero
 * (or a NULL pointer) means off everywhere. The first two do not change
 * what is computed: the loss and the gradients are those of the plain
 * forward and backward — bit for bit with gradient_checkpointing; with
 * fused_ce the LM head's gradient is summed chunk by chunk and so agrees to
 * float rounding. fp16_activations keeps the loss and rounds what the
 * backward reads (docs/ARCHITECTURE.md, "Memory-saving options"). */
typedef struct {
    /* Fused LM head + cross-entropy: a forward WITH targets computes the
     * logits in chunks of rows, takes the loss of each chunk and keeps only
     * the per-row log-sum-exp; the backward recomputes each chunk's logits
     * (smj_model_forward_backward, the trainer's call, takes the head's
     * gradient in its forward instead: each chunk's logits once).
     * The [B*T, V] logits buffer is never allocated, so after such a
     * forward smj_model_logits returns NULL and smj_model_get_logits fails
     * (SMJ_ERR_INVALID). A forward without targets still computes all the
     * logits (into a buffer allocated for it). */
    int fused_ce;
    /* Gradient checkpointing: the training forward keeps only each block's
     * input (the residual stream) plus one block's activations, and the
     * backward recomputes each block's forward right before its backward
     * (one extra forward of the blocks per step). */
    int gradient_checkpointing;
    /* fused_ce: rows per chunk (the rows of fp32 logits the chunk buffer
     * holds; on CUDA with fp16_activations and bf16_matmul, where a chunk's
     * logits are bf16 alone, each chunk takes twice these rows in the same
     * memory); 0 = automatic (smj_ce_chunk_rows_auto for the model's
     * backend: about 32 MiB of fp32 logits on the host backends, 512 MiB of
     * logits on CUDA). Without fused_ce, when set, the rows per block of
     * the LM head (forward and backward), and of the 16-bit logits under
     * fp16_activations. */
    int ce_chunk_rows;
    /* 16-bit activations: what a training forward keeps for the backward
     * (the residual stream, each block's [rows, width] tensors unless
     * gradient_checkpointing recomputes them, and, without fused_ce, the
     * logits when they span two or more of the LM head's blocks of rows)
     * is stored as bf16, halving that memory. The forward itself runs in
     * fp32 as before, so on the CPU backends the loss is bit for bit the
     * plain one (on a GPU with bf16_matmul, tensors only products read
     * come out of their products as bf16, as under autocast); the backward
     * reads the rounded copies, so the gradients differ from the plain ones
     * by bf16 rounding (about 2^-9 relative per saved value; a few 1e-3 on
     * a whole gradient). Per-row statistics (norms' rstd, attention's
     * log-sum-exp) stay fp32. With 16-bit logits, smj_model_logits is NULL
     * after a forward with targets, as with fused_ce. (With fused_ce and
     * bf16_matmul on a GPU, each chunk's logits come out of the LM head's
     * product as bf16 too, and the loss is taken from them.) */
    int fp16_activations;
} smj_train_options;

/* Where the bytes of smj_config_train_memory_ex go (each a byte count). */
typedef struct {
    int64_t weights;     /* fp32 parameters */
    int64_t grads;       /* gradients (same layout) */
    int64_t optimizer;   /* the two AdamW moments */
    int64_t activations; /* what the forward keeps for the backward: residual stream, per-block
                            activations (one block's with checkpointing), logits (or the
                            fused-CE chunk), losses */
    int64_t scratch;     /* backward scratch, RoPE tables, the bias ones vector */
    int64_t total;       /* the sum */
} smj_train_memory;

/* Bytes a model and its trainer allocate through the backend to train at
 * (B, T) with opts (NULL = all off): parameters, gradients, AdamW moments,
 * activations and scratch, computed by the same walk that lays the buffers
 * out (so it equals what they allocate; host-side buffers such as the
 * trainer's batch of token ids, a device backend's own workspace, and the
 * [B*T, V] logits a forward WITHOUT targets allocates under fused_ce are not
 * included). detail (may be NULL) gets the breakdown. */
int64_t smj_config_train_memory_ex(const smj_model_config *cfg, int B, int T, const smj_train_options *opts,
                                   smj_train_memory *detail);
/* The rows of a fused-CE chunk that ce_chunk_rows = 0 (automatic) stands
 * for on backend kind: about 32 MiB of fp32 logits on the host backends
 * (8,388,608 / V rows, at least 1), about 512 MiB of logits on CUDA
 * (134,217,728 / V rows rounded down to a multiple of 64, at least 64:
 * 4,096 at V = 32,768; twice that with bf16_logits, fp16_activations with
 * smj_ctx_options.bf16_matmul, where the chunk's logits and their gradient
 * are bf16 alone, kept in the chunk buffer's own storage, so that each
 * chunk then takes twice these rows: 16,384 at V = 32,768; smaller chunks
 * mean more, smaller launches and a GPU waiting on the host). V: the LM
 * head's rows (the vocabulary, padded as the model pads it).
 * smj_config_train_memory_ex counts the host backends' automatic chunks:
 * for a CUDA estimate pass opts with ce_chunk_rows set to this. */
int smj_ce_chunk_rows_auto(const smj_model_config *cfg, smj_backend_kind kind, int bf16_logits);
/* The same with every option off. */
int64_t smj_config_train_memory(const smj_model_config *cfg, int B, int T);
/* A device backend's own buffers when training at (B, T) with opts on
 * backend kind (bf16_matmul: smj_ctx_options.bf16_matmul): for CUDA the
 * cuBLAS workspace, the kept bf16 operand copies and the scratch buffer
 * (attention, the LM head's blocks), at the largest sizes they reach; 0 for
 * the host backends. An estimate of the backend's policy, not an exact
 * walk: add it to smj_config_train_memory_ex for the device's total. */
int64_t smj_config_device_workspace(const smj_model_config *cfg, int B, int T, const smj_train_options *opts,
                                    smj_backend_kind kind, int bf16_matmul);

typedef struct smj_model smj_model;

/* A new model with weights drawn from N(0, 0.02) (norm weights 1). */
smj_status smj_model_create(smj_ctx *ctx, const smj_model_config *cfg, uint64_t seed,
                            smj_model **out);
/* Loads a model checkpoint (or the weights of a training-state file). */
smj_status smj_model_load(smj_ctx *ctx, const char *path, smj_model **out);
/* Writes a model checkpoint atomically. */
smj_status smj_model_save(smj_model *m, const char *path);
void smj_model_free(smj_model *m);
const smj_model_config *smj_model_get_config(const smj_model *m);
int64_t smj_model_num_params(const smj_model *m);

/* Named parameter tensors (HF naming, e.g. "model.layers.0.self_attn.q_proj.weight"). */
int smj_model_num_tensors(const smj_model *m);
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float *data; /* fp32 values in the backend's memory (a host pointer on CPU backends) */
    float *grad; /* the gradient, likewise; NULL before the first backward */
} smj_tensor_view;
smj_status smj_model_tensor(smj_model *m, int i, smj_tensor_view *view);
/* Copies tensor i's values (grad = 0) or gradient (grad = 1) to host memory
 * dst [numel], or host values src into the tensor — on any backend. */
smj_status smj_model_tensor_get(smj_model *m, int i, int grad, float *dst);
smj_status smj_model_tensor_set(smj_model *m, int i, const float *src);

/* Sets the model's training-memory options (opts NULL = all off); the
 * trainer uses them through the model. SMJ_ERR_INVALID for a flag other than
 * 0/1 or a negative ce_chunk_rows. Changing them frees the activation
 * buffers (made again by the next forward), so a backward must follow a
 * forward made under the same options. Sessions are not affected. */
smj_status smj_model_set_train_options(smj_model *m, const smj_train_options *opts);
void smj_model_get_train_options(const smj_model *m, smj_train_options *opts);

/* Forward pass over inputs [B, T]. When targets [B, T] is not NULL, *loss
 * gets the mean cross-entropy over targets >= 0 (targets < 0 are ignored).
 * Logits of the last forward are at smj_model_logits — except after a
 * forward with targets under fused_ce (smj_train_options), which keeps no
 * logits. */
smj_status smj_model_forward(smj_model *m, const int32_t *inputs, const int32_t *targets, int B,
                             int T, float *loss);
/* Logits of the last forward (valid until the next call or a backward,
 * which overwrites them), in the backend's memory: a host pointer on CPU
 * backends, a device pointer on CUDA. B x T rows of smj_model_logits_stride
 * floats, the first V of each the logits: V (dense) after a forward without
 * targets; after one with targets the vocabulary rounded up to a multiple
 * of 64 for an f32 LM head (its products then run on aligned shapes; the
 * padding columns are 0). NULL before any forward and after a forward with
 * targets under fused_ce (no logits were kept). */
const float *smj_model_logits(const smj_model *m);
int64_t smj_model_logits_stride(const smj_model *m);
/* Copies the last forward's logits [B, T, V] (dense) to host memory dst (any backend).
 * SMJ_ERR_INVALID (dst untouched) before any forward, and after a forward
 * with targets under fused_ce: the logits were never materialized (run a
 * forward without targets, or turn fused_ce off, to get them). */
smj_status smj_model_get_logits(smj_model *m, float *dst);
/* Backward of the last forward (which must have had targets); ADDS into the
 * gradients (call smj_model_zero_grad first). loss_scale multiplies dL. */
smj_status smj_model_backward(smj_model *m, float loss_scale);
/* One train step's forward and backward: smj_model_forward with targets,
 * then smj_model_backward(loss_scale), with the same loss and gradients
 * (bit for bit). The LM head's gradient is taken in the forward, block by
 * block of rows right after their logits (the loss and dlogits in one pass
 * where the backend can); under fused_ce each chunk's logits are so
 * computed once instead of again in the backward (the trainer's way).
 * loss NULL: the loss is not read (nothing waits for the device). */
smj_status smj_model_forward_backward(smj_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                                      float loss_scale, float *loss);
smj_status smj_model_zero_grad(smj_model *m);

/* --------------------------------------------------------------- inference */

typedef struct {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;
} smj_sampler_options;

void smj_sampler_defaults(smj_sampler_options *o);

typedef struct smj_session smj_session;

/* A decoding session with a KV cache of up to max_len positions. Where the
 * backend runs all blocks of a step at once (CUDA; the reference backend),
 * the session also keeps a copy of the weights made at creation and reset:
 * bf16 in bf16 mode (2 bytes per parameter), and for the GPT-2 family in
 * fp32 mode an f32 copy of its Conv1D weights transposed (4 bytes per
 * parameter); without room for it the session decodes without it, slower. */
smj_status smj_session_create(smj_model *m, int max_len, smj_session **out);
void smj_session_free(smj_session *s);
void smj_session_reset(smj_session *s);
int smj_session_length(const smj_session *s);
/* Feeds n tokens (a prompt chunk or one sampled token) through the model,
 * appending to the cache. *logits (may be NULL) gets the [V] logits after the
 * last token, valid until the next call. */
smj_status smj_session_feed(smj_session *s, const int32_t *ids, int n, const float **logits);
/* Greedy decoding of n tokens after what was fed: out[i] = the argmax of the
 * logits so far (smj_sample at temperature 0, no repetition penalty), fed
 * back; *logits (may be NULL) gets the logits after out[n-1]. The same
 * tokens and logits as that loop of smj_session_feed + smj_sample; on a
 * backend with the decode ops (CUDA) the steps follow each other on the
 * device, with no copy to or from the host until the end. SMJ_ERR_INVALID
 * before anything was fed or when n tokens do not fit. */
smj_status smj_session_greedy(smj_session *s, int n, int32_t *out, const float **logits);
/* Samples one id from logits [V]; history (may be NULL) feeds the repetition
 * penalty. rng_state is the caller's (seed it with opts->seed). */
int32_t smj_sample(const float *logits, int V, const smj_sampler_options *opts,
                   const int32_t *history, int n_history, uint64_t *rng_state, float *scratch);

/* ---------------------------------------------------------------- training */

typedef enum { SMJ_SCHED_COSINE = 0, SMJ_SCHED_CONSTANT, SMJ_SCHED_WSD, SMJ_SCHED_LINEAR } smj_schedule;

typedef struct {
    float lr;            /* peak learning rate */
    float min_lr_ratio;  /* final lr = lr * ratio (cosine, linear, WSD) */
    int warmup_steps;
    int total_steps;
    smj_schedule schedule;
    float wsd_decay_frac; /* WSD: fraction of steps spent decaying */
    float beta1, beta2, eps;
    float weight_decay;  /* decoupled; never applied to 1-D tensors */
    float grad_clip;     /* global-norm clip; 0 = off */
    int skip_nonfinite;  /* skip steps with a NaN/Inf loss or gradient (default on) */
    int max_bad_steps;   /* consecutive skipped steps before SMJ_ERR_DIVERGED */
} smj_optim_options;

void smj_optim_defaults(smj_optim_options *o);
/* The learning rate at step (0-based). */
float smj_lr_at(const smj_optim_options *o, int64_t step);

typedef struct smj_trainer smj_trainer;

typedef struct {
    float loss;       /* mean over the micro-batches */
    float grad_norm;  /* before clipping */
    float lr;
    int skipped;      /* 1 when this step was skipped as non-finite */
    int64_t step;     /* steps taken so far, including this one */
    int64_t bad_steps_total;
} smj_step_stats;

/* The trainer owns the AdamW moments, the step counter and the data cursor;
 * the model stays the caller's and must outlive the trainer. */
smj_status smj_trainer_create(smj_model *m, const smj_optim_options *o, smj_trainer **out);
void smj_trainer_free(smj_trainer *t);
/* One optimizer step over grad_accum micro-batches of [B, T] drawn from ds
 * (the same update as one batch grad_accum times larger). On a device
 * backend with one micro-batch a step's work is recorded as a graph once
 * two steps ran alike, and replayed after (the same numbers, one launch);
 * any other work on the context in between makes the next step record it
 * again. */
smj_status smj_trainer_step(smj_trainer *t, const smj_dataset *ds, int B, int T, int grad_accum,
                            smj_step_stats *stats);
/* Mean loss over n_batches batches of ds from position 0 (no update). */
smj_status smj_trainer_eval(smj_trainer *t, const smj_dataset *ds, int B, int T, int n_batches,
                            float *loss);
int64_t smj_trainer_step_count(const smj_trainer *t);
/* Steps this trainer ran as a recorded graph (0 on host backends). */
int64_t smj_trainer_graph_steps(const smj_trainer *t);
/* Injects a NaN into the gradients of the next step (for tests of the skip). */
void smj_trainer_debug_poison_next(smj_trainer *t);

/* Free-form integers and floats a caller keeps with the training state
 * (best validation loss, patience counter, ...). */
typedef struct {
    double best_val_loss;
    int64_t patience_left;
    int64_t user[6];
} smj_trainer_extra;

/* Saves weights, AdamW moments, step, data position, RNG and extra
 * atomically; loading restores all of them into an existing trainer whose
 * model has the same config (SMJ_ERR_FORMAT with the mismatch otherwise). */
smj_status smj_trainer_save(smj_trainer *t, const char *path, const smj_trainer_extra *extra);
smj_status smj_trainer_load(smj_trainer *t, const char *path, smj_trainer_extra *extra);
/* Reads only the model config stored in a checkpoint or training state. */
smj_status smj_checkpoint_read_config(smj_ctx *ctx, const char *path, smj_model_config *cfg,
                                      int *is_train_state);

/* ------------------------------------------------------ HuggingFace interop */
/* (section owned by the HF interop work) */

/* Import and export of HuggingFace checkpoints (docs/HF.md): a directory with
 * config.json and model.safetensors (or model-*-of-*.safetensors shards named
 * by model.safetensors.index.json), optionally tokenizer.json.
 * Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen3ForCausalLM
 * (F32, BF16 or F16 weights; converted to fp32 exactly). */

#define SMJ_HF_MAX_SEQ_LEN 131072 /* default cap on max_position_embeddings */

typedef struct {
    int max_seq_len;  /* in: 0 = max_position_embeddings, capped at SMJ_HF_MAX_SEQ_LEN
                         and at a sliding window; > 0 = this context length */
    char notes[1024]; /* out: what the import adjusted, one line each ("" = nothing) */
} smj_hf_import_options;

/* Reads model_dir into a new model. An unsupported architecture or config
 * key (biases, scaled RoPE, ...) is SMJ_ERR_UNSUPPORTED naming it; a missing
 * tensor or one of the wrong shape is SMJ_ERR_FORMAT; a tensor the model has
 * no place for is SMJ_ERR_UNSUPPORTED (rotary_emb.inv_freq buffers are
 * skipped). opts may be NULL. */
smj_status smj_import_hf(smj_ctx *ctx, const char *model_dir, smj_hf_import_options *opts,
                         smj_model **out);

typedef struct {
    int bf16;                 /* weights as BF16 (round to nearest even); default F32 */
    int64_t max_shard_bytes;  /* shard above this many bytes of weights; 0 = 5 GB */
    int overwrite;            /* allow writing into a non-empty out_dir */
} smj_hf_export_options;

/* Writes config.json, generation_config.json, model.safetensors (or shards
 * + index) and, when tok is not NULL, tokenizer.json and tokenizer_config.json
 * into out_dir (created; each file written atomically). A non-empty out_dir
 * is refused (SMJ_ERR_INVALID) unless opts->overwrite. opts may be NULL.
 * Errors are reported in the model's context. */
smj_status smj_export_hf(smj_model *m, const smj_tokenizer *tok, const char *out_dir,
                         const smj_hf_export_options *opts);

/* Reads a HF tokenizer.json holding a byte-level BPE in smedjan's id layout
 * (ids 0..255 the bytes, then one id per merge in merge order, then the
 * added special tokens, PAD/BOS/EOS first) — what smj_export_hf writes.
 * Anything else is SMJ_ERR_UNSUPPORTED with the reason. */
smj_status smj_tokenizer_import_hf(smj_ctx *ctx, const char *path, smj_tokenizer **out);

/* -------------------------------------------------------------------- GGUF */
/* (section owned by the GGUF work) */

/* GGUF (v3) is the format llama.cpp and its ecosystem load; it is also
 * smedjan's quantized format. smj_export_gguf writes a model and its
 * tokenizer so that llama.cpp runs the file as is (docs/GGUF.md): arch
 * "llama" (Q/K rows permuted for its interleaved RoPE) or "qwen3" when the
 * model has QK-norm, the byte-level BPE vocabulary as a "gpt2" tokenizer with
 * the "gpt-2" pre-tokenizer, no BOS added. */

typedef enum {
    SMJ_QUANT_F32 = 0, /* every tensor fp32 */
    SMJ_QUANT_F16,     /* 2-D tensors IEEE half (round to nearest even), norms fp32 */
    SMJ_QUANT_Q8_0,    /* 2-D tensors GGML q8_0 (8-bit, 32-value blocks), norms fp32 */
    SMJ_QUANT_Q4_0     /* 2-D tensors GGML q4_0 (4-bit, 32-value blocks), norms fp32 */
} smj_quant;

/* "f32", "f16", "q8_0", "q4_0" (case-insensitive) -> *out; SMJ_ERR_INVALID
 * with the list of names otherwise. */
smj_status smj_quant_parse(smj_ctx *ctx, const char *name, smj_quant *out);
const char *smj_quant_name(smj_quant q);

/* What smj_export_gguf wrote (for the CLI's summary). */
typedef struct {
    const char *arch;   /* "llama" or "qwen3" */
    int n_tensors;
    int n_f32, n_f16, n_q8_0, n_q4_0;
    /* 2-D tensors that q8_0/q4_0 asked for but whose rows are not a multiple
     * of 32 values: stored f16 instead. */
    int n_f16_fallback;
    int n_vocab_padding; /* unused tokens added when the model's vocab exceeds the tokenizer's */
    int64_t file_bytes;
} smj_gguf_export_info;

/* Writes m and tok as a GGUF file at path atomically (temp file + rename;
 * nothing is left behind on failure). The model's vocab_size must be at
 * least the tokenizer's. info may be NULL. */
smj_status smj_export_gguf(smj_model *m, const smj_tokenizer *tok, const char *path, smj_quant q,
                           smj_gguf_export_info *info);

/* ---- reading (validating) GGUF files */

typedef struct smj_gguf smj_gguf;

/* Value types of GGUF metadata (the spec's gguf_metadata_value_type). */
typedef enum {
    SMJ_GGUF_UINT8 = 0, SMJ_GGUF_INT8, SMJ_GGUF_UINT16, SMJ_GGUF_INT16, SMJ_GGUF_UINT32,
    SMJ_GGUF_INT32, SMJ_GGUF_FLOAT32, SMJ_GGUF_BOOL, SMJ_GGUF_STRING, SMJ_GGUF_ARRAY,
    SMJ_GGUF_UINT64, SMJ_GGUF_INT64, SMJ_GGUF_FLOAT64
} smj_gguf_type;

/* Opens (memory-maps) and validates a GGUF file: magic, version 2 or 3,
 * counts, every string, array and value type, general.alignment, tensor
 * names (unique, < 64 bytes), dims (1..4, > 0), types, sizes, offsets
 * (aligned, inside the file, not overlapping). Any violation is
 * SMJ_ERR_FORMAT with one message naming the file and the problem. */
smj_status smj_gguf_open(smj_ctx *ctx, const char *path, smj_gguf **out);
void smj_gguf_free(smj_gguf *g);
uint32_t smj_gguf_version(const smj_gguf *g);
int smj_gguf_num_kv(const smj_gguf *g);
int smj_gguf_num_tensors(const smj_gguf *g);

typedef struct {
    const char *key;         /* NUL-terminated */
    smj_gguf_type type;
    smj_gguf_type elem_type; /* arrays: the element type */
    uint64_t n;              /* arrays: the element count; 1 for scalars */
} smj_gguf_kv_info;

/* Index of key, or -1. */
int smj_gguf_find_kv(const smj_gguf *g, const char *key);
/* Metadata pair i (0 <= i < num_kv); SMJ_ERR_INVALID when out of range. */
smj_status smj_gguf_kv(const smj_gguf *g, int i, smj_gguf_kv_info *kv);
/* Value of pair i (element j of an array; j = 0 for a scalar). Each returns
 * 0, or -1 when j is out of range or the type does not fit: _int accepts
 * every integer type and bool (a uint64 above INT64_MAX fails), _float every
 * numeric type, _str strings (NOT NUL-terminated: *len bytes). */
int smj_gguf_kv_int(const smj_gguf *g, int i, uint64_t j, int64_t *v);
int smj_gguf_kv_float(const smj_gguf *g, int i, uint64_t j, double *v);
const char *smj_gguf_kv_str(const smj_gguf *g, int i, uint64_t j, size_t *len);

typedef struct {
    const char *name;      /* NUL-terminated */
    int ndim;
    int64_t ne[4];         /* GGML order: ne[0] is the innermost (row) length */
    int type;              /* GGML type id (0 f32, 1 f16, 2 q4_0, 8 q8_0, ...) */
    const char *type_name; /* "f32", "q8_0", ... */
    int64_t numel;
    uint64_t offset;       /* from the start of the file */
    uint64_t nbytes;
} smj_gguf_tensor_info;

/* Index of the tensor called name, or -1. */
int smj_gguf_find_tensor(const smj_gguf *g, const char *name);
smj_status smj_gguf_tensor(const smj_gguf *g, int i, smj_gguf_tensor_info *t);
/* The tensor's bytes inside the mapped file. */
const void *smj_gguf_tensor_data(const smj_gguf *g, int i);
/* Dequantizes tensor i (f32, f16, bf16, q8_0, q4_0) into out[numel];
 * SMJ_ERR_UNSUPPORTED for other types. */
smj_status smj_gguf_tensor_to_f32(smj_ctx *ctx, const smj_gguf *g, int i, float *out);

/* Loads a llama or qwen3 GGUF file (ours or llama.cpp's converter's) as a
 * model for inference: the config from its metadata, norms as f32, and the
 * token embedding and linear weights stored f16/q8_0/q4_0 kept in their GGML
 * blocks (embedding rows dequantized as they are looked up; linear layers
 * through the backend's qmatmul op
 * — SMJ_ERR_UNSUPPORTED on a backend without it). Q/K rows of the llama
 * architecture are put back in HF order. Training such a model is refused.
 * Files are recognized by their magic "GGUF" (smj_is_gguf). */
smj_status smj_model_load_gguf(smj_ctx *ctx, const char *path, smj_model **out);
/* The tokenizer embedded in a GGUF file, when it is in the layout
 * smj_export_gguf writes (byte-level BPE: 256 byte tokens, merges in order,
 * 3 special tokens); SMJ_ERR_UNSUPPORTED, explained, for other layouts
 * (e.g. HF tokenizers converted by llama.cpp: give a tokenizer file). */
smj_status smj_tokenizer_load_gguf(smj_ctx *ctx, const char *path, smj_tokenizer **out);
/* 1 when the file at path starts with the GGUF magic. */
int smj_is_gguf(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* SMEDJAN_H */
