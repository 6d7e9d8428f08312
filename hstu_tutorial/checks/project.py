"""Checks of exercise 07 (the open project): reading a new ratings file, the final results of a run."""

from __future__ import annotations

from collections.abc import Callable

from ._common import (
    CheckFailed,
    _case_text,
    _reference,
    _run,
)


def _write_ml100k_folder(folder, ratings) -> None:
    """u.data from `ratings` plus minimal u.item / u.user, so the package's ML-100K reader can read it."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ratings[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False)
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    (folder / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1")
    flags = "|".join(["0"] * 18 + ["1"])
    items = sorted(set(int(i) for i in ratings["item_id"]))
    (folder / "u.item").write_text(
        "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://example.org|{flags}\n" for i in items),
        encoding="latin-1",
    )
    users = sorted(set(int(u) for u in ratings["user_id"]))
    (folder / "u.user").write_text("".join(f"{u}|30|M|other|00000\n" for u in users), encoding="latin-1")


def check_ratings_table(fn: Callable) -> bool:
    """Check `fn(path) -> ratings_df` reading an ML-100K style `u.data` file (tab-separated
    `user id, item id, rating, timestamp`, no header) into a DataFrame with int64 columns user_id, item_id,
    rating, timestamp, rows in file order."""

    def body(fn):
        import tempfile
        from pathlib import Path

        import numpy as np
        import pandas as pd

        read_ml100k = _reference("hstu_tutorial.data.movielens", "read_ml100k")
        rng = np.random.default_rng(7)
        n = 300
        tables = [
            (
                "300 random ratings (file order is not sorted)",
                pd.DataFrame(
                    {
                        "user_id": rng.integers(1, 30, n),
                        "item_id": rng.integers(1, 200, n),
                        "rating": rng.integers(1, 6, n),
                        "timestamp": rng.integers(874_724_710, 893_286_638, n),
                    }
                ),
            ),
            (
                "a single rating",
                pd.DataFrame({"user_id": [196], "item_id": [242], "rating": [3], "timestamp": [881250949]}),
            ),
        ]
        cols = ["user_id", "item_id", "rating", "timestamp"]
        for label, table in tables:
            ct = _case_text(case=label)
            with tempfile.TemporaryDirectory() as tmp:
                _write_ml100k_folder(tmp, table)
                expected = read_ml100k(tmp)[0]
                got = fn(Path(tmp) / "u.data")
            if not isinstance(got, pd.DataFrame):
                raise CheckFailed(f"return a pandas DataFrame, got {type(got).__name__}." + ct)
            if list(got.columns[:4]) != cols:
                raise CheckFailed(
                    f"expected the columns {cols} (in that order), got {list(got.columns)}." + ct
                )
            if len(got) != len(expected):
                hint = (
                    " The file has no header line: pass header=None (or names=...)."
                    if len(got) == len(expected) - 1
                    else ""
                )
                raise CheckFailed(f"expected {len(expected)} rows (one per line), got {len(got)}.{hint}" + ct)
            for c in cols:
                if not pd.api.types.is_integer_dtype(got[c]):
                    raise CheckFailed(
                        f"column {c} has dtype {got[c].dtype}; ids, ratings and timestamps are "
                        "integers (int64)." + ct
                    )
            g = got[cols].reset_index(drop=True).astype("int64")
            e = expected[cols].reset_index(drop=True).astype("int64")
            if not g.equals(e):
                if sorted(map(tuple, g.to_numpy().tolist())) == sorted(map(tuple, e.to_numpy().tolist())):
                    raise CheckFailed(
                        "the rows are all there but reordered: keep the file order (sorting "
                        "happens later, per user and by time)." + ct
                    )
                swapped = g[["item_id", "user_id"]].to_numpy().tolist()
                if swapped == e[["user_id", "item_id"]].to_numpy().tolist():
                    raise CheckFailed(
                        "user_id and item_id are swapped: u.data is user, item, rating, timestamp." + ct
                    )
                bad = (g != e).any(axis=1).to_numpy().nonzero()[0][0]
                raise CheckFailed(
                    f"row {bad} differs: expected {e.iloc[bad].tolist()}, got {g.iloc[bad].tolist()}." + ct
                )
        return len(tables)

    return _run("check_ratings_table", fn, body)


_MODELS = ("hstu", "sasrec")  # what the trainer trains; anything else is not a model run
_HOW = "pass what train() returned (or its run folder) and the dataset: check_project_results(run, dataset)"


def _as_runs(run) -> list[tuple[str, object]]:
    """[(name, run)] from one run or a {name: run} dict / list of runs; hand-typed metrics are refused."""
    import os

    if isinstance(run, str | os.PathLike):
        return [(str(run), run)]
    if isinstance(run, dict):
        if "config" in run or "best_by_valid" in run or "trainer" in run:
            return [(str(run.get("name", "the run")), run)]
        if run and all(isinstance(k, str) and k.startswith(("hr@", "ndcg@", "mrr")) for k in run):
            raise CheckFailed(
                "this is a dict of metrics, not a run: numbers alone cannot be checked (they could be typed "
                f"by hand, or be the popularity baseline's). {_HOW}."
            )
        if run and all(isinstance(v, dict | str | os.PathLike) for v in run.values()):
            if all(isinstance(v, dict) and "config" not in v and "trainer" not in v for v in run.values()):
                raise CheckFailed(
                    "this is a dict {model name: metrics}: numbers alone cannot be checked (they could be "
                    f"typed by hand). {_HOW}; several runs as a dict {{name: run}} work too."
                )
            return [(str(k), v) for k, v in run.items()]
    if isinstance(run, list | tuple) and run:
        return [(f"run {i}", r) for i, r in enumerate(run)]
    raise CheckFailed(f"expected a run, got {type(run).__name__} {run!r:.60}. {_HOW}.")


def _rank_file_table(folder, results: dict, dataset, name: str):
    """The run's ranks_test.csv as (U,) ranks, after checking its rows are the dataset's test users."""
    import numpy as np
    import torch

    from hstu_tutorial.training.run_files import RANK_FILES

    info = results.get("rank_files") or {}
    file = folder / info.get("test", RANK_FILES["test"]) if folder is not None else None
    if file is None or not file.is_file():
        return None
    import pandas as pd

    df = pd.read_csv(file)
    test = dataset.split("test")
    want = {
        "user_id": test.user_ids.numpy(),
        "target_item_id": test.target_item_ids.numpy(),
        "history_length": test.lengths.numpy(),
    }
    for col, values in want.items():
        if col not in df or len(df) != len(values) or not np.array_equal(df[col].to_numpy(), values):
            raise CheckFailed(
                f"{name}: {file.name} does not list this dataset's test users ({col} differs): the file was "
                "edited or comes from another run. Train again and pass the new run."
            )
    if "rank" not in df or df["rank"].isna().any() or (df["rank"] < 1).any():
        raise CheckFailed(f"{name}: {file.name} has missing or non-positive ranks: the file was edited.")
    return torch.tensor(df["rank"].to_numpy(), dtype=torch.int64)  # (U,)


def _weights_ranks(folder, results: dict, dataset, name: str):
    """Ranks (U,) of the test users recomputed from the run's ckpt_best.pt, or None without one."""
    import torch

    if folder is None or not (folder / "ckpt_best.pt").is_file():
        return None
    build_model = _reference("hstu_tutorial.training.model", "build_model")
    config_from_dict = _reference("hstu_tutorial.training.config", "config_from_dict")
    TrainConfig = _reference("hstu_tutorial.training.config", "TrainConfig")
    read_checkpoint = _reference("hstu_tutorial.training.checkpoints", "read_checkpoint")
    batch_ranks = _reference("hstu_tutorial.metrics", "batch_ranks")
    try:
        state, _ = read_checkpoint(folder / "ckpt_best.pt", "weights")
    except Exception as err:  # noqa: BLE001 - a CheckpointError names the file and the problem
        raise CheckFailed(f"{name}: cannot read its ckpt_best.pt: {err}") from None
    best_epoch = (results.get("best_by_valid") or {}).get("epoch")
    if state.get("epoch") != best_epoch:
        raise CheckFailed(
            f"{name}: ckpt_best.pt holds epoch {state.get('epoch')} but the results report epoch {best_epoch} "
            "as the best: the files come from different runs. Pass one run as train() returned it."
        )
    keep = TrainConfig.keys()
    saved = {k: v for k, v in (state.get("config") or {}).items() if k in keep}
    # evaluated here on the CPU: the PyTorch attention, no compile, no recompute
    cpu = {"device": "cpu", "compile": False, "attention_impl": "auto", "recompute": False}
    cfg = config_from_dict({**saved, **cpu}, source="the config saved in ckpt_best.pt")
    model, _ = build_model(cfg, dataset.num_items, torch.device("cpu"))
    model.load_state_dict(state["model"])
    batches = dataset.loader("test", batch_size=512, shuffle=False)
    return batch_ranks(model, batches, dataset.catalogue, dataset.num_items)  # (U,)


def _verified_metrics(name: str, run, dataset, fingerprint: str) -> dict:
    """The run's test HR@10 / NDCG@10 as recomputed here (weights, else rank file) once every claim holds."""
    load_run = _reference("hstu_tutorial.training.run_files", "load_run")
    metrics_from_ranks = _reference("hstu_tutorial.metrics", "metrics_from_ranks")
    try:
        results, folder = load_run(run)
    except (FileNotFoundError, ValueError) as err:
        raise CheckFailed(f"{name}: {err}. {_HOW}.") from None
    model = (results.get("config") or {}).get("model")
    if model not in _MODELS:
        raise CheckFailed(
            f"{name}: its config trains model {model!r}, not one of {list(_MODELS)}: only a run of the trainer "
            "(train(...)) counts; the popularity baseline is what the model must beat, not a model."
        )
    if "dataset_fingerprint" not in results:
        raise CheckFailed(
            f"{name}: no dataset_fingerprint in its results: it was written before runs recorded their data. "
            "Train again with this version of the package."
        )
    if results["dataset_fingerprint"] != fingerprint:
        raise CheckFailed(
            f"{name}: it was trained and evaluated on other data (fingerprint {results['dataset_fingerprint']}) "
            f"than the dataset you passed ({fingerprint}). Pass the dataset the run used, or train on this one."
        )
    reported = (results.get("best_by_valid") or {}).get("test")
    if not isinstance(reported, dict) or "hr@10" not in reported or "ndcg@10" not in reported:
        raise CheckFailed(
            f"{name}: its results have no best-by-validation test HR@10 / NDCG@10 (no epoch ran?)."
        )
    from_file = _rank_file_table(folder, results, dataset, name)
    from_weights = _weights_ranks(folder, results, dataset, name)
    if from_file is None and from_weights is None:
        where = f"in {folder}" if folder is not None else "(no run folder)"
        raise CheckFailed(
            f"{name}: neither ranks_test.csv nor ckpt_best.pt {where}, so its numbers cannot be recomputed. "
            "Pass what train() returned (it saves ranks_test.csv), or its run folder."
        )
    claims = []
    if from_file is not None:
        claims.append(("its saved ranks (ranks_test.csv)", metrics_from_ranks(from_file, (10,)), 1e-9))
    if from_weights is not None:
        # a GPU run (bf16, TF32, other kernels) ranks a few users differently from this CPU recomputation
        tol = max(0.005, 3.0 / len(from_weights))
        claims.append(("its saved best weights (ckpt_best.pt)", metrics_from_ranks(from_weights, (10,)), tol))
    for source, m, tol in claims:
        for key in ("hr@10", "ndcg@10"):
            if abs(float(reported[key]) - m[key]) > tol:
                raise CheckFailed(
                    f"{name}: the reported test {key.upper()} ({float(reported[key]):.4f}) is not what "
                    f"{source} give ({m[key]:.4f}): the numbers were edited or typed by hand. Pass the run "
                    "exactly as train() returned it."
                )
    ranks = from_weights if from_weights is not None else from_file
    return {"ranks": ranks, **claims[-1][1], "model": model}


def check_project_results(run, dataset=None) -> bool:
    """Check the open project's outcome: `run` is what `train()` returned, its run folder or results.json
    (or a {name: run} dict of several), `dataset` the dataset it was trained on. The run must be the
    trainer's, on this dataset (fingerprint), with test metrics that its saved ranks / best weights
    reproduce, and the best run must beat the popularity baseline, computed here, on HR@10 and NDCG@10."""

    def body(_fn):
        runs = _as_runs(run)
        if dataset is None or not hasattr(dataset, "split"):
            got = "nothing" if dataset is None else type(dataset).__name__
            raise CheckFailed(
                f"the second argument must be the dataset the run was trained on (a RecoDataset), got {got}: "
                f"the check computes the popularity baseline itself. {_HOW}."
            )
        fingerprint = _reference("hstu_tutorial.data.fingerprint", "dataset_fingerprint")(dataset)
        popularity_ranks = _reference("hstu_tutorial.metrics", "popularity_ranks")
        metrics_from_ranks = _reference("hstu_tutorial.metrics", "metrics_from_ranks")
        base_ranks = popularity_ranks(dataset, "test")
        base = metrics_from_ranks(base_ranks, (10,))
        verified = {name: _verified_metrics(name, r, dataset, fingerprint) for name, r in runs}
        for name, m in verified.items():
            same = abs(m["hr@10"] - base["hr@10"]) < 1e-12 and abs(m["ndcg@10"] - base["ndcg@10"]) < 1e-12
            if same or bool((m["ranks"] == base_ranks).all()):
                raise CheckFailed(
                    f"{name}: these are the popularity baseline's ranks and numbers, not a trained model's. "
                    "Train HSTU or SASRec and pass that run."
                )
        best = max(verified, key=lambda n: verified[n]["ndcg@10"])
        m = verified[best]
        if not (m["hr@10"] > base["hr@10"] and m["ndcg@10"] > base["ndcg@10"]):
            raise CheckFailed(
                f"{best!r} does not beat the popularity baseline yet (test HR@10 {m['hr@10']:.4f} vs "
                f"{base['hr@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f} vs {base['ndcg@10']:.4f}): it must beat "
                "both. Train longer, check the split, or look at the learning rate and the history window."
            )
        return len(verified)

    return _run("check_project_results", lambda: None, body)
