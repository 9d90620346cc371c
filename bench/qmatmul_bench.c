/* qmatmul_bench.c — speed of the CPU backend's quantized matmul (smj_qgemm,
 * src/cpu/qgemm.c) on the linear layers of a llama model, per weight type.
 *
 *   qmatmul_bench [nt [d [ffn [vocab]]]]        (defaults: 2 512 1536 50257)
 *
 * For each of q8_0, q4_0, f16 and for M = 1 (decode) and M = 128 (prompt
 * processing) it times C = A · W^T on the shapes N x K = d x d (attention
 * projections), ffn x d (gate/up), d x ffn (down) and vocab x d (LM head):
 * best of repeated runs (~0.2 s each after a warm-up), reported as GOP/s
 * (2 M N K / s) and, for M = 1, as GB/s of weight bytes streamed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/cpu/qgemm.h"
#include "../src/gguf/gguf.h"
#include "../src/ops/ops.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t row_bytes(int wtype, int64_t K) {
    return wtype == SMJ_WTYPE_F16 ? 2 * K : wtype == SMJ_WTYPE_Q8_0 ? K / 32 * 34 : K / 32 * 18;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    int64_t d = argc > 2 ? atoll(argv[2]) : 512, h = argc > 3 ? atoll(argv[3]) : 1536,
            V = argc > 4 ? atoll(argv[4]) : 50257;
    const int wtypes[3] = {SMJ_WTYPE_Q8_0, SMJ_WTYPE_Q4_0, SMJ_WTYPE_F16};
    const char *wn[3] = {"q8_0", "q4_0", "f16"};
    const int64_t shapes[4][2] = {{d, d}, {h, d}, {d, h}, {V, d}};
    const char *sn[4] = {"attn d x d", "ffn up h x d", "ffn down d x h", "lm head V x d"};
    smj_rng rng;
    smj_rng_seed(&rng, 1);
    printf("smj_qgemm, %d threads (best of repeated runs)\n", nt);
    for (int t = 0; t < 3; t++)
        for (int s = 0; s < 4; s++) {
            int64_t N = shapes[s][0], K = shapes[s][1], rs = row_bytes(wtypes[t], K);
            float *wf = malloc(sizeof(float) * (size_t)K);
            uint8_t *W = malloc((size_t)(rs * N));
            for (int64_t n = 0; n < N; n++) {
                for (int64_t k = 0; k < K; k++) wf[k] = (float)smj_rng_uniform(&rng) - 0.5f;
                if (wtypes[t] == SMJ_WTYPE_Q8_0) smj_quantize_q8_0(wf, W + n * rs, K);
                else if (wtypes[t] == SMJ_WTYPE_Q4_0) smj_quantize_q4_0(wf, W + n * rs, K);
                else smj_quantize_f16(wf, W + n * rs, K);
            }
            const int64_t Ms[2] = {1, 128};
            for (int mi = 0; mi < 2; mi++) {
                int64_t M = Ms[mi];
                float *A = malloc(sizeof(float) * (size_t)(M * K)), *C = malloc(sizeof(float) * (size_t)(M * N));
                for (int64_t i = 0; i < M * K; i++) A[i] = (float)smj_rng_uniform(&rng) - 0.5f;
                smj_qgemm(nt, C, A, W, wtypes[t], M, N, K, 0);
                double best = 1e30;
                for (int round = 0; round < 5; round++) {
                    int reps = 0;
                    double t0 = now(), t1;
                    do {
                        smj_qgemm(nt, C, A, W, wtypes[t], M, N, K, 0);
                        reps++;
                        t1 = now();
                    } while (t1 - t0 < 0.04);
                    double per = (t1 - t0) / reps;
                    if (per < best) best = per;
                }
                printf("%-5s %-15s M=%-4lld N=%-6lld K=%-5lld %9.1f us  %7.1f GOP/s", wn[t], sn[s],
                       (long long)M, (long long)N, (long long)K, best * 1e6, 2.0 * M * N * K / best * 1e-9);
                if (M == 1) printf("  %6.1f GB/s", (double)rs * N / best * 1e-9);
                printf("\n");
                fflush(stdout);
                free(A);
                free(C);
            }
            free(wf);
            free(W);
        }
    return 0;
}
