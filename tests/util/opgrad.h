/* opgrad.h — finite-difference checks of every backward op on any backend,
 * in float, through the backend's own forward ops and memory hooks (so on a
 * GPU the differences are taken on the GPU). */
#ifndef SMJ_TEST_OPGRAD_H
#define SMJ_TEST_OPGRAD_H
#include "../../src/ops/ops.h"

/* For each op with a backward (matmul in the model's two forms, embedding,
 * rmsnorm, rope, attention (GQA, causal; Tq = Tk, a few lengths), swiglu,
 * cross-entropy (ignored targets, padded rows), layernorm, gelu) and each
 * of its differentiable inputs:
 * L = sum(u * forward(inputs)) for a fixed random u (cross-entropy: the mean
 * loss), its derivative along two unit directions (the gradient's and a
 * random one) by central differences of the backend's forward, against the
 * backend's backward dotted with the direction. Passes when |fd - g.d| <=
 * 2e-3 max(|g.d|, 0.05 |g|) (the model-level rule of gradcheck.h). Every
 * check's error is printed with label (the backend's name). */
void opgrad_all(const smj_backend *be, const smj_exec *ex, const char *label);
#endif
