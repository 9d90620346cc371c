/* config.c — model presets, validation and the size arithmetic (parameter
 * count, flops per token, training memory) that `sizes`, `info` and `bench`
 * print. All sizes in 64 bits. */
#include <math.h>
#include <string.h>
#include "model.h"
#include "../cuda/limits.h"

typedef struct { const char *name; int dim, layers, heads; } preset;
/* tiny/small/medium are the shapes of the PyTorch CPU reference benchmark. */
static const preset PRESETS[] = {
    {"tiny", 128, 4, 4},    {"small", 256, 6, 4},   {"medium", 512, 12, 8},
    {"large", 768, 12, 12}, {"xl", 1024, 24, 16},
};
#define N_PRESETS (int)(sizeof PRESETS / sizeof PRESETS[0])

static const char *const ROPE_NAMES[SMJ_ROPE_COUNT] = {"default", "linear", "dynamic", "llama3", "yarn"};

const char *smj_rope_type_name(int t) { return t >= 0 && t < SMJ_ROPE_COUNT ? ROPE_NAMES[t] : NULL; }

int smj_rope_type_parse(const char *name) {
    for (int t = 0; t < SMJ_ROPE_COUNT; t++)
        if (strcmp(name, ROPE_NAMES[t]) == 0) return t;
    return -1;
}

const char *smj_config_preset_name(int i) { return i >= 0 && i < N_PRESETS ? PRESETS[i].name : NULL; }

/* Llama's rule: int(dim * mult) rounded up to a multiple of 256. */
int smj_config_ffn_hidden(int dim, float ffn_mult) {
    int h = (int)((double)dim * ffn_mult);
    return (h + 255) / 256 * 256;
}

smj_status smj_config_preset(smj_ctx *ctx, const char *name, int vocab_size, smj_model_config *c) {
    for (int i = 0; i < N_PRESETS; i++) {
        if (strcmp(name, PRESETS[i].name) != 0) continue;
        memset(c, 0, sizeof *c);
        c->vocab_size = vocab_size;
        c->dim = PRESETS[i].dim;
        c->n_layers = PRESETS[i].layers;
        c->n_heads = c->n_kv_heads = PRESETS[i].heads;
        c->head_dim = c->dim / c->n_heads;
        c->ffn_hidden = smj_config_ffn_hidden(c->dim, 2.67f);
        c->max_seq_len = 1024;
        c->rope_theta = 10000.0f;
        c->norm_eps = 1e-5f;
        c->tied_embeddings = 1;
        c->qk_norm = 0;
        return SMJ_OK;
    }
    SMJ_FAIL(ctx, SMJ_ERR_INVALID, "unknown model size '%s' (choose tiny, small, medium, large, xl or custom)", name);
}

smj_status smj_config_validate(smj_ctx *ctx, const smj_model_config *c) {
#define REQ(cond, ...) SMJ_CHECK(ctx, cond, SMJ_ERR_INVALID, __VA_ARGS__)
    REQ(c->vocab_size >= 2 && c->vocab_size <= (1 << 24), "vocab size %d out of range [2, 16777216]", c->vocab_size);
    REQ(c->dim >= 1 && c->dim <= 65536, "dim %d out of range [1, 65536]", c->dim);
    REQ(c->n_layers >= 1 && c->n_layers <= 1024, "layers %d out of range [1, 1024]", c->n_layers);
    REQ(c->n_heads >= 1 && c->n_heads <= 1024, "heads %d out of range [1, 1024]", c->n_heads);
    REQ(c->n_kv_heads >= 1 && c->n_heads % c->n_kv_heads == 0,
        "kv heads %d must divide heads %d", c->n_kv_heads, c->n_heads);
    REQ(c->head_dim >= 2 && c->head_dim % 2 == 0 && c->head_dim <= 1024,
        "head dim %d must be even and in [2, 1024]", c->head_dim);
    REQ(c->ffn_hidden >= 1 && c->ffn_hidden <= 1 << 20, "ffn hidden %d out of range", c->ffn_hidden);
    REQ(c->max_seq_len >= 1 && c->max_seq_len <= 1 << 20, "max sequence length %d out of range", c->max_seq_len);
    REQ(c->rope_theta > 0 && isfinite(c->rope_theta), "rope theta must be positive");
    REQ(c->norm_eps > 0 && c->norm_eps < 1, "norm eps must be in (0, 1)");
    REQ(c->tied_embeddings == 0 || c->tied_embeddings == 1, "tied must be 0 or 1");
    REQ(c->qk_norm == 0 || c->qk_norm == 1, "qk_norm must be 0 or 1");
    REQ(c->attn_bias == 0 || c->attn_bias == 1, "attn_bias must be 0 or 1");
    REQ(c->attn_out_bias == 0 || c->attn_out_bias == 1, "attn_out_bias must be 0 or 1");
    REQ(c->rope_type >= 0 && c->rope_type < SMJ_ROPE_COUNT, "unknown rope type %d", c->rope_type);
    if (c->rope_type != SMJ_ROPE_DEFAULT) {
        const char *rt = smj_rope_type_name(c->rope_type);
        REQ(c->rope_factor > 0 && isfinite(c->rope_factor), "%s rope: factor must be positive", rt);
        REQ(c->rope_orig_max_pos >= 0, "%s rope: original context must not be negative", rt);
    }
    if (c->rope_type == SMJ_ROPE_LLAMA3) {
        REQ(c->rope_orig_max_pos >= 1, "llama3 rope: original_max_position_embeddings must be >= 1");
        REQ(c->rope_low_freq_factor > 0 && isfinite(c->rope_low_freq_factor) && isfinite(c->rope_high_freq_factor) &&
                c->rope_high_freq_factor > c->rope_low_freq_factor,
            "llama3 rope: need 0 < low_freq_factor < high_freq_factor (got %g, %g)", (double)c->rope_low_freq_factor,
            (double)c->rope_high_freq_factor);
    }
    REQ(c->arch == SMJ_ARCH_LLAMA || c->arch == SMJ_ARCH_GPT2, "unknown model family (arch) %d", c->arch);
    if (c->arch == SMJ_ARCH_GPT2) {
        REQ(c->n_kv_heads == c->n_heads, "gpt2: kv heads %d must equal heads %d (no GQA)", c->n_kv_heads, c->n_heads);
        REQ((int64_t)c->head_dim * c->n_heads == c->dim, "gpt2: head dim %d x heads %d must equal dim %d",
            c->head_dim, c->n_heads, c->dim);
        REQ(!c->qk_norm && !c->attn_bias && !c->attn_out_bias && c->rope_type == SMJ_ROPE_DEFAULT,
            "gpt2: qk_norm, attn_bias, attn_out_bias and rope scaling are Llama-family options");
    }
    if (c->rope_type == SMJ_ROPE_YARN) {
        REQ(c->rope_beta_fast >= 0 && c->rope_beta_slow >= 0 && isfinite(c->rope_beta_fast) && isfinite(c->rope_beta_slow),
            "yarn rope: beta_fast/beta_slow must not be negative");
        REQ(c->rope_attn_factor >= 0 && isfinite(c->rope_attn_factor), "yarn rope: attention factor must not be negative");
        REQ(c->rope_yarn_no_truncate == 0 || c->rope_yarn_no_truncate == 1, "yarn rope: no_truncate must be 0 or 1");
    }
#undef REQ
    return SMJ_OK;
}

int64_t smj_config_num_params(const smj_model_config *c) {
    if (c->arch == SMJ_ARCH_GPT2) return smj_gpt2_num_params(c);
    int64_t C = c->dim, V = c->vocab_size, H = c->ffn_hidden, HS = c->head_dim;
    int64_t layer = 2 * C + C * HS * (2 * c->n_heads + 2 * c->n_kv_heads) + 3 * C * H +
                    (c->qk_norm ? 2 * HS : 0) + (c->attn_bias ? HS * (c->n_heads + 2 * c->n_kv_heads) : 0) +
                    (c->attn_out_bias ? C : 0);
    return V * C * (c->tied_embeddings ? 1 : 2) + c->n_layers * layer + C;
}

double smj_config_flops_per_token(const smj_model_config *c, int T) {
    return 6.0 * (double)smj_config_num_params(c) + 12.0 * c->n_layers * (double)T * c->dim;
}

/* Rows of the LM head's chunks and blocks (llama.c lays them out). */
int smj_ce_chunk_rows_auto(const smj_model_config *c, smj_backend_kind kind, int bf16_logits) {
    int64_t V = smj_vocab_rows(c), R;
    if (V < 1) return 1;
    if (kind == SMJ_BACKEND_CUDA) {
        R = ((int64_t)1 << (bf16_logits ? 28 : 27)) / V / 64 * 64;
        if (R < 64) R = 64;
    } else {
        R = ((int64_t)8 << 20) / V;
        if (R < 1) R = 1;
    }
    return (int)R;
}

int64_t smj_ce_chunk_rows(const smj_model_config *c, const smj_train_options *o, int64_t N) {
    int64_t R = o && o->ce_chunk_rows > 0 ? o->ce_chunk_rows : smj_ce_chunk_rows_auto(c, SMJ_BACKEND_CPU, 0);
    return R < N ? R : N;
}

int64_t smj_head_bwd_rows(const smj_model_config *c, int64_t N, int bf16_matmul) {
    int64_t V = smj_vocab_rows(c), R = SMJ_CUDA_BC_MAX / V / 64 * 64;
    if (!bf16_matmul || N * V <= SMJ_CUDA_BC_MAX) return N;
    return R < 64 ? 64 : R;
}

/* Every buffer the model and trainer allocate through the backend, sized
 * by the same walks that lay them out in llama.c: parameters, gradients and
 * the two AdamW moments (one float each per parameter), the activation
 * buffer (carve_acts, under the options), the backward scratch (carve_bwd)
 * and the fixed RoPE/ones buffers. */
int64_t smj_config_train_memory_ex(const smj_model_config *c, int B, int T, const smj_train_options *o,
                                   smj_train_memory *d) {
    smj_train_memory r;
    int64_t P = 4 * smj_config_num_params(c);
    r.weights = r.grads = P;
    r.optimizer = 2 * P;
    r.activations = 4 * smj_act_floats(c, B, T, o);
    r.scratch = 4 * (smj_bwd_floats(c, B, T, o) + smj_fixed_floats(c));
    r.total = r.weights + r.grads + r.optimizer + r.activations + r.scratch;
    if (d) *d = r;
    return r.total;
}

/* The CUDA backend's own buffers for a training step (src/cuda: the
 * policy's numbers are in limits.h): cuBLAS's workspace; in bf16 mode
 * cuBLASLt's, the parameters' bf16 copy (written by the optimizer's step)
 * and the SMJ_CUDA_BC_N kept operand copies, each grown to the largest product
 * operand it may hold (capacity n + n/8 + 1024); and the one scratch buffer,
 * grown to the largest request (+25% + 4 KiB): with flash attention its bf16
 * copies of q, k, v, dO and row statistics, the blocks of the LM head's
 * dlogits; on the fp32 path the materialized score matrices of the cuBLAS
 * attention. Host backends have none. */
int64_t smj_config_device_workspace(const smj_model_config *c, int B, int T, const smj_train_options *o,
                                    smj_backend_kind kind, int bf16_matmul) {
    if (kind != SMJ_BACKEND_CUDA) return 0;
    int64_t N = (int64_t)B * T, C = c->dim, H = c->ffn_hidden, NH = c->n_heads,
            HS = c->head_dim, QD = NH * HS, KD = (int64_t)c->n_kv_heads * HS, TT = (int64_t)T * T, rows = N * NH;
    int fused = o && o->fused_ce;
    int64_t ws = SMJ_CUDA_BLAS_WS, req = rows * 8;
#define MAXTO(x, v) do { int64_t v_ = (v); if (v_ > (x)) (x) = v_; } while (0)
    if (bf16_matmul) ws += SMJ_CUDA_LT_WS + 2 * smj_config_num_params(c); /* cuBLASLt's; the weights' bf16 copy */
    if (bf16_matmul) {
        /* the blocks' operands come by the dozen, so every copy grows to the
         * largest of them (an upper bound: a copy already large enough is
         * reused first); the LM head's (its weight, a block of rows of the
         * logits' gradient or a fused-CE chunk of it) each into one copy;
         * a chunk of bf16 logits (fused_ce with fp16_activations) is kept in
         * the chunk buffer instead (llama.c, fused_head) */
        smj_train_options r = o ? *o : (smj_train_options){0}; /* automatic chunks: this backend's */
        int l16 = fused && r.fp16_activations;
        if (fused && !r.ce_chunk_rows) r.ce_chunk_rows = smj_ce_chunk_rows_auto(c, kind, l16);
        int64_t hr = fused ? smj_ce_chunk_rows(c, &r, N) : smj_head_bwd_rows(c, N, 1), Vr = smj_vocab_rows(c);
        if (l16) hr = 0;
        /* (the backward's gradients read only by products keep their bf16
         * copies in their own storage: smj_fresh16) */
        int64_t blk[] = {N * H, N * C, N * QD, N * KD, 2 * H * C, (QD + 2 * KD) * C}, head[] = {Vr * C, hr * Vr};
        int64_t big = 0, sum = 0;
        int n = SMJ_CUDA_BC_N;
        for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++)
            if (blk[i] <= SMJ_CUDA_BC_MAX && blk[i] > big) big = blk[i];
        for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
            if (head[i] <= SMJ_CUDA_BC_MAX && head[i] > big && n > 1) {
                sum += head[i] + head[i] / 8 + 1024;
                n--;
            }
        ws += 2 * (sum + n * (big + big / 8 + 1024));
        if (hr * Vr > SMJ_CUDA_BC_MAX) MAXTO(req, 2 * SMJ_CUDA_BC_MAX); /* dlogits cast in blocks */
        if ((HS == 64 || HS == 128) && T >= 16) {
            int64_t Tp = (T + 3) / 4 * 4;
            MAXTO(req, 8 * (int64_t)B * NH * Tp + 4 * (N * QD + N * KD) + 1024); /* flash backward */
        } else if ((int64_t)NH * TT * 10 <= SMJ_CUDA_ATT_SCORES) {
            int64_t nb = SMJ_CUDA_ATT_SCORES / (NH * TT * 10);
            if (nb > B) nb = B;
            MAXTO(req, 4 * rows + nb * NH * TT * 10 + 8 * (N * QD + N * KD) + 4096);
        }
    } else if (T >= 16 && (int64_t)NH * TT * 10 <= SMJ_CUDA_ATT_SCORES) {
        int64_t nb = SMJ_CUDA_ATT_SCORES / (NH * TT * 8);
        if (nb > B) nb = B;
        MAXTO(req, 4 * rows + 2 * nb * NH * TT * 4 + 1024); /* the cuBLAS attention's backward */
    }
#undef MAXTO
    return ws + req + req / 4 + 4096;
}

int64_t smj_config_train_memory(const smj_model_config *c, int B, int T) {
    return smj_config_train_memory_ex(c, B, T, NULL, NULL);
}
