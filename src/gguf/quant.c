/* quant.c — GGML type sizes, IEEE half conversion and the q8_0/q4_0 block
 * quantizers (see gguf.h for the exact arithmetic, which follows ggml's
 * reference quantizers so our files are bit-identical to llama-quantize's
 * "pure" output for the same fp32 weights).
 *
 * The arithmetic must stay in float with no contraction into FMAs: the
 * Makefile builds with -std=c11, where GCC's default is -ffp-contract=off.
 */
#include <math.h>
#include <string.h>
#include "gguf.h"

typedef struct { int type; const char *name; int values, bytes; } type_row;

/* Block geometry of every GGML type the reader can size (ggml-common.h). */
static const type_row types[] = {
    {SMJ_GGML_F32, "f32", 1, 4},       {SMJ_GGML_F16, "f16", 1, 2},
    {SMJ_GGML_Q4_0, "q4_0", 32, 18},   {SMJ_GGML_Q4_1, "q4_1", 32, 20},
    {SMJ_GGML_Q5_0, "q5_0", 32, 22},   {SMJ_GGML_Q5_1, "q5_1", 32, 24},
    {SMJ_GGML_Q8_0, "q8_0", 32, 34},   {SMJ_GGML_Q8_1, "q8_1", 32, 36},
    {SMJ_GGML_Q2_K, "q2_K", 256, 84},  {SMJ_GGML_Q3_K, "q3_K", 256, 110},
    {SMJ_GGML_Q4_K, "q4_K", 256, 144}, {SMJ_GGML_Q5_K, "q5_K", 256, 176},
    {SMJ_GGML_Q6_K, "q6_K", 256, 210}, {SMJ_GGML_Q8_K, "q8_K", 256, 292},
    {SMJ_GGML_I8, "i8", 1, 1},         {SMJ_GGML_I16, "i16", 1, 2},
    {SMJ_GGML_I32, "i32", 1, 4},       {SMJ_GGML_I64, "i64", 1, 8},
    {SMJ_GGML_F64, "f64", 1, 8},       {SMJ_GGML_BF16, "bf16", 1, 2},
};

static const type_row *find_type(int type) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].type == type) return &types[i];
    return NULL;
}

int smj_ggml_type_size(int type, int *block_values, int *block_bytes) {
    const type_row *t = find_type(type);
    *block_values = t ? t->values : 0;
    *block_bytes = t ? t->bytes : 0;
    return t != NULL;
}

const char *smj_ggml_type_name(int type) {
    const type_row *t = find_type(type);
    return t ? t->name : NULL;
}

int64_t smj_ggml_row_bytes(int type, int64_t ne0) {
    const type_row *t = find_type(type);
    if (!t || ne0 < 0 || ne0 % t->values) return -1;
    return ne0 / t->values * t->bytes;
}

/* ---- IEEE half */

uint16_t smj_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00); /* NaN, Inf */
    if (ax >= 0x477ff000u) return sign | 0x7c00;  /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {                       /* below 2^-14: a subnormal half or zero */
        if (ax <= 0x33000000u) return sign;       /* <= 2^-25 (the tie goes to even 0) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;                 /* value / 2^-24 = m >> shift */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;                /* q may carry into the smallest normal */
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u); /* round the low 13 bits to nearest even */
    return sign | (uint16_t)((r - (112u << 23)) >> 13);
}

float smj_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        memcpy(&x, &v, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void put_f16(uint8_t *p, float f) {
    uint16_t h = smj_fp32_to_fp16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return smj_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8)); }

void smj_quantize_f16(const float *x, uint8_t *y, int64_t k) {
    for (int64_t i = 0; i < k; i++) put_f16(y + 2 * i, x[i]);
}

/* ---- q8_0 and q4_0 */

void smj_quantize_q8_0(const float *x, uint8_t *y, int64_t k) {
    for (int64_t b = 0; b < k / 32; b++, x += 32, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(y, d);
        for (int j = 0; j < 32; j++) {
            const float v = x[j] * id;
            y[2 + j] = (uint8_t)(int8_t)roundf(v);
        }
    }
}

void smj_quantize_q4_0(const float *x, uint8_t *y, int64_t k) {
    for (int64_t b = 0; b < k / 32; b++, x += 32, y += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(y, d);
        for (int j = 0; j < 16; j++) {
            const float v0 = x[j] * id, v1 = x[16 + j] * id;
            const float s0 = v0 + 8.5f, s1 = v1 + 8.5f;
            int q0 = (int8_t)s0, q1 = (int8_t)s1;
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[2 + j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

int smj_dequantize(int type, const uint8_t *src, float *dst, int64_t k) {
    switch (type) {
    case SMJ_GGML_F32:
        memcpy(dst, src, (size_t)k * 4);
        return 0;
    case SMJ_GGML_F16:
        for (int64_t i = 0; i < k; i++) dst[i] = get_f16(src + 2 * i);
        return 0;
    case SMJ_GGML_BF16:
        for (int64_t i = 0; i < k; i++) {
            uint32_t u = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &u, 4);
        }
        return 0;
    case SMJ_GGML_Q8_0:
        if (k % 32) return -1;
        for (int64_t b = 0; b < k / 32; b++, src += 34, dst += 32) {
            const float d = get_f16(src);
            for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)src[2 + j] * d;
        }
        return 0;
    case SMJ_GGML_Q4_0:
        if (k % 32) return -1;
        for (int64_t b = 0; b < k / 32; b++, src += 18, dst += 32) {
            const float d = get_f16(src);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                dst[16 + j] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        return 0;
    default:
        return -1;
    }
}

/* ---- RoPE row permutation */

void smj_gguf_permute_rows(const float *src, float *dst, int n_heads, int head_dim, int64_t cols,
                           int inverse) {
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < half; j++)
            for (int s = 0; s < 2; s++) {
                int64_t inter = (int64_t)h * head_dim + 2 * j + s;   /* llama.cpp's row */
                int64_t split = (int64_t)h * head_dim + s * half + j; /* HF's row */
                const float *from = src + (inverse ? inter : split) * cols;
                float *to = dst + (inverse ? split : inter) * cols;
                memcpy(to, from, sizeof(float) * (size_t)cols);
            }
}

/* ---- GPT-2's bytes_to_unicode */

uint32_t smj_gguf_byte_to_cp(uint8_t b) {
    /* Printable bytes (33..126, 161..172, 174..255) stand for themselves; the
     * other 68 take code points 256, 257, ... in byte order. */
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    uint32_t n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) n++;
    return 256 + n;
}
