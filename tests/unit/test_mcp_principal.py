"""The /mcp handlers act as the Principal of the HTTP request carrying the message, or not at all."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from starlette.requests import Request

from ikoma.api.mcp_server import principal_of
from ikoma.domain.roles import Role
from ikoma.services.identity import Principal

ALICE = Principal("api_client", "c-1", "alice", Role.OBSERVER, Role.OPERATOR, "ikoma_abcdefgh")


def carrying(state: dict[str, Any] | None) -> Any:
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/mcp", "headers": []}
    if state is not None:
        scope["state"] = state
    return SimpleNamespace(request=Request(scope))


def test_the_principal_is_the_one_policy_put_on_the_request() -> None:
    assert principal_of(carrying({"principal": ALICE})) is ALICE


@pytest.mark.parametrize("state", [None, {}, {"principal": "admin"}])
def test_a_message_without_an_authenticated_request_is_refused(state: dict[str, Any] | None) -> None:
    with pytest.raises(MCPError, match="unauthenticated"):
        principal_of(carrying(state))


def test_a_message_without_any_http_request_is_refused() -> None:
    with pytest.raises(MCPError, match="unauthenticated"):
        principal_of(SimpleNamespace(request=None))  # type: ignore[arg-type]
