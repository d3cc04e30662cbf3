"""The optional API key of `t2i serve`: checked on every route but /health, and on the web app (notebook 04).

With a key set (`--api-key` or `T2I_API_KEY`), an API request must carry it in the `X-API-Key` header; the
OpenAPI document declares the scheme, so /docs has an "Authorize" button. The comparison is constant-time
(`hmac.compare_digest`). /health stays open for load balancers, and /docs and /openapi.json too: they describe
the API and hold no data. The web app at /ui searches the engine directly, not through the API routes, so a
page without the key would bypass it; a browser cannot add a header to a page load, so the page asks for the
key once in Gradio's sign-in form (any user name, the key as password) and keeps a session cookie.

Example:
    >>> app = create_api(engine, api_key="s3cret-key-123")
    >>> httpx.get(url + "/stats", headers={API_KEY_HEADER: "s3cret-key-123"})
"""

from __future__ import annotations

import hmac
import ipaddress
import string
from collections.abc import Callable

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16
SIGN_IN_MESSAGE = "This search needs the server's API key: type any user name, and the key as the password."
_KEY_CHARACTERS = set(string.ascii_letters + string.digits + string.punctuation)


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
