"""Queries in other languages: caption -> photo R@10 per language for today's default and the new text towers.

Over the bundled photos' translated captions (`measure.languages`: each of the 674 distinct English captions and its
translations, every Tux Paint language with at least 500 of them), with the fp32 image logits computed once and
re-projected into each candidate's space (the same EfficientNet-Lite2 top-20 classes: only the text tower
changes). Then one text query's time (p50, `encode_texts` of one caption, the candidates timed in turns) and
issue 33's three ratios for the new encoder against today's default:

    ratio english_new/english_now = N      (at least 0.98)
    ratio worst_claimed/english_new = N    (the worst of USE's 16 languages; at least 0.75)
    ratio query_new/query_now = N          (one text query, p50; at most 1.0)

and which of the three every candidate meets. Last, `t2i move` of a 10,000-photo collection made by today's default to
the new encoder (the bundled photos' rows repeated under new ids): seconds and `photos decoded = N`, every image
decoder's calls counted, and how long rows stored before schema 4 (no classes) take to recover theirs.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/languages.py          # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/languages.py --candidates conse-effnet-use-pow0.5  # today's and one: ~3 minutes
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from t2i_helpers.config import DEFAULT_ENCODER, MULTILINGUAL_ENCODER, Config
from t2i_helpers.data.datasets import tuxpaint_csv
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.languages import (
    USE_LOCALES,
    image_logits,
    measured_languages,
    query_ms,
    recall_by_language,
    targets,
    translated_captions,
)
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.store.image_store import ROW_FIELDS
from t2i_helpers.store.move import move_collection, recover_classes

NEW = MULTILINGUAL_ENCODER  # the candidate the ratios are printed for (see the report at the end)
MOVE_ROWS = 10_000  # the collection moved to NEW
RECOVER_ROWS = 200  # rows whose classes are recovered from their vectors, timed
CANDIDATES = [
    "conse-effnet-minilm-pow0.5",
    "conse-effnet-use",
    "conse-effnet-use-pow0.5",
    "conse-effnet-minilm-use-pow0.5",
    "conse-effnet-minilm-use-pow0.5-fused",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--now", default=DEFAULT_ENCODER, help="today's default encoder")
    parser.add_argument("--new", default=NEW, help="the encoder the three ratios are printed for")
    parser.add_argument("--candidates", nargs="*", default=CANDIDATES, help="encoders measured beside them")
    parser.add_argument("--queries", type=int, default=200, help="captions timed as one-text queries")
    parser.add_argument("--move-rows", type=int, default=MOVE_ROWS, help="rows of the collection moved")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    names = list(dict.fromkeys([args.now, args.new, *args.candidates]))
    # Every tower as the registry loads it, except the image tower: fp32 ONNX (its logits are computed once here).
    encoders = {name: load_encoder(name, backend="onnx") for name in names}
    data = translated_captions()
    languages = measured_languages(data)
    start = time.perf_counter()
    logits = image_logits(data, encoders[args.now])
    print(f"{len(data.paths)} photos, {len(data.captions)} captions, {len(languages)} languages with at least 500")
    print(f"image logits once, fp32: {time.perf_counter() - start:.1f} s", flush=True)
    recall = {}
    for name, encoder in encoders.items():
        start = time.perf_counter()
        recall[name] = recall_by_language(encoder, data, logits, languages)
        print(f"{name}: {encoder.text_backend} text tower, {time.perf_counter() - start:.1f} s", flush=True)
    table = pd.DataFrame(recall)
    table.insert(0, "captions", data.counts()[languages])
    table.insert(1, "USE", ["yes" if lang in USE_LOCALES.values() else "" for lang in languages])
    with pd.option_context("display.max_rows", None, "display.width", 250, "display.max_columns", None):
        print("\ncaption -> photo R@10 per language\n" + table.round(3).to_string())

    english = list(data.captions.en[: args.queries])
    mixed = [data.queries(locale)[0][i] for i in range(args.queries // 16 + 1) for locale in USE_LOCALES.values()]
    ms_english = dict(zip(names, query_ms(list(encoders.values()), english)))
    ms_mixed = dict(zip(names, query_ms(list(encoders.values()), mixed)))
    print("\none text query, p50 ms (English captions; captions in USE's 16 languages), timed in turns")
    for name in names:
        print(f"  {name}: {ms_english[name]:.2f}; {ms_mixed[name]:.2f}")

    print(f"\ntargets against today's default {args.now} (English R@10 {table.loc['en', args.now]:.3f})")
    for name in names[1:]:
        t = targets(table[args.now], table[name], ms_english[args.now], ms_english[name])
        met = ", ".join(f"{target} {'met' if ok else 'MISSED'}" for target, ok in t.met.items())
        print(f"  {name}: english {t.english:.3f}, worst {t.worst_language} {t.worst:.3f}, query {t.query:.2f}: {met}")
    t = targets(table[args.now], table[args.new], ms_english[args.now], ms_english[args.new])
    print(f"\nnew = {args.new}, now = {args.now}")
    print(f"ratio english_new/english_now = {t.english:.3f}")
    print(f"ratio worst_claimed/english_new = {t.worst:.3f} (worst of the 16: {t.worst_language})")
    print(f"ratio query_new/query_now = {t.query:.2f}")
    move_timing(args.now, args.new, args.move_rows)


def move_timing(source: str, target: str, rows: int = MOVE_ROWS) -> None:
    """Print the move of a `rows`-photo collection made by `source` to `target`: seconds, photos decoded.

    The bundled photos are indexed by `source`, and their rows (classes, vectors, every field) are repeated
    under new ids up to `rows`: a move's cost depends on its rows, not on what the photos show. Every image decoder
    (Pillow's open, OpenCV's imread and imdecode) counts its calls while the collection moves.
    """
    with tempfile.TemporaryDirectory(prefix="t2i-move-") as folder:
        config = Config(uri=str(Path(folder) / "move.db"), encoder=source, data_dir=Path(folder))
        engine = SearchEngine.open(config)
        engine.index(tuxpaint_csv(), progress=False)
        store = engine.store
        photos = [dict(r) for r in store.scan([*ROW_FIELDS, "embedding"])]
        store.delete([r["id"] for r in photos])
        ids = np.random.default_rng(0).choice(1 << 62, size=rows, replace=False)
        for lo in range(0, rows, 1000):
            chunk = [
                {**photos[k % len(photos)], "id": int(ids[k]), "path": f"{photos[k % len(photos)]['path']}#{k}"}
                for k in range(lo, min(rows, lo + 1000))
            ]
            store.insert(chunk, np.asarray([r.pop("embedding") for r in chunk], np.float32))
        store.flush()
        assert store.count() == rows
        vectors = np.asarray([r["embedding"] for r in photos[:RECOVER_ROWS]], np.float32)
        encoder = engine.encoder
        engine.close()
        load_encoder(target)  # loaded before the clock starts, as the first search would
        decoded = Counter()
        originals = {(Image, "open"): Image.open, (cv2, "imread"): cv2.imread, (cv2, "imdecode"): cv2.imdecode}
        for (module, name), function in originals.items():
            setattr(module, name, counting(function, decoded, name))
        try:
            report = move_collection(Config(uri=config.uri), target)
        finally:
            for (module, name), function in originals.items():
                setattr(module, name, function)
        start = time.perf_counter()
        recover_classes(vectors, encoder.class_embeddings, encoder.top_t)
        recover_s = (time.perf_counter() - start) / len(vectors)
    print(
        f"move of {report.rows} photos from {report.source} to {report.target}: {report.seconds:.1f} s "
        f"({report.rows / report.seconds:,.0f} rows/s), photos decoded = {sum(decoded.values())}"
    )
    print(
        f"rows stored before schema 4 (no classes): recovered from their vectors at {1000 * recover_s:.0f} ms a row "
        f"(measured on {len(vectors)}): {rows * recover_s / 60:.1f} min more for {rows:,} such rows"
    )


def counting(function, calls: Counter, name: str):
    """`function`, counting its calls in `calls[name]`."""

    def counted(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)

    return counted


if __name__ == "__main__":
    main()
