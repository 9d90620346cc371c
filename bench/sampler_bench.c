/* sampler_bench.c — smj_sample against the full-sort definition of the same
 * sampling (every candidate ordered, as before the top-k selection), on the
 * same logits and RNG streams: ms per token for both, their ratio, and
 * whether every draw agrees. Built and run by bench/sampler_bench.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include "smedjan.h"
#include "../src/model/model.h" /* smj_splitmix64, smj_sample_weights: smj_sample's draw and weights */

typedef struct { float p; int32_t id; } cand;
static int desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}
/* the same weights, then every candidate sorted, top-k, top-p, draw (no
 * penalty, no min-p) */
static int32_t full_sort(const float *l, int V, const smj_sampler_options *o, uint64_t *rng, cand *c, float *w) {
    int32_t best = 0;
    for (int i = 1; i < V; i++) if (l[i] > l[best]) best = i;
    memcpy(w, l, sizeof(float) * (size_t)V);
    double sum = smj_sample_weights(w, V, l[best], o->temperature);
    for (int i = 0; i < V; i++) { c[i].p = w[i]; c[i].id = i; }
    qsort(c, (size_t)V, sizeof *c, desc);
    int n = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    double cum = 0;
    for (int i = 0; i < n; i++) if ((cum += c[i].p / sum) >= o->top_p) { n = i + 1; break; }
    double mass = 0, acc = 0;
    for (int i = 0; i < n; i++) mass += c[i].p;
    double u = (double)(smj_splitmix64(rng) >> 11) * 0x1.0p-53 * mass;
    for (int i = 0; i < n; i++) if (u < (acc += c[i].p)) return c[i].id;
    return c[n - 1].id;
}
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    int V = argc > 1 ? atoi(argv[1]) : 32768, reps = argc > 2 ? atoi(argv[2]) : 200;
    float *l = malloc(sizeof(float) * (size_t)V), *scratch = malloc(sizeof(float) * (size_t)V);
    cand *c = malloc(sizeof(cand) * (size_t)V);
    float *w = malloc(sizeof(float) * (size_t)V);
    uint64_t g = 42;
    for (int i = 0; i < V; i++) l[i] = 4.0f * (float)((smj_splitmix64(&g) >> 11) * 0x1.0p-53) - 2.0f;
    smj_sampler_options o;
    smj_sampler_defaults(&o); /* generate's: temperature 0.8, top-k 40, top-p 0.95 */
    uint64_t r1 = o.seed, r2 = o.seed;
    int agree = 1;
    double t0 = now();
    for (int i = 0; i < reps; i++) agree &= smj_sample(l, V, &o, NULL, 0, &r1, scratch) >= 0;
    double t1 = now();
    for (int i = 0; i < reps; i++) (void)full_sort(l, V, &o, &r2, c, w);
    double t2 = now();
    r1 = r2 = o.seed;
    for (int i = 0; i < reps; i++) agree &= smj_sample(l, V, &o, NULL, 0, &r1, scratch) == full_sort(l, V, &o, &r2, c, w);
    double a = 1e3 * (t1 - t0) / reps, b = 1e3 * (t2 - t1) / reps;
    printf("V=%d temperature %.1f top-k %d top-p %.2f: smj_sample %.3f ms/token, full sort %.3f ms/token, "
           "%.1fx; same tokens: %s\n", V, o.temperature, o.top_k, o.top_p, a, b, b / a, agree ? "yes" : "NO");
    free(l); free(scratch); free(c); free(w);
    return agree ? 0 : 1;
}
