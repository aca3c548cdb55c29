"""`/auth/*`: sign in and out with the console's session cookie, one's own profile, password and TOTP.

`POST /auth/login` takes JSON or an HTML form (fields `username` or `email`, `password`, `totp`,
`next`). JSON is answered 200 with the user, the CSRF token and the session's end; a form is answered
with a 303 to `next` (a local path only) or, on failure, back to `/login?error=<reason>&next=...`.
Sign-in is PUBLIC in the policy table, so it is audited here: `auth.login` (allowed) and
`auth.login_failed` (denied, with the reason), with the name tried, never the password.

A cross-site form posted to `/auth/login` is refused (403 `cross_site_request`) when the browser says
so (`Sec-Fetch-Site: cross-site|same-site`) or sends an `Origin` whose host is not this request's Host.

`csrf_token(request)` gives the console's templates the token of the current session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import structlog
from fastapi import APIRouter, Request, Response, Security
from pydantic import ValidationError

from ikoma.api import session_cookie
from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.errors import json_response, refusal_response, validation_errors
from ikoma.api.user_schemas import (
    LoginBody,
    PasswordChange,
    PasswordConfirm,
    ProfileUpdate,
    SignedInPublic,
    TotpCode,
    TotpStarted,
    UserPublic,
)
from ikoma.bootstrap import Context
from ikoma.domain.errors import BadRequest, DomainError, Forbidden, Invalid
from ikoma.services import audit, sessions, sign_in, users
from ikoma.services.identity import Principal
from ikoma.services.login_limits import Limits, TooManyAttempts

log = structlog.get_logger("ikoma.auth")

router = APIRouter(prefix="/auth", tags=["auth"])
me_router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Security(admin_key_header)])

FORM_TYPE = "application/x-www-form-urlencoded"
LOGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    303: {"description": "a form post: to `next` when signed in, else back to /login?error=<reason>"},
    401: {"description": "invalid_credentials or totp_required"},
    403: {"description": "user_disabled or cross_site_request"},
    429: {"description": "too_many_attempts (Retry-After says when to try again)"},
}
ME_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "not_a_user: the credential is an API key, not a signed-in user"},
    401: {"description": "missing or invalid credential, or session_expired"},
    403: {"description": "csrf_failed"},
}
_LOGIN_SCHEMA = LoginBody.model_json_schema(by_alias=True)
LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _LOGIN_SCHEMA}, FORM_TYPE: {"schema": _LOGIN_SCHEMA}},
    }
}


def csrf_token(request: Request) -> str | None:
    """The CSRF token of the request's session (put in `<meta name="csrf-token">` by the console's
    layout), or None when the request is not authenticated by a session cookie."""
    state = request.scope.get("state") or {}
    token: str | None = state.get("csrf_token")
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limits_of(ctx: Context) -> Limits:
    settings = ctx.settings
    return Limits(
        per_account=settings.login_max_failures_account,
        per_address=settings.login_max_failures_address,
        window_s=settings.login_failure_window,
    )


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == FORM_TYPE


def _refuse_cross_site(request: Request) -> None:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        raise Forbidden("sign-in from another site is refused", reason="cross_site_request")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            raise Forbidden("sign-in from another site is refused", reason="cross_site_request")


async def _login_fields(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if _is_form(request):
        known = set(LoginBody.model_fields)
        return {
            k: v for k, v in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True) if k in known
        }
    if not raw.strip():
        raise Invalid(
            "a JSON body with username (or email) and password is needed", reason="validation_error"
        )
    data = orjson.loads(raw)  # the request guard has checked it is JSON
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", reason="validation_error")
    return data


def _parse_login(fields: dict[str, Any]) -> LoginBody:
    try:
        body = LoginBody.model_validate({k: v for k, v in fields.items() if v != "" or k == "password"})
    except ValidationError as exc:
        raise Invalid(
            "invalid sign-in request", reason="validation_error", errors=validation_errors(exc.errors())
        ) from None
    if not (body.username or body.email):
        raise Invalid("give a username or an email", reason="validation_error", field="username")
    return body


def _login_entry(
    request: Request,
    *,
    tried: str | None,
    outcome: audit.Outcome,
    status: int,
    reason: str | None,
    user: Any = None,
) -> audit.AuditEntry:
    return audit.AuditEntry(
        channel="rest",
        actor_kind="user" if user is not None else "anonymous",
        actor_id=str(user["id"]) if user is not None else None,
        token_prefix=None,
        role=user["role"] if user is not None else None,
        action="auth.login" if outcome == "allowed" else "auth.login_failed",
        target=(f"username:{tried}" if tried else None),
        params={"username": (tried or "")[:254], "address": client_address(request)},
        outcome=outcome,
        status_code=status,
        reason=reason,
    )


async def _audit(ctx: Context, entry: audit.AuditEntry) -> None:
    try:
        await audit.record(ctx.db, entry, mirror=ctx.settings.audit_log)
    except Exception as exc:  # the answer stands; the failure is logged
        log.warning("audit_write_failed", action=entry.action, error=type(exc).__name__)


def signed_in_response(ctx: Context, signed: sign_in.SignedIn, *, status: int = 200) -> Response:
    body = SignedInPublic(
        user=UserPublic.model_validate(signed.user),
        csrf_token=signed.session.csrf_token,
        expires_at=signed.session.expires_at,
    ).model_dump(mode="json", by_alias=True)
    response = json_response(body, status)
    _set_cookie(ctx, response, signed.session)
    return response


def _set_cookie(ctx: Context, response: Response, session: sessions.IssuedSession) -> None:
    response.headers.append(
        "set-cookie",
        session_cookie.set_header(
            session.raw_id, max_age=int(ctx.settings.session_ttl), secure=ctx.settings.cookie_secure
        ),
    )


@router.post("/login", response_model=SignedInPublic, responses=LOGIN_ERRORS, openapi_extra=LOGIN_BODY)
async def login(request: Request, ctx: Ctx) -> Response:
    """Sign in (username or email, password, and the TOTP code when the account has one)."""
    form = _is_form(request)
    tried: str | None = None
    next_path: str | None = None
    try:
        fields = await _login_fields(request)
        next_path = fields.get("next") if isinstance(fields.get("next"), str) else None
        _refuse_cross_site(request)
        body = _parse_login(fields)
        tried = (body.username or body.email or "").strip().lower()
        signed = await sign_in.sign_in(
            ctx.db,
            ctx.vault,
            login=tried,
            password=body.password,
            totp=body.totp,
            address=client_address(request),
            limits=limits_of(ctx),
            ttl_s=ctx.settings.session_ttl,
        )
    except DomainError as refusal:
        await _audit(
            ctx,
            _login_entry(
                request, tried=tried, outcome="denied", status=refusal.status_code, reason=refusal.reason
            ),
        )
        if form:
            return session_cookie.login_redirect(next_path, error=refusal.reason)
        response = refusal_response(refusal)
        if isinstance(refusal, TooManyAttempts):
            response.headers["retry-after"] = str(refusal.details.get("retryAfter", 60))
        return response
    entry = _login_entry(request, tried=tried, outcome="allowed", status=200, reason=None, user=signed.user)
    await _audit(ctx, entry)
    if form:
        response = Response(
            status_code=303,
            headers={"location": session_cookie.safe_next(next_path), "cache-control": "no-store"},
        )
        _set_cookie(ctx, response, signed.session)
        return response
    return signed_in_response(ctx, signed)


@me_router.post(
    "/logout",
    status_code=204,
    responses={**ME_ERRORS, 303: {"description": "a form post: to /login (also without a valid session)"}},
)
async def logout(request: Request, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    """End this session (the cookie is cleared). An API key has no session: 400 `not_a_user`."""
    _require_user(principal)
    cookie = session_cookie.read(request.scope)
    if cookie is not None:
        await sessions.end(ctx.db, cookie, reason="logout")
    if _is_form(request):
        response = Response(status_code=303, headers={"location": session_cookie.LOGIN_PATH})
    else:
        response = Response(status_code=204)
    response.headers.append("set-cookie", session_cookie.clear_header(secure=ctx.settings.cookie_secure))
    return response


def _require_user(principal: Principal) -> str:
    if principal.kind != "user":
        raise BadRequest(
            "this credential is an API key, not a signed-in user", reason="not_a_user", kind=principal.kind
        )
    return principal.id


@me_router.get("/me", response_model=UserPublic, responses=ME_ERRORS)
async def get_me(ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await users.get_user(ctx.db, _require_user(principal))


@me_router.put("/me", response_model=UserPublic, responses=ME_ERRORS)
async def update_me(body: ProfileUpdate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Change one's names or email (the role and the rest are the admin's, through /users)."""
    changes = body.model_dump(exclude_unset=True)
    return await users.update_profile(ctx.db, _require_user(principal), changes)


@me_router.put("/me/password", response_model=SignedInPublic, responses=ME_ERRORS)
async def change_my_password(
    body: PasswordChange, request: Request, ctx: Ctx, principal: CurrentPrincipal
) -> Response:
    """Every session of the user ends, this one included; the answer carries a fresh session (cookie
    and CSRF token), so the caller stays signed in and a stolen cookie is worthless."""
    signed = await sign_in.change_password(
        ctx.db,
        _require_user(principal),
        current=body.current_password,
        new=body.new_password,
        address=client_address(request),
        limits=limits_of(ctx),
        ttl_s=ctx.settings.session_ttl,
    )
    return signed_in_response(ctx, signed)


@me_router.post("/me/totp", status_code=201, response_model=TotpStarted, responses=ME_ERRORS)
async def start_my_totp(ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Start TOTP enrolment: the otpauth:// URI is shown this once; TOTP is on after /confirm."""
    uri = await sign_in.start_totp(ctx.db, ctx.vault, _require_user(principal))
    return {"otpauth_uri": uri}


@me_router.post("/me/totp/confirm", response_model=UserPublic, responses=ME_ERRORS)
async def confirm_my_totp(body: TotpCode, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await sign_in.confirm_totp(ctx.db, ctx.vault, _require_user(principal), body.code)


@me_router.post("/me/totp/disable", response_model=UserPublic, responses=ME_ERRORS)
async def disable_my_totp(body: PasswordConfirm, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await sign_in.disable_totp(ctx.db, _require_user(principal), password=body.password)
