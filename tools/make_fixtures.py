#!/usr/bin/python3
"""make_fixtures.py — PyTorch reference fixtures for tests/test_parity.c.

Regenerate (needs PyTorch; on Debian 12 that is /usr/bin/python3 with the
python3-torch package, not a pyenv/venv python):

    /usr/bin/python3 tools/make_fixtures.py            # (re)writes tests/fixtures/*.bin
    /usr/bin/python3 tools/make_fixtures.py --check    # regenerates in memory and verifies
                                                        # the committed files are identical

Each run also cross-checks the torch model against an independent float64 numpy
forward (explicit loops over heads and positions) and reports how far the
float32 reference gradients are from float64 ones.

The model is a plain-torch Llama / Qwen3 decoder written from the spec in
docs/FIXTURES.md (HF conventions: RMSNorm, half-split RoPE, GQA, optional
per-head q/k RMSNorm before RoPE, SwiGLU MLP, tied or untied LM head). Everything
runs in float32 on the CPU, single-threaded, with fixed seeds, so the output is
byte-for-byte reproducible on one torch version (recorded as meta.torch_version).

The file format is described in docs/FIXTURES.md and read by tests/util/fixture.c.
Parameters are stored as "gen" entries (dtype 4): a seed, a power-of-two scale
and an offset from which the reader re-creates the exact float32 values with
splitmix64 (the same generator is implemented below). This keeps every fixture
well under 300 KB; gradients, logits and losses are stored raw.
"""
import argparse
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

MAGIC = b"SMJFIX01"
DT_F32, DT_I32, DT_F64, DT_U8, DT_GEN = 0, 1, 2, 3, 4
MAX_BYTES = 300 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")

FIXTURES = [
    dict(file="llama_mha_tied.bin", seed=1234,
         V=96, C=32, L=2, NH=4, NKV=4, HS=8, H=64, theta=10000.0, eps=1e-5,
         tied=True, qk_norm=False, B=2, T=8),
    dict(file="qwen3_gqa_untied.bin", seed=4321,
         V=80, C=48, L=2, NH=6, NKV=2, HS=16, H=96, theta=1e6, eps=1e-6,
         tied=False, qk_norm=True, B=2, T=12),
]

OPTIM = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=5)

# ----------------------------------------------------------- the generator
M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
GEN_EXP_WEIGHT = -18  # 2-D weights: k * 2^-18, std ~0.144
GEN_EXP_NORM = -19    # norm weights: 1 + k * 2^-19, std ~0.072, range 1 +- 0.25


def gen_values(seed, numel, exp2, offset):
    """Element i: z = splitmix64 output for state seed + (i+1)*GAMMA (mod 2^64);
    k = sum of z's four 16-bit fields - 131070 (|k| <= 131070, ~normal, std ~37837);
    value = float32(double(offset) + k * 2^exp2)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, numel + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    m = np.uint64(0xFFFF)
    k = ((z & m) + ((z >> np.uint64(16)) & m) + ((z >> np.uint64(32)) & m)
         + ((z >> np.uint64(48)) & m)).astype(np.int64) - 131070
    v = (np.float64(offset) + k.astype(np.float64) * math.ldexp(1.0, exp2)).astype(np.float32)
    return v


def gen_checksum(v):
    """sum_i double(v[i]) * (i % 13 + 1), accumulated left to right in double."""
    w = (np.arange(v.size) % 13 + 1).astype(np.float64)
    s = 0.0
    for x in (v.astype(np.float64) * w).tolist():  # sequential, like the C reader
        s += x
    return s


# ----------------------------------------------------------------- writer
class Writer:
    def __init__(self):
        self.entries = []  # (name, bytes)

    def _add(self, name, dtype, dims, payload):
        nb = name.encode()
        assert len(nb) < 65536 and len(dims) <= 8
        if any(e[0] == name for e in self.entries):
            raise ValueError("duplicate entry " + name)
        hdr = struct.pack("<H", len(nb)) + nb + struct.pack("<BB", dtype, len(dims))
        hdr += b"".join(struct.pack("<Q", int(d)) for d in dims)
        self.entries.append((name, hdr + payload))

    def f32(self, name, t):
        a = np.array(t, dtype=np.float32, order="C")
        self._add(name, DT_F32, a.shape, a.astype("<f4").tobytes())

    def i32(self, name, t):
        a = np.array(t, dtype=np.int64, order="C")
        assert a.min(initial=0) >= -2**31 and a.max(initial=0) < 2**31
        self._add(name, DT_I32, a.shape, a.astype("<i4").tobytes())

    def f64(self, name, t):
        a = np.array(t, dtype=np.float64, order="C")
        self._add(name, DT_F64, a.shape, a.astype("<f8").tobytes())

    def string(self, name, s):
        b = s.encode()
        self._add(name, DT_U8, (len(b),), b)

    def gen(self, name, shape, seed, exp2, offset):
        v = gen_values(seed, int(np.prod(shape)), exp2, offset)
        payload = struct.pack("<Qifd", seed, exp2, offset, gen_checksum(v))
        self._add(name, DT_GEN, shape, payload)
        return torch.from_numpy(v.reshape(shape).copy())

    def tobytes(self):
        return MAGIC + struct.pack("<I", len(self.entries)) + b"".join(e[1] for e in self.entries)


# ------------------------------------------------------------------ model
def param_shapes(c):
    V, C, NH, NKV, HS, H = c["V"], c["C"], c["NH"], c["NKV"], c["HS"], c["H"]
    out = [("model.embed_tokens.weight", (V, C))]
    for i in range(c["L"]):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (C,)),
                (p + "self_attn.q_proj.weight", (NH * HS, C)),
                (p + "self_attn.k_proj.weight", (NKV * HS, C)),
                (p + "self_attn.v_proj.weight", (NKV * HS, C)),
                (p + "self_attn.o_proj.weight", (C, NH * HS))]
        if c["qk_norm"]:
            out += [(p + "self_attn.q_norm.weight", (HS,)),
                    (p + "self_attn.k_norm.weight", (HS,))]
        out += [(p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (c["H"], C)),
                (p + "mlp.up_proj.weight", (H, C)),
                (p + "mlp.down_proj.weight", (C, H))]
    out.append(("model.norm.weight", (C,)))
    if not c["tied"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def rmsnorm(x, w, eps):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(c, P, idx, targets):
    """idx, targets: int64 [B, T]. Returns (logits [B,T,V], loss)."""
    B, T = idx.shape
    NH, NKV, HS, eps = c["NH"], c["NKV"], c["HS"], c["eps"]
    dt = P["model.embed_tokens.weight"].dtype
    inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, HS, 2, dtype=torch.int64).float() / HS))
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)  # [T, HS]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    x = P["model.embed_tokens.weight"][idx]  # [B, T, C]
    for i in range(c["L"]):
        p = "model.layers.%d." % i
        h = rmsnorm(x, P[p + "input_layernorm.weight"], eps)
        q = (h @ P[p + "self_attn.q_proj.weight"].t()).view(B, T, NH, HS)
        k = (h @ P[p + "self_attn.k_proj.weight"].t()).view(B, T, NKV, HS)
        v = (h @ P[p + "self_attn.v_proj.weight"].t()).view(B, T, NKV, HS)
        if c["qk_norm"]:
            q = rmsnorm(q, P[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, P[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, nh, T, HS]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = NH // NKV
        k = k.repeat_interleave(rep, dim=1)  # head h uses kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, NH * HS)
        x = x + y @ P[p + "self_attn.o_proj.weight"].t()
        h = rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = F.silu(h @ P[p + "mlp.gate_proj.weight"].t())
        u = h @ P[p + "mlp.up_proj.weight"].t()
        x = x + (g * u) @ P[p + "mlp.down_proj.weight"].t()
    x = rmsnorm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if c["tied"] else P["lm_head.weight"]
    logits = x @ head.t()
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index=-1)
    return logits, loss


def numpy_forward64(c, P, idx):
    """An independent float64 forward (explicit loops over heads and positions)."""
    B, T = idx.shape
    NH, NKV, HS, eps = c["NH"], c["NKV"], c["HS"], c["eps"]
    W = {k: v.detach().double().numpy() for k, v in P.items()}

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(vec, pos):  # vec [HS]
        out = np.empty_like(vec)
        half = HS // 2
        for j in range(half):
            ang = pos * c["theta"] ** (-(2.0 * j) / HS)
            a, b = vec[j], vec[j + half]
            out[j] = a * math.cos(ang) - b * math.sin(ang)
            out[j + half] = b * math.cos(ang) + a * math.sin(ang)
        return out

    logits = np.zeros((B, T, c["V"]))
    for b in range(B):
        x = W["model.embed_tokens.weight"][idx[b]]  # [T, C]
        for i in range(c["L"]):
            p = "model.layers.%d." % i
            h = rms(x, W[p + "input_layernorm.weight"])
            q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, NH, HS)
            k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, NKV, HS)
            v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, NKV, HS)
            y = np.zeros((T, NH, HS))
            for hd in range(NH):
                kv = hd // (NH // NKV)
                for t in range(T):
                    qt = q[t, hd]
                    if c["qk_norm"]:
                        qt = rms(qt, W[p + "self_attn.q_norm.weight"])
                    qt = rope(qt, t)
                    s = np.empty(t + 1)
                    for u in range(t + 1):
                        ku = k[u, kv]
                        if c["qk_norm"]:
                            ku = rms(ku, W[p + "self_attn.k_norm.weight"])
                        s[u] = qt @ rope(ku, u) / math.sqrt(HS)
                    s = np.exp(s - s.max())
                    s /= s.sum()
                    y[t, hd] = s @ v[: t + 1, kv]
            x = x + y.reshape(T, NH * HS) @ W[p + "self_attn.o_proj.weight"].T
            h = rms(x, W[p + "post_attention_layernorm.weight"])
            g = h @ W[p + "mlp.gate_proj.weight"].T
            g = g / (1.0 + np.exp(-g))
            x = x + (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        x = rms(x, W["model.norm.weight"])
        head = W["model.embed_tokens.weight"] if c["tied"] else W["lm_head.weight"]
        logits[b] = x @ head.T
    return logits


# ----------------------------------------------------------------- build
def build(c):
    torch.manual_seed(c["seed"])
    w = Writer()
    w.string("meta.torch_version", torch.__version__)
    w.string("meta.generator", "tools/make_fixtures.py")
    for key, name in [("V", "vocab_size"), ("C", "dim"), ("L", "n_layers"), ("NH", "n_heads"),
                      ("NKV", "n_kv_heads"), ("HS", "head_dim"), ("H", "ffn_hidden")]:
        w.i32("config." + name, c[key])
    w.f32("config.rope_theta", c["theta"])
    w.f32("config.norm_eps", c["eps"])
    w.i32("config.tied_embeddings", int(c["tied"]))
    w.i32("config.qk_norm", int(c["qk_norm"]))
    B, T, V = c["B"], c["T"], c["V"]
    w.i32("batch.B", B)
    w.i32("batch.T", T)

    g = torch.Generator().manual_seed(c["seed"])
    tokens = torch.randint(0, V, (B * T + 1,), generator=g, dtype=torch.int64)
    inputs = torch.stack([tokens[b * T: b * T + T] for b in range(B)])
    targets = torch.stack([tokens[b * T + 1: b * T + T + 1] for b in range(B)])
    w.i32("tokens", tokens.numpy())
    w.i32("inputs", inputs.numpy())
    w.i32("targets", targets.numpy())

    shapes = param_shapes(c)
    P = {}
    for j, (name, shape) in enumerate(shapes):
        seed = (c["seed"] * 1000003 + 7919 * (j + 1)) & M64
        if len(shape) >= 2:
            t = w.gen(name, shape, seed, GEN_EXP_WEIGHT, 0.0)
        else:
            t = w.gen(name, shape, seed, GEN_EXP_NORM, 1.0)
        P[name] = t.clone().requires_grad_(True)

    logits, loss = forward(c, P, inputs, targets)
    loss.backward()
    w.f32("logits", logits.detach().numpy())
    w.f32("loss", loss.item())
    for name, _ in shapes:
        w.f32("grad." + name, P[name].grad.numpy())

    # Cross-check the torch model against an independent float64 forward.
    ref = numpy_forward64(c, {k: v.detach() for k, v in P.items()}, inputs.numpy())
    l32 = logits.detach().double().numpy()
    err = np.linalg.norm(l32 - ref) / np.linalg.norm(ref)
    lse = np.log(np.exp(ref - ref.max(-1, keepdims=True)).sum(-1)) + ref.max(-1)
    nll = lse - np.take_along_axis(ref, targets.numpy()[..., None], -1)[..., 0]
    lerr = abs(loss.item() - nll.mean()) / nll.mean()
    print("  torch fp32 vs numpy fp64 forward: logits rel L2 %.2e, loss rel %.2e" % (err, lerr))
    if err > 2e-6 or lerr > 2e-6:
        raise SystemExit("torch model disagrees with the independent numpy forward")

    # The same model in float64: how far the float32 reference itself is from exact.
    P64 = {k: v.detach().double().requires_grad_(True) for k, v in P.items()}
    _, loss64 = forward(c, P64, inputs, targets)
    loss64.backward()
    gerr = max((P[n].grad.double() - P64[n].grad).norm().item() / P64[n].grad.norm().item()
               for n, _ in shapes if P64[n].grad.norm().item() > 0)
    print("  float32 reference vs float64: worst grad rel L2 %.2e" % gerr)

    # 5 AdamW steps on the same batch (what the C data loader produces from a
    # dataset of exactly `tokens`: the cursor wraps back to 0 each step).
    o = OPTIM
    for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip"):
        w.f32("optim." + k, o[k])
    w.i32("optim.steps", o["steps"])
    params = [P[n] for n, _ in shapes]
    decay = [P[n] for n, s in shapes if len(s) >= 2]
    no_decay = [P[n] for n, s in shapes if len(s) < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=o["weight_decay"]),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                            amsgrad=False, foreach=False)
    step_losses, step_norms = [], []
    for _ in range(o["steps"]):
        opt.zero_grad(set_to_none=False)
        _, l = forward(c, P, inputs, targets)
        l.backward()
        n = torch.nn.utils.clip_grad_norm_(params, o["grad_clip"])
        step_losses.append(l.item())
        step_norms.append(n.item())
        opt.step()
    assert step_losses[0] == loss.item()
    w.f32("step_losses", step_losses)
    w.f32("step_grad_norms", step_norms)

    # Parameters after the steps, when they fit the size budget.
    extra = sum(4 * int(np.prod(s)) + 40 + len(n) for n, s in shapes)
    if len(w.tobytes()) + extra < MAX_BYTES:
        for name, _ in shapes:
            w.f32("final." + name, P[name].detach().numpy())
    data = w.tobytes()
    assert len(data) < MAX_BYTES, "%s: %d bytes" % (c["file"], len(data))
    return data, (step_losses, step_norms)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify the committed fixtures instead of writing them")
    ap.add_argument("--out", default=OUT_DIR, help="output directory (default tests/fixtures)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    bad = 0
    for c in FIXTURES:
        print(c["file"])
        data, sl = build(c)
        path = os.path.join(args.out, c["file"])
        print("  %d bytes, step losses %s" % (len(data), " ".join("%.6f" % x for x in sl[0])))
        print("  grad norms (pre-clip) %s" % " ".join("%.4f" % x for x in sl[1]))
        if args.check:
            try:
                with open(path, "rb") as f:
                    old = f.read()
            except OSError as e:
                print("  MISSING: %s" % e)
                bad += 1
                continue
            if old == data:
                print("  committed file is identical")
            else:
                print("  DIFFERS from the committed file (torch version or script changed?)")
                bad += 1
        else:
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            print("  wrote " + os.path.relpath(path, ROOT))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
