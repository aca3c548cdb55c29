"""The console's public pages: the sign-in form and the static files (CSS, our script, vendored assets).

Static files come from the installed package (importlib.resources), never from the working directory.
A URL carrying the file's content digest (`static_url`) is cached for a year; any other is revalidated.
"""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ikoma.api.errors import error_response
from ikoma.console.rendering import page, static_file

router = APIRouter(include_in_schema=False)

LOGIN_ERRORS = {
    "invalid_credentials": "Wrong username, email or password.",
    "too_many_attempts": "Too many failed sign-ins. Wait a few minutes, then try again.",
    "totp_required": "Enter the code from your authenticator app.",
    "invalid_totp": "That authentication code is not valid. Try the current one.",
    "user_disabled": "This account is disabled. Ask an administrator.",
    "session_expired": "Your session has ended. Sign in again.",
    "signed_out": "You are signed out.",
    "cross_site_request": "Sign-in from another site is refused: open this page and sign in here.",
}
UNKNOWN_LOGIN_ERROR = "Sign-in failed. Try again."
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".md": "text/plain"}
FOREVER = "public, max-age=31536000, immutable"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//evil.example` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target


@router.get("/login")
async def login_page(
    request: Request,
    next_: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=64)] = None,
    username: Annotated[str | None, Query(max_length=320)] = None,
) -> Response:
    message = None if error is None else LOGIN_ERRORS.get(error, UNKNOWN_LOGIN_ERROR)
    return page(
        request,
        "login.html",
        {
            "error": error or "",
            "error_message": message,
            "show_totp": error in ("totp_required", "invalid_totp"),
            "next": safe_next(next_),
            "username": username or "",
        },
    )


@router.get("/static/{path:path}")
async def serve_static(
    request: Request, path: str, v: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    found = static_file(path)
    if found is None:
        return error_response(404, "static_not_found", "no such static file")
    data, digest = found
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
    media_type = TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": FOREVER if v == digest else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=data, media_type=media_type, headers=headers)
