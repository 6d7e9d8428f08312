"""benchmarks/try_tma_forward.py on the CPU (--smoke): both stripped forwards (pointer and TMA loads) agree with
the package's forward on jagged and dense cases, and a wrong one makes the script fail. No timing checks."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import try_tma_forward  # noqa: E402

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha  # noqa: E402

pytestmark = pytest.mark.skipif(
    tha.TensorDescriptor is None, reason="this Triton has no host TMA descriptors"
)


def test_smoke_both_loads_match_the_package(tmp_path):
    assert try_tma_forward.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "try_tma_forward.json").read_text())["rows"]
    assert {r["case"] for r in rows} == {"jagged-64", "dense-64"}
    for r in rows:
        assert r["pointer_err"] < 1e-5 and r["tma_err"] < 1e-5 and r["inputs_unchanged"]


def test_smoke_fails_on_a_wrong_kernel(tmp_path, monkeypatch):
    real = try_tma_forward.forward

    def wrong(q, k, v, offsets, n, config, tma):  # the TMA variant drops the last sequence's keys
        out = real(q, k, v, offsets, n, config, tma)
        return (
            out
            if not tma
            else torch.cat([out[: int(offsets[-2])], torch.zeros_like(out[int(offsets[-2]) :])])
        )

    monkeypatch.setattr(try_tma_forward, "forward", wrong)
    assert try_tma_forward.main(["--smoke", "--out", str(tmp_path)]) == 1
    assert "FAIL" in (tmp_path / "try_tma_forward.md").read_text()
