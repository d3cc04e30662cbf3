"""CLIP ViT-B/32 on this CPU: eager fp32 PyTorch (what the CLIP encoders ran before) against the fast path.

In one run, on the same randomly initialized model (the real architecture; no weights ship offline) and the
same bundled photos:
  - the image tower alone on preprocessed pixels: best images/s over batch sizes and thread layouts (one pass at
    a time on both threads, or two passes at once on one thread each), for eager fp32 and for the backend
    `backend="auto"` picks here; `ratio clip_fast/clip_torch` is the best over the best;
  - one short search query end to end (tokenize, text tower, normalize): p50 latency for eager fp32 and the
    fast backend; `ratio clip_query_fast/clip_query_torch`;
  - how closely the fast path follows eager fp32 (minimum cosine per row) and what padding a query to the full
    77 tokens costs.
Rounds alternate between the two backends and each keeps its best, so other work on a shared CPU biases neither.

    .venv/bin/python benchmarks/clip_speed.py                        # transformers, about 3 minutes on 2 cores
    .venv-clip/bin/python benchmarks/clip_speed.py --library openclip
    .venv/bin/python benchmarks/clip_speed.py --arch ViT-L-14 --photos 16 --rounds 2   # the other rows of the README
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.data.images import read_image
from t2i_helpers.models.clip_archs import random_hf, random_openclip
from t2i_helpers.models.cpu import describe

QUERIES = [
    "a red kangaroo",
    "a fire truck",
    "a dog running on the beach",
    "two people riding bicycles",
    "a bowl of fruit on a table",
    "a black cat",
    "snow on the mountains",
    "an old sailing ship",
    "a child holding a balloon",
    "a city street at night",
]


def tower_rate(encoder, pixels: torch.Tensor, batch: int, passes: int) -> float:
    """Images/s of the image tower alone over `pixels`, `passes` forward passes at a time."""
    batches = list(torch.split(pixels, batch))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // passes))
    try:
        with ThreadPoolExecutor(passes) as pool:
            list(pool.map(encoder.image_features, batches[:passes]))  # warm-up
            start = time.perf_counter()
            list(pool.map(encoder.image_features, batches))
            return len(pixels) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def query_p50_ms(encoder, rounds: int) -> float:
    """Median latency of `encode_texts([q])` over the queries, `rounds` times each."""
    encoder.encode_texts(QUERIES[:2])
    latencies = []
    for _ in range(rounds):
        for query in QUERIES:
            start = time.perf_counter()
            encoder.encode_texts([query])
            latencies.append(time.perf_counter() - start)
    return 1000 * float(np.median(latencies))


def padded_query(encoder, library: str) -> tuple[torch.Tensor, ...]:
    """One query as the text tower's input padded to its full length (77 for CLIP), as open_clip's tokenizer does."""
    if library == "openclip":
        return (encoder.tokenizer(QUERIES[2:3]),)
    limit = encoder.model.config.text_config.max_position_embeddings
    inputs = encoder.tokenizer(QUERIES[2:3], padding="max_length", max_length=limit, return_tensors="pt")
    return tuple(inputs[name] for name in ("input_ids", "attention_mask") if name in inputs)  # SigLIP: no mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=["hf", "openclip"], default="hf")
    parser.add_argument("--arch", default="ViT-B-32", help="also ViT-B-16, ViT-L-14, SigLIP-B-16 (hf only)")
    parser.add_argument("--photos", type=int, default=64, help="photos the image tower embeds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each configuration keeps its best")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    if args.library == "openclip" and importlib.util.find_spec("open_clip") is None:  # before anything starts
        print('skipped: --library openclip needs open_clip: pip install -e ".[clip]"')
        return

    # A fresh choice for "auto", timed on this machine now; its ONNX graphs (hundreds of MB) go with the run.
    with tempfile.TemporaryDirectory(prefix="t2i-clip-bench-") as cache:
        measure(args, cache)


def measure(args: argparse.Namespace, cache: str) -> None:
    """Both backends of one architecture, built over `cache`; prints the ratios."""
    build = random_hf if args.library == "hf" else random_openclip
    eager = build(args.arch, backend="torch", cache_dir=cache)
    fast = eager.with_backend("auto")
    print(f"{eager.name}: {sum(p.numel() for p in eager.model.parameters()) / 1e6:.0f}M parameters, dim {eager.dim}")
    print(f"backend auto picked here: {fast.backend}  ({torch.get_num_threads()} threads)")

    photos = [read_image(path)[1] for path in load_bundled().path[: args.photos]]
    start = time.perf_counter()
    pixels = eager.preprocess(photos)
    print(f"  preprocessing (resize, crop, normalize): {len(photos) / (time.perf_counter() - start):.0f} images/s")
    layouts = [(batch, passes) for batch in (8, 16, 32) for passes in (1, 2)]
    best = {"torch": (0.0, ""), "fast": (0.0, "")}
    for _ in range(args.rounds):
        for batch, passes in layouts:
            for label, encoder in (("torch", eager), ("fast", fast)):
                rate = tower_rate(encoder, pixels, batch, passes)
                best[label] = max(best[label], (rate, f"batch {batch}, {passes} pass(es) at a time"))
    for label in best:
        print(f"  image tower {label:>5}: {best[label][0]:6.1f} images/s ({best[label][1]})")
    cosines = (eager.encode_images(photos) * fast.encode_images(photos)).sum(axis=1)
    print(f"  image embeddings, fast vs eager fp32: min cosine {cosines.min():.5f}")

    query = {"torch": [], "fast": []}
    for _ in range(args.rounds):
        query["torch"].append(query_p50_ms(eager, 3))
        query["fast"].append(query_p50_ms(fast, 3))
    query_ms = {label: min(values) for label, values in query.items()}
    tokens = np.mean([eager.tokenize([q])[0].shape[1] for q in QUERIES])
    print(
        f"  text query p50 (mean {tokens:.1f} tokens): eager {query_ms['torch']:.2f} ms, fast {query_ms['fast']:.2f} ms"
    )
    cosines = (eager.encode_texts(QUERIES) * fast.encode_texts(QUERIES)).sum(axis=1)
    print(f"  text embeddings, fast vs eager fp32: min cosine {cosines.min():.5f}")
    padded = padded_query(eager, args.library)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        eager.text_features(padded)
        times.append(time.perf_counter() - start)
    print(f"  one query padded to {padded[0].shape[1]} tokens, eager text tower: {1000 * np.median(times):.2f} ms")

    print(f"ratio clip_fast/clip_torch = {best['fast'][0] / best['torch'][0]:.2f}")
    print(f"ratio clip_query_fast/clip_query_torch = {query_ms['fast'] / query_ms['torch']:.2f}")


if __name__ == "__main__":
    main()
