"""The app's `.env`: read it, and update some variables in place (mode 0600, other lines kept).

The format is the one docker compose reads: `KEY=value` lines, `#` comments, an optional
`export ` prefix, values optionally in single or double quotes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = ".env"
_LINE_RE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\") if value[0] == '"' else inner
    # an unquoted value ends at an inline comment
    return re.split(r"\s+#", value, maxsplit=1)[0]


def parse(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if match:
            values[match["key"]] = _unquote(match["value"])
    return values


def read(path: Path) -> dict[str, str]:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _render(key: str, value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:@+-]*", value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically; the file is 0600 from its first byte (it holds passwords)."""
    tmp = path.with_name(f".{path.name}.ikoma-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def update(path: Path, values: Mapping[str, str]) -> None:
    """Set `values` in the file: existing lines for those keys are replaced, every other line kept."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    pending = dict(values)
    out: list[str] = []
    for line in lines:
        match = _LINE_RE.match(line) if not line.lstrip().startswith("#") else None
        if match and match["key"] in values:
            if match["key"] in pending:
                out.append(_render(match["key"], pending.pop(match["key"])))
            continue  # a duplicate of a key we set: dropped so the file has one truth
        out.append(line)
    if pending:
        out.extend(_render(key, value) for key, value in pending.items())
    write_private(path, "\n".join(out) + "\n")
