/* test_cuda_decode.c — the CUDA backend's optional decoding and quantized
 * ops (built with CUDA=1), against the reference's definitions
 * (cuda_check.h: canaries, the SKIP rule): decode_attention against
 * rope_fwd + attention_fwd of the reference and bit for bit against this
 * backend's own; decode_block (Llama blocks, with attention biases too, and
 * GPT-2 blocks; f32 and bf16 weights, one block and several,
 * positions outside the cache, a second launch bit for bit) and decode_linear within 2e-5;
 * decode_argmax's choice (ties, NaN, infinities) equal to the reference's
 * scan; qmatmul (f16, q8_0, q4_0) against the reference's exact
 * dequantization: 1e-5 for M <= 8, the matmul tolerance (cuda_check_open)
 * above that (dequantize + matmul). */
#include "cuda_check.h"
#include "../../src/hf/safetensors.h"
#include "../../src/gguf/gguf.h"

/* decode_attention (optional op) against the reference's definition (rope_fwd
 * at position p, the cache rows written, attention_fwd over rows 0..p); and
 * bit for bit against the same steps done with this backend's own
 * rope_fwd + attention_fwd (the decoding path it replaces). */
static void check_decode_attention(void) {
    static const int S[][6] = {/* NH, NKV, HS, cap, p, rope */
                               {4, 2, 64, 100, 0, 1},     {4, 2, 64, 100, 99, 1},   {12, 12, 64, 1024, 700, 1},
                               {3, 1, 17, 50, 33, 0},     {8, 2, 128, 2049, 2048, 1}, {2, 2, 256, 40, 5, 1},
                               {6, 3, 32, 33, 32, 1},     {1, 1, 2, 7, 3, 1}};
    cur_op = "decode_attention";
    op_worst = 0;
    long before = check_failed;
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int NH = S[c][0], NKV = S[c][1], HS = S[c][2], cap = S[c][3], p = S[c][4], rope = S[c][5];
        snprintf(cur_shape, sizeof cur_shape, "NH%d NKV%d HS%d cap%d p%d%s", NH, NKV, HS, cap, p, rope ? "" : " no rope");
        int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, nc = (int64_t)cap * KD;
        float sc = 1.0f / sqrtf((float)HS), *cs = NULL, *sn = NULL;
        if (rope) rope_tables(cap, HS, &cs, &sn);
        float *q = frand(QD, 1), *k = frand(KD, 1), *v = frand(KD, 1), *kc = frand(nc, 1), *vc = frand(nc, 1);
        float *o = frand(QD, 0);
        float *Dq = dup_d(q, QD), *Dk = dup_d(k, KD), *Dv = dup_d(v, KD), *Dkc = dup_d(kc, nc), *Dvc = dup_d(vc, nc);
        float *Do = dup_d(o, QD), *Dcs = rope ? dup_d(cs, (int64_t)cap * (HS / 2)) : NULL;
        float *Dsn = rope ? dup_d(sn, (int64_t)cap * (HS / 2)) : NULL;
        int32_t *Dp = ids_d(&p, 1);
        /* the same steps through this backend's rope_fwd and attention_fwd */
        float *Eq = dup_d(q, QD), *Ek = dup_d(k, KD), *Ekc = dup_d(kc, nc), *Evc = dup_d(vc, nc), *Eo = dup_d(o, QD);
        float *El = dup_d(o, NH);
        be->decode_attention(ex, Do, Dq, Dk, Dv, Dkc, Dvc, Dcs, Dsn, Dp, NH, NKV, HS, cap, sc);
        rf->decode_attention(X1, o, q, k, v, kc, vc, cs, sn, &p, NH, NKV, HS, cap, sc);
        compare_d("out", Do, o, QD, 1e-5);
        compare_d("q rotated", Dq, q, QD, 1e-6);
        compare_d("k rotated", Dk, k, KD, 1e-6);
        compare_d("key cache", Dkc, kc, nc, 1e-6);
        compare_d("value cache", Dvc, vc, nc, 0);
        if (rope) {
            be->rope_fwd(ex, Eq, Dcs, Dsn, 1, 1, NH, HS, p, 0);
            be->rope_fwd(ex, Ek, Dcs, Dsn, 1, 1, NKV, HS, p, 0);
        }
        float *hk = get_h(Ek, KD), *hv = get_h(Dv, KD);
        be->upload(Ekc + p * KD, hk, sizeof(float) * (size_t)KD);
        be->upload(Evc + p * KD, hv, sizeof(float) * (size_t)KD);
        be->attention_fwd(ex, Eo, El, Eq, Ekc, Evc, 1, 1, p + 1, NH, NKV, HS, 0, 0, nc, sc);
        float *a = get_h(Do, QD), *b = get_h(Eo, QD), *ka = get_h(Dkc, nc), *kb = get_h(Ekc, nc);
        const char *am = getenv("SMJ_CUDA_ATTN"); /* the other attention kernels are not the decode path */
        if (!am || !*am)
            CHECK(memcmp(a, b, sizeof(float) * (size_t)QD) == 0 && memcmp(ka, kb, sizeof(float) * (size_t)nc) == 0,
                  "cuda/decode_attention %s: differs from rope_fwd + attention_fwd on the device", cur_shape);
        ffree(a); ffree(b); ffree(ka); ffree(kb); ffree(hk); ffree(hv);
        dfree(Dq); dfree(Dk); dfree(Dv); dfree(Dkc); dfree(Dvc); dfree(Do); dfree(Dcs); dfree(Dsn); be->free(Dp);
        dfree(Eq); dfree(Ek); dfree(Ekc); dfree(Evc); dfree(Eo); dfree(El);
        ffree(q); ffree(k); ffree(v); ffree(kc); ffree(vc); ffree(o); ffree(cs); ffree(sn);
    }
    printf("cuda %-14s %-6s worst normalized error %.3g (bit-identical to rope_fwd + attention_fwd)\n", cur_op,
           check_failed == before ? "ok" : "FAILED", op_worst);
}

/* Weights for the decode ops: host f32 values w [n] (bf16: rounded to bf16
 * in place, the host copy *h16 the bf16 bits), and the device copy. */
static void *dec_weight(float *w, int64_t n, int bf, uint16_t **h16) {
    *h16 = NULL;
    if (!bf) return dup_d(w, n);
    *h16 = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        (*h16)[i] = smj_f32_to_bf16(w[i]);
        w[i] = smj_bf16_to_f32((*h16)[i]);
    }
    void *d = be->alloc(sizeof(uint16_t) * (size_t)n);
    be->upload(d, *h16, sizeof(uint16_t) * (size_t)n);
    return d;
}
static void dec_weight_free(void *d, int bf) {
    if (bf) be->free(d);
    else dfree(d);
}

/* A block's 17 tensors in the test's order: attn_norm, ffn_norm,
 * attn_norm_b, ffn_norm_b, bq, bk, bv, bo, bup, bdown, wq, wk, wv, wo,
 * wgate, wup, wdown (NULL: absent). */
static smj_block_weights block_w(const void *const p[17], int wt) {
    smj_block_weights w = {p[0], p[1], p[10], p[11], p[12], p[13], p[14], p[15], p[16], wt,
                           p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]};
    return w;
}

/* decode_block against the reference's definition (the ops one by one,
 * block after block), f32 and bf16 weights, one block and several (their
 * tensors laid out as a model's: block l's at l times one stride, the
 * caches [L, cap, KD]), for the three families: Llama (RMSNorm, SwiGLU),
 * Llama with attention biases, GPT-2 (LayerNorm, GELU, biases everywhere);
 * the same launch twice gives the same bits (the barrier and the per-head
 * counters reset themselves); a position outside the cache changes
 * nothing. */
static void check_decode_block(void) {
    static const int S[][10] = {/* C, NH, NKV, HS, H, cap, p, rope, L, family (0 Llama, 1 + biases, 2 GPT-2) */
                                {768, 12, 12, 64, 2048, 1024, 700, 1, 1, 0}, {768, 12, 12, 64, 2048, 1024, 1000, 1, 4, 0},
                                {64, 4, 2, 16, 96, 100, 0, 1, 3, 0},         {40, 2, 1, 20, 70, 50, 49, 0, 2, 0},
                                {128, 2, 2, 128, 256, 300, 299, 1, 1, 0},    {256, 1, 1, 256, 512, 40, 7, 1, 2, 0},
                                {512, 64, 8, 8, 128, 2000, 1999, 1, 1, 0},   {30, 2, 2, 14, 50, 20, 10, 1, 3, 0},
                                {96, 6, 3, 16, 200, 4100, 4000, 1, 2, 0},    {2048, 16, 4, 128, 5632, 64, 63, 1, 2, 0},
                                {64, 4, 2, 16, 96, 100, 37, 1, 3, 1},        {40, 2, 1, 20, 70, 50, 49, 1, 2, 1},
                                {768, 12, 12, 64, 3072, 1024, 700, 0, 3, 2}, {64, 4, 4, 16, 256, 100, 0, 0, 2, 2},
                                {30, 2, 2, 14, 50, 20, 10, 0, 3, 2},         {96, 6, 6, 16, 384, 300, 299, 1, 2, 2}};
    static const char *fam_name[3] = {"", " biases", " gpt2"};
    cur_op = "decode_block";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int bf = 0; bf < 2; bf++) {
            int C = S[t][0], NH = S[t][1], NKV = S[t][2], HS = S[t][3], H = S[t][4], cap = S[t][5], p = S[t][6];
            int rope = S[t][7], L = S[t][8], fam = S[t][9];
            snprintf(cur_shape, sizeof cur_shape, "C%d NH%d NKV%d HS%d H%d cap%d p%d%s L%d%s %s", C, NH, NKV, HS, H,
                     cap, p, rope ? "" : " no rope", L, fam_name[fam], bf ? "bf16" : "f32");
            int64_t QD = (int64_t)NH * HS, KD = (int64_t)NKV * HS, nc = (int64_t)L * cap * KD;
            /* a block's tensors (block_w's order), each at a multiple of 8; absent ones have none */
            int64_t n[17] = {C, C, C, C, QD, KD, KD, C, H, C, QD * C, KD * C, KD * C, C * QD, (int64_t)H * C,
                             (int64_t)H * C, (int64_t)C * H};
            int64_t in[17] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, C, C, C, QD, C, C, H}; /* linear weights' inputs */
            for (int i = 0; i < 17; i++) {
                int has = i < 2 || i >= 10;                  /* Llama */
                if (fam == 1) has = has || (i >= 4 && i <= 7); /* + q, k, v, o biases */
                if (fam == 2) has = i != 14;                 /* everything but a gate */
                if (!has) n[i] = 0;
            }
            int64_t off[17], st = 0;
            for (int i = 0; i < 17; i++) { off[i] = st; st += (n[i] + 7) / 8 * 8; }
            float *hw = frand(L * st, 0);
            uint16_t *h16 = bf ? calloc((size_t)(L * st), sizeof(uint16_t)) : NULL;
            for (int l = 0; l < L; l++)
                for (int i = 0; i < 17; i++) {
                    float *w = hw + l * st + off[i];
                    float sc = i < 2 ? 0.5f : i < 10 ? 0.3f : 1.0f / sqrtf((float)in[i]);
                    for (int64_t j = 0; j < n[i]; j++) {
                        w[j] = (i < 2 ? 1.0f : 0.0f) + sc * (2.0f * (float)smj_rng_uniform(&rng) - 1.0f);
                        if (bf && i >= 10) { /* the weights rounded to bf16, as the bf16 copies hold them */
                            h16[l * st + off[i] + j] = smj_f32_to_bf16(w[j]);
                            w[j] = smj_bf16_to_f32(h16[l * st + off[i] + j]);
                        }
                    }
                }
            float *Dw = dup_d(hw, L * st);
            uint16_t *D16 = NULL;
            if (bf) {
                D16 = be->alloc(sizeof(uint16_t) * (size_t)(L * st));
                be->upload(D16, h16, sizeof(uint16_t) * (size_t)(L * st));
            }
            const void *wd[17], *wh[17];
            for (int i = 0; i < 17; i++) {
                int lin = bf && i >= 10;
                wd[i] = !n[i] ? NULL : lin ? (const void *)(D16 + off[i]) : (const void *)(Dw + off[i]);
                wh[i] = !n[i] ? NULL : lin ? (const void *)(h16 + off[i]) : (const void *)(hw + off[i]);
            }
            int wt = bf ? SMJ_WTYPE_BF16 : SMJ_WTYPE_F32;
            smj_block_weights Wd = block_w(wd, wt), Wh = block_w(wh, wt);
            float *cs = NULL, *sn = NULL;
            if (rope) rope_tables(cap, HS, &cs, &sn);
            float *x = frand(C, 1), *y = frand(C, 1), *kc = frand(nc, 1), *vc = frand(nc, 1);
            float *y0 = fcopy(y, C), *kc0 = fcopy(kc, nc), *vc0 = fcopy(vc, nc);
            float *Dx = dup_d(x, C), *Dy = dup_d(y, C), *Dkc = dup_d(kc, nc), *Dvc = dup_d(vc, nc);
            float *Dcs = rope ? dup_d(cs, (int64_t)cap * (HS / 2)) : NULL, *Dsn = rope ? dup_d(sn, (int64_t)cap * (HS / 2)) : NULL;
            float sc = 1.0f / sqrtf((float)HS), eps = 1e-5f;
            int bad = cap, neg = -1;
            int64_t ks = (int64_t)cap * KD;
            int32_t *Dp = ids_d(&p, 1), *Dbad = ids_d(&bad, 1), *Dneg = ids_d(&neg, 1);
            /* outside the cache: nothing happens */
            int r1 = be->decode_block(ex, Dy, Dx, &Wd, L, st, Dkc, Dvc, ks, Dcs, Dsn, Dbad, C, NH, NKV, HS, H, cap, eps, sc);
            be->decode_block(ex, Dy, Dx, &Wd, L, st, Dkc, Dvc, ks, Dcs, Dsn, Dneg, C, NH, NKV, HS, H, cap, eps, sc);
            CHECK(r1 == 1, "cuda/decode_block %s: declined", cur_shape);
            compare_d("y, position outside the cache", Dy, y0, C, 0);
            compare_d("key cache, position outside the cache", Dkc, kc0, nc, 0);
            compare_d("value cache, position outside the cache", Dvc, vc0, nc, 0);
            be->decode_block(ex, Dy, Dx, &Wd, L, st, Dkc, Dvc, ks, Dcs, Dsn, Dp, C, NH, NKV, HS, H, cap, eps, sc);
            rf->decode_block(X1, y, x, &Wh, L, st, kc, vc, ks, cs, sn, &p, C, NH, NKV, HS, H, cap, eps, sc);
            float *y1 = get_h(Dy, C);
            compare("y", y1, y, C, 2e-5 * L);
            compare_d("key cache", Dkc, kc, nc, 2e-5 * L);
            compare_d("value cache", Dvc, vc, nc, 2e-5 * L);
            be->decode_block(ex, Dy, Dx, &Wd, L, st, Dkc, Dvc, ks, Dcs, Dsn, Dp, C, NH, NKV, HS, H, cap, eps, sc);
            float *y2 = get_h(Dy, C);
            CHECK(memcmp(y1, y2, sizeof(float) * (size_t)C) == 0, "cuda/decode_block %s: a second launch differs",
                  cur_shape);
            ffree(y1); ffree(y2);
            dfree(Dw); if (D16) be->free(D16);
            ffree(hw); free(h16);
            dfree(Dx); dfree(Dy); dfree(Dkc); dfree(Dvc); dfree(Dcs); dfree(Dsn);
            be->free(Dp); be->free(Dbad); be->free(Dneg);
            ffree(cs); ffree(sn); ffree(x); ffree(y); ffree(kc); ffree(vc);
            ffree(y0); ffree(kc0); ffree(vc0);
        }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
}

/* decode_linear against the reference: rmsnorm (or none) and the product,
 * f32 and bf16 weights. */
static void check_decode_linear(void) {
    static const int S[][3] = {{32768, 768, 1}, {1000, 30, 1}, {5, 4096, 0}, {1, 7, 1}, {300, 64, 0}};
    cur_op = "decode_linear";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int bf = 0; bf < 2; bf++) {
            int N = S[t][0], K = S[t][1], nrm = S[t][2];
            snprintf(cur_shape, sizeof cur_shape, "N%d K%d%s %s", N, K, nrm ? " norm" : "", bf ? "bf16" : "f32");
            float *w = frand((int64_t)N * K, 1.0f / sqrtf((float)K)), *x = frand(K, 1), *g = frand(K, 1);
            float *out = frand(N, 0);
            uint16_t *w16;
            void *Dw = dec_weight(w, (int64_t)N * K, bf, &w16);
            float *Dx = dup_d(x, K), *Dg = dup_d(g, K), *Do = dup_d(out, N);
            int wt = bf ? SMJ_WTYPE_BF16 : SMJ_WTYPE_F32;
            be->decode_linear(ex, Do, Dx, nrm ? Dg : NULL, Dw, wt, N, K, 1e-5f);
            rf->decode_linear(X1, out, x, nrm ? g : NULL, bf ? (void *)w16 : w, wt, N, K, 1e-5f);
            compare_d("out", Do, out, N, 2e-5);
            dec_weight_free(Dw, bf);
            free(w16);
            dfree(Dx); dfree(Dg); dfree(Do);
            ffree(w); ffree(x); ffree(g); ffree(out);
        }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
}

/* decode_argmax against the reference's scan: random logits with ties,
 * NaNs and infinities planted, V up to 131072. */
static void check_decode_argmax(void) {
    static const int S[] = {1, 2, 5, 1000, 32768, 131072};
    cur_op = "decode_argmax";
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0]; t++)
        for (int kind = 0; kind < 5; kind++) {
            int V = S[t];
            float *l = frand(V, 1);
            if (kind == 1) for (int i = 0; i < V; i += 3) l[i] = NAN;            /* NaNs, l[0] among them */
            if (kind == 2) for (int i = 1; i < V; i += 2) l[i] = NAN;            /* NaNs after a number */
            if (kind == 3) for (int i = 0; i < V; i++) l[i] = (float)(i % 7) - 3; /* ties: the first max */
            if (kind == 4) for (int i = 0; i < V; i++) l[i] = i % 5 == 2 ? INFINITY : -INFINITY;
            int32_t hist0[4] = {-7, -7, -7, -7}, pos = 1, next, hist[4], dpos;
            float *Dl = dup_d(l, V);
            int32_t *Dn = ids_d(hist0, 1), *Dh = ids_d(hist0, 4), *Dp = ids_d(&pos, 1);
            be->decode_argmax(ex, Dn, Dh, Dp, Dl, V);
            memcpy(hist, hist0, sizeof hist);
            rf->decode_argmax(X1, &next, hist, &pos, l, V);
            int32_t gn, gh[4];
            be->download(&gn, Dn, sizeof gn);
            be->download(gh, Dh, sizeof gh);
            be->download(&dpos, Dp, sizeof dpos);
            CHECK(gn == next && memcmp(gh, hist, sizeof gh) == 0 && dpos == pos,
                  "cuda/decode_argmax V%d case %d: id %d, want %d (position %d, want %d)", V, kind, gn, next, dpos,
                  pos);
            dfree(Dl); be->free(Dn); be->free(Dh); be->free(Dp);
            ffree(l);
        }
    printf("cuda %-14s %-6s the reference's choice on every case\n", cur_op, check_failed == before ? "ok" : "FAILED");
}

/* qmatmul (GGML blocks) against the reference (W dequantized exactly, sums
 * in double): the few-row kernel (M <= 8) and dequantize + matmul above
 * (whose tolerance is the matmul's: bf16 operands in bf16 mode). */
static void check_qmatmul(void) {
    static const int64_t S[][3] = {{1, 33, 64},  {3, 130, 96},  {4, 1, 32},     {8, 7, 320},
                                   {9, 50, 64},  {64, 100, 128}, {1, 4096, 4096}, {200, 300, 256}};
    static const int types[3] = {SMJ_WTYPE_F16, SMJ_WTYPE_Q8_0, SMJ_WTYPE_Q4_0};
    cur_op = "qmatmul";
    op_worst = 0;
    long before = check_failed;
    for (size_t t = 0; t < sizeof S / sizeof S[0] + 1; t++)
        for (int ty = 0; ty < 3; ty++)
            for (int acc = 0; acc < 2; acc++) {
                int wt = types[ty];
                int64_t M = t < 8 ? S[t][0] : 5, N = t < 8 ? S[t][1] : 40, K = t < 8 ? S[t][2] : 70;
                if (t == 8 && wt != SMJ_WTYPE_F16) continue; /* K % 32 != 0: f16 only */
                snprintf(cur_shape, sizeof cur_shape, "%s M%lld N%lld K%lld acc%d",
                         wt == SMJ_WTYPE_F16 ? "f16" : wt == SMJ_WTYPE_Q8_0 ? "q8_0" : "q4_0", (long long)M,
                         (long long)N, (long long)K, acc);
                int64_t rb = wt == SMJ_WTYPE_F16 ? 2 * K : wt == SMJ_WTYPE_Q8_0 ? K / 32 * 34 : K / 32 * 18;
                float *wf = frand(N * K, 1), *A = frand(M * K, 1), *C0 = frand(M * N, 1), *C2 = fcopy(C0, M * N);
                uint8_t *W = malloc((size_t)(N * rb));
                for (int64_t n = 0; n < N; n++) {
                    if (wt == SMJ_WTYPE_F16) smj_quantize_f16(wf + n * K, W + n * rb, K);
                    else if (wt == SMJ_WTYPE_Q8_0) smj_quantize_q8_0(wf + n * K, W + n * rb, K);
                    else smj_quantize_q4_0(wf + n * K, W + n * rb, K);
                }
                void *DW = be->alloc((size_t)(N * rb));
                be->upload(DW, W, (size_t)(N * rb));
                float *DA = dup_d(A, M * K), *DC = dup_d(C0, M * N);
                be->qmatmul(ex, DC, DA, DW, wt, M, N, K, acc);
                rf->qmatmul(X1, C2, A, W, wt, M, N, K, acc);
                compare_d("C", DC, C2, M * N, M > 8 ? TOL_MM : 1e-5);
                be->free(DW);
                dfree(DA); dfree(DC);
                free(W);
                ffree(wf); ffree(A); ffree(C0); ffree(C2);
            }
    printf("cuda %-14s %-6s worst normalized error %.3g\n", cur_op, check_failed == before ? "ok" : "FAILED", op_worst);
}

int main(void) {
    smj_ctx *ctx = cuda_check_open();
    if (!ctx) return cuda_check_skip();
    check_decode_attention();
    cuda_check_status(ctx, "decode_attention");
    check_decode_block();
    cuda_check_status(ctx, "decode_block");
    check_decode_linear();
    cuda_check_status(ctx, "decode_linear");
    check_decode_argmax();
    cuda_check_status(ctx, "decode_argmax");
    check_qmatmul();
    cuda_check_status(ctx, "qmatmul");
    smj_ctx_free(ctx);
    return check_summary("test_cuda_decode");
}
