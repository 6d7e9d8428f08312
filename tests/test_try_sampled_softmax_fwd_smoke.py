"""benchmarks/try_sampled_softmax_fwd.py on the CPU (--smoke): the forward variants agree with the package's
kernel, and a variant that drops a negative makes the script fail. No timing checks."""

import json

from benchmarks import try_sampled_softmax_fwd as tsf


def test_smoke_variants_match_the_package(tmp_path):
    assert tsf.main(["--smoke", "--iters", "1", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "try_sampled_softmax_fwd.json").read_text())
    rows = payload["rows"]
    assert {r["variant"] for r in rows} == {"package", "deferred", "deferred+prefetch"}
    assert all(r["ok"] for r in rows) and payload["inputs_unchanged"]


def test_smoke_fails_when_a_variant_is_wrong(tmp_path, monkeypatch):
    real = tsf.run_variant

    def off(variant, inp, want_dq, block_r, warps, interp):
        loss, lse, scores, dq1 = real(variant, inp, want_dq, block_r, warps, interp)
        if variant == "deferred":  # as if the last negative were never read
            scores = scores.clone()
            scores[:, -1] = float("-inf")
        return loss, lse, scores, dq1

    monkeypatch.setattr(tsf, "run_variant", off)
    assert tsf.main(["--smoke", "--iters", "1", "--out", str(tmp_path)]) == 1
    rows = json.loads((tmp_path / "try_sampled_softmax_fwd.json").read_text())["rows"]
    assert not any(r["ok"] for r in rows if r["variant"] == "deferred")
    assert all(r["ok"] for r in rows if r["variant"] == "package")
