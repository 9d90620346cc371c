/* test_cuda_bf16.c — the CUDA backend's bf16 copies (built with CUDA=1):
 * the optional ops bf16_bind and bf16_home, and promised (bf16-only)
 * outputs, each against its definition (cuda_check.h: canaries, the SKIP
 * rule). bf16_bind: ops reading a bound tensor give bit for bit what they
 * give on its values in 32 bits; bf16_home: the named storage holds the
 * reference's pack; bf16_only: promised outputs read through products as
 * the plain ones do, in 32 bits as their bf16 rounding; bf16_tight: such
 * outputs in half their storage. Meant to run in
 * bf16 mode (SMJ_CUDA_MATMUL=bf16, with and without SMJ_CUDA_BF16_KEEP),
 * where the copies are kept; in other modes the values alone are checked. */
#include "cuda_check.h"
#include "../../src/hf/safetensors.h"

/* bf16_home / bf16_bind (optional ops), checked against their definitions.
 * Bind: a bound tensor (fp32 storage left holding other values) reads as
 * its unpacked values in every op that reads it: swiglu_bwd, rmsnorm_bwd,
 * attention_bwd and matmul give bit for bit the results they give after
 * bf16_unpack, an op that needs the fp32 values (add) sees them, and ending
 * the bindings (or unpacking over one) leaves later writes alone. Home:
 * no value changes, and after the op and bf16_pack the storage holds the
 * reference's pack; in bf16 mode (copies kept) the op itself wrote it there
 * (before the pack), and a home serves only the next op. */
static const float JUNK = 7.0f;
/* bf16 mode with copies kept: bound tensors stay unwritten, homes are used */
static int copies_kept(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    return mm && strcmp(mm, "bf16") == 0 && !getenv("SMJ_CUDA_BF16_KEEP");
}
/* whether device tensor D (n > 0) still holds JUNK everywhere */
static int still_junk(const float *D, int64_t n) {
    float *h = get_h(D, n);
    int64_t j = 0;
    while (j < n && h[j] == JUNK) j++;
    ffree(h);
    return j == n;
}
static uint16_t *pack_d(const float *Dx, int64_t n) { /* device bf16 storage of a device tensor */
    uint16_t *d = u16_d(n);
    float *h = get_h(Dx, n);
    uint16_t *p = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, p, h, n);
    be->upload(d, p, sizeof(uint16_t) * (size_t)n);
    free(p); ffree(h);
    return d;
}
static float *junk_d(int64_t n) {
    float *h = frand(n, 0);
    for (int64_t i = 0; i < n; i++) h[i] = JUNK;
    float *d = dup_d(h, n);
    ffree(h);
    return d;
}
static void same_d(const char *what, const float *Da, const float *Db, int64_t n) {
    float *a = get_h(Da, n), *b = get_h(Db, n);
    CHECK(memcmp(a - PAD, b - PAD, sizeof(float) * (size_t)(n + 2 * PAD)) == 0,
          "cuda/bf16_bind %s: results differ from the unpacked tensors'", what);
    ffree(a); ffree(b);
}
/* the values of bf16 storage H as floats */
static float *unpacked_h(const uint16_t *H, int64_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    be->download(h, H, sizeof(uint16_t) * (size_t)n);
    float *f = frand(n, 0);
    rf->bf16_unpack(X1, f, h, n);
    free(h);
    return f;
}
/* tensors for H's values: A uploaded (ops read it in 32 bits), B to bind
 * (after every upload: a host write makes kept copies stale) */
static void bound_pair(const uint16_t *H, int64_t n, float **A, float **B) {
    float *f = unpacked_h(H, n);
    *A = dup_d(f, n);
    *B = junk_d(n);
    ffree(f);
}

static void check_bf16_bind(void) {
    cur_op = "bf16_bind";
    long before = check_failed;
    /* swiglu_bwd and matmul reading bound gate / up */
    int64_t n = 3 * 8192, K = 256, M = n / K, NW = 96;
    float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *w = frand(NW * K, 1), *z = frand(n, 0);
    float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n), *Dw = dup_d(w, NW * K), *Dz = dup_d(z, n);
    uint16_t *G16 = pack_d(Dg, n), *U16 = pack_d(Du, n);
    float *Ga, *Gb, *Ua, *Ub, *Xa = junk_d(n), *Xb = junk_d(n), *Ya = junk_d(n), *Yb = junk_d(n);
    float *Ca = junk_d(M * NW), *Cb = junk_d(M * NW);
    bound_pair(G16, n, &Ga, &Gb);
    bound_pair(U16, n, &Ua, &Ub);
    float *R = junk_d(n);
    be->bf16_bind(ex, Gb, G16, n);
    be->bf16_bind(ex, Ub, U16, n);
    snprintf(cur_shape, sizeof cur_shape, "swiglu_bwd n%lld", (long long)n);
    be->swiglu_bwd(ex, Xa, Ya, Dd, Ga, Ua, 1, (int)n, 0);
    be->swiglu_bwd(ex, Xb, Yb, Dd, Gb, Ub, 1, (int)n, 0);
    same_d("swiglu_bwd dgate", Xa, Xb, n);
    same_d("swiglu_bwd dup", Ya, Yb, n);
    be->matmul(ex, Ca, Ga, Dw, M, NW, K, 0, 1, 0);
    be->matmul(ex, Cb, Gb, Dw, M, NW, K, 0, 1, 0);
    same_d("matmul", Ca, Cb, M * NW);
    if (copies_kept())
        CHECK(still_junk(Gb, n) && still_junk(Ub, n), "cuda/bf16_bind: swiglu_bwd / matmul wrote a bound input");
    be->add(ex, Xb, Ub, Dz, n); /* reads Ub in 32 bits */
    same_d("add (fp32 values)", Ua, Xb, n);
    same_d("the bound tensor itself after an op read it", Ua, Ub, n);
    /* ending the bindings, and an unpack over a bound tensor: no later write */
    be->bf16_bind(ex, R, G16, n);
    be->bf16_drop(ex, NULL, 0);
    be->upload(R, u, sizeof(float) * (size_t)n);
    be->add(ex, Xb, R, Dz, n);
    same_d("ended binding", Du, Xb, n);
    be->bf16_bind(ex, R, G16, n);
    be->bf16_unpack(ex, R, U16, n);
    be->add(ex, Xb, R, Dz, n);
    same_d("unpack over a bound tensor", Ua, Xb, n);
    be->bf16_drop(ex, NULL, 0);
    /* the bf16 values at the tensor's own start (the LM head's chunks):
     * read in 32 bits, bound or unpacked, they unpack in place */
    uint16_t *u16 = malloc(sizeof(uint16_t) * (size_t)n);
    be->download(u16, U16, sizeof(uint16_t) * (size_t)n);
    be->upload(R, u16, sizeof(uint16_t) * (size_t)n);
    be->bf16_bind(ex, R, (const uint16_t *)R, n);
    be->add(ex, Xb, R, Dz, n);
    same_d("add reading a tensor bound to its own storage", Ua, Xb, n);
    same_d("a tensor bound to its own storage, read", Ua, R, n);
    be->upload(R, u16, sizeof(uint16_t) * (size_t)n);
    be->bf16_unpack(ex, R, (const uint16_t *)R, n);
    same_d("unpack in place", Ua, R, n);
    be->bf16_drop(ex, NULL, 0);
    free(u16);
    dfree(Ga); dfree(Gb); dfree(Ua); dfree(Ub); dfree(Xa); dfree(Xb); dfree(Ya); dfree(Yb); dfree(Ca); dfree(Cb);
    dfree(Dg); dfree(Du); dfree(Dd); dfree(Dw); dfree(Dz); dfree(R);
    be->free(G16); be->free(U16);
    ffree(g); ffree(u); ffree(d); ffree(w); ffree(z);

    /* rmsnorm_bwd reading a bound x */
    int64_t N = 48; int C = 768;
    snprintf(cur_shape, sizeof cur_shape, "rmsnorm_bwd N%lld C%d", (long long)N, C);
    float *x = frand(N * C, 2), *wn = frand(C, 1), *dy = frand(N * C, 1), *r = frand(N, 0), *o = frand(N * C, 0);
    float *Dx0 = dup_d(x, N * C), *Dwn = dup_d(wn, C), *Ddy = dup_d(dy, N * C), *Dr = dup_d(r, N), *Do = dup_d(o, N * C);
    uint16_t *X16 = pack_d(Dx0, N * C);
    float *Xa2, *Xb2, *dxa = junk_d(N * C), *dxb = junk_d(N * C), *dwa = dup_d(wn, C), *dwb = dup_d(wn, C);
    bound_pair(X16, N * C, &Xa2, &Xb2);
    be->rmsnorm_fwd(ex, Do, Dr, Xa2, Dwn, N, C, 1e-5f);
    be->bf16_bind(ex, Xb2, X16, N * C);
    be->rmsnorm_bwd(ex, dxa, dwa, Ddy, Xa2, Dwn, Dr, N, C, 0);
    be->rmsnorm_bwd(ex, dxb, dwb, Ddy, Xb2, Dwn, Dr, N, C, 0);
    same_d("rmsnorm_bwd dx", dxa, dxb, N * C);
    same_d("rmsnorm_bwd dw", dwa, dwb, C);
    if (copies_kept()) CHECK(still_junk(Xb2, N * C), "cuda/bf16_bind: rmsnorm_bwd wrote its bound input");
    be->bf16_drop(ex, NULL, 0);
    dfree(Dx0); dfree(Dwn); dfree(Ddy); dfree(Dr); dfree(Do); dfree(Xa2); dfree(Xb2); dfree(dxa); dfree(dxb);
    dfree(dwa); dfree(dwb); be->free(X16);
    ffree(x); ffree(wn); ffree(dy); ffree(r); ffree(o);

    /* GPT-2's: layernorm_bwd and gelu_bwd reading a bound x, while another
     * tensor stays bound (and unwritten) across them */
    {
        int64_t NL = 64; int CL = 768, nl = (int)(NL * CL);
        snprintf(cur_shape, sizeof cur_shape, "layernorm_bwd / gelu_bwd N%lld C%d", (long long)NL, CL);
        float *xl = frand(nl, 2), *wl = frand(CL, 1), *dl = frand(nl, 1), *ol = frand(nl, 0);
        float *Dxl = dup_d(xl, nl), *Dwl = dup_d(wl, CL), *Ddl = dup_d(dl, nl), *Dol = dup_d(ol, nl);
        float *Dm = junk_d(NL), *Drl = junk_d(NL), *Other = junk_d(nl);
        uint16_t *XL16 = pack_d(Dxl, nl), *O16 = pack_d(Ddl, nl);
        float *XLa, *XLb;
        bound_pair(XL16, nl, &XLa, &XLb);
        float *ga = junk_d(nl), *gb = junk_d(nl), *wa = dup_d(wl, CL), *wb = dup_d(wl, CL), *ba = dup_d(wl, CL),
              *bb = dup_d(wl, CL), *ea = junk_d(nl), *eb = junk_d(nl);
        be->layernorm_fwd(ex, Dol, Dm, Drl, XLa, Dwl, Dwl, NL, CL, 1e-5f);
        be->bf16_bind(ex, XLb, XL16, nl);
        be->bf16_bind(ex, Other, O16, nl);
        be->layernorm_bwd(ex, ga, wa, ba, Ddl, XLa, Dwl, Dm, Drl, NL, CL, 0);
        be->layernorm_bwd(ex, gb, wb, bb, Ddl, XLb, Dwl, Dm, Drl, NL, CL, 0);
        same_d("layernorm_bwd dx", ga, gb, nl);
        same_d("layernorm_bwd dw", wa, wb, CL);
        same_d("layernorm_bwd db", ba, bb, CL);
        be->gelu_bwd(ex, ea, Ddl, XLa, nl);
        be->gelu_bwd(ex, eb, Ddl, XLb, nl);
        same_d("gelu_bwd", ea, eb, nl);
        if (copies_kept())
            CHECK(still_junk(XLb, nl) && still_junk(Other, nl),
                  "cuda/bf16_bind: layernorm_bwd / gelu_bwd wrote a bound tensor's fp32 storage");
        be->bf16_drop(ex, NULL, 0);
        dfree(Dxl); dfree(Dwl); dfree(Ddl); dfree(Dol); dfree(Dm); dfree(Drl); dfree(Other); dfree(XLa); dfree(XLb);
        dfree(ga); dfree(gb); dfree(wa); dfree(wb); dfree(ba); dfree(bb); dfree(ea); dfree(eb);
        be->free(XL16); be->free(O16);
        ffree(xl); ffree(wl); ffree(dl); ffree(ol);
    }

    /* attention_bwd reading bound q, k, v, out (the flash path in bf16 mode) */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    snprintf(cur_shape, sizeof cur_shape, "attention_bwd B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS, nl = (int64_t)B * NH * T;
    float sc = 1.0f / sqrtf((float)HS);
    float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *dout = frand(nq, 1);
    float *Dq0 = dup_d(q, nq), *Dk0 = dup_d(k, nk), *Dv0 = dup_d(v, nk), *Ddo = dup_d(dout, nq);
    uint16_t *Q16 = pack_d(Dq0, nq), *K16 = pack_d(Dk0, nk), *V16 = pack_d(Dv0, nk);
    float *Qa, *Qb, *Ka, *Kb, *Va, *Vb, *Oa, *Ob, *O0 = junk_d(nq), *L = junk_d(nl);
    bound_pair(Q16, nq, &Qa, &Qb);
    bound_pair(K16, nk, &Ka, &Kb);
    bound_pair(V16, nk, &Va, &Vb);
    be->attention_fwd(ex, O0, L, Qa, Ka, Va, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, sc);
    uint16_t *O16 = pack_d(O0, nq);
    bound_pair(O16, nq, &Oa, &Ob);
    float *r1[3] = {junk_d(nq), junk_d(nk), junk_d(nk)}, *r2[3] = {junk_d(nq), junk_d(nk), junk_d(nk)};
    be->bf16_bind(ex, Qb, Q16, nq);
    be->bf16_bind(ex, Kb, K16, nk);
    be->bf16_bind(ex, Vb, V16, nk);
    be->bf16_bind(ex, Ob, O16, nq);
    be->attention_bwd(ex, r1[0], r1[1], r1[2], Ddo, Oa, L, Qa, Ka, Va, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
    be->attention_bwd(ex, r2[0], r2[1], r2[2], Ddo, Ob, L, Qb, Kb, Vb, B, T, NH, NKV, HS, 0, 0, 0, 0, sc);
    same_d("attention_bwd dq", r1[0], r2[0], nq);
    same_d("attention_bwd dk", r1[1], r2[1], nk);
    same_d("attention_bwd dv", r1[2], r2[2], nk);
    if (copies_kept())
        CHECK(still_junk(Qb, nq) && still_junk(Kb, nk) && still_junk(Vb, nk) && still_junk(Ob, nq),
              "cuda/bf16_bind: attention_bwd wrote a bound input");
    be->bf16_drop(ex, NULL, 0);
    for (int i = 0; i < 3; i++) { dfree(r1[i]); dfree(r2[i]); }
    dfree(Qa); dfree(Qb); dfree(Ka); dfree(Kb); dfree(Va); dfree(Vb); dfree(Oa); dfree(Ob); dfree(O0); dfree(L);
    dfree(Dq0); dfree(Dk0); dfree(Dv0); dfree(Ddo);
    be->free(Q16); be->free(K16); be->free(V16); be->free(O16);
    ffree(q); ffree(k); ffree(v); ffree(dout);
    printf("cuda %-14s %-6s bound tensors read bit for bit as unpacked ones\n", "bf16_bind",
           check_failed == before ? "ok" : "FAILED");
}

/* bf16_only: the promised output reads, through products, bit for bit as
 * the plain output does; in bf16 mode (copies kept) its fp32 storage stays
 * unwritten and an op that reads it in 32 bits sees the bf16-rounded
 * values; bf16_drop leaves later writes alone. Outputs of swiglu_bwd,
 * xent_bwd, xent_fwd_bwd, rope_bwd (in place) and attention_bwd's dv
 * (flash). */
static float *oc_w, *oc_a, *oc_b, *oc_z, *oc_s; /* made before the ops: a host write would end the copies */
enum { OC_NW = 48, OC_N = 4 * 8192 };
/* before: the promised output's storage before the op (an in-place op's
 * input), NULL: JUNK */
static void only_check(const char *what, const float *Dplain, float *Donly, int64_t n, const float *before) {
    int64_t K = 64, M = n / K, NW = OC_NW;
    float *Ca = oc_a, *Cb = oc_b, *Dz = oc_z, *S = oc_s, *Dw = oc_w;
    if (copies_kept()) {
        float *h = get_h(Donly, n);
        int same = before ? memcmp(h, before, sizeof(float) * (size_t)n) == 0 : still_junk(Donly, n);
        CHECK(same, "cuda/bf16_only %s: the fp32 values were written", what);
        ffree(h);
    }
    be->matmul(ex, Ca, Dplain, Dw, M, NW, K, 0, 1, 0);
    be->matmul(ex, Cb, Donly, Dw, M, NW, K, 0, 1, 0);
    char buf[96];
    snprintf(buf, sizeof buf, "%s: its product", what);
    same_d(buf, Ca, Cb, M * NW);
    be->add(ex, S, Donly, Dz, n); /* a 32-bit read: the rounded values */
    float *p = get_h(Dplain, n), *g = get_h(S, n);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, h, p, n);
    if (copies_kept()) rf->bf16_unpack(X1, p, h, n);
    CHECK(memcmp(p, g, sizeof(float) * (size_t)n) == 0, "cuda/bf16_only %s: a 32-bit read differs from the %s values",
          what, copies_kept() ? "rounded" : "plain");
    free(h); ffree(p); ffree(g);
}

static void check_bf16_only(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N;
    float *g = frand(n, 6), *u = frand(n, 2), *d = frand(n, 1), *w = frand(OC_NW * 64, 1);
    float *Dg = dup_d(g, n), *Du = dup_d(u, n), *Dd = dup_d(d, n);
    float *A1 = junk_d(n), *A2 = junk_d(n), *B1 = junk_d(n), *B2 = junk_d(n), *B3 = junk_d(n), *B4 = junk_d(n);
    oc_w = dup_d(w, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "n%lld", (long long)n);
    be->swiglu_bwd(ex, A1, A2, Dd, Dg, Du, 1, (int)n, 0);
    be->bf16_only(ex, B1, n);
    be->swiglu_bwd(ex, B1, B2, Dd, Dg, Du, 1, (int)n, 0);
    only_check("swiglu_bwd dgate", A1, B1, n, NULL);
    be->bf16_only(ex, B4, n);
    be->swiglu_bwd(ex, B3, B4, Dd, Dg, Du, 1, (int)n, 0);
    only_check("swiglu_bwd dup", A2, B4, n, NULL);
    /* xent_bwd in place over logits, 8 rows of 4096 */
    int64_t R = 8, V = n / R;
    int32_t *t = targets_for(R, (int)V), *Dt = ids_d(t, R);
    float *Dl = junk_d(R), *Dz = junk_d(R), *L1 = dup_d(g, n), *L2 = dup_d(g, n);
    be->xent_fwd(ex, Dz, Dl, L1, Dt, R, (int)V, (int)V);
    be->xent_bwd(ex, L1, L1, Dl, Dt, 0.5f, R, (int)V, (int)V);
    be->bf16_only(ex, L2, n);
    be->xent_bwd(ex, L2, L2, Dl, Dt, 0.5f, R, (int)V, (int)V);
    only_check("xent_bwd", L1, L2, n, g);
    /* xent_fwd_bwd in place over a row of 32768 logits bound to bf16
     * storage, promised (a train step's 16-bit logits), against xent_fwd
     * and xent_bwd over their unpacked values (losses, lse bit for bit) */
    uint16_t *HL = pack_d(Dg, n);
    float *A, *BL, *El = junk_d(1), *Ez = junk_d(1), *Fl = junk_d(1), *Fz = junk_d(1);
    bound_pair(HL, n, &A, &BL);
    be->xent_fwd(ex, El, Ez, A, Dt, 1, (int)n, (int)n);
    be->xent_bwd(ex, A, A, Ez, Dt, 0.5f, 1, (int)n, (int)n);
    be->bf16_bind(ex, BL, HL, n);
    be->bf16_only(ex, BL, n);
    CHECK(be->xent_fwd_bwd(ex, Fl, Fz, BL, BL, Dt, 0.5f, 1, (int)n, (int)n), "cuda/xent_fwd_bwd: declined");
    same_d("xent_fwd_bwd's loss", El, Fl, 1);
    same_d("xent_fwd_bwd's lse", Ez, Fz, 1);
    only_check("xent_fwd_bwd (bound logits, in place)", A, BL, n, NULL);
    /* rope_bwd in place: 64 rows of 8 heads of 64 */
    float *cs, *sn;
    rope_tables(64, 64, &cs, &sn);
    float *Dc = dup_d(cs, 64 * 32), *Ds = dup_d(sn, 64 * 32), *X1d = dup_d(d, n), *X2d = dup_d(d, n);
    be->rope_bwd(ex, X1d, Dc, Ds, 1, 64, 8, 64, 0, 0);
    be->bf16_only(ex, X2d, n);
    be->rope_bwd(ex, X2d, Dc, Ds, 1, 64, 8, 64, 0, 0);
    only_check("rope_bwd (in place)", X1d, X2d, n, d);
    /* attention_bwd's dv (flash in bf16 mode): B 2, T 64, 4 heads (2 KV) of 64 */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *Q = dup_d(g, nq), *Kd = dup_d(u, nk), *Vd = dup_d(d, nk), *O = junk_d(nq), *Lse = junk_d((int64_t)B * NH * T);
    float *dO = dup_d(u, nq), *r[6];
    for (int i = 0; i < 6; i++) r[i] = junk_d(i % 3 == 0 ? nq : nk);
    be->attention_fwd(ex, O, Lse, Q, Kd, Vd, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, 0.125f);
    be->attention_bwd(ex, r[0], r[1], r[2], dO, O, Lse, Q, Kd, Vd, B, T, NH, NKV, HS, 0, 0, 0, 0, 0.125f);
    be->bf16_only(ex, r[5], nk);
    be->attention_bwd(ex, r[3], r[4], r[5], dO, O, Lse, Q, Kd, Vd, B, T, NH, NKV, HS, 0, 0, 0, 0, 0.125f);
    only_check("attention_bwd dv", r[2], r[5], nk, NULL);
    /* a dropped promise leaves a later write alone */
    float *P = junk_d(n), *Z = junk_d(n), *S = junk_d(n);
    be->scale(ex, Z, 0.0f, n);
    be->bf16_only(ex, P, n);
    be->bf16_only(ex, B2, n);
    be->swiglu_bwd(ex, P, B2, Dd, Dg, Du, 1, (int)n, 0);
    be->bf16_drop(ex, P, n);
    be->upload(P, d, sizeof(float) * (size_t)n);
    be->add(ex, S, P, Z, n);
    same_d("dropped bf16-only tensor, then written", Dd, S, n);
    be->bf16_drop(ex, NULL, 0);
    for (int i = 0; i < 6; i++) dfree(r[i]);
    dfree(Q); dfree(Kd); dfree(Vd); dfree(O); dfree(Lse); dfree(dO); dfree(P); dfree(Z); dfree(S);
    dfree(Dc); dfree(Ds); dfree(X1d); dfree(X2d); ffree(cs); ffree(sn);
    dfree(Dl); dfree(Dz); dfree(L1); dfree(L2); be->free(Dt); free(t);
    dfree(A); dfree(BL); dfree(El); dfree(Ez); dfree(Fl); dfree(Fz); be->free(HL);
    dfree(Dg); dfree(Du); dfree(Dd); dfree(A1); dfree(A2); dfree(B1); dfree(B2); dfree(B3); dfree(B4);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    ffree(g); ffree(u); ffree(d); ffree(w);
    printf("cuda %-14s %-6s promised outputs read as the plain ones through products%s\n", "bf16_only",
           check_failed == before ? "ok" : "FAILED", copies_kept() ? ", unwritten in 32 bits" : "");
}

/* Fused tensors' views under bf16_only: swiglu_bwd writing dgate|dup as
 * one promised [N, 2H] tensor; rope_bwd over the q|k heads of rows of
 * q|k|v, its copy holding the columns past the heads too (promised: read
 * through products as the plain result; kept beside the fp32 values: a
 * product reading it equals one casting those values afresh). */
static void check_fused_rows(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N, N = 64, W = n / N, H = W / 2;
    float *g = frand(n, 6), *d = frand(n, 1), *w = frand(OC_NW * 64, 1);
    float *Dg = dup_d(g, n), *Dd = dup_d(d, n), *A = junk_d(n), *B = junk_d(n);
    float *cs, *sn;
    rope_tables(N, 64, &cs, &sn);
    float *Dc = dup_d(cs, N * 32), *Ds = dup_d(sn, N * 32), *X1d = dup_d(d, n), *X2d = dup_d(d, n);
    oc_w = dup_d(w, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "N%lld H%lld (gate|up fused)", (long long)N, (long long)H);
    be->swiglu_bwd(ex, A, A + H, Dd, Dg, Dg + H, N, (int)H, 2 * H);
    be->bf16_only(ex, B, n);
    be->swiglu_bwd(ex, B, B + H, Dd, Dg, Dg + H, N, (int)H, 2 * H);
    only_check("swiglu_bwd dgate|dup", A, B, n, NULL);
    snprintf(cur_shape, sizeof cur_shape, "T%lld, 6 heads of 64 in rows of %lld", (long long)N, (long long)W);
    be->rope_bwd(ex, X1d, Dc, Ds, 1, (int)N, 6, 64, 0, W);
    be->bf16_only(ex, X2d, n);
    be->rope_bwd(ex, X2d, Dc, Ds, 1, (int)N, 6, 64, 0, W);
    only_check("rope_bwd (rows of q|k|v)", X1d, X2d, n, d);
    /* attention_bwd_rope into fused dq|dk|dv (B 1, T 64, 4 heads, 2 KV heads,
     * of 64: rows of 512), promised whole, against attention_bwd and
     * rope_bwd (where the backend takes it) */
    {
        int T = 64, NH = 4, NKV = 2, HS = 64;
        int64_t QD = NH * HS, KD = NKV * HS, nq = T * QD, nk = T * KD;
        float *Q = dup_d(g, nq), *K = dup_d(d, nk), *V = dup_d(g + nq, nk), *O = junk_d(nq), *L = junk_d(NH * T);
        float *dO = dup_d(d + nk, nq), *G1 = junk_d(n), *G2 = junk_d(n);
        be->attention_fwd(ex, O, L, Q, K, V, 1, T, T, NH, NKV, HS, 0, 0, T * KD, 0.125f);
        be->bf16_only(ex, G2, n);
        if (be->attention_bwd_rope(ex, G2, G2 + QD, G2 + QD + KD, dO, O, L, Q, K, V, Dc, Ds, 1, T, NH, NKV, HS, 0, 0, W,
                                   W, 0.125f)) {
            be->attention_bwd(ex, G1, G1 + QD, G1 + QD + KD, dO, O, L, Q, K, V, 1, T, NH, NKV, HS, 0, 0, W, W, 0.125f);
            be->rope_bwd(ex, G1, Dc, Ds, 1, T, NH + NKV, HS, 0, W);
            snprintf(cur_shape, sizeof cur_shape, "T%d, dq|dk|dv in rows of %lld", T, (long long)W);
            only_check("attention_bwd_rope (fused, promised whole)", G1, G2, n, NULL);
        }
        be->bf16_drop(ex, NULL, 0);
        dfree(Q); dfree(K); dfree(V); dfree(O); dfree(L); dfree(dO); dfree(G1); dfree(G2);
    }
    float *Y = dup_d(d, n);
    be->rope_bwd(ex, Y, Dc, Ds, 1, (int)N, 6, 64, 0, W);
    be->matmul(ex, oc_a, Y, oc_w, n / 64, OC_NW, 64, 0, 1, 0); /* through the copy rope wrote, if kept */
    float *h = get_h(Y, n);
    be->upload(Y, h, sizeof(float) * (size_t)n); /* a host write: no copy survives */
    be->matmul(ex, oc_b, Y, oc_w, n / 64, OC_NW, 64, 0, 1, 0);
    same_d("rope_bwd's copy (rows of q|k|v) against a fresh cast", oc_a, oc_b, n / 64 * OC_NW);
    dfree(Y); ffree(h);
    dfree(Dg); dfree(Dd); dfree(A); dfree(B); dfree(Dc); dfree(Ds); dfree(X1d); dfree(X2d);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    ffree(g); ffree(d); ffree(w); ffree(cs); ffree(sn);
    printf("cuda %-14s %-6s fused gate|up and q|k|v rows: promised and kept copies of whole tensors%s\n", "bf16_only",
           check_failed == before ? "ok" : "FAILED", copies_kept() ? "" : " (no copies kept)");
}

/* bf16_only on the forward's outputs and on products (bf16 mode).
 * rmsnorm_fwd, add_rmsnorm_fwd and attention_fwd (flash): promised outputs
 * read as the plain ones through products (only_check). A product's (and
 * a matmul_bias's) promised output is the bf16 product: in 32 bits, bf16
 * values within one bf16 rounding of the fp32 product, its fp32 storage
 * unwritten while copies are kept; swiglu_fwd reading promised gate / up,
 * swiglu_bwd and rmsnorm_bwd a promised dout give, bit for bit, what they
 * give on fp32 tensors holding the same values, without writing the
 * promised tensors' fp32 storage. */
static int bf16_mode(void) {
    const char *mm = getenv("SMJ_CUDA_MATMUL");
    return mm && strcmp(mm, "bf16") == 0;
}
static void check_bf16_only_fwd(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N, N = 512;
    int C = (int)(n / N);
    float *x = frand(n, 2), *y = frand(n, 1), *w = frand(C, 1), *wm = frand(OC_NW * 64, 1);
    float *Dx = dup_d(x, n), *Dy = dup_d(y, n), *Dw = dup_d(w, C), *R = junk_d(N), *S1 = junk_d(n), *S2 = junk_d(n);
    float *O1 = junk_d(n), *O2 = junk_d(n);
    oc_w = dup_d(wm, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
    be->rmsnorm_fwd(ex, O1, R, Dx, Dw, N, C, 1e-5f);
    be->bf16_only(ex, O2, n);
    be->rmsnorm_fwd(ex, O2, R, Dx, Dw, N, C, 1e-5f);
    only_check("rmsnorm_fwd", O1, O2, n, NULL);
    dfree(O2);
    O2 = junk_d(n);
    be->add_rmsnorm_fwd(ex, S1, O1, R, Dx, Dy, Dw, N, C, 1e-5f);
    be->bf16_only(ex, O2, n);
    be->add_rmsnorm_fwd(ex, S2, O2, R, Dx, Dy, Dw, N, C, 1e-5f);
    only_check("add_rmsnorm_fwd", O1, O2, n, NULL);
    same_d("add_rmsnorm_fwd sum (beside a promised out)", S1, S2, n);
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *L = junk_d((int64_t)B * NH * T), *A1 = junk_d(nq), *A2 = junk_d(nq);
    snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    be->attention_fwd(ex, A1, L, Dx, Dy, Dy + nk, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, 0.125f);
    be->bf16_only(ex, A2, nq);
    be->attention_fwd(ex, A2, L, Dx, Dy, Dy + nk, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, 0.125f);
    only_check("attention_fwd", A1, A2, nq, NULL);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    dfree(Dx); dfree(Dy); dfree(Dw); dfree(R); dfree(S1); dfree(S2); dfree(O1); dfree(O2); dfree(L); dfree(A1);
    dfree(A2);
    ffree(x); ffree(y); ffree(w); ffree(wm);

    /* products: gate, up = X Wg^T, X Wu^T [M,H]; swiglu forward and backward */
    int64_t M = 256, K = 128, H = 512, nh = M * H;
    float *xa = frand(M * K, 1), *wg = frand(H * K, 1), *wu = frand(H * K, 1), *wd = frand(H * K, 1);
    float *Xa = dup_d(xa, M * K), *Wg = dup_d(wg, H * K), *Wu = dup_d(wu, H * K), *Wd = dup_d(wd, H * K);
    float *G1 = junk_d(nh), *G2 = junk_d(nh), *U2 = junk_d(nh), *D2 = junk_d(nh), *Z = junk_d(nh);
    float *Ga = junk_d(nh), *Ua = junk_d(nh), *Da = junk_d(nh), *F1 = junk_d(nh), *F2 = junk_d(nh);
    float *P[4];
    for (int i = 0; i < 4; i++) P[i] = junk_d(nh);
    be->scale(ex, Z, 0.0f, nh);
    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld", (long long)M, (long long)H, (long long)K);
    be->matmul(ex, G1, Xa, Wg, M, H, K, 0, 1, 0);
    /* rmsnorm_bwd on the promised D2 as dout below ([256 rows of 512],
     * x = G1): its inputs made before the promises (scale reads all in 32 bits) */
    float *rw = frand(H, 1), *Rw = dup_d(rw, H), *Rs = junk_d(M), *Rx = junk_d(nh), *R1 = junk_d(nh), *R2 = junk_d(nh);
    float *W1 = junk_d(H), *W2 = junk_d(H);
    be->rmsnorm_fwd(ex, Rx, Rs, G1, Rw, M, (int)H, 1e-5f);
    be->scale(ex, W1, 0.0f, H);
    be->scale(ex, W2, 0.0f, H);
    be->bf16_only(ex, G2, nh);
    be->matmul(ex, G2, Xa, Wg, M, H, K, 0, 1, 0);
    be->bf16_only(ex, U2, nh);
    be->matmul(ex, U2, Xa, Wu, M, H, K, 0, 1, 0);
    be->bf16_only(ex, D2, nh);
    be->matmul(ex, D2, Xa, Wd, M, H, K, 0, 1, 0);
    be->swiglu_fwd(ex, F2, G2, U2, 1, (int)nh, 0);
    be->swiglu_bwd(ex, P[2], P[3], D2, G2, U2, 1, (int)nh, 0);
    be->rmsnorm_bwd(ex, R2, W2, D2, G1, Rw, Rs, M, (int)H, 0);
    if (copies_kept())
        CHECK(still_junk(G2, nh) && still_junk(U2, nh) && still_junk(D2, nh),
              "cuda/bf16_only: a promised product output's fp32 values were written (by it, swiglu or rmsnorm)");
    be->add(ex, Ga, G2, Z, nh); /* 32-bit reads */
    be->add(ex, Ua, U2, Z, nh);
    be->add(ex, Da, D2, Z, nh);
    be->swiglu_fwd(ex, F1, Ga, Ua, 1, (int)nh, 0);
    be->swiglu_bwd(ex, P[0], P[1], Da, Ga, Ua, 1, (int)nh, 0);
    same_d("swiglu_fwd on promised gate / up", F1, F2, nh);
    same_d("swiglu_bwd dgate on a promised dout", P[0], P[2], nh);
    same_d("swiglu_bwd dup on a promised dout", P[1], P[3], nh);
    be->rmsnorm_bwd(ex, R1, W1, Da, G1, Rw, Rs, M, (int)H, 0);
    same_d("rmsnorm_bwd dx on a promised dout", R1, R2, nh);
    same_d("rmsnorm_bwd dw on a promised dout", W1, W2, H);
    dfree(Rw); dfree(Rs); dfree(Rx); dfree(R1); dfree(R2); dfree(W1); dfree(W2); ffree(rw);
    float *g1 = get_h(G1, nh), *ga = get_h(Ga, nh);
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < nh; i++) {
        uint32_t u;
        memcpy(&u, &ga[i], 4);
        double e = fabs((double)ga[i] - g1[i]);
        if (bf16_mode() && ((u & 0xffffu) || e > fabs((double)g1[i]) / 256 * 1.001 + 1e-30)) bad++;
        if (!bf16_mode() && ga[i] != g1[i]) bad++;
        if (e > worst) worst = e;
    }
    CHECK(bad == 0, "cuda/bf16_only matmul: %lld of %lld promised values are not %s (worst |diff| %.3g)",
          (long long)bad, (long long)nh, bf16_mode() ? "the product's bf16 rounding" : "the plain product", worst);
    ffree(g1); ffree(ga);
    /* matmul_bias (GPT-2's biased products) on a promised output: taken in
     * bf16 mode as for a plain one (fp32 mode declines both), bf16 values
     * within one rounding of the plain output (the product plus the bias,
     * rounded once; the bias itself rounded to bf16, cuBLASLt's type for a
     * bf16 output), its fp32 storage unwritten while copies are kept */
    {
        float *bs = frand(H, 1), *Db = dup_d(bs, H), *B1 = junk_d(nh), *B2 = junk_d(nh), *Bb = junk_d(nh);
        int t1 = be->matmul_bias(ex, B1, Xa, Wg, Db, M, H, K, 0, 1);
        be->bf16_only(ex, B2, nh);
        int t2 = be->matmul_bias(ex, B2, Xa, Wg, Db, M, H, K, 0, 1);
        CHECK(t1 == bf16_mode() && t2 == t1, "cuda/bf16_only matmul_bias: taken %d, promised %d, want %d", t1, t2,
              bf16_mode());
        if (t2) {
            if (copies_kept()) CHECK(still_junk(B2, nh), "cuda/bf16_only matmul_bias: the fp32 values were written");
            be->add(ex, Bb, B2, Z, nh); /* a 32-bit read */
            float *b1 = get_h(B1, nh), *bb = get_h(Bb, nh);
            int64_t nbad = 0;
            for (int64_t i = 0; i < nh; i++) {
                uint32_t u;
                memcpy(&u, &bb[i], 4);
                double tol = (fabs((double)b1[i]) + fabs((double)bs[i % H])) / 256 * 1.001 + 1e-30;
                if ((u & 0xffffu) || fabs((double)bb[i] - b1[i]) > tol) nbad++;
            }
            CHECK(nbad == 0, "cuda/bf16_only matmul_bias: %lld of %lld promised values are not the plain output's "
                  "bf16 rounding", (long long)nbad, (long long)nh);
            ffree(b1); ffree(bb);
        }
        dfree(Db); dfree(B1); dfree(B2); dfree(Bb); ffree(bs);
    }
    /* rope_fwd on a promised product output (q [1, 256, 8 heads of 64]):
     * rotated in its copy in place, the fp32 storage unwritten; reads as
     * the bf16 rounding of the rotation of the product's values */
    float *cs, *sn;
    rope_tables(256, 64, &cs, &sn);
    float *Dc = dup_d(cs, 256 * 32), *Ds = dup_d(sn, 256 * 32), *Q2 = junk_d(nh), *Qr = junk_d(nh);
    be->bf16_only(ex, Q2, nh);
    be->matmul(ex, Q2, Xa, Wg, M, H, K, 0, 1, 0); /* the same values as G2's */
    be->bf16_only(ex, Q2, nh);
    be->rope_fwd(ex, Q2, Dc, Ds, 1, 256, 8, 64, 0, 0);
    if (copies_kept()) CHECK(still_junk(Q2, nh), "cuda/bf16_only: rope_fwd wrote a promised input's fp32 values");
    be->add(ex, Qr, Q2, Z, nh);
    be->rope_fwd(ex, Ga, Dc, Ds, 1, 256, 8, 64, 0, 0); /* plain, on the product's values */
    float *want = get_h(Ga, nh), *got = get_h(Qr, nh);
    if (copies_kept()) {
        uint16_t *h16 = malloc(sizeof(uint16_t) * (size_t)nh);
        rf->bf16_pack(X1, h16, want, nh);
        rf->bf16_unpack(X1, want, h16, nh);
        free(h16);
    }
    CHECK(memcmp(want, got, sizeof(float) * (size_t)nh) == 0,
          "cuda/bf16_only: rope_fwd on a promised product output differs from the %s rotation",
          copies_kept() ? "rounded" : "plain");
    ffree(want); ffree(got); ffree(cs); ffree(sn);
    dfree(Dc); dfree(Ds); dfree(Q2); dfree(Qr);
    /* attention_bwd (flash in bf16 mode) reading a promised dO, the product
     * [128, 256] of B 2, T 64, 4 heads (2 KV) of 64; q, k, v from earlier
     * outputs (buffers made before the product: uploads end kept copies) */
    float *O = junk_d(nq), *Lb = junk_d((int64_t)B * NH * T), *dO2 = junk_d(nq), *dOa = junk_d(nq), *r[6];
    for (int i = 0; i < 6; i++) r[i] = junk_d(i % 3 == 0 ? nq : nk);
    snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d NKV%d HS%d", B, T, NH, NKV, HS);
    be->attention_fwd(ex, O, Lb, G1, F1, F1 + nk, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, 0.125f);
    be->bf16_only(ex, dO2, nq);
    be->matmul(ex, dO2, Xa, Wg, B * T, NH * HS, K, 0, 1, 0);
    be->attention_bwd(ex, r[3], r[4], r[5], dO2, O, Lb, G1, F1, F1 + nk, B, T, NH, NKV, HS, 0, 0, 0, 0, 0.125f);
    if (copies_kept()) CHECK(still_junk(dO2, nq), "cuda/bf16_only: attention_bwd wrote a promised dO's fp32 values");
    be->add(ex, dOa, dO2, Z, nq);
    be->attention_bwd(ex, r[0], r[1], r[2], dOa, O, Lb, G1, F1, F1 + nk, B, T, NH, NKV, HS, 0, 0, 0, 0, 0.125f);
    same_d("attention_bwd dq on a promised dO", r[0], r[3], nq);
    same_d("attention_bwd dk on a promised dO", r[1], r[4], nk);
    same_d("attention_bwd dv on a promised dO", r[2], r[5], nk);
    for (int i = 0; i < 6; i++) dfree(r[i]);
    dfree(O); dfree(Lb); dfree(dO2); dfree(dOa);
    for (int i = 0; i < 4; i++) dfree(P[i]);
    dfree(Xa); dfree(Wg); dfree(Wu); dfree(Wd); dfree(G1); dfree(G2); dfree(U2); dfree(D2); dfree(Z); dfree(Ga);
    dfree(Ua); dfree(Da); dfree(F1); dfree(F2);
    ffree(xa); ffree(wg); ffree(wu); ffree(wd);
    printf("cuda %-14s %-6s forward outputs, bf16 products and the ops reading them\n", "bf16_only",
           check_failed == before ? "ok" : "FAILED");
}

/* H after the op that was told to write D's copy there, then after the
 * pack: the reference's pack of D (before the pack only when `kept`). */
/* GPT-2's paths under bf16 copies: layernorm_fwd and gelu_fwd outputs
 * promised (read through products as the plain ones); attention forward
 * and backward on q|k|v read in place from a bound [N, 3C] tensor (Hopper's
 * kernels read the copy's strided rows) give bit for bit what they give on
 * its fp32 values, the bound tensor unwritten, and the fused dq|dk|dv's
 * copy reads as a fresh cast; layernorm_bwd and gelu_bwd on a promised
 * dout (a product's bf16 output), and the norms' backward on a promised
 * dout with x bound too, give bit for bit what they give on 32-bit reads. */
static void check_gpt2_paths(void) {
    cur_op = "bf16_only";
    long before = check_failed;
    int64_t n = OC_N, NL = 256, CL = n / NL; /* (rows enough for the training kernel: few rows are decoding's) */
    float *x = frand(n, 2), *w = frand(CL, 1), *b = frand(CL, 1), *wm = frand(OC_NW * 64, 1);
    float *Dx = dup_d(x, n), *Dw = dup_d(w, CL), *Db = dup_d(b, CL), *Mn = junk_d(NL), *Rs = junk_d(NL);
    float *O1 = junk_d(n), *O2 = junk_d(n), *G1 = junk_d(n), *G2 = junk_d(n);
    oc_w = dup_d(wm, OC_NW * 64), oc_a = junk_d(n / 64 * OC_NW), oc_b = junk_d(n / 64 * OC_NW);
    oc_z = junk_d(n), oc_s = junk_d(n);
    be->scale(ex, oc_z, 0.0f, n);
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%lld", (long long)NL, (long long)CL);
    be->layernorm_fwd(ex, O1, Mn, Rs, Dx, Dw, Db, NL, (int)CL, 1e-5f);
    be->bf16_only(ex, O2, n);
    be->layernorm_fwd(ex, O2, Mn, Rs, Dx, Dw, Db, NL, (int)CL, 1e-5f);
    only_check("layernorm_fwd", O1, O2, n, NULL);
    be->gelu_fwd(ex, G1, Dx, n);
    be->bf16_only(ex, G2, n);
    be->gelu_fwd(ex, G2, Dx, n);
    only_check("gelu_fwd", G1, G2, n, NULL);
    dfree(Dx); dfree(Dw); dfree(Db); dfree(Mn); dfree(Rs); dfree(O1); dfree(O2); dfree(G1); dfree(G2);
    dfree(oc_w); dfree(oc_a); dfree(oc_b); dfree(oc_z); dfree(oc_s);
    ffree(x); ffree(w); ffree(b); ffree(wm);

    /* attention on a bound q|k|v [B*T, 3C] (B 2, T 128, 4 heads of 64) */
    int B = 2, T = 128, NH = 4, HS = 64, C = NH * HS;
    int64_t N = (int64_t)B * T, n3 = N * 3 * C, nq = N * C, nl = (int64_t)B * NH * T, NW = 32;
    float sc = 1.0f / sqrtf((float)HS);
    snprintf(cur_shape, sizeof cur_shape, "B%d T%d NH%d HS%d, q|k|v rows of %d", B, T, NH, HS, 3 * C);
    float *qkv = frand(n3, 1), *dout = frand(nq, 1), *wq = frand(NW * 3 * C, 1);
    float *D0 = dup_d(qkv, n3), *Ddo = dup_d(dout, nq), *Dwq = dup_d(wq, NW * 3 * C);
    uint16_t *H16 = pack_d(D0, n3);
    float *Qa, *Qb, *Oa = junk_d(nq), *Ob = junk_d(nq), *La = junk_d(nl), *Lb = junk_d(nl);
    float *Ga = junk_d(n3), *Gb = junk_d(n3), *Pa = junk_d(N * NW), *Pb = junk_d(N * NW);
    bound_pair(H16, n3, &Qa, &Qb);
    be->bf16_bind(ex, Qb, H16, n3);
    be->attention_fwd(ex, Oa, La, Qa, Qa + C, Qa + 2 * C, B, T, T, NH, NH, HS, 3 * C, 3 * C, (int64_t)T * 3 * C, sc);
    be->attention_fwd(ex, Ob, Lb, Qb, Qb + C, Qb + 2 * C, B, T, T, NH, NH, HS, 3 * C, 3 * C, (int64_t)T * 3 * C, sc);
    same_d("attention_fwd on bound q|k|v rows: out", Oa, Ob, nq);
    same_d("attention_fwd on bound q|k|v rows: lse", La, Lb, nl);
    be->attention_bwd(ex, Ga, Ga + C, Ga + 2 * C, Ddo, Oa, La, Qa, Qa + C, Qa + 2 * C, B, T, NH, NH, HS, 3 * C, 3 * C,
                      0, 0, sc);
    be->attention_bwd(ex, Gb, Gb + C, Gb + 2 * C, Ddo, Oa, La, Qb, Qb + C, Qb + 2 * C, B, T, NH, NH, HS, 3 * C, 3 * C,
                      0, 0, sc);
    if (copies_kept()) CHECK(still_junk(Qb, n3), "cuda/bf16_bind: attention wrote its bound q|k|v");
    be->matmul(ex, Pa, Gb, Dwq, N, NW, 3 * C, 0, 1, 0); /* through dq|dk|dv's copy, if kept */
    same_d("attention_bwd into dq|dk|dv rows, on bound q|k|v", Ga, Gb, n3);
    float *h = get_h(Gb, n3);
    be->upload(Gb, h, sizeof(float) * (size_t)n3); /* a host write: no copy survives */
    be->matmul(ex, Pb, Gb, Dwq, N, NW, 3 * C, 0, 1, 0);
    same_d("dq|dk|dv's copy against a fresh cast", Pa, Pb, N * NW);
    be->bf16_drop(ex, NULL, 0);
    dfree(D0); dfree(Ddo); dfree(Dwq); dfree(Qa); dfree(Qb); dfree(Oa); dfree(Ob); dfree(La); dfree(Lb);
    dfree(Ga); dfree(Gb); dfree(Pa); dfree(Pb); be->free(H16);
    ffree(qkv); ffree(dout); ffree(wq); ffree(h);

    /* layernorm_bwd and gelu_bwd on promised douts: D [256, 768] = X W^T;
     * the norms' backward also with x bound (both inputs read as bf16) */
    int64_t M = 256, K = 128, H = 768, nh = M * H;
    float *xa = frand(M * K, 1), *wd = frand(H * K, 1), *xl = frand(nh, 2), *wl = frand(H, 1);
    float *Xa = dup_d(xa, M * K), *Wd = dup_d(wd, H * K), *Xl0 = dup_d(xl, nh), *Wl = dup_d(wl, H), *Z = junk_d(nh);
    uint16_t *XL16 = pack_d(Xl0, nh);
    float *Xl, *Xlb; /* x's bf16 values in 32 bits, and a tensor bound to them */
    bound_pair(XL16, nh, &Xl, &Xlb);
    float *Lm = junk_d(M), *Lr = junk_d(M), *Lo = junk_d(nh), *D1 = junk_d(nh), *D2 = junk_d(nh), *Da = junk_d(nh);
    float *R1 = junk_d(nh), *R2 = junk_d(nh), *R3 = junk_d(nh), *E1 = junk_d(nh), *E2 = junk_d(nh);
    float *Rq = junk_d(M), *S1 = junk_d(nh), *S2 = junk_d(nh);
    float *Wv[8];
    for (int i = 0; i < 8; i++) Wv[i] = junk_d(H);
    be->scale(ex, Z, 0.0f, nh); /* (scale reads every tensor in 32 bits: before the bindings and promises) */
    for (int i = 0; i < 8; i++) be->scale(ex, Wv[i], 0.0f, H);
    be->layernorm_fwd(ex, Lo, Lm, Lr, Xl, Wl, Wl, M, (int)H, 1e-5f);
    be->rmsnorm_fwd(ex, Lo, Rq, Xl, Wl, M, (int)H, 1e-5f);
    be->bf16_bind(ex, Xlb, XL16, nh);
    snprintf(cur_shape, sizeof cur_shape, "M%lld N%lld K%lld", (long long)M, (long long)H, (long long)K);
    be->bf16_only(ex, D1, nh);
    be->matmul(ex, D1, Xa, Wd, M, H, K, 0, 1, 0);
    be->layernorm_bwd(ex, R2, Wv[0], Wv[1], D1, Xl, Wl, Lm, Lr, M, (int)H, 0);
    be->layernorm_bwd(ex, R3, Wv[2], Wv[3], D1, Xlb, Wl, Lm, Lr, M, (int)H, 0);
    be->rmsnorm_bwd(ex, S2, Wv[4], D1, Xlb, Wl, Rq, M, (int)H, 0);
    be->bf16_only(ex, D2, nh);
    be->matmul(ex, D2, Xa, Wd, M, H, K, 0, 1, 0);
    be->gelu_bwd(ex, E2, D2, Xl, nh);
    if (copies_kept())
        CHECK(still_junk(D1, nh) && still_junk(D2, nh) && still_junk(Xlb, nh),
              "cuda/bf16_only: layernorm_bwd / rmsnorm_bwd / gelu_bwd wrote a promised dout's or bound x's fp32 values");
    be->add(ex, Da, D1, Z, nh); /* 32-bit reads */
    be->layernorm_bwd(ex, R1, Wv[5], Wv[6], Da, Xl, Wl, Lm, Lr, M, (int)H, 0);
    same_d("layernorm_bwd dx on a promised dout", R1, R2, nh);
    same_d("layernorm_bwd dw on a promised dout", Wv[5], Wv[0], H);
    same_d("layernorm_bwd db on a promised dout", Wv[6], Wv[1], H);
    same_d("layernorm_bwd dx on a promised dout and a bound x", R1, R3, nh);
    same_d("layernorm_bwd dw on a promised dout and a bound x", Wv[5], Wv[2], H);
    be->rmsnorm_bwd(ex, S1, Wv[7], Da, Xl, Wl, Rq, M, (int)H, 0);
    same_d("rmsnorm_bwd dx on a promised dout and a bound x", S1, S2, nh);
    same_d("rmsnorm_bwd dw on a promised dout and a bound x", Wv[7], Wv[4], H);
    be->add(ex, Da, D2, Z, nh);
    be->gelu_bwd(ex, E1, Da, Xl, nh);
    same_d("gelu_bwd on a promised dout", E1, E2, nh);
    be->bf16_drop(ex, NULL, 0);
    dfree(Xa); dfree(Wd); dfree(Xl0); dfree(Xl); dfree(Xlb); dfree(Wl); dfree(Z); dfree(Lm); dfree(Lr); dfree(Lo);
    dfree(D1); dfree(D2); dfree(Da); dfree(R1); dfree(R2); dfree(R3); dfree(E1); dfree(E2); dfree(Rq); dfree(S1);
    dfree(S2);
    for (int i = 0; i < 8; i++) dfree(Wv[i]);
    be->free(XL16);
    ffree(xa); ffree(wd); ffree(xl); ffree(wl);
    printf("cuda %-14s %-6s GPT-2's: norm / GELU outputs promised, attention on bound q|k|v rows, promised douts\n",
           "bf16_only", check_failed == before ? "ok" : "FAILED");
}

static int home_kept;
static void home_check(const char *what, uint16_t *H, const float *D, int64_t n) {
    float *f = get_h(D, n);
    uint16_t *want = malloc(sizeof(uint16_t) * (size_t)n), *got = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, want, f, n);
    be->download(got, H, sizeof(uint16_t) * (size_t)n);
    if (home_kept)
        CHECK(memcmp(got, want, sizeof(uint16_t) * (size_t)n) == 0, "cuda/bf16_home %s: the op did not write its copy",
              what);
    be->bf16_pack(ex, H, D, n);
    be->download(got, H, sizeof(uint16_t) * (size_t)n);
    CHECK(memcmp(got, want, sizeof(uint16_t) * (size_t)n) == 0, "cuda/bf16_home %s: storage differs from the pack",
          what);
    free(want); free(got); ffree(f);
}

static void check_bf16_home(void) {
    cur_op = "bf16_home";
    long before = check_failed;
    home_kept = copies_kept();
    int64_t N = 512; int C = 768, H = 2048; /* rows enough for the training kernels (few rows: decoding's) */
    int64_t nc = N * C, nh = N * H;
    float *a = frand(nc, 2), *b = frand(nc, 1), *w = frand(C, 1), *g = frand(nh, 4), *u = frand(nh, 2);
    float *Da = dup_d(a, nc), *Db = dup_d(b, nc), *Dw = dup_d(w, C), *Dg = dup_d(g, nh), *Du = dup_d(u, nh);
    float *Ds = junk_d(nc), *Dn = junk_d(nc), *Dr = junk_d(N), *Dh = junk_d(nh), *Dy = junk_d(nc);
    uint16_t *Hs = u16_d(nc), *Hn = u16_d(nc), *Hg = u16_d(nh), *Hu = u16_d(nh), *Hh = u16_d(nh), *Hy = u16_d(nc);
    float *sum = frand(nc, 0), *out = frand(nc, 0), *rs = frand(N, 0);
    rf->add_rmsnorm_fwd(X1, sum, out, rs, a, b, w, N, C, 1e-5f);
    be->bf16_home(ex, Ds, Hs, nc);
    be->bf16_home(ex, Dn, Hn, nc);
    be->add_rmsnorm_fwd(ex, Ds, Dn, Dr, Da, Db, Dw, N, C, 1e-5f);
    snprintf(cur_shape, sizeof cur_shape, "N%lld C%d", (long long)N, C);
    compare_d("sum (with homes)", Ds, sum, nc, 0);
    compare_d("out (with homes)", Dn, out, nc, 1e-5);
    home_check("add_rmsnorm_fwd sum", Hs, Ds, nc);
    home_check("add_rmsnorm_fwd out", Hn, Dn, nc);
    be->bf16_home(ex, Dg, Hg, nh);
    be->bf16_home(ex, Du, Hu, nh);
    be->bf16_home(ex, Dh, Hh, nh);
    be->swiglu_fwd(ex, Dh, Dg, Du, 1, (int)nh, 0);
    home_check("swiglu_fwd gate (an input)", Hg, Dg, nh);
    home_check("swiglu_fwd up (an input)", Hu, Du, nh);
    home_check("swiglu_fwd out", Hh, Dh, nh);
    /* gate|up one fused [N/2, 2H] tensor: one home for all of it */
    float *Dh2 = junk_d(nh / 2);
    uint16_t *Hgu = u16_d(nh), *Hh2 = u16_d(nh / 2);
    be->bf16_home(ex, Dg, Hgu, nh);
    be->bf16_home(ex, Dh2, Hh2, nh / 2);
    be->swiglu_fwd(ex, Dh2, Dg, Dg + H, N / 2, H, 2 * H);
    home_check("swiglu_fwd gate|up (fused, an input)", Hgu, Dg, nh);
    home_check("swiglu_fwd out (gate|up fused)", Hh2, Dh2, nh / 2);
    dfree(Dh2); be->free(Hgu); be->free(Hh2);
    be->bf16_home(ex, Dy, Hy, nc);
    be->add(ex, Dy, Da, Db, nc);
    home_check("add out", Hy, Dy, nc);
    /* a home serves the next op only: here scale, so rmsnorm's copy goes elsewhere */
    uint16_t *H0 = u16_d(nc), *zero = calloc((size_t)nc + 2, sizeof(uint16_t)), *got = malloc(sizeof(uint16_t) * (size_t)(nc + 2));
    be->bf16_home(ex, Dn, H0, nc);
    be->scale(ex, Dw, 1.0f, C);
    be->rmsnorm_fwd(ex, Dn, Dr, Da, Dw, N, C, 1e-5f);
    be->download(got, H0, sizeof(uint16_t) * (size_t)(nc + 2));
    CHECK(memcmp(got, zero, sizeof(uint16_t) * (size_t)(nc + 2)) == 0, "cuda/bf16_home: a home outlived its op");
    /* attention_fwd: out's copy and v's cast (flash, bf16 mode) */
    int B = 2, T = 64, NH = 4, NKV = 2, HS = 64;
    int64_t nq = (int64_t)B * T * NH * HS, nk = (int64_t)B * T * NKV * HS;
    float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1);
    float *Dq = dup_d(q, nq), *Dk = dup_d(k, nk), *Dv = dup_d(v, nk), *Do = junk_d(nq), *Dl = junk_d((int64_t)B * NH * T);
    uint16_t *Ho = u16_d(nq), *Hv = u16_d(nk);
    be->bf16_home(ex, Do, Ho, nq);
    be->bf16_home(ex, Dv, Hv, nk);
    be->attention_fwd(ex, Do, Dl, Dq, Dk, Dv, B, T, T, NH, NKV, HS, 0, 0, (int64_t)T * NKV * HS, 1.0f / 8);
    home_check("attention_fwd out", Ho, Do, nq);
    home_check("attention_fwd v (an input)", Hv, Dv, nk);
    dfree(Da); dfree(Db); dfree(Dw); dfree(Dg); dfree(Du); dfree(Ds); dfree(Dn); dfree(Dr); dfree(Dh); dfree(Dy);
    dfree(Dq); dfree(Dk); dfree(Dv); dfree(Do); dfree(Dl);
    be->free(Hs); be->free(Hn); be->free(Hg); be->free(Hu); be->free(Hh); be->free(Hy); be->free(H0);
    be->free(Ho); be->free(Hv);
    free(zero); free(got);
    ffree(a); ffree(b); ffree(w); ffree(g); ffree(u); ffree(sum); ffree(out); ffree(rs); ffree(q); ffree(k); ffree(v);
    printf("cuda %-14s %-6s copies written where named%s\n", "bf16_home", check_failed == before ? "ok" : "FAILED",
           home_kept ? " (checked before the pack)" : " (bf16 copies not kept in this mode: values only)");
}

/* xent_fwd_bwd over logits bound to bf16 storage, in place (a train step's
 * 16-bit logits), bit for bit xent_fwd then xent_bwd over the same bound
 * logits: V 32768, GPT-2's 50,257 in rows of 50,304, and V 131072. */
static void check_xent_bound(void) {
    cur_op = "xent_fwd_bwd";
    long before = check_failed;
    static const int S[][3] = {{3, 32768, 32768}, {2, 50257, 50304}, {2, 131072, 131072}};
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int64_t R = S[s][0], n = R * S[s][2];
        int V = S[s][1], ld = S[s][2];
        snprintf(cur_shape, sizeof cur_shape, "N%lld V%d ld%d", (long long)R, V, ld);
        float *g = frand(n, 8), *D = dup_d(g, n);
        uint16_t *H1 = pack_d(D, n), *H2 = pack_d(D, n);
        int32_t *t = targets_for(R, V), *Dt = ids_d(t, R);
        float *B1 = junk_d(n), *B2 = junk_d(n), *Z = junk_d(n), *S1 = junk_d(n), *S2 = junk_d(n);
        float *l1 = junk_d(R), *z1 = junk_d(R), *l2 = junk_d(R), *z2 = junk_d(R);
        be->scale(ex, Z, 0.0f, n);
        be->bf16_bind(ex, B1, H1, n);
        be->xent_fwd(ex, l1, z1, B1, Dt, R, V, ld);
        be->xent_bwd(ex, B1, B1, z1, Dt, 0.5f, R, V, ld);
        be->bf16_bind(ex, B2, H2, n);
        CHECK(be->xent_fwd_bwd(ex, l2, z2, B2, B2, Dt, 0.5f, R, V, ld), "cuda/xent_fwd_bwd %s: declined", cur_shape);
        be->add(ex, S1, B1, Z, n);
        be->add(ex, S2, B2, Z, n);
        same_d("xent_fwd_bwd's losses (bound logits)", l1, l2, R);
        same_d("xent_fwd_bwd's lse (bound logits)", z1, z2, R);
        same_d("xent_fwd_bwd's dlogits (bound logits, in place)", S1, S2, n);
        be->bf16_drop(ex, NULL, 0);
        dfree(D); dfree(B1); dfree(B2); dfree(Z); dfree(S1); dfree(S2);
        dfree(l1); dfree(z1); dfree(l2); dfree(z2);
        be->free(H1); be->free(H2); be->free(Dt); free(t); ffree(g);
    }
    printf("cuda %-14s %-6s over bound bf16 logits, in place, as xent_fwd then xent_bwd bit for bit\n",
           "xent_fwd_bwd", check_failed == before ? "ok" : "FAILED");
}

/* bf16_tight (bf16 mode): a product's output named tight is the bf16
 * product, written as bf16 alone into the first half of the output's
 * storage at every shape (one row: the gemv path otherwise; under 16 rows
 * or depth: the fp32 path otherwise), the storage past those values left
 * alone; products read it at any shape as its bf16 values; xent_fwd,
 * xent_bwd and xent_fwd_bwd read it the same way and write dlogits over it
 * as bf16 alone (the two ways bit for bit alike); an op reading it in 32
 * bits is an error its context reports (a context of its own), with
 * nothing written past the values. In other modes the backend declines
 * (0). References: the reference backend on the unpacked bf16 values. */
static float *tight_vals(const float *T, int64_t n) { /* T's bf16 values as floats */
    return unpacked_h((const uint16_t *)T, n);
}
/* each |got - want| within rel of |want| (plus abs) */
static void near_h(const char *what, const float *got, const float *want, int64_t n, double rel, double abs) {
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= rel * fabs((double)want[i]) + abs)) bad++;
        if (e > worst) worst = e;
    }
    CHECK(bad == 0, "cuda/bf16_tight %s: %lld of %lld values off (worst |diff| %.3g)", what, (long long)bad,
          (long long)n, worst);
}
static float *rounded(const float *x, int64_t n) { /* bf16(x) as floats */
    float *r = frand(n, 0);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    rf->bf16_pack(X1, h, x, n);
    rf->bf16_unpack(X1, r, h, n);
    free(h);
    return r;
}
static void tight_shape(int64_t M, int64_t K, int64_t N) {
    const int64_t n = M * N, half = (n + 1) / 2, K2 = 24;
    snprintf(cur_shape, sizeof cur_shape, "M%lld K%lld N%lld", (long long)M, (long long)K, (long long)N);
    float *a = frand(M * K, 1), *w = frand(N * K, 1), *v = frand(N * K2, 1);
    float *ar = rounded(a, M * K), *wr = rounded(w, N * K), *vr = rounded(v, N * K2);
    int32_t *tg = targets_for(M, (int)N);
    float *Da = dup_d(a, M * K), *Dw = dup_d(w, N * K), *Dv = dup_d(v, N * K2), *T = junk_d(half);
    float *X = junk_d(M * K2), *Y = junk_d(N * K), *L = junk_d(M), *Z = junk_d(M), *L2 = junk_d(M), *Z2 = junk_d(M);
    int32_t *Dt = ids_d(tg, M);
    int took = be->bf16_tight(ex, T, n);
    CHECK(took == bf16_mode(), "cuda/bf16_tight %s: taken %d, want %d", cur_shape, took, bf16_mode());
    if (took) {
        /* the product, then two products reading it (X = T V, Y = T^T A) */
        be->matmul(ex, T, Da, Dw, M, N, K, 0, 1, 0);
        float *t = tight_vals(T, n), *want = frand(n, 0), *tr = rounded(t, n);
        rf->matmul(X1, want, ar, wr, M, N, K, 0, 1, 0);
        CHECK(memcmp(t, tr, sizeof(float) * (size_t)n) == 0, "cuda/bf16_tight %s: the output is not bf16", cur_shape);
        near_h("product", t, want, n, 1.0 / 256 * 1.01, 1e-4);
        be->matmul(ex, X, T, Dv, M, K2, N, 0, 0, 0);
        be->matmul(ex, Y, T, Da, N, K, M, 1, 0, 0);
        float *x = get_h(X, M * K2), *y = get_h(Y, N * K), *xw = frand(M * K2, 0), *yw = frand(N * K, 0);
        rf->matmul(X1, xw, t, vr, M, K2, N, 0, 0, 0);
        rf->matmul(X1, yw, t, ar, N, K, M, 1, 0, 0);
        near_h("read by a product (T V)", x, xw, M * K2, 1e-3, 1e-4);
        near_h("read by a product (T^T A)", y, yw, N * K, 1e-3, 1e-4);
        /* cross-entropy over it as logits [M, N]: the loss, then dlogits
         * in place (xent_bwd), both against the reference's */
        float *lw = frand(M, 0), *zw = frand(M, 0), *dw = frand(n, 0);
        rf->xent_fwd(X1, lw, zw, t, tg, M, (int)N, (int)N);
        rf->xent_bwd(X1, dw, t, zw, tg, 0.25f, M, (int)N, (int)N);
        be->xent_fwd(ex, L, Z, T, Dt, M, (int)N, (int)N);
        float *l = get_h(L, M);
        near_h("xent_fwd losses", l, lw, M, 1e-5, 1e-5);
        CHECK(be->bf16_tight(ex, T, n) == 1, "cuda/bf16_tight %s: not taken for xent_bwd", cur_shape);
        be->xent_bwd(ex, T, T, Z, Dt, 0.25f, M, (int)N, (int)N);
        float *d = tight_vals(T, n);
        near_h("xent_bwd dlogits", d, dw, n, 1.0 / 256 * 1.01, 1e-6);
        be->bf16_drop(ex, T, n);
        /* the same logits again, then xent_fwd_bwd (rows of a multiple of
         * 4; it declines others before any hint is given): the same bits */
        if (N % 4 == 0) {
            be->bf16_tight(ex, T, n);
            be->matmul(ex, T, Da, Dw, M, N, K, 0, 1, 0);
            be->bf16_tight(ex, T, n);
            int fb = be->xent_fwd_bwd(ex, L2, Z2, T, T, Dt, 0.25f, M, (int)N, (int)N);
            float *d2 = tight_vals(T, n), *l2 = get_h(L2, M);
            CHECK(fb && memcmp(d, d2, sizeof(float) * (size_t)n) == 0 && memcmp(l, l2, sizeof(float) * (size_t)M) == 0,
                  "cuda/bf16_tight %s: xent_fwd_bwd (taken %d) differs from xent_fwd + xent_bwd", cur_shape, fb);
            ffree(d2); ffree(l2);
            be->bf16_drop(ex, T, n);
        }
        /* past the bf16 values: untouched (the canaries past the buffer:
         * get_h's, checked by the tensor's full download) */
        float *all = get_h(T, half);
        int intact = 1;
        for (int i = 0; i < PAD; i++) intact &= all[half + i] == CANARY;
        CHECK(intact, "cuda/bf16_tight %s: a write past the bf16 values", cur_shape);
        ffree(all); ffree(t); ffree(want); ffree(tr); ffree(x); ffree(y); ffree(xw); ffree(yw);
        ffree(lw); ffree(zw); ffree(dw); ffree(l); ffree(d);
    }
    ffree(a); ffree(w); ffree(v); ffree(ar); ffree(wr); ffree(vr); free(tg);
    dfree(Da); dfree(Dw); dfree(Dv); dfree(T); dfree(X); dfree(Y); dfree(L); dfree(Z); dfree(L2); dfree(Z2);
    be->free(Dt);
}
static void check_bf16_tight(void) {
    cur_op = "bf16_tight";
    long before = check_failed;
    tight_shape(96, 64, 320); /* the blocked bf16 product */
    tight_shape(5, 8, 40);    /* under 16 rows and depth: fp32 otherwise; read with depth 5 */
    tight_shape(1, 64, 256);  /* one row: the gemv path otherwise */
    tight_shape(33, 24, 50);  /* rows of 50: xent_fwd_bwd declines */
    if (bf16_mode()) {
        /* a 32-bit read (add) breaks the promise: an error, and nothing
         * written past the bf16 values (the tensor has its fp32 storage
         * here, so that add's read stays inside it) */
        int64_t M = 32, K = 64, N = 128, n = M * N;
        smj_ctx_options o = {.threads = 1, .backend = SMJ_BACKEND_CUDA};
        smj_ctx *c2 = smj_ctx_create(&o);
        float *a = frand(M * K, 1), *w = frand(N * K, 1), *Da = dup_d(a, M * K), *Dw = dup_d(w, N * K);
        float *T = junk_d(n), *S = junk_d(n), *Zr = junk_d(n);
        const smj_exec *e2 = &c2->exec;
        be->bf16_tight(e2, T, n);
        be->matmul(e2, T, Da, Dw, M, N, K, 0, 1, 0);
        be->add(e2, S, T, Zr, n);
        float *all = get_h(T, n);
        int intact = 1;
        for (int64_t i = n / 2; i < n; i++) intact &= all[i] == JUNK;
        CHECK(smj_ctx_status(c2) != SMJ_OK && strstr(smj_ctx_error(c2), "bf16_tight"),
              "cuda/bf16_tight: a 32-bit read was not an error (%s)", smj_ctx_error(c2));
        CHECK(intact, "cuda/bf16_tight: a 32-bit read wrote past the bf16 values");
        printf("cuda %-14s %-6s a 32-bit read of a tight tensor: \"%s\"\n", "bf16_tight", "", smj_ctx_error(c2));
        ffree(a); ffree(w); ffree(all);
        dfree(Da); dfree(Dw); dfree(T); dfree(S); dfree(Zr);
        smj_ctx_free(c2);
    }
    printf("cuda %-14s %-6s %s\n", "bf16_tight", check_failed == before ? "ok" : "FAILED",
           bf16_mode() ? "products, their readers and cross-entropy in half the storage, 4 shapes"
                       : "declined (not bf16 mode)");
}

int main(void) {
    smj_ctx *ctx = cuda_check_open();
    if (!ctx) return cuda_check_skip();
    check_bf16_bind();
    cuda_check_status(ctx, "bf16_bind");
    check_bf16_home();
    cuda_check_status(ctx, "bf16_home");
    check_bf16_only();
    check_fused_rows();
    cuda_check_status(ctx, "bf16_only");
    check_bf16_only_fwd();
    cuda_check_status(ctx, "bf16_only");
    check_xent_bound();
    cuda_check_status(ctx, "xent_fwd_bwd");
    check_gpt2_paths();
    cuda_check_status(ctx, "bf16_only (GPT-2's)");
    check_bf16_tight();
    cuda_check_status(ctx, "bf16_tight");
    smj_ctx_free(ctx);
    return check_summary("test_cuda_bf16");
}
