"""The OCR pass: the words in each stored photo that has none read yet, stored beside its vector (notebook 06).

    rows with ocr_read false (under a folder) -> a few at a time: read and decode -> read the text -> store it

OCR costs far more than embedding (~0.6 s a photo on a busy CPU), so it is its own pass over what is stored:
`t2i index FOLDER --ocr` embeds the new photos first, then reads the text of every photo of the folder that has
none yet, and nothing is embedded again. Each batch is stored (`ocr_read` set) before the next is read, so a run
killed part way loses at most one batch, and the next run reads only what was not stored.

Example:
    >>> read_text(engine.store, read_texts, root="photos/")      # read_texts from models/ocr.py
    OcrReport(read=12, with_text=3, skipped=[])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.images import ImageError, content_id, decode_image, read_bytes
from ..models.ocr import MAX_INPUT_SIDE
from ..store.image_store import ImageStore
from .operators import Skipped

OCR_BATCH = 4  # photos decoded at full size and read per batch: bounds memory (12 MP RGB is 36 MB)

Reader = Callable[[Sequence[np.ndarray]], list[str]]  # RGB photos -> the text read in each


@dataclass
class OcrReport:
    """What an OCR pass did: photos read, how many had words, and the files it could not read."""

    read: int = 0
    with_text: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. `read the text of 12 photos (3 with words), skipped 0`."""
        return f"read the text of {self.read} photos ({self.with_text} with words), skipped {len(self.skipped)}"


def unread(store: ImageStore, root: str | Path | None = None) -> list[dict]:
    """The stored rows (id, path) whose text was not read yet, under folder `root` if given, in path order."""
    return under(store.scan(["id", "path"], expression="ocr_read == false"), root)


def under(rows: list[dict], root: str | Path | None) -> list[dict]:
    """`rows` whose path lies under folder `root` (all of them for None), in path order: what a pass reads."""
    if root is not None:
        prefix = str(Path(root).expanduser().resolve()) + os.sep
        rows = [r for r in rows if r["path"].startswith(prefix)]
    return sorted(rows, key=lambda r: r["path"])


def read_text(
    store: ImageStore,
    reader: Reader,
    root: str | Path | None = None,
    batch_size: int = OCR_BATCH,
    progress: bool = True,
) -> OcrReport:
    """Read and store the text of every stored photo (under `root`) that has none read yet.

    A file that is gone, unreadable or no longer the image stored is a reported skip and stays unread (a later
    index of its folder brings its row up to date); so is a photo the reader fails on (`read_each`). Resumable:
    each batch is stored before the next is read.
    """
    report, rows = OcrReport(), unread(store, root)
    for lo in tqdm(range(0, len(rows), batch_size), unit="batch", desc="ocr", disable=not progress):
        images, ids, paths = [], [], []
        for row in rows[lo : lo + batch_size]:
            try:
                data = read_bytes(row["path"])
                if content_id(data) != int(row["id"]):
                    raise ImageError("the file changed after it was indexed; index its folder again")
                images.append(decode_image(data, max_side=MAX_INPUT_SIDE))  # what the reader reads at most
                ids.append(int(row["id"]))
                paths.append(row["path"])
            except ImageError as err:
                report.skipped.append(Skipped(row["path"], str(err)))
        texts = read_each(reader, images, paths, report) if images else []
        ids = [i for i, text in zip(ids, texts) if text is not None]
        texts = [text for text in texts if text is not None]
        if not ids:
            continue
        store.update({i: {"ocr_text": " ".join(text.split())} for i, text in zip(ids, texts)})
        store.flush()
        report.read += len(ids)
        report.with_text += sum(bool(t.strip()) for t in texts)
    return report


def read_each(reader: Reader, images: list[np.ndarray], paths: list[str], report: OcrReport) -> list[str | None]:
    """The text `reader` reads in each photo of a batch; where it raises, each photo again on its own, and a photo
    it still raises on is a reported skip (None): one photo never stops the pass."""
    try:
        return list(reader(images))
    except Exception as err:  # OcrError, or anything else a reader raises
        if len(images) == 1:
            report.skipped.append(Skipped(paths[0], f"the text could not be read ({type(err).__name__}: {err})"))
            return [None]
    return [text for image, path in zip(images, paths) for text in read_each(reader, [image], [path], report)]
