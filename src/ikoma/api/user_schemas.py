"""Request and answer shapes of `/auth/*` and `/users*` (camelCase on the wire).

Answers are built from `UserPublic`, which has no field for the password hash or the TOTP secret:
they cannot leave even by mistake.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ikoma.api.schemas import NotNull, Public, Role, UtcDatetime, Wire

Username = Annotated[str, Field(min_length=1, max_length=64)]
Email = Annotated[str, Field(min_length=3, max_length=254)]
PersonName = Annotated[str, Field(max_length=100)]
# the policy (domain/passwords.py) says more; this only bounds what is read
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class UserPublic(Public):
    id: str
    username: str
    email: str
    first_name: str
    last_name: str
    role: Role
    disabled: bool
    totp_enabled: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime
    password_changed_at: UtcDatetime


class SignedInPublic(Public):
    user: UserPublic
    csrf_token: str = Field(description="Send it in X-CSRF-Token with every mutating request.")
    expires_at: UtcDatetime = Field(description="The session's absolute end (it also ends when idle).")


class LoginBody(Wire):
    """Either field may hold a username or an email."""

    username: Annotated[str, Field(max_length=254)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    password: Password
    totp: Annotated[str, Field(max_length=16)] | None = None
    next: Annotated[str, Field(max_length=2000)] | None = None


class UserCreate(Wire):
    username: Username
    email: Email
    password: Password
    role: Role
    first_name: PersonName = ""
    last_name: PersonName = ""


class UserUpdate(Wire):
    """Absent fields stay as they are; `password` sets a new one and ends the user's sessions."""

    email: Annotated[Email | None, NotNull] = None
    first_name: Annotated[PersonName | None, NotNull] = None
    last_name: Annotated[PersonName | None, NotNull] = None
    role: Annotated[Role | None, NotNull] = None
    disabled: Annotated[bool | None, NotNull] = None
    password: Annotated[Password | None, NotNull] = None


class ProfileUpdate(Wire):
    email: Annotated[Email | None, NotNull] = None
    first_name: Annotated[PersonName | None, NotNull] = None
    last_name: Annotated[PersonName | None, NotNull] = None


class PasswordChange(Wire):
    current_password: Password
    new_password: Password


class TotpStarted(Public):
    otpauth_uri: str = Field(description="Shown once: add it to an authenticator app, then confirm a code.")


class TotpCode(Wire):
    code: Annotated[str, Field(min_length=6, max_length=10)]


class PasswordConfirm(Wire):
    password: Password
