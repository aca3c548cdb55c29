"""How commands print: Rich tables for people, raw JSON for scripts, errors on stderr."""

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from ikoma.cli.client import ApiError

JsonOption = Annotated[bool, typer.Option("--json", help="Print raw JSON instead of tables.")]

# (field of the API object, column header)
Column = tuple[str, str]


# Width for tables written to a pipe or file: wide enough that ids never fold, so grep and cut work.
PIPE_WIDTH = 250


def _stdout() -> Console:
    # Built per call so output follows the sys.stdout and COLUMNS of the moment (CliRunner swaps both).
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def format_cell(value: Any) -> str:
    """One API value as table text: `-` for null, `yes`/`no`, `k=v` pairs, comma lists."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={_inner(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_inner(item) for item in value)
    return str(value)


def _inner(value: Any) -> str:
    # Inside params or details the JSON type matters (3 vs "3", true vs "yes"): keep JSON spelling.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def print_json(data: Any) -> None:
    # Plain write, not Rich: Rich would wrap long lines and break the JSON for scripts.
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def show_list(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, as_json: bool, empty: str
) -> None:
    """Print rows as a table of the chosen columns, or all of them as JSON."""
    if as_json:
        print_json(list(rows))
        return
    if not rows:
        show_absent(empty)
        return
    table = Table()
    for _, header in columns:
        # fold, not ellipsis: an id cut short is worse than an id on two lines.
        table.add_column(header, overflow="fold")
    for row in rows:
        # Text() so values like "[prod]" are shown as typed instead of read as Rich markup.
        table.add_row(*(Text(format_cell(row.get(field))) for field, _ in columns))
    _stdout().print(table)


def show_object(obj: Mapping[str, Any], *, as_json: bool, skip: Sequence[str] = ()) -> None:
    """Print one object as a key/value table (minus `skip`), or whole as JSON."""
    if as_json:
        print_json(obj)
        return
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in obj.items():
        if key not in skip:
            table.add_row(Text(key), Text(format_cell(value)))
    _stdout().print(table)


def show_absent(text: str) -> None:
    """A dim line standing in for a list or section that is empty, e.g. "no orders"."""
    _stdout().print(Text(text, style="dim"))


def show_heading(text: str) -> None:
    _stdout().print(Text(f"\n{text}", style="bold"))


def live_status(text: str) -> Status:
    """A spinner line on stderr, redrawn in place; use as a context manager and `.update()` it."""
    return _stderr().status(Text(text))


def notice(text: str) -> None:
    """A warning or hint for people, on stderr so it never mixes with machine output."""
    _stderr().print(Text(text, style="yellow"), soft_wrap=True)


def format_error(error: ApiError) -> list[str]:
    """`error: <reason>: <message>` with its details, then one line per invalid field path."""
    first = f"error: {error.reason}: {error.message}"
    if error.details:
        first += f" ({format_cell(error.details)})"
    lines = [first]
    for item in error.errors or []:
        lines.append(f"  {item.get('path') or '<body>'}: {item.get('message', '')}")
    return lines


def print_error(error: ApiError, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(error.to_body(), ensure_ascii=False), err=True)
        return
    # soft_wrap: an error line is copied and grepped; Rich must not break it at the console width.
    _stderr().print(Text("\n".join(format_error(error)), style="red"), soft_wrap=True)


@contextmanager
def api_errors(as_json: bool) -> Iterator[None]:
    """Report an `ApiError` on stderr and exit 1, so commands never show a traceback."""
    try:
        yield
    except ApiError as error:
        print_error(error, as_json=as_json)
        raise typer.Exit(code=1) from None
