/* tracer.c — a GPU timeline for any CUDA program, loaded with LD_PRELOAD
 * (a measuring tool beside the engine, not part of it; bench/timeline/run.sh
 * builds and uses it).
 *
 * CUPTI's activity API records every kernel, memcpy and memset with its
 * start and end on the GPU's clock; at exit the records go to $TRACE_OUT
 * (default /tmp/trace.csv) as "start,end,stream,kind,name" (ns; kind K, C
 * or S). idle.py reads the file and tells where the GPU waited between
 * operations. Built against the CUDA 13 record layouts (Kernel10,
 * Memcpy6, Memset4). */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>

static FILE *out;
enum { BUF = 8 << 20 };

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *maxrec) {
    *buf = (uint8_t *)aligned_alloc(8, BUF);
    *size = *buf ? BUF : 0;
    *maxrec = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t sid, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)sid, (void)size;
    CUpti_Activity *r = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
            fprintf(out, "%llu,%llu,%u,K,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                    k->streamId, k->name);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)r;
            fprintf(out, "%llu,%llu,%u,C,memcpy kind %d bytes %llu\n", (unsigned long long)m->start,
                    (unsigned long long)m->end, m->streamId, m->copyKind, (unsigned long long)m->bytes);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)r;
            fprintf(out, "%llu,%llu,%u,S,memset bytes %llu\n", (unsigned long long)m->start,
                    (unsigned long long)m->end, m->streamId, (unsigned long long)m->bytes);
        }
    }
    free(buf);
}

__attribute__((constructor)) static void trace_start(void) {
    const char *p = getenv("TRACE_OUT");
    out = fopen(p ? p : "/tmp/trace.csv", "w");
    if (!out) {
        fprintf(stderr, "tracer: cannot write %s\n", p ? p : "/tmp/trace.csv");
        return;
    }
    fprintf(out, "start,end,stream,kind,name\n");
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET) != CUPTI_SUCCESS)
        fprintf(stderr, "tracer: CUPTI refused the activity records\n");
}

__attribute__((destructor)) static void trace_end(void) {
    if (!out) return;
    cuptiActivityFlushAll(1);
    fclose(out);
}
