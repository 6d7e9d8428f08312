"""hstu_tutorial.results and benchmarks/collect_ml1m_results.py: the saved-results pipeline on synthetic data."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hstu_tutorial import results as R
from hstu_tutorial.results.text import silu_roots

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "collect_ml1m_results", ROOT / "benchmarks/collect_ml1m_results.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole script, --smoke: synthetic data, 2 epochs, 2 seeds, CPU."""
    out = tmp_path_factory.mktemp("smoke")
    _script().main(["--smoke", "--out", str(out)])
    return out


def test_bucket_table_by_hand():
    per_user = pd.DataFrame(
        {
            "history_length": [5, 20, 21, 150, 199],
            "target_item_id": [1, 2, 3, 1, 2],
            "rank": [1, 11, 3, 10, 200],
        }
    )
    popularity = np.array([0, 7, 3, 1])  # training counts of items 0..3
    t = R.bucket_table(per_user, popularity, k=10, num_popularity_buckets=2)
    by_len = t[t["kind"] == "history_length"].set_index("bucket")
    assert list(by_len.index) == ["(0, 20]", "(20, 50]", "(100, 200]"]  # (50, 100] is empty: left out
    assert by_len["users"].tolist() == [2, 1, 2]
    assert by_len.loc["(0, 20]", "hr@10"] == 0.5  # ranks 1 and 11
    assert by_len.loc["(20, 50]", "ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert by_len.loc["(100, 200]", "ndcg@10"] == pytest.approx(0.5 / math.log2(11))
    by_pop = t[t["kind"] == "target_popularity"]
    assert by_pop["users"].sum() == 5  # every user in one popularity bucket, the lowest count included
    assert by_pop["bucket"].iloc[0].startswith("[1,")


def _bucket_rows_by_masks(per_user, popularity, k, length_edges, num_popularity_buckets):
    """What bucket_table must give, straight from its definition: a boolean mask per (lo, hi] bucket."""
    rank = per_user["rank"].to_numpy()
    counts = np.asarray(popularity)[per_user["target_item_id"].to_numpy()]
    kinds = {
        "history_length": (per_user["history_length"].to_numpy(), [float(e) for e in length_edges]),
        "target_popularity": (counts, R.popularity_edges(counts, num_popularity_buckets)),
    }
    rows = []
    for kind, (values, edges) in kinds.items():
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = (values > lo) & (values <= hi)
            if i == 0 and kind == "target_popularity":
                inside = inside | (values == lo)
            if inside.any():
                r = rank[inside]
                rows.append(
                    (
                        kind,
                        lo,
                        hi,
                        int(inside.sum()),
                        np.mean(r <= k),
                        np.mean(np.where(r <= k, 1 / np.log2(r + 1.0), 0)),
                    )
                )
    return rows


@pytest.mark.parametrize("seed", range(12))
def test_bucket_table_matches_its_definition_on_random_users(seed):
    # one implementation of the per-bucket means (analysis.per_bucket_metrics) behind bucket_table: same
    # users in each (lo, hi] bucket as the definition, ties on edges, non-integer quantile edges, users outside
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(1, 300)), int(rng.integers(2, 60))
    per_user = pd.DataFrame(
        {
            "history_length": rng.choice(
                [0, 1, 20, 21, 50, 99, 100, 200, 201, *rng.integers(0, 260, 20)], n_users
            ),
            "target_item_id": rng.integers(0, n_items, n_users),
            "rank": rng.integers(1, 40, n_users),
        }
    )
    popularity = rng.integers(0, int(rng.choice([2, 5, 1000])), n_items)
    buckets = int(rng.integers(1, 7))
    t = R.bucket_table(per_user, popularity, k=10, num_popularity_buckets=buckets)
    want = _bucket_rows_by_masks(per_user, popularity, 10, R.LENGTH_EDGES, buckets)
    assert len(t) == len(want)
    for (_, row), (kind, lo, hi, users, hr, ndcg) in zip(t.iterrows(), want):
        assert (row["kind"], row["lo"], row["hi"], row["users"]) == (kind, lo, hi, users)
        assert row["hr@10"] == pytest.approx(hr, abs=1e-12) and row["ndcg@10"] == pytest.approx(
            ndcg, abs=1e-12
        )


def test_per_bucket_metrics_closed_on_the_right():
    from hstu_tutorial import analysis

    df = pd.DataFrame({"x": [1, 2, 2, 3], "rank": [1, 20, 2, 5]})
    right = analysis.per_bucket_metrics(df, ("x", [0, 2, 3]), closed="right")
    assert list(right.index) == ["(0, 2]", "(2, 3]"] and right["users"].tolist() == [3, 1]
    left = analysis.per_bucket_metrics(df, ("x", [0, 2, 4]))
    assert list(left.index) == ["[0, 2)", "[2, 4)"] and left["users"].tolist() == [1, 3]
    with pytest.raises(ValueError, match=r"outside \(1, 3\]"):
        analysis.per_bucket_metrics(df, ("x", [1, 3]), closed="right")  # x = 1 is not in (1, 3]
    with pytest.raises(ValueError, match="closed"):
        analysis.per_bucket_metrics(df, ("x", [0, 4]), closed="both")


def test_silu_roots_and_floor():
    lo, hi = silu_roots(R.SILU_MIN / 2)
    silu = lambda x: x / (1 + math.exp(-x))  # noqa: E731
    assert lo < -1.278 < hi < 0
    assert silu(lo) == pytest.approx(R.SILU_MIN / 2, abs=1e-9) and silu(hi) == pytest.approx(
        R.SILU_MIN / 2, abs=1e-9
    )
    xs = torch.linspace(-10, 0, 100001)
    assert float(torch.nn.functional.silu(xs).min()) == pytest.approx(R.SILU_MIN, abs=1e-6)


@pytest.mark.slow
def test_smoke_files(smoke):
    assert sorted(p.name for p in smoke.iterdir()) == [
        "attention.json",
        "buckets.csv",
        "runs.json",
        "sampled_vs_full.json",
    ]
    runs = json.loads((smoke / "runs.json").read_text())["runs"]
    assert [(r["model"], r["seed"]) for r in runs] == [
        ("HSTU", 42),
        ("HSTU", 1),
        ("SASRec", 42),
        ("SASRec", 1),
    ]
    for r in runs:
        assert r["epochs_run"] == 2 and r["curves"]["epoch"] == [0, 1]
        assert set(r["curves"]) == {
            "epoch",
            "loss",
            "valid/hr@10",
            "valid/ndcg@10",
            "test/hr@10",
            "test/ndcg@10",
        }
        assert 0 <= r["reference_protocol"]["test_mean"]["hr@10"] <= 1
        assert r["machine"]["torch"] == torch.__version__
    # Two seeds of one model give different runs (the seed reaches the trainer).
    assert runs[0]["curves"]["loss"] != runs[1]["curves"]["loss"]
    buckets = pd.read_csv(smoke / "buckets.csv")
    assert list(buckets.columns) == [
        "model",
        "seed",
        "kind",
        "bucket",
        "lo",
        "hi",
        "users",
        "hr@10",
        "ndcg@10",
    ]
    # Aggregates only: one row per model x seed x bucket, each kind covering every test user once.
    users = buckets.groupby(["model", "seed", "kind"])["users"].sum()
    assert users.nunique() == 1 and len(buckets) < 100


@pytest.mark.slow
def test_smoke_attention_and_loss(smoke):
    att = json.loads((smoke / "attention.json").read_text())
    rec, summ = att["record"], att["summary"]
    assert [u["user_id"] for u in rec["users"]] == sorted(u["user_id"] for u in rec["users"]) and len(
        rec["users"]
    ) == 3
    for u in rec["users"]:
        maps = np.array(u["maps"])  # (layers, H, 12, 12)
        assert maps.shape[2:] == (12, 12) and len(u["items"]) == 12 and 15 <= u["history_length"] <= 60
        assert np.all(np.triu(maps, 1) == 0)  # causal: nothing above the diagonal
        assert np.all(maps >= R.SILU_MIN / rec["norm"] - 1e-7)  # SiLU(s)/n is never below its floor
    for layer in summ["layers"]:
        for h in layer["heads"]:
            assert 0 <= h["frac_below_half_silu_min"] <= h["frac_negative"] <= 1
            assert h["min"] >= summ["weight_floor"] - 1e-7
            assert sum(h["cells_by_distance"]) == h["cells"]
            # The distance means average back to the overall mean.
            total = sum(m * n for m, n in zip(h["mean_by_distance"], h["cells_by_distance"]))
            assert total / h["cells"] == pytest.approx(h["mean"], rel=1e-3, abs=1e-9)
    svf = json.loads((smoke / "sampled_vs_full.json").read_text())
    assert len(svf["sampled"]) == svf["draws"] == 20
    assert svf["sampled_mean"] < svf["full"]  # the sampled loss sees fewer competitors: always below


@pytest.mark.slow
def test_load_and_sentences(smoke, capsys):
    from hstu_tutorial import viz
    from hstu_tutorial.train import PAPER_ML1M

    r = R.load_ml1m_results(smoke)
    assert r.label.endswith("2 seeds") and r.date == R.DATE
    assert len(r.curves) == 4 * 2 and set(r.runs["model"]) == {"HSTU", "SASRec"}
    table = R.seed_table(r.runs, paper=PAPER_ML1M)
    assert "±" in table.iloc[0]["hr@10"] and len(table) == 4
    gaps = R.bucket_gaps(r.buckets)
    assert (gaps["gap"] == gaps["HSTU"] - gaps["SASRec"]).all()
    text = R.bucket_markdown(r.buckets)
    assert "history length" in text and f"{gaps['gap'].iloc[0]:+.3f}" in text
    assert "layer 0, head 0" in R.attention_markdown(r.attention["summary"])
    assert R.sampled_markdown(r.sampled_vs_full, "synthetic").count("**") == 4
    fig, _ = viz.plot_seed_curves(r.curves, label=r.label)
    fig, _ = viz.plot_bucket_bars(r.buckets)
    fig, d = viz.plot_saved_attention(r.attention["record"]["users"][0])
    assert d["maps"].shape[-1] == 12


def test_missing_folder_is_one_line(tmp_path, capsys):
    assert R.load_ml1m_results(tmp_path / "nothing") is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no saved GPU results" in out
