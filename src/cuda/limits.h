/* limits.h — the CUDA backend's workspace policy in numbers, shared by the
 * backend (cuda_common.cuh) and the memory estimate of the core
 * (smj_config_device_workspace in src/model/config.c), so the two cannot
 * drift apart. Plain C: no CUDA headers needed. */
#ifndef SMJ_CUDA_LIMITS_H
#define SMJ_CUDA_LIMITS_H

#define SMJ_CUDA_BC_N 6                      /* bf16 operand copies kept (bf16 mode) */
#define SMJ_CUDA_BC_MAX ((int64_t)1 << 27)   /* largest operand kept, elements (256 MiB as bf16) */
#define SMJ_CUDA_BLAS_WS ((int64_t)32 << 20) /* cuBLAS's default workspace on sm_90 */
#define SMJ_CUDA_LT_WS ((int64_t)32 << 20)   /* cuBLASLt's (the bf16 products), at its first use */
#define SMJ_CUDA_ATT_SCORES ((int64_t)4 << 30) /* score buffers of the cuBLAS attention path, at most */
#define SMJ_CUDA_DEC_HEADS 1022              /* most query heads decode_block takes (its counters) */

#endif
