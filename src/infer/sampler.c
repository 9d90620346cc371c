/* sampler.c — turning logits into the next token.
 *
 * Order (as HF's generate applies them): repetition penalty (CTRL rule:
 * positive logits divided, negative multiplied, once per distinct token in
 * the history), temperature (0 = greedy argmax), softmax (in float, as
 * HF's: smj_sample_weights, the sum in double), then top-k, top-p
 * (smallest set whose mass reaches p), min-p (drop tokens below
 * min_p * p_max), renormalize and draw with the caller's RNG state.
 * With top-k (k <= 256) only the k most probable candidates are ordered
 * (one pass), not all V: the same tokens as the full sort, in ~V steps.
 */
#include <math.h>
#include <string.h>
#include "../model/model.h"

void smj_sampler_defaults(smj_sampler_options *o) {
    o->temperature = 0.8f;
    o->top_k = 40;
    o->top_p = 0.95f;
    o->min_p = 0.0f;
    o->repetition_penalty = 1.0f;
    o->seed = 1337;
}

typedef struct { float p; int32_t id; } cand;
static int by_prob_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The first k of c[0, V) in by_prob_desc order, moved to c[0, k) and
 * sorted: one pass keeping them in order by insertion (the candidates a
 * full sort would put first, in its order, without sorting the other
 * V - k; for random logits few of them ever enter). */
static void top_k_first(cand *c, int V, int k) {
    for (int i = 1; i < k; i++) { /* c[0, k) sorted */
        cand x = c[i];
        int j = i;
        while (j > 0 && by_prob_desc(&c[j - 1], &x) > 0) { c[j] = c[j - 1]; j--; }
        c[j] = x;
    }
    for (int i = k; i < V; i++) {
        if (by_prob_desc(&c[i], &c[k - 1]) >= 0) continue;
        cand x = c[i];
        int j = k - 1;
        while (j > 0 && by_prob_desc(&c[j - 1], &x) > 0) { c[j] = c[j - 1]; j--; }
        c[j] = x;
    }
}

/* e^x for x <= 0 in float: Cephes' expf polynomial on r = x - n ln2 (n
 * rounded by adding 1.5 * 2^23, whose low bits then hold it), 2^n by the
 * exponent bits; within 1 ulp of e^x (checked against exp in double on
 * [-87, 0]), 0 below e^-87 and for NaN. Float operations and integer bits
 * only, no conversion or call, so the loop below runs in SIMD lanes. */
static inline float exp_neg(float x) {
    float z = x >= -87.0f ? x : -87.0f;
    float m = z * 1.44269504088896341f + 12582912.0f, n = m - 12582912.0f;
    int32_t mi, e;
    memcpy(&mi, &m, 4);
    float r = z - n * 0.693359375f - n * -2.12194440e-4f, r2 = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
    e = (mi - 0x4B400000 + 127) * (1 << 23);
    float s;
    memcpy(&s, &e, 4);
    float v = y * s;
    return x >= -87.0f ? v : 0.0f;
}

double smj_sample_weights(float *l, int V, float mx, float temperature) {
    for (int i = 0; i < V; i++) l[i] = exp_neg((l[i] - mx) / temperature);
    double part[8] = {0};
    int i = 0;
    for (; i + 8 <= V; i += 8)
        for (int j = 0; j < 8; j++) part[j] += l[i + j];
    for (int j = 0; i < V; i++, j++) part[j] += l[i];
    double sum = 0;
    for (int j = 0; j < 8; j++) sum += part[j];
    return sum;
}

int32_t smj_argmax(const float *l, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++) if (l[i] > l[best]) best = i;
    return best;
}

int32_t smj_sample(const float *logits, int V, const smj_sampler_options *o, const int32_t *history,
                   int n_history, uint64_t *rng_state, float *scratch) {
    float *l = scratch;
    memcpy(l, logits, sizeof(float) * (size_t)V);
    if (o->repetition_penalty != 1.0f && history && n_history > 0) {
        uint8_t *seen = calloc((size_t)V, 1);
        for (int i = 0; seen && i < n_history; i++) {
            int32_t id = history[i];
            if (id < 0 || id >= V || seen[id]) continue;
            seen[id] = 1;
            l[id] = l[id] > 0 ? l[id] / o->repetition_penalty : l[id] * o->repetition_penalty;
        }
        free(seen);
    }
    int32_t best = smj_argmax(l, V);
    if (o->temperature <= 0.0f) return best;
    cand *c = malloc(sizeof(cand) * (size_t)V);
    if (!c) return best;
    double sum = smj_sample_weights(l, V, l[best], o->temperature);
    for (int i = 0; i < V; i++) {
        c[i].p = l[i];
        c[i].id = i;
    }
    int n = V;
    if (o->top_k > 0 && o->top_k < n) n = o->top_k;
    if (n <= 256 && n < V) top_k_first(c, V, n); /* only these can be drawn */
    else qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    if (o->top_p > 0 && o->top_p < 1) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += c[i].p / sum;
            if (cum >= o->top_p) { n = i + 1; break; }
        }
    }
    if (o->min_p > 0) {
        float cut = o->min_p * c[0].p;
        int k = 1;
        while (k < n && c[k].p >= cut) k++;
        n = k;
    }
    double mass = 0;
    for (int i = 0; i < n; i++) mass += c[i].p;
    double u = (double)(smj_splitmix64(rng_state) >> 11) * 0x1.0p-53 * mass, acc = 0;
    int32_t pick = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) { pick = c[i].id; break; }
    }
    free(c);
    return pick;
}
