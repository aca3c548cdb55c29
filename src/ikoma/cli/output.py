"""How commands print: Rich tables for people, raw JSON for scripts, errors on stderr."""

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from ikoma.cli.client import ApiError

JsonOption = Annotated[bool, typer.Option("--json", help="Print raw JSON instead of tables.")]
WideOption = Annotated[
    bool, typer.Option("--wide", "-w", help="Full ids and timestamps in tables (default: ids cut to 8).")
]

# (field of the API object, column header)
Column = tuple[str, str]


# Width for tables written to a pipe or file: wide enough that rows stay one line, so grep and cut work.
PIPE_WIDTH = 250
# Tables print ids as their first 8 characters (every command takes them back) and times to the second.
SHORT_ID_LENGTH = 8
UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")
COLUMN_GAP = 2
FREE_TEXT_MIN = 10
# Columns kept whole (never folded) when the width allows: short values first (ids, times, states,
# counts), then names people read and copy. Free text (reasons, labels) takes what is left.
SHORT_WIDTH = 12
NAME_FIELDS = frozenset({"name", "key", "serverName", "runnerName", "playbookKey", "hostname"})


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


def table_cell(value: Any, *, wide: bool = False) -> str:
    """`format_cell`, with ids cut to 8 characters and times to the second unless `wide`."""
    if not wide and isinstance(value, str):
        if UUID_TEXT.match(value):
            return value[:SHORT_ID_LENGTH]
        time = ISO_TIME.match(value)
        if time:
            return f"{time.group(1)} {time.group(2)}"
    return format_cell(value)


def _rank(field: str, width: int, wide: bool) -> int:
    """0: short (ids, times, states, counts), 1: a name (or a full id), 2: free text, folded first."""
    if field == "id" or field.endswith(("Id", "At")):
        return 1 if wide else 0
    if width <= SHORT_WIDTH:
        return 0
    return 1 if field in NAME_FIELDS else 2


def _inner(value: Any) -> str:
    # Inside params or details the JSON type matters (3 vs "3", true vs "yes"): keep JSON spelling.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def print_json(data: Any) -> None:
    # Plain write, not Rich: Rich would wrap long lines and break the JSON for scripts.
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def show_list(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    empty: str,
    wide: bool = False,
) -> None:
    """Print rows as a table of the chosen columns (ids cut to 8 unless `wide`), or all as JSON."""
    if as_json:
        print_json(list(rows))
        return
    if not rows:
        show_absent(empty)
        return
    console = _stdout()
    cells = [[table_cell(row.get(field), wide=wide) for field, _ in columns] for row in rows]
    natural = [
        max(cell_len(header), *(cell_len(line[index]) for line in cells))
        for index, (_, header) in enumerate(columns)
    ]
    ranks = [_rank(field, width, wide) for (field, _), width in zip(columns, natural, strict=True)]
    keep = _kept_whole(natural, ranks, console.width)
    # No borders: the gap between columns leaves the width to the values, and each row stays one
    # line that grep and cut can work on.
    table = Table(box=None, padding=(0, COLUMN_GAP // 2), pad_edge=False, header_style="bold")
    for (_, header), width, rank in zip(columns, natural, ranks, strict=True):
        if rank <= keep:
            table.add_column(header, width=width, no_wrap=True)
        else:
            # fold, never an ellipsis: a value cut short misleads, one on two lines does not
            table.add_column(header, overflow="fold")
    for line in cells:
        # Text() so values like "[prod]" are shown as typed instead of read as Rich markup.
        table.add_row(*(Text(cell) for cell in line))
    console.print(table)


def _kept_whole(natural: Sequence[int], ranks: Sequence[int], width: int) -> int:
    """The highest rank whose columns all stay whole, leaving FREE_TEXT_MIN to each other column."""
    for keep in (1, 0):
        fixed = sum(w for w, rank in zip(natural, ranks, strict=True) if rank <= keep)
        others = sum(1 for rank in ranks if rank > keep)
        if fixed + COLUMN_GAP * (len(ranks) - 1) + FREE_TEXT_MIN * others <= width:
            return keep
    return -1


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
