/* rope.c — RoPE's cos/sin tables: HuggingFace's half-split rotation, the
 * tables computed once per model in fp32 the way transformers computes
 * them, including its scaled variants (linear, dynamic NTK, llama3, YaRN;
 * smj_rope_inv_freq). Dynamic NTK depends on the sequence length: its table
 * rows are rebuilt when a forward reaches past the original context
 * (smj_rope_prepare). Shared by every family that rotates (the ops apply
 * the tables: rope_fwd / rope_bwd). */
#include <math.h>
#include "model.h"

/* The default inverse frequencies: inv_freq = 1/theta^(2i/HS) rounded to
 * fp32 (what transformers' fp32 computation gives to within an ulp). */
static float rope_default_inv(double theta, int i, int HS) {
    return (float)(1.0 / pow(theta, (double)(float)(2 * i) / (float)HS));
}

static float yarn_mscale(double factor) { return factor <= 1.0 ? 1.0f : (float)(0.1 * log(factor) + 1.0); }

/* transformers' modeling_rope_utils.py, reproduced formula by formula with
 * its dtypes: Python floats are doubles, tensors fp32 (a Python scalar meets
 * a tensor as fp32). */
void smj_rope_inv_freq(const smj_model_config *c, int64_t seq_len, float *inv, float *attn) {
    int HS = c->head_dim, h2 = HS / 2;
    double theta = (double)c->rope_theta, factor = (double)c->rope_factor;
    *attn = 1.0f;
    switch (c->rope_type) {
    default:
    case SMJ_ROPE_DEFAULT:
        for (int i = 0; i < h2; i++) inv[i] = rope_default_inv(theta, i, HS);
        break;
    case SMJ_ROPE_LINEAR: /* inv_freq /= factor */
        for (int i = 0; i < h2; i++) inv[i] = rope_default_inv(theta, i, HS) / (float)factor;
        break;
    case SMJ_ROPE_DYNAMIC: {
        /* base = theta * ((factor * L / orig) - (factor - 1)) ** (dim / (dim - 2)),
         * L = max(seq_len, orig). At L = orig (model init) transformers
         * evaluates it with Python floats; past it (a forward's seq_len is a
         * tensor) in fp32. */
        int64_t orig = c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len;
        double ex = (double)HS / (double)(HS - 2);
        float base;
        if (seq_len <= orig) {
            base = (float)(theta * pow(factor * (double)orig / (double)orig - (factor - 1.0), ex));
        } else {
            float s = (float)factor * (float)seq_len;
            s = s / (float)orig;
            s = s - (float)(factor - 1.0);
            base = (float)theta * powf(s, (float)ex);
        }
        for (int i = 0; i < h2; i++) inv[i] = rope_default_inv((double)base, i, HS);
        break;
    }
    case SMJ_ROPE_LLAMA3: {
        /* wavelen = 2 pi / inv; wavelen > orig/low: inv / factor; wavelen <
         * orig/high: inv; between: (1 - s) * inv / factor + s * inv with
         * s = (orig / wavelen - low) / (high - low). */
        double old = (double)c->rope_orig_max_pos, lo = (double)c->rope_low_freq_factor,
               hi = (double)c->rope_high_freq_factor;
        float low_wl = (float)(old / lo), high_wl = (float)(old / hi);
        for (int i = 0; i < h2; i++) {
            float f = rope_default_inv(theta, i, HS);
            float wl = (float)(2.0 * M_PI) / f;
            float r = wl > low_wl ? f / (float)factor : f;
            if (!(wl < high_wl) && !(wl > low_wl)) {
                float sm = ((float)old / wl - (float)lo) / (float)(hi - lo);
                r = (1.0f - sm) * r / (float)factor + sm * r;
            }
            inv[i] = r;
        }
        break;
    }
    case SMJ_ROPE_YARN: {
        /* Blend of interpolated (inv / factor) and extrapolated (inv)
         * frequencies by a linear ramp over the dimension range
         * [floor(d(beta_fast)), ceil(d(beta_slow))], d(r) = HS * ln(orig / (2 pi r)) / (2 ln theta);
         * cos/sin are multiplied by the attention factor. */
        double bf = c->rope_beta_fast > 0 ? (double)c->rope_beta_fast : 32.0;
        double bs = c->rope_beta_slow > 0 ? (double)c->rope_beta_slow : 1.0;
        double orig = (double)(c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len);
        double low = (double)HS * log(orig / (bf * 2.0 * M_PI)) / (2.0 * log(theta));
        double high = (double)HS * log(orig / (bs * 2.0 * M_PI)) / (2.0 * log(theta));
        if (!c->rope_yarn_no_truncate) { low = floor(low); high = ceil(high); }
        if (low < 0) low = 0;
        if (high > HS - 1) high = HS - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < h2; i++) {
            float pos = (float)pow(theta, (double)(float)(2 * i) / (float)HS);
            float extrap = 1.0f / pos, interp = 1.0f / ((float)factor * pos);
            float ramp = ((float)i - (float)low) / (float)(high - low);
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float ef = 1.0f - ramp;
            inv[i] = interp * (1.0f - ef) + extrap * ef;
        }
        *attn = c->rope_attn_factor > 0 ? c->rope_attn_factor : yarn_mscale(factor);
        break;
    }
    }
}

/* angle = float(pos) * inv_freq in fp32, then cos/sin (times the attention factor). */
void smj_rope_rows(const smj_model_config *c, const float *inv, float attn, int p0, int p1, float *cs, float *sn) {
    int h2 = c->head_dim / 2;
    for (int p = p0; p < p1; p++)
        for (int i = 0; i < h2; i++) {
            float a = (float)p * inv[i];
            cs[(int64_t)p * h2 + i] = attn == 1.0f ? cosf(a) : cosf(a) * attn;
            sn[(int64_t)p * h2 + i] = attn == 1.0f ? sinf(a) : sinf(a) * attn;
        }
}

void smj_rope_prepare(smj_model *m, int p0, int n) {
    const smj_model_config *c = &m->cfg;
    if (c->rope_type != SMJ_ROPE_DYNAMIC || !m->rope_row_len) return;
    int64_t orig = c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len;
    int64_t L = (int64_t)p0 + n, want = L > orig ? L : orig;
    int lo = -1, hi = -1;
    for (int p = p0; p < p0 + n; p++)
        if (m->rope_row_len[p] != want) {
            if (lo < 0) lo = p;
            hi = p;
        }
    if (lo < 0) return;
    int h2 = c->head_dim / 2;
    float inv[512], attn;
    smj_rope_inv_freq(c, want, inv, &attn);
    float *cs = m->rope_host, *sn = m->rope_host + (int64_t)c->max_seq_len * h2;
    smj_rope_rows(c, inv, attn, lo, hi + 1, cs, sn);
    size_t off = (size_t)lo * h2, bytes = sizeof(float) * (size_t)(hi + 1 - lo) * h2;
    m->be->upload(m->rope_cos + off, cs + off, bytes);
    m->be->upload(m->rope_sin + off, sn + off, bytes);
    for (int p = lo; p <= hi; p++) m->rope_row_len[p] = want;
}
