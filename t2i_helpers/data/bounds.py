"""What decoding a hostile file may cost, checked before its pixels are decoded (notebook 01; docs/serving.md).

Three bounds beside the pixel limit (`images.MAX_PIXELS`): a JPEG's scans, a PNG's chunks, and the memory of
every decode at once, counted in decoded bytes per pixel format against one budget per process (`DECODES`),
shared by ingest's threads, the API's uploads, the web page, thumbnails and the OCR pass.

Example:
    >>> check_chunks(data)                                   # ImageError for a PNG of a million chunks
    >>> with DECODES.hold(decoded_bytes("I;16", (7000, 7000), max_side=1024)):
    ...     pil.load()
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import struct
import threading
from collections.abc import Iterator

from PIL import Image

# Progressive JPEG "scan bombs": every scan walks every block, so thousands of empty scans in a small file cost
# seconds of CPU. Cameras write 1 scan, libjpeg's progressive mode 10; decoding work is bounded in both terms.
MAX_JPEG_SCANS = 32
MAX_SCAN_PIXELS = 1_000_000_000  # scans x pixels: e.g. 10 scans of 100 MP (measured ~4.6 ms per scan-megapixel)
# A PNG's chunks are walked by Pillow one by one, a million empty ones after the image data cost seconds of CPU:
# at most this many, or one per PNG_BYTES_PER_CHUNK of the file where that is more (libpng writes 8 KB IDATs).
MAX_PNG_CHUNKS = 10_000
PNG_BYTES_PER_CHUNK = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Decoded pixels held at once by every decode of this process (ingest threads, API uploads, the web page): each
# decode waits for its share, and one that alone needs more is refused. Pillow keeps RGB and 32-bit pixels in 4
# bytes, 16-bit gray in 2, 8-bit gray and palettes in 1; 16-bit and float pictures are shrunk before they are
# turned into 8-bit RGB, never converted whole (a float64 copy of a 49 MP picture was 400 MB).
DECODE_BUDGET_BYTES = 512 << 20
PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"}  # the modes Pillow's `reduce` takes
# Pillow allocates a picture's pixels in blocks of this size (16 MB by default). Blocks over glibc's 32 MB ceiling
# for its sliding mmap threshold are always mapped, so a freed picture goes back to the system: with 16 MB blocks
# the threads' heaps kept it, and 8 concurrent 50 MP decodes held 1.6 GB although the budget let 2 run at once.
PILLOW_BLOCK_BYTES = 64 << 20
WORK_BYTES_PER_PIXEL = 12  # the RGB arrays made from the (shrunk) picture: a float32 or uint16 copy, RGB, upright


class ImageError(ValueError):
    """An image file that cannot be used; the message is the reason shown to the user."""


class DecodeBudget:
    """The bytes of decoded pixels a process holds at once, shared by every decode in it (see `DECODE_BUDGET_BYTES`).

    Example:
        >>> with DECODES.hold(400 << 20):   # waits while other decodes hold too much of it
        ...     pil.load()
    """

    def __init__(self, total: int) -> None:
        self.total, self.used, self._changed = total, 0, threading.Condition()

    @contextlib.contextmanager
    def hold(self, need: int) -> Iterator[None]:
        """Hold `need` bytes of the budget for the block, waiting for them; ImageError if `need` is over it all."""
        _give_pixels_back()
        if need > self.total:
            raise ImageError(
                f"decoding it would take {need / 2**20:,.0f} MB, over the {self.total / 2**20:,.0f} MB "
                "decoding budget (decompression-bomb guard)"
            )
        with self._changed:
            self._changed.wait_for(lambda: self.used + need <= self.total)
            self.used += need
        try:
            yield
        finally:
            with self._changed:
                self.used -= need
                self._changed.notify_all()
            _trim()


@functools.cache
def _give_pixels_back() -> None:
    """Have Pillow allocate pixels in `PILLOW_BLOCK_BYTES` blocks (once, on the first decode)."""
    Image.core.set_block_size(PILLOW_BLOCK_BYTES)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (which has `malloc_trim`); None elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _trim() -> None:
    """Give the memory a decode freed back to the system (glibc keeps it in each thread's heap otherwise: the
    server's idle memory grew by 77 and 202 MB over two rounds of 8 concurrent 50 MP uploads, 43 and 56 with it)."""
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


DECODES = DecodeBudget(DECODE_BUDGET_BYTES)  # the one budget of this process


def decoded_bytes(mode: str, size: tuple[int, int], max_side: int | None = None) -> int:
    """The memory a decode takes: Pillow's pixels in `mode` at `size`, and the arrays made from them once
    reduced to about `max_side` (`_reduced`), in bytes."""
    width, height = size
    factor = max(1, max(size) // max_side) if max_side else 1
    work = -(-width // factor) * -(-height // factor) * WORK_BYTES_PER_PIXEL
    converted = width * height * 4 if factor > 1 and mode not in REDUCIBLE and not mode.startswith("I;16") else 0
    return width * height * PILLOW_BYTES.get(mode, 4) + work + converted


def check_chunks(data: bytes) -> None:
    """Refuse a PNG of more chunks than a picture needs (see `MAX_PNG_CHUNKS`), walking only their headers.

    Raises:
        ImageError: a PNG with more than `MAX_PNG_CHUNKS` chunks (or one per `PNG_BYTES_PER_CHUNK` bytes).
    """
    if not data.startswith(PNG_SIGNATURE):
        return
    limit, at, chunks = max(MAX_PNG_CHUNKS, len(data) // PNG_BYTES_PER_CHUNK), len(PNG_SIGNATURE), 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        chunks += 1
        if chunks > limit:
            raise ImageError(
                f"a PNG of more than {limit:,} chunks in {len(data):,} bytes is refused: reading it would take "
                "more work than a picture needs"
            )
        if kind == b"IEND":
            return
        at += 12 + length


def check_scans(data: bytes, pixels: int) -> None:
    """Refuse a JPEG whose scans would cost more decoding than any photo needs (see `MAX_JPEG_SCANS`).

    Raises:
        ImageError: more than `MAX_JPEG_SCANS` scans, or scans x pixels over `MAX_SCAN_PIXELS`.
    """
    scans = data.count(b"\xff\xda")  # start-of-scan markers; 0xFF inside entropy-coded data is stuffed as FF 00
    if scans > MAX_JPEG_SCANS or scans * pixels > MAX_SCAN_PIXELS:
        raise ImageError(
            f"a JPEG with {scans} scans at {pixels:,} pixels is refused: it would take more decoding than a photo "
            f"needs (at most {MAX_JPEG_SCANS} scans and {MAX_SCAN_PIXELS:,} scan-pixels)"
        )
