"""Synthetic data: ML-1M file format, determinism by seed, realistic quirks, and learnable structure."""

import numpy as np
import pytest

from hstu_tutorial.data import generate_synthetic, get_reco_dataset
from hstu_tutorial.data.movielens import read_movies, read_ratings, read_users


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("synroot")


def test_files_in_ml1m_format(root):
    folder = generate_synthetic("ci", 0, root, verbose=False)
    assert folder.name == "synthetic-ci-seed0"
    first = (folder / "ratings.dat").read_text().splitlines()[0].split("::")
    assert len(first) == 4 and all(x.isdigit() for x in first)
    ratings, movies, users = (
        read_ratings(folder / "ratings.dat"),
        read_movies(folder / "movies.dat"),
        read_users(folder / "users.dat"),
    )
    assert ratings["rating"].between(1, 5).all()
    assert 500 == ratings["user_id"].nunique() == len(users)
    assert 30 * 500 <= len(ratings) <= 60 * 500
    assert not ratings.duplicated(["user_id", "item_id"]).any()  # nobody rates a movie twice
    raw = (folder / "movies.dat").read_bytes()
    assert any(b > 127 for b in raw)  # Latin-1 titles, as ML-1M
    assert movies["title"].str.contains("é|ñ|Ü|ë|Å").any()
    assert movies["item_id"].max() > len(movies)  # ids with gaps: num_items != catalogue size
    assert set(users["sex"]) == {"M", "F"}


def test_deterministic_by_seed(root, tmp_path):
    a = generate_synthetic("ci", 0, root, verbose=False)
    b = generate_synthetic("ci", 0, tmp_path, verbose=False)
    c = generate_synthetic("ci", 1, tmp_path, verbose=False)
    for f in ("ratings.dat", "movies.dat", "users.dat"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "ratings.dat").read_bytes() != (c / "ratings.dat").read_bytes()
    mtime = (b / "ratings.dat").stat().st_mtime_ns
    generate_synthetic("ci", 0, tmp_path, verbose=False)  # cached: not regenerated
    assert (b / "ratings.dat").stat().st_mtime_ns == mtime
    (b / "meta.json").unlink()  # missing marker: regenerated, same bytes
    generate_synthetic("ci", 0, tmp_path, verbose=False)
    assert (a / "ratings.dat").read_bytes() == (b / "ratings.dat").read_bytes()


def test_quirks_like_movielens(root):
    ds = get_reco_dataset("synthetic", 50, root, verbose=False)
    r = ds.ratings_df
    # file not time-sorted inside a user, same-second ties, popularity skew
    first_user = r[r.user_id == 1]["timestamp"].to_numpy()
    assert (np.diff(first_user) < 0).any()
    f = ds.flat
    same_user = np.diff(np.searchsorted(f.offsets, np.arange(len(f.item_ids)), "right")) == 0
    ties = (np.diff(f.timestamps) == 0) & same_user
    assert 0.1 < ties.mean() < 0.6
    counts = np.sort(r["item_id"].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.2 * counts.sum()  # top 10% of items: twice their share
    gaps = np.diff(f.timestamps)[same_user]
    assert gaps.max() > 86400 and np.median(gaps) < 600  # sessions: minutes inside, days between


def test_sequential_baseline_beats_popularity(root):
    """Next item = most frequent successor of the last item (counted on train) beats popularity on valid."""
    ds = get_reco_dataset("synthetic", 50, root, verbose=False)
    n = ds.num_items + 1
    succ = np.zeros((n, n))
    pop = np.zeros(n)
    for h, t in zip(ds.train.histories(), ds.train.target_item_ids.tolist()):
        s = np.array(h + [t])
        np.add.at(succ, (s[:-1], s[1:]), 1)
        np.add.at(pop, s, 1)
    hits_pop = hits_seq = 0
    for h, t in zip(ds.valid.histories(), ds.valid.target_item_ids.tolist()):
        for scores, is_seq in ((pop.copy(), False), (succ[h[-1]] * 1e6 + pop, True)):
            scores[h] = -1  # never recommend an item already in the history
            scores[0] = -1
            hit = t in np.argpartition(-scores, 10)[:10]
            hits_seq += hit and is_seq
            hits_pop += hit and not is_seq
    hr_pop, hr_seq = hits_pop / len(ds.valid), hits_seq / len(ds.valid)
    assert hr_seq > 2 * hr_pop and hr_seq - hr_pop > 0.2, (hr_pop, hr_seq)


def test_bad_size():
    with pytest.raises(ValueError, match="synthetic size"):
        generate_synthetic("huge", 0, "/nonexistent")
