"""benchmarks/attention_host_time.py on the CPU (--smoke): it times our kernel's host path, writes JSON +
Markdown, splits the host time by part, undoes its clock wrappers, and fails when a call changes its inputs.
No timing checks."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import attention_host_time  # noqa: E402
import torch  # noqa: E402

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha  # noqa: E402


def test_smoke_writes_rows_and_the_breakdown(tmp_path):
    launch, prepare, fn_dict = tha._launch, tha._prepare, dict(vars(tha._HSTUAttentionFunction))
    assert attention_host_time.main(["--smoke", "--breakdown", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "attention_host_time.json").read_text())
    (case,) = payload["cases"]
    ours, alone = case["rows"]
    assert ours["impl"] == "ours" and ours["inputs_unchanged"] and ours["host_ms"] > 0
    assert alone["impl"].startswith("autograd alone")
    split = case["breakdown"]
    assert {"launch fwd", "launch dkdv", "launch dq", "Function.forward", "Function.backward"} <= set(split)
    assert split["whole call"] >= split["Function.backward"] >= split["launch dkdv"] > 0
    assert "| jagged-32 | ours |" in (tmp_path / "attention_host_time.md").read_text()
    # the clock wrappers are gone again
    assert tha._launch is launch and tha._prepare is prepare
    assert vars(tha._HSTUAttentionFunction)["forward"] is fn_dict["forward"]
    assert vars(tha._HSTUAttentionFunction)["backward"] is fn_dict["backward"]


def test_smoke_fails_when_a_call_changes_its_inputs(tmp_path, monkeypatch):
    real = attention_host_time.implementations

    def scribbling(official_dir):
        impls = real(official_dir)
        ours = impls["ours"]

        def f(q, k, v, offsets, alpha, n):
            with torch.no_grad():
                k.add_(1.0)  # a kernel that writes into an input
            return ours(q, k, v, offsets, alpha, n)

        return {"ours": f}

    monkeypatch.setattr(attention_host_time, "implementations", scribbling)
    assert attention_host_time.main(["--smoke", "--out", str(tmp_path)]) == 1
    assert "| False |" in (tmp_path / "attention_host_time.md").read_text()
