/* fuzz_safetensors.c — arbitrary bytes into the safetensors parser
 * (smj_st_parse, the in-memory entry point of src/hf/safetensors.c).
 *
 * Any input must either parse — then every tensor lies inside the buffer
 * with the right byte count, the tensors tile the data exactly, the float
 * ones convert to fp32, and writing them back (F32) gives a file that parses
 * to the same names and shapes — or fail with SMJ_ERR_FORMAT,
 * SMJ_ERR_UNSUPPORTED or SMJ_ERR_NOMEM, a message naming the file and no
 * result. Random mutations of the header usually break its 8-byte length, so
 * each input is also tried with the length set to end at the last '}',
 * which lets mutations reach the header checks.
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/core/core.h"
#include "../../src/hf/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_image(smj_ctx *ctx, const uint8_t *data, size_t size) {
    smj_st_file *f = NULL;
    smj_status s = smj_st_parse(ctx, data, size, "fuzz.safetensors", &f);
    if (s != SMJ_OK) {
        if (f || (s != SMJ_ERR_FORMAT && s != SMJ_ERR_UNSUPPORTED && s != SMJ_ERR_NOMEM) ||
            !strstr(smj_ctx_error(ctx), "fuzz.safetensors"))
            abort();
        return;
    }
    int n = smj_st_count(f), all_float = 1;
    uint64_t hl = smj_rd_u64(data), dlen = size - 8 - hl, covered = 0;
    smj_st_wtensor *w = calloc((size_t)n + 1, sizeof *w);
    float **vals = calloc((size_t)n + 1, sizeof *vals);
    if (!w || !vals) abort();
    for (int i = 0; i < n; i++) {
        const smj_st_tensor *t = smj_st_get(f, i);
        if (t->begin > t->end || t->end > dlen) abort();
        if ((uint64_t)t->numel * (uint64_t)smj_st_dtype_size(t->dtype) != t->end - t->begin) abort();
        if (smj_st_find(f, t->name) != i) abort();
        covered += t->end - t->begin;
        if (t->dtype != SMJ_ST_F32 && t->dtype != SMJ_ST_BF16 && t->dtype != SMJ_ST_F16) {
            all_float = 0;
            float x;
            if (t->numel == 0) continue;
            if (smj_st_read_f32(ctx, f, i, &x) != SMJ_ERR_UNSUPPORTED) abort();
            continue;
        }
        vals[i] = malloc(sizeof(float) * (size_t)(t->numel + 1));
        if (!vals[i]) abort();
        if (smj_st_read_f32(ctx, f, i, vals[i]) != SMJ_OK) abort();
        w[i].name = t->name;
        w[i].ndim = t->ndim;
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
        w[i].data = vals[i];
    }
    if (covered != dlen) abort();
    if (all_float && strcmp(smj_st_path(f), "fuzz.safetensors") == 0) {
        uint8_t *img;
        size_t len;
        if (smj_st_serialize(ctx, w, n, SMJ_ST_F32, &img, &len) == SMJ_OK) {
            smj_st_file *g = NULL;
            if (smj_st_parse(ctx, img, len, "again", &g) != SMJ_OK) abort();
            if (smj_st_count(g) != n) abort();
            for (int i = 0; i < n; i++) {
                const smj_st_tensor *a = smj_st_get(f, i), *b = smj_st_get(g, i);
                if (strcmp(a->name, b->name) != 0 || a->ndim != b->ndim || a->numel != b->numel) abort();
            }
            smj_st_close(g);
            free(img);
        }
    }
    for (int i = 0; i < n; i++) free(vals[i]);
    free(vals);
    free(w);
    smj_st_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    if (!ctx) return 0;
    check_image(ctx, data, size);
    if (size > 9) {
        size_t last = 0;
        for (size_t i = 8; i < size && i < 8 + 65536; i++)
            if (data[i] == '}') last = i;
        if (last) {
            uint8_t *fixed = malloc(size);
            if (fixed) {
                memcpy(fixed, data, size);
                smj_wr_u64(fixed, (uint64_t)(last - 8 + 1));
                check_image(ctx, fixed, size);
                free(fixed);
            }
        }
    }
    smj_ctx_free(ctx);
    return 0;
}
