/* gradcheck.h — the whole-model gradient check shared by the model tests. */
#ifndef SMJ_TEST_GRADCHECK_H
#define SMJ_TEST_GRADCHECK_H
#include "smedjan.h"
/* Directional finite differences of a whole model's gradient. With the
 * model's current weights, computes the gradient of the loss on inputs x and
 * targets y [B, T]; then, along two unit directions (the gradient itself and a
 * fixed pseudo-random one), compares (L(p + h d) - L(p - h d)) / 2h with g·d.
 * The loss comes back as a float (~5e-7 absolute), so h is 2e-3 / 5e-3 and the
 * error is measured against max(|g·d|, 0.05·|g|): a random direction can have
 * a tiny directional derivative. CHECKs each error < 2e-3, prints both, and
 * restores the weights (the model keeps the gradient at the original point).
 * Works on any backend (through smj_model_tensor_get/set). */
void gradcheck_directional(smj_ctx *ctx, smj_model *m, const int32_t *x, const int32_t *y, int B, int T,
                           const char *label);
#endif
