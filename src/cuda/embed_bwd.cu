/* embed_bwd.cu — embedding_bwd: dwte[id, :] += dout[n, :] over the
 * positions n of each id, each id's rows added in increasing n (the
 * reference's order: bit-identical to it, deterministic).
 *
 * The positions are grouped by id on the device, with no host round trip
 * (the backward's last op used to download the ids, sort them on the host
 * and upload the order, stalling the stream once a step):
 *   1. order = 0..N-1, sorted by id with CUB's radix sort (stable: equal ids
 *      keep increasing n);
 *   2. the runs of equal ids (CUB's run-length encoding): uid[u], cnt[u],
 *      and their number U, which stays in device memory;
 *   3. off = the exclusive sum of cnt (CUB's scan);
 *   4. k_embedding_bwd: a block per (128 columns, run), runs u < U read
 *      from memory (the grid covers min(N, 4096) runs a column block and
 *      strides over the rest).
 * CUB (the CUDA toolkit's CCCL) does the sorting and scans; its temporary
 * storage and the arrays come from the backend's scratch buffer.
 */
#include "cuda_common.cuh"
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>

__global__ void k_iota(int32_t *v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

/* Run u's row: dwte[uid[u], c] += dout[order[k], c] for k in off[u] ..
 * off[u] + cnt[u], in increasing k (increasing n: the sort is stable). */
__global__ void k_embedding_bwd(float *dwte, const float *dout, const int32_t *uid, const int32_t *cnt,
                                const int32_t *off, const int32_t *order, const int32_t *nruns, int C) {
    int cc = blockIdx.x * blockDim.x + threadIdx.x, U = *nruns;
    if (cc >= C) return;
    for (int u = blockIdx.y; u < U; u += gridDim.y) {
        float *row = dwte + (int64_t)uid[u] * C;
        float acc = row[cc];
        for (int k = off[u], e = off[u] + cnt[u]; k < e; k++) acc += dout[(int64_t)order[k] * C + cc];
        row[cc] = acc;
    }
}

static size_t al256(size_t b) { return (b + 255) / 256 * 256; }

void cu_embedding_bwd(const smj_exec *ex, float *dwte, const int32_t *ids, const float *dout, int64_t N, int C) {
    OP_BEGIN("embedding_bwd");
    if (N <= 0 || C <= 0) { op_end(c); return; }
    if (N > INT32_MAX / 2) { record(c, SMJ_ERR_UNSUPPORTED, "embedding_bwd: N %lld too large", (long long)N); return; }
    int n = (int)N;
    /* CUB's temporary storage: the largest of the three calls' (asked with
     * NULL: host-side sizing, nothing run) */
    size_t t_sort = 0, t_rle = 0, t_scan = 0;
    int32_t *np = NULL;
    cub::DeviceRadixSort::SortPairs(NULL, t_sort, np, np, np, np, n, 0, 32, c->stream);
    cub::DeviceRunLengthEncode::Encode(NULL, t_rle, np, np, np, np, n, c->stream);
    cub::DeviceScan::ExclusiveSum(NULL, t_scan, np, np, n, c->stream);
    size_t tmp = t_sort > t_rle ? t_sort : t_rle;
    tmp = al256(tmp > t_scan ? tmp : t_scan);
    size_t arr = al256(sizeof(int32_t) * (size_t)n); /* iota | keys | order | uid | cnt | off, then nruns */
    char *s = (char *)scratch(c, tmp + 6 * arr + 256);
    if (!s) return;
    int32_t *iota = (int32_t *)(s + tmp), *keys = (int32_t *)(s + tmp + arr), *order = (int32_t *)(s + tmp + 2 * arr);
    int32_t *uid = (int32_t *)(s + tmp + 3 * arr), *cnt = (int32_t *)(s + tmp + 4 * arr);
    int32_t *off = (int32_t *)(s + tmp + 5 * arr), *nruns = (int32_t *)(s + tmp + 6 * arr);
    k_iota<<<blocks_for(N, 256, 1024), 256, 0, c->stream>>>(iota, n);
    LAUNCHED(c);
    size_t b = t_sort;
    if (!CK(c, cub::DeviceRadixSort::SortPairs(s, b, ids, keys, iota, order, n, 0, 32, c->stream))) return;
    b = t_rle;
    if (!CK(c, cub::DeviceRunLengthEncode::Encode(s, b, keys, uid, cnt, nruns, n, c->stream))) return;
    b = t_scan;
    if (!CK(c, cub::DeviceScan::ExclusiveSum(s, b, cnt, off, n, c->stream))) return;
    dim3 grid((unsigned)((C + 127) / 128), (unsigned)(n < 4096 ? n : 4096));
    k_embedding_bwd<<<grid, 128, 0, c->stream>>>(dwte, dout, uid, cnt, off, order, nruns, C);
    LAUNCHED(c);
    op_end(c);
}
