/* ref.c — the "ref" backend: ref_impl.h over float, host memory. */
#include <stdlib.h>
#include <string.h>
#include "ops.h"
#define REAL float
#define RP(n) ref_##n
#include "ref_impl.h"

static void *host_alloc(size_t n) { return smj_alloc(n); }
static void host_free(void *p) { smj_afree(p); }
static void host_copy(void *d, const void *s, size_t n) { if (n) memcpy(d, s, n); }
static void host_zero(void *p, size_t n) { if (n) memset(p, 0, n); }

#define SMJ_HOST_MEMORY .alloc = host_alloc, .free = host_free, .upload = host_copy, \
    .download = host_copy, .zero = host_zero

const smj_backend smj_backend_ref = {
    .name = "ref", SMJ_HOST_MEMORY,
#define SMJ_OP_SET(n) .n = ref_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
};

/* the double-precision reference used by the gradient checker */
#undef REAL
#undef RP
#define REAL double
#define RP(n) ref64_##n
#include "ref_impl.h"

const smj_ref64 smj_ref64_ops = {
#define SMJ_OP_SET(n) .n = ref64_##n,
    SMJ_OPS(SMJ_OP_SET)
#undef SMJ_OP_SET
};

const smj_backend *smj_backend_get(smj_backend_kind kind) {
    return kind == SMJ_BACKEND_REF ? &smj_backend_ref : &smj_backend_cpu;
}
