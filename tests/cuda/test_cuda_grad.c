/* test_cuda_grad.c — finite-difference gradient checks on the GPU (built
 * with CUDA=1): every backward op against central differences of the same
 * backend's forward (tests/util/opgrad.c: matmul, embedding, rmsnorm, rope,
 * attention, swiglu, cross-entropy, layernorm, gelu), with the default
 * attention kernels (few keys: the fused fp32 kernels; 16 and more: the
 * product path) and again with SMJ_CUDA_ATTN=fused; then whole models'
 * gradients along two directions (tests/util/gradcheck.c): a Llama (GQA,
 * QK-norm, untied head) and GPT-2 (tied and untied), every op on the GPU.
 *
 * In fp32 products only: the program clears SMJ_CUDA_MATMUL and
 * SMJ_CUDA_TF32 (bf16 rounding, 2^-8, is far above what central differences
 * resolve). The bf16 flash kernels are checked against the reference, whose
 * backward is checked by finite differences in double (tests/test_ops.c),
 * by test_cuda_ops. Without a usable GPU: SKIP (cuda_check.h). */
#include <math.h>
#include <stdlib.h>
#include "cuda_check.h"
#include "../util/gradcheck.h"
#include "../util/opgrad.h"

static smj_model_config llama_cfg(void) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                          .head_dim = 8, .ffn_hidden = 40, .max_seq_len = 160, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = 0, .qk_norm = 1};
    return c;
}
static smj_model_config gpt2_cfg(int tied) {
    smj_model_config c = {.vocab_size = 50, .dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                          .head_dim = 6, .ffn_hidden = 40, .max_seq_len = 160, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .tied_embeddings = tied, .arch = SMJ_ARCH_GPT2};
    return c;
}

/* A model on the GPU with weights scaled up (curvature worth checking) and
 * non-trivial norms/biases, set through the public API, then its gradient
 * along two directions against finite differences of its loss. */
static void model_check(smj_ctx *ctx, smj_model_config c, const char *label) {
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, 7, &m));
    if (!m) return;
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        float *h = malloc(sizeof(float) * (size_t)v.numel);
        CHECK_OK(ctx, smj_model_tensor_get(m, i, 0, h));
        for (int64_t j = 0; j < v.numel; j++) h[j] = v.ndim >= 2 ? h[j] * 8.0f : h[j] + 0.1f * (float)sin((double)j + i);
        CHECK_OK(ctx, smj_model_tensor_set(m, i, h));
        free(h);
    }
    int B = 2, T = 9;
    int32_t x[18], y[18];
    for (int i = 0; i < 18; i++) { x[i] = (i * 13 + 5) % 50; y[i] = (i * 29 + 3) % 50; }
    y[4] = -1; /* an ignored target */
    gradcheck_directional(ctx, m, x, y, B, T, label);
    smj_model_free(m);
}

int main(void) {
    unsetenv("SMJ_CUDA_MATMUL");
    unsetenv("SMJ_CUDA_TF32");
    smj_ctx *ctx = cuda_check_open();
    if (!ctx) return cuda_check_skip();
    opgrad_all(be, ex, "cuda");
    cuda_check_status(ctx, "opgrad");
    model_check(ctx, llama_cfg(), "llama (GQA, QK-norm, untied)");
    model_check(ctx, gpt2_cfg(1), "gpt2 tied");
    model_check(ctx, gpt2_cfg(0), "gpt2 untied");
    cuda_check_status(ctx, "gradcheck");
    smj_ctx_free(ctx);
    /* the fused fp32 attention kernels on every length */
    setenv("SMJ_CUDA_ATTN", "fused", 1);
    ctx = cuda_check_open();
    if (ctx) {
        opgrad_all(be, ex, "cuda (SMJ_CUDA_ATTN=fused)");
        cuda_check_status(ctx, "opgrad (fused attention)");
        smj_ctx_free(ctx);
    }
    return check_summary("test_cuda_grad");
}
