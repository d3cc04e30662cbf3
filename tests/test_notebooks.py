"""Every notebook runs top to bottom, headless and offline, against a throwaway milvus-lite file, with its
exercises left unsolved (each says "not attempted" and the notebook goes on)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_MILVUS_URI", str(tmp_path / "notebook.db"))
    monkeypatch.setenv("T2I_NOTEBOOK_TEST", "1")  # notebooks may shrink optional heavy steps under test
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    with_outputs = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.outputs]
    assert not with_outputs, f"{path.name} is committed with outputs in cells {with_outputs}: clear them"
    text = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    assert "What you will be able to do" in text[1] and "Check your understanding" in text[-1]
    run_in = {"metadata": {"path": str(path.parent)}}
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources=run_in).execute()
    checks = [cell for cell in notebook.cells if cell.cell_type == "code" and ".check(" in cell.source]
    assert len(checks) >= 3
    for cell in checks:
        printed = "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")
        assert "not attempted" in printed, cell.source
    warned = [out.text for cell in notebook.cells for out in getattr(cell, "outputs", [])
              if out.output_type == "stream" and out.name == "stderr" and "Warning" in out.text]  # fmt: skip
    assert not warned, f"{path.name} shows raw warnings: {warned[0][:300]}"
    check_claims(path.stem, notebook)


def check_claims(stem: str, notebook) -> None:
    """A sentence a notebook prints about its own results holds for the numbers it printed beside it."""
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in getattr(cell, "outputs", [])
                      if out.output_type == "stream")  # fmt: skip
    if stem.startswith("06"):
        speed = re.search(r"TextReader reads ([\d.]+)x the photos per second of the defaults", printed)
        assert speed and float(speed[1]) > 0
        fused = re.findall(
            r"(.+): R@1 vector ([\d.]+), BM25 ([\d.]+), fused ([\d.]+) \(fused (beats|does not beat)", printed
        )
        assert {kind for kind, *_ in fused} == {"text only", "pixels only", "both"}
        for _, vector, bm25, both, said in fused:
            assert (said == "beats") == (float(both) > max(float(vector), float(bm25)))
        cost = r"rows: selective x([\d.]+), broad x([\d.]+) the unfiltered median; cheapest: (\w+)"
        costs = re.findall(cost, printed)
        assert len(costs) >= 2  # milvus-lite at two sizes (and the server's, where installed)
        for selective, broad, cheapest in costs:
            ratios = {"none": 1.0, "selective": float(selective), "broad": float(broad)}
            assert ratios[cheapest] <= min(ratios.values()) + 0.005  # printed to 2 decimals
    if stem.startswith("07"):
        at = re.findall(
            r"(every face|faces >= \d+ px): at SAME_PERSON = ([\d.]+), precision ([\d.]+), recall ([\d.]+); "
            r"one person's faces up to [\d.]+ apart, two people's from ([\d.]+)",
            printed,
        )
        assert [kind for kind, *_ in at] == ["every face", "faces >= 40 px"]
        for _, threshold, precision, _, nearest in at:  # precision 1 far beyond the threshold (three people)
            assert float(precision) == 1.0 and float(nearest) > float(threshold) + 0.2
        assert float(at[0][3]) < float(at[1][3])  # the small faces are what cost recall
        sweep = re.search(r"split \(pairwise recall < 1\) at thresholds \[(.*)\]; merged .* at \[(.*)\]", printed)
        split, merged = ([float(t) for t in found.split(",") if t.strip()] for found in sweep.groups())
        assert split and merged and max(split) < min(merged)  # a low threshold splits a person, a high one merges
        for scores in ("pairwise: ", "B-cubed:  "):  # the face pass's grouping matches the truth
            assert scores + "Scores(precision=1.0, recall=1.0, f1=1.0)" in printed
        assert re.search(r"reading faces costs [\d.]+x the image embedding, OCR [\d.]+x", printed)
        assert "face pass again: read the faces of 0 photos" in printed  # a forgotten person is not found again
