"""Checks of exercise 01 (data): per-user sequences and the leave-one-out split."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _reference,
    _run,
)

_SEQ_COLUMNS = ["user_id", "sequence_item_ids", "sequence_ratings", "sequence_timestamps"]


def _ratings_cases():
    import numpy as np
    import pandas as pd

    hand = pd.DataFrame(
        {  # users out of order, same-second ties, a user with one rating
            "user_id": [2, 1, 2, 1, 3, 2, 1, 2],
            "item_id": [10, 20, 11, 21, 30, 12, 22, 13],
            "rating": [5, 4, 3, 2, 1, 4, 5, 3],
            "timestamp": [100, 50, 100, 40, 70, 90, 50, 100],
        }
    )
    rng = np.random.default_rng(0)
    n = 400
    rnd = pd.DataFrame(
        {  # many ties: timestamps drawn from few values
            "user_id": rng.integers(1, 40, n),
            "item_id": rng.integers(1, 500, n),
            "rating": rng.integers(1, 6, n),
            "timestamp": rng.integers(0, 30, n) * 60 + 978_300_000,
        }
    )
    synthetic = (
        importlib.import_module("hstu_tutorial.data")
        .get_reco_dataset("synthetic", max_seq_len=50, verbose=False)
        .ratings_df
    )
    return [
        ("a hand-made table with ties and a one-rating user", hand),
        ("400 random ratings, many ties", rnd),
        (f"the synthetic dataset ({len(synthetic)} ratings)", synthetic),
    ]


def check_user_sequences(fn: Callable) -> bool:
    """Check `fn(ratings_df) -> sequences_df`: one row per user (sorted by user_id) with columns user_id,
    sequence_item_ids, sequence_ratings, sequence_timestamps (Python lists, oldest first; same-second ties
    keep their file order)."""

    def body(fn):
        ml = importlib.import_module("hstu_tutorial.data.movielens")
        _reference("hstu_tutorial.data.movielens", "sort_sequences")
        cases = _ratings_cases()
        for label, df in cases:
            expected = ml.sequences_frame(ml.sort_sequences(df.copy(), stable=True))
            ct = _case_text(case=label)
            got = _call(fn, {"ratings_df": df}, case=ct)
            import pandas as pd

            if not isinstance(got, pd.DataFrame):
                raise CheckFailed(f"return a pandas DataFrame, got {type(got).__name__}." + ct)
            missing = [c for c in _SEQ_COLUMNS if c not in got.columns]
            if missing:
                raise CheckFailed(
                    f"missing column(s) {missing}; expected columns {_SEQ_COLUMNS}, got "
                    f"{list(got.columns)}." + ct
                )
            got = got.reset_index(drop=True)
            if len(got) != len(expected):
                raise CheckFailed(
                    f"expected one row per user ({len(expected)} users), got {len(got)} rows." + ct
                )
            users = [int(u) for u in got["user_id"]]
            if users != [int(u) for u in expected["user_id"]]:
                if sorted(users) == [int(u) for u in expected["user_id"]]:
                    raise CheckFailed(f"the rows are not sorted by user_id (got users {users[:8]}...)." + ct)
                raise CheckFailed(
                    f"wrong users: expected {expected['user_id'].tolist()[:8]}..., got {users[:8]}..." + ct
                )
            for r in range(len(expected)):
                want, have = expected.iloc[r], got.iloc[r]
                u = int(want["user_id"])
                w_items = list(want["sequence_item_ids"])
                h_items = [int(x) for x in have["sequence_item_ids"]]
                w_ts, h_ts = list(want["sequence_timestamps"]), [int(x) for x in have["sequence_timestamps"]]
                if sorted(w_items) != sorted(h_items):
                    raise CheckFailed(
                        f"user {u}: expected the items {sorted(w_items)} (in some order), got "
                        f"{sorted(h_items)}: items are missing, repeated or from another user." + ct
                    )
                if h_ts == sorted(w_ts, reverse=True) and h_ts != w_ts:
                    raise CheckFailed(
                        f"user {u}: the sequence is newest first; sequences are oldest first "
                        "(sort by timestamp ascending)." + ct
                    )
                if h_ts != w_ts:
                    raise CheckFailed(
                        f"user {u}: timestamps {h_ts[:10]} are not in time order; expected "
                        f"{w_ts[:10]} (sort each user's ratings by timestamp)." + ct
                    )
                if h_items != w_items:
                    i = next(i for i, (a, b) in enumerate(zip(w_items, h_items)) if a != b)
                    raise CheckFailed(
                        f"user {u}: items with the same timestamp ({w_ts[i]}) are in a different order: at "
                        f"position {i} expected item {w_items[i]}, got {h_items[i]}. Keep ties in file order "
                        "with a stable sort (kind='stable' / 'mergesort'); the default quicksort is not "
                        "stable, and the reference's unstable sort is one of its pitfalls." + ct
                    )
                for col in ("sequence_ratings",):
                    if [int(x) for x in have[col]] != list(want[col]):
                        raise CheckFailed(
                            f"user {u}: {col} is not aligned with the items: expected "
                            f"{list(want[col])[:10]}, got {list(have[col])[:10]}." + ct
                        )
        return len(cases)

    return _run("check_user_sequences", fn, body)


def _split_reference(sequences: list[list[int]], max_len: int, protocol: str) -> dict:
    """The package's `make_split` on these sequences -> {split: list of (history, target) or None}."""
    import numpy as np

    ml = importlib.import_module("hstu_tutorial.data.movielens")
    make_split = _reference("hstu_tutorial.data.reco_dataset", "make_split")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    items = np.array([x for s in sequences for x in s], dtype=np.int64)
    flat = ml.FlatSequences(
        user_ids=np.arange(1, len(sequences) + 1),
        offsets=np.r_[0, lengths.cumsum()],
        item_ids=items,
        ratings=np.ones_like(items),
        timestamps=np.arange(len(items)),
        order=np.arange(len(items)),
    )
    drops = {"test": 1, "valid": 2, "train": 2 if protocol == "reference" else 3}
    out = {}
    for name, drop in drops.items():
        split = make_split(flat, name, drop, max_len)
        by_user = {
            int(u): (h, int(t)) for u, h, t in zip(split.user_ids, split.histories(), split.target_item_ids)
        }
        out[name] = [by_user.get(u) for u in range(1, len(sequences) + 1)]
    return out


def check_leave_one_out(fn: Callable) -> bool:
    """Check `fn(items, max_len, protocol="reference") -> {"train": ..., "valid": ..., "test": ...}` for one
    user's time-sorted item list; each value is `(history list, target)` or None when the history would be
    empty. test: history s[:-1], target s[-1]; valid: s[:-2] -> s[-2]; train: like valid with protocol
    "reference", s[:-3] -> s[-3] with protocol "validation"; histories keep their most recent max_len items.
    """

    def body(fn):
        import random

        rnd = random.Random(0)
        seqs = [[5], [5, 6], [5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
        seqs += [[rnd.randint(1, 99) for _ in range(rnd.randint(1, 15))] for _ in range(30)]
        n_cases = 0
        for protocol in ("reference", "validation"):
            for max_len in (4, 50):
                ref = _split_reference(seqs, max_len, protocol)
                for u, s in enumerate(seqs):
                    ct = _case_text(items=s, max_len=max_len, protocol=protocol)
                    got = _call(fn, {"items": list(s), "max_len": max_len}, {"protocol": protocol}, ct)
                    if not isinstance(got, dict) or sorted(got) != ["test", "train", "valid"]:
                        raise CheckFailed(
                            f"return a dict with the keys 'train', 'valid' and 'test', got {got!r:.80}." + ct
                        )
                    for name in ("test", "valid", "train"):
                        want, have = ref[name][u], got[name]
                        _compare_example(name, want, have, s, max_len, protocol, ct)
                    n_cases += 1
        return n_cases

    return _run("check_leave_one_out", fn, body)


def _train_mistake(name, have, s, protocol, ct):
    """Recognise a train example that uses an item held out for evaluation."""
    if name != "train" or not isinstance(have, tuple | list) or len(have) != 2:
        return
    try:
        target = int(have[1])
    except (TypeError, ValueError):
        return
    if target == s[-1]:
        raise CheckFailed(
            "train: the target is the user's last item, which is the *test* item: training "
            "on it leaks the answer. Train stops before it." + ct
        )
    if protocol == "validation" and len(s) >= 2 and target == s[-2]:
        raise CheckFailed(
            "train with protocol='validation' must also hold out the valid item: target "
            "s[-3], history s[:-3]." + ct
        )


def _compare_example(name, want, have, s, max_len, protocol, ct):
    try:
        differs = have is not None and (want is None or int(have[1]) != want[1])
    except (TypeError, ValueError, IndexError):
        differs = False  # malformed: reported below
    if differs:
        _train_mistake(name, have, s, protocol, ct)
    if want is None:
        if have is not None:
            raise CheckFailed(
                f"{name}: this user has too few items for a {name} example (the history would "
                f"be empty); return None, got {have!r}." + ct
            )
        return
    if have is None:
        raise CheckFailed(f"{name}: expected (history, target) = ({want[0]}, {want[1]}), got None." + ct)
    try:
        history, target = have
        history, target = [int(x) for x in history], int(target)
    except (TypeError, ValueError):
        raise CheckFailed(
            f"{name}: return a pair (history list, target item), got {have!r:.80}." + ct
        ) from None
    w_hist, w_target = want
    if target != w_target:
        raise CheckFailed(f"{name}: expected target {w_target}, got {target}." + ct)
    if w_target in history[-1:] and history == (w_hist + [w_target])[-max_len:]:
        raise CheckFailed(
            f"{name}: the target {w_target} is inside its own history: the history stops "
            "just before the target." + ct
        )
    if history != w_hist:
        full = s[: len(s) - {"test": 1, "valid": 2}.get(name, 2 if protocol == "reference" else 3)]
        if history == full[:max_len] and len(full) > max_len:
            raise CheckFailed(
                f"{name}: you kept the *oldest* {max_len} items; keep the most recent ones "
                f"(history[-max_len:]): expected {w_hist}, got {history}." + ct
            )
        if len(history) != len(w_hist) and history[-1:] == w_hist[-1:]:
            raise CheckFailed(
                f"{name}: history window of {len(history)} items, expected {len(w_hist)} "
                f"(at most max_len = {max_len}): expected {w_hist}, got {history}." + ct
            )
        raise CheckFailed(f"{name}: expected history {w_hist}, got {history}." + ct)
