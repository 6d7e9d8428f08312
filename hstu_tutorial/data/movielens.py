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

Every reader raises `DataFormatError` naming the file, the line and what was expected when the input is bad.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
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


class DataFormatError(ValueError):
    """A raw data file does not look as expected: names the file, the line (1-based) and what was expected."""

    def __init__(self, path, line: int | None, expected: str, seen: str | None = None):
        self.path, self.line, self.expected, self.seen = str(path), line, expected, seen
        where = f"{path}, line {line}" if line is not None else f"{path}"
        msg = f"{where}: expected {expected}"
        if seen is not None:
            msg += f"; saw {seen!r}"
        super().__init__(msg)


# ---- reading the three tables -------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the {what} file there")
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


# ---- finding, downloading and extracting ML-1M --------------------------------------------------------


def has_ml1m_files(folder) -> bool:
    return folder is not None and all((Path(folder) / f).is_file() for f in ML1M_FILES)


def md5_of(path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_extract(zip_path, target) -> list[Path]:
    """Extract `zip_path` into `target`, refusing members that would land outside it (absolute paths, `..`,
    symlinks) and archives that are truncated or corrupt. Extracts into a temp folder, then moves in."""
    zip_path, target = Path(zip_path), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for m in members:
                dest = (root / m.filename).resolve()
                is_link = stat.S_ISLNK(m.external_attr >> 16)
                if (
                    m.filename.startswith(("/", "\\"))
                    or is_link
                    or (dest != root and root not in dest.parents)
                ):
                    raise DataFormatError(
                        zip_path,
                        None,
                        f"archive members inside {target}",
                        f"member {m.filename!r} escapes the target folder; refusing to extract",
                    )
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
            try:
                zf.extractall(tmp)
                moved = []
                for child in tmp.iterdir():
                    dest = target / child.name
                    if dest.exists():
                        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                    os.replace(child, dest)
                    moved.append(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return moved
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as e:
        raise DataFormatError(
            zip_path,
            None,
            "a complete zip archive (is the download truncated? delete the file and try again)",
            str(e),
        ) from None


def download(url: str, dest, *, md5: str | None = None, timeout: float = 30.0, opener=None) -> Path:
    """Download `url` to `dest` atomically (to `dest.part`, checked, then renamed). `opener(url, timeout=)`
    defaults to `urllib.request.urlopen` (tests inject a fake one)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    part = dest.with_name(dest.name + ".part")
    with opener(url, timeout=timeout) as response, open(part, "wb") as f:
        shutil.copyfileobj(response, f, length=1 << 20)
    if md5 is not None and (got := md5_of(part)) != md5:
        part.unlink()
        raise DataFormatError(
            url, None, f"md5 {md5}", f"md5 {got} (download corrupted or changed; try again)"
        )
    os.replace(part, dest)
    return dest


def offline_message(folder: Path, reason: str) -> str:
    where = folder.parent if folder.name == "ml-1m" else folder
    return (
        f"MovieLens-1M is not in {folder} and could not be downloaded ({reason}).\n"
        f"Download {ML1M_URL} (md5 {ML1M_MD5}) by hand and put ml-1m.zip into {where}, "
        f"or unzip it so that {folder}/ratings.dat, movies.dat and users.dat exist; "
        f"or pass data_dir= a folder holding those three files. Without network, use the 'synthetic' dataset."
    )


def find_or_fetch_ml1m(
    folder=None,
    *,
    url: str = ML1M_URL,
    md5: str | None = ML1M_MD5,
    timeout: float = 30.0,
    opener=None,
    download_ok: bool | None = None,
    verbose: bool = True,
) -> Path:
    """Return a folder holding ML-1M's ratings.dat, movies.dat and users.dat.

    Looks, in order, at: `folder` itself (any folder with the three files is used as is, e.g.
    `data/ml-1m-u2999`), `folder/ml-1m`, a zip the user placed (`folder/ml-1m.zip` or next to `folder`), and
    finally downloads the zip (md5-checked) unless `download_ok` is False or $HSTU_OFFLINE is set.
    """
    folder = Path(folder)
    for cand in (folder, folder / "ml-1m"):
        if has_ml1m_files(cand):
            return cand
    zips = [folder / "ml-1m.zip", folder.parent / "ml-1m.zip"]
    for z in zips:
        if z.is_file():
            if md5 is not None and (got := md5_of(z)) != md5:
                raise DataFormatError(
                    z,
                    None,
                    f"md5 {md5} (the official ml-1m.zip)",
                    f"md5 {got}: the file is corrupt or a different archive; delete it and retry",
                )
            safe_extract(z, z.parent)
            for cand in (z.parent / "ml-1m", folder, folder / "ml-1m"):
                if has_ml1m_files(cand):
                    return cand
            raise DataFormatError(z, None, "an archive holding ml-1m/ratings.dat, movies.dat and users.dat")
    if download_ok is None:
        download_ok = not os.environ.get("HSTU_OFFLINE")
    if not download_ok:
        raise FileNotFoundError(offline_message(folder, "downloads are off: HSTU_OFFLINE is set"))
    base = folder.parent if folder.name == "ml-1m" else folder
    z = base / "ml-1m.zip"
    if verbose:
        print(f"[hstu_tutorial] downloading {url} -> {z}")
    t0 = time.perf_counter()
    try:
        download(url, z, md5=md5, timeout=timeout, opener=opener)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise FileNotFoundError(offline_message(folder, f"{type(e).__name__}: {e}")) from None
    if verbose:
        print(f"[hstu_tutorial] downloaded in {time.perf_counter() - t0:.1f} s, md5 ok")
    safe_extract(z, base)
    if has_ml1m_files(base / "ml-1m"):
        return base / "ml-1m"
    raise DataFormatError(z, None, "an archive holding ml-1m/ratings.dat, movies.dat and users.dat")


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
    folder = Path(folder)
    missing = [f for f in ML100K_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"ML-100K files {missing} not found in {folder}. Download "
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip, unzip it and pass data_dir= the "
            "folder "
            "holding u.data, u.item and u.user (default: data/ml-100k)."
        )
    ratings, movies, users = read_ml100k(folder)
    check_consistency(ratings, movies, users, folder / "u.data", folder / "u.item", folder / "u.user")
    return ratings, movies, users
