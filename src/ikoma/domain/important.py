"""Important messages: what identifies one across runs (its fingerprint), and what a new one looks like.

The same message comes back run after run with different numbers in it (a version, a percentage, a
count): those are normalised away before hashing, so it stays one message with a count, a first and a
last sighting, instead of a new message per run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

SEVERITIES = ("error", "warning", "info")
_NUMBER_RE = re.compile(r"\d+(?:[.:~+-]\d+)*")
_HEX_RE = re.compile(r"\b[0-9a-f]{12,}\b")
_SPACES_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Message:
    source: str
    category: str
    severity: str
    message: str
    package_name: str | None = None


def normalise(message: str) -> str:
    """Lower case, one space, numbers and long hex ids replaced: `/ is 91% full` == `/ is 93% full`."""
    text = _HEX_RE.sub("<id>", message.lower())
    text = _NUMBER_RE.sub("#", text)
    return _SPACES_RE.sub(" ", text).strip()


def fingerprint(server_id: str, source: str, category: str, message: str) -> str:
    """sha256 of (server, source, category, normalised message), hex."""
    material = "\x1f".join((server_id, source, category, normalise(message)))
    return hashlib.sha256(material.encode()).hexdigest()


def messages_from(important: list[dict[str, Any]]) -> list[Message]:
    """The snapshot's important lines as messages, one per fingerprint (the first wins)."""
    seen: set[tuple[str, str, str]] = set()
    found: list[Message] = []
    for line in important:
        text = str(line.get("message") or "").strip()
        if not text:
            continue
        source = str(line.get("source") or "order")[:32]
        category = str(line.get("category") or "warning")[:32]
        severity = str(line.get("severity") or "warning")
        key = (source, category, normalise(text))
        if key in seen:
            continue
        seen.add(key)
        package = line.get("packageName")
        found.append(
            Message(
                source=source,
                category=category,
                severity=severity if severity in SEVERITIES else "warning",
                message=text,
                package_name=str(package)[:200] if package else None,
            )
        )
    return found
