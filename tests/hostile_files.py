"""Hostile files, made by the tests themselves: what a security review used against `t2i index` and `t2i serve`."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def jp2_with_a_smaller_header(real: int = 1024, claimed: int = 16) -> bytes:
    """A JPEG 2000 file with two `ihdr` boxes, as in the review: the first (which OpenJPEG follows) says `real`²
    pixels like its codestream, the last (which Pillow reports) claims `claimed`²."""
    out = io.BytesIO()
    Image.new("L", (real, real), 128).save(out, "JPEG2000", no_jp2=False)
    data = out.getvalue()
    ihdr = data.index(b"ihdr") - 4  # the box: length (u32), type, then height, width, components, ...
    box = data[ihdr : ihdr + 22]
    second = box[:8] + struct.pack(">II", claimed, claimed) + box[16:]
    jp2h = data.index(b"jp2h") - 4
    length = struct.unpack(">I", data[jp2h : jp2h + 4])[0] + len(second)
    end = ihdr + 22
    return data[:jp2h] + struct.pack(">I", length) + data[jp2h + 4 : end] + second + data[end:]


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each JPEG segment; a scan's segment runs to the end of its entropy-coded data."""
    at, found = 2, []
    while at < len(data):
        marker = data[at + 1]
        if marker == 0xD9:
            return [*found, (marker, at, at + 2)]
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] != 0x00 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        found.append((marker, at, end))
        at = end
    return found


def progressive_scan_bomb(scans: int = 3000, side: int = 64) -> bytes:
    """A small progressive JPEG whose last scan is repeated `scans` times: decoding work grows with every scan."""
    out = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    _, start, end = [s for s in _jpeg_segments(data) if s[0] == 0xDA][-1]
    return data[:end] + data[start:end] * scans + data[end:]


def pixel_bomb_png(side: int = 12_000) -> bytes:
    """A PNG of `side`² pixels in a few hundred KB (one gray value compresses to almost nothing)."""
    out = io.BytesIO()
    Image.new("L", (side, side), 200).save(out, "PNG", optimize=False, compress_level=9)
    return out.getvalue()


def write_hostile_folder(folder: Path, good: list[Path]) -> tuple[set[str], dict[str, str]]:
    """Copy `good` photos into `folder` beside every hostile file; returns (good names, {bad name: reason})."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(good):
        (folder / f"good{i}.png").write_bytes(path.read_bytes())
    (folder / "good0.txt").symlink_to("/dev/zero")  # a caption that never ends: no caption
    os.mkfifo(folder / "good1.txt")  # a caption nobody writes: no caption
    (folder / "jp2.png").write_bytes(jp2_with_a_smaller_header())
    (folder / "scans.jpg").write_bytes(progressive_scan_bomb())
    (folder / "huge.png").write_bytes(pixel_bomb_png())
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as file:  # not UTF-8: Latin-1 bytes
        file.write(_png(np.full((32, 32, 3), 90, np.uint8)))
    bad = {
        "jp2.png": "JPEG2000 pictures are not read",
        "scans.jpg": "scans",
        "huge.png": "pixel limit",
        "pipe.jpg": "not a regular file",
        "zero.png": "not a regular file",
        "caf\\xe9.png": "not valid UTF-8",
    }
    return {f"good{i}.png" for i in range(len(good))}, bad
