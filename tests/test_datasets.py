"""Datasets: CSV and folder loaders, the .deb unpacker, and the bundled photo set."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_helpers.data.datasets import (
    COLUMNS,
    DatasetError,
    download,
    fetch_tuxpaint,
    load_csv,
    load_source,
    scan_folder,
)


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def make_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A minimal Debian package (ar archive with a data.tar.xz) holding `files`."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = _ar_member("debian-binary", b"2.0\n") + _ar_member("data.tar.xz", tar_bytes.getvalue())
    path.write_bytes(b"!<arch>\n" + body)
    return path


def test_fetch_tuxpaint_from_a_local_deb(tmp_path):
    stamps = "usr/share/tuxpaint/stamps"
    deb = make_deb(
        tmp_path / "stamps.deb",
        {
            f"{stamps}/animals/cats/cat.png": _png_bytes(),
            f"{stamps}/animals/cats/cat.txt": b"A cat.\nfr.utf8=Un chat.\n",
            f"{stamps}/animals/cats/cat_mirror.png": _png_bytes(),  # no caption: left out
            f"{stamps}/food/pear.svg": b"<svg/>",  # SVG-only: left out
            f"{stamps}/food/pear.txt": b"A pear.\n",
            "usr/share/doc/tuxpaint-stamps-default/copyright": b"GPL-2",
        },
    )
    csv = fetch_tuxpaint(data_dir=tmp_path / "data", deb=deb)
    df = load_csv(csv)
    assert df[["label", "caption"]].values.tolist() == [["animals", "A cat."]]
    assert Path(df.path[0]).exists()
    assert (csv.parent / "usr/share/doc/tuxpaint-stamps-default/copyright").exists()
    assert fetch_tuxpaint(data_dir=tmp_path / "data", deb=tmp_path / "missing.deb") == csv  # already there


def test_not_a_deb_is_refused(tmp_path):
    (tmp_path / "x.deb").write_bytes(b"hello")
    with pytest.raises(DatasetError, match="not a Debian package"):
        fetch_tuxpaint(data_dir=tmp_path, deb=tmp_path / "x.deb")


def test_load_csv_resolves_paths_and_fills_columns(tmp_path):
    (tmp_path / "imgs").mkdir()
    pd.DataFrame({"id": [1], "path": ["imgs/a.jpg"], "label": ["goldfish"]}).to_csv(tmp_path / "d.csv", index=False)
    df = load_csv(tmp_path / "d.csv")
    assert list(df.columns) == COLUMNS
    assert df.path[0] == str(tmp_path / "imgs" / "a.jpg")
    assert df.caption[0] == ""
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="no 'path' column"):
        load_csv(tmp_path / "bad.csv")


def test_scan_folder_labels_and_captions(image_folder):
    df = scan_folder(image_folder)
    assert len(df) == 8
    assert set(df.label) == {"animals", "vehicles"}
    assert all(df.caption.str.len() > 0)


def test_load_source_errors(tmp_path):
    with pytest.raises(DatasetError, match="neither a folder"):
        load_source(tmp_path / "nothing.csv")


def test_download_offline_gives_a_clear_error(tmp_path, no_network):
    with pytest.raises(DatasetError, match="could not download.*bundled photos"):
        download("https://example.invalid/file.zip", tmp_path / "f.zip")
    assert not (tmp_path / "f.zip.part").exists()


def test_bundled_photo_set(bundled):
    assert 700 <= len(bundled) <= 800
    assert bundled.caption.str.len().min() > 0
    assert bundled.label.nunique() == 16
    assert all(Path(p).exists() for p in bundled.path)
