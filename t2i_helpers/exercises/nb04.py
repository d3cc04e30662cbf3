"""Exercises of notebook 04: a request to the API with an API key, its status codes, p50/p95 from latencies."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from ..serve.auth import API_KEY_HEADER
from .problem import Case, Exercise, Wrong

# What the API answers (the module docs of t2i_helpers.serve.api say it, and the OpenAPI document).
SITUATIONS = (
    "a search for a blank query",
    "any search without the X-API-Key header, on a server started with --api-key",
    "an upload that is a PDF",
    "GET /images/{id} for an id that was never indexed",
    "an upload over the size limit",
)
STATUS = dict(zip(SITUATIONS, (422, 401, 415, 404, 413)))


def search_request(base_url: str, text: str, k: int, api_key: str) -> httpx.Request:
    """The request for the `k` best images for `text`, with the server's API key."""
    return httpx.Request("GET", f"{base_url}/search", params={"q": text, "k": k}, headers={API_KEY_HEADER: api_key})


def p50_p95(latencies_ms: Sequence[float]) -> tuple[float, float]:
    """The median and the 95th percentile of a list of latencies."""
    return float(np.percentile(latencies_ms, 50)), float(np.percentile(latencies_ms, 95))


def _request(base_url: str, text: str, k: int, key: str):
    def compare(request) -> None:
        if not isinstance(request, httpx.Request):
            raise Wrong("return an `httpx.Request(method, url, params=..., headers=...)`, not send it")
        if request.method != "GET" or request.url.path != "/search":
            raise Wrong(f"a text search is GET /search, not {request.method} {request.url.path}")
        if request.url.params.get("q") != text or request.url.params.get("k") != str(k):
            raise Wrong("the query goes in the parameter `q` and the number of hits in `k`")
        if request.headers.get(API_KEY_HEADER) != key:
            raise Wrong(f"the key goes in the `{API_KEY_HEADER}` header (not in the URL, where logs would keep it)")

    return compare


def _statuses(answer) -> None:
    if set(answer) != set(SITUATIONS):
        raise Wrong("give one status code for each situation in SITUATIONS")
    wrong = [s for s in SITUATIONS if answer[s] != STATUS[s]]
    if wrong:
        raise Wrong(f"{len(wrong)} of {len(SITUATIONS)} are not right, e.g. {wrong[0]!r}: read the API's error list")


def _percentiles(values: Sequence[float]):
    want = p50_p95(values)

    def compare(result) -> None:
        p50, p95 = (float(x) for x in result)
        if abs(p50 - want[0]) > 1e-6:
            raise Wrong("the p50 is off: it is the median, not the mean (one slow request moves a mean)")
        if abs(p95 - want[1]) > 1e-6:
            raise Wrong("the p95 is off: 95% of the requests are at most as slow; `np.percentile(x, 95)`")

    return compare


_LATENCIES = [12.0, 14.0, 13.0, 250.0, 15.0, 13.5, 12.5, 16.0, 14.5, 13.0, 80.0, 12.0]

q1 = Exercise(
    "A search request with the API key",
    [
        Case(
            ("http://127.0.0.1:8000", "a fire truck", 3, "s3cret-key-0123456789"),
            _request("http://127.0.0.1:8000", "a fire truck", 3, "s3cret-key-0123456789"),
        )
    ],  # fmt: skip
    [
        "`httpx.Request('GET', url, params={...}, headers={...})` builds a request without sending it.",
        f"The server reads the key from the `{API_KEY_HEADER}` header.",
    ],
    search_request,
    wrong=[
        lambda b, t, k, key: httpx.Request("GET", f"{b}/search", params={"q": t, "k": k, "api_key": key}),
        lambda b, t, k, key: httpx.Request("POST", f"{b}/search", json={"q": t, "k": k}, headers={API_KEY_HEADER: key}),
    ],
)

q3 = Exercise(
    "p50 and p95 from measured latencies",
    [Case((_LATENCIES,), _percentiles(_LATENCIES)), Case(([5.0, 1.0, 3.0],), _percentiles([5.0, 1.0, 3.0]))],
    ["`np.percentile(values, q)` with q = 50 and 95.", "Return them as a pair: (p50, p95)."],
    p50_p95,
    wrong=[
        lambda x: (float(np.mean(x)), float(np.percentile(x, 95))),
        lambda x: (float(np.median(x)), float(max(x))),
    ],
)

q2 = Exercise(
    "Status codes of the API",
    [Case((), _statuses)],
    [
        "4xx means the client can fix it: 401 for a missing key, 404 for what does not exist.",
        "422: well-formed but not usable (a blank query); 413: too large; 415: a media type not accepted.",
    ],
    STATUS,
    wrong=[dict.fromkeys(SITUATIONS, 400), {**STATUS, SITUATIONS[0]: 400}],
    takes_function=False,
)


EXERCISES = {"nb04.q1": q1, "nb04.q2": q2, "nb04.q3": q3}
