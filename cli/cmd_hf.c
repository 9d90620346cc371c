/* cmd_hf.c — `import-hf` and `export-hf` (docs/HF.md).
 *
 * import-hf: smj_import_hf on --model-dir, then smj_model_save to --output;
 *   with --tokenizer-output also converts the directory's tokenizer.json
 *   (smj_tokenizer_import_hf; only tokenizers in smedjan's own id layout,
 *   i.e. ones export-hf wrote). Adjustments the import made (a capped
 *   context, a sliding window) are printed as notes.
 *
 * export-hf: loads --checkpoint (and --tokenizer) and writes a directory
 *   transformers loads with AutoModelForCausalLM / AutoTokenizer:
 *   config.json, generation_config.json, model.safetensors (sharded above
 *   --shard-size), tokenizer.json + tokenizer_config.json. A non-empty
 *   --output-dir is refused unless --force.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "cmd_hf.h"

int cmd_import_hf(int argc, char **argv) {
    const char *dir = NULL, *output = NULL, *tok_out = NULL;
    int max_seq = 0;
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("model-dir", &dir, "DIR", "HF model directory with config.json and *.safetensors (required)"),
        FLAG_STR("output", &output, "FILE", "model checkpoint to write (required)"),
        FLAG_STR("tokenizer-output", &tok_out, "FILE", "also convert DIR/tokenizer.json to this smedjan tokenizer"),
        FLAG_INT("max-seq", &max_seq, 1, 1 << 20,
                 "context length (default: max_position_embeddings, capped at 131072 and at a sliding window)"),
        CLI_COMPUTE_FLAGS(cc),
    };
    cli_command c = {"import-hf", "import-hf --model-dir DIR --output model.ckpt [--tokenizer-output tok.bin]",
                     "Converts a HuggingFace LlamaForCausalLM, MistralForCausalLM or Qwen3ForCausalLM\n"
                     "directory (config.json + model.safetensors or shards; F32, BF16 or F16) into a\n"
                     "smedjan model checkpoint.",
                     "Biases, scaled RoPE variants and other architectures are refused with the key or\n"
                     "architecture named. The tokenizer conversion supports tokenizer.json files in\n"
                     "smedjan's id layout (those written by export-hf); see docs/HF.md.",
                     flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!dir) return cli_usage(c.name, "--model-dir is required");
    if (!output) return cli_usage(c.name, "--output is required");
    smj_ctx *ctx = NULL;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) return rc;
    smj_model *m = NULL;
    smj_tokenizer *tok = NULL;
    smj_hf_import_options o;
    memset(&o, 0, sizeof o);
    o.max_seq_len = max_seq;
    smj_status s = smj_import_hf(ctx, dir, &o, &m);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot import --model-dir");
        goto done;
    }
    if (tok_out) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        s = smj_tokenizer_import_hf(ctx, path, &tok);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot convert the tokenizer");
            goto done;
        }
        if (smj_tokenizer_vocab_size(tok) > smj_model_get_config(m)->vocab_size) {
            rc = cli_error(c.name, "the tokenizer has %d ids but the model's vocabulary is %d",
                           smj_tokenizer_vocab_size(tok), smj_model_get_config(m)->vocab_size);
            goto done;
        }
    }
    s = smj_model_save(m, output);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot write --output");
        goto done;
    }
    if (tok) {
        s = smj_tokenizer_save(ctx, tok, tok_out);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot write --tokenizer-output");
            goto done;
        }
    }
    for (char *line = o.notes; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        fprintf(stderr, "smedjan %s: note: %s\n", c.name, line);
        if (!nl) break;
        line = nl + 1;
    }
    char b1[32], b2[32];
    int64_t np = smj_model_num_params(m);
    printf("imported %s: %d tensors, %s parameters (%s) -> %s%s%s\n", dir, smj_model_num_tensors(m),
           cli_fmt_count(b1, sizeof b1, np), cli_fmt_params(b2, sizeof b2, np), output, tok ? " and " : "",
           tok ? tok_out : "");
    cli_print_config(stdout, smj_model_get_config(m));
done:
    smj_tokenizer_free(tok);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}

int cmd_export_hf(int argc, char **argv) {
    const char *ckpt = NULL, *tok_path = NULL, *out_dir = NULL, *dtype = "f32";
    int force = 0;
    int64_t shard = 0;
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &ckpt, "FILE", "model checkpoint or training state (required)"),
        FLAG_STR("tokenizer", &tok_path, "FILE", "also write tokenizer.json for this tokenizer"),
        FLAG_STR("output-dir", &out_dir, "DIR", "directory to write (created; required)"),
        FLAG_STR("dtype", &dtype, "f32|bf16", "weight type in model.safetensors (default f32)"),
        FLAG_I64("shard-size", &shard, 1, 9e18, "split the weights into shards of at most N bytes (default 5 GB)"),
        FLAG_SET("force", &force, "write into a non-empty --output-dir"),
        CLI_COMPUTE_FLAGS(cc),
    };
    cli_command c = {"export-hf", "export-hf --checkpoint model.ckpt [--tokenizer tok.bin] --output-dir DIR",
                     "Writes a HuggingFace model directory (config.json, generation_config.json,\n"
                     "model.safetensors, and with --tokenizer tokenizer.json + tokenizer_config.json)\n"
                     "that transformers loads as LlamaForCausalLM (Qwen3ForCausalLM with QK-norm).",
                     NULL, flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!ckpt) return cli_usage(c.name, "--checkpoint is required");
    if (!out_dir) return cli_usage(c.name, "--output-dir is required");
    int bf16 = 0;
    if (strcmp(dtype, "bf16") == 0) bf16 = 1;
    else if (strcmp(dtype, "f32") != 0) return cli_usage(c.name, "--dtype: expected f32 or bf16, got '%s'", dtype);
    smj_ctx *ctx = NULL;
    if ((rc = cli_make_ctx(c.name, &cc, &ctx))) return rc;
    smj_model *m = NULL;
    smj_tokenizer *tok = NULL;
    smj_status s = smj_model_load(ctx, ckpt, &m);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot load --checkpoint");
        goto done;
    }
    if (tok_path) {
        s = smj_tokenizer_load(ctx, tok_path, &tok);
        if (s != SMJ_OK) {
            rc = cli_lib_error(c.name, ctx, s, "cannot load --tokenizer");
            goto done;
        }
    }
    smj_hf_export_options o = {.bf16 = bf16, .max_shard_bytes = shard, .overwrite = force};
    s = smj_export_hf(m, tok, out_dir, &o);
    if (s != SMJ_OK) {
        rc = cli_lib_error(c.name, ctx, s, "cannot export");
        if (s == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "not empty")) {
            fprintf(stderr, "smedjan %s: (use --force to write into it)\n", c.name);
            rc = 2;
        }
        goto done;
    }
    printf("exported %s%s%s -> %s/ (%s weights)\n", ckpt, tok ? " + " : "", tok ? tok_path : "", out_dir,
           bf16 ? "bf16" : "f32");
done:
    smj_tokenizer_free(tok);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}
