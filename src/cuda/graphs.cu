/* graphs.cu — the CUDA backend's graph hooks (graph_begin, graph_end,
 * graph_launch, graph_free, graph_trace): a decoding step or a train step
 * recorded once as a CUDA graph and replayed; the launch hash a train
 * step's recording must match, and SMJ_CUDA_GRAPH_LOG's record of what it
 * hashed. How and when a recording is kept: the comment below. */
#include "cuda_common.cuh"

/* SMJ_CUDA_GRAPH_LOG=1: what each trace hashed (the last TL_N values), the
 * current one's and the one before's, so that a train step's recording
 * that is not kept says on stderr where it parted from the step before. */
#define TL_N 16384
struct trace_log {
    struct { uint64_t v; const char *tag; int n; } cur[TL_N], prev[TL_N];
    int ncur, nprev;
};

/* Graphs: the ops between graph_begin and graph_end are captured from the
 * context's stream (not run) and instantiated as one CUDA graph, which
 * graph_launch replays with one call instead of a launch per kernel. Not
 * while profiling or in sync mode (both synchronize inside ops), nor after
 * an error. A capture that fails leaves no error behind: the caller runs
 * the ops again without a graph. Ops that allocate or synchronize must not
 * be captured (a slot, the parameters' copy or the scratch buffer that
 * would grow ends the capture); the callers run the work once without a
 * graph first, so every buffer it needs is allocated before the capture.
 * A graph holds addresses:
 *  - a decoding step's (graph_begin(ex, NULL)) keeps the bf16 copy slots,
 *    which later ops reassign, out of it: a product that would cast ends
 *    the capture, and no op writes a copy beside its output;
 *  - a train step's (graph_begin(ex, &trace)) is recorded as it would run,
 *    kept copies and all: the copies' bookkeeping advances as if the step
 *    ran, and the recording is kept only if its launches (kernel sites,
 *    slots, products' operands and algorithms) hash to the trace of the
 *    same step run just before (graph_trace): then every step starts from
 *    the same state (the step's first host write drops every kept copy but
 *    the parameters' copy, which each update rewrites), and replaying the
 *    recording is running the step again. Otherwise the bookkeeping goes
 *    back to its state at graph_begin. Such a graph is refused once any op
 *    ran since its last launch (its slots may hold other data; buffers may
 *    have moved) or the host wrote into the parameters (their bf16 copy
 *    would be stale);
 *  - both are refused once the scratch buffer has moved.
 * The caller then records again. */
typedef struct {
    decltype(smj_cuda::bc) bc;
    decltype(smj_cuda::ext) ext;
    decltype(smj_cuda::wm) wm;
    int ext_next, n_lazy;
    unsigned long gen, clock, op_clock;
} copy_state;
static void copies_save(smj_cuda *c, copy_state *k) {
    memcpy(k->bc, c->bc, sizeof k->bc);
    memcpy(k->ext, c->ext, sizeof k->ext);
    k->wm = c->wm;
    k->ext_next = c->ext_next, k->n_lazy = c->n_lazy;
    k->gen = c->gen, k->clock = c->clock, k->op_clock = c->op_clock;
}
static void copies_restore(smj_cuda *c, const copy_state *k) {
    memcpy(c->bc, k->bc, sizeof k->bc);
    memcpy(c->ext, k->ext, sizeof k->ext);
    c->wm = k->wm;
    c->ext_next = k->ext_next, c->n_lazy = k->n_lazy;
    c->gen = k->gen, c->clock = k->clock, c->op_clock = k->op_clock;
}
#define TRACE0 0xcbf29ce484222325ull /* (FNV-1a's offset basis) */

trace_log *trace_log_new(void) { return (trace_log *)calloc(1, sizeof(trace_log)); }
void trace_log_add(smj_cuda *c, uint64_t v, const char *tag, int n) {
    trace_log *t = c->tlog;
    if (t->ncur < TL_N) t->cur[t->ncur] = {v, tag, n};
    t->ncur++;
}
static void trace_log_why(const smj_cuda *c, const char *what) {
    const trace_log *t = c->tlog;
    int n = t->ncur < t->nprev ? t->ncur : t->nprev, i = 0;
    if (n > TL_N) n = TL_N;
    while (i < n && t->cur[i].v == t->prev[i].v) i++;
    if (i == n)
        fprintf(stderr, "smedjan: graph: %s: %d hashed values, %d the step before\n", what, t->ncur, t->nprev);
    else
        fprintf(stderr, "smedjan: graph: %s: value %d of %d differs: %s %d (%#llx), the step before %s %d (%#llx) (of %d)\n",
                what, i, t->ncur, t->cur[i].tag, t->cur[i].n, (unsigned long long)t->cur[i].v, t->prev[i].tag,
                t->prev[i].n, (unsigned long long)t->prev[i].v, t->nprev);
}

typedef struct {
    cudaGraphExec_t exec;
    unsigned long scratch_gen; /* the scratch buffer the graph was recorded with */
    int keep;                  /* a train step's: the two below hold */
    unsigned long ops, hw;     /* n_ops and host_writes after its recording or last launch */
} cu_graph;

int cu_graph_begin(const smj_exec *ex, const uint64_t *trace) {
    smj_cuda *c = S(ex);
    if (c->no_graphs || c->profile || c->sync_each || c->err != SMJ_OK) return 0;
    if (trace) {
        if (!c->snap && !(c->snap = malloc(sizeof(copy_state)))) return 0;
        copies_save(c, (copy_state *)c->snap);
        c->trace_want = *trace;
        c->trace = TRACE0;
        if (c->tlog) c->tlog->ncur = 0;
    }
    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    c->capturing = 1;
    c->capture_keep = trace != NULL;
    c->capture_failed = 0;
    c->capture_why = NULL;
    return 1;
}
void *cu_graph_end(const smj_exec *ex) {
    smj_cuda *c = S(ex);
    cudaGraph_t g = NULL;
    cudaGraphExec_t e = NULL;
    cudaError_t r = cudaStreamEndCapture(c->stream, &g);
    const int keep = c->capture_keep;
    c->capturing = c->capture_keep = 0;
    if (keep && !c->capture_failed && c->trace != c->trace_want) {
        capture_fail(c, "the step's launches differ from the step's before");
        if (c->tlog) trace_log_why(c, "recording not kept");
    }
    if (r != cudaSuccess && !c->capture_failed) capture_fail(c, cudaGetErrorString(r));
    if (r == cudaSuccess && !c->capture_failed) r = cudaGraphInstantiate(&e, g, 0);
    if (c->tlog && keep && (c->capture_failed || r != cudaSuccess))
        fprintf(stderr, "smedjan: graph: a train step's recording not kept: %s\n",
                c->capture_failed ? c->capture_why : cudaGetErrorString(r));
    if (g) cudaGraphDestroy(g);
    cu_graph *h = r == cudaSuccess && !c->capture_failed && e ? (cu_graph *)malloc(sizeof *h) : NULL;
    if (!h) {
        (void)cudaGetLastError();
        if (e) cudaGraphExecDestroy(e);
        if (keep) copies_restore(c, (const copy_state *)c->snap);
        return NULL;
    }
    h->exec = e;
    h->scratch_gen = c->scratch_gen;
    h->keep = keep;
    h->ops = c->n_ops;
    h->hw = host_writes.load();
    return h;
}
int cu_graph_launch(const smj_exec *ex, void *g) {
    smj_cuda *c = S(ex);
    cu_graph *h = (cu_graph *)g;
    if (h->scratch_gen != c->scratch_gen) return 0;
    if (h->keep && (c->n_ops != h->ops || c->profile || c->sync_each || c->err != SMJ_OK ||
                    (c->wm.src && host_touched(h->hw, c->wm.src, sizeof(float) * (size_t)c->wm.n))))
        return 0;
    c->op = "graph";
    CK(c, cudaGraphLaunch(h->exec, c->stream));
    if (c->sync_each) CK(c, cudaStreamSynchronize(c->stream));
    c->op = NULL;
    h->hw = host_writes.load();
    return 1;
}
uint64_t cu_graph_trace(const smj_exec *ex) {
    smj_cuda *c = S(ex);
    const uint64_t t = c->trace;
    c->trace = TRACE0;
    if (c->tlog && c->tlog->ncur) { /* (an empty one, nothing run since the last call, is not kept) */
        trace_log *l = c->tlog;
        if (t != c->tlog_prev) trace_log_why(c, "launches differ from the last hashed");
        c->tlog_prev = t;
        memcpy(l->prev, l->cur, sizeof(l->cur[0]) * (size_t)(l->ncur < TL_N ? l->ncur : TL_N));
        l->nprev = l->ncur;
        l->ncur = 0;
    }
    return t;
}
void cu_graph_free(void *g) {
    if (!g) return;
    cudaGraphExecDestroy(((cu_graph *)g)->exec);
    free(g);
}
