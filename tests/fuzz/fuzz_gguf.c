/* fuzz_gguf.c — arbitrary bytes into the GGUF parser (smj_gguf_parse).
 *
 * Any input must either parse, after which every accessor must work within
 * the input (every pair read as int, float and string, every element of
 * every array, every tensor's bytes inside the buffer and dequantized when
 * its type allows), or fail with SMJ_ERR_FORMAT/SMJ_ERR_NOMEM, a message
 * and no handle. A crash, a sanitizer report or a broken invariant (abort)
 * is a finding. GGUF has no checksum, so mutations reach every check.
 *
 * Corpus (tests/fuzz/corpus/gguf/): tiny models written by smj_export_gguf
 * (llama q4_0, qwen3 untied q4_0, llama f16 with rows of 8 values) and a
 * hand-built version-2 file with no tensors and one pair of every value
 * type, arrays included.
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/core/core.h"
#include "../../src/gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile double sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    smj_ctx *ctx = smj_ctx_create(NULL);
    if (!ctx) return 0;
    smj_gguf *g = NULL;
    smj_status s = smj_gguf_parse(ctx, data, size, "fuzz.gguf", &g);
    if (s != SMJ_OK) {
        if (g || (s != SMJ_ERR_FORMAT && s != SMJ_ERR_NOMEM) || !smj_ctx_error(ctx)[0]) abort();
        smj_ctx_free(ctx);
        return 0;
    }
    if (!g) abort();
    for (int i = 0; i < smj_gguf_num_kv(g); i++) {
        smj_gguf_kv_info kv;
        if (smj_gguf_kv(g, i, &kv) != SMJ_OK || !kv.key[0]) abort();
        if (smj_gguf_find_kv(g, kv.key) != i) abort(); /* keys are unique */
        uint64_t n = kv.n < 4096 ? kv.n : 4096;
        for (uint64_t j = 0; j < n; j++) {
            int64_t iv;
            double fv;
            size_t len = 0;
            const char *str = smj_gguf_kv_str(g, i, j, &len);
            if (str) {
                if ((const uint8_t *)str < data || (const uint8_t *)str + len > data + size) abort();
                if (len) sink += (unsigned char)str[len - 1];
            }
            if (smj_gguf_kv_int(g, i, j, &iv) == 0) sink += (double)iv;
            if (smj_gguf_kv_float(g, i, j, &fv) == 0) sink += fv;
        }
        int64_t iv;
        if (smj_gguf_kv_int(g, i, kv.n, &iv) == 0) abort(); /* past the end */
    }
    for (int i = 0; i < smj_gguf_num_tensors(g); i++) {
        smj_gguf_tensor_info t;
        if (smj_gguf_tensor(g, i, &t) != SMJ_OK || !t.type_name) abort();
        if (smj_gguf_find_tensor(g, t.name) != i) abort();
        if (t.offset > size || t.nbytes > size - t.offset) abort();
        if ((const uint8_t *)smj_gguf_tensor_data(g, i) != data + t.offset) abort();
        if (t.numel <= (1 << 22)) {
            float *out = malloc(sizeof(float) * (size_t)t.numel);
            if (out) {
                if (smj_gguf_tensor_to_f32(ctx, g, i, out) == SMJ_OK) sink += out[t.numel - 1];
                free(out);
            }
        }
    }
    smj_gguf_free(g);
    smj_ctx_free(ctx);
    return 0;
}
