"""Hostile uploads against a real `t2i serve`: peak server memory for 8 concurrent 50 MP uploads of each bit depth.

Indexes 20 bundled photos into a temporary data folder with `t2i index`, starts `t2i serve --api` on 127.0.0.1
over it, then for each kind of picture (an 8-bit RGB PNG, a 16-bit gray PNG and a float32 TIFF, each 50 MP and
under the 10 MB upload limit) posts it to /search/image from 8 clients at once, sampling the server's resident
memory (with milvus-lite's process) every 10 ms. It prints the server's memory idle and at its peak per kind,
the answers' status codes and the wall time, and the ratios of each peak to the idle server and to the 1.5 GB
target (issue 35). The first line names the CPU and its SIMD flags.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/hostile.py      # ~2 minutes
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from search import child_pids, rss_mb  # benchmarks/search.py: RSS from /proc

from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.models.cpu import describe

T2I = str(Path(sys.executable).with_name("t2i"))
SIDE = (8000, 6250)  # 50,000,000 pixels: the upload limit
CLIENTS = 8
TARGET_MB = 1536


def pictures() -> dict[str, tuple[str, bytes, str]]:
    """The three 50 MP pictures, small on disk: (file name, bytes, content type) per bit depth."""
    width, height = SIDE
    steps = np.floor(np.linspace(0, 64, width, endpoint=False)) / 64  # 64 bands: deflate makes any depth small
    ramp = np.tile(steps.astype(np.float32)[None, :], (height, 1))
    made = {}
    for name, array, kind in (
        ("8-bit RGB PNG", np.repeat((ramp * 255).astype(np.uint8)[..., None], 3, axis=2), "PNG"),
        ("16-bit gray PNG", (ramp * 65535).astype(np.uint16), "PNG"),
        ("float32 TIFF", ramp * 65535, "TIFF"),
    ):
        out = io.BytesIO()
        options = {"compression": "tiff_adobe_deflate"} if kind == "TIFF" else {"compress_level": 9}
        Image.fromarray(array).save(out, kind, **options)
        made[name] = (f"p.{kind.lower()}", out.getvalue(), f"image/{kind.lower()}")
    return made


def server_mb(pid: int) -> float:
    """The server's resident memory with its children's (milvus-lite), in MB."""
    return rss_mb(str(pid)) + sum(rss_mb(child) for child in child_pids(str(pid)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    print(describe(), flush=True)  # first: which CPU the figures below come from
    made = pictures()
    for name, (_, data, _) in made.items():
        print(f"{name}: {SIDE[0]}x{SIDE[1]} in {len(data) / 2**20:.2f} MB")
    with tempfile.TemporaryDirectory(prefix="t2i-hostile-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i, path in enumerate(load_bundled().path.head(20)):
            (photos / f"p{i}.png").write_bytes(Path(path).read_bytes())
        env = {**os.environ, "T2I_DATA_DIR": str(Path(tmp) / "data")}
        subprocess.run([T2I, "index", str(photos)], env=env, check=True, capture_output=True, timeout=600)
        port = free_port()
        server = subprocess.Popen(
            [T2I, "serve", "--api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"t2i serve did not start: {server.stderr.read().decode()[-500:]}")
                time.sleep(0.5)
            httpx.post(f"{url}/search/image", files={"file": ("w.png", _warm(), "image/png")}, timeout=120)
            for name, (filename, data, content_type) in made.items():
                idle, peak, done = server_mb(server.pid), [0.0], threading.Event()

                def sample(peak: list[float] = peak, done: threading.Event = done) -> None:
                    while not done.wait(0.01):
                        peak[0] = max(peak[0], server_mb(server.pid))

                sampler = threading.Thread(target=sample)
                sampler.start()
                started = time.perf_counter()

                def upload(_: int, filename: str = filename, data: bytes = data, kind: str = content_type) -> int:
                    files = {"file": (filename, data, kind)}
                    return httpx.post(f"{url}/search/image", files=files, timeout=300).status_code

                with ThreadPoolExecutor(CLIENTS) as pool:
                    codes = list(pool.map(upload, range(CLIENTS)))
                elapsed = time.perf_counter() - started
                done.set()
                sampler.join()
                print(
                    f"{name}: {CLIENTS} concurrent uploads answered {sorted(set(codes))} in {elapsed:.1f} s; server "
                    f"{idle:.0f} MB idle, peak {peak[0]:.0f} MB; ratio peak/idle = {peak[0] / idle:.2f}, "
                    f"ratio peak/target = {peak[0] / TARGET_MB:.2f} (target {TARGET_MB} MB)"
                )
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _warm() -> bytes:
    """A small PNG for the first request (loads what the first search loads)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(out, "PNG")
    return out.getvalue()


if __name__ == "__main__":
    main()
