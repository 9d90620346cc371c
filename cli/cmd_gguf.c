/* cmd_gguf.c — writing GGUF files: `export-gguf` and `quantize`.
 *
 * Both load a model checkpoint (or the weights of a training state) and the
 * tokenizer it was trained with, and write one GGUF v3 file with
 * smj_export_gguf: a file llama.cpp (llama-cli, llama-server, Ollama,
 * LM Studio, node-llama-cpp, ...) runs as is, tokenizer included. GGUF is
 * also smedjan's quantized format: `quantize` is `export-gguf` restricted
 * to the quantized types (q8_0, q4_0). The output is written atomically
 * (temp file + rename), so a failure never leaves a partial file behind.
 * See docs/GGUF.md for what is written.
 */
#include <string.h>
#include "cli.h"
#include "cmd_gguf.h"

static int run_export(const char *name, int quantize_only, int argc, char **argv) {
    const char *ckpt = NULL, *tok_path = NULL, *out = NULL;
    const char *quant = quantize_only ? "q8_0" : "f16";
    cli_compute cc = CLI_COMPUTE_DEFAULTS;
    cli_flag flags[] = {
        FLAG_STR("checkpoint", &ckpt, "FILE", "model checkpoint or training state (required)"),
        FLAG_STR("tokenizer", &tok_path, "FILE", "the tokenizer the model was trained with (required)"),
        FLAG_STR("output", &out, "FILE", "GGUF file to write, e.g. model.gguf (required)"),
        FLAG_STR("quant", &quant, quantize_only ? "q8_0|q4_0" : "f32|f16|q8_0|q4_0",
                 quantize_only ? "weight type of the 2-D tensors (default q8_0)"
                               : "weight type of the 2-D tensors (default f16)"),
    };
    cli_command c = {
        name,
        quantize_only ? "quantize --checkpoint model.ckpt --tokenizer tok.bin --output model.gguf [--quant q8_0|q4_0]"
                      : "export-gguf --checkpoint model.ckpt --tokenizer tok.bin --output model.gguf [--quant f16]",
        quantize_only
            ? "Quantizes a model to GGUF (smedjan's quantized format, the one llama.cpp runs):\n"
              "q8_0 (8-bit) or q4_0 (4-bit) blocks of 32 weights, bit-identical to llama.cpp's\n"
              "own quantizer. Same as `smedjan export-gguf --quant q8_0|q4_0`."
            : "Exports a model and its tokenizer as one GGUF file that llama.cpp and tools\n"
              "built on it (llama-cli, llama-server, Ollama, LM Studio) run as is.",
        "Norm weights stay f32. With q8_0/q4_0, 2-D tensors whose rows are not a multiple\n"
        "of 32 values are stored f16 (reported). Models without QK-norm are written as\n"
        "architecture 'llama', with QK-norm as 'qwen3'; the tokenizer as GPT-2-style\n"
        "byte-level BPE; no BOS token is added (as in training). Details: docs/GGUF.md.\n"
        "example:\n"
        "  smedjan export-gguf --checkpoint checkpoints/model.ckpt --tokenizer tok.bin \\\n"
        "                      --output model.gguf --quant q8_0\n"
        "  llama-cli -m model.gguf -p 'Once upon a time' -n 64",
        flags, CLI_NFLAGS(flags)};
    int rc = cli_parse(&c, argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!ckpt) return cli_usage(name, "--checkpoint is required");
    if (!tok_path) return cli_usage(name, "--tokenizer is required");
    if (!out) return cli_usage(name, "--output is required");

    smj_ctx *ctx = NULL;
    smj_model *m = NULL;
    smj_tokenizer *tok = NULL;
    if ((rc = cli_make_ctx(name, &cc, &ctx))) return rc;
    smj_quant q;
    smj_status s = smj_quant_parse(ctx, quant, &q);
    if (s != SMJ_OK) {
        rc = cli_usage(name, "--quant: %s", smj_ctx_error(ctx));
        goto done;
    }
    if (quantize_only && q != SMJ_QUANT_Q8_0 && q != SMJ_QUANT_Q4_0) {
        rc = cli_usage(name, "--quant must be q8_0 or q4_0 (use export-gguf for f32/f16)");
        goto done;
    }
    if ((s = smj_model_load(ctx, ckpt, &m)) != SMJ_OK) {
        rc = cli_lib_error(name, ctx, s, "cannot load --checkpoint");
        goto done;
    }
    if ((s = smj_tokenizer_load(ctx, tok_path, &tok)) != SMJ_OK) {
        rc = cli_lib_error(name, ctx, s, "cannot load --tokenizer");
        goto done;
    }
    int mv = smj_model_get_config(m)->vocab_size, tv = smj_tokenizer_vocab_size(tok);
    if (mv != tv) {
        rc = cli_error(name, "'%s' has vocab %d but tokenizer '%s' has %d (mismatched files?)", ckpt,
                       mv, tok_path, tv);
        goto done;
    }
    smj_gguf_export_info info;
    double t0 = cli_now();
    if ((s = smj_export_gguf(m, tok, out, q, &info)) != SMJ_OK) {
        rc = cli_lib_error(name, ctx, s, "cannot write --output");
        goto done;
    }
    char b1[32], b2[32];
    printf("wrote %s: %s, arch %s, %s, %d tensors (", out, cli_fmt_bytes(b1, sizeof b1, (double)info.file_bytes),
           info.arch, smj_quant_name(q), info.n_tensors);
    const char *sep = "";
    if (info.n_q8_0) { printf("%s%d q8_0", sep, info.n_q8_0); sep = ", "; }
    if (info.n_q4_0) { printf("%s%d q4_0", sep, info.n_q4_0); sep = ", "; }
    if (info.n_f16) { printf("%s%d f16", sep, info.n_f16); sep = ", "; }
    if (info.n_f32) { printf("%s%d f32", sep, info.n_f32); }
    printf(") in %s\n", cli_fmt_duration(b2, sizeof b2, cli_now() - t0));
    if (info.n_f16_fallback)
        printf("note: %d tensor(s) stored as f16: their rows are not a multiple of 32 values\n",
               info.n_f16_fallback);
done:
    smj_tokenizer_free(tok);
    smj_model_free(m);
    smj_ctx_free(ctx);
    return rc;
}

int cmd_export_gguf(int argc, char **argv) { return run_export("export-gguf", 0, argc, argv); }
int cmd_quantize(int argc, char **argv) { return run_export("quantize", 1, argc, argv); }
