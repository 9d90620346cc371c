/* test_hf.c — HuggingFace interop: the JSON parser, config.json mapping,
 * tokenizer.json export/import, import-hf/export-hf round trips, and (when
 * the fixtures exist) parity with transformers' logits.
 *
 *  - JSON: escapes, surrogate pairs, numbers (int64 exactness, ranges),
 *    strictness (trailing commas/garbage, leading zeros, control characters,
 *    bad UTF-8, duplicate names, BOM), depth limit, error positions, and the
 *    writer helpers (string escaping, shortest float text).
 *  - config.json: each supported architecture, the defaults, the caps (with
 *    notes), and every refused key/architecture named in the message.
 *  - export -> import is bit-identical (config and every tensor, Llama tied
 *    and Qwen3 untied/GQA/QK-norm, single file and sharded); BF16 export reads
 *    back as the rounded values; import -> export reproduces a safetensors
 *    file this test writes (F32 and F16 sources), with inv_freq skipped.
 *  - import errors: missing, misshapen, unexpected and int tensors.
 *  - tokenizer.json: structure of the export, import reproduces the tokenizer.
 *  - biases (Qwen2, Llama/Qwen3 attention_bias) and RoPE scaling (linear,
 *    dynamic, llama3, yarn): the config.json mapping both ways, refusals,
 *    export -> import bit-identical with the right architecture and keys.
 *  - GPT-2: config.json keys and refusals, export -> import bit-identical
 *    (tied/untied), and import of the prefix-less layout with the old
 *    causal-mask buffers.
 *  - transformers parity: tests/fixtures/hf/<name>/ (config.json,
 *    model.safetensors, logits.bin from tools/make_hf_fixtures.py) when
 *    present: logits rel L2 <= 1e-5, max |diff| <= 5e-4, same argmax; RoPE
 *    inverse frequencies and attention scaling as transformers' module held
 *    them; the 32-token greedy continuation of model.generate reproduced by
 *    a KV-cache session token for token.
 *  - the CLI commands, when the binary has them.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../src/core/core.h"
#include "../src/hf/hf.h"
#include "../src/hf/json.h"
#include "../src/hf/safetensors.h"
#include "../src/model/model.h"
#include "../src/tokenizer/tokenizer.h"
#include "util/check.h"
#include "util/fixture.h"

/* ------------------------------------------------------------------- JSON */

static const smj_json *parse(smj_ctx *ctx, const char *text, int depth, smj_json_doc **doc) {
    const smj_json *root = NULL;
    smj_status s = smj_json_parse(ctx, text, strlen(text), "t.json", depth, doc, &root);
    return s == SMJ_OK ? root : NULL;
}

static void json_ok(smj_ctx *ctx, const char *text) {
    smj_json_doc *doc = NULL;
    CHECK(parse(ctx, text, 0, &doc) != NULL, "should parse: %s (%s)", text, smj_ctx_error(ctx));
    smj_json_free(doc);
}

static void json_bad(smj_ctx *ctx, const char *text, size_t n, const char *needle) {
    smj_json_doc *doc = NULL;
    const smj_json *root;
    smj_status s = smj_json_parse(ctx, text, n, "t.json", 0, &doc, &root);
    CHECK(s == SMJ_ERR_FORMAT && !doc, "should fail: %.*s", (int)n, text);
    CHECK(strstr(smj_ctx_error(ctx), "t.json") != NULL, "message names the source: %s", smj_ctx_error(ctx));
    if (needle) CHECK(strstr(smj_ctx_error(ctx), needle) != NULL, "'%.*s': message lacks '%s': %s", (int)n, text, needle,
                      smj_ctx_error(ctx));
    smj_json_free(doc);
}
#define BAD(ctx, lit, needle) json_bad(ctx, lit, sizeof(lit) - 1, needle)

static void test_json(smj_ctx *ctx) {
    smj_json_doc *doc;
    const smj_json *r = parse(ctx, "{\"s\": \"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t\", \"e\": \"\\u00e9\\u20AC\", "
                                   "\"p\": \"\\uD83D\\ude00\", \"z\": \"a\\u0000b\", \"u\": \"h\xc3\xa9\"}", 0, &doc);
    CHECK(r != NULL, "escapes: %s", smj_ctx_error(ctx));
    if (r) {
        const smj_json *s = smj_json_get(r, "s");
        CHECK(s && s->len == 16 && memcmp(s->str, "q\"b\\s/b\bf\fn\nr\rt\t", 16) == 0, "simple escapes");
        s = smj_json_get(r, "e");
        CHECK(s && s->len == 5 && memcmp(s->str, "\xc3\xa9\xe2\x82\xac", 5) == 0, "\\u to UTF-8");
        s = smj_json_get(r, "p");
        CHECK(s && s->len == 4 && memcmp(s->str, "\xf0\x9f\x98\x80", 4) == 0, "surrogate pair to U+1F600");
        s = smj_json_get(r, "z");
        CHECK(s && s->len == 3 && s->str[1] == 0 && s->str[2] == 'b', "\\u0000 kept with its length");
        s = smj_json_get(r, "u");
        CHECK(s && s->len == 3, "raw UTF-8 kept");
        CHECK(smj_json_get(r, "missing") == NULL, "absent key");
    }
    smj_json_free(doc);

    r = parse(ctx, " [0, -0, 123456789012345678, 9223372036854775807, -9223372036854775808, 9223372036854775808, "
                   "1e3, 1.5, 2.5e-3, -1E+2, 1e-400, 0.1] ", 0, &doc);
    CHECK(r && r->type == SMJ_JSON_ARRAY && r->len == 12, "number array: %s", smj_ctx_error(ctx));
    if (r && r->len == 12) {
        const smj_json *k = r->kids;
        CHECK(k[0].is_int && k[0].i64 == 0 && k[1].is_int && k[1].i64 == 0, "zeros");
        CHECK(k[2].is_int && k[2].i64 == 123456789012345678LL, "exact int64 beyond 2^53");
        CHECK(k[3].is_int && k[3].i64 == INT64_MAX, "INT64_MAX");
        CHECK(k[4].is_int && k[4].i64 == INT64_MIN, "INT64_MIN");
        CHECK(!k[5].is_int && k[5].num == 9223372036854775808.0, "2^63 is not an int64");
        CHECK(k[6].is_int && k[6].i64 == 1000, "1e3 is integral");
        CHECK(!k[7].is_int && k[7].num == 1.5, "1.5");
        CHECK(k[8].num == 2.5e-3 && k[9].num == -100.0 && k[9].is_int, "exponents");
        CHECK(k[10].num == 0.0, "underflow to 0");
        CHECK(k[11].num == 0.1, "0.1 correctly rounded");
    }
    smj_json_free(doc);

    json_ok(ctx, "true");
    json_ok(ctx, "null");
    json_ok(ctx, " \t\r\n\"x\" \n");
    json_ok(ctx, "{\"a\":[],\"b\":{},\"c\":[{}],\"\":1}");
    BAD(ctx, "", "end of input");
    BAD(ctx, "   ", "end of input");
    BAD(ctx, "{} x", "after the JSON value");
    BAD(ctx, "1 2", "after the JSON value");
    BAD(ctx, "[1,]", "expected a value");
    BAD(ctx, "{\"a\":1,}", "member name");
    BAD(ctx, "{\"a\" 1}", "':'");
    BAD(ctx, "[1 2]", "',' or ']'");
    BAD(ctx, "01", "leading zero");
    BAD(ctx, "-", "digit");
    BAD(ctx, "1.", "digit after '.'");
    BAD(ctx, ".5", "expected a value");
    BAD(ctx, "1e", "exponent");
    BAD(ctx, "+1", "expected a value");
    BAD(ctx, "NaN", "expected a value");
    BAD(ctx, "Infinity", "expected a value");
    BAD(ctx, "1e400", "out of range");
    BAD(ctx, "tru", "true");
    BAD(ctx, "'a'", "expected a value");
    BAD(ctx, "\"a\tb\"", "control character");
    BAD(ctx, "\"\xff\"", "UTF-8");
    BAD(ctx, "\"\xc0\x80\"", "UTF-8");
    BAD(ctx, "\"\xed\xa0\x80\"", "UTF-8"); /* an encoded surrogate */
    BAD(ctx, "\"\\uD800\"", "surrogate");
    BAD(ctx, "\"\\uD800\\u0041\"", "surrogate");
    BAD(ctx, "\"\\uDC00\"", "surrogate");
    BAD(ctx, "\"\\u12G4\"", "hex");
    BAD(ctx, "\"\\x\"", "escape");
    BAD(ctx, "\"abc", "unterminated");
    BAD(ctx, "\"abc\\", "unterminated");
    BAD(ctx, "{\"a\":1,\"a\":2}", "duplicate member name \"a\"");
    BAD(ctx, "\xef\xbb\xbf{}", "byte order mark");
    BAD(ctx, "[1]\0", "after the JSON value");
    {   /* duplicate detection on a large object (sorted path) */
        smj_jbuf b = {0};
        smj_jbuf_puts(&b, "{");
        for (int i = 0; i < 100; i++) smj_jbuf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i % 99, i);
        smj_jbuf_puts(&b, "}");
        json_bad(ctx, b.p, b.len, "duplicate member name \"k0\"");
        smj_jbuf_free(&b);
    }
    /* error position */
    json_bad(ctx, "{\n  \"a\": tru\n}", 14, "line 2, column 8");
    /* depth limit */
    r = parse(ctx, "[[[[1]]]]", 4, &doc);
    CHECK(r != NULL, "depth 4 allowed at limit 4");
    smj_json_free(doc);
    r = parse(ctx, "[[[[[1]]]]]", 4, &doc);
    CHECK(r == NULL && strstr(smj_ctx_error(ctx), "nesting deeper than 4"), "depth 5 refused: %s", smj_ctx_error(ctx));
    {   /* the default limit holds against very deep input without recursion trouble */
        enum { D = 100000 };
        char *deep = malloc(2 * D + 1);
        memset(deep, '[', D);
        memset(deep + D, ']', D);
        json_bad(ctx, deep, 2 * D, "nesting");
        free(deep);
    }
    /* writer: escaping round trip, shortest floats */
    char raw[64];
    for (int i = 0; i < 32; i++) raw[i] = (char)i;
    memcpy(raw + 32, "\"\\/ abc \xc3\xa9", 10);
    smj_jbuf b = {0};
    smj_jbuf_str(&b, raw, 42);
    r = parse(ctx, b.p, 0, &doc);
    CHECK(r && r->type == SMJ_JSON_STRING && r->len == 42 && memcmp(r->str, raw, 42) == 0, "string escape round trip");
    smj_json_free(doc);
    smj_jbuf_free(&b);
    const float fl[] = {1e-5f, 1e-6f, 10000.0f, 1e6f, 0.1f, 500000.0f, 3.14159265f, 1.0f / 3.0f, 1e-30f};
    const char *want[] = {"1e-05", "1e-06", "10000.0", "1000000.0", "0.1", "500000.0", NULL, NULL, "1e-30"};
    for (int i = 0; i < 9; i++) {
        smj_jbuf_float(&b, fl[i]);
        CHECK(b.p && strtof(b.p, NULL) == fl[i], "float %g reads back (%s)", (double)fl[i], b.p);
        if (want[i]) CHECK(b.p && strcmp(b.p, want[i]) == 0, "float %g written as %s, want %s", (double)fl[i], b.p, want[i]);
        smj_jbuf_free(&b);
    }
    CHECK(smj_utf8_valid("h\xc3\xa9", 3) && !smj_utf8_valid("\xc3", 1) && !smj_utf8_valid("\xf5\x80\x80\x80", 4),
          "utf8_valid");
}

/* ---------------------------------------------------------------- config */

static smj_status cfg_from(smj_ctx *ctx, const char *json, int max_seq, smj_model_config *c, char *notes, size_t nn) {
    return smj_hf_config_parse(ctx, json, strlen(json), "config.json", max_seq, c, NULL, notes, nn);
}

#define LLAMA_BASE "\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2, " \
                   "\"num_attention_heads\": 4"

static void cfg_refused(smj_ctx *ctx, const char *json, smj_status want, const char *needle) {
    smj_model_config c;
    char notes[256];
    smj_status s = cfg_from(ctx, json, 0, &c, notes, sizeof notes);
    CHECK(s == want, "%s: got %s (%s), want %s", json, smj_status_str(s), smj_ctx_error(ctx), smj_status_str(want));
    CHECK(strstr(smj_ctx_error(ctx), needle) && strstr(smj_ctx_error(ctx), "config.json"),
          "message lacks '%s': %s", needle, smj_ctx_error(ctx));
}

static void test_config(smj_ctx *ctx) {
    smj_model_config c;
    char notes[512];
    const char *full = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", " LLAMA_BASE ", "
                       "\"num_key_value_heads\": 2, \"head_dim\": 32, \"max_position_embeddings\": 512, "
                       "\"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true, "
                       "\"hidden_act\": \"silu\", \"attention_bias\": false, \"mlp_bias\": false, "
                       "\"rope_scaling\": null, \"torch_dtype\": \"bfloat16\", \"bos_token_id\": 1, \"pretraining_tp\": 1}";
    CHECK_OK(ctx, cfg_from(ctx, full, 0, &c, notes, sizeof notes));
    CHECK(c.vocab_size == 100 && c.dim == 64 && c.ffn_hidden == 160 && c.n_layers == 2 && c.n_heads == 4 &&
              c.n_kv_heads == 2 && c.head_dim == 32 && c.max_seq_len == 512 && c.rope_theta == 500000.0f &&
              c.norm_eps == 1e-5f && c.tied_embeddings == 1 && c.qk_norm == 0, "llama mapping");
    CHECK(notes[0] == 0, "no notes: %s", notes);
    /* defaults: kv heads = heads, head_dim = hidden/heads, theta 1e4, eps 1e-6, untied, 2048 */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE "}", 0, &c, notes, sizeof notes));
    CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.rope_theta == 10000.0f && c.norm_eps == 1e-6f &&
              c.tied_embeddings == 0 && c.max_seq_len == 2048, "llama defaults");
    /* model_type alone names the architecture; null values mean the default */
    CHECK_OK(ctx, cfg_from(ctx, "{\"model_type\": \"qwen3\", " LLAMA_BASE ", \"head_dim\": null, "
                                "\"num_key_value_heads\": null, \"tie_word_embeddings\": true}", 0, &c, notes, sizeof notes));
    CHECK(c.qk_norm == 1 && c.head_dim == 16 && c.tied_embeddings == 1 && c.max_seq_len == 32768, "qwen3 mapping");
    /* rope_parameters (newer transformers) with the default type */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"Qwen3ForCausalLM\"], " LLAMA_BASE ", \"rope_parameters\": "
                                "{\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_theta == 1e6f, "rope_parameters theta");
    /* Mistral: an active sliding window caps the context, with a note */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", "
                                "\"max_position_embeddings\": 32768, \"sliding_window\": 4096}", 0, &c, notes, sizeof notes));
    CHECK(c.max_seq_len == 4096 && strstr(notes, "sliding_window"), "mistral window: %d, notes: %s", c.max_seq_len, notes);
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", "
                                "\"max_position_embeddings\": 32768, \"sliding_window\": null}", 0, &c, notes, sizeof notes));
    CHECK(c.max_seq_len == 32768 && notes[0] == 0, "mistral without window");
    /* Qwen3's window only with use_sliding_window */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"Qwen3ForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "40960, \"use_sliding_window\": false, \"sliding_window\": 4096}", 0, &c, notes, sizeof notes));
    CHECK(c.max_seq_len == 40960, "qwen3 window off");
    /* a huge context is capped, with a note; max_seq_len overrides */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", "
                                "\"max_position_embeddings\": 1048576}", 0, &c, notes, sizeof notes));
    CHECK(c.max_seq_len == SMJ_HF_MAX_SEQ_LEN && strstr(notes, "capped"), "cap: %d %s", c.max_seq_len, notes);
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", "
                                "\"max_position_embeddings\": 1048576}", 256, &c, notes, sizeof notes));
    CHECK(c.max_seq_len == 256, "override");

    /* biases: Llama attention_bias = q/k/v/o; Qwen2 always q/k/v, never o (its attention_bias key is ignored) */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"attention_bias\": true}", 0,
                           &c, notes, sizeof notes));
    CHECK(c.attn_bias == 1 && c.attn_out_bias == 1 && c.rope_type == 0, "llama attention_bias");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_BASE ", \"attention_bias\": false}", 0,
                           &c, notes, sizeof notes));
    CHECK(c.attn_bias == 1 && c.attn_out_bias == 0 && c.qk_norm == 0 && c.max_seq_len == 32768, "qwen2 biases");
    CHECK_OK(ctx, cfg_from(ctx, "{\"model_type\": \"qwen3\", " LLAMA_BASE ", \"attention_bias\": true}", 0, &c, notes,
                           sizeof notes));
    CHECK(c.attn_bias == 1 && c.attn_out_bias == 1 && c.qk_norm == 1, "qwen3 attention_bias");
    /* RoPE scaling, both keys */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_theta\": 5e5, "
                                "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_type == SMJ_ROPE_LINEAR && c.rope_factor == 2.0f && c.rope_theta == 5e5f, "linear (rope_scaling, type)");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "4096, \"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 4.0, \"rope_theta\": 1e4}}",
                           0, &c, notes, sizeof notes));
    CHECK(c.rope_type == SMJ_ROPE_DYNAMIC && c.rope_factor == 4.0f && c.rope_orig_max_pos == 4096 &&
              c.max_seq_len == 4096, "dynamic");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "131072, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                                "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}, \"rope_theta\": 500000.0}",
                           0, &c, notes, sizeof notes));
    CHECK(c.rope_type == SMJ_ROPE_LLAMA3 && c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f &&
              c.rope_high_freq_factor == 4.0f && c.rope_orig_max_pos == 8192 && c.max_seq_len == 131072, "llama3");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"Qwen3ForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "131072, \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0, \"rope_theta\": 1e6, "
                                "\"original_max_position_embeddings\": 32768}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_type == SMJ_ROPE_YARN && c.rope_factor == 4.0f && c.rope_orig_max_pos == 32768 &&
              c.rope_beta_fast == 32.0f && c.rope_beta_slow == 1.0f && c.rope_yarn_no_truncate == 0 &&
              fabsf(c.rope_attn_factor - (float)(0.1 * log(4.0) + 1)) < 1e-7f && c.rope_theta == 1e6f, "yarn defaults");
    /* yarn: no original -> max_position_embeddings; no factor -> max / original; mscale ratio; truncate */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "2048, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0, \"mscale\": 0.707, "
                                "\"mscale_all_dim\": 0.707, \"beta_fast\": 16, \"truncate\": false}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_orig_max_pos == 2048 && c.rope_attn_factor == 1.0f && c.rope_beta_fast == 16.0f &&
              c.rope_yarn_no_truncate == 1, "yarn options");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"max_position_embeddings\": "
                                "4096, \"rope_scaling\": {\"rope_type\": \"yarn\", \"original_max_position_embeddings\": 1024, "
                                "\"attention_factor\": 1.5}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_factor == 4.0f && c.rope_attn_factor == 1.5f, "yarn implicit factor");
    /* rope_parameters (transformers 5) wins over rope_scaling */
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": "
                                "\"linear\", \"factor\": 2.0}, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": "
                                "20000.0}}", 0, &c, notes, sizeof notes));
    CHECK(c.rope_type == 0 && c.rope_theta == 20000.0f, "rope_parameters first");

    const smj_status U = SMJ_ERR_UNSUPPORTED, F = SMJ_ERR_FORMAT;
    cfg_refused(ctx, "{\"architectures\": [\"MistralForCausalLM\"], " LLAMA_BASE ", \"attention_bias\": true}", U,
                "attention_bias");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"mlp_bias\": true}", U, "mlp_bias");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"rope_type\": "
                     "\"llama3\", \"factor\": 8.0}}", F, "low_freq_factor");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"type\": "
                     "\"longrope\", \"factor\": 2.0}}", U, "rope type \"longrope\"");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": "
                     "\"ntk-by-parts\", \"factor\": 2.0}}", U, "rope_parameters");
    cfg_refused(ctx, "{\"architectures\": [\"Qwen3ForCausalLM\"], " LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": "
                     "\"yarn\"}}", F, "factor");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_scaling\": {\"rope_type\": "
                     "\"linear\", \"factor\": -2.0}}", F, "factor");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"rope_parameters\": {\"rope_type\": "
                     "\"default\", \"partial_rotary_factor\": 0.5}}", U, "partial_rotary_factor");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"hidden_act\": \"gelu\"}", U,
                "hidden_act");
    cfg_refused(ctx, "{\"architectures\": [\"Phi3ForCausalLM\"], " LLAMA_BASE "}", U,
                "architecture Phi3ForCausalLM is not supported yet");
    cfg_refused(ctx, "{\"architectures\": [\"GPTNeoXForCausalLM\"], \"hidden_size\": 768}", U,
                "architecture GPTNeoXForCausalLM is not supported yet");
    cfg_refused(ctx, "{\"model_type\": \"gpt_neox\"}", U, "architecture gpt_neox is not supported yet");
    /* GPT-2: HF's defaults (the 124M model), and the keys that change its math */
    CHECK_OK(ctx, cfg_from(ctx, "{\"model_type\": \"gpt2\"}", 0, &c, notes, sizeof notes));
    CHECK(c.arch == SMJ_ARCH_GPT2 && c.vocab_size == 50257 && c.dim == 768 && c.n_layers == 12 && c.n_heads == 12 &&
              c.n_kv_heads == 12 && c.head_dim == 64 && c.ffn_hidden == 3072 && c.max_seq_len == 1024 &&
              c.norm_eps == 1e-5f && c.tied_embeddings == 1, "gpt2 defaults");
    CHECK_OK(ctx, cfg_from(ctx, "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 64, \"n_layer\": 3, \"n_head\": 4, "
                                "\"n_positions\": 128, \"n_inner\": 100, \"vocab_size\": 99, \"layer_norm_epsilon\": 1e-6, "
                                "\"activation_function\": \"gelu_pytorch_tanh\", \"tie_word_embeddings\": false}", 0, &c,
                           notes, sizeof notes));
    CHECK(c.arch == SMJ_ARCH_GPT2 && c.dim == 64 && c.n_layers == 3 && c.head_dim == 16 && c.ffn_hidden == 100 &&
              c.max_seq_len == 128 && c.norm_eps == 1e-6f && c.tied_embeddings == 0 && c.vocab_size == 99, "gpt2 keys");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"activation_function\": \"gelu\"}", U, "activation_function");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"scale_attn_by_inverse_layer_idx\": true}", U,
                "scale_attn_by_inverse_layer_idx");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"scale_attn_weights\": false}", U, "scale_attn_weights");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"reorder_and_upcast_attn\": true}", U, "reorder_and_upcast_attn");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"add_cross_attention\": true}", U, "add_cross_attention");
    cfg_refused(ctx, "{\"model_type\": \"gpt2\", \"n_embd\": 100, \"n_head\": 12}", F, "n_head");
    cfg_refused(ctx, "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"llama\"}", F, "model_type");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 100}", F, "\"hidden_size\" is missing");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"num_key_value_heads\": \"2\"}", F,
                "num_key_value_heads");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"tie_word_embeddings\": 1}", F,
                "tie_word_embeddings");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ", \"num_key_value_heads\": 3}", U,
                "kv heads");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"qwen3\", " LLAMA_BASE "}", F,
                "model_type");
    cfg_refused(ctx, "[1]", F, "not a JSON object");
    cfg_refused(ctx, "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_BASE ",}", F, "invalid JSON");

    /* export side: valid JSON that maps back to the same config */
    smj_model_config q = {.vocab_size = 300, .dim = 48, .n_layers = 3, .n_heads = 6, .n_kv_heads = 2, .head_dim = 16,
                          .ffn_hidden = 96, .max_seq_len = 77, .rope_theta = 1e6f, .norm_eps = 1e-6f,
                          .tied_embeddings = 0, .qk_norm = 1};
    for (int k = 0; k < 2; k++) {
        if (k) { q.qk_norm = 0; q.tied_embeddings = 1; q.rope_theta = 12345.678f; q.norm_eps = 3.3e-5f; }
        smj_jbuf b = {0};
        CHECK_OK(ctx, smj_hf_config_json(ctx, &q, NULL, k, &b));
        smj_model_config back;
        const char *arch = NULL;
        CHECK_OK(ctx, smj_hf_config_parse(ctx, b.p, b.len, "exported", 0, &back, &arch, notes, sizeof notes));
        CHECK(memcmp(&back, &q, sizeof q) == 0, "config.json round trip (%s)", arch ? arch : "?");
        CHECK(arch && strcmp(arch, k ? "LlamaForCausalLM" : "Qwen3ForCausalLM") == 0, "architecture");
        CHECK(strstr(b.p, k ? "\"bfloat16\"" : "\"float32\"") != NULL, "torch_dtype");
        smj_jbuf_free(&b);
    }
    /* biases and every rope type: the architecture and keys that transformers reads back */
    static const struct { int qk, bias, obias, rope; const char *arch, *needle; } V[] = {
        {0, 1, 0, 0, "Qwen2ForCausalLM", "\"model_type\": \"qwen2\""},
        {0, 1, 1, 1, "LlamaForCausalLM", "\"attention_bias\": true"},
        {1, 1, 1, 4, "Qwen3ForCausalLM", "\"rope_type\": \"yarn\""},
        {0, 0, 0, 2, "LlamaForCausalLM", "\"rope_type\": \"dynamic\""},
        {0, 0, 0, 3, "LlamaForCausalLM", "\"low_freq_factor\": 1"},
        {1, 0, 0, 1, "Qwen3ForCausalLM", "\"rope_parameters\": {\"rope_type\": \"linear\""},
    };
    for (size_t k = 0; k < sizeof V / sizeof V[0]; k++) {
        smj_model_config r = q;
        r.qk_norm = V[k].qk; r.attn_bias = V[k].bias; r.attn_out_bias = V[k].obias; r.rope_type = V[k].rope;
        if (r.rope_type) r.rope_factor = 2.5f;
        if (r.rope_type == SMJ_ROPE_DYNAMIC) r.rope_orig_max_pos = r.max_seq_len; /* exported as max_position_embeddings */
        if (r.rope_type == SMJ_ROPE_LLAMA3) { r.rope_low_freq_factor = 1; r.rope_high_freq_factor = 4; r.rope_orig_max_pos = 16; }
        if (r.rope_type == SMJ_ROPE_YARN) {
            r.rope_orig_max_pos = 20; r.rope_beta_fast = 24; r.rope_beta_slow = 1.5f; r.rope_attn_factor = 1.0625f;
            r.rope_yarn_no_truncate = 1;
        }
        smj_jbuf b = {0};
        CHECK_OK(ctx, smj_hf_config_json(ctx, &r, NULL, 0, &b));
        smj_model_config back;
        const char *arch = NULL;
        CHECK_OK(ctx, smj_hf_config_parse(ctx, b.p, b.len, "exported", 0, &back, &arch, notes, sizeof notes));
        CHECK(memcmp(&back, &r, sizeof r) == 0, "config.json round trip %zu (%s)", k, arch ? arch : "?");
        CHECK(arch && strcmp(arch, V[k].arch) == 0, "variant %zu: architecture %s", k, arch ? arch : "?");
        CHECK(b.p && strstr(b.p, V[k].needle), "variant %zu: config.json lacks %s", k, V[k].needle);
        smj_jbuf_free(&b);
    }
    /* combinations no HF architecture has */
    smj_model_config r = q;
    r.qk_norm = 1; r.attn_bias = 1; r.attn_out_bias = 0;
    smj_jbuf b = {0};
    CHECK(smj_hf_config_json(ctx, &r, NULL, 0, &b) == SMJ_ERR_UNSUPPORTED, "qk-norm with q/k/v-only biases refused");
    r.qk_norm = 0; r.attn_bias = 0; r.attn_out_bias = 1;
    CHECK(smj_hf_config_json(ctx, &r, NULL, 0, &b) == SMJ_ERR_UNSUPPORTED, "o_proj-only bias refused");
    smj_jbuf_free(&b);
}

/* ---------------------------------------------------------------- models */

static smj_model *make_model(smj_ctx *ctx, int qwen, uint64_t seed) {
    smj_model_config c = {.vocab_size = 97, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .head_dim = 8,
                          .ffn_hidden = 64, .max_seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                          .tied_embeddings = 1, .qk_norm = 0};
    if (qwen) {
        c.vocab_size = 300; c.dim = 48; c.n_heads = 6; c.n_kv_heads = 2; c.head_dim = 16; c.ffn_hidden = 96;
        c.rope_theta = 1e6f; c.norm_eps = 1e-6f; c.tied_embeddings = 0; c.qk_norm = 1;
    }
    smj_model *m = NULL;
    CHECK_OK(ctx, smj_model_create(ctx, &c, seed, &m));
    if (!m) return NULL;
    /* norm weights away from 1 so a misplaced one shows */
    for (int i = 0; i < smj_model_num_tensors(m); i++) {
        smj_tensor_view v;
        smj_model_tensor(m, i, &v);
        if (v.ndim == 1)
            for (int64_t j = 0; j < v.numel; j++) v.data[j] = 1.0f + 0.1f * sinf((float)(j + 7 * i));
    }
    return m;
}

/* Compares configs and every tensor bit for bit. round_bf16: b's tensors
 * must equal a's rounded to bf16. */
static void same_models(smj_model *a, smj_model *b, int round_bf16, const char *tag) {
    CHECK(memcmp(smj_model_get_config(a), smj_model_get_config(b), sizeof(smj_model_config)) == 0, "%s: configs differ", tag);
    int n = smj_model_num_tensors(a);
    CHECK(n == smj_model_num_tensors(b), "%s: tensor counts", tag);
    if (n != smj_model_num_tensors(b)) return;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        smj_tensor_view va, vb;
        smj_model_tensor(a, i, &va);
        smj_model_tensor(b, i, &vb);
        if (strcmp(va.name, vb.name) != 0 || va.numel != vb.numel) { bad++; continue; }
        for (int64_t j = 0; j < va.numel; j++) {
            float want = round_bf16 ? smj_bf16_to_f32(smj_f32_to_bf16(va.data[j])) : va.data[j];
            if (memcmp(&want, &vb.data[j], 4) != 0) { bad++; break; }
        }
    }
    CHECK(bad == 0, "%s: %d tensors differ", tag, bad);
}

static int is_empty_dir(const char *p) {
    DIR *d = opendir(p);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n == 0;
}

static void test_roundtrip(smj_ctx *ctx, smj_tokenizer *tok) {
    const char *tmp = test_tmpdir();
    char dir[1024];
    for (int qwen = 0; qwen < 2; qwen++)
        for (int mode = 0; mode < 3; mode++) { /* 0 single f32, 1 sharded f32, 2 bf16 */
            smj_model *m = make_model(ctx, qwen, 42 + (uint64_t)qwen);
            if (!m) return;
            snprintf(dir, sizeof dir, "%s/export_%s_%d/sub", tmp, qwen ? "qwen3" : "llama", mode);
            smj_hf_export_options o = {.bf16 = mode == 2, .max_shard_bytes = mode == 1 ? 20000 : 0};
            CHECK_OK(ctx, smj_export_hf(m, qwen ? tok : NULL, dir, &o));
            char p[1200];
            snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
            struct stat st;
            CHECK((stat(p, &st) == 0) == (mode == 1), "index file only when sharded (mode %d)", mode);
            snprintf(p, sizeof p, "%s/generation_config.json", dir);
            CHECK(stat(p, &st) == 0, "generation_config.json written");
            snprintf(p, sizeof p, "%s/tokenizer.json", dir);
            CHECK((stat(p, &st) == 0) == (qwen == 1), "tokenizer.json only with a tokenizer");
            smj_model *back = NULL;
            smj_hf_import_options io;
            memset(&io, 0, sizeof io);
            CHECK_OK(ctx, smj_import_hf(ctx, dir, &io, &back));
            if (back) {
                char tag[64];
                snprintf(tag, sizeof tag, "%s mode %d", qwen ? "qwen3" : "llama", mode);
                same_models(m, back, mode == 2, tag);
                CHECK(io.notes[0] == 0, "no notes: %s", io.notes);
                if (mode == 0) { /* same logits */
                    int32_t ids[10] = {1, 5, 9, 2, 7, 3, 3, 0, 11, 4};
                    float l1, l2;
                    CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 1, 10, &l1));
                    int V = smj_model_get_config(m)->vocab_size;
                    float *a = malloc(sizeof(float) * 10 * (size_t)V);
                    memcpy(a, smj_model_logits(m), sizeof(float) * 10 * (size_t)V);
                    CHECK_OK(ctx, smj_model_forward(back, ids, NULL, 1, 10, &l2));
                    CHECK(memcmp(a, smj_model_logits(back), sizeof(float) * 10 * (size_t)V) == 0, "%s: logits differ", tag);
                    free(a);
                }
            }
            /* a second export into the non-empty dir is refused, then allowed */
            if (mode == 0) {
                smj_status s = smj_export_hf(m, NULL, dir, NULL);
                CHECK(s == SMJ_ERR_INVALID && strstr(smj_ctx_error(ctx), "not empty"), "non-empty dir: %s",
                      smj_ctx_error(ctx));
                o.overwrite = 1;
                o.max_shard_bytes = 20000; /* switch to shards: the stale model.safetensors goes */
                CHECK_OK(ctx, smj_export_hf(m, NULL, dir, &o));
                snprintf(p, sizeof p, "%s/model.safetensors", dir);
                CHECK(stat(p, &st) != 0, "stale model.safetensors removed");
                smj_model_free(back);
                back = NULL;
                CHECK_OK(ctx, smj_import_hf(ctx, dir, NULL, &back));
                if (back) same_models(m, back, 0, "overwritten");
            }
            smj_model_free(back);
            smj_model_free(m);
        }
    /* export into a fresh, empty existing dir is fine */
    snprintf(dir, sizeof dir, "%s/empty_dir", tmp);
    mkdir(dir, 0777);
    CHECK(is_empty_dir(dir), "empty dir");
    smj_model *m = make_model(ctx, 0, 1);
    if (m) CHECK_OK(ctx, smj_export_hf(m, NULL, dir, NULL));
    smj_model_free(m);
}

/* Models with biases and scaled RoPE: export -> import is bit-identical
 * (config, tensors, logits) and config.json names what transformers needs. */
static void test_roundtrip_variants(smj_ctx *ctx) {
    const char *tmp = test_tmpdir();
    static const struct { int qk, bias, obias, rope; const char *needle; } V[] = {
        {0, 1, 0, SMJ_ROPE_DEFAULT, "\"Qwen2ForCausalLM\""},
        {0, 1, 1, SMJ_ROPE_LLAMA3, "\"attention_bias\": true"},
        {1, 1, 1, SMJ_ROPE_YARN, "\"attention_factor\": 1.2"},
        {0, 0, 0, SMJ_ROPE_LINEAR, "\"rope_type\": \"linear\""},
        {0, 1, 0, SMJ_ROPE_DYNAMIC, "\"rope_type\": \"dynamic\""},
    };
    for (size_t k = 0; k < sizeof V / sizeof V[0]; k++) {
        smj_model_config c = {.vocab_size = 97, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
                              .ffn_hidden = 64, .max_seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                              .tied_embeddings = (int)(k & 1), .qk_norm = V[k].qk, .attn_bias = V[k].bias,
                              .attn_out_bias = V[k].obias, .rope_type = V[k].rope, .rope_factor = 3.0f};
        if (c.rope_type == SMJ_ROPE_DEFAULT) c.rope_factor = 0;
        if (c.rope_type == SMJ_ROPE_DYNAMIC) c.rope_orig_max_pos = 64;
        if (c.rope_type == SMJ_ROPE_LLAMA3) { c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4; c.rope_orig_max_pos = 16; }
        if (c.rope_type == SMJ_ROPE_YARN) { c.rope_orig_max_pos = 16; c.rope_beta_fast = 32; c.rope_beta_slow = 1; c.rope_attn_factor = 1.2f; }
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &c, 100 + k, &m));
        if (!m) continue;
        for (int i = 0; i < smj_model_num_tensors(m); i++) { /* biases and norms away from 0 / 1 */
            smj_tensor_view v;
            smj_model_tensor(m, i, &v);
            if (v.ndim == 1)
                for (int64_t j = 0; j < v.numel; j++) v.data[j] = (strstr(v.name, "bias") ? 0.0f : 1.0f) + 0.1f * sinf((float)(j + 7 * i));
        }
        char dir[1024], p[1100];
        snprintf(dir, sizeof dir, "%s/variant_%zu", tmp, k);
        CHECK_OK(ctx, smj_export_hf(m, NULL, dir, NULL));
        snprintf(p, sizeof p, "%s/config.json", dir);
        uint8_t *text = NULL;
        size_t tn = 0;
        CHECK_OK(ctx, smj_read_file(ctx, p, &text, &tn));
        CHECK(text && strstr((const char *)text, V[k].needle), "variant %zu: config.json lacks %s", k, V[k].needle);
        free(text);
        smj_model *back = NULL;
        CHECK_OK(ctx, smj_import_hf(ctx, dir, NULL, &back));
        if (back) {
            char tag[64];
            snprintf(tag, sizeof tag, "variant %zu", k);
            same_models(m, back, 0, tag);
            int32_t ids[12] = {1, 5, 9, 2, 7, 3, 3, 0, 11, 4, 96, 50};
            int V0 = c.vocab_size;
            CHECK_OK(ctx, smj_model_forward(m, ids, NULL, 2, 6, NULL));
            float *a = malloc(sizeof(float) * 12 * (size_t)V0), *b2 = malloc(sizeof(float) * 12 * (size_t)V0);
            memcpy(a, smj_model_logits(m), sizeof(float) * 12 * (size_t)V0);
            CHECK_OK(ctx, smj_model_forward(back, ids, NULL, 2, 6, NULL));
            memcpy(b2, smj_model_logits(back), sizeof(float) * 12 * (size_t)V0);
            CHECK(memcmp(a, b2, sizeof(float) * 12 * (size_t)V0) == 0, "%s: logits differ", tag);
            free(a);
            free(b2);
        }
        smj_model_free(back);
        smj_model_free(m);
    }
}

/* GPT-2: export -> import bit-identical (tied and untied), config.json keys;
 * a file without the "transformer." prefix and with the old causal-mask
 * buffers (attn.bias [1,1,n,n], attn.masked_bias []) imports the same. */
static void test_gpt2_roundtrip(smj_ctx *ctx) {
    const char *tmp = test_tmpdir();
    for (int tied = 0; tied <= 1; tied++) {
        smj_model_config c = {.vocab_size = 97, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .head_dim = 8,
                              .ffn_hidden = 72, .max_seq_len = 40, .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                              .tied_embeddings = tied, .arch = SMJ_ARCH_GPT2};
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_model_create(ctx, &c, 300 + (uint64_t)tied, &m));
        if (!m) continue;
        int n = smj_model_num_tensors(m);
        for (int i = 0; i < n; i++) {
            smj_tensor_view v;
            smj_model_tensor(m, i, &v);
            if (v.ndim == 1)
                for (int64_t j = 0; j < v.numel; j++) v.data[j] = (strstr(v.name, "bias") ? 0.0f : 1.0f) + 0.1f * sinf((float)(j + 7 * i));
        }
        char dir[1024], p[1100];
        snprintf(dir, sizeof dir, "%s/gpt2_%d", tmp, tied);
        CHECK_OK(ctx, smj_export_hf(m, NULL, dir, NULL));
        snprintf(p, sizeof p, "%s/config.json", dir);
        uint8_t *text = NULL;
        size_t tn = 0;
        CHECK_OK(ctx, smj_read_file(ctx, p, &text, &tn));
        CHECK(text && strstr((const char *)text, "\"GPT2LMHeadModel\"") && strstr((const char *)text, "\"model_type\": \"gpt2\"") &&
                  strstr((const char *)text, "\"n_inner\": 72") && strstr((const char *)text, "\"gelu_new\""),
              "gpt2 config.json");
        smj_model *back = NULL;
        CHECK_OK(ctx, smj_import_hf(ctx, dir, NULL, &back));
        if (back) same_models(m, back, 0, tied ? "gpt2 tied" : "gpt2 untied");
        smj_model_free(back);
        /* the prefix-less layout with the mask buffers */
        char dir2[1100];
        snprintf(dir2, sizeof dir2, "%s/gpt2_old_%d", tmp, tied);
        smj_st_wtensor *wt = calloc((size_t)n + 2, sizeof *wt);
        float *mask = calloc(40 * 40, sizeof(float)), mb = -1e4f;
        char (*names)[96] = calloc((size_t)n, 96);
        for (int i = 0; i < n; i++) {
            smj_tensor_view v;
            smj_model_tensor(m, i, &v);
            snprintf(names[i], 96, "%s", strncmp(v.name, "transformer.", 12) == 0 ? v.name + 12 : v.name);
            wt[i].name = names[i];
            wt[i].ndim = v.ndim;
            for (int d = 0; d < v.ndim; d++) wt[i].shape[d] = v.shape[d];
            wt[i].data = v.data;
        }
        wt[n] = (smj_st_wtensor){.name = "h.0.attn.bias", .ndim = 4, .shape = {1, 1, 40, 40}, .data = mask};
        wt[n + 1] = (smj_st_wtensor){.name = "h.0.attn.masked_bias", .ndim = 0, .data = &mb};
        run_cmd("mkdir -p '%s'", dir2);
        int nf = 0;
        smj_st_write_options wo = {0};
        CHECK_OK(ctx, smj_st_write(ctx, dir2, wt, n + 2, &wo, &nf));
        run_cmd("cp '%s' '%s/config.json'", p, dir2);
        CHECK_OK(ctx, smj_import_hf(ctx, dir2, NULL, &back));
        if (back) same_models(m, back, 0, "gpt2 without the transformer. prefix");
        smj_model_free(back);
        free(wt); free(mask); free(names);
        free(text);
        smj_model_free(m);
    }
}

/* A HF-style directory written by the test: config + safetensors. */
static void write_text_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

typedef struct { char name[96]; int ndim; int64_t shape[2]; float *data; } src_tensor;

static int hf_tensors(src_tensor *t, int extra_inv_freq) {
    /* Llama, V=50, C=16, L=1, NH=2, NKV=1, HS=8, H=24, untied */
    int n = 0;
    const struct { const char *name; int ndim; int64_t s0, s1; } spec[] = {
        {"model.embed_tokens.weight", 2, 50, 16}, {"model.layers.0.input_layernorm.weight", 1, 16, 0},
        {"model.layers.0.self_attn.q_proj.weight", 2, 16, 16}, {"model.layers.0.self_attn.k_proj.weight", 2, 8, 16},
        {"model.layers.0.self_attn.v_proj.weight", 2, 8, 16}, {"model.layers.0.self_attn.o_proj.weight", 2, 16, 16},
        {"model.layers.0.post_attention_layernorm.weight", 1, 16, 0}, {"model.layers.0.mlp.gate_proj.weight", 2, 24, 16},
        {"model.layers.0.mlp.up_proj.weight", 2, 24, 16}, {"model.layers.0.mlp.down_proj.weight", 2, 16, 24},
        {"model.norm.weight", 1, 16, 0}, {"lm_head.weight", 2, 50, 16},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", 1, 4, 0},
    };
    int count = extra_inv_freq ? 13 : 12;
    for (int i = 0; i < count; i++) {
        snprintf(t[n].name, sizeof t[n].name, "%s", spec[i].name);
        t[n].ndim = spec[i].ndim;
        t[n].shape[0] = spec[i].s0;
        t[n].shape[1] = spec[i].s1;
        int64_t numel = spec[i].s0 * (spec[i].ndim == 2 ? spec[i].s1 : 1);
        t[n].data = malloc(sizeof(float) * (size_t)numel);
        for (int64_t j = 0; j < numel; j++)
            t[n].data[j] = (float)((double)((j * 7919 + i * 104729) % 2001 - 1000) / 4096.0); /* exact in f16 */
        n++;
    }
    return n;
}

static const char *HF_CONFIG = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
                               "\"vocab_size\": 50, \"hidden_size\": 16, \"intermediate_size\": 24, "
                               "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                               "\"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
                               "\"tie_word_embeddings\": false, \"torch_dtype\": \"float16\"}";

/* Writes dir/config.json and dir/model.safetensors with tensors t (dtype
 * F32, or F16 written by hand). */
static void write_hf_dir(smj_ctx *ctx, const char *dir, const char *config, src_tensor *t, int n, int f16) {
    mkdir(dir, 0777);
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text_file(p, config);
    if (!f16) {
        smj_st_wtensor w[16];
        for (int i = 0; i < n; i++) w[i] = (smj_st_wtensor){t[i].name, t[i].ndim, {t[i].shape[0], t[i].shape[1]}, t[i].data};
        CHECK_OK(ctx, smj_st_write(ctx, dir, w, n, NULL, NULL));
        return;
    }
    /* F16 file, header built here */
    smj_jbuf h = {0};
    smj_jbuf_puts(&h, "{");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        smj_jbuf_printf(&h, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%lld", i ? "," : "", t[i].name, (long long)t[i].shape[0]);
        if (t[i].ndim == 2) smj_jbuf_printf(&h, ",%lld", (long long)t[i].shape[1]);
        smj_jbuf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + 2 * (uint64_t)numel));
        off += 2 * (uint64_t)numel;
    }
    smj_jbuf_puts(&h, "}");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    uint8_t len8[8];
    smj_wr_u64(len8, h.len);
    fwrite(len8, 1, 8, f);
    fwrite(h.p, 1, h.len, f);
    for (int i = 0; i < n; i++) {
        int64_t numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        for (int64_t j = 0; j < numel; j++) {
            /* value = k/4096 with |k| <= 1000: exact in f16 */
            float v = t[i].data[j];
            uint16_t bits = 0;
            if (v != 0) {
                int e;
                float mant = frexpf(fabsf(v), &e); /* v = mant * 2^e, mant in [0.5, 1) */
                int E = e - 1 + 15;
                uint16_t m10 = (uint16_t)lrintf((mant * 2 - 1) * 1024);
                bits = (uint16_t)((v < 0 ? 0x8000 : 0) | (E << 10) | m10);
            }
            fputc(bits & 0xFF, f);
            fputc(bits >> 8, f);
        }
    }
    fclose(f);
    smj_jbuf_free(&h);
}

static void test_import_export(smj_ctx *ctx) {
    const char *tmp = test_tmpdir();
    src_tensor t[16];
    int n = hf_tensors(t, 1);
    for (int f16 = 0; f16 < 2; f16++) {
        char src[1024], out[1024];
        snprintf(src, sizeof src, "%s/hf_src_%d", tmp, f16);
        snprintf(out, sizeof out, "%s/hf_out_%d", tmp, f16);
        write_hf_dir(ctx, src, HF_CONFIG, t, n, f16);
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_import_hf(ctx, src, NULL, &m));
        if (!m) continue;
        const smj_model_config *c = smj_model_get_config(m);
        CHECK(c->n_kv_heads == 1 && c->head_dim == 8 && c->tied_embeddings == 0 && c->max_seq_len == 128, "config");
        CHECK_OK(ctx, smj_export_hf(m, NULL, out, NULL));
        smj_st_set *a = NULL, *b = NULL;
        CHECK_OK(ctx, smj_st_set_open(ctx, src, &a));
        CHECK_OK(ctx, smj_st_set_open(ctx, out, &b));
        if (a && b) {
            CHECK(smj_st_set_count(b) == n - 1, "export has every tensor but inv_freq (%d)", smj_st_set_count(b));
            int bad = 0;
            for (int i = 0; i < n - 1; i++) {
                int ka = smj_st_set_find(a, t[i].name), kb = smj_st_set_find(b, t[i].name);
                if (ka < 0 || kb < 0) { bad++; continue; }
                const smj_st_file *fa, *fb;
                int ia, ib;
                const smj_st_tensor *ta = smj_st_set_get(a, ka, &fa, &ia), *tb = smj_st_set_get(b, kb, &fb, &ib);
                if (ta->numel != tb->numel || ta->ndim != tb->ndim || tb->dtype != SMJ_ST_F32) { bad++; continue; }
                float *x = malloc(sizeof(float) * (size_t)ta->numel), *y = malloc(sizeof(float) * (size_t)ta->numel);
                smj_st_read_f32(ctx, fa, ia, x);
                smj_st_read_f32(ctx, fb, ib, y);
                if (memcmp(x, y, sizeof(float) * (size_t)ta->numel) != 0 ||
                    memcmp(x, t[i].data, sizeof(float) * (size_t)ta->numel) != 0)
                    bad++;
                free(x);
                free(y);
            }
            CHECK(bad == 0, "%s source: %d tensors not reproduced", f16 ? "F16" : "F32", bad);
        }
        smj_st_set_close(a);
        smj_st_set_close(b);
        smj_model_free(m);
    }

    /* import errors */
    char d[1024];
    smj_model *m = NULL;
    smj_status s;
    /* missing tensor */
    snprintf(d, sizeof d, "%s/hf_missing", tmp);
    write_hf_dir(ctx, d, HF_CONFIG, t + 1, n - 1, 0);
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "model.embed_tokens.weight") &&
              strstr(smj_ctx_error(ctx), "missing"), "missing tensor: %s", smj_ctx_error(ctx));
    /* wrong shape */
    snprintf(d, sizeof d, "%s/hf_shape", tmp);
    int64_t keep = t[3].shape[0];
    t[3].shape[0] = 4; /* k_proj [4,16] instead of [8,16] */
    write_hf_dir(ctx, d, HF_CONFIG, t, n, 0);
    t[3].shape[0] = keep;
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "k_proj") && strstr(smj_ctx_error(ctx), "[4, 16]") &&
              strstr(smj_ctx_error(ctx), "[8, 16]"), "wrong shape: %s", smj_ctx_error(ctx));
    /* unexpected tensor (a bias) */
    snprintf(d, sizeof d, "%s/hf_extra", tmp);
    src_tensor t2[16];
    memcpy(t2, t, sizeof(src_tensor) * (size_t)n);
    snprintf(t2[n - 1].name, sizeof t2[n - 1].name, "model.layers.0.self_attn.q_proj.bias");
    t2[n - 1].shape[0] = 4;
    write_hf_dir(ctx, d, HF_CONFIG, t2, n, 0);
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_UNSUPPORTED && strstr(smj_ctx_error(ctx), "q_proj.bias"), "unexpected tensor: %s",
          smj_ctx_error(ctx));
    /* tied config: an lm_head equal to the embedding is accepted, a different one is not */
    char tied_cfg[2048];
    snprintf(tied_cfg, sizeof tied_cfg, "%s", HF_CONFIG);
    char *tw = strstr(tied_cfg, "\"tie_word_embeddings\": false");
    memcpy(tw, "\"tie_word_embeddings\": true ", 28);
    snprintf(d, sizeof d, "%s/hf_tied_diff", tmp);
    write_hf_dir(ctx, d, tied_cfg, t, n, 0);
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "lm_head.weight"), "tied, different head: %s",
          smj_ctx_error(ctx));
    float *head = t[11].data;
    t[11].data = t[0].data;
    snprintf(d, sizeof d, "%s/hf_tied_same", tmp);
    write_hf_dir(ctx, d, tied_cfg, t, n, 0);
    t[11].data = head;
    CHECK_OK(ctx, smj_import_hf(ctx, d, NULL, &m));
    CHECK(m && smj_model_get_config(m)->tied_embeddings == 1, "tied import");
    smj_model_free(m);
    m = NULL;
    /* attention_bias: true but no bias tensors in the file */
    snprintf(d, sizeof d, "%s/hf_bias_cfg", tmp);
    char bias_cfg[2048];
    snprintf(bias_cfg, sizeof bias_cfg, "{\"attention_bias\": true, %s", HF_CONFIG + 1);
    write_hf_dir(ctx, d, bias_cfg, t, n, 0);
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "q_proj.bias") && strstr(smj_ctx_error(ctx), "missing"),
          "bias config without bias tensors: %s", smj_ctx_error(ctx));
    /* no such directory */
    snprintf(d, sizeof d, "%s/does_not_exist", tmp);
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s == SMJ_ERR_IO && !m, "missing dir: %s", smj_ctx_error(ctx));
    /* an integer tensor where weights belong */
    snprintf(d, sizeof d, "%s/hf_int", tmp);
    mkdir(d, 0777);
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text_file(p, HF_CONFIG);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    {
        const char *hdr = "{\"model.norm.weight\":{\"dtype\":\"I32\",\"shape\":[16],\"data_offsets\":[0,64]}}";
        FILE *f = fopen(p, "wb");
        uint8_t len8[8];
        smj_wr_u64(len8, strlen(hdr));
        fwrite(len8, 1, 8, f);
        fputs(hdr, f);
        for (int i = 0; i < 64; i++) fputc(0, f);
        fclose(f);
    }
    s = smj_import_hf(ctx, d, NULL, &m);
    CHECK(s != SMJ_OK && !m, "int/missing tensors refused: %s", smj_ctx_error(ctx));
    for (int i = 0; i < n; i++) free(t[i].data);
}

/* -------------------------------------------------------------- tokenizer */

static smj_tokenizer *make_tokenizer(smj_ctx *ctx) {
    static const char text[] = "the quick brown fox jumps over the lazy dog. The dog's \"quoted\" back\\slash \t tab\n"
                               "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac 12345 the the the quick quick ";
    smj_jbuf b = {0};
    for (int i = 0; i < 20; i++) smj_jbuf_puts(&b, text);
    smj_tokenizer_train_options o = {.vocab_size = 330};
    smj_tokenizer *tok = NULL;
    CHECK_OK(ctx, smj_tokenizer_train(ctx, (const uint8_t *)b.p, b.len, &o, &tok));
    smj_jbuf_free(&b);
    return tok;
}

static void test_tokenizer_json(smj_ctx *ctx, smj_tokenizer *tok) {
    smj_jbuf b = {0};
    CHECK_OK(ctx, smj_hf_tokenizer_json(ctx, tok, &b));
    smj_json_doc *doc = NULL;
    const smj_json *r = NULL;
    CHECK_OK(ctx, smj_json_parse(ctx, b.p, b.len, "tokenizer.json", 0, &doc, &r));
    int M = smj_tokenizer_num_merges(tok), S = smj_tokenizer_num_special(tok);
    if (r) {
        const smj_json *model = smj_json_get(r, "model"), *vocab = smj_json_get(model, "vocab"),
                       *merges = smj_json_get(model, "merges"), *added = smj_json_get(r, "added_tokens");
        CHECK(vocab && vocab->len == (size_t)(256 + M), "vocab size");
        CHECK(merges && merges->len == (size_t)M, "merge count");
        CHECK(added && added->len == (size_t)S, "added tokens");
        const smj_json *x = smj_json_get(vocab, "\xc4\xa0"); /* U+0120 'Ġ' = space */
        CHECK(x && x->i64 == ' ', "space is \\u0120");
        x = smj_json_get(vocab, "\xc4\x80"); /* U+0100 = byte 0 */
        CHECK(x && x->i64 == 0, "byte 0 is \\u0100");
        x = smj_json_get(vocab, "!");
        CHECK(x && x->i64 == '!', "'!' is itself");
        x = smj_json_get(vocab, "\xc5\x83"); /* U+0143 = byte 0xAD */
        CHECK(x && x->i64 == 0xAD, "byte 0xAD is \\u0143");
        CHECK(smj_json_get(model, "byte_fallback") && !smj_json_get(model, "byte_fallback")->boolean, "byte_fallback");
        const smj_json *pre = smj_json_get(r, "pre_tokenizer"), *l = smj_json_get(pre, "pretokenizers");
        CHECK(l && l->len == 2 && strcmp(smj_json_get(&l->kids[0], "type")->str, "Split") == 0 &&
                  strcmp(smj_json_get(smj_json_get(&l->kids[0], "pattern"), "Regex")->str, SMJ_HF_GPT2_PATTERN) == 0 &&
                  strcmp(smj_json_get(&l->kids[1], "type")->str, "ByteLevel") == 0, "pre_tokenizer");
        if (added && added->len >= 3) {
            const smj_json *a = &added->kids[1];
            CHECK(smj_json_get(a, "id")->i64 == smj_tokenizer_special_id(tok, SMJ_TOKEN_BOS) &&
                      smj_json_get(a, "special")->boolean, "BOS added token");
        }
        if (merges && merges->len > 0) {
            int32_t l0, r0;
            smj_tokenizer_merge(tok, 0, &l0, &r0);
            CHECK(merges->kids[0].type == SMJ_JSON_STRING && strchr(merges->kids[0].str, ' '), "merges as \"a b\"");
        }
    }
    smj_json_free(doc);
    /* import reproduces the tokenizer exactly */
    smj_tokenizer *back = NULL;
    CHECK_OK(ctx, smj_hf_tokenizer_parse(ctx, b.p, b.len, "tokenizer.json", &back));
    if (back) {
        uint8_t *x, *y;
        size_t nx, ny;
        smj_tokenizer_to_bytes(ctx, tok, &x, &nx);
        smj_tokenizer_to_bytes(ctx, back, &y, &ny);
        CHECK(nx == ny && memcmp(x, y, nx) == 0, "tokenizer.json round trip is exact");
        smj_free(x);
        smj_free(y);
    }
    smj_tokenizer_free(back);
    /* the array-of-pairs merge form imports too */
    {
        smj_json_doc *d2;
        const smj_json *r2;
        smj_json_parse(ctx, b.p, b.len, "t", 0, &d2, &r2);
        const smj_json *merges = smj_json_get(smj_json_get(r2, "model"), "merges");
        smj_jbuf alt = {0};
        const char *at = strstr(b.p, "\"merges\": [");
        smj_jbuf_put(&alt, b.p, (size_t)(at - b.p));
        smj_jbuf_puts(&alt, "\"merges\": [");
        for (size_t i = 0; merges && i < merges->len; i++) {
            const char *sp = strchr(merges->kids[i].str, ' ');
            smj_jbuf_puts(&alt, i ? ", [" : "[");
            smj_jbuf_str(&alt, merges->kids[i].str, (size_t)(sp - merges->kids[i].str));
            smj_jbuf_puts(&alt, ", ");
            smj_jbuf_str(&alt, sp + 1, strlen(sp + 1));
            smj_jbuf_puts(&alt, "]");
        }
        smj_jbuf_puts(&alt, "]}}\n");
        smj_tokenizer *t3 = NULL;
        CHECK_OK(ctx, smj_hf_tokenizer_parse(ctx, alt.p, alt.len, "pairs.json", &t3));
        CHECK(t3 && smj_tokenizer_num_merges(t3) == M, "pair-form merges");
        smj_tokenizer_free(t3);
        smj_jbuf_free(&alt);
        smj_json_free(d2);
    }
    /* tokenizers in another layout are refused with a reason */
    const char *other = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}, "
                        "\"added_tokens\": [{\"id\": 2, \"content\": \"<s>\"}, {\"id\": 3, \"content\": \"</s>\"}, "
                        "{\"id\": 4, \"content\": \"<pad>\"}]}";
    smj_tokenizer *t4 = NULL;
    smj_status s = smj_hf_tokenizer_parse(ctx, other, strlen(other), "other.json", &t4);
    CHECK(s == SMJ_ERR_UNSUPPORTED && !t4, "foreign layout refused: %s", smj_ctx_error(ctx));
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}";
    s = smj_hf_tokenizer_parse(ctx, wp, strlen(wp), "wp.json", &t4);
    CHECK(s == SMJ_ERR_UNSUPPORTED && strstr(smj_ctx_error(ctx), "WordPiece"), "WordPiece refused: %s", smj_ctx_error(ctx));
    smj_jbuf_free(&b);
    /* tokenizer_config.json is valid JSON naming the specials */
    CHECK_OK(ctx, smj_hf_tokenizer_config_json(ctx, tok, 64, &b));
    CHECK_OK(ctx, smj_json_parse(ctx, b.p, b.len, "tokenizer_config.json", 0, &doc, &r));
    if (r) CHECK(smj_json_get(r, "eos_token") && strcmp(smj_json_get(r, "eos_token")->str, "<|end_of_text|>") == 0,
                 "eos_token");
    smj_json_free(doc);
    smj_jbuf_free(&b);
}

/* ----------------------------------------------------- transformers parity */

static void test_transformers_fixtures(smj_ctx *ctx) {
    const char *env = getenv("SMJ_FIXTURES");
    char root[1024];
    snprintf(root, sizeof root, "%s/hf", env && *env ? env : "tests/fixtures");
    DIR *d = opendir(root);
    if (!d) {
        printf("note: %s is absent: the transformers parity fixtures (tools/make_hf_fixtures.py) were not run\n", root);
        return;
    }
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[2048], fx_path[2100];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(fx_path, sizeof fx_path, "%s/logits.bin", dir);
        struct stat st;
        if (stat(fx_path, &st) != 0) continue;
        found++;
        fixture *fx = fixture_load(fx_path);
        CHECK(fx != NULL, "%s: cannot load", fx_path);
        if (!fx) continue;
        smj_model *m = NULL;
        CHECK_OK(ctx, smj_import_hf(ctx, dir, NULL, &m));
        int64_t dims[FIXTURE_MAX_NDIM];
        int nd = fixture_shape(fx, "input_ids", dims);
        /* exports of ours (tools/check_hf_export.py): transformers' tokenizer
         * read our tokenizer.json and gave input_ids for meta.text; ours must too */
        const char *text = fixture_find(fx, "meta.text") >= 0 ? fixture_str(fx, "meta.text") : NULL;
        if (text) {
            char tok_path[2200];
            snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
            smj_tokenizer *tk = NULL;
            int32_t *ids = NULL;
            size_t n_ids = 0;
            int64_t n_ref = 0;
            const int32_t *ref = fixture_i32(fx, "input_ids", &n_ref);
            CHECK_OK(ctx, smj_tokenizer_import_hf(ctx, tok_path, &tk));
            if (tk) CHECK_OK(ctx, smj_tokenizer_encode(ctx, tk, (const uint8_t *)text, strlen(text), &ids, &n_ids));
            CHECK(ids && ref && (int64_t)n_ids == n_ref && memcmp(ids, ref, sizeof(int32_t) * n_ids) == 0,
                  "%s: our tokenizer's ids differ from transformers' on the export's tokenizer.json", e->d_name);
            if (ids && ref && (int64_t)n_ids == n_ref)
                printf("transformers tokenizer %s: %zu ids identical\n", e->d_name, n_ids);
            smj_free(ids);
            smj_tokenizer_free(tk);
        }
        /* a context long enough for the logits and the greedy continuation
         * (dynamic RoPE fixtures run past max_position_embeddings on purpose) */
        int64_t n_prompt = 0, n_greedy = 0;
        int has_greedy = fixture_find(fx, "greedy_ids") >= 0;
        const int32_t *prompt = has_greedy ? fixture_i32(fx, "greedy_prompt", &n_prompt) : NULL;
        const int32_t *gids = has_greedy ? fixture_i32(fx, "greedy_ids", &n_greedy) : NULL;
        int need = (int)(n_prompt + n_greedy);
        if (nd == 2 && dims[1] > need) need = (int)dims[1];
        if (m && smj_model_get_config(m)->max_seq_len < need) {
            smj_model_free(m);
            m = NULL;
            smj_hf_import_options io;
            memset(&io, 0, sizeof io);
            io.max_seq_len = need;
            CHECK_OK(ctx, smj_import_hf(ctx, dir, &io, &m));
        }
        /* RoPE frequencies against the ones transformers' module held */
        if (m && fixture_find(fx, "rope.inv_freq") >= 0) {
            const smj_model_config *mc = smj_model_get_config(m);
            int64_t ni = 0;
            const float *hf0 = fixture_f32(fx, "rope.inv_freq", &ni), *hf1 = fixture_f32(fx, "rope.inv_freq_after_logits", NULL);
            float sc = fixture_f32_scalar(fx, "rope.attention_scaling");
            float inv0[512], inv1[512], attn0, attn1;
            if (ni == mc->head_dim / 2 && hf1) {
                smj_rope_inv_freq(mc, mc->rope_orig_max_pos > 0 ? mc->rope_orig_max_pos : mc->max_seq_len, inv0, &attn0);
                smj_rope_inv_freq(mc, nd == 2 ? dims[1] : 1, inv1, &attn1);
                double e0 = 0, e1 = 0;
                for (int i = 0; i < ni; i++) {
                    e0 = fmax(e0, fabs((double)inv0[i] - hf0[i]) / fabs((double)hf0[i]));
                    e1 = fmax(e1, fabs((double)inv1[i] - hf1[i]) / fabs((double)hf1[i]));
                }
                CHECK(e0 <= 1e-6 && e1 <= 1e-6, "%s: inv_freq rel error %.2g (init), %.2g (after the logits)", e->d_name, e0, e1);
                CHECK(fabsf(attn0 - sc) <= 1e-6f * sc, "%s: attention scaling %.9g vs transformers %.9g", e->d_name,
                      (double)attn0, (double)sc);
                printf("transformers parity %s: rope %s, inv_freq max rel error %.2g / %.2g, attention scaling %.7g\n",
                       e->d_name, smj_rope_type_name(mc->rope_type), e0, e1, (double)attn0);
            } else {
                CHECK(0, "%s: rope.inv_freq has %lld values for head_dim %d", e->d_name, (long long)ni, mc->head_dim);
            }
        }
        const int32_t *ids = fixture_i32(fx, "input_ids", NULL);
        int64_t nl = 0;
        const float *want = fixture_f32(fx, "logits", &nl);
        if (m && nd == 2 && ids && want) {
            int B = (int)dims[0], T = (int)dims[1], V = smj_model_get_config(m)->vocab_size;
            CHECK(nl == (int64_t)B * T * V, "%s: logits size", e->d_name);
            float loss;
            CHECK_OK(ctx, smj_model_forward(m, ids, NULL, B, T, &loss));
            const float *got = smj_model_logits(m);
            if (nl == (int64_t)B * T * V) {
                double rl = rel_l2(got, want, nl), md = max_abs_diff(got, want, nl);
                int argmax_bad = 0;
                for (int64_t r = 0; r < (int64_t)B * T; r++) {
                    int ag = 0, aw = 0;
                    for (int v = 1; v < V; v++) {
                        if (got[r * V + v] > got[r * V + ag]) ag = v;
                        if (want[r * V + v] > want[r * V + aw]) aw = v;
                    }
                    argmax_bad += ag != aw;
                }
                CHECK(rl <= 1e-5, "%s: logits rel L2 %.3g > 1e-5", e->d_name, rl);
                CHECK(md <= 5e-4, "%s: logits max |diff| %.3g > 5e-4", e->d_name, md);
                CHECK(argmax_bad == 0, "%s: argmax differs at %d positions", e->d_name, argmax_bad);
                printf("transformers parity %s: rel L2 %.2e, max |diff| %.2e\n", e->d_name, rl, md);
            }
        } else {
            CHECK(0, "%s: fixture lacks input_ids [B, T] or logits", e->d_name);
        }
        /* greedy continuation: transformers' generate (KV cache) vs a session fed the same tokens */
        if (m && has_greedy && prompt && gids) {
            int V = smj_model_get_config(m)->vocab_size, same = 0, first_bad = -1;
            int64_t nsl = 0;
            const float *step_logits = fixture_f32(fx, "greedy_logits", &nsl);
            double md = 0;
            smj_session *sess = NULL;
            CHECK_OK(ctx, smj_session_create(m, need, &sess));
            const float *lg = NULL;
            if (sess) CHECK_OK(ctx, smj_session_feed(sess, prompt, (int)n_prompt, &lg));
            for (int64_t t = 0; sess && lg && t < n_greedy; t++) {
                int am = 0;
                for (int v = 1; v < V; v++)
                    if (lg[v] > lg[am]) am = v;
                if (am == gids[t]) same++;
                else if (first_bad < 0) first_bad = (int)t;
                if (step_logits && nsl == n_greedy * V)
                    for (int v = 0; v < V; v++) md = fmax(md, fabs((double)lg[v] - step_logits[t * V + v]));
                if (t + 1 < n_greedy && smj_session_feed(sess, &gids[t], 1, &lg) != SMJ_OK) {
                    CHECK(0, "%s: feed: %s", e->d_name, smj_ctx_error(ctx));
                    break;
                }
            }
            smj_session_free(sess);
            CHECK(same == n_greedy, "%s: greedy continuation matches %d/%lld tokens (first difference at %d)", e->d_name,
                  same, (long long)n_greedy, first_bad);
            CHECK(md <= 5e-4, "%s: greedy step logits max |diff| %.3g > 5e-4", e->d_name, md);
            printf("transformers parity %s: greedy %d/%lld tokens, step logits max |diff| %.2e\n", e->d_name, same,
                   (long long)n_greedy, md);
        }
        smj_model_free(m);
        fixture_free(fx);
    }
    closedir(d);
    if (!found) printf("note: %s has no fixtures: the transformers parity checks did not run\n", root);
}

/* --------------------------------------------------------------------- CLI */

static void test_cli(smj_ctx *ctx, smj_tokenizer *tok) {
    if (run_cmd("%s import-hf --help >/dev/null 2>&1", smj_bin()) != 0) {
        printf("note: %s has no import-hf command yet; CLI checks skipped\n", smj_bin());
        return;
    }
    const char *tmp = test_tmpdir();
    smj_model *m = make_model(ctx, 1, 9);
    if (!m) return;
    char ck[1024], tk[1024], out[1024], ck2[1024], tk2[1024];
    snprintf(ck, sizeof ck, "%s/cli.ckpt", tmp);
    snprintf(tk, sizeof tk, "%s/cli.tok", tmp);
    snprintf(out, sizeof out, "%s/cli_hf", tmp);
    snprintf(ck2, sizeof ck2, "%s/cli2.ckpt", tmp);
    snprintf(tk2, sizeof tk2, "%s/cli2.tok", tmp);
    CHECK_OK(ctx, smj_model_save(m, ck));
    CHECK_OK(ctx, smj_tokenizer_save(ctx, tok, tk));
    CHECK(run_cmd("%s export-hf --checkpoint %s --tokenizer %s --output-dir %s >/dev/null", smj_bin(), ck, tk, out) == 0,
          "export-hf");
    CHECK(run_cmd("%s export-hf --checkpoint %s --output-dir %s >/dev/null 2>&1", smj_bin(), ck, out) == 2,
          "export-hf into a non-empty dir without --force is a usage error");
    CHECK(run_cmd("%s export-hf --checkpoint %s --output-dir %s --force >/dev/null", smj_bin(), ck, out) == 0,
          "export-hf --force");
    CHECK(run_cmd("%s export-hf --checkpoint %s --tokenizer %s --output-dir %s --force >/dev/null", smj_bin(), ck, tk,
                  out) == 0, "export-hf --force with tokenizer");
    CHECK(run_cmd("%s import-hf --model-dir %s --output %s --tokenizer-output %s >/dev/null", smj_bin(), out, ck2, tk2) == 0,
          "import-hf");
    smj_model *back = NULL;
    CHECK_OK(ctx, smj_model_load(ctx, ck2, &back));
    if (back) same_models(m, back, 0, "CLI round trip");
    smj_model_free(back);
    smj_tokenizer *tb = NULL;
    CHECK_OK(ctx, smj_tokenizer_load(ctx, tk2, &tb));
    CHECK(tb && smj_tokenizer_vocab_size(tb) == smj_tokenizer_vocab_size(tok), "CLI tokenizer round trip");
    smj_tokenizer_free(tb);
    CHECK(run_cmd("%s import-hf --output %s >/dev/null 2>&1", smj_bin(), ck2) == 2, "import-hf without --model-dir");
    CHECK(run_cmd("%s import-hf --model-dir %s/nowhere --output %s >/dev/null 2>&1", smj_bin(), tmp, ck2) == 1,
          "import-hf on a missing dir");
    smj_model_free(m);
}

int main(void) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    test_json(ctx);
    test_config(ctx);
    smj_tokenizer *tok = make_tokenizer(ctx);
    if (tok) {
        /* the Qwen3 test model has V = 80 < the tokenizer's 330: use a bigger model vocab */
        test_tokenizer_json(ctx, tok);
    }
    smj_tokenizer *small = NULL;
    {
        int32_t pairs[2] = {'a', 'b'};
        CHECK_OK(ctx, smj_tokenizer_from_merges(ctx, pairs, 1, &small));
    }
    test_roundtrip(ctx, small);
    test_import_export(ctx);
    test_roundtrip_variants(ctx);
    test_gpt2_roundtrip(ctx);
    test_transformers_fixtures(ctx);
    if (small) test_cli(ctx, small);
    smj_tokenizer_free(small);
    smj_tokenizer_free(tok);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_hf");
}
