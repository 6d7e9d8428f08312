"""Check of exercise 06's analysis section: HR@K and NDCG@K per bucket of users, from a table of ranks."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ._common import CheckFailed, _call, _case_text, _reference, _run


def _table(seed: int, n: int, max_rank: int, column: str, values=None, ranks=None):
    """A ranks table like a run's ranks_test.csv (1-based ranks), plus a bucketing column."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1),
            "target_item_id": rng.integers(1, 500, n),
            "history_length": rng.integers(1, 60, n),
            "rank": rng.integers(1, max_rank + 1, n) if ranks is None else np.asarray(ranks),
        }
    )
    if values is not None:
        df[column] = np.asarray(values)
    return df.astype("int64")


def _cases():
    """(label, ranks table, (column, edges), k): random tables and the edge cases."""
    k_ranks = [1, 4, 5, 6, 9, 10, 11, 12, 10, 11, 2, 3]  # ranks K and K + 1 for K = 5 and K = 10
    edge_values = [1, 10, 10, 20, 20, 19, 9, 50, 50, 60, 1, 49]  # users exactly on the edges
    return [
        (
            "random ranks, history-length buckets",
            _table(1, 300, 120, "history_length"),
            ("history_length", [1, 5, 10, 20, 40, 60]),
            10,
        ),
        (
            "ranks exactly K and K + 1, values on the edges",
            _table(2, 12, 0, "history_length", edge_values, k_ranks),
            ("history_length", [1, 10, 20, 50, math.inf]),
            10,
        ),
        (
            "K = 5, values on the edges",
            _table(3, 12, 0, "history_length", edge_values, k_ranks),
            ("history_length", [1, 10, 20, 50, math.inf]),
            5,
        ),
        (
            "an empty bucket (nobody has 20 <= history_length < 30)",
            _table(4, 40, 30, "history_length", [3, 12, 35, 19, 30, 31, 45, 8] * 5),
            ("history_length", [0, 10, 20, 30, 40, math.inf]),
            10,
        ),
        (
            "target-popularity buckets, popularity 0 and ties on the edges",
            _table(
                5, 200, 60, "target_popularity", np.random.default_rng(9).choice([0, 1, 5, 6, 40, 100], 200)
            ),
            ("target_popularity", [0, 1, 5, 40, math.inf]),
            10,
        ),
        ("one user", _table(6, 1, 0, "history_length", [7], [3]), ("history_length", [1, 10, math.inf]), 10),
    ]


def _naive(
    df,
    bucket_of,
    k,
    *,
    cmp="le",
    log="log2",
    offset=1.0,
    ndcg_mask=True,
    per="bucket",
    closed="left",
    drop_first=False,
    shift=0,
    empty=math.nan,
):
    """Per-bucket (users, hr, ndcg) arrays, with switches for the known mistakes (the defaults are right)."""
    column, edges = bucket_of
    edges = np.asarray(edges, dtype=np.float64)
    n = len(edges) - 1
    v = df[column].to_numpy(np.float64)  # (U,)
    r = df["rank"].to_numpy(np.float64)  # (U,)
    b = np.searchsorted(edges, v, side="right" if closed == "left" else "left") - 1  # (U,)
    if closed == "right" and not drop_first:  # pandas' include_lowest: the first edge joins bucket 0
        b = np.where(v == edges[0], 0, b)
    b = b + shift
    keep = (b >= 0) & (b < n)
    b, r = b[keep], r[keep]
    hit = {"le": r <= k, "lt": r < k, "le1": r <= k + 1}[cmp]
    lg = {"log2": np.log2, "ln": np.log, "log10": np.log10}[log]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 1.0 / lg(r + offset)
    gain = np.where(hit, g, 0.0) if ndcg_mask else g
    users = np.bincount(b, minlength=n).astype(np.float64)
    hs = np.bincount(b, weights=hit.astype(np.float64), minlength=n)
    gs = np.bincount(b, weights=gain, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if per == "bucket":
            hr, ndcg = hs / users, gs / users
        elif per == "all_users":  # every bucket's sum divided by the number of all users
            hr, ndcg = hs / len(df), gs / len(df)
        else:  # every bucket shows the overall mean
            hr, ndcg = np.full(n, hs.sum() / users.sum()), np.full(n, gs.sum() / users.sum())
    return users, np.where(users == 0, empty, hr), np.where(users == 0, empty, ndcg)


_VARIANTS = [
    (
        "0-based ranks: the ranks in the file are 1-based (the best item has rank 1), so a hit is rank <= K "
        "and NDCG is 1 / log2(rank + 1); you used the 0-based formulas (rank < K, 1 / log2(rank + 2)).",
        dict(cmp="lt", offset=2.0),
    ),
    ("HR@K counts rank <= K: you used rank < K, so a target at rank exactly K is missed.", dict(cmp="lt")),
    ("HR@K counts rank <= K: you also counted rank K + 1 as a hit.", dict(cmp="le1")),
    ("NDCG uses log2: 1 / log2(rank + 1) (you used the natural log).", dict(log="ln")),
    ("NDCG uses log2: 1 / log2(rank + 1) (you used log10).", dict(log="log10")),
    (
        "off by one in NDCG: it is 1 / log2(rank + 1), so rank 1 scores 1 (you used log2(rank + 2)).",
        dict(offset=2.0),
    ),
    (
        "off by one in NDCG: it is 1 / log2(rank + 1) (you used log2(rank), which is inf at rank 1).",
        dict(offset=0.0),
    ),
    (
        "NDCG@K is 0 when rank > K: you gave 1 / log2(rank + 1) to every user, also the misses.",
        dict(ndcg_mask=False),
    ),
    (
        "each bucket's sum is divided by the number of ALL users: a bucket's HR@K is the mean over that "
        "bucket's users only (divide by the bucket's own count).",
        dict(per="all_users"),
    ),
    (
        "every bucket shows the mean over all users: group the users by bucket first, then average inside "
        "each bucket.",
        dict(per="overall"),
    ),
    (
        "bucket edges: a value equal to an edge belongs to the bucket that starts there, [a, b) (closed on "
        "the left); your buckets are (a, b]. With pd.cut pass right=False.",
        dict(closed="right"),
    ),
    (
        "bucket edges: the buckets are [a, b) (closed on the left); yours are (a, b], and the users equal to "
        "the first edge were dropped (pd.cut's default right=True). Pass right=False.",
        dict(closed="right", drop_first=True),
    ),
    (
        "bucket edges off by one: the users of [edges[i], edges[i+1]) landed in bucket i + 1 "
        "(np.digitize and np.searchsorted(..., side='right') return i + 1 for them: subtract 1).",
        dict(shift=1),
    ),
    (
        "a bucket without users has no mean: give it NaN (0 users, 0 / 0), not 0; a 0 reads as 'the model "
        "misses every user there'.",
        dict(empty=0.0),
    ),
]


def _frame_arrays(got, k: int, n: int, ct: str):
    """users, hr@k, ndcg@k of the learner's DataFrame as float arrays, after the shape checks."""
    import pandas as pd

    if not isinstance(got, pd.DataFrame):
        raise CheckFailed(f"return a pandas DataFrame (one row per bucket), got {type(got).__name__}." + ct)
    cols = {str(c).lower(): c for c in got.columns}
    want = ["users", f"hr@{k}", f"ndcg@{k}"]
    missing = [c for c in want if c not in cols]
    if missing:
        raise CheckFailed(
            f"expected the columns {want} (with K = {k}), got {list(got.columns)}; missing {missing}." + ct
        )
    if len(got) != n:
        hint = (
            " A bucket without users is missing: keep it as a row with 0 users (groupby on a categorical "
            "with observed=False, or reindex on every bucket)."
            if len(got) < n
            else ""
        )
        raise CheckFailed(f"expected {n} rows (one per bucket, in edge order), got {len(got)}.{hint}" + ct)
    arr = lambda c: pd.to_numeric(got[cols[c]], errors="coerce").to_numpy(np.float64)
    return arr("users"), arr(f"hr@{k}"), arr(f"ndcg@{k}")


def _same(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))


def check_per_bucket(fn: Callable) -> bool:
    """Check `fn(ranks_df, bucket_of, k=10) -> DataFrame`: ranks_df has one row per user with a 1-based
    "rank"; bucket_of = (column, edges), bucket i = [edges[i], edges[i+1]); one row per bucket in edge order
    with columns "users", "hr@{k}", "ndcg@{k}" (HR = mean [rank <= K], NDCG = mean [rank <= K] / log2(rank
    + 1), over the bucket's users); an empty bucket has 0 users and NaN metrics."""

    def body(fn):
        reference = _reference("hstu_tutorial.analysis", "per_bucket_metrics")
        cases = _cases()
        for label, df, bucket_of, k in cases:
            column, edges = bucket_of
            ct = _case_text(case=label, column=column, edges=list(edges), K=k)
            expected = reference(df, bucket_of, k)
            e_users = expected["users"].to_numpy(np.float64)
            e_hr, e_ndcg = expected[f"hr@{k}"].to_numpy(), expected[f"ndcg@{k}"].to_numpy()
            try:
                got = _call(fn, {"ranks_df": df, "bucket_of": bucket_of}, {"k": k}, ct)
            except CheckFailed as err:
                if "in place" not in str(err):
                    raise
                raise CheckFailed(
                    "your function changed the ranks table it was given (a column added or values "
                    "overwritten): the caller's table changes behind its back. Work on a copy "
                    "(df = ranks_df.copy(), or ranks_df.assign(hit=...))." + ct
                ) from None
            users, hr, ndcg = _frame_arrays(got, k, len(expected), ct)
            if _same(users, e_users) and _same(hr, e_hr) and _same(ndcg, e_ndcg):
                continue
            for msg, kw in _VARIANTS:
                v_users, v_hr, v_ndcg = _naive(df, bucket_of, k, **kw)
                if _same(users, v_users) and _same(hr, v_hr) and _same(ndcg, v_ndcg):
                    raise CheckFailed(msg + ct)
            if np.nansum(users) < len(df):
                raise CheckFailed(
                    f"users dropped: your buckets hold {int(np.nansum(users))} users, the table has "
                    f"{len(df)}. Every user belongs to one bucket [edges[i], edges[i+1]), misses "
                    "(rank > K) included." + ct
                )
            if not _same(users, e_users):
                i = int(np.flatnonzero(~np.isclose(users, e_users, equal_nan=True))[0])
                lo, hi = edges[i], edges[i + 1]
                raise CheckFailed(
                    f"bucket {i} ({expected.index[i]}: {lo} <= {column} < {hi}) should hold "
                    f"{int(e_users[i])} users, yours holds {users[i]:g}. Check the bucket edges: closed on "
                    "the left, open on the right." + ct
                )
            for what, g, e in ((f"hr@{k}", hr, e_hr), (f"ndcg@{k}", ndcg, e_ndcg)):
                bad = ~np.isclose(g, e, rtol=1e-6, atol=1e-9, equal_nan=True)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise CheckFailed(
                        f"{what} of bucket {i} ({expected.index[i]}, {int(e_users[i])} users): expected "
                        f"{e[i]:.6g}, got {g[i]:.6g} ({int(bad.sum())} of {len(bad)} buckets differ)." + ct
                    )
        return len(cases)

    return _run("check_per_bucket", fn, body)
