"""Where data is read and written: user folders are only read, generated data goes to the project's cache,
and every data problem a user can fix is a one-line `DataError` saying what to do."""

import os
import shutil

import pytest

from hstu_tutorial.data import generate_synthetic, get_reco_dataset
from hstu_tutorial.data.errors import DataNotFoundError, DataWriteError, UnknownDatasetError
from hstu_tutorial.data.paths import CACHE_MARKER, cache_root, owned_folder
from hstu_tutorial.errors import DataError


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def shared(tmp_path):
    """A folder someone else owns, with their own files in it."""
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("not ours\n")
    return folder


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HSTU_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("HSTU_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "hstu_tutorial"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "hstu_tutorial"


def test_synthetic_goes_to_the_cache_not_to_a_shared_data_dir(monkeypatch, tmp_path, shared):
    monkeypatch.setenv("HSTU_DATA_DIR", str(shared))
    monkeypatch.setenv("HSTU_CACHE_DIR", str(tmp_path / "cache"))
    before = listing(shared)
    ds = get_reco_dataset("synthetic", 20, verbose=False)
    assert listing(shared) == before  # nothing written into the shared folder
    assert ds.folder == tmp_path / "cache" / "synthetic-ci-seed0"
    assert (tmp_path / "cache" / CACHE_MARKER).is_file()  # the project created this folder
    path = ds.write_sasrec_format()  # default output goes to the cache too
    assert path.parent == tmp_path / "cache" and path.is_file()


def test_refuses_to_write_into_a_folder_it_does_not_own(shared):
    before = listing(shared)
    with pytest.raises(DataWriteError) as e:
        get_reco_dataset("synthetic", 20, shared, verbose=False)
    msg = str(e.value)
    assert str(shared) in msg and "HSTU_CACHE_DIR" in msg and "\n" not in msg
    assert isinstance(e.value, DataError) and isinstance(e.value, PermissionError)
    assert listing(shared) == before


def test_reads_an_existing_synthetic_folder_without_writing(tmp_path, shared):
    made = generate_synthetic("ci", 0, tmp_path / "mine", verbose=False)
    shutil.copytree(made, shared / made.name)
    before = listing(shared)
    ds = get_reco_dataset("synthetic", 20, shared, verbose=False)
    assert ds.folder == shared / made.name and listing(shared) == before


def test_new_or_empty_folders_become_owned(tmp_path):
    assert owned_folder(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert (tmp_path / "new" / "deep" / CACHE_MARKER).is_file()
    (tmp_path / "empty").mkdir()
    owned_folder(tmp_path / "empty")
    assert (tmp_path / "empty" / CACHE_MARKER).is_file()
    owned_folder(tmp_path / "empty")  # owned folders stay usable once they hold data


def test_unwritable_cache_says_what_to_do(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("HSTU_CACHE_DIR", str(blocker / "cache"))  # cannot be created under a file
    with pytest.raises(DataWriteError, match="HSTU_CACHE_DIR") as e:
        generate_synthetic("ci", 0, verbose=False)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataWriteError, match="cannot write"):
            generate_synthetic("ci", 0, ro, verbose=False)
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: get_reco_dataset("synthetc", verbose=False), ["dataset", "did you mean 'synthetic'"]),
        (lambda: get_reco_dataset("ml-1M", verbose=False), ["did you mean 'ml-1m'"]),
        (lambda: generate_synthetic("smal", 0, verbose=False), ["synthetic size", "did you mean 'small'"]),
        (lambda: get_reco_dataset("netflix", verbose=False), ["choose one of"]),
    ],
)
def test_unknown_names_suggest_the_closest(call, words):
    with pytest.raises(UnknownDatasetError) as e:
        call()
    assert isinstance(e.value, ValueError) and isinstance(e.value, DataError)
    for w in words:
        assert w in str(e.value)


def test_missing_files_are_data_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("HSTU_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="u.data") as e:
        get_reco_dataset("ml-100k", 10, tmp_path, verbose=False)
    assert "\n" not in str(e.value) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(DataNotFoundError, match="ratings.dat"):
        get_reco_dataset("ml-1m", 10, tmp_path / "none", verbose=False, download_ok=False)
