/* driver.c — runs a libFuzzer-style target without libFuzzer.
 *
 * usage: fuzz_X CORPUS_DIR [ITERATIONS]
 * Feeds every file of CORPUS_DIR (the regression corpus) to
 * LLVMFuzzerTestOneInput, then ITERATIONS mutations of them (byte flips,
 * truncations, insertions, splices) from a fixed seed, so a run is
 * repeatable. A crash or sanitizer report is the failure; returning is a pass.
 * Build with clang -fsanitize=fuzzer (without this file) for real fuzzing.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x5eed5eedULL;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", argv[0]); return 2; }
    long iters = argc > 2 ? atol(argv[2]) : 1000;
    uint8_t *files[256]; size_t sizes[256]; int nf = 0;
    DIR *d = opendir(argv[1]);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && nf < 256) {
            if (e->d_name[0] == '.') continue;
            char p[4096]; snprintf(p, sizeof p, "%s/%s", argv[1], e->d_name);
            FILE *f = fopen(p, "rb"); if (!f) continue;
            fseek(f, 0, SEEK_END); long n = ftell(f); rewind(f);
            if (n < 0 || n > (1 << 24)) { fclose(f); continue; }
            files[nf] = malloc((size_t)n + 1); sizes[nf] = (size_t)n;
            if (fread(files[nf], 1, (size_t)n, f) != (size_t)n) { fclose(f); free(files[nf]); continue; }
            fclose(f);
            LLVMFuzzerTestOneInput(files[nf], sizes[nf]);
            nf++;
        }
        closedir(d);
    }
    if (nf == 0) { files[0] = calloc(1, 64); sizes[0] = 64; nf = 1; }
    size_t cap = 1 << 16; uint8_t *buf = malloc(cap);
    for (long it = 0; it < iters; it++) {
        int k = (int)(next() % (uint64_t)nf);
        size_t n = sizes[k] < cap ? sizes[k] : cap;
        memcpy(buf, files[k], n);
        int muts = 1 + (int)(next() % 8);
        for (int m = 0; m < muts; m++) {
            switch (next() % 5) {
            case 0: if (n) buf[next() % n] ^= (uint8_t)(1u << (next() % 8)); break;
            case 1: if (n) buf[next() % n] = (uint8_t)next(); break;
            case 2: if (n) n = next() % n; break;
            case 3: if (n + 16 < cap) { size_t at = n ? next() % n : 0; memmove(buf + at + 4, buf + at, n - at);
                        uint32_t v = (uint32_t)next(); memcpy(buf + at, &v, 4); n += 4; } break;
            case 4: { int o = (int)(next() % (uint64_t)nf); size_t at = n ? next() % n : 0;
                      size_t take = sizes[o] < cap - at ? sizes[o] : cap - at; if (take) { size_t from = next() % take;
                      memcpy(buf + at, files[o] + from, take - from); n = at + take - from; } } break;
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("%d corpus files, %ld mutations, no crash\n", nf, iters);
    for (int i = 0; i < nf; i++) free(files[i]);
    free(buf);
    return 0;
}
