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
writes logits.bin: the model's float32 logits for fixed input ids, in the
SMJFIX01 format of docs/FIXTURES.md (read by tests/util/fixture.c):

    meta.generator, meta.torch_version, meta.transformers_version   u8 strings
    meta.case                                                       u8 string
    input_ids                                                       i32 [B, T]
    logits                                                          f32 [B, T, V]

tests/test_hf.c imports every tests/fixtures/hf/<name>/ with smj_import_hf,
runs the forward on input_ids and requires rel L2 <= 1e-5, max |diff| <= 5e-4
and the same argmax at every position.

The weights are re-drawn after construction (2-D: N(0, 0.1^2); norm weights
1 + N(0, 0.1^2)) so that logits are far from uniform (a robust argmax) and a
misplaced norm weight shows. The "bf16" case saves bfloat16 weights and takes
its reference logits from the float32 model holding the same bf16-rounded
values, which tests the BF16 reading path end to end.
"""
import argparse
import os
import shutil
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen3Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAGIC = b"SMJFIX01"
DT_F32, DT_I32, DT_U8 = 0, 1, 3
MAX_DIR_BYTES = 400 * 1024


def common(**kw):
    base = dict(hidden_act="silu", attention_dropout=0.0, initializer_range=0.02, use_cache=False,
                bos_token_id=None, eos_token_id=None, pad_token_id=None)
    base.update(kw)
    return base


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
                                             head_dim=16, max_position_embeddings=32, rope_theta=500000.0,
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
                                             head_dim=8, max_position_embeddings=32, rope_theta=10000.0,
                                             rms_norm_eps=1e-6, tie_word_embeddings=True,
                                             use_sliding_window=False, attention_bias=False))),
    # Mistral with a sliding window longer than T (smedjan caps the context at the window)
    dict(name="mistral_window", seed=15, B=2, T=12, dtype="float32",
         config=lambda: MistralConfig(**common(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, max_position_embeddings=128, sliding_window=32,
                                               rope_theta=10000.0, rms_norm_eps=1e-5,
                                               tie_word_embeddings=False))),
    # Llama saved in bfloat16
    dict(name="llama_bf16", seed=16, B=2, T=8, dtype="bfloat16",
         config=lambda: LlamaConfig(**common(vocab_size=96, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                             max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                                             tie_word_embeddings=False))),
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
            else:
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.1)


def build(case, out_root):
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    cfg = case["config"]()
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    redraw(model, gen)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    if case["dtype"] == "bfloat16":
        with torch.no_grad():  # the reference runs on exactly the bf16 values the file holds
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    ids = torch.randint(0, cfg.vocab_size, (case["B"], case["T"]), generator=gen)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.to(torch.float32)
    assert logits.shape == (case["B"], case["T"], cfg.vocab_size)
    assert torch.isfinite(logits).all()

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
    w.i32("input_ids", ids.numpy())
    w.f32("logits", logits.numpy())
    with open(os.path.join(d, "logits.bin"), "wb") as f:
        f.write(w.tobytes())
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    assert size <= MAX_DIR_BYTES, f"{case['name']}: {size} bytes"
    top = logits.topk(2, dim=-1).values
    margin = (top[..., 0] - top[..., 1]).min().item()
    print(f"{case['name']}: {size} bytes, logits std {logits.std().item():.3f}, min top-2 margin {margin:.2e}")
    if margin < 1e-3:
        print(f"  warning: a near-tie in the argmax (margin {margin:.2e}); consider another seed")


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
    for case in CASES:
        if args.only and case["name"] != args.only:
            continue
        build(case, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
