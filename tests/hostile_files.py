"""Hostile files, made by the tests themselves: what a security review used against `t2i index` and `t2i serve`."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from t2i_helpers.data.exif import DATE_TAKEN, EXIF_IFD, OFFSET_TAKEN


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


def with_offset(offset: str, kind: str = "JPEG", shade: int = 90) -> bytes:
    """A small JPEG or PNG taken on 2021-05-04 whose EXIF OffsetTimeOriginal is `offset` (e.g. "+99:99")."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update({DATE_TAKEN: "2021:05:04 10:30:00", OFFSET_TAKEN: offset})
    out = io.BytesIO()
    rng = np.random.default_rng(shade)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(out, kind, exif=exif.tobytes())
    return out.getvalue()


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def many_chunks_png(chunks: int = 200_000) -> bytes:
    """A 32 x 32 PNG followed, after its image data, by `chunks` empty private chunks (12 bytes each)."""
    data = _png(np.full((32, 32, 3), 120, np.uint8))
    end = data.rindex(b"IEND") - 4
    return data[:end] + _chunk(b"prVt") * chunks + data[end:]


def deep_png(side: int = 7000) -> bytes:
    """A 16-bit gray PNG of `side`² pixels in ~100 KB: small on disk, 2 bytes a pixel decoded (98 MB at 7000)."""
    ramp = np.zeros((side, side), np.uint16)
    ramp[: side // 2] = 40_000
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "PNG", compress_level=9)
    return out.getvalue()


FRUIT = ("lemon", "apple", "grape", "mango", "peach", "melon", "berry", "olive")


def dense_text(size: tuple[int, int] = (1200, 900), font_px: int = 18) -> np.ndarray:
    """An RGB picture covered in rows of short printed words (hundreds of text boxes), black on white."""
    import matplotlib

    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), font_px)
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for row, y in enumerate(range(10, size[1] - font_px, font_px * 2)):
        for col, x in enumerate(range(10, size[0] - 6 * font_px, 7 * font_px)):
            draw.text((x, y), FRUIT[(row + col) % len(FRUIT)], font=font, fill="black")
    return np.asarray(page)


YEAR_2300 = 10_413_792_000  # 2300-01-01 in seconds: past what int64 nanoseconds hold (2262-04-11)


def write_hostile_folder(folder: Path, good: list[Path]) -> tuple[set[str], dict[str, str]]:
    """Copy `good` photos (3 or more) into `folder` beside every hostile file of both reviews; returns (the names
    that must be indexed, {name not read: words of its reason})."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(good):
        (folder / f"good{i}.png").write_bytes(path.read_bytes())
    (folder / "good0.txt").symlink_to("/dev/zero")  # a caption that never ends (and is out of the folder)
    os.mkfifo(folder / "good1.txt")  # a caption nobody writes: no caption
    (folder / "good2.txt").symlink_to("/etc/passwd")  # a caption out of the folder: not read
    (folder / "jp2.png").write_bytes(jp2_with_a_smaller_header())
    (folder / "scans.jpg").write_bytes(progressive_scan_bomb())
    (folder / "huge.png").write_bytes(pixel_bomb_png())
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as file:  # not UTF-8: Latin-1 bytes
        file.write(_png(np.full((32, 32, 3), 90, np.uint8)))
    (folder / "offset.jpg").write_bytes(with_offset("+99:99"))  # indexed, without its offset
    (folder / "offset.png").write_bytes(with_offset("-24:00", "PNG"))
    (folder / "future.png").write_bytes(_png(np.full((32, 32, 3), 30, np.uint8)))
    os.utime(folder / "future.png", (YEAR_2300, YEAR_2300))  # indexed, without a time
    (folder / "deep.png").write_bytes(deep_png(4000))  # 16-bit: indexed, shrunk before it is made 8-bit
    (folder / "chunks.png").write_bytes(many_chunks_png())
    bad = {
        "good0.txt": "links outside the indexed folder",
        "good1.txt": "not a regular file",
        "good2.txt": "links outside the indexed folder",
        "jp2.png": "JPEG2000 pictures are not read",
        "scans.jpg": "scans",
        "huge.png": "pixel limit",
        "pipe.jpg": "not a regular file",
        "zero.png": "not a regular file",
        "caf\\xe9.png": "not valid UTF-8",
        "chunks.png": "chunks",
    }
    good_names = {f"good{i}.png" for i in range(len(good))} | {"offset.jpg", "offset.png", "future.png", "deep.png"}
    return good_names, bad
