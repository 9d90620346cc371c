/* model_flags.c — turning --size and the shape flags into a model config.
 *
 * Rules (shared by `train` and `bench`):
 *  - --size NAME starts from the library preset NAME; any shape flag given
 *    alongside overrides that one field.
 *  - --size custom starts from the "tiny" preset (for rope theta, norm eps
 *    and the like) and requires --dim, --layers and --heads.
 *  - When --dim or --heads change and --head-dim is not given, head_dim
 *    becomes dim/heads; when --heads changes and --kv-heads is not given,
 *    kv_heads becomes heads; when --dim or --ffn-mult change, the SwiGLU
 *    width is recomputed with smj_config_ffn_hidden.
 *  - max_seq_len is --max-seq when given, else the preset's (custom: the
 *    training --seq-len), raised to the training --seq-len when shorter.
 * The result is checked with smj_config_validate, whose message names the
 * offending field.
 */
#include <string.h>
#include "cli.h"

static const char *const shape_flags[] = {"dim",    "layers",     "heads", "kv-heads",
                                          "head-dim", "ffn-mult", "qk-norm", "untied",
                                          "rope-theta", "max-seq", "arch"};

int cli_shape_flags_seen(const cli_command *c) {
    for (size_t i = 0; i < sizeof shape_flags / sizeof shape_flags[0]; i++)
        if (cli_seen(c, shape_flags[i])) return 1;
    return 0;
}

int cli_build_config(const char *cmd, smj_ctx *ctx, const cli_command *c,
                     const cli_model_flags *mf, int vocab, int T, smj_model_config *cfg) {
    int custom = strcmp(mf->size, "custom") == 0;
    smj_status s = smj_config_preset(ctx, custom ? "tiny" : mf->size, vocab, cfg);
    if (s != SMJ_OK) return cli_usage(cmd, "--size: %s", smj_ctx_error(ctx));
    if (custom) {
        const char *missing = !cli_seen(c, "dim")      ? "--dim"
                              : !cli_seen(c, "layers") ? "--layers"
                              : !cli_seen(c, "heads")  ? "--heads"
                                                       : NULL;
        if (missing) return cli_usage(cmd, "--size custom needs %s", missing);
    }
    int dim_changed = cli_seen(c, "dim"), heads_changed = cli_seen(c, "heads");
    if (dim_changed) cfg->dim = mf->dim;
    if (cli_seen(c, "layers")) cfg->n_layers = mf->layers;
    if (heads_changed) {
        cfg->n_heads = mf->heads;
        if (!cli_seen(c, "kv-heads")) cfg->n_kv_heads = mf->heads;
    }
    if (cli_seen(c, "kv-heads")) cfg->n_kv_heads = mf->kv_heads;
    if (cli_seen(c, "head-dim")) {
        cfg->head_dim = mf->head_dim;
    } else if (dim_changed || heads_changed) {
        if (cfg->dim % cfg->n_heads != 0)
            return cli_usage(cmd, "--dim %d is not divisible by --heads %d (or give --head-dim)",
                             cfg->dim, cfg->n_heads);
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    if (dim_changed || cli_seen(c, "ffn-mult"))
        cfg->ffn_hidden = smj_config_ffn_hidden(cfg->dim, mf->ffn_mult > 0 ? mf->ffn_mult : 2.67f);
    if (strcmp(mf->arch, "gpt2") == 0) {
        /* GPT-2: MHA, head_dim = dim / heads, MLP of 4*dim (or dim * --ffn-mult), no RoPE */
        cfg->arch = SMJ_ARCH_GPT2;
        if (cli_seen(c, "kv-heads") || cli_seen(c, "head-dim") || cli_seen(c, "qk-norm") || cli_seen(c, "rope-theta"))
            return cli_usage(cmd, "--arch gpt2 takes no --kv-heads, --head-dim, --qk-norm or --rope-theta");
        cfg->n_kv_heads = cfg->n_heads;
        if (cfg->dim % cfg->n_heads != 0)
            return cli_usage(cmd, "--dim %d is not divisible by --heads %d", cfg->dim, cfg->n_heads);
        cfg->head_dim = cfg->dim / cfg->n_heads;
        cfg->ffn_hidden = (int)((double)cfg->dim * (mf->ffn_mult > 0 ? mf->ffn_mult : 4.0f));
    } else if (strcmp(mf->arch, "llama") != 0) {
        return cli_usage(cmd, "--arch: unknown model family '%s' (llama or gpt2)", mf->arch);
    }
    if (cli_seen(c, "qk-norm")) cfg->qk_norm = 1;
    if (cli_seen(c, "untied")) cfg->tied_embeddings = 0;
    if (cli_seen(c, "rope-theta")) cfg->rope_theta = mf->rope_theta;
    if (cli_seen(c, "max-seq")) {
        cfg->max_seq_len = mf->max_seq;
        if (T > cfg->max_seq_len)
            return cli_usage(cmd, "--seq-len %d exceeds --max-seq %d", T, cfg->max_seq_len);
    } else if (custom || cfg->max_seq_len < T) {
        cfg->max_seq_len = T;
    }
    s = smj_config_validate(ctx, cfg);
    if (s != SMJ_OK) return cli_usage(cmd, "invalid model shape: %s", smj_ctx_error(ctx));
    return 0;
}

void cli_print_config(FILE *f, const smj_model_config *cfg) {
    char p[32];
    fprintf(f,
            "model: %s parameters | dim %d | layers %d | heads %d (kv %d, head dim %d) | "
            "ffn %d | vocab %d | context %d%s%s%s\n",
            cli_fmt_params(p, sizeof p, smj_config_num_params(cfg)), cfg->dim, cfg->n_layers,
            cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->ffn_hidden, cfg->vocab_size,
            cfg->max_seq_len, cfg->tied_embeddings ? "" : " | untied head",
            cfg->qk_norm ? " | qk-norm" : "", cfg->arch == SMJ_ARCH_GPT2 ? " | gpt2" : "");
}

smj_train_options cli_train_options(const cli_mem_flags *mm, const smj_model_config *cfg, const smj_ctx *ctx) {
    smj_train_options o = {0};
    o.fused_ce = mm->fused_ce ? 1 : 0;
    o.gradient_checkpointing = mm->grad_ckpt ? 1 : 0;
    o.fp16_activations = mm->fp16_act ? 1 : 0;
    o.ce_chunk_rows = mm->ce_rows;
    /* the library picks the same automatic chunks for a model on a GPU;
     * set here so that the memory estimates count them */
    if (o.fused_ce && !o.ce_chunk_rows && ctx && strcmp(smj_ctx_backend_name(ctx), "cuda") == 0)
        o.ce_chunk_rows = smj_ce_chunk_rows_auto(cfg, SMJ_BACKEND_CUDA, o.fp16_activations && smj_ctx_bf16_matmul(ctx));
    return o;
}

int cli_check_mem_flags(const char *cmd, const cli_mem_flags *mm) {
    if (mm->ce_rows && !mm->fused_ce) return cli_usage(cmd, "--ce-chunk-rows sets --fused-ce's chunks: give --fused-ce too");
    return 0;
}

const char *cli_train_options_str(const smj_train_options *o, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s%s", o->fused_ce || o->gradient_checkpointing || o->fp16_activations ? " with" : "",
             o->fused_ce ? " --fused-ce" : "", o->gradient_checkpointing ? " --gradient-checkpointing" : "",
             o->fp16_activations ? " --fp16-activations" : "");
    return buf;
}

void cli_print_train_memory(FILE *f, const char *what, const smj_model_config *cfg, int B, int T,
                            const cli_mem_flags *mm, const smj_ctx *ctx, int bf16_matmul) {
    smj_train_options o = cli_train_options(mm, cfg, ctx);
    smj_train_memory d;
    smj_config_train_memory_ex(cfg, B, T, &o, &d);
    char t[32], w[32], g[32], a[32], x[32], s[32], on[96];
    fprintf(f, "%s~%s (weights %s, grads %s, AdamW %s, activations %s, scratch %s)%s", what,
            cli_fmt_bytes(t, sizeof t, (double)d.total), cli_fmt_bytes(w, sizeof w, (double)d.weights),
            cli_fmt_bytes(g, sizeof g, (double)d.grads), cli_fmt_bytes(a, sizeof a, (double)d.optimizer),
            cli_fmt_bytes(x, sizeof x, (double)d.activations), cli_fmt_bytes(s, sizeof s, (double)d.scratch),
            cli_train_options_str(&o, on, sizeof on));
    if (ctx && strcmp(smj_ctx_backend_name(ctx), "cuda") == 0) {
        int64_t ws = smj_config_device_workspace(cfg, B, T, &o, SMJ_BACKEND_CUDA, bf16_matmul);
        fprintf(f, " + CUDA workspace ~%s = ~%s on the device", cli_fmt_bytes(w, sizeof w, (double)ws),
                cli_fmt_bytes(t, sizeof t, (double)(d.total + ws)));
    }
    fputc('\n', f);
}
