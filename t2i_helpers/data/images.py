"""Image files as the encoders need them: read, hash, decode at the size used, upright, and thumbnails (notebook 01).

Phone and camera libraries are 12-48 MP JPEGs and HEICs, many stored sideways with an EXIF orientation tag.
A full 12 MP JPEG decode costs ~60 ms and the model reads 224-336 px, so JPEGs are decoded with the format's
own DCT scaling (1/2, 1/4 or 1/8 of the size, in libjpeg) to the smallest scale that still covers what the
encoder reads. Every image is turned upright from its EXIF orientation before it is embedded or shown.
HEIC/HEIF (through pillow-heif) and AVIF (Pillow) are read too. Reading is bounded for hostile files: regular
files only (and files beside a photo only inside its folder), a size cap, the format checked before decoding, a
pixel limit, and the bounds of `bounds.py`: JPEG scans, PNG chunks, the decoding memory budget (docs/serving.md,
"Security model").

Example:
    >>> image_id, image = read_image("IMG_0001.HEIC", min_side=260)   # upright RGB uint8, short side >= 260
    >>> Thumbnails(Path("data/thumbnails")).ensure(image_id, "IMG_0001.HEIC")
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .bounds import DECODES, REDUCIBLE, ImageError, check_chunks, check_scans, decoded_bytes

ImageLike = Image.Image | np.ndarray
MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are skipped, never decoded
MAX_FILE_BYTES = 256 << 20  # a larger file is refused unread (a 100 MP JPEG is ~40 MB, a 48 MP HEIC ~15 MB)
# Formats decoded, by the name Pillow gives them; the size checked is the size Pillow decodes. Others (JPEG 2000,
# PSD, ICO, ...) are refused before decoding: a JP2 may carry a header size its codestream does not keep.
DECODED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"}
MAX_SIDE = 1024  # decoded images are shrunk to this: every encoder reads 336 px or less, and memory stays bounded
THUMBNAIL_SIZE = 384  # the longer side of a cached thumbnail
ORIENTATION_TAG = 0x0112  # EXIF Orientation
# EXIF orientation -> how to turn the stored pixels upright (the same mapping as PIL.ImageOps.exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any PIL image or array (gray, RGB, RGBA, 16-bit) as RGB uint8 `[h, w, 3]`; alpha goes onto white.

    Example:
        >>> to_rgb_array(np.zeros((4, 4), np.uint8)).shape
        (4, 4, 3)
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit and float: 0..65535 -> 0..255
            wide = np.asarray(image, dtype=np.float32) / np.float32(257)
            image = Image.fromarray(np.clip(wide, 0, 255, out=wide).astype(np.uint8))  # truncated, as Pillow does
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
    else:
        array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or 0 in array.shape:
        raise ValueError(f"not an image array: shape {array.shape}")
    if array.shape[2] in (2, 4):  # with alpha: composite on white
        # round((c * a + 255 * (255 - a)) / 255) in uint16 (never a tie, never above 65,152): the float32
        # formula's pixels for every c and a, in half its time
        alpha = array[:, :, -1:].astype(np.uint16)
        array = ((array[:, :, :-1] * alpha + (255 - alpha) * 255 + 127) // 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def content_id(data: bytes) -> int:
    """A stable positive int64 id from the file's bytes, so re-ingesting the same image cannot duplicate it."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


@functools.cache
def register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF files (once, on first decode); False without pillow-heif."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> as they should be seen, for an EXIF orientation 1-8 (others leave them as they are)."""
    turn = _UPRIGHT.get(orientation)
    return np.ascontiguousarray(turn(image)) if turn else image


def jpeg_scale(width: int, height: int, min_side: int | None) -> int:
    """The largest DCT scale-down (1, 2, 4 or 8) that keeps the shorter side at `min_side` px or more."""
    if not min_side:
        return 1
    return next((s for s in (8, 4, 2) if min(width, height) // s >= min_side), 1)


def decode_image(
    data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None, max_side: int | None = None
) -> np.ndarray:
    """Decode image bytes to upright RGB uint8 (alpha on white); `decode_photo` without its EXIF."""
    return decode_photo(data, max_pixels, min_side, max_side)[0]


def decode_photo(
    data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None, max_side: int | None = None
) -> tuple[np.ndarray, Image.Exif]:
    """Decode image bytes to upright RGB uint8 (alpha on white), by Pillow, from the formats in `DECODED_FORMATS`,
    with the EXIF Pillow parsed from the header on the way (dates, camera, GPS: `exif.photo_metadata`).

    Args:
        data: the file's bytes.
        max_pixels: larger images are refused without being decoded (decompression-bomb guard).
        min_side: the shorter side the caller needs (an encoder's input size); JPEGs are then decoded at the
            smallest DCT scale that still covers it. None decodes at full size.
        max_side: shrink the result so that its longer side is at most this, before it is converted to 8-bit
            RGB (a 16-bit or float picture is never converted whole). None keeps its size.

    Raises:
        ImageError: empty, not an image, another format, corrupt, larger than `max_pixels`, a PNG of more chunks
            or a JPEG of more scans than a photo needs (`check_chunks`), or over the decoding budget (`DECODES`).
    """
    if not data:
        raise ImageError("empty file")
    check_chunks(data)
    register_heif()
    try:
        with Image.open(io.BytesIO(data)) as pil:  # reads the header only, until pixels are asked for
            width, height = pil.size
            if width * height > max_pixels:
                raise ImageError(f"{width}x{height} is over the {max_pixels:,}-pixel limit (decompression-bomb guard)")
            if pil.format not in DECODED_FORMATS:
                raise ImageError(f"{pil.format} pictures are not read; convert it to JPEG, PNG or HEIC")
            if pil.format in ("JPEG", "MPO"):  # MPO: the multi-picture JPEGs of some cameras
                check_scans(data, width * height)
                scale = jpeg_scale(width, height, min_side)
                if scale > 1:
                    pil.draft("RGB", (width // scale, height // scale))  # libjpeg picks 1/scale for this
            with DECODES.hold(decoded_bytes(pil.mode, pil.size, max_side)):
                pil.load()  # the first frame of an animation; raises OSError on truncated data
                exif = pil.getexif()  # after the pixels: a PNG's may follow them (Pillow loads them to look)
                image = upright(to_rgb_array(_reduced(pil, max_side)), exif.get(ORIENTATION_TAG, 1))
                pil.close()  # its pixels go before their share of the budget is given back
            return (shrink(image, max_side) if max_side else image), exif
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own guard, at twice its warning size
        raise ImageError(f"{err} (decompression-bomb guard)") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, UnidentifiedImageError) or "cannot identify" in str(err):
            raise ImageError("not an image file or unsupported format") from err
        raise ImageError(f"corrupt or truncated image ({err})") from err


def _reduced(pil: Image.Image, max_side: int | None) -> Image.Image | np.ndarray:
    """A loaded picture box-reduced by a whole factor to no less than `max_side` px on its longer side, in its own
    mode (16-bit gray through OpenCV, which Pillow's `reduce` does not take), so that only the reduced picture is
    converted to 8-bit RGB; as it is where no reduction is needed."""
    factor = max(pil.size) // max_side if max_side else 1
    if factor < 2:
        return pil
    if pil.mode.startswith("I;16"):  # in strips of ~4 MB: an array of the whole picture would be a second copy
        width, band, rows = (
            max(1, round(pil.width / factor)),
            factor * max(1, (4 << 20) // (pil.width * 2 * factor)),
            [],
        )
        for top in range(0, pil.height, band):
            strip = np.asarray(pil.crop((0, top, pil.width, min(top + band, pil.height))))
            rows.append(cv2.resize(strip, (width, max(1, round(len(strip) / factor))), interpolation=cv2.INTER_AREA))
        return np.concatenate(rows)  # uint16: to_rgb_array divides
    if pil.mode not in REDUCIBLE:  # palettes, 1-bit, PA...: a palette keeps its transparency through RGBA
        transparent = pil.mode == "PA" or "transparency" in pil.info
        pil = pil.convert("RGBA" if transparent else "RGB")
    return pil.reduce(factor)


def shrink(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """`image` scaled down (never up) so that its longer side is at most `max_side`."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def decode_bounded(data: bytes, max_side: int = MAX_SIDE, min_side: int | None = None) -> tuple[np.ndarray, float]:
    """Image bytes decoded upright with the longer side at most `max_side` (a JPEG at libjpeg's reduced scale on
    the way), and how many of the original's pixels one of its pixels spans (to map boxes back; 1.0 if not smaller).

    Args:
        min_side: the longer side may be as short as this (default `max_side`): a JPEG is then decoded at the
            coarsest DCT scale that reaches it, with no resize after (a 4032 px photo read for 1024 px, with
            `min_side` 768, is decoded at 1/4 to 1008 px: 12 ms, against 42 ms at 1/2 and a resize).

    Raises:
        ImageError: as `decode_photo`.
    """
    register_heif()
    try:
        with Image.open(io.BytesIO(data)) as pil:  # the header only
            width, height = pil.size
            if header_exif(pil).get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):  # stored sideways
                width, height = height, width
    except (OSError, ValueError, Image.DecompressionBombError):  # decode_photo says what is wrong
        width = height = 0
    longer, least = max(width, height), min(min_side or max_side, max_side)
    shorter = -(-least * min(width, height) // longer) if longer > least else None
    image = decode_image(data, min_side=shorter, max_side=max_side)
    return image, width / image.shape[1] if width else 1.0


def header_exif(pil: Image.Image) -> Image.Exif:
    """The EXIF an opened picture's header holds, no pixel decoded: a PNG's after its image data is not read
    (Pillow's `getexif` decodes every pixel of a PNG without EXIF to look for it there)."""
    return Image.Exif() if pil.format == "PNG" and "exif" not in pil.info else pil.getexif()


def read_bytes(path: str | Path, max_bytes: int = MAX_FILE_BYTES, root: str | Path | None = None) -> bytes:
    """A regular file's bytes, at most `max_bytes`, with the reason as an `ImageError` when it cannot be read.

    Only regular files are read: a FIFO would block forever and a link to /dev/zero would read until memory
    runs out. The file is opened without blocking and checked on the open descriptor, so it cannot be swapped.
    With `root`, the file must be inside that folder once links are followed (a caption `a.txt` linking to
    /etc/passwd is not read; a link to another file inside the folder is): checked before it is opened and
    again on the open descriptor, where the system shows its path (/proc/self/fd), so no link swapped in
    between is followed out.
    """
    inside = None if root is None else os.path.realpath(root)
    if inside is not None and not _within(os.path.realpath(path), inside):
        raise ImageError("it links outside the indexed folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as err:
        raise ImageError("file not found (or a broken link)") from err
    except OSError as err:
        raise ImageError(f"unreadable: {err.strerror or err}") from err
    try:
        if inside is not None and os.path.exists(opened := f"/proc/self/fd/{fd}"):
            if not _within(os.readlink(opened), inside):
                raise ImageError("it links outside the indexed folder")
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise ImageError("unreadable: it is a folder")
        if not stat.S_ISREG(kind):
            raise ImageError("not a regular file (a pipe, device or socket): only files are read")
        with os.fdopen(fd, "rb") as file:
            fd = -1  # the file object owns it now
            data = file.read(max_bytes + 1)
    except (OSError, MemoryError) as err:
        raise ImageError(f"unreadable: {getattr(err, 'strerror', None) or type(err).__name__}") from err
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(f"larger than the {max_bytes:,}-byte limit for one file")
    return data


def _within(path: str, folder: str) -> bool:
    """Whether resolved `path` is inside resolved `folder`."""
    return os.path.commonpath([path, folder]) == folder


def read_image(path: str | Path, max_side: int | None = None, min_side: int | None = None) -> tuple[int, np.ndarray]:
    """Read and decode one file: (content id, upright RGB uint8 image).

    Args:
        max_side: shrink the result so that its longer side is at most this.
        min_side: the shorter side the caller needs; JPEGs are decoded at a reduced scale that covers it.

    Raises:
        ImageError: with the reason (not found, unreadable, empty, not an image, corrupt, too large).
    """
    data = read_bytes(path)
    return content_id(data), decode_image(data, min_side=min_side, max_side=max_side)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """RGB uint8 pixels as JPEG bytes."""
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode a JPEG")
    return buffer.tobytes()


@dataclass(frozen=True)
class Thumbnails:
    """A cache of small upright JPEGs keyed by image id: `folder/SIZE/ID.jpg`, longer side at most `size`.

    Made during ingest from the image already decoded for the model, or on first use from the original file.
    """

    folder: Path
    size: int = THUMBNAIL_SIZE

    def path(self, image_id: int) -> Path:
        """Where the thumbnail of `image_id` lives (it may not exist yet)."""
        return Path(self.folder) / str(self.size) / f"{image_id:016x}.jpg"

    def write(self, image_id: int, image: np.ndarray) -> Path:
        """Store the thumbnail of a decoded image unless it exists; atomic, so readers never see half a file."""
        target = self.path(image_id)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.stem}.{os.getpid()}.{id(image):x}.part")
            partial.write_bytes(encode_jpeg(shrink(image, self.size)))
            partial.replace(target)
        return target

    def face_path(self, image_id: int, face_id: int) -> Path:
        """Where the crop of one face of `image_id` lives (`pipelines/people.face_thumbnail` makes it)."""
        return Path(self.folder) / "faces" / f"{image_id:016x}-{face_id:016x}.jpg"

    def remove(self, image_ids: Iterable[int]) -> None:
        """Delete the thumbnails of these images, at every size cached, and their faces' crops (an image removed
        leaves nothing behind)."""
        for image_id in image_ids:
            for pattern in (f"*/{image_id:016x}.jpg", f"faces/{image_id:016x}-*.jpg"):
                for path in Path(self.folder).glob(pattern):
                    path.unlink(missing_ok=True)

    def ensure(self, image_id: int, source: str | Path) -> Path:
        """The thumbnail of `image_id`, made from `source` if missing.

        Raises:
            ImageError: the file cannot be read, or its bytes are no longer those of `image_id`.
        """
        target = self.path(image_id)
        if target.exists():
            return target
        data = read_bytes(source)
        if content_id(data) != image_id:
            raise ImageError("the file changed after it was indexed; index it again")
        return self.write(image_id, decode_image(data, min_side=self.size, max_side=MAX_SIDE))
