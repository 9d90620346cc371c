#!/usr/bin/env python3
"""check_hf_export.py — does transformers load what `smedjan export-hf` writes?

For each model directory given (written by `smedjan export-hf --tokenizer`),
this loads it with AutoModelForCausalLM / AutoTokenizer.from_pretrained
(float32, eager attention, CPU), tokenizes a fixed text with the exported
tokenizer.json, runs the forward on those ids and a 32-token greedy
continuation, and writes logits.bin into the directory in the SMJFIX01
format of tools/make_hf_fixtures.py, plus `meta.text`. tests/test_hf.c then
checks that smedjan reproduces transformers' logits and greedy tokens on its
own export, and that smedjan's tokenizer gives transformers' ids for the text.

Needs torch + transformers (run on a machine that has them):
    python3 tools/check_hf_export.py tests/fixtures/hf/export_*
"""
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_fixtures as mk  # noqa: E402  (FixtureWriter, greedy, margin_of)

TEXT = "CYNIC, n.  A blackguard whose vision sees things as they are -- 1906!\n\n\tEnd."


def check(d):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = torch.tensor([tok(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.to(torch.float32)
        toks, steps, method = mk.greedy(model, ids[:, :8])
    w = mk.FixtureWriter()
    w.string("meta.generator", "tools/check_hf_export.py")
    w.string("meta.torch_version", torch.__version__)
    w.string("meta.transformers_version", transformers.__version__)
    w.string("meta.case", os.path.basename(d.rstrip("/")))
    w.string("meta.greedy_method", method)
    w.string("meta.text", TEXT)
    w.i32("input_ids", ids.numpy())
    w.f32("logits", logits.numpy())
    w.i32("greedy_prompt", ids[0, :8].numpy())
    w.i32("greedy_ids", toks.numpy())
    w.f32("greedy_logits", steps.numpy())
    with open(os.path.join(d, "logits.bin"), "wb") as f:
        f.write(w.tobytes())
    print(f"{d}: {type(model).__name__}, {ids.shape[1]} text tokens, "
          f"min top-2 margin {min(mk.margin_of(logits), mk.margin_of(steps)):.2e}, greedy via {method}")


if __name__ == "__main__":
    for d in sys.argv[1:]:
        check(d)
