"""benchmarks/bench_loss_rows.py, bench_eval_graph.py and bench_eval_last.py on the CPU (--smoke): they run both variants through
the trainer's own code, write JSON + Markdown, and the evaluation's ranks agree. No timing checks."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_eval_graph  # noqa: E402
import bench_eval_last  # noqa: E402
import bench_loss_rows  # noqa: E402


def test_loss_rows_smoke_times_both_variants(tmp_path):
    assert bench_loss_rows.main(["--smoke", "--models", "sasrec", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench_loss_rows.json").read_text())["rows"]
    assert row["model"] == "sasrec" and not row["graph"]
    for variant in ("with budget", "all positions"):
        assert row[variant]["step_ms"] > 0
    assert 0 < row["padded_share"] < 1
    assert "| sasrec |" in (tmp_path / "bench_loss_rows.md").read_text()


def test_loss_rows_smoke_accuracy_of_both_variants(tmp_path):
    out = tmp_path / "out"
    argv = ["--smoke", "--models", "hstu", "--accuracy", "1", "--exp-dir", str(tmp_path / "exps")]
    assert bench_loss_rows.main(argv + ["--out", str(out)]) == 0
    (row,) = json.loads((out / "bench_loss_rows_accuracy.json").read_text())["rows"]
    # on a CPU there is no graph, hence no budget: both variants are the same run, to the bit
    assert row["with budget"]["per_seed"] == row["all positions"]["per_seed"]
    assert "| 1 |" in (out / "bench_loss_rows_accuracy.md").read_text()


def test_eval_graph_smoke_same_ranks(tmp_path):
    assert bench_eval_graph.main(["--smoke", "--models", "hstu", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench_eval_graph.json").read_text())["rows"]
    assert row["ranks_differing"] == 0 and row["comparisons"] > 0 and not row["graph"]


def test_eval_last_smoke_same_ranks_both_models(tmp_path):
    assert bench_eval_last.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_eval_last.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["hstu", "sasrec"]
    for r in rows:
        assert r["query_max_abs_diff"] < 1e-5 and r["ranks_differing"] == {"last": 0, "trainer": 0}
        assert r["metrics"]["full"] == r["metrics"]["last"]
    assert "PASS" in (tmp_path / "bench_eval_last.md").read_text()


def test_eval_last_verdict_fails_above_the_tolerance(tmp_path, monkeypatch):
    real = bench_eval_last.measure

    def off_by(model, args):  # the shortcut's queries off by twice the tolerance
        row = real(model, args)
        return {**row, "query_max_abs_diff": 2 * args.tol}

    monkeypatch.setattr(bench_eval_last, "measure", off_by)
    assert bench_eval_last.main(["--smoke", "--models", "sasrec", "--out", str(tmp_path)]) == 1
    assert "FAIL" in (tmp_path / "bench_eval_last.md").read_text()


def test_loss_rows_smoke_check_passes_and_writes_its_table(tmp_path):
    argv = ["--smoke", "--check", "--check-batches", "2", "--out", str(tmp_path)]
    assert bench_loss_rows.main(argv) == 0
    rows = json.loads((tmp_path / "bench_loss_rows_check.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"hstu", "sasrec"}
    assert all(r["inputs_unchanged"] and r["batches"] == 2 for r in rows)
    assert "PASS" in (tmp_path / "bench_loss_rows_check.md").read_text()


def test_loss_rows_smoke_fallback_runs_and_writes_its_table(tmp_path):
    argv = ["--smoke", "--fallback", "--models", "hstu", "--exp-dir", str(tmp_path / "exps")]
    assert bench_loss_rows.main(argv + ["--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench_loss_rows_fallback.json").read_text())["rows"]
    # no graph on a CPU: no budget, no eager steps; the run itself and its bookkeeping still go through
    assert row["status"] == "completed" and row["finite"] and not row["graph"]
    assert row["host_counts_wrong"] == 0 and len(row["train_loss"]) == row["epochs"] == 2
    assert "PASS" in (tmp_path / "bench_loss_rows_fallback.md").read_text()


def test_fallback_verdict_fails_on_every_kind_of_fault():
    good = {"graph": True, "status": "completed", "eager_steps_above_budget": 35, "host_count_above_budget": 35,
            "host_counts_wrong": 0, "finite": True}  # fmt: skip
    assert bench_loss_rows._fallback_ok(good)
    for fault in (
        {"status": "failed"},  # the overflow guard stopped the run
        {"eager_steps_above_budget": 0, "host_count_above_budget": 0},  # nothing ran eagerly: not tested
        {"eager_steps_above_budget": 34},  # a batch above the budget was replayed
        {"host_counts_wrong": 1},  # the host's counts are not the batches' counts
        {"finite": False},
    ):
        assert not bench_loss_rows._fallback_ok({**good, **fault}), fault
