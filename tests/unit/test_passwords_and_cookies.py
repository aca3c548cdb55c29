"""The pure parts of sign-in: the password policy and hashing, the CSRF token, the cookie's attributes,
reading it back, and which `next` targets a sign-in may send the browser to."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from ikoma.api import session_cookie
from ikoma.domain import passwords
from ikoma.domain.errors import Invalid
from ikoma.services import sessions


@pytest.mark.parametrize(
    "weak",
    ["short", "a" * 40, "x" * 300, "my name is admin-bob ok", "aaaa\x00bbbbccccdddd"],
)
def test_weak_passwords_are_refused_with_weak_password(weak: str) -> None:
    with pytest.raises(Invalid) as refused:
        passwords.check_policy(weak, username="admin-bob", email="bob@example.net")
    assert refused.value.reason == "weak_password"


def test_a_long_varied_password_passes_the_policy() -> None:
    passwords.check_policy("correct horse battery staple", username="admin", email="admin@ikoma.local")


def test_generated_passwords_pass_the_policy_and_differ() -> None:
    first, second = passwords.generate(), passwords.generate()
    assert first != second
    passwords.check_policy(first, username="admin", email="admin@ikoma.local")


def test_hash_is_argon2id_and_only_the_right_password_verifies() -> None:
    stored = passwords.hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "correct horse battery staple")
    assert not passwords.verify_password(stored, "correct horse battery stapler")
    assert not passwords.verify_password(None, "correct horse battery staple")  # unknown user
    assert not passwords.verify_password("not a hash", "x")
    assert not passwords.needs_rehash(stored)
    older = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("correct horse battery staple")
    assert passwords.verify_password(older, "correct horse battery staple")  # still signs in...
    assert passwords.needs_rehash(older)  # ...and is stored again with today's parameters


def test_csrf_token_belongs_to_its_session_only() -> None:
    token = sessions.csrf_token_for("session-one")
    assert sessions.csrf_matches("session-one", token)
    assert not sessions.csrf_matches("session-two", token)
    assert not sessions.csrf_matches("session-one", None)
    assert not sessions.csrf_matches("session-one", "")
    assert "session-one" not in token


@pytest.mark.parametrize(("secure", "expected"), [(False, False), (True, True)])
def test_cookie_is_httponly_samesite_lax_path_root_and_secure_by_setting(
    secure: bool, expected: bool
) -> None:
    header = session_cookie.set_header("abc", max_age=60, secure=secure)
    parts = header.split("; ")
    assert parts[0] == "ikoma_session=abc"
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=60"} <= set(parts)
    assert ("Secure" in parts) is expected
    assert "Max-Age=0" in session_cookie.clear_header(secure=secure)


def test_cookie_is_read_among_others() -> None:
    scope = {"headers": [(b"cookie", b"theme=dark; ikoma_session=raw-id_1; other=x")]}
    assert session_cookie.read(scope) == "raw-id_1"
    assert session_cookie.read({"headers": [(b"cookie", b"theme=dark")]}) is None
    assert session_cookie.read({"headers": []}) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/machines/1?x=2", "/machines/1?x=2"),
        ("/", "/"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        (None, "/"),
        ("/ok\r\nSet-Cookie: x=y", "/"),
    ],
)
def test_only_local_paths_are_followed_after_sign_in(target: str | None, expected: str) -> None:
    assert session_cookie.safe_next(target) == expected


def test_page_requests_are_told_apart_from_api_calls() -> None:
    page = {"method": "GET", "headers": [(b"accept", b"text/html,application/xhtml+xml")]}
    fetch = {"method": "GET", "headers": [(b"accept", b"application/json")]}
    post = {"method": "POST", "headers": [(b"accept", b"text/html")]}
    assert session_cookie.wants_html(page)
    assert not session_cookie.wants_html(fetch)
    assert not session_cookie.wants_html(post)
