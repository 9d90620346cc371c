#!/usr/bin/env python3
"""make_hf_fixtures.py — transformers parity fixtures for tests/test_hf.c.

Needs torch and transformers (a machine with both; Debian's python3-torch has
no transformers). Run from the repository root:

    python3 tools/make_hf_fixtures.py                 # writes tests/fixtures/hf/<name>/
    python3 tools/make_hf_fixtures.py --out DIR       # somewhere else

For each case below it builds a tiny randomly initialised model with
transformers itself (AutoModelForCausalLM.from_config, float32, eager
attention, CPU, one thread, fixed seeds), saves it with save_pretrained
(config.json + model.safetensors, exactly what a Hub checkpoint holds), and
writes logits.bin in the SMJFIX01 format of docs/FIXTURES.md (read by
tests/util/fixture.c):

    meta.generator, meta.torch_version, meta.transformers_version   u8 strings
    meta.case, meta.greedy_method                                   u8 strings
    meta.seed                                                       i32 [1]
    input_ids                                                       i32 [B, T]
    logits                                                          f32 [B, T, V]
    greedy_prompt                                                   i32 [8]
    greedy_ids                                                      i32 [32]
    greedy_logits                                                   f32 [32, V]
    rope.inv_freq, rope.inv_freq_after_logits                       f32 [HS/2]
    rope.attention_scaling                                          f32 [1]

logits: the float32 eager forward on input_ids. greedy_*: 32 tokens from
model.generate(do_sample=False, max_new_tokens=32, eos_token_id=None,
use_cache=True) on a fresh copy of the model (dynamic RoPE keeps state
between calls), with the logits of each step. rope.*: the rotary module's
inverse frequencies at construction and after the logits forward (they
differ only for dynamic RoPE past max_position_embeddings) and its cos/sin
multiplier.

tests/test_hf.c imports every tests/fixtures/hf/<name>/ with smj_import_hf
(with a longer context when the continuation needs one), runs the forward on
input_ids and requires rel L2 <= 1e-5, max |diff| <= 5e-4 and the same
argmax at every position, the same inverse frequencies, and reproduces all
32 greedy tokens with smj_session_feed + argmax.

The weights are re-drawn after construction (2-D: N(0, 0.1^2); biases
N(0, 0.2^2); norm weights 1 + N(0, 0.1^2)) so that logits are far from
uniform (a robust argmax) and a misplaced norm weight or bias shows. A case's
seed is where the search starts: further seeds are tried until every compared
argmax (logits and greedy steps) has a top-2 gap >= MIN_MARGIN, so float32
rounding differences cannot flip a token. The "bf16" case saves bfloat16
weights and takes its reference logits from the float32 model holding the
same bf16-rounded values, which tests the BF16 reading path end to end.
"""
import argparse
import copy
import os
import shutil
import struct
import sys
import traceback

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAGIC = b"SMJFIX01"
DT_F32, DT_I32, DT_U8 = 0, 1, 3
MAX_DIR_BYTES = 400 * 1024
PROMPT_LEN, N_NEW = 8, 32
MIN_MARGIN = 2e-3   # smallest top-2 logit gap accepted at any compared argmax (tests need > 1e-3)
SEED_TRIES = 12


def common(**kw):
    base = dict(hidden_act="silu", attention_dropout=0.0, initializer_range=0.02, use_cache=False,
                bos_token_id=None, eos_token_id=None, pad_token_id=None)
    base.update(kw)
    return base


def rope(cls, params, **kw):
    """A config with a RoPE dict: rope_parameters (transformers 5.x); the
    older rope_scaling + rope_theta keyword where that is what the class takes."""
    try:
        return cls(**common(rope_parameters=dict(params), **kw))
    except TypeError:
        p = dict(params)
        theta = p.pop("rope_theta")
        return cls(**common(rope_scaling=p, rope_theta=theta, **kw))


CASES = [
    # Llama, GQA, tied embeddings
    dict(name="llama_gqa_tied", seed=11, B=2, T=12, dtype="float32",
         config=lambda: LlamaConfig(**common(vocab_size=96, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                                             tie_word_embeddings=True, attention_bias=False, mlp_bias=False))),
    # Llama, MHA, untied, head_dim != hidden_size / heads
    dict(name="llama_untied_headdim", seed=12, B=2, T=10, dtype="float32",
         config=lambda: LlamaConfig(**common(vocab_size=64, hidden_size=32, intermediate_size=48,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                             head_dim=16, max_position_embeddings=64, rope_theta=500000.0,
                                             rms_norm_eps=1e-6, tie_word_embeddings=False))),
    # Qwen3: QK-norm, GQA, head_dim 16 with hidden 48 / 6 heads = 8, untied
    dict(name="qwen3_gqa_untied", seed=13, B=2, T=12, dtype="float32",
         config=lambda: Qwen3Config(**common(vocab_size=80, hidden_size=48, intermediate_size=96,
                                             num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                             head_dim=16, max_position_embeddings=64, rope_theta=1000000.0,
                                             rms_norm_eps=1e-6, tie_word_embeddings=False,
                                             use_sliding_window=False, attention_bias=False))),
    # Qwen3 tied
    dict(name="qwen3_tied", seed=14, B=1, T=16, dtype="float32",
         config=lambda: Qwen3Config(**common(vocab_size=72, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1,
                                             head_dim=8, max_position_embeddings=64, rope_theta=10000.0,
                                             rms_norm_eps=1e-6, tie_word_embeddings=True,
                                             use_sliding_window=False, attention_bias=False))),
    # Mistral with a sliding window longer than every sequence used here
    # (smedjan caps the context at the window)
    dict(name="mistral_window", seed=15, B=2, T=12, dtype="float32",
         config=lambda: MistralConfig(**common(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, max_position_embeddings=128, sliding_window=48,
                                               rope_theta=10000.0, rms_norm_eps=1e-5,
                                               tie_word_embeddings=False))),
    # Llama saved in bfloat16
    dict(name="llama_bf16", seed=16, B=2, T=8, dtype="bfloat16",
         config=lambda: LlamaConfig(**common(vocab_size=96, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                             max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                                             tie_word_embeddings=False))),
    # Qwen2: q/k/v biases (no o_proj bias), GQA, untied
    dict(name="qwen2_bias", seed=17, B=2, T=12, dtype="float32",
         config=lambda: Qwen2Config(**common(vocab_size=80, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                             tie_word_embeddings=False, use_sliding_window=False))),
    # Llama with attention_bias: q/k/v/o biases
    dict(name="llama_attn_bias", seed=18, B=2, T=10, dtype="float32",
         config=lambda: LlamaConfig(**common(vocab_size=64, hidden_size=32, intermediate_size=48,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                                             tie_word_embeddings=True, attention_bias=True, mlp_bias=False))),
    # RoPE scaling: linear
    dict(name="llama_rope_linear", seed=19, B=2, T=16, dtype="float32",
         config=lambda: rope(LlamaConfig, dict(rope_type="linear", factor=2.0, rope_theta=10000.0),
                             vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                             rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # dynamic NTK: max_position_embeddings 16, the logits at T = 24 and the
    # greedy continuation to 40 tokens run past it (the base grows per length)
    dict(name="llama_rope_dynamic", seed=20, B=2, T=24, dtype="float32",
         config=lambda: rope(LlamaConfig, dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0),
                             vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                             rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # llama3: head_dim 16 and original 32 put frequencies in all three bands
    dict(name="llama_rope_llama3", seed=21, B=2, T=16, dtype="float32",
         config=lambda: rope(LlamaConfig, dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                               high_freq_factor=4.0, original_max_position_embeddings=32,
                                               rope_theta=10000.0),
                             vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                             rms_norm_eps=1e-5, tie_word_embeddings=True)),
    # YaRN on Qwen3 with original_max_position_embeddings (max 128 / original 32 = factor 4)
    dict(name="qwen3_rope_yarn", seed=22, B=2, T=16, dtype="float32",
         config=lambda: rope(Qwen3Config, dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32,
                                               rope_theta=10000.0),
                             vocab_size=72, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                             rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                             attention_bias=False)),
    # YaRN on Llama: no original_max_position_embeddings (it is max_position_embeddings),
    # explicit attention_factor and betas
    dict(name="llama_rope_yarn", seed=23, B=2, T=12, dtype="float32",
         config=lambda: rope(LlamaConfig, dict(rope_type="yarn", factor=2.0, attention_factor=1.25, beta_fast=8.0,
                                               beta_slow=2.0, rope_theta=10000.0),
                             vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                             rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # GPT-2 (GPT2LMHeadModel): LayerNorm + biases, learned positions, fused
    # Conv1D c_attn, gelu_new MLP of 4 * n_embd, tied LM head
    dict(name="gpt2", seed=24, B=2, T=12, dtype="float32",
         config=lambda: GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=None,
                                   activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   layer_norm_epsilon=1e-5, initializer_range=0.02, tie_word_embeddings=True,
                                   use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)),
]


class FixtureWriter:
    """The SMJFIX01 container of docs/FIXTURES.md (no 'gen' entries here)."""

    def __init__(self):
        self.entries = []

    def _add(self, name, dtype, dims, payload):
        nb = name.encode()
        assert 0 < len(nb) < 65536 and len(dims) <= 8
        assert all(e[0] != name for e in self.entries), name
        hdr = struct.pack("<H", len(nb)) + nb + struct.pack("<BB", dtype, len(dims))
        hdr += b"".join(struct.pack("<Q", int(d)) for d in dims)
        self.entries.append((name, hdr + payload))

    def f32(self, name, a):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        self._add(name, DT_F32, a.shape, a.astype("<f4").tobytes())

    def i32(self, name, a):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
        assert a.min(initial=0) >= -2**31 and a.max(initial=0) < 2**31
        self._add(name, DT_I32, a.shape, a.astype("<i4").tobytes())

    def string(self, name, s):
        b = s.encode()
        self._add(name, DT_U8, (len(b),), b)

    def tobytes(self):
        return MAGIC + struct.pack("<I", len(self.entries)) + b"".join(e[1] for e in self.entries)


def redraw(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            else:
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.1)


def rotary(model):
    for mod in model.modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and hasattr(mod, "inv_freq"):
            return mod
    return None


def margin_of(logits):
    top = logits.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min().item()


def greedy(model, prompt):
    """32 greedy tokens with transformers' generate (KV cache on, no early stop).
    Returns (tokens [N_NEW], step logits [N_NEW, V], method)."""
    attn = torch.ones_like(prompt)
    try:
        out = model.generate(input_ids=prompt, attention_mask=attn, do_sample=False, num_beams=1,
                             max_new_tokens=N_NEW, eos_token_id=None, pad_token_id=0,
                             use_cache=True, return_dict_in_generate=True, output_logits=True)
        toks = out.sequences[0, prompt.shape[1]:]
        steps = torch.stack([x[0] for x in out.logits]).to(torch.float32)
        method = "generate"
    except Exception:  # an API change: the same greedy loop by hand, also with the cache
        traceback.print_exc()
        past, cur, toks, steps = None, prompt, [], []
        for _ in range(N_NEW):
            o = model(input_ids=cur, past_key_values=past, use_cache=True)
            past = o.past_key_values
            lg = o.logits[0, -1].to(torch.float32)
            t = int(lg.argmax())
            steps.append(lg)
            toks.append(t)
            cur = torch.tensor([[t]])
        toks, steps, method = torch.tensor(toks), torch.stack(steps), "manual greedy loop (use_cache)"
    assert toks.shape == (N_NEW,), toks.shape
    if not torch.equal(steps.argmax(-1), toks):
        print("  warning: greedy tokens are not the argmax of the recorded logits")
    return toks, steps, method


def attempt(case, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = case["config"]()
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    redraw(model, gen)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr(), "not tied"
    if case["dtype"] == "bfloat16":
        with torch.no_grad():  # the reference runs on exactly the bf16 values the file holds
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    # fresh copies before any forward: dynamic RoPE keeps state between calls
    gen_model = copy.deepcopy(model)
    rot = rotary(model)
    inv0 = rot.inv_freq.detach().clone().to(torch.float32) if rot is not None else None
    scaling = float(getattr(rot, "attention_scaling", 1.0)) if rot is not None else 1.0
    ids = torch.randint(0, cfg.vocab_size, (case["B"], case["T"]), generator=gen)
    prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT_LEN), generator=gen)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.to(torch.float32)
    inv1 = rot.inv_freq.detach().clone().to(torch.float32) if rot is not None else None
    assert logits.shape == (case["B"], case["T"], cfg.vocab_size)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        toks, steps, method = greedy(gen_model, prompt)
    m = min(margin_of(logits), margin_of(steps))
    return dict(cfg=cfg, model=model, ids=ids, logits=logits, prompt=prompt, toks=toks, steps=steps,
                method=method, inv0=inv0, inv1=inv1, scaling=scaling, margin=m, seed=seed)


def build(case, out_root):
    best = None
    for k in range(SEED_TRIES):  # the case's seed first; others only when an argmax is a near-tie
        r = attempt(case, case["seed"] + 1000 * k)
        if best is None or r["margin"] > best["margin"]:
            best = r
        if r["margin"] >= MIN_MARGIN:
            break
    r = best
    cfg, model = r["cfg"], r["model"]

    d = os.path.join(out_root, case["name"])
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    save_model = model
    if case["dtype"] == "bfloat16":
        save_model = model.to(torch.bfloat16)
    save_model.save_pretrained(d, safe_serialization=True)
    # only what smj_import_hf reads is kept
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    check_safetensors(os.path.join(d, "model.safetensors"), case["dtype"])

    w = FixtureWriter()
    w.string("meta.generator", "tools/make_hf_fixtures.py")
    w.string("meta.torch_version", torch.__version__)
    w.string("meta.transformers_version", transformers.__version__)
    w.string("meta.case", case["name"])
    w.string("meta.greedy_method", r["method"])
    w.i32("meta.seed", np.array([r["seed"]]))
    w.i32("input_ids", r["ids"].numpy())
    w.f32("logits", r["logits"].numpy())
    w.i32("greedy_prompt", r["prompt"][0].numpy())
    w.i32("greedy_ids", r["toks"].numpy())
    w.f32("greedy_logits", r["steps"].numpy())
    if r["inv0"] is not None:
        w.f32("rope.inv_freq", r["inv0"].numpy())
        w.f32("rope.inv_freq_after_logits", r["inv1"].numpy())
        w.f32("rope.attention_scaling", np.array([r["scaling"]]))
    with open(os.path.join(d, "logits.bin"), "wb") as f:
        f.write(w.tobytes())
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    assert size <= MAX_DIR_BYTES, f"{case['name']}: {size} bytes"
    print(f"{case['name']}: seed {r['seed']}, {size} bytes, logits std {r['logits'].std().item():.3f}, "
          f"min top-2 margin {r['margin']:.2e} (logits and greedy steps), greedy by {r['method']}, "
          f"rope attention_scaling {r['scaling']:.6g}")
    if r["margin"] < MIN_MARGIN:
        print(f"  warning: a near-tie in an argmax (margin {r['margin']:.2e}) with every seed tried")


def check_safetensors(path, dtype):
    """Reads the header back independently of the safetensors package."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    import json
    hdr = json.loads(blob[8:8 + n])
    want = {"float32": "F32", "bfloat16": "BF16"}[dtype]
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == want, (k, v["dtype"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "hf"))
    ap.add_argument("--only", default=None, help="build one case by name")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    failed = []
    for case in CASES:
        if args.only and case["name"] != args.only:
            continue
        try:
            build(case, args.out)
        except Exception:  # keep going: one broken case must not cost the others
            traceback.print_exc()
            failed.append(case["name"])
    if failed:
        print("FAILED cases:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
