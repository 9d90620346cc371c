/* cmd_info.c — inspecting models without running them: `info` and `sizes`.
 *
 * info: reads the config stored in a model checkpoint or a training state
 *   (smj_checkpoint_read_config), prints it with the parameter count and
 *   memory estimates, then loads the weights (smj_model_load accepts both
 *   kinds of file) to list every tensor's name and shape. Because the
 *   config is read first, a file whose weights are damaged still shows its
 *   config before the load error. The training-memory estimate is for
 *   --batch-size/--seq-len and the memory flags given (--fused-ce,
 *   --gradient-checkpointing, --fp16-activations).
 *   A .gguf (by its magic) is read with the smj_gguf_* accessors instead:
 *   format version, architecture, name, file type and size; the config (by
 *   loading it as smj_model_load_gguf does, which also says whether we can
 *   run it); every tensor's name, GGML type, shape (GGML order, innermost
 *   first) and bytes; the embedded tokenizer's model, size, merges and
 *   special ids, and whether smedjan can use it as its own.
 *
 * sizes: one table row per library preset (smj_config_preset_name(i) until
 *   NULL) with its shape, parameter count and training memory at (B, T)
 *   under the memory flags given.
 */
#include <string.h>
#include <sys/stat.h>
#include "cli.h"

static void print_config(const smj_model_config *cfg) {
    printf("vocab_size:      %d\n", cfg->vocab_size);
    printf("dim:             %d\n", cfg->dim);
    printf("n_layers:        %d\n", cfg->n_layers);
    printf("n_heads:         %d\n", cfg->n_heads);
    printf("n_kv_heads:      %d\n", cfg->n_kv_heads);
    printf("head_dim:        %d\n", cfg->head_dim);
    printf("ffn_hidden:      %d\n", cfg->ffn_hidden);
    printf("max_seq_len:     %d\n", cfg->max_seq_len);
    printf("rope_theta:      %g\n", (double)cfg->rope_theta);
    printf("norm_eps:        %g\n", (double)cfg->norm_eps);
    printf("tied_embeddings: %s\n", cfg->tied_embeddings ? "yes" : "no");
    printf("qk_norm:         %s\n", cfg->qk_norm ? "yes" : "no");
}

/* A metadata string as "text" (or "-" when absent) into out. */
static const char *kv_text(const smj_gguf *g, const char *key, char *out, size_t cap) {
    int i = smj_gguf_find_kv(g, key);
    size_t l = 0;
    const char *v = i >= 0 ? smj_gguf_kv_str(g, i, 0, &l) : NULL;
    if (!v) return "-";
    snprintf(out, cap, "%.*s", (int)(l < cap ? l : cap - 1), v);
    return out;
}

static int64_t kv_num(const smj_gguf *g, const char *key) {
    int i = smj_gguf_find_kv(g, key);
    int64_t v = -1;
    return i >= 0 && smj_gguf_kv_int(g, i, 0, &v) == 0 ? v : -1;
}

static int info_gguf(const char *cmd, smj_ctx *ctx, const char *path) {
    smj_gguf *g = NULL;
    smj_status s = smj_gguf_open(ctx, path, &g);
    if (s != SMJ_OK) return cli_lib_error(cmd, ctx, s, "cannot read --checkpoint");
    struct stat st;
    char b1[32], b2[32], t1[128], t2[128];
    printf("file:            %s (GGUF v%u, %s)\n", path, smj_gguf_version(g),
           cli_fmt_bytes(b1, sizeof b1, stat(path, &st) == 0 ? (double)st.st_size : 0));
    printf("architecture:    %s\n", kv_text(g, "general.architecture", t1, sizeof t1));
    printf("name:            %s\n", kv_text(g, "general.name", t2, sizeof t2));
    int64_t ft = kv_num(g, "general.file_type");
    const char *ftn = ft == 0 ? "all f32" : ft == 1 ? "mostly f16" : ft == 2 ? "mostly q4_0" : ft == 7 ? "mostly q8_0"
                    : ft == 32 ? "mostly bf16" : "other";
    if (ft >= 0) printf("file_type:       %lld (%s)\n", (long long)ft, ftn);
    int nt = smj_gguf_num_tensors(g);
    int64_t params = 0;
    for (int i = 0; i < nt; i++) {
        smj_gguf_tensor_info t;
        if (smj_gguf_tensor(g, i, &t) == SMJ_OK) params += t.numel;
    }
    printf("parameters:      %s (%s)\n", cli_fmt_count(b1, sizeof b1, params), cli_fmt_params(b2, sizeof b2, params));
    fflush(stdout);
    smj_model *m = NULL;
    s = smj_model_load_gguf(ctx, path, &m);
    if (s == SMJ_OK) print_config(smj_model_get_config(m));
    else printf("config:          not runnable by smedjan: %s\n", smj_ctx_error(ctx));
    smj_model_free(m);
    printf("tensors (%d):    %-10s %-28s %s\n", nt, "type", "shape (GGML order)", "bytes");
    for (int i = 0; i < nt; i++) {
        smj_gguf_tensor_info t;
        if (smj_gguf_tensor(g, i, &t) != SMJ_OK) continue;
        char shape[96] = "";
        size_t o = 0;
        for (int d = 0; d < t.ndim && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? ", " : "", (long long)t.ne[d]);
        printf("  %-40s %-10s [%s]%*s %llu\n", t.name, t.type_name, shape, (int)(26 - (o < 26 ? o : 26)), "",
               (unsigned long long)t.nbytes);
    }
    int ti = smj_gguf_find_kv(g, "tokenizer.ggml.tokens"), mi = smj_gguf_find_kv(g, "tokenizer.ggml.merges");
    smj_gguf_kv_info tk, mk;
    if (ti >= 0 && smj_gguf_kv(g, ti, &tk) == SMJ_OK) {
        uint64_t merges = mi >= 0 && smj_gguf_kv(g, mi, &mk) == SMJ_OK ? mk.n : 0;
        printf("tokenizer:       %s (pre %s), %llu tokens, %llu merges, bos %lld, eos %lld\n",
               kv_text(g, "tokenizer.ggml.model", t1, sizeof t1), kv_text(g, "tokenizer.ggml.pre", t2, sizeof t2),
               (unsigned long long)tk.n, (unsigned long long)merges, (long long)kv_num(g, "tokenizer.ggml.bos_token_id"),
               (long long)kv_num(g, "tokenizer.ggml.eos_token_id"));
        smj_tokenizer *tok = NULL;
        s = smj_tokenizer_load_gguf(ctx, path, &tok);
        printf("                 %s\n", s == SMJ_OK ? "usable as smedjan's tokenizer (generate needs no --tokenizer)"
                                                    : "not in smedjan's layout: generate needs --tokenizer");
        smj_tokenizer_free(tok);
    } else {
        printf("tokenizer:       none embedded\n");
    }
    smj_gguf_free(g);
    return 0;
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int B = 8, T = 0;
    cli_mem_flags mm = {0};
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &path, "FILE", "model checkpoint or training state (required)"),
        FLAG_INT("batch-size", &B, 1, 65536, "batch for the training-memory estimate (default 8)"),
        FLAG_INT("seq-len", &T, 1, 1 << 20, "sequence length for the estimate (default: context)"),
        CLI_MEM_FLAGS(mm),
        CLI_COMPUTE_FLAGS(cc),
    };
    cli_command c = {"info", "info --checkpoint FILE",
                     "Shows the config, size and tensors of a model checkpoint, training state or\n"
                     "GGUF file (with its tensors' GGML types and its embedded tokenizer).",
                     NULL, flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((rc = cli_check_mem_flags(c.name, &mm))) return rc;
    if (!path) return cli_usage(c.name, "--checkpoint is required");

    smj_ctx *ctx = NULL;
    smj_model *m = NULL;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) return rc;
    if (smj_is_gguf(path)) {
        rc = info_gguf(c.name, ctx, path);
        smj_ctx_free(ctx);
        return rc;
    }
    smj_model_config cfg;
    int is_state = 0;
    smj_status s = smj_checkpoint_read_config(ctx, path, &cfg, &is_state);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot read --checkpoint");
        goto done;
    }
    if (T == 0) T = cfg.max_seq_len;
    struct stat st;
    char b1[32], b2[32];
    int64_t params = smj_config_num_params(&cfg);
    printf("file:            %s (%s, %s)\n", path, is_state ? "training state" : "model checkpoint",
           cli_fmt_bytes(b1, sizeof b1, stat(path, &st) == 0 ? (double)st.st_size : 0));
    printf("parameters:      %s (%s)\n", cli_fmt_count(b1, sizeof b1, params),
           cli_fmt_params(b2, sizeof b2, params));
    print_config(&cfg);
    printf("memory:          %s weights (fp32)\n", cli_fmt_bytes(b1, sizeof b1, (double)params * 4));
    char what[64];
    snprintf(what, sizeof what, "training:        B=%d T=%d ", B, T);
    cli_print_train_memory(stdout, what, &cfg, B, T, &mm, ctx, cc.bf16_matmul);
    fflush(stdout);

    s = smj_model_load(ctx, path, &m);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot load the weights");
        goto done;
    }
    int n = smj_model_num_tensors(m);
    printf("tensors (%d):\n", n);
    for (int i = 0; i < n; i++) {
        smj_tensor_view v;
        if (smj_model_tensor(m, i, &v) != SMJ_OK) continue;
        char shape[96] = "";
        size_t o = 0;
        for (int d = 0; d < v.ndim && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? ", " : "",
                                  (long long)v.shape[d]);
        printf("  %-48s [%s]\n", v.name, shape);
    }
done:
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}

int cmd_sizes(int argc, char **argv) {
    int vocab = 8192, B = 8, T = 256;
    char on[96];
    cli_mem_flags mm = {0};
    cli_flag flags[] = {
        FLAG_INT("vocab-size", &vocab, 259, 1 << 22, "vocabulary to size the embeddings for (default 8192)"),
        FLAG_INT("batch-size", &B, 1, 65536, "batch for the training-memory column (default 8)"),
        FLAG_INT("seq-len", &T, 1, 1 << 20, "sequence length for the memory column (default 256)"),
        CLI_MEM_FLAGS(mm),
    };
    cli_command c = {"sizes", "sizes [--vocab-size N] [--batch-size B] [--seq-len T]",
                     "Lists the model presets (--size of `smedjan train`) with their shapes,\n"
                     "parameter counts and estimated training memory.",
                     NULL, flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if ((rc = cli_check_mem_flags(c.name, &mm))) return rc;
    smj_ctx *ctx = smj_ctx_create(NULL);
    if (!ctx) return cli_error(c.name, "out of memory");
    smj_train_options to = cli_train_options(&mm, NULL, NULL);
    printf("%-8s %6s %6s %6s %8s %8s %8s %10s %12s\n", "preset", "dim", "layers", "heads",
           "kv-heads", "ffn", "context", "params", "train mem");
    for (int i = 0; smj_config_preset_name(i); i++) {
        const char *name = smj_config_preset_name(i);
        smj_model_config cfg;
        smj_status s = smj_config_preset(ctx, name, vocab, &cfg);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, name);
            break;
        }
        char p[32], mem[32];
        printf("%-8s %6d %6d %6d %8d %8d %8d %10s %12s\n", name, cfg.dim, cfg.n_layers,
               cfg.n_heads, cfg.n_kv_heads, cfg.ffn_hidden, cfg.max_seq_len,
               cli_fmt_params(p, sizeof p, smj_config_num_params(&cfg)),
               cli_fmt_bytes(mem, sizeof mem, (double)smj_config_train_memory_ex(&cfg, B, T, &to, NULL)));
    }
    if (rc == 0)
        printf("\nvocab %d; training memory at batch %d x seq %d (params, grads, AdamW moments,\n"
               "activations, scratch)%s.\nUse --size custom --dim --layers --heads for other shapes.\n",
               vocab, B, T, cli_train_options_str(&to, on, sizeof on));
    smj_ctx_free(ctx);
    return rc;
}
