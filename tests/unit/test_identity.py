"""API client token format, role order and X-Role lowering (pure logic)."""

from __future__ import annotations

import pytest

from ikoma.domain import tokens
from ikoma.domain.errors import BadRequest, Forbidden, NotFound
from ikoma.domain.roles import Role, lowered
from ikoma.services.identity import Principal


def test_api_client_token_has_typed_prefix_random_secret_and_valid_checksum() -> None:
    issued = tokens.issue_api_client_token()
    assert issued.secret.startswith("ikoma_")
    assert len(issued.secret) == len("ikoma_") + 32 + 6
    assert issued.prefix == issued.secret[:14]
    assert issued.hash == tokens.hash_token(issued.secret)
    assert tokens.is_api_client_token(issued.secret)
    assert issued.secret != tokens.issue_api_client_token().secret


def test_token_with_one_character_changed_fails_its_checksum() -> None:
    secret = tokens.issue_api_client_token().secret
    position = 10
    changed = secret[:position] + ("A" if secret[position] != "A" else "B") + secret[position + 1 :]
    assert not tokens.is_api_client_token(changed)
    assert not tokens.is_api_client_token(secret[:-1])
    assert not tokens.is_api_client_token("ika_" + secret[4:])
    assert not tokens.is_api_client_token("")


def test_roles_are_ordered_observer_builder_operator_admin() -> None:
    assert Role.OBSERVER < Role.BUILDER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(BadRequest) as refused:
        Role.parse("root")
    assert refused.value.reason == "invalid_role"


@pytest.mark.parametrize(
    ("granted", "header", "acting"),
    [
        (Role.ADMIN, None, Role.ADMIN),
        (Role.ADMIN, "", Role.ADMIN),
        (Role.ADMIN, "builder", Role.BUILDER),
        (Role.OPERATOR, "observer", Role.OBSERVER),
        (Role.OPERATOR, "operator", Role.OPERATOR),
    ],
)
def test_x_role_lowers_the_role_a_request_acts_with(granted: Role, header: str | None, acting: Role) -> None:
    assert lowered(granted, header) is acting


@pytest.mark.parametrize(("granted", "header"), [(Role.OBSERVER, "admin"), (Role.BUILDER, "operator")])
def test_x_role_never_raises_the_role(granted: Role, header: str) -> None:
    with pytest.raises(Forbidden) as refused:
        lowered(granted, header)
    assert refused.value.reason == "role_escalation"
    assert refused.value.details == {"role": granted.label, "requested": header}


def _principal(role: Role, servers: frozenset[str] | None = None) -> Principal:
    return Principal("api_client", "c1", "ci", role, role, "ikoma_abcdefgh", servers)


def test_principal_refusal_names_the_role_needed() -> None:
    with pytest.raises(Forbidden) as refused:
        _principal(Role.BUILDER).require(Role.OPERATOR, "deploy.up")
    assert refused.value.details == {"required": "operator", "role": "builder"}
    _principal(Role.ADMIN).require(Role.OPERATOR, "deploy.up")


def test_scoped_principal_does_not_see_servers_outside_its_scope() -> None:
    scoped = _principal(Role.OPERATOR, frozenset({"s1"}))
    assert scoped.can_see_server("s1")
    assert not scoped.can_see_server("s2")
    with pytest.raises(NotFound):
        scoped.require_server("s2")
    assert _principal(Role.OBSERVER).can_see_server("anything")
