"""Console rendering: what the templates' helpers promise (escaping, role-aware controls, safe redirects)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from ikoma.console import rendering
from ikoma.console.pages import safe_next
from ikoma.domain.roles import Role
from ikoma.services.identity import Principal


def request_as(role: Role | None) -> Request:
    state = {}
    if role is not None:
        state["principal"] = Principal(
            kind="api_client", id="c1", name="someone", role=role, granted_role=role, token_prefix="ikc_xxxx"
        )
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "state": state})


def test_can_follows_the_policy_table_for_the_principals_role() -> None:
    cancel = ("POST", "/v1/orders/{order_id}/cancel")  # OPERATOR in api/policy.py
    assert not rendering.can(request_as(Role.OBSERVER), *cancel)
    assert not rendering.can(request_as(Role.BUILDER), *cancel)
    assert rendering.can(request_as(Role.OPERATOR), *cancel)
    assert rendering.can(request_as(Role.ADMIN), *cancel)
    assert not rendering.can(request_as(None), *cancel)


def test_can_refuses_a_route_the_policy_table_does_not_list() -> None:
    assert not rendering.can(request_as(Role.ADMIN), "POST", "/v1/no-such-route")


def test_json_data_cannot_end_its_script_block_early() -> None:
    shown = str(rendering.json_data({"name": "</script><script>alert(1)</script>", "x": "a&b"}))
    assert "</script>" not in shown
    assert "<" not in shown
    assert "&" not in shown
    assert "\\u003c/script\\u003e" in shown


def test_markdown_renders_reports_but_never_their_raw_html() -> None:
    html = str(
        rendering.render_markdown("# Title\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    )
    assert "<h1>Title</h1>" in html
    assert "<table>" in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_templates_escape_what_they_show() -> None:
    template = rendering.environment().from_string("<p>{{ name }}</p>")
    assert template.render(name="<b>x</b>") == "<p>&lt;b&gt;x&lt;/b&gt;</p>"


def test_a_misspelt_template_variable_fails_instead_of_rendering_empty() -> None:
    with pytest.raises(Exception, match="undefined"):
        rendering.environment().from_string("{{ nmae }}").render(name="x")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/machines/1?x=2", "/machines/1?x=2"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
    ],
)
def test_after_signing_in_the_browser_only_goes_to_a_path_of_this_site(
    target: str | None, expected: str
) -> None:
    assert safe_next(target) == expected


def test_times_and_sizes_read_well() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert rendering.when(datetime(2026, 12, 7, 11, 58)) == "2026-12-07 11:58 UTC"  # naive: UTC
    assert rendering.ago(datetime(2026, 12, 7, 11, 58, tzinfo=UTC), now) == "2 min ago"
    assert rendering.ago(None, now) == "never"
    assert rendering.size(1536) == "1.5 KiB"
    assert rendering.size(None) == "—"
