/* attention.h — causal softmax attention for the CPU backend (see ops.h for
 * the contract of attention_fwd/attention_bwd). */
#ifndef SMJ_CPU_ATTENTION_H
#define SMJ_CPU_ATTENTION_H
#include <stdint.h>
void smj_cpu_attention_fwd(int nt, float *out, float *lse, const float *q, const float *k, const float *v,
                           int B, int Tq, int Tk, int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs,
                           int64_t kv_bstride, float scale);
void smj_cpu_attention_bwd(int nt, float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v, int B, int T,
                           int NH, int NKV, int HS, int64_t q_rs, int64_t kv_rs, int64_t dq_rs, int64_t dkv_rs,
                           float scale);
#endif
