"""Running the service: `t2i serve`, and a background server for notebooks and tests (notebook 04).

`t2i serve` opens one `SearchEngine` and serves the REST API (`api.create_api`) and the web app (`app.mount_app`)
on one uvicorn server; `BackgroundServer` does the same on a thread (`measure.load.load_test` drives either).

One process holds one engine: milvus-lite allows one process per file, and the model is loaded once.
Concurrent text searches are batched (`batching.py`, `--max-batch`); writes (`POST /index`, `DELETE`) take a
lock, so two uploads never race. Scale out with a Milvus server (`--uri http://host:19530`) and several
processes behind a load balancer.

Example:
    $ t2i serve --api --ui                 # http://127.0.0.1:8000/docs, the web app at /ui
    >>> with BackgroundServer(create_api(engine)) as server:
    ...     load_test(server.url, ["a dog", "a boat"], clients=8, seconds=5).summary()
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Config
from ..engine import NoIndexError, SearchEngine
from .api import create_api
from .auth import (
    API_KEY_HEADER,
    LOOPBACK_HOSTS,
    UI_PATH,
    RequestGuard,
    allowed_hosts,
    check_api_key,
    is_loopback,
)

# How long a thread of `t2i serve` may hold Python's GIL while another waits (CPython's default 5 ms). The event
# loop, the search batcher and the pipeline's threads hand each request on several times: under 8 concurrent
# clients a 1 ms slice answered ~25% more searches/s than 5 ms (docs/performance.md, "Serving under load").
GIL_SWITCH_S = 0.001
HEADER_TIMEOUT_S = 10.0  # a request's line and headers must all arrive within this, or the connection is closed
IDLE_TIMEOUT_S = 5.0  # a connection with no request on it is closed after this (uvicorn's keep-alive timeout)
# On stop, requests still running (a page's event stream never ends) get this long before they are cut off: a
# test server held by a Gradio client's stream outlasted BackgroundServer.stop's 30 s join, thread left running.
GRACEFUL_STOP_S = 5.0


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline on each request's line and headers.

    uvicorn closes a connection idle between requests (`timeout_keep_alive`) but waits for a request's headers as
    long as bytes keep coming: 300 clients each sending a header line every 4 s held 300 connections. Here the
    headers must be complete `header_timeout` seconds after the request's first byte (or the connection's
    opening); then the body and the answer take as long as the route needs.
    """

    def __init__(self, *args, header_timeout: float = HEADER_TIMEOUT_S, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self._deadline, self._before = header_timeout, None, None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._start_deadline()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._before:  # its headers are in: a request runs
            self._stop_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _start_deadline(self) -> None:
        self._before = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        upgraded = self.transport.get_protocol() is not self  # a websocket took the connection over
        if self.cycle is self._before and not upgraded and not self.transport.is_closing():
            self.transport.close()


def timeouts(header_timeout: float = HEADER_TIMEOUT_S) -> dict:
    """uvicorn's options for `t2i serve` and `BackgroundServer`: h11 with the header deadline, the idle timeout,
    a bounded wait for running requests on stop."""
    return {
        "http": functools.partial(BoundedH11Protocol, header_timeout=header_timeout),
        "timeout_keep_alive": IDLE_TIMEOUT_S,
        "timeout_graceful_shutdown": GRACEFUL_STOP_S,
    }


class BackgroundServer:
    """A uvicorn server on a daemon thread, for notebooks and tests (`t2i serve` runs in the foreground).

    Args:
        app: the ASGI app, e.g. `create_api(engine)`.
        host: the interface; 127.0.0.1 keeps it on this machine.
        port: 0 picks a free port; `url` says which once `start()` returns.
        header_timeout: seconds a request's line and headers may take to arrive (`BoundedH11Protocol`).

    Example:
        >>> with BackgroundServer(create_api(engine)) as server:
        ...     httpx.get(server.url + "/health").json()
        {'status': 'ok'}
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, header_timeout: float = HEADER_TIMEOUT_S) -> None:
        quiet = {"log_config": None, "log_level": "warning", "access_log": False}
        config = uvicorn.Config(app, host=host, port=port, **quiet, **timeouts(header_timeout))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="t2i-server", daemon=True)
        self.url = ""  # the base URL, e.g. http://127.0.0.1:40123, once started

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        """Start serving; returns when the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting: is the port taken? (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:.0f} s")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish open requests and stop."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_app(
    engine: SearchEngine,
    api: bool = True,
    ui: bool = True,
    upload_dir: str | Path | None = None,
    max_upload_bytes: int = 10 << 20,
    api_key: str | None = None,
    hosts: Collection[str] = LOOPBACK_HOSTS,
    max_batch: int = 32,
) -> FastAPI:
    """What `t2i serve` serves: the REST API (`api`), the web app at /ui (`ui`), or both, over one engine.

    Args:
        engine: the open `SearchEngine`, shared by the API and the web app.
        api: the REST API, with its docs at /docs; without it, / leads to the web app.
        ui: the Gradio web app at /ui.
        upload_dir: where `POST /index` saves pictures.
        max_upload_bytes: the largest picture accepted, per file.
        api_key: if given, needed on every API route but /health and to sign in to the web app.
        hosts: the `Host` names served (`auth.allowed_hosts`); any other gets a 400.
        max_batch: the most API text searches answered together; 1 answers each on its own.

    Returns:
        The FastAPI app, for uvicorn or `BackgroundServer`.
    """
    if api:
        app = create_api(
            engine,
            upload_dir=upload_dir,
            max_upload_bytes=max_upload_bytes,
            api_key=api_key,
            hosts=hosts,
            max_batch=max_batch,
        )
    else:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.add_middleware(RequestGuard, hosts=hosts)  # the page signs in itself; hosts and origins still count
    if ui:
        from .app import mount_app  # Gradio is heavy: imported only when the web app is served

        mount_app(app, engine, max_upload_bytes=max_upload_bytes, api_key=api_key)
        if not api:
            app.add_api_route("/", lambda: RedirectResponse(f"{UI_PATH}/"), include_in_schema=False)
    return app


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `t2i serve` to the `t2i` parser; returns it, for the store options (--uri, --token, ...)."""
    serve = subparsers.add_parser("serve", help="serve search over HTTP: the REST API (--api), the web app (--ui)")
    serve.add_argument("--api", action="store_true", help="the REST API (docs at /docs); with neither flag: both")
    serve.add_argument("--ui", action="store_true", help="the web app (Gradio), at /ui")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000, or 7860 for --ui alone)")
    serve.add_argument("--upload-dir", help="where POST /index saves pictures (default: DATA_DIR/uploads)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest picture accepted (default 10)")
    serve.add_argument(
        "--api-key",
        help="needed in the X-API-Key header on every route but /health, and to sign in to the web app "
        "(default: $T2I_API_KEY; the variable keeps it out of the process list)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients use to reach the server, e.g. search.example.org (repeat for more); requests "
        "naming another host are refused (DNS rebinding). Default: the --host address, or its loopback names",
    )
    serve.add_argument(
        "--insecure", action="store_true", help="serve a non-loopback --host without an API key (anyone can write)"
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=32,
        metavar="N",
        help="answer up to N concurrent API text searches together, in one Milvus search "
        "(default 32; 1: each on its own)",
    )
    serve.add_argument(
        "--query-cache",
        type=int,
        default=1024,
        metavar="N",
        help="keep the embeddings of the N most recent distinct queries: a repeated query skips the text encoder "
        "(default 1024; 0: none)",
    )
    serve.add_argument("--access-log", action="store_true", help="print a line per request (off: it costs CPU)")
    return serve


def run_serve(args: argparse.Namespace) -> int:
    """Open the engine once and serve until Ctrl+C; returns the exit status."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app also passes analytics_enabled=False
    api, ui = (args.api, args.ui) if args.api or args.ui else (True, True)
    max_upload_bytes = int(args.max_upload_mb * (1 << 20))
    api_key = check_api_key(key) if (key := args.api_key or os.environ.get("T2I_API_KEY")) else None
    if not (api_key or args.insecure or is_loopback(args.host)):
        raise ValueError(
            f"refusing to serve {args.host} without an API key: other machines could search, add and delete "
            "pictures; pass --api-key (or set T2I_API_KEY), or --insecure to serve it open"
        )
    config = Config.from_env(uri=args.uri, token=args.token, collection=args.collection, encoder=args.encoder)
    config = config.with_(query_cache=args.query_cache)  # refused below 0 by Config
    try:  # a collection that exists is searched with the encoder it was built with
        engine = SearchEngine.open_index(config, encoder=args.encoder)
    except NoIndexError:
        if not api:  # the web app alone cannot add pictures: say how to make an index
            raise
        engine = SearchEngine.open(config)  # a new, empty collection, for POST /index to fill
    try:
        hosts = allowed_hosts(args.host, args.allowed_host)
        if args.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, not {args.max_batch}")
        app = serve_app(engine, api, ui, args.upload_dir, max_upload_bytes, api_key, hosts, args.max_batch)
        port = args.port if args.port is not None else 8000 if api else 7860
        parts = [f"API http://{args.host}:{port}/docs"] if api else []
        if ui:
            parts.append(f"web app http://{args.host}:{port}{UI_PATH}/")
        print(f"t2i: serving {engine.info()['count']:,} images: {', '.join(parts)} (Ctrl+C stops)", file=sys.stderr)
        if api_key:
            print(f"t2i: the API key is needed ({API_KEY_HEADER} header; the web app's sign-in)", file=sys.stderr)
        elif not is_loopback(args.host):
            print("t2i: warning: reachable from other machines, with no API key (--insecure)", file=sys.stderr)
        sys.setswitchinterval(GIL_SWITCH_S)
        uvicorn.run(app, host=args.host, port=port, log_level="info", access_log=args.access_log, **timeouts())
    finally:
        engine.close()
    return 0
