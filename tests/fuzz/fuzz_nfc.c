/* fuzz_nfc.c — arbitrary bytes through smj_nfc (src/tokenizer/nfc.c).
 *
 * Checks, aborting on failure: the result is again NFC (normalizing it
 * changes nothing), and the input's invalid UTF-8 bytes come out unchanged
 * and in order (the valid text between them is normalized on its own).
 */
#include <stdlib.h>
#include <string.h>
#include "../../src/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The invalid bytes of s[0..n), in order, into out; returns how many. */
static size_t invalid_bytes(const uint8_t *s, size_t n, uint8_t *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = smj_utf8_decode(s + i, n - i, &cp);
        if (cp == 0xFFFFFFFFu) out[k++] = s[i];
        i += (size_t)l;
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    if (smj_nfc(data, size, &a, &na) != 0 || !a) abort();
    if (smj_nfc(a, na, &b, &nb) != 0 || !b || nb != na || memcmp(a, b, na) != 0) abort();
    uint8_t *x = malloc(size + 1), *y = malloc(na + 1);
    if (!x || !y) abort();
    size_t kx = invalid_bytes(data, size, x), ky = invalid_bytes(a, na, y);
    if (kx != ky || memcmp(x, y, kx) != 0) abort();
    free(x); free(y); free(a); free(b);
    return 0;
}
