"""The `ikoma_session` cookie on the wire: reading it, setting and clearing it, and the browser redirect.

The cookie is HttpOnly (no script reads it), SameSite=Lax (a cross-site POST does not carry it),
Path=/, and Secure when `IKOMA_COOKIE_SECURE=1`. Its value is the session's random id, which the
server keeps only hashed (services/sessions.py).
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote, urlsplit

from starlette.responses import Response
from starlette.types import Scope

from ikoma.services.sessions import COOKIE_NAME

LOGIN_PATH = "/login"


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def read(scope: Scope) -> str | None:
    """The session cookie's value, or None (no cookie, or an empty one)."""
    for header in _headers(scope, b"cookie"):
        if COOKIE_NAME not in header:
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        morsel = jar.get(COOKIE_NAME)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


def set_header(raw_id: str, *, max_age: int, secure: bool) -> str:
    parts = [f"{COOKIE_NAME}={raw_id}", "HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_header(*, secure: bool) -> str:
    parts = [f"{COOKIE_NAME}=", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=0"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def wants_html(scope: Scope) -> bool:
    """A browser navigating (a GET that accepts HTML), as opposed to an API client or a fetch()."""
    if scope["method"] not in ("GET", "HEAD"):
        return False
    return any("text/html" in accept for accept in _headers(scope, b"accept"))


def safe_next(value: str | None) -> str:
    """`value` when it is a path on this site (one leading "/", no scheme, no host), else "/"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/"
    return value


def requested_path(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    path: str = scope["path"]
    return f"{path}?{query.decode('latin-1')}" if query else path


def login_redirect(next_path: str | None, *, error: str | None = None) -> Response:
    """303 to the console's sign-in page, coming back to `next_path` afterwards."""
    query = []
    if error:
        query.append(f"error={quote(error, safe='')}")
    if next_path and safe_next(next_path) != "/":
        query.append(f"next={quote(next_path, safe='')}")
    location = LOGIN_PATH + ("?" + "&".join(query) if query else "")
    return Response(status_code=303, headers={"location": location, "cache-control": "no-store"})
