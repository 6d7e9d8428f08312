"""MovieLens raw files -> pandas tables -> per-user, time-sorted sequences (the reference's preprocessing).

ML-1M ships three `::`-separated files (Latin-1):

    ratings.dat  UserID::MovieID::Rating::Timestamp      (1,000,209 lines, grouped by user, not time-sorted)
    movies.dat   MovieID::Title (Year)::Genre|Genre|...   (3,883 movies, ids 1..3952 with gaps)
    users.dat    UserID::Gender::Age::Occupation::Zip-code (6,040 users)

ML-100K uses its own format: `u.data` (tab-separated user, item, rating, timestamp), `u.item` (`|`-separated,
Latin-1, 19 genre flags) and `u.user` (`|`-separated: id, age, gender, occupation, zip).

The reference (generative-recommenders, research trainer) turns ratings into one row per user with
`ratings.sort_values("unix_timestamp").groupby("user_id")` and writes `sasrec_format.csv`. That sort is
pandas' default quicksort, which is *not stable*: two ratings of a user with the same timestamp come out in
an order that depends on the sort algorithm, not on the file. `sort_sequences(..., stable=False)` emulates
it deterministically with `numpy.argsort(kind="quicksort")` on the whole timestamp column (the call pandas
makes), followed by a stable grouping by user (what `groupby` does). numpy dispatches that quicksort to
SIMD sorting networks on CPUs that have them (AVX-512/AVX2), so the exact order of ties can differ between
machines and numpy builds; on one machine it is deterministic. `stable=True` (our default) keeps ties in
file order.

Every reader raises `DataFormatError` naming the file, the line and what was expected when the input is bad,
and `DataNotFoundError` when a file is missing. Finding and downloading ML-1M is in `fetch.py`.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hstu_tutorial.data.errors import DataFormatError, DataNotFoundError

ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")
ML100K_FILES = ("u.data", "u.item", "u.user")
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


# ---- reading the three tables -------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: expected the {what} file there")
    text = path.read_bytes().decode("latin-1")  # MovieLens is Latin-1; every byte decodes, nothing is lost
    if not text.strip():
        raise DataFormatError(path, 1, f"{what} lines, but the file is empty")
    return text


def _diagnose(
    path: Path,
    text: str,
    sep: str,
    ncols: int,
    int_cols: tuple[int, ...],
    example: str,
    positive_cols: tuple[int, ...] = (),
) -> None:
    """Slow path, only after the fast parser failed: find the first bad line and raise a DataFormatError."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != ncols:
            raise DataFormatError(
                path, lineno, f"{ncols} fields separated by {sep!r}, like {example!r}", line
            )
        for c in int_cols:
            try:
                value = int(fields[c])
            except ValueError:
                raise DataFormatError(
                    path, lineno, f"an integer in field {c + 1} of {ncols} (format {example!r})", line
                ) from None
            if c in positive_cols and value < 1:
                raise DataFormatError(
                    path, lineno, f"a positive id in field {c + 1} (0 is the padding id)", line
                )
    raise DataFormatError(path, None, f"lines like {example!r} (could not parse the file)")


def _parse_int_table(
    path: Path, text: str, sep: str, names: list[str], example: str, positive_cols: tuple[int, ...] = (0, 1)
) -> pd.DataFrame:
    """Parse an all-integer table fast (pandas' C parser); on any problem, find the bad line."""
    int_cols = tuple(range(len(names)))
    body = text.replace(sep, "\t") if sep != "\t" else text
    try:
        if sep != "\t" and "\t" in text:
            raise ValueError("tab inside a '::' file")
        with warnings.catch_warnings():  # a line with extra fields is reported below, with its number
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(body),
                sep="\t",
                header=None,
                names=names,
                dtype=np.int64,
                engine="c",
                index_col=False,
            )
    except (ValueError, pd.errors.ParserError):
        _diagnose(path, text, sep, len(names), int_cols, example, positive_cols)
        raise  # unreachable: _diagnose always raises
    # Extra fields on a line would be dropped silently: count the separators (ncols - 1 per line).
    wrong_width = text.count(sep) != (len(names) - 1) * len(df)
    if wrong_width or len(df) == 0 or any((df[names[c]] < 1).any() for c in positive_cols):
        _diagnose(path, text, sep, len(names), int_cols, example, positive_cols)
    return df


def read_ratings(path, sep: str = "::") -> pd.DataFrame:
    """ratings.dat (`UserID::MovieID::Rating::Timestamp`) -> DataFrame(user_id, item_id, rating, timestamp).

    Rows stay in file order. Parsed with pandas' C parser (ML-1M in well under a second)."""
    path = Path(path)
    text = _read_text(path, "ratings")
    example = sep.join(["1", "1193", "5", "978300760"])
    return _parse_int_table(path, text, sep, ["user_id", "item_id", "rating", "timestamp"], example)


def _split_lines(path: Path, text: str, sep: str, ncols: int, example: str) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if ncols == 3 and sep == "::":
            # A title may contain ':' itself: id is before the first '::', genres after the last one.
            head, _, rest = line.partition(sep)
            title, found, genres = rest.rpartition(sep)
            fields = [head, title, genres] if found and head else line.split(sep)
        else:
            fields = line.split(sep)
        if len(fields) != ncols:
            raise DataFormatError(
                path, lineno, f"{ncols} fields separated by {sep!r}, like {example!r}", line
            )
        try:
            fields[0] = int(fields[0])
        except ValueError:
            raise DataFormatError(
                path, lineno, f"an integer id in field 1 (format {example!r})", line
            ) from None
        if fields[0] < 1:
            raise DataFormatError(path, lineno, "a positive id in field 1 (0 is the padding id)", line)
        rows.append(fields)
    return rows


def read_movies(path) -> pd.DataFrame:
    """movies.dat (`MovieID::Title (Year)::Genres`, Latin-1) -> DataFrame(item_id, title, genres)."""
    path = Path(path)
    example = "1::Toy Story (1995)::Animation|Children's|Comedy"
    rows = _split_lines(path, _read_text(path, "movies"), "::", 3, example)
    df = pd.DataFrame(rows, columns=["item_id", "title", "genres"])
    df["item_id"] = df["item_id"].astype(np.int64)
    return df


def read_users(path) -> pd.DataFrame:
    """users.dat (`UserID::Gender::Age::Occupation::Zip-code`) -> DataFrame(user_id, sex, age, occupation,
    zip_code)."""
    path = Path(path)
    example = "1::F::1::10::48067"
    rows = _split_lines(path, _read_text(path, "users"), "::", 5, example)
    df = pd.DataFrame(rows, columns=["user_id", "sex", "age", "occupation", "zip_code"])
    df["user_id"] = df["user_id"].astype(np.int64)
    return df


def read_ml100k(folder) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """ML-100K's own files (u.data, u.item, u.user) -> (ratings, movies, users) in the ML-1M table layout."""
    folder = Path(folder)
    ratings = _parse_int_table(
        folder / "u.data",
        _read_text(folder / "u.data", "ratings"),
        "\t",
        ["user_id", "item_id", "rating", "timestamp"],
        "196\t242\t3\t881250949",
    )
    path = folder / "u.item"
    example = "1|Toy Story (1995)|01-Jan-1995||http://...|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"
    rows = _split_lines(path, _read_text(path, "movies"), "|", 5 + len(ML100K_GENRES), example)
    genres = []
    for lineno, r in enumerate(rows, start=1):
        flags = r[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(path, lineno, "19 genre flags, each 0 or 1", "|".join(map(str, r)))
        genres.append("|".join(g for g, f in zip(ML100K_GENRES, flags) if f == "1"))
    movies = pd.DataFrame({"item_id": [r[0] for r in rows], "title": [r[1] for r in rows], "genres": genres})
    movies["item_id"] = movies["item_id"].astype(np.int64)
    path = folder / "u.user"
    rows = _split_lines(path, _read_text(path, "users"), "|", 5, "1|24|M|technician|85711")
    users = pd.DataFrame(rows, columns=["user_id", "age", "sex", "occupation", "zip_code"])
    users = users[["user_id", "sex", "age", "occupation", "zip_code"]].astype({"user_id": np.int64})
    return ratings, movies, users


# ---- checks across tables ------------------------------------------------------------------------------


def check_consistency(
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    users: pd.DataFrame | None,
    ratings_path,
    movies_path,
    users_path=None,
) -> None:
    """Every rated item must be in movies, every rating user in users; ids unique. Errors name the line."""
    if movies["item_id"].duplicated().any():
        i = int(np.flatnonzero(movies["item_id"].duplicated().to_numpy())[0])
        raise DataFormatError(movies_path, i + 1, "each MovieID once", str(movies["item_id"].iloc[i]))
    known = ratings["item_id"].isin(movies["item_id"]).to_numpy()
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataFormatError(
            ratings_path,
            i + 1,
            f"a MovieID listed in {Path(movies_path).name}",
            f"MovieID {int(ratings['item_id'].iloc[i])}",
        )
    if users is not None:
        known = ratings["user_id"].isin(users["user_id"]).to_numpy()
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise DataFormatError(
                ratings_path,
                i + 1,
                f"a UserID listed in {Path(users_path).name}",
                f"UserID {int(ratings['user_id'].iloc[i])}",
            )


# ---- sequences ----------------------------------------------------------------------------------------


@dataclass
class FlatSequences:
    """All users' time-sorted histories, concatenated: `values (T,)` per field and `offsets (U+1,)`."""

    user_ids: np.ndarray  # (U,) sorted ascending
    offsets: np.ndarray  # (U+1,) offsets[0] = 0, offsets[-1] = T
    item_ids: np.ndarray  # (T,)
    ratings: np.ndarray  # (T,)
    timestamps: np.ndarray  # (T,)
    order: np.ndarray  # (T,) row of ratings_df each position came from


def sort_sequences(ratings: pd.DataFrame, stable: bool = True) -> FlatSequences:
    """Group ratings by user, oldest first. `stable=True` keeps same-second ties in file order;
    `stable=False` reproduces the reference's `sort_values("unix_timestamp").groupby("user_id")`."""
    ts = ratings["timestamp"].to_numpy()
    users = ratings["user_id"].to_numpy()
    if stable:
        order = np.lexsort((ts, users))  # lexsort is stable: sort by user, then time, ties in file order
    else:
        by_time = np.argsort(ts, kind="quicksort")  # what pandas' sort_values does (not stable)
        order = by_time[np.argsort(users[by_time], kind="stable")]  # groupby keeps the order within groups
    u_sorted = users[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    offsets = np.r_[starts, len(order)].astype(np.int64)
    return FlatSequences(
        user_ids=u_sorted[starts].astype(np.int64),
        offsets=offsets,
        item_ids=ratings["item_id"].to_numpy()[order].astype(np.int64),
        ratings=ratings["rating"].to_numpy()[order].astype(np.int64),
        timestamps=ts[order].astype(np.int64),
        order=order.astype(np.int64),
    )


def sequences_frame(flat: FlatSequences) -> pd.DataFrame:
    """One row per user: user_id and the three sequences as Python lists (oldest first)."""
    cuts = flat.offsets[1:-1]
    return pd.DataFrame(
        {
            "user_id": flat.user_ids,
            "sequence_item_ids": [a.tolist() for a in np.split(flat.item_ids, cuts)],
            "sequence_ratings": [a.tolist() for a in np.split(flat.ratings, cuts)],
            "sequence_timestamps": [a.tolist() for a in np.split(flat.timestamps, cuts)],
        }
    )


def encode_user_features(users: pd.DataFrame) -> pd.DataFrame:
    """sex, age_group, occupation, zip_code as category codes (sorted categories), as the reference does."""
    out = pd.DataFrame({"user_id": users["user_id"].to_numpy()})
    for src, dst in (
        ("sex", "sex"),
        ("age", "age_group"),
        ("occupation", "occupation"),
        ("zip_code", "zip_code"),
    ):
        col = users[src]
        if src in ("age", "occupation") and col.astype(str).str.fullmatch(r"\d+").all():
            col = col.astype(np.int64)  # numeric codes sort numerically, as pandas does on the int column
        out[dst] = pd.Categorical(col).codes.astype(np.int64)
    return out


def write_sasrec_format(flat: FlatSequences, users: pd.DataFrame | None, path) -> Path:
    """Write the reference's `sasrec_format.csv`: index, user_id, sequence_item_ids, sequence_ratings,
    sequence_timestamps (comma-joined strings), then sex, age_group, occupation, zip_code (category codes).

    The reference shuffles the rows (`sample(frac=1)`); we keep them in user order (no reader depends on it).
    Written atomically (temp file, then rename).
    """
    path = Path(path)
    cuts = flat.offsets[1:-1]
    join = lambda a: [",".join(map(str, x.tolist())) for x in np.split(a, cuts)]
    df = pd.DataFrame(
        {
            "index": np.arange(len(flat.user_ids)),
            "user_id": flat.user_ids,
            "sequence_item_ids": join(flat.item_ids),
            "sequence_ratings": join(flat.ratings),
            "sequence_timestamps": join(flat.timestamps),
        }
    )
    if users is not None:
        df = df.merge(encode_user_features(users), on="user_id", how="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


# ---- loading a folder ------------------------------------------------------------------------------


def has_ml1m_files(folder) -> bool:
    """True when `folder` holds ML-1M's ratings.dat, movies.dat and users.dat."""
    return folder is not None and all((Path(folder) / f).is_file() for f in ML1M_FILES)


def load_ml1m_folder(folder) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read and cross-check the three ML-1M-format files of `folder` -> (ratings, movies, users)."""
    folder = Path(folder)
    ratings = read_ratings(folder / "ratings.dat")
    movies = read_movies(folder / "movies.dat")
    users = read_users(folder / "users.dat")
    check_consistency(
        ratings, movies, users, folder / "ratings.dat", folder / "movies.dat", folder / "users.dat"
    )
    return ratings, movies, users


def load_ml100k_folder(folder) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read and cross-check ML-100K's u.data, u.item and u.user in `folder` -> (ratings, movies, users)."""
    folder = Path(folder)
    missing = [f for f in ML100K_FILES if not (folder / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"ML-100K files {missing} not found in {folder}: download "
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip, unzip it and pass data_dir= the "
            "folder holding u.data, u.item and u.user (default: data/ml-100k)"
        )
    ratings, movies, users = read_ml100k(folder)
    check_consistency(ratings, movies, users, folder / "u.data", folder / "u.item", folder / "u.user")
    return ratings, movies, users
