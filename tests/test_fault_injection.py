"""Fault injection: kill -9 a small CPU training run at random moments, resume it, and get the same run.

The trainer writes `ckpt_last.pt` atomically after every epoch, so a hard kill loses at most the epoch in
progress, and a resumed run must reproduce an uninterrupted one exactly: every epoch's loss, validation
and test metrics. The runs go through the command line (`python -m hstu_tutorial.train`) in a subprocess,
as a learner would start them; the kill moments are drawn from a seeded generator.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import TINY_SETS

pytestmark = pytest.mark.slow

KILLS = 3  # kills tried; each is followed by one resume
EPOCHS = 8
# the command-line tests' tiny run (a later --set of a key wins), with more steps per epoch (more moments to
# kill in) and TensorBoard on, as a learner's run has it
TINY = [f"num_epochs={EPOCHS}", *TINY_SETS, "batch_size=32", "tensorboard=true", "name=fault"]


def _command(exp_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "hstu_tutorial.train", "--config", "synthetic/hstu-small"]
    for item in [*TINY, f"exp_dir={exp_dir}", f"data_dir={data_dir}"]:
        cmd += ["--set", item]
    return cmd + list(extra)


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # two small processes never fight over the cores
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_dir(exp_dir: Path) -> Path:
    return exp_dir / "synthetic-l20" / "fault"


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())


def _finish(proc: subprocess.Popen, log: Path) -> None:
    rc = proc.wait(timeout=120)
    assert rc == 0, f"exit status {rc}; output:\n{log.read_text()[-3000:]}"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    """Poll until `path` exists (the run folder appears once setup is done); returns the moment."""
    t0 = time.perf_counter()
    while not path.exists():
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            return float("nan")
        time.sleep(0.005)
    return time.perf_counter()


def _epochs_printed(log: Path) -> int:
    """How many epochs a run reported finished: its last `epoch k/E:` line (printed in a log, not a TTY)."""
    found = re.findall(r"\] epoch (\d+)/\d+:", log.read_text())
    return int(found[-1]) if found else 0


def _epochs(run_dir: Path) -> list[dict]:
    """Per-epoch numbers that must not depend on interruptions (no timings)."""
    hist = json.loads((run_dir / "results.json").read_text())["history"]
    return [{k: r[k] for k in ("epoch", "step", "loss", "valid", "test")} for r in hist]


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_run(tmp_path):
    data_dir = tmp_path / "data"
    # The uninterrupted run (it also generates the synthetic data once, before any timing).
    base = tmp_path / "straight"
    log = tmp_path / "straight.log"
    proc = _start(_command(base, data_dir), log)
    _wait_for(_run_dir(base), proc)
    _finish(proc, log)
    expected = _epochs(_run_dir(base))
    # The kills land while epochs run: the run folder appears just before the first epoch starts.
    epochs_s = json.loads((_run_dir(base) / "results.json").read_text())["timing"]["train_eval_s"]
    assert [r["epoch"] for r in expected] == list(range(EPOCHS))

    rng = random.Random(2026)
    survived, tried, lines = 0, 0, []
    for i in range(KILLS):
        exp = tmp_path / f"killed{i}"
        log = tmp_path / f"killed{i}.log"
        run_dir = _run_dir(exp)
        proc = _start(_command(exp, data_dir), log)
        delay = (0.1 + 0.8 * (i + rng.random()) / KILLS) * epochs_s  # one kill in each slice of the run
        _wait_for(run_dir, proc)
        time.sleep(delay)
        if proc.poll() is not None:  # finished before the kill landed (a fast machine): not a kill
            _finish(proc, log)
            lines.append(f"kill {i}: run finished before {delay:.2f} s, not counted")
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        tried += 1
        done = _epochs_printed(log)  # epochs the killed run reported finished (each after its checkpoint)
        ckpt = run_dir / "ckpt_last.pt"
        if ckpt.exists():
            import torch

            at = torch.load(ckpt, weights_only=True)["epoch"]
            resume = ["--resume", str(run_dir)]
        else:  # killed inside epoch 0: nothing written yet, nothing more than that epoch lost
            at, resume = 0, []
        assert at >= done, f"kill {i}: {done} epochs were reported done but the checkpoint is at epoch {at}"
        proc = _start(_command(exp, data_dir, *resume), log)
        _finish(proc, log)
        same = _epochs(run_dir) == expected
        survived += same
        verdict = "same" if same else "DIFFERENT"
        lines.append(f"kill {i}: -9 at {delay:.2f} s, {done} epochs done, resumed at epoch {at}: {verdict}")
    print("\n".join(lines))
    print(f"fault injection: {survived}/{tried} kills survived (per-epoch loss and metrics identical)")
    assert tried >= KILLS - 1, lines  # at most one kill may miss a run that ended early
    assert survived == tried, lines
