"""MovieLens readers: parsing, errors naming file and line, download/md5/zip safety, orderings, csv."""

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hstu_tutorial.data import fetch, get_reco_dataset
from hstu_tutorial.data import movielens as ml
from hstu_tutorial.data.errors import DataFormatError, DataNotFoundError
from hstu_tutorial.errors import DataError


@pytest.fixture(scope="module")
def synthetic_ci(tmp_path_factory):
    return get_reco_dataset("synthetic", 50, tmp_path_factory.mktemp("syn"), verbose=False)


RATINGS = "1::10::5::100\n1::20::3::50\n2::11::4::5\n2::12::2::5\n"
MOVIES = (
    "10::Toy Story (1995)::Animation|Comedy\n11::Café Society: Part 1 (1999)::Drama\n"
    "12::X (2000)::Drama\n20::Y (1990)::War\n"
)
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


def write_ml1m(folder: Path, ratings=RATINGS, movies=MOVIES, users=USERS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(ratings.encode("latin-1"))
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_bytes(users.encode("latin-1"))
    return folder


def test_parse_three_tables(tmp_path):
    f = write_ml1m(tmp_path)
    ratings, movies, users = ml.load_ml1m_folder(f)
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ratings["item_id"].tolist() == [10, 20, 11, 12]  # file order kept
    assert ratings.dtypes.unique().tolist() == [np.dtype("int64")]
    # Latin-1 decoded, and a ':' inside a title does not split it.
    assert movies.set_index("item_id").loc[11, "title"] == "Café Society: Part 1 (1999)"
    assert users["sex"].tolist() == ["F", "M"]


@pytest.mark.parametrize(
    "ratings, line, words",
    [
        ("1,10,5,100\n", 1, ["4 fields", "'::'"]),  # wrong separator
        ("1::10::5::100\n1::20::3::50\n2::11::4\n", 3, ["4 fields"]),  # missing column
        ("1::10::5::100\nx::20::3::50\n", 2, ["integer", "field 1"]),  # non-integer id
        ("1::10::5::100\n1::20::3.5::50\n", 2, ["integer", "field 3"]),
        ("1::10::5::100\n1::0::3::50\n", 2, ["positive id"]),  # 0 is the padding id
        ("", 1, ["empty"]),
        ("1::10::5::100::7\n", 1, ["4 fields"]),
    ],
)
def test_bad_ratings_name_file_and_line(tmp_path, ratings, line, words):
    write_ml1m(tmp_path, ratings=ratings)
    with pytest.raises(DataFormatError) as e:
        ml.read_ratings(tmp_path / "ratings.dat")
    assert e.value.line == line and e.value.path.endswith("ratings.dat")
    assert f"ratings.dat, line {line}" in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_bad_movies_and_users(tmp_path):
    write_ml1m(tmp_path, movies="10::Toy Story (1995)::Comedy\n11::Heat (1995)\n")
    with pytest.raises(DataFormatError, match=r"movies.dat, line 2: expected 3 fields"):
        ml.read_movies(tmp_path / "movies.dat")
    write_ml1m(tmp_path, users="1::F::1::10::48067\n2::M::56::16\n")
    with pytest.raises(DataFormatError, match=r"users.dat, line 2: expected 5 fields"):
        ml.read_users(tmp_path / "users.dat")
    write_ml1m(tmp_path, users="one::F::1::10::48067\n")
    with pytest.raises(DataFormatError, match=r"users.dat, line 1: expected an integer id"):
        ml.read_users(tmp_path / "users.dat")


def test_rating_of_unknown_movie_or_user(tmp_path):
    write_ml1m(tmp_path, ratings=RATINGS + "2::99::4::9\n")
    with pytest.raises(
        DataFormatError, match=r"ratings.dat, line 5: expected a MovieID listed in movies.dat"
    ):
        ml.load_ml1m_folder(tmp_path)
    write_ml1m(tmp_path, ratings=RATINGS + "7::10::4::9\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 5: expected a UserID listed in users.dat"):
        ml.load_ml1m_folder(tmp_path)


def test_ml100k_reader(tmp_path):
    flags = "|".join(["0"] * 19)
    (tmp_path / "u.data").write_text("1\t2\t3\t881250949\n2\t1\t5\t881250950\n1\t1\t4\t881250948\n")
    item = f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags[:-1]}1\n2|Señor (1995)|01-Jan-1995||http://y|1|{flags[2:]}\n"
    (tmp_path / "u.item").write_bytes(item.encode("latin-1"))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    ds = get_reco_dataset("ml-100k", 10, tmp_path, verbose=False)
    assert ds.sequences["sequence_item_ids"].tolist() == [[1, 2], [1]]
    assert ds.item_titles[2] == "Señor (1995)"
    assert ds.movies_df.set_index("item_id").loc[1, "genres"] == "Western"
    assert ds.movies_df.set_index("item_id").loc[2, "genres"] == "unknown"
    (tmp_path / "u.data").write_text("1 2 3 881250949\n")
    with pytest.raises(DataFormatError, match=r"u.data, line 1: expected 4 fields separated by '\\t'"):
        get_reco_dataset("ml-100k", 10, tmp_path, verbose=False)


# ---- orderings ------------------------------------------------------------------------------------------


def test_stable_order_keeps_ties_in_file_order():
    r = pd.DataFrame(
        {
            "user_id": [5, 5, 5, 3, 5],
            "item_id": [1, 2, 3, 4, 5],
            "rating": [1] * 5,
            "timestamp": [9, 7, 7, 1, 7],
        }
    )
    flat = ml.sort_sequences(r, stable=True)
    assert flat.user_ids.tolist() == [3, 5] and flat.offsets.tolist() == [0, 1, 5]
    assert flat.item_ids.tolist() == [4, 2, 3, 5, 1]


def test_reference_order_is_pandas_sort_values_groupby(synthetic_ci):
    """Our emulation of the reference == the reference's own pandas code, and differs from the stable one."""
    r = synthetic_ci.ratings_df
    ref = r.sort_values(by=["timestamp"]).groupby("user_id")  # the reference's line, verbatim semantics
    want = list(ref["item_id"].apply(list))
    flat = ml.sort_sequences(r, stable=False)
    got = ml.sequences_frame(flat)["sequence_item_ids"].tolist()
    assert got == want
    stable = ml.sequences_frame(ml.sort_sequences(r, stable=True))["sequence_item_ids"].tolist()
    assert sum(a != b for a, b in zip(stable, got)) > 0, "ties should make the two orders differ"
    for a, b in zip(stable, got):
        assert sorted(a) == sorted(b)
    # stable: within equal timestamps of a user, rows come in file order
    s = ml.sort_sequences(r, stable=True)
    same = (np.diff(s.timestamps) == 0) & (
        np.diff(np.searchsorted(s.offsets, np.arange(len(s.order)), "right")) == 0
    )
    assert (np.diff(s.order)[same] > 0).all()


def test_sasrec_format_csv(tmp_path, synthetic_ci):
    path = synthetic_ci.write_sasrec_format(tmp_path / "sasrec_format.csv")
    df = pd.read_csv(path)
    assert list(df.columns) == [
        "index",
        "user_id",
        "sequence_item_ids",
        "sequence_ratings",
        "sequence_timestamps",
        "sex",
        "age_group",
        "occupation",
        "zip_code",
    ]
    assert len(df) == synthetic_ci.num_users
    row = df.iloc[3]
    seq = synthetic_ci.sequences.iloc[3]
    assert [int(x) for x in row["sequence_item_ids"].split(",")] == seq["sequence_item_ids"]
    assert [int(x) for x in row["sequence_timestamps"].split(",")] == seq["sequence_timestamps"]
    assert set(df["sex"]) <= {0, 1} and df["age_group"].between(0, 6).all()
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


# ---- download, md5, zip safety ----------------------------------------------------------------------------


def make_zip(path: Path, members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


GOOD = {"ml-1m/ratings.dat": RATINGS, "ml-1m/movies.dat": MOVIES.encode("latin-1"), "ml-1m/users.dat": USERS}


class FakeOpener:
    def __init__(self, payload=None, error=None):
        self.payload, self.error, self.calls = payload, error, []

    def __call__(self, url, timeout=None):
        self.calls.append((url, timeout))
        if self.error:
            raise self.error
        return io.BytesIO(self.payload)


def test_download_checks_md5_and_extracts_into_the_cache(tmp_path):
    payload = make_zip(tmp_path / "src.zip", GOOD)
    md5 = hashlib.md5(payload).hexdigest()
    opener = FakeOpener(payload)
    cache = tmp_path / "cache"
    folder = fetch.find_or_fetch_ml1m(
        tmp_path / "data" / "ml-1m",
        md5=md5,
        opener=opener,
        download_ok=True,
        timeout=3,
        verbose=False,
        cache_dir=cache,
    )
    assert folder == cache / "ml-1m" and ml.has_ml1m_files(folder)
    assert opener.calls == [(fetch.ML1M_URL, 3)]
    assert (cache / "ml-1m.zip").is_file() and not list(cache.glob("*.part"))
    assert not (tmp_path / "data").exists()  # the data folder is only read
    # second call: cached, no network
    again = fetch.find_or_fetch_ml1m(
        tmp_path / "data" / "ml-1m", opener=FakeOpener(error=AssertionError()), cache_dir=cache
    )
    assert again == folder


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    payload = make_zip(tmp_path / "src.zip", GOOD)
    with pytest.raises(DataFormatError, match="md5"):
        fetch.find_or_fetch_ml1m(
            tmp_path / "d",
            md5="0" * 32,
            opener=FakeOpener(payload),
            download_ok=True,
            verbose=False,
            cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "d").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".hstu_tutorial-cache"]


def test_offline_fails_fast_with_instructions(tmp_path):
    err = urllib.error.URLError("no network")
    with pytest.raises(DataNotFoundError) as e:
        fetch.find_or_fetch_ml1m(
            tmp_path / "ml-1m",
            opener=FakeOpener(error=err),
            download_ok=True,
            verbose=False,
            cache_dir=tmp_path / "cache",
        )
    msg = str(e.value)
    assert fetch.ML1M_URL in msg and str(tmp_path) in msg and "ratings.dat" in msg and "\n" not in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataError)
    with pytest.raises(FileNotFoundError, match="HSTU_OFFLINE"):
        fetch.find_or_fetch_ml1m(tmp_path / "ml-1m", download_ok=False, cache_dir=tmp_path / "cache")


def test_placed_zip_and_placed_folder(tmp_path):
    payload = make_zip(tmp_path / "ml-1m.zip", GOOD)
    cache = tmp_path / "cache"
    folder = fetch.find_or_fetch_ml1m(
        tmp_path / "ml-1m", md5=hashlib.md5(payload).hexdigest(), download_ok=False, cache_dir=cache
    )
    assert ml.has_ml1m_files(folder) and folder == cache / "ml-1m"  # extracted into the cache
    assert not (tmp_path / "ml-1m").exists()
    (tmp_path / "x").mkdir()
    make_zip(tmp_path / "x" / "ml-1m.zip", GOOD)
    with pytest.raises(DataFormatError, match=r"ml-1m.zip: expected md5"):  # official md5 != home-made zip
        fetch.find_or_fetch_ml1m(tmp_path / "x", download_ok=False, cache_dir=tmp_path / "cache2")
    # any folder with the three files is used as is (e.g. data/ml-1m-u2999), md5 not involved
    own = write_ml1m(tmp_path / "ml-1m-u2999")
    ds = get_reco_dataset("ml-1m", 5, own, verbose=False, download_ok=False)
    assert ds.num_users == 2 and ds.folder == own and len(ds.catalogue) == 4 and ds.num_items == 20


def test_truncated_zip(tmp_path):
    payload = make_zip(tmp_path / "full.zip", GOOD)
    (tmp_path / "cut.zip").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataFormatError, match=r"cut.zip: expected a complete zip archive"):
        fetch.safe_extract(tmp_path / "cut.zip", tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil.txt", "ml-1m/../../evil.txt", "/tmp/evil_abs.txt"])
def test_zip_member_escaping_target_is_refused(tmp_path, member):
    make_zip(tmp_path / "bad.zip", {**GOOD, member: "gotcha"})
    with pytest.raises(DataFormatError, match="escapes the target folder"):
        fetch.safe_extract(tmp_path / "bad.zip", tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "inner" / "ml-1m").exists()  # nothing extracted at all
