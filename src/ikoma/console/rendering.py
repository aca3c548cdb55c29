"""How console pages are rendered: one Jinja2 environment (autoescape on), the context every page gets,
the security headers every page carries, and the helpers templates use.

`can(request, method, route_template)` asks the ONE policy table (`api/policy.POLICY`) whether the
principal of this request may call a route: a template shows a button only when its route would be
allowed, so the console never offers what the server would refuse (and the server refuses it anyway).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ikoma.api import auth
from ikoma.api.policy import POLICY
from ikoma.domain.roles import Role
from ikoma.services.identity import Principal

# Sent with every console page (docs/console.md): no inline script or style can run, nothing is framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # pages show state that changes, and may show what another user must not see from a shared cache
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavLink:
    label: str
    href: str


# The signed-in nav (ui-contract.md). A link is shown when the policy table lets the principal GET its
# page, so the admin pages appear for admins only and a page not built yet is not linked.
NAV = (
    NavLink("Fleet", "/"),
    NavLink("Orders", "/orders"),
    NavLink("Run", "/run"),
    NavLink("Instances", "/instances/manage"),
    NavLink("Catalog", "/catalog/manage"),
    NavLink("Action log", "/action-log"),
    NavLink("Users", "/users/manage"),
    NavLink("API clients", "/api-clients/manage"),
    NavLink("Runners", "/runners/manage"),
)


def static_root() -> Traversable:
    return files("ikoma.console").joinpath("static")


def principal_of(request: Request) -> Principal | None:
    """Set by the policy middleware once the credential (session cookie or key) was verified."""
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


def can(request: Request, method: str, route_template: str) -> bool:
    """Whether this request's principal may call `method route_template`, by the policy table."""
    access = POLICY.get((method.upper(), route_template))
    if access is None:
        return False  # not in the table: refused by the server, so never offered
    if not isinstance(access, Role):
        return access == "public"
    principal = principal_of(request)
    return principal is not None and principal.allows(access)


def can_run_playbooks(request: Request) -> bool:
    """Whether to offer "Run": the run page exists for this principal and it is above observer (an
    observer is offered no run anywhere; the playbook's own role is checked by the run page and API)."""
    principal = principal_of(request)
    return principal is not None and principal.role > Role.OBSERVER and can(request, "GET", "/run")


def csrf_token(request: Request) -> str:
    """The session's CSRF token for `<meta name="csrf-token">`; "" when a key header authenticated
    the request (a header credential needs none: a browser never sends it by itself)."""
    return auth.csrf_token(request) or ""


@lru_cache(maxsize=512)  # bounded: a stranger asking for random paths grows nothing
def static_file(path: str) -> tuple[bytes, str] | None:
    """A file under console/static (its bytes, its content digest), or None: no `..`, no dot-files."""
    parts = path.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") or "\\" in part for part in parts):
        return None
    resource = static_root().joinpath(*parts)
    if not resource.is_file():
        return None
    data = resource.read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


def static_url(path: str) -> str:
    """`/static/<path>?v=<content digest>`: cached for a year, yet a changed file is fetched anew."""
    found = static_file(path)
    if found is None:
        raise LookupError(f"no static file {path!r} in the package")  # a template's typo fails its test
    return f"/static/{path}?v={found[1]}"


@cache
def vendor_url(package: str, file: str) -> str:
    """The URL of a vendored file (`vendor_url("uplot", "uPlot.iife.min.js")`), whatever version
    scripts/refresh_console_assets.py pinned: `vendor/<package>-<version>/` holds one version."""
    for entry in static_root().joinpath("vendor").iterdir():
        if entry.is_dir() and entry.name.startswith(f"{package}-") and entry.joinpath(file).is_file():
            return static_url(f"vendor/{entry.name}/{file}")
    raise LookupError(f"{package}/{file} is not vendored: run scripts/refresh_console_assets.py")


# --- filters -------------------------------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str | None) -> Markup:
    """Reports' Markdown as HTML; raw HTML in the source is shown as text, never rendered."""
    return Markup(_MARKDOWN.render(text or ""))  # noqa: S704 - html disabled: markdown-it escapes the input


def json_data(value: Any) -> Markup:
    """JSON safe inside `<script type="application/json">`: no `</script>` can end the block early."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    escaped = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(escaped)  # noqa: S704 - every character that could end the block is escaped


def as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(value: datetime | str | None) -> str:
    """`2026-12-07 21:15 UTC`, or an em dash for never."""
    moment = as_utc(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | str | None) -> str:
    moment = as_utc(value)
    return "" if moment is None else moment.isoformat().replace("+00:00", "Z")


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """How long ago, roughly (`3 min ago`); what was never seen is `never`."""
    moment = as_utc(value)
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def size(value: int | None) -> str:
    """Bytes for people: `1.4 MiB`."""
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns


def number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ikoma.console", "templates"),
        autoescape=True,  # every value is escaped unless a helper above marked it safe
        undefined=StrictUndefined,  # a misspelt variable fails the page (and its test), never renders empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        can=can, can_run_playbooks=can_run_playbooks, static_url=static_url, vendor_url=vendor_url, nav=NAV
    )
    env.filters.update(
        markdown=render_markdown,
        json_data=json_data,
        when=when,
        iso=iso,
        ago=ago,
        size=size,
        number=number,
    )
    return env


def page(
    request: Request, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """Render a page with what every page needs (principal, CSRF token) and the security headers."""
    values = {
        "request": request,
        "principal": principal_of(request),
        "csrf_token": csrf_token(request),
        "path": request.url.path,
        **(context or {}),
    }
    html = environment().get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
