"""Checks of exercise 07 (the open project): reading a new ratings file, the final results."""

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


def check_project_results(results: dict, baseline: dict | None = None) -> bool:
    """Check the open project's outcome: `results` maps a model name to its test metrics (a dict with
    "hr@10" and "ndcg@10", e.g. `train(...)["best_by_valid"]["test"]`), `baseline` the popularity
    baseline's. Passes when every value is a valid metric and the best model beats the baseline."""

    def body(results):
        if not isinstance(results, dict) or not results:
            raise CheckFailed(
                "pass a dict {model name: test metrics}, e.g. {'HSTU': run['best_by_valid']['test']}."
            )
        for name, m in results.items():
            if not isinstance(m, dict) or "hr@10" not in m or "ndcg@10" not in m:
                raise CheckFailed(
                    f"{name!r}: expected a dict of metrics with 'hr@10' and 'ndcg@10', got {m!r:.80}."
                )
            for key in ("hr@10", "ndcg@10"):
                if not 0.0 <= float(m[key]) <= 1.0:
                    raise CheckFailed(f"{name!r}: {key} = {m[key]} is not in [0, 1].")
            if float(m["ndcg@10"]) > float(m["hr@10"]) + 1e-9:
                raise CheckFailed(
                    f"{name!r}: NDCG@10 ({m['ndcg@10']:.4f}) cannot exceed HR@10 "
                    f"({m['hr@10']:.4f}): check how the metrics were computed."
                )
        if baseline is not None:
            best = max(results, key=lambda k: float(results[k]["ndcg@10"]))
            if float(results[best]["hr@10"]) <= float(baseline["hr@10"]):
                raise CheckFailed(
                    f"no model beats the popularity baseline yet (best {best!r}: HR@10 "
                    f"{float(results[best]['hr@10']):.3f} vs {float(baseline['hr@10']):.3f}). "
                    "Train longer, check the split, or look at the learning rate and the "
                    "history window."
                )
        return len(results)

    return _run("check_project_results", lambda: None, lambda _fn: body(results))
