"""benchmarks/bench_loss.py on the CPU (--smoke): every variant agrees with the unpadded loss, the inputs come back
unchanged, and the trainer's step runs with both losses. No timing checks."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_loss  # noqa: E402


def test_bench_loss_smoke(tmp_path):
    assert bench_loss.main(["--smoke", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "bench_loss.json").read_text())
    assert found["inputs_unchanged"]
    assert {r["variant"] for r in found["rows"]} == set(bench_loss.VARIANTS)
    assert all(
        r["ms"] > 0 and r["dtable_rel_diff"] < 1e-5 and r["dquery_rel_diff"] < 1e-5 for r in found["rows"]
    )
    assert {s["model"] for s in found["steps"]} == {"hstu", "sasrec"}
    for variant in bench_loss.STEP_VARIANTS:
        assert all(s[f"{variant}_step_ms"] > 0 and s[f"{variant}_mean_loss"] > 0 for s in found["steps"])
    assert not any(s["errors"] for s in found["steps"]) and not any(r["error"] for r in found["rows"])
    assert "| dense, padded |" in (tmp_path / "bench_loss.md").read_text()


def test_gemm_align_context_restores_the_setting():
    before = bench_loss.losses.GEMM_ALIGN
    try:
        with bench_loss.gemm_align(1):
            assert bench_loss.losses.GEMM_ALIGN == 1
            raise RuntimeError
    except RuntimeError:
        pass
    assert bench_loss.losses.GEMM_ALIGN == before


def test_bench_loss_leaves_the_tf32_switches_as_it_found_them(tmp_path):
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        bench_loss.main(["--smoke", "--out", str(tmp_path)])
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_loss_setting_switches_both_knobs_and_restores_them():
    losses = bench_loss.losses
    before = losses.GEMM_ALIGN, losses.SMALL_CATALOGUE_IMPL
    with bench_loss.loss_setting(1, "sparse"):
        assert (losses.GEMM_ALIGN, losses.SMALL_CATALOGUE_IMPL) == (1, "sparse")
    with bench_loss.loss_setting(None, "dense"):
        assert losses.GEMM_ALIGN == before[0]
    assert (losses.GEMM_ALIGN, losses.SMALL_CATALOGUE_IMPL) == before


def test_loss_setting_switches_the_fused_loss_option():
    from hstu_tutorial.ops import get_options

    before = get_options().fused_loss, bench_loss.losses.SMALL_CATALOGUE_IMPL
    with bench_loss.loss_setting(None, "fused"):
        assert get_options().fused_loss and bench_loss.losses.SMALL_CATALOGUE_IMPL == before[1]
    with bench_loss.loss_setting(None, "dense"):
        assert not get_options().fused_loss
    assert (get_options().fused_loss, bench_loss.losses.SMALL_CATALOGUE_IMPL) == before
