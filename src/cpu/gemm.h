/* gemm.h — single-precision matrix multiply for the CPU backend.
 *
 * C[M,N] = (acc ? C : 0) + op(A)[M,K] · op(B)[K,N], row-major, where
 * op(A) = A^T when transA (A stored [K,M]) and op(B) = B^T when transB
 * (B stored [N,K]). nt = threads to use (OpenMP team size).
 */
#ifndef SMJ_CPU_GEMM_H
#define SMJ_CPU_GEMM_H
#include <stdint.h>
void smj_sgemm(int nt, float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K,
               int transA, int transB, int acc);
#endif
