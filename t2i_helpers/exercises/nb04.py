"""Exercises of notebook 04: a request to the API with an API key, its status codes, p50/p95 from latencies."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from http import HTTPStatus

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
# Every percentile definition in common use: NumPy's `method`s (Hyndman & Fan's nine, and four more; pandas and
# torch compute some of these), and `statistics.quantiles` (which extrapolates past the data on short lists).
PERCENTILE_METHODS = (
    "inverted_cdf",
    "averaged_inverted_cdf",
    "closest_observation",
    "interpolated_inverted_cdf",
    "hazen",
    "weibull",
    "linear",
    "median_unbiased",
    "normal_unbiased",
    "lower",
    "higher",
    "midpoint",
    "nearest",
)
SENT = "build the request, do not send it: return `httpx.Request(...)` (nothing listens at the test's address)"


def search_request(base_url: str, text: str, k: int, api_key: str) -> httpx.Request:
    """The request for the `k` best images for `text`, with the server's API key."""
    return httpx.Request("GET", f"{base_url}/search", params={"q": text, "k": k}, headers={API_KEY_HEADER: api_key})


def p50_p95(latencies_ms: Sequence[float]) -> tuple[float, float]:
    """The median and the 95th percentile of a list of latencies."""
    return float(np.percentile(latencies_ms, 50)), float(np.percentile(latencies_ms, 95))


def _request(base_url: str, text: str, k: int, key: str):
    def compare(request) -> None:
        if isinstance(request, httpx.Response):
            raise Wrong(SENT)
        if not isinstance(request, httpx.Request):
            raise Wrong(f"return an `httpx.Request(method, url, params=..., headers=...)`, not a {type(request)}")
        base = httpx.URL(base_url)
        if (request.url.scheme, request.url.host, request.url.port) != (base.scheme, base.host, base.port):
            raise Wrong(f"the request goes to {request.url.host}:{request.url.port}: build the URL from base_url")
        if request.method != "GET" or request.url.path != "/search":
            raise Wrong(f"a text search is GET /search, not {request.method} {request.url.path}")
        params = request.url.params
        if params.get_list("q") != [text] or params.get_list("k") != [str(k)]:
            raise Wrong("the query goes in the parameter `q` and the number of hits in `k`, encoded by `params=`")
        if "api_key" in str(request.url).lower() or key in str(request.url):
            raise Wrong(f"the key is in the URL, where logs keep it: send it in the `{API_KEY_HEADER}` header")
        if request.headers.get(API_KEY_HEADER) != key:
            raise Wrong(f"the key goes in the `{API_KEY_HEADER}` header")

    return compare


def _statuses(answer) -> None:
    if not isinstance(answer, dict):
        raise Wrong(f"give a dictionary from each situation to its status code, not a {type(answer).__name__}")
    if set(answer) != set(SITUATIONS):
        raise Wrong("give one status code for each situation in SITUATIONS (the keys, unchanged)")
    if any(code is Ellipsis for code in answer.values()):
        raise Wrong("some situations still have `...`: give each a status code")
    if not all(isinstance(code, int) for code in answer.values()):
        raise Wrong("status codes are integers, e.g. 404")
    wrong = [s for s in SITUATIONS if answer[s] != STATUS[s]]
    if wrong:
        raise Wrong(f"{len(wrong)} of {len(SITUATIONS)} are not right, e.g. {wrong[0]!r}: read the API's error list")


def _percentiles(values: Sequence[float]):
    accepted = {q: [float(np.percentile(values, q, method=m)) for m in PERCENTILE_METHODS] for q in (50, 95)}
    for method in ("exclusive", "inclusive") if len(values) > 1 else ():  # the standard library's two
        cuts = statistics.quantiles(values, n=100, method=method)
        accepted[50].append(cuts[49])
        accepted[95].append(cuts[94])

    def compare(result) -> None:
        p50, p95 = (float(x) for x in result)
        if not any(abs(p50 - v) < 1e-6 for v in accepted[50]):
            raise Wrong("the p50 is off: it is the median, not the mean (one slow request moves a mean)")
        if not any(abs(p95 - v) < 1e-6 for v in accepted[95]):
            raise Wrong("the p95 is off: 95% of the requests are at most as slow (sort them, or `np.percentile`)")

    return compare


_RNG = np.random.default_rng(4)
_LATENCIES = [12.0, 14.0, 13.0, 250.0, 15.0, 13.5, 12.5, 16.0, 14.5, 13.0, 80.0, 12.0]
_LONG = [round(float(x), 2) for x in _RNG.lognormal(2.5, 0.6, size=40)]  # 40: the max is no percentile's p95
_BASE = "http://127.0.0.1:9"  # the discard port: nothing answers there, so a request sent fails at once


def _request_client(base_url, text, k, api_key):
    with httpx.Client(base_url=base_url, headers={API_KEY_HEADER: api_key}) as client:
        return client.build_request("GET", "/search", params={"q": text, "k": k})


def _request_url(base_url, text, k, api_key):
    url = httpx.URL(base_url).join("/search").copy_merge_params({"q": text, "k": str(k)})
    return httpx.Request(method="GET", url=url, headers=[(API_KEY_HEADER.lower(), api_key)])


q1 = Exercise(
    "A search request with the API key",
    "Write `search_request(base_url, text, k, api_key)`: return an `httpx.Request` (built, not sent) for "
    "GET `/search` on the server at `base_url` (e.g. `http://127.0.0.1:8000`) with the parameters `q` (the text, "
    "any characters) and `k`, and the key in the `X-API-Key` header.",
    [
        Case(
            ("http://127.0.0.1:8000", "a fire truck", 3, "s3cret-key-0123456789"),
            _request("http://127.0.0.1:8000", "a fire truck", 3, "s3cret-key-0123456789"),
        ),
        Case(
            (_BASE, "café & crème #2 50%", 12, "another-key-9876543210"),
            _request(_BASE, "café & crème #2 50%", 12, "another-key-9876543210"),
        ),
    ],
    [
        "`httpx.Request('GET', url, params={...}, headers={...})` builds a request without sending it.",
        f"The server reads the key from the `{API_KEY_HEADER}` header.",
    ],
    search_request,
    wrong=[
        lambda b, t, k, key: httpx.Request("GET", f"{b}/search", params={"q": t, "k": k, "api_key": key}),
        lambda b, t, k, key: httpx.Request("POST", f"{b}/search", json={"q": t, "k": k}, headers={API_KEY_HEADER: key}),
        lambda b, t, k, key: httpx.Request("GET", f"{b}/search?q={t}&k={k}", headers={API_KEY_HEADER: key}),
        lambda b, t, k, key: httpx.get(f"{b}/search", params={"q": t, "k": k}, headers={API_KEY_HEADER: key}),
        lambda b, t, k, key: httpx.Request(
            "GET", f"{b}/search", params={"q": t, "k": k}, headers={"Authorization": f"Bearer {key}"}
        ),
        lambda b, t, k, key: httpx.Request(
            "GET", "http://127.0.0.1:8000/search", params={"q": t, "k": k}, headers={API_KEY_HEADER: key}
        ),
        lambda b, t, k, key: httpx.Request(
            "GET", f"{b}/search", params={"text": t, "top_k": k}, headers={API_KEY_HEADER: key}
        ),
        lambda b, t, k, key: httpx.Request("GET", f"{b}/search", params={"q": t}, headers={API_KEY_HEADER: key}),
        lambda b, t, k, key: httpx.Request(
            "GET", f"{b}/images", params={"q": t, "k": k}, headers={API_KEY_HEADER: key}
        ),
    ],
    variants=[
        _request_client,
        _request_url,
        lambda b, t, k, key: httpx.Request(
            "GET", b + "/search", params=[("q", t), ("k", str(k))], headers={"x-api-key": key}
        ),
    ],
    raised={httpx.TransportError: SENT},
)


q2 = Exercise(
    "Status codes of the API",
    "For each situation in `nb04.SITUATIONS`, which status code does the API answer? Give a dictionary from each "
    "situation (the keys unchanged) to its code, an int (`http.HTTPStatus` members are ints too).",
    [Case((), _statuses)],
    [
        "4xx means the client can fix it: 401 for a missing key, 404 for what does not exist.",
        "422: well-formed but not usable (a blank query); 413: too large; 415: a media type not accepted.",
    ],
    STATUS,
    wrong=[
        dict.fromkeys(SITUATIONS, 400),
        {**STATUS, SITUATIONS[0]: 400},
        {**STATUS, SITUATIONS[1]: 403},  # 403 is for a known client without the right
        {**STATUS, SITUATIONS[2]: 413, SITUATIONS[4]: 415},  # too large and wrong type swapped
        {**STATUS, SITUATIONS[3]: 410},  # gone: it never existed
        {**STATUS, SITUATIONS[4]: 400},
        {s: str(code) for s, code in STATUS.items()},  # text, not numbers
        {s: STATUS[s] for s in SITUATIONS[:4]},  # one missing
        dict.fromkeys(SITUATIONS, 500),
    ],
    variants=[
        dict(reversed(list(STATUS.items()))),
        {s: HTTPStatus(code) for s, code in STATUS.items()},
        dict(zip(SITUATIONS, (HTTPStatus.UNPROCESSABLE_ENTITY, 401, 415, HTTPStatus.NOT_FOUND, 413))),
    ],
    takes_function=False,
)


def _p_sorted(latencies_ms):
    ordered = sorted(latencies_ms)
    n = len(ordered)
    return statistics.median(ordered), ordered[min(n - 1, max(0, -(-95 * n // 100) - 1))]  # nearest rank


def _p_torch(latencies_ms):
    import torch

    values = torch.tensor(latencies_ms, dtype=torch.float64)
    return torch.quantile(values, 0.5).item(), torch.quantile(values, 0.95).item()


def _p_in_place(latencies_ms):
    latencies_ms.sort()  # sorts the caller's list
    return np.percentile(latencies_ms, [50, 95])


q3 = Exercise(
    "p50 and p95 from measured latencies",
    "Write `p50_p95(latencies_ms)`: `latencies_ms` is a non-empty list of numbers in any order; return the pair "
    "(p50, p95): the median and the 95th percentile. Any common percentile definition is accepted: NumPy's "
    "`np.percentile` (any `method`), `statistics.quantiles`, pandas, torch, or the nearest rank.",
    [Case((xs,), _percentiles(xs)) for xs in (_LATENCIES, [5.0, 1.0, 3.0], _LONG, [7.0], [2.0, 9.0, 4.0, 4.0])],
    ["`np.percentile(values, q)` with q = 50 and 95.", "Return them as a pair: (p50, p95)."],
    p50_p95,
    wrong=[
        lambda x: (float(np.mean(x)), float(np.percentile(x, 95))),  # mean, not median
        lambda x: (float(np.median(x)), float(max(x))),  # the max
        lambda x: (float(np.median(x)), float(np.percentile(x, 0.95))),  # a fraction where a percent goes
        lambda x: (float(np.percentile(x, 95)), float(np.median(x))),  # swapped
        lambda x: (float(x[len(x) // 2]), float(x[int(0.95 * len(x))])),  # not sorted
        lambda x: (float(np.median(x)), float(np.mean(x) + 2 * np.std(x))),  # mean + 2 sd
        lambda x: (float(np.median(x)), float(np.percentile(x, 90))),  # p90
        lambda x: ((min(x) + max(x)) / 2, float(np.percentile(x, 95))),  # the midrange
    ],
    variants=[
        lambda x: (statistics.median(x), statistics.quantiles(x, n=20)[-1]) if len(x) > 1 else (x[0], x[0]),
        _p_sorted,
        _p_torch,
        _p_in_place,
        lambda x: tuple(__import__("pandas").Series(x).quantile([0.5, 0.95])),
    ],
)


EXERCISES = {"nb04.q1": q1, "nb04.q2": q2, "nb04.q3": q3}
