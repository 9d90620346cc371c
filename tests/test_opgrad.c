/* test_opgrad.c — finite differences of every backward op in float on the
 * host backends (tests/util/opgrad.c): the reference and the optimized CPU
 * backend (one and several threads), each op's backward against central
 * differences of that backend's own forward. tests/test_ops.c checks the
 * reference's backward in double and every backend against the reference;
 * this is the same check the CUDA suite runs on the GPU
 * (tests/cuda/test_cuda_grad.c). */
#include "../src/ops/ops.h"
#include "util/check.h"
#include "util/opgrad.h"

int main(void) {
    smj_exec one = {.nt = 1}, four = {.nt = 4};
    opgrad_all(&smj_backend_ref, &one, "ref");
    opgrad_all(&smj_backend_cpu, &one, "cpu");
    opgrad_all(&smj_backend_cpu, &four, "cpu/4 threads");
    return check_summary("test_opgrad");
}
