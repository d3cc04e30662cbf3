"""The optional API key of `t2i serve`: checked on every route but /health, and on the web app (notebook 04).

With a key set (`--api-key` or `T2I_API_KEY`), an API request must carry it in the `X-API-Key` header; the
OpenAPI document declares the scheme, so /docs has an "Authorize" button. The comparison is constant-time
(`hmac.compare_digest`). /health stays open for load balancers, and /docs and /openapi.json too: they describe
the API and hold no data. The web app at /ui searches the engine directly, not through the API routes, so a
page without the key would bypass it; a browser cannot add a header to a page load, so the page asks for the
key once in Gradio's sign-in form (any user name, the key as password) and keeps a session cookie.

`RequestGuard` runs before routing and before a byte of a body is read: it refuses a request without the key
(so an anonymous 300 MB upload is never parsed or spooled to disk), a `Host` the server does not answer to
(DNS rebinding: a web page whose name is made to resolve to 127.0.0.1; the header parsed strictly,
`host_name`), and a state-changing request sent by another site's page (a cross-origin form post needs no CORS
preflight).

Example:
    >>> app = create_api(engine, api_key="s3cret-key-123")
    >>> httpx.get(url + "/stats", headers={API_KEY_HEADER: "s3cret-key-123"})
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import string
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from fastapi import HTTPException, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16
SIGN_IN_MESSAGE = "This search needs the server's API key: type any user name, and the key as the password."
_KEY_CHARACTERS = set(string.ascii_letters + string.digits + string.punctuation)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
UI_PATH = "/ui"  # where the web app lives; it signs in by itself
OPEN_PATHS = ("/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")  # no key needed
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# A Host header (RFC 9110 7.2): a DNS name or IPv4 address, or an IPv6 literal in brackets, then an optional port.
_AUTHORITY = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?))(?::(?P<port>[0-9]{1,5}))?"
)


def check_api_key(key: str) -> str:
    """`key` if it can be a key: at least 16 printable ASCII characters, no spaces; else ValueError."""
    if len(key) < MIN_KEY_LENGTH or not set(key) <= _KEY_CHARACTERS:
        raise ValueError(
            f"an API key must be at least {MIN_KEY_LENGTH} printable ASCII characters without spaces, "
            "e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    return key


def key_matches(given: str | None, key: str) -> bool:
    """Whether `given` is `key`, compared in constant time."""
    # UTF-8 with surrogatepass: any character outside ASCII gives bytes no ASCII key has, never a "?" that could
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode("ascii"))


def require_api_key(key: str) -> Callable:
    """A FastAPI dependency that answers 401 unless the request's `X-API-Key` header is `key`.

    Args:
        key: the server's key (see `check_api_key`).

    Returns:
        The dependency, for `APIRouter(dependencies=[Depends(...)])`; it declares the OpenAPI security scheme.
    """
    scheme = APIKeyHeader(
        name=API_KEY_HEADER, scheme_name="apiKey", auto_error=False, description="the server's API key"
    )
    check_api_key(key)

    def require(given: str | None = Security(scheme)) -> None:  # noqa: B008  (FastAPI's way to declare it)
        if not key_matches(given, key):
            problem = "is missing" if given is None else "is wrong"
            raise HTTPException(401, f"the {API_KEY_HEADER} header {problem}: send the server's API key in it")

    return require


def sign_in(key: str) -> Callable[[str, str], bool]:
    """The web app's sign-in check for `gr.mount_gradio_app(auth=...)`: any user name, the key as password."""
    check_api_key(key)
    return lambda _user, password: key_matches(password, key)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_name(authority: str) -> str | None:
    """The host of a `Host` header, without the port, IPv6 literals without brackets; None unless it is exactly a
    host (a DNS name or an address) with an optional port: no user part, second port, trailing bytes or spaces.

    Example:
        >>> host_name("[::1]:8000"), host_name("evil.com@localhost"), host_name("localhost:80:evil")
        ('::1', None, None)
    """
    found = _AUTHORITY.fullmatch(authority)
    if found is None or (found["port"] is not None and int(found["port"]) > 65535):
        return None
    if found["ipv6"] is None:
        return found["name"].lower()
    try:
        return str(ipaddress.IPv6Address(found["ipv6"]))
    except ValueError:
        return None


def allowed_hosts(bound: str, extra: Collection[str] = ()) -> tuple[str, ...]:
    """The `Host` names a server bound to interface `bound` answers to, plus the names in `extra`.

    Loopback: its loopback names. One address: that address. Every interface (0.0.0.0, ::): the server cannot
    know its names, so any host unless `extra` names them (with the loopback names, for the machine itself).
    """
    if is_loopback(bound):
        return (*LOOPBACK_HOSTS, *extra)
    if bound in ("0.0.0.0", "::"):
        return (*LOOPBACK_HOSTS, *extra) if extra else ("*",)
    return (bound, *extra)


class RequestGuard:
    """ASGI middleware that refuses, before routing and before the body is read: a request whose `Host` is not
    one of `hosts` (400), a write from another site's page (403), and an API request without `api_key` (401).

    Args:
        app: the application to guard.
        hosts: the host names served (`allowed_hosts`); "*" for any.
        api_key: if given, every path but `OPEN_PATHS` and `open_prefix` (the web app, which signs in) needs it.
        open_prefix: a path prefix that brings its own sign-in.
    """

    def __init__(self, app: ASGIApp, hosts: Collection[str], api_key: str | None = None, open_prefix: str = UI_PATH):
        self.app, self.hosts, self.api_key, self.open_prefix = app, {h.lower() for h in hosts}, api_key, open_prefix

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) if the request must be refused, else None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            return 400, f"this server does not answer to host {host[:100]!r}"
        origin = headers.get("origin")
        if scope.get("method") in WRITE_METHODS and (
            headers.get("sec-fetch-site") == "cross-site" or (origin is not None and urlsplit(origin).netloc != host)
        ):
            return 403, "a request from another site's page may not change anything here"
        path = scope["path"]
        keyed = path not in OPEN_PATHS and not (path == self.open_prefix or path.startswith(self.open_prefix + "/"))
        if self.api_key and keyed and not key_matches(headers.get(API_KEY_HEADER), self.api_key):
            problem = "is missing" if API_KEY_HEADER.lower() not in headers else "is wrong"
            return 401, f"the {API_KEY_HEADER} header {problem}: send the server's API key in it"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self.refusal(scope) if scope["type"] in ("http", "websocket") else None
        if refused is None or scope["type"] != "http":
            if refused is None:
                await self.app(scope, receive, send)
            return  # a refused websocket is closed unanswered
        status, detail = refused
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


class SignedInStreams:
    """ASGI wrapper of the mounted web app (Gradio) that answers 401 on its long-lived routes without a signed-in
    session: Gradio's heartbeat stream asks for no sign-in and would hold an anonymous connection open for as
    long as the client likes. The session is Gradio's own (its cookie, looked up in its `tokens`).

    Args:
        app: the Gradio app that `gr.mount_gradio_app` mounted (it holds `cookie_id` and `tokens`).
        streams: path parts of the routes that need a session.
    """

    def __init__(self, app: ASGIApp, streams: Collection[str] = ("/gradio_api/heartbeat/",)) -> None:
        self.app, self.streams = app, tuple(streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(part in scope["path"] for part in self.streams):
            cookies, cookie_id = Request(scope).cookies, self.app.cookie_id
            token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
            if self.app.tokens.get(token) is None:
                await JSONResponse({"detail": "sign in first"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
