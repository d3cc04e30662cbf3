"""The course as a site: Jupyter Book executes notebook 01 offline and builds its page; chromium shows its plots.

The whole book (`make book`) executes every notebook, about as long as their tests; this builds notebook 01 and
the index, into a temporary folder with its own execution cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_app_browser import CHROMIUM, CHROMIUM_ARGS, sync_api

pytest.importorskip("jupyter_book", reason='the book extra: pip install -e ".[book]" (`make book` does)')
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/01_build_text_image_search"


def test_the_built_notebook_01_page_shows_its_outputs(tmp_path):
    config = (ROOT / "_config.yml").read_text().replace("cache: _build/.jupyter_cache", f"cache: {tmp_path}/cache")
    (tmp_path / "_config.yml").write_text(config)
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: docs/index\nchapters:\n  - file: {NOTEBOOK}\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend draws the plots
    env["T2I_MILVUS_URI"] = str(tmp_path / "book.db")
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--path-output", str(tmp_path)]
    command += ["--toc", str(tmp_path / "_toc.yml"), "--config", str(tmp_path / "_config.yml")]
    built = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "Executing notebook failed" not in built.stdout + built.stderr
    html = tmp_path / "_build" / "html"
    page = html / f"{NOTEBOOK}.html"
    assert page.is_file() and (html / "docs" / "index.html").is_file()
    text = page.read_text()
    assert "not attempted" in text and "Check your understanding" in text  # exercises rendered, unsolved
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        view = browser.new_page()
        view.goto(page.as_uri())
        view.wait_for_load_state("load")
        shown = view.eval_on_selector_all(
            ".cell_output img", "images => images.filter(i => i.complete && i.naturalWidth > 0).length"
        )
        tables = view.locator(".cell_output table").count()
        browser.close()
    assert shown >= 5, f"only {shown} output images render"  # photo grids, the heatmap, search results
    assert tables >= 1
