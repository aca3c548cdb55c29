"""Server selectors: which machines an action targets, written as operators know it from Kubernetes.

    env=prod,role in (web,api),!decommissioned,name=web-*,state=online

A selector is terms joined by commas (AND). A term is about a label (`key=value`, `key==value`,
`key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` — the label is set —, `!key` — it is not), the
server's name (`name=<glob>`, `name!=<glob>`, `name in (<glob>,…)`, fnmatch-style and case-sensitive) or
its connection state (`state=online|offline|never_seen`, also with `!=`, `in`, `notin`). As in
Kubernetes, `key!=value` and `key notin (…)` also match a server that has no such label.

Words are unquoted when made of anything but whitespace and `=!,()"`; anything else (a space, a comma,
an empty value) is written in double quotes, with `\\"` and `\\\\` inside. A quoted key is always a
label key: `"name"=x` is the label `name`, not the server's name.

`parse` gives a `Selector` (a value: equal selectors have equal `canonical` text, recorded by runs) or
raises `Invalid` (`invalid_selector`) with the position and what was expected there.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from ikoma.domain.errors import Invalid

# the label rules of the API (api/schemas.py `Labels`): a key of 1-100 characters, a value up to 500
MAX_KEY = 100
MAX_VALUE = 500
MAX_GLOB = 200  # a server name is at most 200 characters
MAX_TERMS = 50
MAX_VALUES = 100  # in one `in (…)`


class ConnectionState(StrEnum):
    """How a server's runner is doing, as services/state.py `_liveness` sees it."""

    ONLINE = "online"  # its runner (not revoked) sent a heartbeat within IKOMA_STALE_AFTER
    OFFLINE = "offline"  # seen before, not within IKOMA_STALE_AFTER (or its runner was revoked)
    NEVER_SEEN = "never_seen"  # no runner attached, or its runner never sent a heartbeat


Field = Literal["label", "name", "state"]
Op = Literal["=", "!=", "in", "notin", "exists", "absent"]
FIELDS: frozenset[str] = frozenset({"name", "state"})
_SYNTAX = frozenset('=!,()"')


@dataclass(frozen=True, slots=True)
class Term:
    """One condition: `field` is `label` (then `key` is the label key), `name` or `state`."""

    field: Field
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, server: Mapping[str, Any]) -> bool:
        if self.field == "label":
            labels = server.get("labels") or {}
            present = self.key in labels
            if self.op == "exists":
                return present
            if self.op == "absent":
                return not present
            found = labels.get(self.key)
            hit = present and found in self.values
        elif self.field == "name":
            name = str(server.get("name") or "")
            hit = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.values)
        else:
            hit = server.get("connection_state") in self.values
        return hit if self.op in ("=", "in") else not hit

    @property
    def canonical(self) -> str:
        if self.field == "label":
            # a bare `name` or `state` would be the server's field: such a label key is quoted
            key = _quoted(self.key) if self.key in FIELDS else _quote(self.key)
        else:
            key = self.field
        if self.op == "exists":
            return key
        if self.op == "absent":
            return f"!{key}"
        if self.op in ("=", "!="):
            return f"{key}{self.op}{_quote(self.values[0])}"
        return f"{key} {self.op} ({','.join(_quote(v) for v in self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """Terms that must all hold. `str(selector)` is its canonical text, which parses back to it."""

    terms: tuple[Term, ...]

    def matches(self, server: Mapping[str, Any]) -> bool:
        """`server`: a mapping with `name`, `labels` and (for `state` terms) `connection_state`."""
        return all(term.matches(server) for term in self.terms)

    @property
    def canonical(self) -> str:
        return ",".join(term.canonical for term in self.terms)

    def __str__(self) -> str:
        return self.canonical

    def about(self, field: Field) -> tuple[Term, ...]:
        return tuple(term for term in self.terms if term.field == field)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote(text: str) -> str:
    """A word as written: bare when it can be, else in double quotes."""
    bare = text and not any(c.isspace() or c in _SYNTAX for c in text) and text not in ("in", "notin")
    return text if bare else _quoted(text)


# --- parsing -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "string", "op", "end"]
    text: str
    position: int


def _fail(text: str, position: int, expected: str, found: str | None = None) -> Invalid:
    seen = found if found is not None else (repr(text[position]) if position < len(text) else "the end")
    return Invalid(
        f"invalid selector at position {position}: expected {expected}, found {seen}",
        reason="invalid_selector",
        field="where",
        position=position,
        expected=expected,
        selector=text[:200],
    )


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif text.startswith(("==", "!="), i):
            found.append(_Token("op", text[i : i + 2], i))
            i += 2
        elif char in "=!,()":
            found.append(_Token("op", char, i))
            i += 1
        elif char == '"':
            start, i, chars = i, i + 1, []
            while True:
                if i >= len(text):
                    raise _fail(text, i, 'a closing `"`')
                if text[i] == "\\":
                    if i + 1 >= len(text) or text[i + 1] not in '"\\':
                        raise _fail(text, i, '`\\"` or `\\\\` after a backslash')
                    chars.append(text[i + 1])
                    i += 2
                elif text[i] == '"':
                    i += 1
                    break
                else:
                    chars.append(text[i])
                    i += 1
            found.append(_Token("string", "".join(chars), start))
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SYNTAX:
                i += 1
            found.append(_Token("word", text[start:i], start))
    found.append(_Token("end", "", len(text)))
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    @property
    def next(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, expected: str) -> Invalid:
        token = self.next
        found = "the end" if token.kind == "end" else repr(token.text)
        return _fail(self.text, token.position, expected, found)

    def word(self, expected: str) -> _Token:
        if self.next.kind not in ("word", "string"):
            raise self.fail(expected)
        return self.take()

    def selector(self) -> Selector:
        terms = [self.term()]
        while self.next.kind == "op" and self.next.text == ",":
            self.take()
            terms.append(self.term())
        if self.next.kind != "end":
            raise self.fail("`,` or the end of the selector")
        if len(terms) > MAX_TERMS:
            raise _fail(self.text, 0, f"at most {MAX_TERMS} terms", f"{len(terms)}")
        # AND is commutative: sorted and deduplicated, equal selectors read the same
        return Selector(tuple(sorted(set(terms), key=lambda t: t.canonical)))

    def term(self) -> Term:
        if self.next.kind == "op" and self.next.text == "!":
            self.take()
            key = self.word("a label key after `!`")
            return self._term(key, "absent", ())
        key = self.word("a label key, `name`, `state` or `!key`")
        token = self.next
        if token.kind in ("end",) or (token.kind == "op" and token.text == ","):
            return self._term(key, "exists", ())
        if token.kind == "op" and token.text in ("=", "==", "!="):
            self.take()
            value = self.word('a value (write an empty one as "")')
            return self._term(key, "!=" if token.text == "!=" else "=", (value,))
        if token.kind == "word" and token.text in ("in", "notin"):
            self.take()
            return self._term(key, "in" if token.text == "in" else "notin", self.values())
        raise self.fail("`=`, `!=`, `in`, `notin`, `,` or the end of the selector")

    def values(self) -> tuple[_Token, ...]:
        if not (self.next.kind == "op" and self.next.text == "("):
            raise self.fail("`(` to open the list of values")
        self.take()
        found = [self.word("a value")]
        while self.next.kind == "op" and self.next.text == ",":
            self.take()
            found.append(self.word("a value after `,`"))
        if not (self.next.kind == "op" and self.next.text == ")"):
            raise self.fail("`,` or `)` to close the list of values")
        self.take()
        if len(found) > MAX_VALUES:
            raise _fail(self.text, found[0].position, f"at most {MAX_VALUES} values", f"{len(found)}")
        return tuple(found)

    def _term(self, key: _Token, op: Op, values: tuple[_Token, ...]) -> Term:
        # one value or several: `in (a)` is `=a`, `notin (a)` is `!=a` (one canonical form)
        if op in ("in", "=") and len({v.text for v in values}) == 1:
            op = "="
        elif op in ("notin", "!=") and len({v.text for v in values}) == 1:
            op = "!="
        if key.kind == "string" or key.text not in FIELDS:
            return self._label_term(key, op, values)
        if op in ("exists", "absent"):
            raise _fail(
                self.text, key.position + len(key.text), f"`=`, `!=`, `in` or `notin` after `{key.text}`"
            )
        if key.text == "name":
            for value in values:
                self._check_length(value, MAX_GLOB, "a name pattern")
            return Term("name", "name", op, _unique(v.text for v in values))
        allowed = [s.value for s in ConnectionState]
        for value in values:
            if value.text not in allowed:
                raise _fail(self.text, value.position, "one of " + ", ".join(allowed), repr(value.text))
        return Term("state", "state", op, _unique(v.text for v in values))

    def _label_term(self, key: _Token, op: Op, values: tuple[_Token, ...]) -> Term:
        if not key.text:
            raise _fail(self.text, key.position, "a label key of 1 to 100 characters", '""')
        self._check_length(key, MAX_KEY, "a label key")
        for value in values:
            self._check_length(value, MAX_VALUE, "a label value")
        return Term("label", key.text, op, _unique(v.text for v in values))

    def _check_length(self, token: _Token, limit: int, what: str) -> None:
        if len(token.text) > limit:
            raise _fail(self.text, token.position, f"{what} of at most {limit} characters", "a longer one")


def _unique(values: Any) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def parse(text: str) -> Selector:
    """The selector `text` describes; `Invalid` (`invalid_selector`) with where and what was expected."""
    return _Parser(text).selector()
