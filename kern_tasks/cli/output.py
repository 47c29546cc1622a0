"""How every command answers: tables (rich) on stdout for people, JSON for scripts, errors
on stderr with the exit code that says what kind they are.

    0  done
    1  not found (a schedule, a run)
    2  bad input: the field named ("error: cron: ...") and nothing changed
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, Callable, Sequence
from zoneinfo import ZoneInfo

from kern_tasks.errors import Conflict, NotFound, ValidationError
from kern_tasks.settings import Settings

OK, NOT_FOUND, BAD_INPUT = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], int]


def console() -> Any:
    """A rich Console (imported here: `run` and `serve` need no rich), wide enough for ids
    and ISO times when stdout is a pipe (rich would wrap at 80)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def run(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    """Run a command; a known error becomes its message on stderr and its exit code."""
    try:
        return handler(args, settings)
    except NotFound as exc:
        return _fail(args, NOT_FOUND, str(exc), None)
    except ValidationError as exc:
        return _fail(args, BAD_INPUT, str(exc), exc.field)
    except Conflict as exc:  # a taken name, a disabled schedule: the input must change
        return _fail(args, BAD_INPUT, str(exc), None)


def _fail(args: argparse.Namespace, code: int, message: str, field: str | None) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "field": field}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def bad_input(field: str, message: str) -> ValidationError:
    """An argument the CLI itself reads (JSON text, a duration) that does not parse."""
    return ValidationError(field, message)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def answer(args: argparse.Namespace, value: Any, text: str) -> int:
    """A command's result: `value` as JSON with --json, else the line `text`; exit OK."""
    if getattr(args, "json", False):
        print_json(value)
    else:
        print(text)
    return OK


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """One record as "key  value" lines."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, "" if value is None else str(value))
    console().print(grid)


def local_time(epoch: int | None, zone: str) -> str | None:
    """An epoch as "2026-03-08 09:00 EDT" in `zone` (UTC when the zone is unknown)."""
    if epoch is None:
        return None
    try:
        tz: Any = ZoneInfo(zone)
    except Exception:  # noqa: BLE001 - a row agno wrote with a zone we cannot read
        tz = UTC
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S %Z")
