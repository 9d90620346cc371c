/* hf_config.c — config.json <-> smj_model_config (docs/HF.md, "config.json").
 *
 * Import accepts the architectures whose math is exactly ours
 * (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM),
 * with attention biases and the RoPE scalings transformers implements for
 * them (linear, dynamic, llama3, yarn), and refuses every key that would
 * change the math otherwise (MLP biases, longrope, partial rotary, an
 * activation other than SiLU) by name. Keys that do not change the forward
 * pass (dropouts, initializer_range, token ids, torch_dtype, pretraining_tp,
 * ...) are ignored.
 */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include "../core/core.h"
#include "../model/model.h"
#include "hf.h"

typedef struct {
    const char *arch, *model_type;
    int default_max_pos;
    int qk_norm;
    int has_sliding; /* sliding_window applies (Mistral: when set; Qwen2/3: with use_sliding_window) */
    int bias;        /* 0: attention_bias refused (Mistral); 1: attention_bias biases q/k/v/o (Llama,
                        Qwen3); 2: q/k/v always biased, o never (Qwen2) */
} arch_info;

static const arch_info ARCHS[] = {
    {"LlamaForCausalLM", "llama", 2048, 0, 0, 1},
    {"MistralForCausalLM", "mistral", 4096 * 32, 0, 1, 0},
    {"Qwen2ForCausalLM", "qwen2", 32768, 0, 2, 2},
    {"Qwen3ForCausalLM", "qwen3", 32768, 1, 2, 1},
};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

static void note(char *notes, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *notes, size_t cap, const char *fmt, ...) {
    if (!notes || cap == 0) return;
    size_t l = strlen(notes);
    if (l + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes + l, cap - l, fmt, ap);
    va_end(ap);
    l = strlen(notes);
    if (l + 1 < cap) { notes[l] = '\n'; notes[l + 1] = 0; }
}

/* An optional integer key: absent or null keeps *v; else it must be an
 * integer in [lo, hi]. */
static smj_status get_int(smj_ctx *ctx, const char *name, const smj_json *root, const char *key, int required,
                          int64_t lo, int64_t hi, int64_t *v) {
    const smj_json *x = smj_json_get(root, key);
    if (!x || x->type == SMJ_JSON_NULL) {
        if (required) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" is missing", name, key);
        return SMJ_OK;
    }
    if (x->type != SMJ_JSON_NUMBER || !x->is_int)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" is %s, expected an integer", name, key,
                 x->type == SMJ_JSON_NUMBER ? "a non-integral number" : smj_json_type_name(x->type));
    if (x->i64 < lo || x->i64 > hi)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"%s\" = %lld is out of the supported range [%lld, %lld]", name, key,
                 (long long)x->i64, (long long)lo, (long long)hi);
    *v = x->i64;
    return SMJ_OK;
}

static smj_status get_num(smj_ctx *ctx, const char *name, const smj_json *root, const char *key, double *v) {
    const smj_json *x = smj_json_get(root, key);
    if (!x || x->type == SMJ_JSON_NULL) return SMJ_OK;
    if (x->type != SMJ_JSON_NUMBER)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" is %s, expected a number", name, key, smj_json_type_name(x->type));
    *v = x->num;
    return SMJ_OK;
}

static smj_status get_bool(smj_ctx *ctx, const char *name, const smj_json *root, const char *key, int *v) {
    const smj_json *x = smj_json_get(root, key);
    if (!x || x->type == SMJ_JSON_NULL) return SMJ_OK;
    if (x->type != SMJ_JSON_BOOL)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" is %s, expected true or false", name, key, smj_json_type_name(x->type));
    *v = x->boolean;
    return SMJ_OK;
}

/* What rope_parameters / rope_scaling say (NaN / -1 = absent). */
typedef struct {
    int present, type;
    double theta, factor, low, high, beta_fast, beta_slow, attn, mscale, mscale_all_dim;
    int64_t orig;
    int truncate;
} rope_in;

static smj_status rope_num(smj_ctx *ctx, const char *name, const char *key, const smj_json *x, const char *k,
                           double *v) {
    const smj_json *y = smj_json_get(x, k);
    if (!y || y->type == SMJ_JSON_NULL) return SMJ_OK;
    if (y->type != SMJ_JSON_NUMBER)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\".\"%s\" is %s, expected a number", name, key, k, smj_json_type_name(y->type));
    *v = y->num;
    return SMJ_OK;
}

/* rope_scaling (transformers < 5) / rope_parameters (5.x): null, or an
 * object with rope_type (or type), rope_theta and the type's parameters. */
static smj_status parse_rope(smj_ctx *ctx, const char *name, const smj_json *root, const char *key, rope_in *r) {
    const smj_json *x = smj_json_get(root, key);
    if (!x || x->type == SMJ_JSON_NULL) return SMJ_OK;
    if (x->type != SMJ_JSON_OBJECT)
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" is %s, expected an object or null", name, key,
                 smj_json_type_name(x->type));
    const smj_json *t = smj_json_get(x, "rope_type");
    if (!t || t->type == SMJ_JSON_NULL) t = smj_json_get(x, "type");
    const char *type = "default";
    if (t && t->type != SMJ_JSON_NULL) {
        if (t->type != SMJ_JSON_STRING)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\".\"rope_type\" is %s, expected a string", name, key,
                     smj_json_type_name(t->type));
        type = t->str;
    }
    int rt = smj_rope_type_parse(type);
    if (rt < 0)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"%s\" with rope type \"%.60s\" is not supported (supported: default, "
                 "linear, dynamic, llama3, yarn)", name, key, type);
    double prf = 1.0, orig = NAN;
    SMJ_TRY(rope_num(ctx, name, key, x, "partial_rotary_factor", &prf));
    if (prf != 1.0)
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"%s\".\"partial_rotary_factor\" = %g is not supported (only 1)", name,
                 key, prf);
    r->present = 1;
    r->type = rt;
    SMJ_TRY(rope_num(ctx, name, key, x, "rope_theta", &r->theta));
    SMJ_TRY(rope_num(ctx, name, key, x, "factor", &r->factor));
    SMJ_TRY(rope_num(ctx, name, key, x, "low_freq_factor", &r->low));
    SMJ_TRY(rope_num(ctx, name, key, x, "high_freq_factor", &r->high));
    SMJ_TRY(rope_num(ctx, name, key, x, "beta_fast", &r->beta_fast));
    SMJ_TRY(rope_num(ctx, name, key, x, "beta_slow", &r->beta_slow));
    SMJ_TRY(rope_num(ctx, name, key, x, "attention_factor", &r->attn));
    SMJ_TRY(rope_num(ctx, name, key, x, "mscale", &r->mscale));
    SMJ_TRY(rope_num(ctx, name, key, x, "mscale_all_dim", &r->mscale_all_dim));
    SMJ_TRY(rope_num(ctx, name, key, x, "original_max_position_embeddings", &orig));
    if (!isnan(orig)) {
        if (orig != floor(orig) || orig < 1 || orig > 1e9)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\".\"original_max_position_embeddings\" = %g is not a positive integer",
                     name, key, orig);
        r->orig = (int64_t)orig;
    }
    const smj_json *tr = smj_json_get(x, "truncate");
    if (tr && tr->type != SMJ_JSON_NULL) {
        if (tr->type != SMJ_JSON_BOOL)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\".\"truncate\" is %s, expected true or false", name, key,
                     smj_json_type_name(tr->type));
        r->truncate = tr->boolean;
    }
    return SMJ_OK;
}

static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* The effective scaling parameters (transformers' modeling_rope_utils
 * semantics) into cfg. maxpos: the file's max_position_embeddings. */
static smj_status rope_to_cfg(smj_ctx *ctx, const char *name, const char *key, const rope_in *r, int64_t maxpos,
                              smj_model_config *cfg) {
    cfg->rope_type = r->type;
    if (r->type == SMJ_ROPE_DEFAULT) return SMJ_OK;
    const char *tn = smj_rope_type_name(r->type);
    double factor = r->factor;
    if (isnan(factor)) {
        if (r->type == SMJ_ROPE_YARN && r->orig > 0) factor = (double)maxpos / (double)r->orig;
        else SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" of type %s has no \"factor\"", name, key, tn);
    }
    if (!(factor > 0) || !isfinite((float)factor))
        SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\".\"factor\" = %g is not a positive float", name, key, factor);
    cfg->rope_factor = (float)factor;
    switch (r->type) {
    case SMJ_ROPE_DYNAMIC: /* transformers grows the base past max_position_embeddings */
        if (maxpos > INT32_MAX) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: max_position_embeddings too large", name);
        cfg->rope_orig_max_pos = (int)maxpos;
        break;
    case SMJ_ROPE_LLAMA3:
        if (isnan(r->low) || isnan(r->high) || r->orig < 0)
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" of type llama3 needs low_freq_factor, high_freq_factor and "
                     "original_max_position_embeddings", name, key);
        cfg->rope_low_freq_factor = (float)r->low;
        cfg->rope_high_freq_factor = (float)r->high;
        cfg->rope_orig_max_pos = (int)r->orig;
        break;
    case SMJ_ROPE_YARN: {
        int64_t orig = r->orig > 0 ? r->orig : maxpos;
        if (orig > INT32_MAX) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: original context too large", name);
        cfg->rope_orig_max_pos = (int)orig;
        /* beta_fast/slow: "or 32" / "or 1" as in transformers (0 or null = default) */
        cfg->rope_beta_fast = isnan(r->beta_fast) || r->beta_fast == 0 ? 32.0f : (float)r->beta_fast;
        cfg->rope_beta_slow = isnan(r->beta_slow) || r->beta_slow == 0 ? 1.0f : (float)r->beta_slow;
        double attn = r->attn;
        if (isnan(attn)) {
            if (!isnan(r->mscale) && !isnan(r->mscale_all_dim) && r->mscale != 0 && r->mscale_all_dim != 0)
                attn = yarn_get_mscale(factor, r->mscale) / yarn_get_mscale(factor, r->mscale_all_dim);
            else
                attn = yarn_get_mscale(factor, 1.0);
        }
        if (!(attn > 0) || !isfinite((float)attn))
            SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: \"%s\" yarn attention factor %g is not a positive float", name, key, attn);
        cfg->rope_attn_factor = (float)attn;
        cfg->rope_yarn_no_truncate = r->truncate == 0;
        break;
    }
    default:
        break;
    }
    return SMJ_OK;
}

/* GPT2LMHeadModel (model_type gpt2): its own key names (n_embd, n_layer, ...).
 * Refused by name: an activation other than the tanh GELU, unscaled or
 * layer-scaled attention, reordered/upcast attention, cross-attention. */
static smj_status parse_gpt2(smj_ctx *ctx, const char *name, const smj_json *root, int max_seq_len,
                             smj_model_config *cfg, char *notes, size_t notes_cap) {
    const smj_json *act = smj_json_get(root, "activation_function");
    if (act && act->type != SMJ_JSON_NULL &&
        (act->type != SMJ_JSON_STRING || (strcmp(act->str, "gelu_new") != 0 && strcmp(act->str, "gelu_pytorch_tanh") != 0)))
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"activation_function\" = %.100s is not supported (only \"gelu_new\" or "
                 "\"gelu_pytorch_tanh\")", name, act->type == SMJ_JSON_STRING ? act->str : smj_json_type_name(act->type));
    int scale = 1, inv_layer = 0, reorder = 0, cross = 0, tied = 1;
    SMJ_TRY(get_bool(ctx, name, root, "scale_attn_weights", &scale));
    if (!scale) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"scale_attn_weights\": false is not supported", name);
    SMJ_TRY(get_bool(ctx, name, root, "scale_attn_by_inverse_layer_idx", &inv_layer));
    if (inv_layer) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"scale_attn_by_inverse_layer_idx\": true is not supported", name);
    SMJ_TRY(get_bool(ctx, name, root, "reorder_and_upcast_attn", &reorder));
    if (reorder) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"reorder_and_upcast_attn\": true is not supported", name);
    SMJ_TRY(get_bool(ctx, name, root, "add_cross_attention", &cross));
    if (cross) SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: \"add_cross_attention\": true is not supported", name);
    SMJ_TRY(get_bool(ctx, name, root, "tie_word_embeddings", &tied));
    int64_t V = 50257, C = 768, L = 12, NH = 12, maxpos = 1024, H = -1;
    SMJ_TRY(get_int(ctx, name, root, "vocab_size", 0, 2, 1 << 24, &V));
    SMJ_TRY(get_int(ctx, name, root, "n_embd", 0, 1, 65536, &C));
    SMJ_TRY(get_int(ctx, name, root, "n_layer", 0, 1, 1024, &L));
    SMJ_TRY(get_int(ctx, name, root, "n_head", 0, 1, 1024, &NH));
    SMJ_TRY(get_int(ctx, name, root, "n_positions", 0, 1, 1 << 20, &maxpos));
    SMJ_TRY(get_int(ctx, name, root, "n_inner", 0, 1, 1 << 20, &H));
    if (H < 0) H = 4 * C;
    double eps = 1e-5;
    SMJ_TRY(get_num(ctx, name, root, "layer_norm_epsilon", &eps));
    if (!(eps > 0 && eps < 1)) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: layer_norm_epsilon %g is not in (0, 1)", name, eps);
    if (C % NH) SMJ_FAIL(ctx, SMJ_ERR_FORMAT, "%s: n_embd %lld is not a multiple of n_head %lld", name, (long long)C, (long long)NH);
    int64_t T = maxpos;
    if (max_seq_len > 0) {
        if (max_seq_len > maxpos)
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "%s: context %d exceeds n_positions %lld (GPT-2's positions are learned)",
                     name, max_seq_len, (long long)maxpos);
        note(notes, notes_cap, "context %d of the model's %lld positions (wpe keeps all of them)", max_seq_len,
             (long long)maxpos);
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = SMJ_ARCH_GPT2;
    cfg->vocab_size = (int)V;
    cfg->dim = (int)C;
    cfg->n_layers = (int)L;
    cfg->n_heads = cfg->n_kv_heads = (int)NH;
    cfg->head_dim = (int)(C / NH);
    cfg->ffn_hidden = (int)H;
    cfg->max_seq_len = (int)T; /* = n_positions: wpe has that many rows */
    cfg->rope_theta = 10000.0f; /* unused */
    cfg->norm_eps = (float)eps;
    cfg->tied_embeddings = tied;
    smj_status st = smj_config_validate(ctx, cfg);
    if (st != SMJ_OK) {
        char msg[sizeof ctx->err];
        snprintf(msg, sizeof msg, "%s", smj_ctx_error(ctx));
        st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: %s", name, msg);
    }
    return st;
}

smj_status smj_hf_config_parse(smj_ctx *ctx, const char *text, size_t n, const char *name, int max_seq_len,
                               smj_model_config *cfg, const char **arch_out, char *notes, size_t notes_cap) {
    if (notes && notes_cap) notes[0] = 0;
    smj_json_doc *doc;
    const smj_json *root;
    SMJ_TRY(smj_json_parse(ctx, text, n, name, 32, &doc, &root));
    smj_status st = SMJ_OK;
#define TRY(e) do { if ((st = (e)) != SMJ_OK) goto done; } while (0)
#define FAIL(s, ...) do { st = smj_set_error(ctx, (s), __VA_ARGS__); goto done; } while (0)
    if (root->type != SMJ_JSON_OBJECT) FAIL(SMJ_ERR_FORMAT, "%s: not a JSON object", name);
    /* The architecture: architectures[0], else model_type. */
    const smj_json *archs = smj_json_get(root, "architectures"), *mt = smj_json_get(root, "model_type");
    const char *arch_name = NULL;
    if (archs && archs->type != SMJ_JSON_NULL) {
        if (archs->type != SMJ_JSON_ARRAY || archs->len == 0 || archs->kids[0].type != SMJ_JSON_STRING)
            FAIL(SMJ_ERR_FORMAT, "%s: \"architectures\" is not a non-empty list of strings", name);
        if (archs->len > 1) FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"architectures\" lists %zu classes; expected one", name, archs->len);
        arch_name = archs->kids[0].str;
    }
    if (arch_name ? strcmp(arch_name, "GPT2LMHeadModel") == 0
                  : mt && mt->type == SMJ_JSON_STRING && strcmp(mt->str, "gpt2") == 0) {
        if (mt && mt->type == SMJ_JSON_STRING && strcmp(mt->str, "gpt2") != 0)
            FAIL(SMJ_ERR_FORMAT, "%s: model_type \"%.100s\" does not match architecture GPT2LMHeadModel", name, mt->str);
        TRY(parse_gpt2(ctx, name, root, max_seq_len, cfg, notes, notes_cap));
        if (arch_out) *arch_out = "GPT2LMHeadModel";
        goto done;
    }
    const arch_info *a = NULL;
    for (int i = 0; i < N_ARCHS; i++) {
        if (arch_name ? strcmp(arch_name, ARCHS[i].arch) == 0
                      : mt && mt->type == SMJ_JSON_STRING && strcmp(mt->str, ARCHS[i].model_type) == 0)
            a = &ARCHS[i];
    }
    if (!a) {
        const char *what = arch_name ? arch_name : mt && mt->type == SMJ_JSON_STRING ? mt->str : NULL;
        if (!what) FAIL(SMJ_ERR_FORMAT, "%s: neither \"architectures\" nor \"model_type\" names the model", name);
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: architecture %.100s is not supported yet (supported: LlamaForCausalLM, "
             "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GPT2LMHeadModel)", name, what);
    }
    if (mt && mt->type == SMJ_JSON_STRING && strcmp(mt->str, a->model_type) != 0)
        FAIL(SMJ_ERR_FORMAT, "%s: model_type \"%.100s\" does not match architecture %s", name, mt->str, a->arch);

    /* Keys that change the math. */
    const smj_json *act = smj_json_get(root, "hidden_act");
    if (act && act->type != SMJ_JSON_NULL && (act->type != SMJ_JSON_STRING || strcmp(act->str, "silu") != 0))
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"hidden_act\" = %s is not supported (only \"silu\")", name,
             act->type == SMJ_JSON_STRING ? act->str : smj_json_type_name(act->type));
    int mlp_bias = 0, attn_bias = 0;
    TRY(get_bool(ctx, name, root, "mlp_bias", &mlp_bias));
    if (mlp_bias) FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"mlp_bias\": true is not supported (the MLP has no biases)", name);
    TRY(get_bool(ctx, name, root, "attention_bias", &attn_bias));
    if (attn_bias && a->bias == 0)
        FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"attention_bias\": true is not supported for %s", name, a->arch);
    double theta = 10000.0, eps = 1e-6, prf = 1.0;
    TRY(get_num(ctx, name, root, "rope_theta", &theta));
    TRY(get_num(ctx, name, root, "partial_rotary_factor", &prf));
    if (prf != 1.0) FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"partial_rotary_factor\" = %g is not supported (only 1)", name, prf);
    /* rope_parameters (transformers 5) wins over rope_scaling (older) */
    rope_in rope_s = {0, 0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, -1, 1}, rope_p = rope_s;
    TRY(parse_rope(ctx, name, root, "rope_scaling", &rope_s));
    TRY(parse_rope(ctx, name, root, "rope_parameters", &rope_p));
    const rope_in *rope = rope_p.present ? &rope_p : &rope_s;
    const char *rope_key = rope_p.present ? "rope_parameters" : "rope_scaling";
    if (!isnan(rope->theta)) theta = rope->theta;
    TRY(get_num(ctx, name, root, "rms_norm_eps", &eps));

    int64_t V = 0, C = 0, H = 0, L = 0, NH = 0, NKV = -1, HS = -1, maxpos = a->default_max_pos;
    TRY(get_int(ctx, name, root, "vocab_size", 1, 2, 1 << 24, &V));
    TRY(get_int(ctx, name, root, "hidden_size", 1, 1, 65536, &C));
    TRY(get_int(ctx, name, root, "intermediate_size", 1, 1, 1 << 20, &H));
    TRY(get_int(ctx, name, root, "num_hidden_layers", 1, 1, 1024, &L));
    TRY(get_int(ctx, name, root, "num_attention_heads", 1, 1, 1024, &NH));
    TRY(get_int(ctx, name, root, "num_key_value_heads", 0, 1, 1024, &NKV));
    TRY(get_int(ctx, name, root, "head_dim", 0, 2, 1024, &HS));
    TRY(get_int(ctx, name, root, "max_position_embeddings", 0, 1, INT64_MAX, &maxpos));
    if (NKV < 0) NKV = NH;
    if (HS < 0) {
        if (C % NH) FAIL(SMJ_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld and "
                         "there is no head_dim", name, (long long)C, (long long)NH);
        HS = C / NH;
    }
    int tied = 0;
    TRY(get_bool(ctx, name, root, "tie_word_embeddings", &tied));

    /* Context length: max_position_embeddings, capped. */
    int64_t T = maxpos;
    if (a->has_sliding) {
        int use = 1;
        if (a->has_sliding == 2) {
            use = 0;
            TRY(get_bool(ctx, name, root, "use_sliding_window", &use));
        }
        int64_t sw = -1;
        TRY(get_int(ctx, name, root, "sliding_window", 0, 1, INT64_MAX, &sw));
        if (use && sw > 0 && sw < T) {
            note(notes, notes_cap, "sliding_window %lld < max_position_embeddings %lld: the context is limited to "
                 "%lld tokens, where full attention equals sliding-window attention", (long long)sw, (long long)maxpos,
                 (long long)sw);
            T = sw;
        }
    }
    const smj_json *lt = smj_json_get(root, "layer_types");
    if (lt && lt->type == SMJ_JSON_ARRAY)
        for (size_t i = 0; i < lt->len; i++)
            if (lt->kids[i].type != SMJ_JSON_STRING || strcmp(lt->kids[i].str, "full_attention") != 0) {
                /* sliding layers are exact within the window capped above */
                if (lt->kids[i].type == SMJ_JSON_STRING && strcmp(lt->kids[i].str, "sliding_attention") == 0 &&
                    a->has_sliding && T != maxpos)
                    continue;
                FAIL(SMJ_ERR_UNSUPPORTED, "%s: \"layer_types\"[%zu] = %s is not supported", name, i,
                     lt->kids[i].type == SMJ_JSON_STRING ? lt->kids[i].str : "?");
            }
    if (max_seq_len > 0) {
        if (max_seq_len > T)
            note(notes, notes_cap, "context %d exceeds the model's %lld positions", max_seq_len, (long long)T);
        T = max_seq_len;
    } else if (T > SMJ_HF_MAX_SEQ_LEN) {
        note(notes, notes_cap, "max_position_embeddings %lld capped at %d (choose another context with max_seq_len)",
             (long long)T, SMJ_HF_MAX_SEQ_LEN);
        T = SMJ_HF_MAX_SEQ_LEN;
    }
    if (!(theta > 0) || !isfinite((float)theta)) FAIL(SMJ_ERR_FORMAT, "%s: rope_theta %g is not a positive float", name, theta);
    if (!(eps > 0 && eps < 1)) FAIL(SMJ_ERR_FORMAT, "%s: rms_norm_eps %g is not in (0, 1)", name, eps);

    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = (int)V;
    cfg->dim = (int)C;
    cfg->n_layers = (int)L;
    cfg->n_heads = (int)NH;
    cfg->n_kv_heads = (int)NKV;
    cfg->head_dim = (int)HS;
    cfg->ffn_hidden = (int)H;
    cfg->max_seq_len = (int)T;
    cfg->rope_theta = (float)theta;
    cfg->norm_eps = (float)eps;
    cfg->tied_embeddings = tied;
    cfg->qk_norm = a->qk_norm;
    cfg->attn_bias = a->bias == 2 || attn_bias;
    cfg->attn_out_bias = a->bias == 1 && attn_bias;
    TRY(rope_to_cfg(ctx, name, rope_key, rope, maxpos, cfg));
    if (arch_out) *arch_out = a->arch;
    st = smj_config_validate(ctx, cfg);
    if (st != SMJ_OK) {
        char msg[sizeof ctx->err];
        snprintf(msg, sizeof msg, "%s", smj_ctx_error(ctx));
        st = smj_set_error(ctx, SMJ_ERR_UNSUPPORTED, "%s: %s", name, msg);
    }
done:
#undef TRY
#undef FAIL
    smj_json_free(doc);
    return st;
}

static void put_token_ids(smj_jbuf *b, const smj_tokenizer *tok, const char *indent) {
    static const char *const KEYS[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    static const smj_special WHICH[3] = {SMJ_TOKEN_BOS, SMJ_TOKEN_EOS, SMJ_TOKEN_PAD};
    for (int i = 0; i < 3; i++) {
        if (tok) smj_jbuf_printf(b, "%s\"%s\": %d,\n", indent, KEYS[i], smj_tokenizer_special_id(tok, WHICH[i]));
        else smj_jbuf_printf(b, "%s\"%s\": null,\n", indent, KEYS[i]);
    }
}

/* The rope dict of a scaled model (the same text goes under rope_parameters
 * for transformers 5 and rope_scaling for older versions). */
static void put_rope(smj_jbuf *b, const smj_model_config *c) {
    smj_jbuf_printf(b, "{\"rope_type\": \"%s\", \"rope_theta\": ", smj_rope_type_name(c->rope_type));
    smj_jbuf_float(b, c->rope_theta);
    smj_jbuf_puts(b, ", \"factor\": ");
    smj_jbuf_float(b, c->rope_factor);
    if (c->rope_type == SMJ_ROPE_LLAMA3) {
        smj_jbuf_puts(b, ", \"low_freq_factor\": ");
        smj_jbuf_float(b, c->rope_low_freq_factor);
        smj_jbuf_puts(b, ", \"high_freq_factor\": ");
        smj_jbuf_float(b, c->rope_high_freq_factor);
        smj_jbuf_printf(b, ", \"original_max_position_embeddings\": %d", c->rope_orig_max_pos);
    } else if (c->rope_type == SMJ_ROPE_YARN) {
        float attn = c->rope_attn_factor > 0 ? c->rope_attn_factor
                     : c->rope_factor <= 1 ? 1.0f : (float)(0.1 * log((double)c->rope_factor) + 1.0);
        smj_jbuf_printf(b, ", \"original_max_position_embeddings\": %d",
                        c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len);
        smj_jbuf_puts(b, ", \"beta_fast\": ");
        smj_jbuf_float(b, c->rope_beta_fast > 0 ? c->rope_beta_fast : 32.0f);
        smj_jbuf_puts(b, ", \"beta_slow\": ");
        smj_jbuf_float(b, c->rope_beta_slow > 0 ? c->rope_beta_slow : 1.0f);
        smj_jbuf_puts(b, ", \"attention_factor\": ");
        smj_jbuf_float(b, attn);
        if (c->rope_yarn_no_truncate) smj_jbuf_puts(b, ", \"truncate\": false");
    }
    smj_jbuf_puts(b, "}");
}

smj_status smj_hf_config_json(smj_ctx *ctx, const smj_model_config *c, const smj_tokenizer *tok, int bf16,
                              smj_jbuf *b) {
    SMJ_TRY(smj_config_validate(ctx, c));
    if (c->arch == SMJ_ARCH_GPT2) {
        smj_jbuf_printf(b, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n");
        smj_jbuf_printf(b, "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_head\": %d,\n"
                        "  \"n_positions\": %d,\n  \"n_inner\": %d,\n  \"activation_function\": \"gelu_new\",\n",
                        c->vocab_size, c->dim, c->n_layers, c->n_heads, c->max_seq_len, c->ffn_hidden);
        smj_jbuf_puts(b, "  \"layer_norm_epsilon\": ");
        smj_jbuf_float(b, c->norm_eps);
        smj_jbuf_puts(b, ",\n  \"scale_attn_weights\": true,\n  \"scale_attn_by_inverse_layer_idx\": false,\n"
                      "  \"reorder_and_upcast_attn\": false,\n");
        smj_jbuf_printf(b, "  \"tie_word_embeddings\": %s,\n", c->tied_embeddings ? "true" : "false");
        put_token_ids(b, tok, "  ");
        smj_jbuf_printf(b, "  \"initializer_range\": 0.02,\n  \"use_cache\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
                        bf16 ? "bfloat16" : "float32");
        if (b->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory writing config.json");
        return SMJ_OK;
    }
    /* the architecture that has exactly these biases */
    const char *arch = "LlamaForCausalLM", *mt = "llama";
    if (c->qk_norm) {
        if (c->attn_bias != c->attn_out_bias)
            SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "a QK-norm model with %s biases has no HuggingFace architecture "
                     "(Qwen3 biases q/k/v/o together)", c->attn_bias ? "q/k/v but no o_proj" : "only o_proj");
        arch = "Qwen3ForCausalLM";
        mt = "qwen3";
    } else if (c->attn_bias && !c->attn_out_bias) {
        arch = "Qwen2ForCausalLM";
        mt = "qwen2";
    } else if (!c->attn_bias && c->attn_out_bias) {
        SMJ_FAIL(ctx, SMJ_ERR_UNSUPPORTED, "a model with an o_proj bias but no q/k/v biases has no HuggingFace "
                 "architecture");
    }
    int qwen = c->qk_norm || c->attn_bias != c->attn_out_bias;
    /* dynamic NTK grows the base past max_position_embeddings: that has to be the original context */
    int maxpos = c->rope_type == SMJ_ROPE_DYNAMIC && c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len;
    smj_jbuf_printf(b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", arch, mt);
    smj_jbuf_printf(b, "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                    "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
                    "  \"head_dim\": %d,\n  \"max_position_embeddings\": %d,\n",
                    c->vocab_size, c->dim, c->ffn_hidden, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                    maxpos);
    smj_jbuf_puts(b, "  \"rope_theta\": ");
    smj_jbuf_float(b, c->rope_theta);
    if (c->rope_type == SMJ_ROPE_DEFAULT) {
        smj_jbuf_puts(b, ",\n  \"rope_scaling\": null");
    } else {
        smj_jbuf_puts(b, ",\n  \"rope_scaling\": ");
        put_rope(b, c);
        smj_jbuf_puts(b, ",\n  \"rope_parameters\": ");
        put_rope(b, c);
    }
    smj_jbuf_puts(b, ",\n  \"rms_norm_eps\": ");
    smj_jbuf_float(b, c->norm_eps);
    smj_jbuf_puts(b, ",\n  \"hidden_act\": \"silu\",\n");
    if (strcmp(mt, "qwen2") != 0)
        smj_jbuf_printf(b, "  \"attention_bias\": %s,\n", c->attn_bias ? "true" : "false");
    smj_jbuf_puts(b, "  \"attention_dropout\": 0.0,\n");
    if (qwen)
        smj_jbuf_printf(b, "  \"use_sliding_window\": false,\n  \"sliding_window\": null,\n  \"max_window_layers\": %d,\n",
                        c->n_layers);
    else
        smj_jbuf_puts(b, "  \"mlp_bias\": false,\n  \"pretraining_tp\": 1,\n");
    smj_jbuf_printf(b, "  \"tie_word_embeddings\": %s,\n", c->tied_embeddings ? "true" : "false");
    put_token_ids(b, tok, "  ");
    smj_jbuf_printf(b, "  \"initializer_range\": 0.02,\n  \"use_cache\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
                    bf16 ? "bfloat16" : "float32");
    if (b->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory writing config.json");
    return SMJ_OK;
}

smj_status smj_hf_generation_config_json(smj_ctx *ctx, const smj_tokenizer *tok, smj_jbuf *b) {
    smj_jbuf_puts(b, "{\n");
    put_token_ids(b, tok, "  ");
    smj_jbuf_puts(b, "  \"_from_model_config\": true\n}\n");
    if (b->failed) SMJ_FAIL(ctx, SMJ_ERR_NOMEM, "out of memory writing generation_config.json");
    return SMJ_OK;
}
