"""benchmarks/profile_step.py on the CPU: it times a step and an evaluation and lists the busiest ops."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_step  # noqa: E402


def test_profile_run_reports_step_eval_and_top_ops(tmp_path):
    overrides = {
        "progress": "false",
        "tensorboard": "false",
        "save_checkpoints": "false",
        "exp_dir": str(tmp_path),
    }
    r = profile_step.profile_run("sasrec", profile_step.CPU_CONFIGS["sasrec"], overrides, top=5)
    assert r["eager_step_ms"] > 0 and r["eval_ms"] > 0 and set(r["eval_split_ms"]) == {"valid", "test"}
    assert "graph_step_ms" not in r  # no CUDA graph on a CPU
    assert 0 < len(r["step_kernels"]) <= 5 and r["step_kernel_ms"] > 0
    shares = [k["share"] for k in r["step_kernels"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-9
    md = profile_step.markdown([r], {"device": "CPU", "torch": "x", "date_utc": "today"})
    assert "| sasrec |" in md and "step kernels" in md
