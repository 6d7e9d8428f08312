"""A seeded MovieLens look-alike with structure a sequence model can learn (no download, no license).

The story. Items (movies) fall into `clusters` (think: genres or franchises), each with a Zipf-shaped
popularity, and inside a cluster the movies form a chain (a series: part 1, part 2, ...). A user starts in
a cluster drawn by cluster popularity and, step by step:

* follows the chain (the next movie of the series after the one just watched) with probability `p_chain`;
* otherwise picks a movie of the current cluster by popularity;
* drifts to another cluster with probability `p_switch` (mostly to the "next" cluster on a ring, so the
  drift itself is predictable), and always when the current cluster holds nothing left to watch.

A user never rates a movie twice (as in MovieLens). Timestamps come in sessions: inside a session the gaps
are seconds to minutes and often zero (several ratings in the same second, which makes the order of ties
matter), sessions are hours to months apart. So the next item depends on the last ones (chains, clusters),
which popularity alone cannot capture: a sequence model beats a popularity baseline clearly.

Files are written in ML-1M's raw format (`ratings.dat` `UserID::MovieID::Rating::Timestamp`, `movies.dat`
Latin-1 with titles and genres, `users.dat`), users in id order and each user's ratings shuffled, like ML-1M.
Item ids leave gaps (as ML-1M's 3,883 movies spread over ids 1..3952), so `num_items` != catalogue size.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hstu_tutorial.data.errors import DataWriteError, UnknownDatasetError
from hstu_tutorial.data.movielens import ML100K_GENRES
from hstu_tutorial.data.paths import cache_root, owned_folder

GENERATOR_VERSION = 1
ML_GENRES = ML100K_GENRES[1:]  # ML-1M's 18 genres (ML-100K adds 'unknown' first)
_ADJ = (
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Golden",
    "Broken",
    "Wild",
    "Secret",
    "Frozen",
    "Lost",
    "Dark",
    "Bright",
    "Café",
    "Señor",
    "Über",
    "Noël",
    "Ångström",
    "Distant",
    "Electric",
    "Quiet",
    "Savage",
    "Velvet",
)
_NOUN = (
    "Harbor",
    "Empire",
    "River",
    "Garden",
    "Machine",
    "Kingdom",
    "Station",
    "Dream",
    "Shadow",
    "Voyage",
    "Promise",
    "Island",
    "Circus",
    "Signal",
    "Orchard",
    "Frontier",
    "Mirror",
    "Comet",
    "Lighthouse",
    "Tango",
)
START_TS, END_TS = 956_703_932, 1_046_454_590  # ML-1M's first and last timestamps (2000-04-25 .. 2003-02-28)


@dataclass(frozen=True)
class SyntheticConfig:
    num_users: int
    num_items: int
    max_item_id: int  # ids are drawn from 1..max_item_id (gaps, as in ML-1M); the largest is always used
    num_clusters: int
    shortest: int  # fewest ratings per user
    longest: int  # most ratings per user
    mean_len: float  # lengths are log-normal, clipped to [shortest, longest]
    p_chain: float = 0.35
    p_switch: float = 0.06
    p_ring: float = 0.75  # a switch goes to the next cluster on the ring with this probability
    p_tie: float = 0.3  # chance that a rating shares the previous one's second
    p_session: float = 0.05  # chance that a new session starts (gap of hours to months)


SIZES = {
    "ci": SyntheticConfig(500, 300, 320, 8, 30, 60, 45.0),
    "small": SyntheticConfig(2000, 1200, 1260, 24, 20, 400, 80.0),
    "ml-1m": SyntheticConfig(6040, 3883, 3952, 40, 20, 2314, 165.6),
}


def synthetic_folder(size: str, seed: int, root) -> Path:
    return Path(root) / f"synthetic-{size}-seed{seed}"


def _lengths(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.longest - cfg.shortest <= 60:
        return rng.integers(cfg.shortest, cfg.longest + 1, size=cfg.num_users)
    sigma = 1.0  # log-normal with the requested mean, like ML-1M's long tail of heavy raters
    mu = np.log(cfg.mean_len - cfg.shortest) - sigma**2 / 2
    extra = rng.lognormal(mu, sigma, size=cfg.num_users)
    return np.clip(
        cfg.shortest + extra.astype(np.int64), cfg.shortest, min(cfg.longest, int(0.6 * cfg.num_items))
    )


def simulate(cfg: SyntheticConfig, seed: int):
    """Run the story above. Returns dict of arrays: ratings (user, item, rating, timestamp, in generation
    order), movies (ids, titles, genres), users (ids, sex, age, occupation, zip)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(
        np.r_[rng.choice(np.arange(1, cfg.max_item_id), cfg.num_items - 1, replace=False), cfg.max_item_id]
    )  # (I,)
    C = cfg.num_clusters
    cluster = rng.permutation(np.arange(cfg.num_items) % C)  # (I,) balanced cluster sizes
    S = int(np.bincount(cluster).max())
    cl_items = np.zeros((C, S), dtype=np.int64)  # (C, S) item ids, 0 = padding; column order = chain order
    cl_logw = np.full((C, S), -np.inf)  # (C, S) log popularity (Zipf inside the cluster)
    chain_next = np.zeros(cfg.max_item_id + 1, dtype=np.int64)  # item -> next item of its series
    item_cluster = np.zeros(cfg.max_item_id + 1, dtype=np.int64)
    for c in range(C):
        members = rng.permutation(ids[cluster == c])
        cl_items[c, : len(members)] = members
        cl_logw[c, : len(members)] = -1.3 * np.log1p(rng.permutation(len(members)))  # Zipf exponent 1.3
        chain_next[members[:-1]] = members[1:]
        item_cluster[members] = c
    cluster_w = 1.0 / np.arange(1, C + 1) ** 1.0  # cluster popularity, Zipf 1.0
    cluster_w = rng.permutation(cluster_w / cluster_w.sum())

    U = cfg.num_users
    target = _lengths(cfg, rng)  # (U,)
    cur = rng.choice(C, size=U, p=cluster_w)  # (U,) current cluster
    last = np.zeros(U, dtype=np.int64)  # (U,) last item watched
    count = np.zeros(U, dtype=np.int64)
    seen = np.zeros((U, cfg.max_item_id + 1), dtype=bool)
    out_user, out_item = [], []
    for _ in range(20 * int(target.max())):  # bounded: each step emits for almost every active user
        a = np.flatnonzero(count < target)  # (A,) active users
        if len(a) == 0:
            break
        A = len(a)
        switch = rng.random(A) < cfg.p_switch
        ring = rng.random(A) < cfg.p_ring
        jump = np.where(ring, (cur[a] + 1) % C, rng.choice(C, size=A, p=cluster_w))
        cur[a] = np.where(switch, jump, cur[a])
        nxt = chain_next[last[a]]  # (A,) next item of the series, 0 if none
        use_chain = (rng.random(A) < cfg.p_chain) & (nxt > 0) & ~seen[a, nxt] & ~switch
        items = cl_items[cur[a]]  # (A, S)
        logits = cl_logw[cur[a]] + rng.gumbel(size=(A, S))  # Gumbel-max = sampling by popularity
        logits[seen[a[:, None], items]] = -np.inf  # never the same movie twice
        pick = logits.argmax(1)
        ok = np.isfinite(logits[np.arange(A), pick])
        chosen = np.where(use_chain, nxt, items[np.arange(A), pick])
        emit = use_chain | ok
        # A user who has watched the whole cluster moves on (to a random cluster, by popularity).
        stuck = a[~emit]
        cur[stuck] = rng.choice(C, size=len(stuck), p=cluster_w)
        e, it = a[emit], chosen[emit]
        seen[e, it] = True
        last[e] = it
        count[e] += 1
        out_user.append(e)
        out_item.append(it)
    user = np.concatenate(out_user)
    item = np.concatenate(out_item)
    order = np.argsort(user, kind="stable")  # group by user, keep generation (= time) order
    user, item = user[order], item[order]
    T = len(user)

    # Time: sessions of seconds-to-minutes gaps (often 0 s), separated by gaps of hours to months.
    new_session = rng.random(T) < cfg.p_session
    gaps = np.where(rng.random(T) < cfg.p_tie, 0, 1 + rng.exponential(45.0, T).astype(np.int64))
    gaps = np.where(new_session, np.exp(rng.normal(np.log(2 * 86400), 1.6, T)).astype(np.int64), gaps)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    gaps[starts] = 0
    csum = np.cumsum(gaps)
    elapsed = csum - np.repeat(csum[starts], np.diff(np.r_[starts, T]))  # (T,) seconds since the user's first
    span = elapsed[np.r_[starts[1:], T] - 1]  # (U,)
    first = START_TS + (rng.beta(1.0, 6.0, U) * (END_TS - START_TS)).astype(np.int64)
    first = np.minimum(first, END_TS - span)
    first = np.maximum(first, START_TS)
    ts = first[user] + elapsed

    user_bias = rng.normal(0, 0.45, U)
    item_bias = np.zeros(cfg.max_item_id + 1)
    item_bias[ids] = rng.normal(0, 0.55, len(ids))
    rating = np.clip(np.rint(3.6 + user_bias[user] + item_bias[item] + rng.normal(0, 0.85, T)), 1, 5)

    years = rng.integers(1919, 2001, len(ids))
    titles = [
        f"The {_ADJ[rng.integers(len(_ADJ))]} {_NOUN[rng.integers(len(_NOUN))]} {k} ({y})"
        for k, y in zip(rng.integers(1, 9, len(ids)), years)
    ]
    primary = rng.permutation(len(ML_GENRES))[np.arange(C) % len(ML_GENRES)]
    genres = []
    for i in ids:
        g = {ML_GENRES[primary[item_cluster[i]]]}
        if rng.random() < 0.5:
            g.add(ML_GENRES[rng.integers(len(ML_GENRES))])
        genres.append("|".join(sorted(g)))
    ages = np.array([1, 18, 25, 35, 45, 50, 56])
    users = {
        "user_id": np.arange(1, U + 1),
        "sex": np.where(rng.random(U) < 0.72, "M", "F"),
        "age": rng.choice(ages, size=U, p=[0.04, 0.18, 0.35, 0.2, 0.09, 0.08, 0.06]),
        "occupation": rng.integers(0, 21, U),
        "zip_code": [f"{z:05d}" for z in rng.integers(1000, 99999, U)],
    }
    return {
        "user": user + 1,
        "item": item,
        "rating": rating.astype(np.int64),
        "timestamp": ts.astype(np.int64),
        "movie_id": ids,
        "title": titles,
        "genres": genres,
        "users": users,
        "item_cluster": item_cluster,
        "chain_next": chain_next,
    }


def generate_synthetic(
    size: str = "ci", seed: int = 0, root=None, *, force: bool = False, verbose: bool = True
) -> Path:
    """Write ratings.dat, movies.dat, users.dat for `size` ("ci", "small", "ml-1m") and `seed` into
    `<root>/synthetic-<size>-seed<seed>/` (reused when already there) and return that folder.

    `root` defaults to the project's cache folder (`hstu_tutorial.data.paths.cache_root()`); a new folder is
    written only into a root the project owns (see `owned_folder`), else `DataWriteError` says what to do."""
    if size not in SIZES:
        raise UnknownDatasetError("synthetic size", size, SIZES)
    if root is None:
        root = cache_root()
    folder = synthetic_folder(size, seed, root)
    meta_path = folder / "meta.json"
    if not force and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("version") == GENERATOR_VERSION:
                return folder
        except json.JSONDecodeError:
            pass
    t0 = time.perf_counter()
    cfg = SIZES[size]
    sim = simulate(cfg, seed)
    rng = np.random.default_rng(seed + 1)
    # File order as in ML-1M: users in id order, each user's ratings shuffled (not time-sorted).
    key = sim["user"] * 1.0 + rng.random(len(sim["user"]))
    o = np.argsort(key, kind="stable")
    lines = "\n".join(
        f"{u}::{i}::{r}::{t}"
        for u, i, r, t in zip(
            sim["user"][o].tolist(),
            sim["item"][o].tolist(),
            sim["rating"][o].tolist(),
            sim["timestamp"][o].tolist(),
        )
    )
    movies = "\n".join(
        f"{m}::{t}::{g}" for m, t, g in zip(sim["movie_id"].tolist(), sim["title"], sim["genres"])
    )
    us = sim["users"]
    users = "\n".join(
        f"{u}::{s}::{a}::{o_}::{z}"
        for u, s, a, o_, z in zip(
            us["user_id"].tolist(), us["sex"], us["age"].tolist(), us["occupation"].tolist(), us["zip_code"]
        )
    )
    owned_folder(root)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    except OSError as e:
        raise DataWriteError(
            f"cannot write the synthetic dataset into {root} ({e}); set HSTU_CACHE_DIR to a folder you own"
        ) from None
    try:
        (tmp / "ratings.dat").write_text(lines + "\n", encoding="latin-1")
        (tmp / "movies.dat").write_text(movies + "\n", encoding="latin-1")
        (tmp / "users.dat").write_text(users + "\n", encoding="latin-1")
        meta = {
            "version": GENERATOR_VERSION,
            "size": size,
            "seed": seed,
            "config": asdict(cfg),
            "ratings": len(sim["user"]),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not meta_path.is_file():  # a concurrent writer may have won the race; otherwise re-raise
            raise
    if verbose:
        print(
            f"[hstu_tutorial] generated synthetic-{size}-seed{seed} ({len(sim['user']):,} ratings) in "
            f"{time.perf_counter() - t0:.2f} s"
        )
    return folder
