"""The per-bucket analysis check (exercise 06) and the project check (exercise 07) against wrong solutions
and forged runs: each must fail and say why; the right answers (written two ways) and a real run pass."""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from check_helpers import _progress_file  # noqa: F401 (an autouse fixture)

from hstu_tutorial import analysis, checks, progress
from hstu_tutorial.metrics import item_popularity, metrics_from_ranks, popularity_ranks


def fails_with(check, *args, fragments=()):
    ok = check(*args)
    report = checks.last_report
    assert not ok, report
    for frag in fragments:
        assert frag in report, f"expected {frag!r} in: {report}"
    return report


# ---- per-bucket metrics (exercise 06) ---------------------------------------------------------------------


def learner(
    ranks_df,
    bucket_of,
    k=10,
    *,
    right=False,
    lowest=True,
    lt=False,
    le1=False,
    log=np.log2,
    offset=1.0,
    mask=True,
    denom="bucket",
    observed=False,
    fill0=False,
    digitize=False,
    keep=None,
):
    """A pandas solution the way a learner writes it; every switch off = correct."""
    column, edges = bucket_of
    df = ranks_df.copy()
    if keep is not None:
        df = df[keep(df)]
    if digitize:
        b = np.digitize(df[column], edges)  # i + 1 for edges[i] <= v < edges[i+1]: the mistake
        df = df[b < len(edges) - 1].assign(bucket=b[b < len(edges) - 1])
        df["bucket"] = pd.Categorical(df["bucket"], categories=range(len(edges) - 1))
    else:
        df["bucket"] = pd.cut(df[column], edges, right=right, include_lowest=lowest)
    rank = df["rank"]
    hit = rank < k if lt else (rank <= k + 1 if le1 else rank <= k)
    gain = 1.0 / log(rank + offset)
    df["hr"] = hit.astype(float)
    df["ndcg"] = np.where(hit, gain, 0.0) if mask else gain
    grp = df.groupby("bucket", observed=observed)
    out = pd.DataFrame({"users": grp.size(), f"hr@{k}": grp["hr"].mean(), f"ndcg@{k}": grp["ndcg"].mean()})
    if denom == "all":
        out[f"hr@{k}"] = grp["hr"].sum() / len(ranks_df)
        out[f"ndcg@{k}"] = grp["ndcg"].sum() / len(ranks_df)
    elif denom == "overall":
        out[f"hr@{k}"], out[f"ndcg@{k}"] = df["hr"].mean(), df["ndcg"].mean()
        out.loc[out["users"] == 0, [f"hr@{k}", f"ndcg@{k}"]] = np.nan
    return out.fillna(0.0) if fill0 else out


def loop_solution(ranks_df, bucket_of, k=10):
    """A correct solution without pandas grouping: a loop over the buckets, numpy masks."""
    column, edges = bucket_of
    v, r = ranks_df[column].to_numpy(), ranks_df["rank"].to_numpy().astype(float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (v >= lo) & (v < hi)
        hit = r[m] <= k
        rows.append(
            {
                "Users": int(m.sum()),
                f"HR@{k}": hit.mean() if m.any() else math.nan,
                f"NDCG@{k}": np.where(hit, 1 / np.log2(r[m] + 1), 0).mean() if m.any() else math.nan,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fn", [analysis.per_bucket_metrics, learner, loop_solution])
def test_per_bucket_right_answers_pass_and_tick_the_step(fn):
    assert checks.check_per_bucket(fn), checks.last_report
    assert progress.is_done("practice.analysis.per_bucket")


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"lt": True, "offset": 2.0}, "0-based ranks"),
        ({"lt": True}, "you used rank < K"),
        ({"le1": True}, "also counted rank K + 1"),
        ({"log": np.log}, "natural log"),
        ({"log": np.log10}, "log10"),
        ({"offset": 2.0}, "log2(rank + 2)"),
        ({"offset": 0.0}, "log2(rank)"),
        ({"mask": False}, "NDCG@K is 0 when rank > K"),
        ({"denom": "all"}, "number of ALL users"),
        ({"denom": "overall"}, "mean over all users"),
        ({"right": True}, "closed on the left"),
        ({"right": True, "lowest": False}, "first edge were dropped"),
        ({"digitize": True}, "bucket edges off by one"),
        ({"observed": True}, "A bucket without users is missing"),
        ({"fill0": True}, "NaN"),
        ({"keep": lambda df: df["rank"] <= 100}, "users dropped"),
    ],
)
def test_per_bucket_named_mistakes(kw, fragment):
    fails_with(checks.check_per_bucket, functools.partial(learner, **kw), fragments=(fragment,))
    assert not progress.is_done("practice.analysis.per_bucket")


def test_per_bucket_shape_inplace_and_stub():
    fails_with(
        checks.check_per_bucket, lambda df, b, k=10: {"users": 1}, fragments=("return a pandas DataFrame",)
    )
    fails_with(
        checks.check_per_bucket,
        lambda df, b, k=10: analysis.per_bucket_metrics(df, b, k).rename(columns={f"hr@{k}": "hit"}),
        fragments=("missing ['hr@10']",),
    )

    def inplace(ranks_df, bucket_of, k=10):
        ranks_df["hit"] = ranks_df["rank"] <= k
        return analysis.per_bucket_metrics(ranks_df, bucket_of, k)

    fails_with(checks.check_per_bucket, inplace, fragments=("Work on a copy",))

    def stub(ranks_df, bucket_of, k=10):
        raise NotImplementedError

    fails_with(checks.check_per_bucket, stub, fragments=(checks.NOT_ATTEMPTED,))


def test_reference_per_bucket_by_hand():
    df = pd.DataFrame({"history_length": [1, 10, 10, 25, 3], "rank": [1, 10, 11, 3, 7]})
    out = analysis.per_bucket_metrics(df, ("history_length", [1, 10, 20, math.inf]), k=10)
    assert list(out.index) == ["[1, 10)", "[10, 20)", "[20, inf)"]
    assert out["users"].tolist() == [2, 2, 1]
    assert out["hr@10"].tolist() == [1.0, 0.5, 1.0]
    assert out["ndcg@10"].iloc[0] == pytest.approx((1.0 + 1 / math.log2(8)) / 2)
    assert out["ndcg@10"].iloc[1] == pytest.approx(1 / math.log2(11) / 2)
    empty = analysis.per_bucket_metrics(df, ("history_length", [0, 1, 10, math.inf]), k=10)
    assert empty["users"].tolist() == [0, 2, 3] and math.isnan(empty["hr@10"].iloc[0])
    with pytest.raises(ValueError, match="outside"):
        analysis.per_bucket_metrics(df, ("history_length", [2, 10]), k=10)
    with pytest.raises(ValueError, match="1-based"):
        analysis.per_bucket_metrics(df.assign(rank=df["rank"] - 1), ("history_length", [0, math.inf]))


# ---- a trained run, shared by the project-check tests ------------------------------------------------------

FAST = dict(
    max_seq_len=20,
    num_negatives=32,
    batch_size=32,
    eval_batch_size=512,
    tensorboard=False,
    progress=False,
    device="cpu",
    verbose=False,
    timestamp_run_dir=False,
)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    from hstu_tutorial.train import train

    exp = tmp_path_factory.mktemp("exps")
    return train(
        "synthetic/hstu-small", dataset=dataset, num_epochs=2, learning_rate=3e-3, exp_dir=str(exp), **FAST
    )


def copy_run(run, tmp_path, drop=()):
    """A copy of the run folder (to edit), without the files in `drop`."""
    folder = tmp_path / "run"
    shutil.copytree(run["run_dir"], folder)
    for name in drop:
        (folder / name).unlink()
    return folder


def test_run_folder_has_ranks_and_fingerprint(run, dataset):
    from hstu_tutorial.data import dataset_fingerprint
    from hstu_tutorial.training.run_files import read_ranks, run_listing

    on_disk = json.loads((run["trainer"].run_dir / "results.json").read_text())
    assert on_disk["dataset_fingerprint"] == dataset_fingerprint(dataset) == run["dataset_fingerprint"]
    assert on_disk["rank_files"]["epoch"] == on_disk["best_by_valid"]["epoch"]
    for split in ("test", "valid"):
        ranks = read_ranks(run, split)
        assert list(ranks.columns) == ["user_id", "target_item_id", "history_length", "rank"]
        assert len(ranks) == len(dataset.split(split))
        got = metrics_from_ranks(torch.tensor(ranks["rank"].to_numpy()), (10,))
        for key in ("hr@10", "ndcg@10", "mrr"):
            assert got[key] == pytest.approx(run["best_by_valid"][split][key], abs=1e-12)
    listing = run_listing(run["run_dir"])
    assert "ranks_test.csv" in listing and "ranks_valid.csv" in listing and "results.json" in listing


def test_fingerprint_is_stable_and_tells_datasets_apart(dataset, tmp_path):
    from hstu_tutorial.data import dataset_fingerprint, get_reco_dataset

    again = get_reco_dataset(
        "synthetic", max_seq_len=20, data_dir=tmp_path, protocol="validation", verbose=False
    )
    assert dataset_fingerprint(again) == dataset_fingerprint(dataset)
    other = get_reco_dataset(
        "synthetic", max_seq_len=20, data_dir=tmp_path, protocol="validation", seed=1, verbose=False
    )
    longer = get_reco_dataset(
        "synthetic", max_seq_len=25, data_dir=tmp_path, protocol="validation", verbose=False
    )
    assert len({dataset_fingerprint(d) for d in (dataset, other, longer)}) == 3


def test_project_results_pass_for_the_run_its_folder_and_results_json(run, dataset, tmp_path):
    assert checks.check_project_results(run, dataset), checks.last_report
    assert progress.is_done("advanced.new_dataset")
    assert checks.check_project_results(run["run_dir"], dataset), checks.last_report
    assert checks.check_project_results(f"{run['run_dir']}/results.json", dataset), checks.last_report
    only_ranks = copy_run(run, tmp_path, drop=("ckpt_best.pt", "ckpt_last.pt"))
    assert checks.check_project_results(only_ranks, dataset), checks.last_report
    only_weights = copy_run(run, tmp_path / "w", drop=("ranks_test.csv",))
    assert checks.check_project_results(only_weights, dataset), checks.last_report
    assert checks.check_project_results({"HSTU": run, "HSTU again": only_ranks}, dataset), checks.last_report


def test_hand_typed_numbers_are_refused(run, dataset):
    pop = {"hr@10": 0.9, "ndcg@10": 0.5}
    fails_with(
        checks.check_project_results, {"HSTU": pop}, dataset, fragments=("numbers alone cannot be checked",)
    )
    fails_with(checks.check_project_results, pop, dataset, fragments=("not a run",))
    typed = {"name": "hstu", "config": {"model": "hstu"}, "best_by_valid": {"epoch": 0, "test": pop}}
    fails_with(checks.check_project_results, typed, dataset, fragments=("dataset_fingerprint",))
    typed["dataset_fingerprint"] = run["dataset_fingerprint"]
    fails_with(checks.check_project_results, typed, dataset, fragments=("cannot be recomputed",))
    # the old call: metrics and the baseline's metrics
    fails_with(checks.check_project_results, {"HSTU": pop}, pop, fragments=("numbers alone",))
    fails_with(checks.check_project_results, run, pop, fragments=("must be the dataset",))


def test_edited_numbers_are_refused(run, dataset, tmp_path):
    edited = {**run, "best_by_valid": {**run["best_by_valid"], "test": {**run["best_by_valid"]["test"]}}}
    edited["best_by_valid"]["test"]["hr@10"] += 0.05
    fails_with(
        checks.check_project_results, edited, dataset, fragments=("edited or typed by hand", "ranks_test")
    )
    for drop in ((), ("ranks_test.csv",)):  # judged by the saved ranks, then by the saved weights alone
        folder = copy_run(run, tmp_path / str(len(drop)), drop=drop)
        res = json.loads((folder / "results.json").read_text())
        res["best_by_valid"]["test"]["ndcg@10"] += 0.03
        (folder / "results.json").write_text(json.dumps(res))
        fails_with(checks.check_project_results, folder, dataset, fragments=("edited or typed by hand",))
    # ranks edited to match edited numbers: the saved weights still say otherwise
    folder = copy_run(run, tmp_path / "both")
    ranks = pd.read_csv(folder / "ranks_test.csv")
    ranks["rank"] = 1
    ranks.to_csv(folder / "ranks_test.csv", index=False)
    res = json.loads((folder / "results.json").read_text())
    res["best_by_valid"]["test"].update(metrics_from_ranks(torch.tensor(ranks["rank"].to_numpy()), (10,)))
    (folder / "results.json").write_text(json.dumps(res))
    fails_with(checks.check_project_results, folder, dataset, fragments=("ckpt_best.pt", "edited"))


def test_a_run_on_another_dataset_is_refused(run, tmp_path):
    from hstu_tutorial.data import get_reco_dataset

    other = get_reco_dataset(
        "synthetic", max_seq_len=20, data_dir=tmp_path, protocol="validation", seed=1, verbose=False
    )
    fails_with(checks.check_project_results, run, other, fragments=("other data (fingerprint",))


def test_the_baseline_passed_as_the_model_is_refused(run, dataset, tmp_path):
    # a results.json claiming a "popularity" model
    folder = copy_run(run, tmp_path / "cfg", drop=("ckpt_best.pt",))
    res = json.loads((folder / "results.json").read_text())
    res["config"]["model"] = "popularity"
    (folder / "results.json").write_text(json.dumps(res))
    fails_with(checks.check_project_results, folder, dataset, fragments=("not one of ['hstu', 'sasrec']",))
    # the popularity ranks and numbers written into a real run's files (no weights to contradict them)
    folder = copy_run(run, tmp_path / "pop", drop=("ckpt_best.pt",))
    base = popularity_ranks(dataset, "test")
    ranks = pd.read_csv(folder / "ranks_test.csv")
    ranks["rank"] = base.numpy()
    ranks.to_csv(folder / "ranks_test.csv", index=False)
    res = json.loads((folder / "results.json").read_text())
    res["best_by_valid"]["test"].update(metrics_from_ranks(base, (10,)))
    (folder / "results.json").write_text(json.dumps(res))
    fails_with(checks.check_project_results, folder, dataset, fragments=("popularity baseline's ranks",))


def test_a_run_that_does_not_beat_the_baseline_is_refused(dataset, tmp_path):
    from hstu_tutorial.train import train

    weak = train(
        "synthetic/hstu-small",
        dataset=dataset,
        num_epochs=1,
        learning_rate=1e-7,
        exp_dir=str(tmp_path),
        **FAST,
    )
    fails_with(
        checks.check_project_results, weak, dataset, fragments=("does not beat the popularity baseline",)
    )
    assert not progress.is_done("advanced.new_dataset")


def test_target_popularity_buckets_from_a_run(run, dataset):
    from hstu_tutorial.training.run_files import read_ranks

    ranks = analysis.with_target_popularity(read_ranks(run), item_popularity(dataset, "train"))
    edges = analysis.quantile_edges(ranks["target_popularity"])
    table = analysis.per_bucket_metrics(ranks, ("target_popularity", edges), k=10)
    assert table["users"].sum() == len(ranks)
    overall = (table["hr@10"].fillna(0) * table["users"]).sum() / len(ranks)
    assert overall == pytest.approx(run["best_by_valid"]["test"]["hr@10"])


def test_rank_files_of_a_resumed_run_come_from_ckpt_best(run, tmp_path):
    # a resumed run no longer holds the best epoch's ranks in memory: they are recomputed from ckpt_best.pt
    from hstu_tutorial.training.run_files import read_ranks, write_run_files

    trainer = run["trainer"]
    folder = copy_run(run, tmp_path)
    saved_dir, saved_ranks = trainer.run_dir, trainer.best_ranks
    try:
        trainer.run_dir, trainer.best_ranks = folder, None
        (folder / "ranks_test.csv").unlink()
        results = dict(run)
        write_run_files(trainer, results)
    finally:
        trainer.run_dir, trainer.best_ranks = saved_dir, saved_ranks
    assert results["rank_files"]["weights"] == "best by validation (ckpt_best.pt)"
    assert read_ranks(folder).equals(read_ranks(run))
