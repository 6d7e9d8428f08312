"""Ticks from what the learner ran: the data loader (`practice.download`) and the training CLI
(`practice.train_script`). Each hook is one call at the place where the thing has just succeeded; a
hook never raises (a progress file that cannot be written must not fail a data load or a run)."""

from __future__ import annotations

import warnings

# the full MovieLens data sets (data/README.md): ratings, users. A folder with these counts was downloaded;
# a subset (data/ml-1m-u2999) or the synthetic look-alike has other counts and ticks nothing.
FULL_DATASETS = {"ml-1m": (1_000_209, 6_040), "ml-100k": (100_000, 943)}


def _tick(item_id: str, by: str) -> bool:
    from hstu_tutorial.progress.store import tick

    try:
        tick(item_id, by=by)
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        warnings.warn(
            f"hstu_tutorial: could not save your progress ({exc}); nothing else is affected.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def dataset_loaded(name: str, ratings, folder) -> bool:
    """Called by `get_reco_dataset` once a MovieLens folder was read and cross-checked (after the md5 check
    of a downloaded or placed ml-1m.zip). Ticks `practice.download` when the folder holds the whole data
    set; returns whether it ticked."""
    if name not in FULL_DATASETS:
        return False
    n_ratings, n_users = FULL_DATASETS[name]
    if len(ratings) != n_ratings or ratings["user_id"].nunique() != n_users:
        return False
    return _tick("practice.download", f"get_reco_dataset('{name}'): {n_ratings:,} ratings in {folder}")


def training_finished(results: dict) -> bool:
    """Called by the training CLI after a run: a run that completed (or stopped early on its patience)
    ticks `practice.train_script`; an interrupted run or one cut by max_steps does not."""
    if results.get("status") not in ("completed", "early_stopped"):
        return False
    return _tick("practice.train_script", f"hstu-train: {results.get('run_dir')}")
