"""`t2i index --ocr`: the words in photos read by real OCR, stored without re-embedding, resumable after kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest

from t2i_helpers.cli import main
from t2i_helpers.config import Config
from t2i_helpers.data.library import generate_library
from t2i_helpers.pipelines.ocr_pass import unread
from t2i_helpers.store.connection import read_meta
from t2i_helpers.store.image_store import ImageStore

from .conftest import T2I, index_counts


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    """Twelve generated phone photos, six of them of printed words (signs, receipts, a screenshot)."""
    folder = tmp_path_factory.mktemp("signs")
    return folder, generate_library(folder, photos=12, texts=6, size=(960, 720), seed=5)


def _t2i(capsys, *args: str) -> SimpleNamespace:
    """`t2i ARGS` run in this process (each start of the command in a process of its own costs ~10 s of imports
    and model loading; the one run that must be a process of its own, killed with -9, is started below)."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return SimpleNamespace(stdout=out.out, stderr=out.err)


def _unread(uri: str) -> int:
    meta = read_meta(Config(uri=uri))
    store = ImageStore(Config(uri=uri), meta["encoder"], meta["dim"])
    try:
        return len(unread(store))
    finally:
        store.close()  # the last store of the file: its milvus-lite server stops and frees the file


def test_ocr_on_an_indexed_folder_embeds_nothing_again_and_resumes_after_kill_9(signs, tmp_path, capsys):
    folder, truth = signs
    uri = str(tmp_path / "ocr.db")
    assert index_counts(_t2i(capsys, "index", str(folder), "--uri", uri).stdout).startswith("added 12,")
    assert _unread(uri) == 12

    run = subprocess.Popen(
        [T2I, "index", str(folder), "--uri", uri, "--ocr"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    seen, deadline = "", time.monotonic() + 300
    while "ocr:" not in seen or "1/3" not in seen.rsplit("ocr:", 1)[-1]:  # the first batch is stored
        assert time.monotonic() < deadline and run.poll() is None, seen
        seen += run.stderr.read(1)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    left = _unread(uri)
    assert 0 < left < 12  # what was stored before the kill stays read

    again = _t2i(capsys, "index", str(folder), "--uri", uri, "--ocr")
    assert index_counts(again.stdout) == "added 0, unchanged 12, updated 0, removed 0, skipped 0"
    assert f"read the text of {left} photos" in again.stderr  # nothing stored is read twice
    assert _unread(uri) == 0
    third = _t2i(capsys, "index", str(folder), "--uri", uri, "--ocr")
    assert "read the text of 0 photos" in third.stderr

    for row in truth[truth.words != ""].itertuples():
        word = row.words.split()[0]
        found = _t2i(capsys, "search", "--text", word, "--json", "-k", "1", "--uri", uri)
        hit = json.loads(found.stdout.splitlines()[0])
        assert hit["path"].endswith(row.file) and word.lower() in hit["text"].lower().replace(" ", "")
    quoted = _t2i(capsys, "search", f'a photo "{truth[truth.words != ""].words.iloc[0].split()[0]}"', "--uri", uri)
    assert "read from the query: text" in quoted.stderr
