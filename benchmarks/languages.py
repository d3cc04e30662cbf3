"""Queries in other languages: caption -> photo R@10 per language for today's default and the new text towers.

Over the bundled photos' translated captions (`measure.languages`: each of the 674 distinct English captions and its
translations, every Tux Paint language with at least 500 of them), with the fp32 image logits computed once and
re-projected into each candidate's space (the same EfficientNet-Lite2 top-20 classes: only the text tower
changes). Then one text query's time (p50, `encode_texts` of one caption, the candidates timed in turns) and
issue 33's three ratios for the new encoder against today's default:

    ratio english_new/english_now = N      (at least 0.98)
    ratio worst_claimed/english_new = N    (the worst of USE's 16 languages; at least 0.75)
    ratio query_new/query_now = N          (one text query, p50; at most 1.0)

and which of the three every candidate meets.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/languages.py          # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/languages.py --candidates conse-effnet-use-pow0.5  # today's and one: ~3 minutes
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from t2i_helpers.config import DEFAULT_ENCODER
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

NEW = "conse-effnet-use-pow0.5"  # the candidate the ratios are printed for (see the report at the end)
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
    # ---- Collection move (the store's part of issue 33, added there): a 10,000-photo collection moved to the new
    # ---- text tower with `t2i move`: `photos decoded = 0` and the seconds it took, printed here.


if __name__ == "__main__":
    main()
