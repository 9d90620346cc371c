/* launch_gap.cu — what a training step's ~480 launches cost between kernels
 * on this card, launched one by one into a stream (as smedjan's step is
 * today) or replayed as one CUDA graph: the question is whether capturing
 * the step as a graph would take a measurable part of its ~0.9 ms of idle
 * time a step (bench/RESULTS.md round 29's trace) away.
 *
 * A synthetic step: NK kernels, each filling the GPU (2 blocks an SM) and
 * spinning on the global timer for a set time (a cycle of durations like
 * the step's: products of ~60-170 us, element-wise kernels of 5-100 us),
 * with a 4-byte memset before every fourth (cuBLASLt issues one before many
 * of its products). A long kernel first lets the host run ahead, as it does
 * in the step. Printed: the sequence's time between two events, the sum of
 * the kernels' set durations, and the difference per boundary.
 *   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/lg bench/launch_gap.cu && /tmp/lg
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_check.cuh"

enum { NK = 480 };

static __device__ __forceinline__ unsigned long long now_ns(void) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

/* every block spins for ns from its own start (blocks start together: the
 * grid is resident at once) */
__global__ void k_spin(long long ns, int *sink) {
    unsigned long long t0 = now_ns();
    while ((long long)(now_ns() - t0) < ns) {}
    if (threadIdx.x == 0 && ns < 0) *sink = 1;
}

static const int dur_us[] = {170, 20, 60, 5, 100, 40, 150, 10, 80, 30, 120, 15};

static void enqueue(cudaStream_t s, int grid, int *sink, int memsets) {
    int nd = (int)(sizeof dur_us / sizeof dur_us[0]);
    for (int i = 0; i < NK; i++) {
        if (memsets && i % 4 == 0) CK(cudaMemsetAsync(sink + 1, 0, 4, s));
        k_spin<<<grid, 256, 0, s>>>((long long)dur_us[i % nd] * 1000, sink);
    }
}

int main(void) {
    int dev = 0, sms = 0;
    CK(cudaSetDevice(dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, dev));
    int grid = 2 * sms, nd = (int)(sizeof dur_us / sizeof dur_us[0]);
    double set_us = 0;
    for (int i = 0; i < NK; i++) set_us += dur_us[i % nd];
    int *sink;
    CK(cudaMalloc(&sink, 64));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("%s, %d SMs; %d kernels of %d blocks, set durations sum %.1f us\n", pr.name, sms, NK, grid, set_us);
    for (int memsets = 0; memsets < 2; memsets++) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        enqueue(s, grid, sink, memsets);
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphUpload(ge, s));
        for (int rep = 0; rep < 4; rep++) {
            for (int mode = 0; mode < 2; mode++) {
                k_spin<<<grid, 256, 0, s>>>(20 * 1000 * 1000, sink); /* the host runs ahead meanwhile */
                CK(cudaEventRecord(e0, s));
                if (mode == 0) enqueue(s, grid, sink, memsets);
                else CK(cudaGraphLaunch(ge, s));
                CK(cudaEventRecord(e1, s));
                CK(cudaStreamSynchronize(s));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                double over = ms * 1000.0 - set_us;
                if (rep > 0)
                    printf("%s%s: %.1f us, %.1f us over the set durations, %.2f us a boundary\n",
                           mode ? "graph " : "stream", memsets ? " + memsets" : "", ms * 1000.0, over,
                           over / (NK + (memsets ? NK / 4 : 0)));
            }
        }
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
    }
    return 0;
}
