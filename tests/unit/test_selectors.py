"""Server selectors (domain/selectors.py): the grammar, what each form matches, canonical text, errors."""

from __future__ import annotations

from typing import Any

import pytest

from ikoma.domain.errors import Invalid
from ikoma.domain.selectors import Selector, parse


def server(name: str, state: str = "online", **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": labels, "connection_state": state}


WEB_PROD = server("web-1", env="prod", role="web")
WEB_DEV = server("web-2", "offline", env="dev", role="web")
DB_PROD = server("db-1", "never_seen", env="prod", role="db", retired="yes")
BARE = server("misc", "offline")
FLEET = [WEB_PROD, WEB_DEV, DB_PROD, BARE]


def names(selector: str) -> list[str]:
    chosen = parse(selector)
    return [s["name"] for s in FLEET if chosen.matches(s)]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", ["web-1", "db-1"]),
        ("env==prod", ["web-1", "db-1"]),
        ("env!=prod", ["web-2", "misc"]),  # also the servers without the label (Kubernetes semantics)
        ("role in (web,db)", ["web-1", "web-2", "db-1"]),
        ("role notin (web)", ["db-1", "misc"]),
        ("retired", ["db-1"]),
        ("!retired", ["web-1", "web-2", "misc"]),
        ("name=web-*", ["web-1", "web-2"]),
        ("name!=web-*", ["db-1", "misc"]),
        ("name in (db-?,mi*)", ["db-1", "misc"]),
        ("name=WEB-*", []),  # globs are case-sensitive
        ("state=online", ["web-1"]),
        ("state in (offline,never_seen)", ["web-2", "db-1", "misc"]),
        ("state!=offline", ["web-1", "db-1"]),
        ("env=prod,role=web", ["web-1"]),  # comma is AND
        (" env = prod , !retired ", ["web-1"]),  # spaces around words are free
        ("env=prod,env=dev", []),
    ],
)
def test_each_form_selects_the_servers_it_describes(selector: str, expected: list[str]) -> None:
    assert names(selector) == expected


def test_quoted_words_hold_any_label_key_or_value() -> None:
    odd = server("x", **{"team name": "ops, infra", "q": 'say "hi"', "empty": ""})
    assert parse('"team name"="ops, infra"').matches(odd)
    assert parse('q="say \\"hi\\""').matches(odd)
    assert parse('empty=""').matches(odd)
    assert not parse('empty!=""').matches(odd)


def test_a_quoted_name_or_state_key_is_a_label_not_the_server_field() -> None:
    labelled = {
        "name": "web-1",
        "labels": {"name": "alice", "state": "draining"},
        "connection_state": "online",
    }
    assert parse('"name"=alice').matches(labelled)
    assert not parse("name=alice").matches(labelled)
    assert parse('"state"=draining').matches(labelled)


def test_a_server_without_labels_is_matched_as_having_none() -> None:
    assert parse("!env").matches({"name": "old", "labels": None, "connection_state": "offline"})


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("role in (web,api),env==prod", "env=prod,role in (api,web)"),
        ("env = prod ,  env=prod", "env=prod"),
        ("env in (prod)", "env=prod"),
        ("env notin (prod)", "env!=prod"),
        ("!b,a", "!b,a"),
        ('"name"=x', '"name"=x'),
        ('k="a b"', 'k="a b"'),
        ('k="in"', 'k="in"'),
    ],
)
def test_equal_selectors_have_one_canonical_text_that_parses_back(written: str, canonical: str) -> None:
    selector = parse(written)
    assert str(selector) == canonical
    assert parse(str(selector)) == selector


def test_selector_is_a_value() -> None:
    assert parse("a=1,b") == parse("b, a=1")
    assert isinstance(parse("a"), Selector)
    assert len({parse("a=1,b"), parse("b,a=1")}) == 1


@pytest.mark.parametrize(
    ("selector", "position", "expected"),
    [
        ("", 0, "a label key, `name`, `state` or `!key`"),
        ("env=", 4, 'a value (write an empty one as "")'),
        ("env in (prod", 12, "`,` or `)` to close the list of values"),
        ("env in ()", 8, "a value"),
        ("env in prod", 7, "`(` to open the list of values"),
        ("env=a b", 6, "`,` or the end of the selector"),
        ("env=prod)", 8, "`,` or the end of the selector"),
        ("a,,b", 2, "a label key, `name`, `state` or `!key`"),
        ("env prod", 4, "`=`, `!=`, `in`, `notin`, `,` or the end of the selector"),
        ("=prod", 0, "a label key, `name`, `state` or `!key`"),
        ('env="prod', 9, 'a closing `"`'),
        ('env="a\\b"', 6, '`\\"` or `\\\\` after a backslash'),
        ("name", 4, "`=`, `!=`, `in` or `notin` after `name`"),
        ("!state", 6, "`=`, `!=`, `in` or `notin` after `state`"),
        ("state=up", 6, "one of online, offline, never_seen"),
        ('""=x', 0, "a label key of 1 to 100 characters"),
        ("k" * 101 + "=x", 0, "a label key of at most 100 characters"),
        ("k=" + "v" * 501, 2, "a label value of at most 500 characters"),
        ("name=" + "n" * 201, 5, "a name pattern of at most 200 characters"),
    ],
)
def test_a_bad_selector_says_where_and_what_was_expected(selector: str, position: int, expected: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse(selector)
    assert refused.value.reason == "invalid_selector"
    assert refused.value.status_code == 422
    assert refused.value.details["position"] == position
    assert refused.value.details["expected"] == expected
    assert f"position {position}" in refused.value.message


def test_too_many_terms_are_refused() -> None:
    with pytest.raises(Invalid) as refused:
        parse(",".join(f"k{i}" for i in range(51)))
    assert refused.value.details["expected"] == "at most 50 terms"
