"""Image collections as tables: CSV files, folders, and the bundled photo set (taught in notebook 01).

A dataset is a pandas DataFrame with the seed tutorial's columns `id, path, label` plus `caption`.

Example:
    >>> df = load_source("data/tuxpaint/stamps.csv")      # after `make setup`
    >>> list(df.columns)
    ['id', 'path', 'label', 'caption']
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import default_data_dir
from .images import ImageError, content_id, read_bytes

COLUMNS = ["id", "path", "label", "caption"]
MAX_CAPTION_BYTES = 64 << 10  # a sidecar caption larger than this is not read
# What a folder scan lists; HEIC/HEIF (iPhones) are read through pillow-heif, AVIF through Pillow.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"}

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
TUXPAINT_DEB_URL = (
    "http://deb.debian.org/debian/pool/main/t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb"
)
IMAGENET_SUBSET_URL = "https://github.com/towhee-io/examples/releases/download/data/reverse_image_search.zip"


class DatasetError(RuntimeError):
    """A data set is missing or cannot be fetched; the message says what to do."""


def load_csv(path: str | Path) -> pd.DataFrame:
    """Read a dataset CSV (`path` required; `id`, `label`, `caption` optional); paths become absolute.

    Relative paths are taken relative to the CSV's folder, as in the seed tutorial's
    `reverse_image_search.csv`.
    """
    path = Path(path)
    df = pd.read_csv(path, dtype={"path": str, "label": str, "caption": str}, keep_default_na=False)
    if "path" not in df.columns:
        raise DatasetError(f"{path} has no 'path' column; expected columns {COLUMNS}")
    if "id" not in df.columns:
        df["id"] = range(len(df))
    for column in ("label", "caption"):
        if column not in df.columns:
            df[column] = ""
    df["path"] = [str((path.parent / p).resolve()) for p in df["path"]]
    return df[COLUMNS]


def first_line(path: Path, root: str | Path | None = None) -> str:
    """The first line of a text file (a Tux Paint caption), "" where there is none.

    Raises:
        ImageError: it is there but not read: not a small regular file, or (with `root`) a link out of that folder.
    """
    if not os.path.lexists(path):
        return ""
    text = read_bytes(path, MAX_CAPTION_BYTES, root).decode("utf-8", errors="replace")
    return (text.splitlines() or [""])[0].strip()


def scan_folder(folder: str | Path) -> pd.DataFrame:
    """Every image file below `folder`; label = first sub-folder, caption = a sidecar `.txt`'s first line.

    Broken links and unreadable files are kept: ingest reports them as skipped, with the reason. A caption that
    is there but not read (a pipe, a device, too large, or a link out of `folder`) leaves its photo without
    one; `df.attrs["skipped"]` lists each as (path, reason), for ingest to report.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    rows, skipped = [], []
    for i, p in enumerate(files):
        parts, caption = p.relative_to(folder).parts, ""
        try:
            caption = first_line(p.with_suffix(".txt"), root=folder)
        except ImageError as err:
            skipped.append((str(p.with_suffix(".txt")), f"not read as its photo's caption: {err}"))
        rows.append((i, str(p), parts[0] if len(parts) > 1 else "", caption))
    # Python strings, not Arrow's: a name that is not UTF-8 holds surrogates, which ingest reports as a skip
    df = pd.DataFrame(rows, columns=COLUMNS, dtype=object).astype({"id": "int64"})
    df.attrs["skipped"] = skipped
    return df


def load_source(source: str | Path) -> pd.DataFrame:
    """A dataset from a CSV file or a folder of images."""
    source = Path(source).expanduser()
    if source.is_dir():
        return scan_folder(source)
    if source.suffix.lower() == ".csv" and source.exists():
        return load_csv(source)
    raise DatasetError(f"{source} is neither a folder of images nor an existing .csv file")


def tuxpaint_csv(data_dir: str | Path | None = None) -> Path:
    """Where the bundled photo set's CSV lives (it exists after `fetch_tuxpaint`)."""
    return Path(data_dir or default_data_dir()) / "tuxpaint" / "stamps.csv"


def load_bundled(data_dir: str | Path | None = None) -> pd.DataFrame:
    """The bundled photo set: ~785 captioned photo cut-outs from Debian's Tux Paint stamps (GPL-2)."""
    csv = tuxpaint_csv(data_dir)
    if not csv.exists():
        raise DatasetError(f"{csv} is missing: fetch the photos with `t2i data` (or `make setup`)")
    return load_csv(csv)


def fetch_tuxpaint(data_dir: str | Path | None = None, deb: str | Path | None = None) -> Path:
    """Fetch Debian's `tuxpaint-stamps-default`, unpack its captioned PNG stamps and write `stamps.csv`.

    The package comes from `deb` if given, else `apt-get download` (Debian/Ubuntu), else the Debian archive
    over HTTP. Only PNGs with an English caption (the first line of the `.txt` beside them) are listed;
    SVG-only stamps and captionless mirror copies are left out. Does nothing if the CSV exists.

    Returns:
        The CSV path (columns `id, path, label, caption`; label = the stamp's top folder, e.g. "animals").
    """
    csv = tuxpaint_csv(data_dir)
    if csv.exists():
        return csv
    root = csv.parent
    with tempfile.TemporaryDirectory() as tmp:
        deb_path = Path(deb) if deb else _download_deb(Path(tmp))
        _extract_deb(deb_path, root)
    stamps = root / "usr/share/tuxpaint/stamps"
    rows = []
    for png in sorted(stamps.rglob("*.png")):
        try:
            caption = first_line(png.with_suffix(".txt"), root=stamps)
        except ImageError:  # not a caption: the stamp is left out below
            caption = ""
        if caption:
            rel = png.relative_to(root)
            rows.append((len(rows), rel.as_posix(), png.relative_to(stamps).parts[0], caption))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
    return csv


def _download_deb(folder: Path) -> Path:
    if shutil.which("apt-get"):
        done = subprocess.run(
            ["apt-get", "download", TUXPAINT_PACKAGE], cwd=folder, capture_output=True, text=True, check=False
        )
        debs = list(folder.glob("*.deb"))
        if done.returncode == 0 and debs:
            return debs[0]
    return download(TUXPAINT_DEB_URL, folder / Path(TUXPAINT_DEB_URL).name)


def _extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's stamps and licence with the standard library (a .deb is an `ar` archive of tarballs)."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DatasetError(f"{deb} is not a Debian package")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            member = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(member)) as tar:
                    wanted = [
                        m
                        for m in tar.getmembers()
                        if m.isfile() and ("/stamps/" in m.name or m.name.endswith("/copyright"))
                    ]
                    tar.extractall(dest, members=wanted, filter="data")
                return
    raise DatasetError(f"{deb} has no data archive")


def download(url: str, dest: str | Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest` with a progress bar; check `sha256` when given. Clear error when offline."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url} ({err}). Without internet, use the bundled photos (`t2i data`) "
            f"or index a folder of your own images (`t2i index DIR`)."
        ) from err
    if sha256 and digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {url}: got {digest.hexdigest()}, expected {sha256}")
    partial.replace(dest)
    return dest


def fetch_imagenet_subset(data_dir: str | Path | None = None, sha256: str | None = None) -> Path:
    """The seed tutorial's 1000-image ImageNet subset (100 classes x 10) with `reverse_image_search.csv`.

    Needs internet (GitHub). The archive's CRCs are verified; pass `sha256` to pin the exact file (its
    digest is printed after a download).

    Returns:
        The path of `reverse_image_search.csv`, loadable with `load_csv`.
    """
    folder = Path(data_dir or default_data_dir()) / "reverse_image_search"
    csv = folder / "reverse_image_search.csv"
    if csv.exists():
        return csv
    archive = download(IMAGENET_SUBSET_URL, folder.parent / "downloads" / "reverse_image_search.zip", sha256)
    print(f"sha256 {hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}")
    with zipfile.ZipFile(archive) as zf:
        if (bad := zf.testzip()) is not None:
            raise DatasetError(f"{archive} is corrupt (bad member {bad}); delete it and fetch again")
        zf.extractall(folder)
    if not csv.exists():
        raise DatasetError(f"{archive} has no reverse_image_search.csv")
    return csv


def split_by_image(rows: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a dataset into train and test by image content, so no photo (or copy of it) is on both sides."""
    ids = np.array([content_id(read_bytes(p)) for p in rows.path])  # the bytes' hash: no need to decode
    unique = np.unique(ids)
    test_ids = np.random.default_rng(seed).choice(unique, size=round(len(unique) * test_fraction), replace=False)
    in_test = np.isin(ids, test_ids)
    return rows[~in_test].reset_index(drop=True), rows[in_test].reset_index(drop=True)
