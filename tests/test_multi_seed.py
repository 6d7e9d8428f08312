"""`--seeds`: several seeds in one process give each seed's own results, and the summary's mean ± std."""

import json
import math
import statistics

import pytest
import torch
from tiny_runs import TINY_SETS, cli_fails, set_args

from hstu_tutorial.errors import ConfigError, HSTUError
from hstu_tutorial.training import multi_seed
from hstu_tutorial.training.cli import main
from hstu_tutorial.training.multi_seed import parse_seeds, seeds_summary, train_seeds
from hstu_tutorial.training.trainer import Trainer, train

torch.set_num_threads(2)

TINY = ["num_epochs=2", *TINY_SETS]


def _same_history(a: list[dict], b: list[dict]):
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        assert ra["epoch"] == rb["epoch"] and ra["step"] == rb["step"]
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-6)
        for split in ("valid", "test"):
            assert ra[split].keys() == rb[split].keys()
            for k in ra[split]:
                assert ra[split][k] == pytest.approx(rb[split][k], abs=1e-6), (split, k)


def test_seeds_in_one_process_match_separate_runs(tmp_path):
    """`--seeds 1,2` gives each seed the history, best epoch and checkpoints of that seed run alone."""
    config = "synthetic/hstu-small"
    data = tmp_path / "data"
    common = [*TINY, f"data_dir={data}"]
    alone = tmp_path / "alone"
    for seed in (1, 2):
        sets = set_args(*common, f"exp_dir={alone}", f"seed={seed}", f"name=run-s{seed}")
        assert main(["--config", config, *sets]) == 0
    together = tmp_path / "together"
    assert (
        main(["--config", config, *set_args(*common, f"exp_dir={together}", "name=run"), "--seeds", "1,2"])
        == 0
    )
    for seed in (1, 2):
        a = json.loads((alone / "synthetic-l20" / f"run-s{seed}" / "results.json").read_text())
        b = json.loads((together / "synthetic-l20" / f"run-s{seed}" / "results.json").read_text())
        assert b["config"]["seed"] == seed and b["status"] == a["status"] == "completed"
        _same_history(a["history"], b["history"])
        assert a["best_by_valid"]["epoch"] == b["best_by_valid"]["epoch"]
        wa = torch.load(alone / "synthetic-l20" / f"run-s{seed}" / "ckpt_best.pt", weights_only=False)
        wb = torch.load(together / "synthetic-l20" / f"run-s{seed}" / "ckpt_best.pt", weights_only=False)
        for name, tensor in wa["model"].items():
            torch.testing.assert_close(wb["model"][name], tensor, rtol=0, atol=1e-6)
    # The two seeds really differ (the test would pass trivially if every seed trained the same run).
    h1 = json.loads((together / "synthetic-l20" / "run-s1" / "results.json").read_text())["history"]
    h2 = json.loads((together / "synthetic-l20" / "run-s2" / "results.json").read_text())["history"]
    assert h1[0]["loss"] != h2[0]["loss"]
    summary = json.loads((together / "synthetic-l20" / "run-seeds" / "seeds.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["statuses"] == {"1": "completed", "2": "completed"}
    assert (together / "synthetic-l20" / "run-seeds" / "seeds.md").read_text().startswith("# run: 2 seeds")


def test_summary_mean_and_std(tmp_path):
    """seeds.json's mean and sample standard deviation are those of the per-seed results.json numbers."""
    from hstu_tutorial.training.config import load_config

    cfg = load_config("synthetic/hstu-small", {**_dict(TINY), "data_dir": str(tmp_path / "d")})
    cfg.exp_dir = str(tmp_path / "exps")
    epochs_seen = []
    out = train_seeds(
        cfg, [3, 5, 7], verbose=False, callback=lambda i, r: epochs_seen.append((i, r["epoch"]))
    )
    s = out["summary"]
    runs = out["runs"]
    assert sorted(epochs_seen) == [
        (i, e) for i in range(3) for e in range(cfg.num_epochs)
    ]  # every seed's epochs
    for which, pick in (
        ("reference_protocol", lambda r: r["reference_protocol"]["test_mean"]),
        ("final", lambda r: r["reference_protocol"]["test_final"]),
        ("best_by_valid", lambda r: r["best_by_valid"]["test"]),
    ):
        for name in ("hr@10", "ndcg@10", "mrr"):
            values = [pick(r)[name] for r in runs]
            assert s["metrics"][which][name]["values"] == values
            assert s["metrics"][which][name]["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
            assert s["metrics"][which][name]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert len({r["history"][0]["loss"] for r in runs}) == 3  # three different runs
    md = (tmp_path / "exps" / "synthetic-l20" / "hstu-small-seeds" / "seeds.md").read_text()
    hr = s["metrics"]["reference_protocol"]["hr@10"]
    assert f"{hr['mean']:.4f} ± {hr['std']:.4f}" in md


def _dict(pairs):
    from hstu_tutorial.training.config import parse_overrides

    return parse_overrides(pairs)


def test_mean_std_by_hand():
    assert multi_seed.mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)))
    assert multi_seed.mean_std([0.3]) == (0.3, None)
    fake = [
        {"status": "completed", "epochs_run": 1, "reference_protocol": {"test_mean": {"hr@10": v},
         "test_final": {"hr@10": v}}, "best_by_valid": {"test": {"hr@10": v}}, "device": "cpu"}
        for v in (0.1, 0.3)
    ]  # fmt: skip
    from hstu_tutorial.training.config import TrainConfig

    s = seeds_summary(fake, [1, 2], TrainConfig(name="x"))
    assert s["metrics"]["final"]["hr@10"]["mean"] == pytest.approx(0.2)
    assert s["metrics"]["final"]["hr@10"]["std"] == pytest.approx(math.sqrt(0.02))


@pytest.mark.parametrize(
    "text, part",
    [("1,1", "seed 1 is given twice"), ("x", "'x' is not an integer"), ("1,,2", "'' is not an integer")],
)
def test_parse_seeds_errors(text, part):
    with pytest.raises(ConfigError, match=part):
        parse_seeds(text)


def test_parse_seeds():
    assert parse_seeds("42,1, 2,3") == [42, 1, 2, 3]
    assert parse_seeds("7") == [7]


@pytest.mark.parametrize(
    "seeds, part", [("1,1", "given twice"), ("x", "not an integer"), ("3,oops", "'oops' is not an integer")]
)
def test_cli_bad_seeds(capsys, tmp_path, seeds, part):
    cli_fails(
        capsys, ["--config", "synthetic/hstu-small", "--seeds", seeds, *set_args(f"exp_dir={tmp_path}")], part
    )
    assert not any(tmp_path.iterdir())  # no run folder made


def test_cli_seeds_with_resume(capsys, tmp_path):
    argv = ["--config", "synthetic/hstu-small", "--seeds", "1,2", "--resume", str(tmp_path / "r")]
    cli_fails(capsys, argv, "--seeds", "--resume")


def test_failing_seed_saves_the_others(tmp_path, monkeypatch):
    """A seed that fails stops the others, which save a resumable checkpoint; the error names the seed."""
    from hstu_tutorial.training.config import load_config

    cfg = load_config("synthetic/hstu-small", {**_dict(TINY), "data_dir": str(tmp_path / "d")})
    cfg.exp_dir = str(tmp_path / "exps")
    real_step = Trainer.step

    def step(self, *args, **kwargs):
        if self.cfg.seed == 2 and self.global_step == 3:
            raise FloatingPointError("loss is nan (injected)")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(RuntimeError, match=r"seed 2 failed: FloatingPointError: loss is nan") as info:
        train_seeds(cfg, [1, 2, 3], verbose=False)
    assert "s1, s3" in str(info.value)
    root = tmp_path / "exps" / "synthetic-l20"
    # Round-robin: seed 1 had run its 4th step when seed 2 failed in its 4th, seed 3 its 3rd.
    for seed, steps in ((1, 4), (3, 3)):
        res = json.loads((root / f"hstu-small-s{seed}" / "results.json").read_text())
        assert res["status"] == "interrupted"
        state = torch.load(root / f"hstu-small-s{seed}" / "ckpt_last.pt", weights_only=False)
        assert state["global_step"] == steps
    assert not (root / "hstu-small-seeds").exists()


def test_interrupt_stops_every_seed(tmp_path, monkeypatch):
    """Ctrl-C (as seen by one seed's loop) stops every seed after its step, each saving ckpt_last.pt."""
    from hstu_tutorial.training.config import load_config

    cfg = load_config("synthetic/hstu-small", {**_dict(TINY), "data_dir": str(tmp_path / "d")})
    cfg.exp_dir = str(tmp_path / "exps")
    real_step = Trainer.step

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        if self.cfg.seed == 1 and self.global_step == 5:
            self._interrupted = True  # what the Ctrl-C handler does
        return out

    monkeypatch.setattr(Trainer, "step", step)
    out = train_seeds(cfg, [1, 2], verbose=False)
    assert [r["status"] for r in out["runs"]] == ["interrupted", "interrupted"]
    assert out["summary"]["statuses"] == {"1": "interrupted", "2": "interrupted"}
    root = tmp_path / "exps" / "synthetic-l20"
    for seed in (1, 2):
        assert (root / f"hstu-small-s{seed}" / "ckpt_last.pt").is_file()
    # Seed 2's checkpoint holds seed 2's RNG streams: resumed alone, it ends as seed 2 run straight through.
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = train(cfg, seed=2, name="hstu-small-s2", resume=str(root / "hstu-small-s2"), verbose=False)
    straight = train(cfg, seed=2, name="straight", verbose=False)
    assert resumed["status"] == straight["status"] == "completed"
    _same_history(resumed["history"], straight["history"])


def test_train_seeds_rejects_resume_and_repeats(tmp_path):
    from hstu_tutorial.training.config import TrainConfig

    with pytest.raises(HSTUError, match="--resume"):
        train_seeds(TrainConfig(resume=str(tmp_path)), [1, 2])
    with pytest.raises(ConfigError, match="each once"):
        train_seeds(TrainConfig(), [1, 1])
