/* test_safetensors.c — the safetensors reader/writer (src/hf/safetensors.c).
 *
 *  - fp16/bf16 <-> fp32 conversion vectors (normal, subnormal, inf, nan,
 *    round-to-nearest-even on the way to bf16);
 *  - a file image built by hand from the format description (a header string
 *    with known offsets, padded) read correctly, metadata included;
 *  - the writer's exact bytes for a small case, and writer -> reader round
 *    trips (F32 exact, BF16 equal to the rounded values), through memory and
 *    through files, single and sharded (index file);
 *  - malformed images, each SMJ_ERR_FORMAT with the file named in the
 *    message; unknown dtypes and unconvertible ones SMJ_ERR_UNSUPPORTED
 *    naming the tensor and the dtype.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../src/core/core.h"
#include "../src/hf/safetensors.h"
#include "util/check.h"

static uint32_t fbits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}
static float bitsf(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static void test_conversions(void) {
    /* bf16 -> f32: the bits shifted up */
    CHECK(smj_bf16_to_f32(0x3F80) == 1.0f, "bf16 0x3F80 = 1");
    CHECK(smj_bf16_to_f32(0xC000) == -2.0f, "bf16 0xC000 = -2");
    CHECK(smj_bf16_to_f32(0x0001) == bitsf(0x00010000u), "bf16 smallest subnormal");
    CHECK(isinf(smj_bf16_to_f32(0x7F80)) && smj_bf16_to_f32(0x7F80) > 0, "bf16 +inf");
    CHECK(isinf(smj_bf16_to_f32(0xFF80)) && smj_bf16_to_f32(0xFF80) < 0, "bf16 -inf");
    CHECK(isnan(smj_bf16_to_f32(0x7FC0)), "bf16 nan");
    CHECK(fbits(smj_bf16_to_f32(0x8000)) == 0x80000000u, "bf16 -0");
    /* f16 -> f32, exact */
    CHECK(smj_f16_to_f32(0x3C00) == 1.0f, "f16 0x3C00 = 1");
    CHECK(smj_f16_to_f32(0xC000) == -2.0f, "f16 0xC000 = -2");
    CHECK(smj_f16_to_f32(0x3555) == 0x1.554p-2f, "f16 0x3555 = 0.333251953125");
    CHECK(smj_f16_to_f32(0x7BFF) == 65504.0f, "f16 max = 65504");
    CHECK(smj_f16_to_f32(0x0400) == 0x1p-14f, "f16 smallest normal");
    CHECK(smj_f16_to_f32(0x0001) == 0x1p-24f, "f16 smallest subnormal = 2^-24");
    CHECK(smj_f16_to_f32(0x03FF) == 0x3FFp-24f, "f16 largest subnormal");
    CHECK(smj_f16_to_f32(0x8001) == -0x1p-24f, "f16 negative subnormal");
    CHECK(fbits(smj_f16_to_f32(0x8000)) == 0x80000000u, "f16 -0");
    CHECK(isinf(smj_f16_to_f32(0x7C00)) && smj_f16_to_f32(0x7C00) > 0, "f16 +inf");
    CHECK(isinf(smj_f16_to_f32(0xFC00)) && smj_f16_to_f32(0xFC00) < 0, "f16 -inf");
    CHECK(isnan(smj_f16_to_f32(0x7E00)) && isnan(smj_f16_to_f32(0x7C01)), "f16 nan");
    /* every finite f16 converts exactly: compare with ldexp arithmetic */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) continue;
        double v = e ? ldexp(1024 + m, (int)e - 25) : ldexp(m, -24);
        if (h & 0x8000) v = -v;
        if ((double)smj_f16_to_f32((uint16_t)h) != v) bad++;
    }
    CHECK(bad == 0, "%d f16 values convert inexactly", bad);
    /* f32 -> bf16, round to nearest even */
    CHECK(smj_f32_to_bf16(1.0f) == 0x3F80, "bf16(1)");
    CHECK(smj_f32_to_bf16(1.0f + 0x1p-8f) == 0x3F80, "tie rounds to even (down)");
    CHECK(smj_f32_to_bf16(1.0f + 0x3p-8f) == 0x3F82, "tie rounds to even (up)");
    CHECK(smj_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3F81, "above the tie rounds up");
    CHECK(smj_f32_to_bf16(bitsf(0x7F7FFFFFu)) == 0x7F80, "FLT_MAX rounds to inf");
    CHECK(smj_f32_to_bf16(-INFINITY) == 0xFF80, "-inf");
    uint16_t qn = smj_f32_to_bf16(bitsf(0x7F800001u));
    CHECK((qn & 0x7F80) == 0x7F80 && (qn & 0x7F), "a NaN whose payload is in the low bits stays NaN (got %04x)", qn);
    int rt = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) continue; /* nan */
        if (smj_f32_to_bf16(smj_bf16_to_f32((uint16_t)h)) != h) rt++;
    }
    CHECK(rt == 0, "%d bf16 values do not round-trip", rt);
}

/* 8-byte length + header + data in a new buffer. */
static uint8_t *image(const char *header, const void *data, size_t dlen, size_t *n) {
    size_t hl = strlen(header);
    uint8_t *b = malloc(8 + hl + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    *n = 8 + hl + dlen;
    return b;
}

static void test_handmade(smj_ctx *ctx) {
    /* Two tensors: "a" F32 [2] = {1, -2} at [0, 8), "b" BF16 [1, 2] = {1, -3}
     * at [8, 12), "c" F16 [] = 0.5 at [12, 14); metadata; padded to 8. */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\",\"who\":\"hand\"},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"c\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[12,14]}}";
    char padded[512];
    snprintf(padded, sizeof padded, "%s", hdr);
    while ((8 + strlen(padded)) % 8) strcat(padded, " ");
    const uint8_t data[14] = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, /* a */
                              0x80, 0x3F, 0x40, 0xC0,                         /* b */
                              0x00, 0x38};                                    /* c = f16 0.5 */
    size_t n;
    uint8_t *img = image(padded, data, sizeof data, &n);
    smj_st_file *f = NULL;
    CHECK_OK(ctx, smj_st_parse(ctx, img, n, "hand.safetensors", &f));
    if (f) {
        CHECK(smj_st_count(f) == 3, "3 tensors, got %d", smj_st_count(f));
        CHECK(smj_st_meta_count(f) == 2 && smj_st_meta(f, "format") && strcmp(smj_st_meta(f, "format"), "pt") == 0 &&
                  strcmp(smj_st_meta(f, "who"), "hand") == 0, "metadata");
        int ia = smj_st_find(f, "a"), ib = smj_st_find(f, "b"), ic = smj_st_find(f, "c");
        CHECK(ia >= 0 && ib >= 0 && ic >= 0 && smj_st_find(f, "d") < 0, "find");
        const smj_st_tensor *a = smj_st_get(f, ia), *b = smj_st_get(f, ib), *c = smj_st_get(f, ic);
        CHECK(a->dtype == SMJ_ST_F32 && a->ndim == 1 && a->shape[0] == 2 && a->begin == 0 && a->end == 8, "a");
        CHECK(b->dtype == SMJ_ST_BF16 && b->ndim == 2 && b->shape[0] == 1 && b->shape[1] == 2 && b->numel == 2, "b");
        CHECK(c->dtype == SMJ_ST_F16 && c->ndim == 0 && c->numel == 1, "c is a scalar");
        float va[2] = {0}, vb[2] = {0}, vc = 0;
        CHECK_OK(ctx, smj_st_read_f32(ctx, f, ia, va));
        CHECK_OK(ctx, smj_st_read_f32(ctx, f, ib, vb));
        CHECK_OK(ctx, smj_st_read_f32(ctx, f, ic, &vc));
        CHECK(va[0] == 1.0f && va[1] == -2.0f, "a values %g %g", (double)va[0], (double)va[1]);
        CHECK(vb[0] == 1.0f && vb[1] == -3.0f, "b values %g %g", (double)vb[0], (double)vb[1]);
        CHECK(vc == 0.5f, "c value %g", (double)vc);
        CHECK(smj_st_data(f, ib) == img + 8 + strlen(padded) + 8, "data pointer");
    }
    smj_st_close(f);
    free(img);
    /* The same without padding and with no tensors at all are fine too. */
    img = image(hdr, data, sizeof data, &n);
    CHECK_OK(ctx, smj_st_parse(ctx, img, n, "nopad.safetensors", &f));
    smj_st_close(f);
    free(img);
    img = image("{}", NULL, 0, &n);
    CHECK_OK(ctx, smj_st_parse(ctx, img, n, "empty.safetensors", &f));
    CHECK(f && smj_st_count(f) == 0, "empty file has no tensors");
    smj_st_close(f);
    free(img);
    /* zero-size tensors may share an offset */
    img = image("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4, &n);
    CHECK_OK(ctx, smj_st_parse(ctx, img, n, "zero.safetensors", &f));
    smj_st_close(f);
    free(img);
}

static void expect_bad(smj_ctx *ctx, const char *what, const char *hdr, size_t dlen, smj_status want,
                       const char *needle) {
    uint8_t data[64] = {0};
    size_t n;
    uint8_t *img = image(hdr, data, dlen, &n);
    smj_st_file *f = NULL;
    smj_status s = smj_st_parse(ctx, img, n, "bad.safetensors", &f);
    CHECK(s == want && !f, "%s: got %s (%s), want %s", what, smj_status_str(s), smj_ctx_error(ctx), smj_status_str(want));
    CHECK(strstr(smj_ctx_error(ctx), "bad.safetensors") != NULL, "%s: message does not name the file: %s", what,
          smj_ctx_error(ctx));
    if (needle) CHECK(strstr(smj_ctx_error(ctx), needle) != NULL, "%s: message lacks '%s': %s", what, needle,
                      smj_ctx_error(ctx));
    smj_st_close(f);
    free(img);
}

#define T1(dt, shape, off) "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static void test_malformed(smj_ctx *ctx) {
    const smj_status F = SMJ_ERR_FORMAT;
    expect_bad(ctx, "not json", "{not json}", 0, F, "invalid JSON");
    expect_bad(ctx, "not an object", "[1,2]   ", 0, F, "object");
    expect_bad(ctx, "trailing garbage", "{} x", 0, F, "invalid JSON");
    expect_bad(ctx, "offsets out of bounds", T1("F32", "[2]", "[0,8]"), 4, F, "exceed");
    expect_bad(ctx, "begin > end", T1("F32", "[0]", "[4,0]"), 4, F, "begin > end");
    expect_bad(ctx, "dtype x shape mismatch", T1("F32", "[3]", "[0,8]"), 8, F, "needs 12 bytes");
    expect_bad(ctx, "bf16 size mismatch", T1("BF16", "[2,2]", "[0,4]"), 4, F, "needs 8 bytes");
    expect_bad(ctx, "gap at the start", T1("F32", "[1]", "[4,8]"), 8, F, "gap");
    expect_bad(ctx, "trailing bytes", T1("F32", "[1]", "[0,4]"), 8, F, "not covered");
    expect_bad(ctx, "overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, F, "overlaps");
    expect_bad(ctx, "gap between",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, F, "gap");
    expect_bad(ctx, "duplicate names",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, F, "duplicate");
    expect_bad(ctx, "negative dim", T1("F32", "[-1]", "[0,4]"), 4, F, "shape[0]");
    expect_bad(ctx, "fractional dim", T1("F32", "[1.5]", "[0,4]"), 4, F, "shape[0]");
    expect_bad(ctx, "three offsets", T1("F32", "[1]", "[0,4,8]"), 4, F, "data_offsets");
    expect_bad(ctx, "missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, F, "dtype");
    expect_bad(ctx, "entry not an object", "{\"t\":[1]}", 0, F, "not an object");
    expect_bad(ctx, "metadata not strings", "{\"__metadata__\":{\"a\":1}}", 0, F, "__metadata__");
    expect_bad(ctx, "shape overflows", T1("F32", "[4294967296,4294967296]", "[0,4]"), 4, F, "overflows");
    expect_bad(ctx, "unknown dtype", T1("F4_E2M1", "[2]", "[0,1]"), 1, SMJ_ERR_UNSUPPORTED, "F4_E2M1");
    expect_bad(ctx, "deep header", "{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", 0, F, "nesting");

    /* header length fields */
    uint8_t small[16] = {0};
    smj_st_file *f = NULL;
    smj_status s = smj_st_parse(ctx, small, 5, "bad.safetensors", &f);
    CHECK(s == F && strstr(smj_ctx_error(ctx), "bad.safetensors"), "5-byte file: %s", smj_ctx_error(ctx));
    small[0] = 100; /* header of 100 bytes in a 16-byte file */
    s = smj_st_parse(ctx, small, 16, "bad.safetensors", &f);
    CHECK(s == F && strstr(smj_ctx_error(ctx), "exceeds the file"), "header past the end: %s", smj_ctx_error(ctx));
    memset(small, 0, 8);
    small[4] = 1; /* 2^32 bytes > 100 MB */
    s = smj_st_parse(ctx, small, 16, "bad.safetensors", &f);
    CHECK(s == F && strstr(smj_ctx_error(ctx), "limit"), "header over the limit: %s", smj_ctx_error(ctx));
    memset(small, 0xFF, 8); /* 2^64-1 must not overflow any check */
    s = smj_st_parse(ctx, small, 16, "bad.safetensors", &f);
    CHECK(s == F, "header length 2^64-1: %s", smj_ctx_error(ctx));

    /* truncation of a valid file at every length fails cleanly */
    smj_st_wtensor t[2] = {{"x", 2, {2, 3}, NULL}, {"y", 1, {4}, NULL}};
    float xv[6] = {1, 2, 3, 4, 5, 6}, yv[4] = {7, 8, 9, 10};
    t[0].data = xv;
    t[1].data = yv;
    uint8_t *img;
    size_t n;
    CHECK_OK(ctx, smj_st_serialize(ctx, t, 2, SMJ_ST_F32, &img, &n));
    int bad = 0;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *c = malloc(cut + 1);
        memcpy(c, img, cut);
        s = smj_st_parse(ctx, c, cut, "cut.safetensors", &f);
        if (s != F || f || !strstr(smj_ctx_error(ctx), "cut.safetensors")) bad++;
        smj_st_close(f);
        f = NULL;
        free(c);
    }
    CHECK(bad == 0, "%d truncations were not rejected as format errors", bad);
    /* reading an integer tensor as fp32 is unsupported and says so */
    free(img);
    const char *hi = T1("I32", "[1]", "[0,4]");
    uint8_t z[4] = {0};
    img = image(hi, z, 4, &n);
    CHECK_OK(ctx, smj_st_parse(ctx, img, n, "int.safetensors", &f));
    if (f) {
        float v;
        s = smj_st_read_f32(ctx, f, 0, &v);
        CHECK(s == SMJ_ERR_UNSUPPORTED && strstr(smj_ctx_error(ctx), "\"t\"") && strstr(smj_ctx_error(ctx), "I32"),
              "I32 to f32: %s", smj_ctx_error(ctx));
    }
    smj_st_close(f);
    free(img);
}

static void test_writer(smj_ctx *ctx) {
    /* Exact bytes of a small F32 file. */
    float a[2] = {1.0f, -2.0f};
    smj_st_wtensor t1 = {"w", 2, {1, 2}, a};
    uint8_t *img;
    size_t n;
    CHECK_OK(ctx, smj_st_serialize(ctx, &t1, 1, SMJ_ST_F32, &img, &n));
    const char *want_hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[1,2],"
                           "\"data_offsets\":[0,8]}}";
    size_t hl = strlen(want_hdr), padded = (hl + 7) / 8 * 8;
    CHECK(n == 8 + padded + 8, "file size %zu, want %zu", n, 8 + padded + 8);
    if (n == 8 + padded + 8) {
        CHECK(smj_rd_u64(img) == padded, "header length %llu", (unsigned long long)smj_rd_u64(img));
        CHECK(memcmp(img + 8, want_hdr, hl) == 0, "header text: %.*s", (int)padded, (const char *)img + 8);
        int spaces = 1;
        for (size_t i = 8 + hl; i < 8 + padded; i++) spaces &= img[i] == ' ';
        CHECK(spaces, "padding is spaces");
        const uint8_t want_data[8] = {0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0};
        CHECK(memcmp(img + 8 + padded, want_data, 8) == 0, "data bytes");
    }
    free(img);

    /* Round trips: odd shapes, a scalar, an empty tensor, special values. */
    enum { NT = 5 };
    static float d0[7 * 5], d1[1], d2[1], d3[3 * 4 * 2], d4[11];
    for (int i = 0; i < 35; i++) d0[i] = sinf((float)i) * 100.0f;
    d1[0] = 3.25f;
    for (int i = 0; i < 24; i++) d3[i] = (float)i * 1e-3f - 0.01f;
    for (int i = 0; i < 11; i++) d4[i] = (float)(i * i) / 7.0f;
    d4[3] = INFINITY;
    d4[4] = -0.0f;
    d4[5] = 1e-40f; /* subnormal */
    smj_st_wtensor t[NT] = {{"model.embed_tokens.weight", 2, {7, 5}, d0}, {"scalar", 0, {0}, d1},
                            {"empty", 2, {0, 4}, d2}, {"three.d", 3, {3, 4, 2}, d3}, {"v \"quoted\"\\", 1, {11}, d4}};
    for (int bf = 0; bf < 2; bf++) {
        CHECK_OK(ctx, smj_st_serialize(ctx, t, NT, bf ? SMJ_ST_BF16 : SMJ_ST_F32, &img, &n));
        CHECK(smj_rd_u64(img) % 8 == 0, "header padded to 8");
        smj_st_file *f = NULL;
        CHECK_OK(ctx, smj_st_parse(ctx, img, n, "rt.safetensors", &f));
        if (f) {
            CHECK(smj_st_count(f) == NT && strcmp(smj_st_meta(f, "format"), "pt") == 0, "count and metadata");
            for (int i = 0; i < NT; i++) {
                int k = smj_st_find(f, t[i].name);
                CHECK(k == i, "tensor %s at %d (order kept)", t[i].name, k);
                if (k < 0) continue;
                const smj_st_tensor *r = smj_st_get(f, k);
                int64_t numel = 1;
                for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
                CHECK(r->ndim == t[i].ndim && r->numel == numel && r->dtype == (bf ? SMJ_ST_BF16 : SMJ_ST_F32),
                      "%s shape/dtype", t[i].name);
                float *back = malloc(sizeof(float) * (size_t)(numel + 1));
                CHECK_OK(ctx, smj_st_read_f32(ctx, f, k, back));
                int mism = 0;
                for (int64_t j = 0; j < numel; j++) {
                    float want = bf ? smj_bf16_to_f32(smj_f32_to_bf16(t[i].data[j])) : t[i].data[j];
                    if (fbits(back[j]) != fbits(want)) mism++;
                }
                CHECK(mism == 0, "%s (%s): %d values differ", t[i].name, bf ? "bf16" : "f32", mism);
                free(back);
            }
        }
        smj_st_close(f);
        free(img);
    }
    /* duplicate names are refused by the writer */
    smj_st_wtensor dup[2] = {{"a", 1, {1}, d1}, {"a", 1, {1}, d1}};
    CHECK(smj_st_serialize(ctx, dup, 2, SMJ_ST_F32, &img, &n) == SMJ_ERR_INVALID, "writer refuses duplicates");
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_files(smj_ctx *ctx) {
    const char *dir = test_tmpdir();
    char d1[512], d2[512], p[1200];
    snprintf(d1, sizeof d1, "%s/single", dir);
    snprintf(d2, sizeof d2, "%s/sharded", dir);
    mkdir(d1, 0777);
    mkdir(d2, 0777);
    enum { NT = 6 };
    static float data[NT][100];
    smj_st_wtensor t[NT];
    char names[NT][32];
    for (int i = 0; i < NT; i++) {
        snprintf(names[i], sizeof names[i], "layer.%d.weight", i);
        for (int j = 0; j < 100; j++) data[i][j] = (float)(i * 1000 + j) * 0.5f;
        t[i] = (smj_st_wtensor){names[i], 2, {10, 10}, data[i]};
    }
    int nf = 0;
    CHECK_OK(ctx, smj_st_write(ctx, d1, t, NT, NULL, &nf));
    snprintf(p, sizeof p, "%s/model.safetensors", d1);
    CHECK(nf == 1 && file_exists(p), "single file written");
    /* 400 bytes per tensor, 1000-byte shards: 2 tensors each -> 3 shards */
    smj_st_write_options o = {.bf16 = 0, .max_shard_bytes = 1000};
    CHECK_OK(ctx, smj_st_write(ctx, d2, t, NT, &o, &nf));
    CHECK(nf == 3, "3 shards, got %d", nf);
    snprintf(p, sizeof p, "%s/model-00002-of-00003.safetensors", d2);
    CHECK(file_exists(p), "shard 2 exists");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d2);
    CHECK(file_exists(p), "index exists");
    for (int which = 0; which < 2; which++) {
        smj_st_set *s = NULL;
        CHECK_OK(ctx, smj_st_set_open(ctx, which ? d2 : d1, &s));
        if (!s) continue;
        CHECK(smj_st_set_count(s) == NT && smj_st_set_num_files(s) == (which ? 3 : 1), "set sizes");
        for (int i = 0; i < NT; i++) {
            int k = smj_st_set_find(s, names[i]);
            CHECK(k >= 0, "find %s", names[i]);
            if (k < 0) continue;
            const smj_st_file *f;
            int idx;
            smj_st_set_get(s, k, &f, &idx);
            float back[100];
            CHECK_OK(ctx, smj_st_read_f32(ctx, f, idx, back));
            CHECK(memcmp(back, data[i], sizeof back) == 0, "%s values", names[i]);
        }
        smj_st_set_close(s);
    }
    /* no temp files left behind */
    CHECK(run_cmd("find %s %s -name '*.tmp.*' | grep -q .", d1, d2) != 0, "temporary files left behind");

    /* a broken index: a tensor listed under the wrong shard, a path outside */
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", d2);
    FILE *fi = fopen(idx, "w");
    fprintf(fi, "{\"metadata\":{},\"weight_map\":{\"layer.0.weight\":\"model-00002-of-00003.safetensors\"}}");
    fclose(fi);
    smj_st_set *s = NULL;
    smj_status st = smj_st_set_open(ctx, d2, &s);
    CHECK(st == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "index.json"), "wrong shard: %s", smj_ctx_error(ctx));
    smj_st_set_close(s);
    fi = fopen(idx, "w");
    fprintf(fi, "{\"weight_map\":{\"layer.0.weight\":\"../single/model.safetensors\"}}");
    fclose(fi);
    st = smj_st_set_open(ctx, d2, &s);
    CHECK(st == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), "plain file name"), "path outside: %s", smj_ctx_error(ctx));
    smj_st_set_close(s);
    /* a missing directory content */
    snprintf(p, sizeof p, "%s/nothing", dir);
    mkdir(p, 0777);
    st = smj_st_set_open(ctx, p, &s);
    CHECK(st == SMJ_ERR_IO, "empty dir: %s", smj_ctx_error(ctx));
    /* a corrupt file on disk names its path */
    snprintf(p, sizeof p, "%s/model.safetensors", d1);
    fi = fopen(p, "r+b");
    fseek(fi, 8, SEEK_SET);
    fputc('[', fi);
    fclose(fi);
    smj_st_file *f = NULL;
    st = smj_st_open(ctx, p, &f);
    CHECK(st == SMJ_ERR_FORMAT && strstr(smj_ctx_error(ctx), p), "corrupt file: %s", smj_ctx_error(ctx));
    smj_st_close(f);
}

int main(void) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    test_conversions();
    test_handmade(ctx);
    test_malformed(ctx);
    test_writer(ctx);
    test_files(ctx);
    smj_ctx_free(ctx);
    run_cmd("rm -rf '%s'", test_tmpdir());
    return check_summary("test_safetensors");
}
