"""benchmarks/trace_setup.py on the CPU: the timeline of a tiny synthetic run has every phase. No timing checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_trace_setup_prints_the_phases_of_a_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "trace_setup.py"), "--config", "synthetic/hstu-small",
        "--data-dir", str(tmp_path / "data"), "--set", "num_epochs=1", "--set", f"exp_dir={tmp_path / 'exps'}",
        "--set", "max_seq_len=20", "--set", "batch_size=64", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "out" / "trace_setup.md").read_text()
    for phase in (
        "import torch",
        "Trainer.__init__",
        "Trainer._start",
        "epoch 0 (train + eval)",
        "fit (all epochs)",
    ):
        assert f"| {phase}" in table, phase
    assert "launcher started: False" in table  # no GPU here: nothing is compiled ahead
    assert "Process start to end:" in table and "(exit 0)" in table
