"""The API's contract: schemathesis against the OpenAPI document, 405 with Allow, the query pattern.

Real HTTP on 127.0.0.1 (uvicorn in a thread), the real encoder and a real milvus-lite file per module;
schemathesis runs as the README says (`schemathesis run URL --checks all`, from the repository root so that
`schemathesis.toml` loads its picture hooks), with a bounded number of examples and a fixed seed. The only
address it is given is the server's loopback URL; it has no telemetry.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine
from t2i_helpers.pipelines import clean_query
from t2i_helpers.schemas import QUERY_PATTERN
from t2i_helpers.server import BackgroundServer, serve_app

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EXAMPLES = 25  # per operation and phase: about 10 s a run on an idle 2-core machine


@pytest.fixture(scope="module")
def small_engine(encoder, bundled, tmp_path_factory):
    """Eight photos in a milvus-lite file of their own: schemathesis adds and deletes pictures."""
    engine = SearchEngine.open(Config(uri=str(tmp_path_factory.mktemp("contract") / "contract.db")), encoder)
    engine.index(bundled[bundled.label.isin(["animals", "vehicles"])].groupby("label").head(4), progress=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def served(small_engine, tmp_path_factory):
    """What `t2i serve` serves (API and web app): its base URL."""
    with BackgroundServer(serve_app(small_engine, upload_dir=tmp_path_factory.mktemp("uploads"))) as server:
        yield server.url


def test_schemathesis_finds_no_failure_against_the_openapi_document(served):
    url = served
    command = [SCHEMATHESIS, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES)]
    command += ["--seed", "17", "--generation-database", "none", "--no-color"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    summary = done.stdout[done.stdout.rfind("SUMMARY") :]
    assert done.returncode == 0 and "No issues found" in summary, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"Stateful \(in [\d.]+s\)\s+Scenarios", done.stdout), (
        "the stateful phase (index, get, delete) did not run"
    )


def test_the_query_pattern_is_exactly_what_clean_query_keeps():
    """The schema's `q` pattern and `clean_query` must agree on every character, or the contract lies."""
    pattern = re.compile(QUERY_PATTERN)
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates cannot travel in a URL
        char = chr(code)
        try:
            kept = bool(clean_query(char))
        except ValueError:
            kept = False
        assert bool(pattern.search(char)) == kept, hex(code)


def test_a_method_a_path_does_not_take_is_405_with_every_allowed_method(served):
    response = httpx.request("OPTIONS", f"{served}/images/1")
    assert response.status_code == 405 and response.headers["Allow"] == "DELETE, GET"
    assert httpx.put(f"{served}/search").headers["Allow"] == "GET"
