"""benchmarks/bench_sampled_softmax.py on the CPU (--smoke, Triton interpreter): every row is there, the kernels
agree with float64, and a wrong kernel makes the script fail. No timing checks."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_sampled_softmax  # noqa: E402

import hstu_tutorial.ops.triton.sampled_softmax as tss  # noqa: E402


def test_smoke_run_and_a_wrong_kernel(tmp_path, monkeypatch):
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        assert bench_sampled_softmax.main(["--smoke", "--out", str(tmp_path)]) == 0
        assert torch.backends.cuda.matmul.allow_tf32 is False  # the process's switch is left as it was
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    found = json.loads((tmp_path / "bench_sampled_softmax.json").read_text())
    what = [r["what"] for r in found["rows"]]
    assert what.count("forward") == 2 and found["inputs_unchanged"] and found["worst_err"] < 1e-5
    assert {f"forward + backward, {b}" for b in tss.BACKWARDS if b != "segments"} <= set(what)
    assert sum(w.startswith("forward + backward, segments (BLOCK_N") for w in what) == 2  # its tiles
    assert {"whole loss, impl=fused", "whole loss, impl=dense"} <= set(what)
    assert all(r["ms"] > 0 for r in found["rows"])
    real = tss.triton_sampled_softmax
    monkeypatch.setattr(tss, "triton_sampled_softmax", lambda *a, **k: real(*a, **k) * 1.01)
    assert bench_sampled_softmax.main(["--smoke", "--out", str(tmp_path / "wrong")]) == 1
