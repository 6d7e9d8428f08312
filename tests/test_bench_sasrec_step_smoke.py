"""benchmarks/bench_sasrec_step.py on the CPU (--smoke): the step variants run and are restored afterwards, the
attention check passes, and a wrong attention makes it fail. No timing checks."""

import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_sasrec_step  # noqa: E402

from hstu_tutorial.modules import sasrec  # noqa: E402
from hstu_tutorial.ops import get_options  # noqa: E402

# the module (hstu_tutorial.ops exports a function of the same name)
hstu_attention = importlib.import_module("hstu_tutorial.ops.hstu_attention")


def test_smoke_variants_run_and_are_undone(tmp_path):
    assert bench_sasrec_step.main(["--smoke", "--rounds", "1", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "bench_sasrec_step.json").read_text())
    names = [r["variant"] for r in found["rows"]]
    assert names == [n for n, (_, _, compiled, *_) in bench_sasrec_step.VARIANTS.items() if not compiled]
    assert all(r["step_ms"] > 0 and r["mean_loss"] == r["mean_loss"] for r in found["rows"])
    model = sasrec.sasrec_encoder(20, embedding_dim=8, max_seq_len=6)
    with bench_sasrec_step.variant("fp32 attention, three projections", model):
        assert {b.attention_impl for b in model.blocks} == {"sdpa"} and "_project" in vars(model.blocks[0])
    assert {b.attention_impl for b in model.blocks} == {"sdpa"} and "_project" not in vars(model.blocks[0])
    with bench_sasrec_step.variant("bf16 attention, fused output half", model):
        assert get_options().fused_sasrec_output and {b.attention_impl for b in model.blocks} == {"sdpa-bf16"}
        assert not get_options().fused_sasrec_input
    with bench_sasrec_step.variant("bf16 attention, both halves fused", model):
        assert get_options().fused_sasrec_output and get_options().fused_sasrec_input
    with bench_sasrec_step.variant("bf16 attention", model):
        assert not get_options().fused_sasrec_output and not get_options().fused_sasrec_input
    assert get_options().fused_sasrec_output and get_options().fused_sasrec_input
    assert {b.attention_impl for b in model.blocks} == {"sdpa"}


def test_check_passes_and_catches_a_wrong_attention(monkeypatch):
    text, ok = bench_sasrec_step.check(torch.device("cpu"), 6, 20, 10)
    assert ok and text.count("PASS") == 2
    real = hstu_attention.fused_softmax_attention

    def no_scale(q, k, v, lengths, **kw):  # a classic slip: the 1/sqrt(d) left out
        return real(q, k, v, lengths, scale=1.0, **kw)

    monkeypatch.setattr(hstu_attention, "fused_softmax_attention", no_scale)
    text, ok = bench_sasrec_step.check(torch.device("cpu"), 6, 20, 10)
    assert not ok and "FAIL" in text
