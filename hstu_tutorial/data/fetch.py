"""Finding, downloading, verifying (md5) and safely extracting MovieLens-1M.

Folders a user points at (`data/ml-1m`, `data_dir=`, `$HSTU_DATA_DIR`) are only read. A download, and the
extraction of a zip (downloaded, or placed by the user), go into the project's cache folder
(`hstu_tutorial.data.paths.cache_root()`), which the project owns.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from hstu_tutorial.data.errors import DataFormatError, DataNotFoundError
from hstu_tutorial.data.movielens import has_ml1m_files
from hstu_tutorial.data.paths import cache_root, owned_folder

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"


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


def offline_message(folder: Path, cache: Path, reason: str) -> str:
    """One line: why ML-1M is missing, and the three ways to provide it."""
    where = folder.parent if folder.name == "ml-1m" else folder
    return (
        f"MovieLens-1M is not in {folder} and could not be downloaded ({reason}). Download {ML1M_URL} "
        f"(md5 {ML1M_MD5}) by hand and put ml-1m.zip into {where} or {cache}, "
        f"or unzip it so that {folder}/ratings.dat, movies.dat and users.dat exist, or pass "
        f"data_dir= a folder holding those three files; without network, use the 'synthetic' dataset"
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
    cache_dir=None,
) -> Path:
    """Return a folder holding ML-1M's ratings.dat, movies.dat and users.dat.

    Looks, in order, at: `folder` itself (any folder with the three files is used as is, e.g.
    `data/ml-1m-u2999`), `folder/ml-1m`, `<cache>/ml-1m`, a zip the user placed (`folder/ml-1m.zip`, next to
    `folder`, or in the cache; md5-checked, extracted into the cache), and finally downloads the zip into the
    cache unless `download_ok` is False or $HSTU_OFFLINE is set. `cache_dir` defaults to `cache_root()`.
    """
    folder = Path(folder)
    cache = Path(cache_dir) if cache_dir is not None else cache_root()
    for cand in (folder, folder / "ml-1m", cache / "ml-1m"):
        if has_ml1m_files(cand):
            return cand
    for z in (folder / "ml-1m.zip", folder.parent / "ml-1m.zip", cache / "ml-1m.zip"):
        if z.is_file():
            if md5 is not None and (got := md5_of(z)) != md5:
                raise DataFormatError(
                    z,
                    None,
                    f"md5 {md5} (the official ml-1m.zip)",
                    f"md5 {got}: the file is corrupt or a different archive; delete it and retry",
                )
            safe_extract(z, owned_folder(cache))
            if has_ml1m_files(cache / "ml-1m"):
                return cache / "ml-1m"
            raise DataFormatError(z, None, "an archive holding ml-1m/ratings.dat, movies.dat and users.dat")
    if download_ok is None:
        download_ok = not os.environ.get("HSTU_OFFLINE")
    if not download_ok:
        raise DataNotFoundError(offline_message(folder, cache, "downloads are off: HSTU_OFFLINE is set"))
    z = owned_folder(cache) / "ml-1m.zip"
    if verbose:
        print(f"[hstu_tutorial] downloading {url} -> {z}")
    t0 = time.perf_counter()
    try:
        download(url, z, md5=md5, timeout=timeout, opener=opener)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataNotFoundError(offline_message(folder, cache, f"{type(e).__name__}: {e}")) from None
    if verbose:
        print(f"[hstu_tutorial] downloaded in {time.perf_counter() - t0:.1f} s, md5 ok")
    safe_extract(z, cache)
    if has_ml1m_files(cache / "ml-1m"):
        return cache / "ml-1m"
    raise DataFormatError(z, None, "an archive holding ml-1m/ratings.dat, movies.dat and users.dat")
