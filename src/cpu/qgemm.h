/* qgemm.h — matrix products with GGML-quantized weights for the CPU backend
 * (the op table's optional qmatmul; see qgemm.c for the design).
 *
 * C[M,N] = (acc ? C : 0) + A[M,K] · W[N,K]^T, W row-major in GGML blocks of
 * wtype (SMJ_WTYPE_F16 / Q8_0 / Q4_0 of src/ops/ops.h), K a multiple of 32
 * for the block types. For Q8_0 and Q4_0 the rows of A are first rounded to
 * 8-bit blocks of 32 (smj_qgemm_quantize_row), then multiplied in integers.
 * nt = threads (OpenMP team size). Unknown wtype: C is left untouched.
 */
#ifndef SMJ_CPU_QGEMM_H
#define SMJ_CPU_QGEMM_H
#include <stdint.h>
#include "../core/core.h"

void smj_qgemm(int nt, float *C, const float *A, const void *W, int wtype, int64_t M, int64_t N,
               int64_t K, int acc);

/* smj_qgemm with the op table's qmatmul signature (smj_backend_cpu.qmatmul). */
void smj_cpu_qmatmul(const smj_exec *ex, float *C, const float *A, const void *W, int wtype,
                     int64_t M, int64_t N, int64_t K, int acc);

/* The activation rounding used for Q8_0/Q4_0 weights (exposed for the tests):
 * per block of 32 values, d[b] = max|x| / 127, q = round-half-even(x * id)
 * with id = d ? 1/d : 0 (all in float, no FMA), s[b] = sum of the 32 q. */
void smj_qgemm_quantize_row(const float *x, int8_t *q, float *d, int32_t *s, int64_t k);

#endif
