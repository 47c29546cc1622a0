"""`kern-tasks db upgrade|current` and `kern-tasks runs prune --older-than 30d`.

Prune deletes finished attempts (never a queued or running one) in small batches, each
its own short transaction (ScheduleManager.prune_runs), with a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from kern_tasks.cli import output
from kern_tasks.db import Database
from kern_tasks.db.migrate import revision_gap
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.retention import PRUNE_BATCH
from kern_tasks.settings import Settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def seconds_of(text: str) -> int:
    """"30d", "12h", "90m", "45s", "2w" or plain seconds."""
    match = _DURATION.match(text)
    if not match:
        raise output.bad_input("older_than", f'{text!r} is not a duration such as "30d", "12h", "90m" or "3600"')
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings=settings)
    db.upgrade()
    gap = revision_gap(db.engine, db.schema)
    return output.answer(args, {"database": repr(db), "current": gap.current, "head": gap.head, "at_head": gap.at_head},
                         f"{db!r} is up to date (revision {gap.current})")


def _current(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings=settings)
    gap = revision_gap(db.engine, db.schema)  # reads only: no auto-upgrade here
    state = "at head" if gap.at_head else ("ahead (a newer kern_tasks migrated it)" if gap.ahead else "behind")
    return output.answer(args, {"database": repr(db), "current": gap.current, "head": gap.head,
                                "at_head": gap.at_head, "state": state},
                         f"{db!r}: revision {gap.current or '(none)'}, head {gap.head}: {state}")


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    older_than = seconds_of(args.older_than)
    manager = ScheduleManager(Database(settings=settings))
    show_bar = sys.stderr.isatty() and not args.json
    with Progress(TextColumn("pruning runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not show_bar, transient=False) as progress:
        task = progress.add_task("prune", total=None)

        def advance(deleted: int, total: int) -> None:
            progress.update(task, completed=deleted, total=total)

        deleted = manager.prune_runs(older_than, batch=args.batch, on_batch=advance)
    return output.answer(args, {"deleted": deleted, "older_than_seconds": older_than},
                         f"deleted {deleted} finished run(s) older than {args.older_than}")


def add_commands(commands: Any) -> None:
    db = commands.add_parser("db", help="database migrations")
    db_actions = db.add_subparsers(dest="action", required=True)
    upgrade = db_actions.add_parser("upgrade", help="migrate the database named by KERN_DATABASE_URL to head")
    upgrade.add_argument("--json", action="store_true")
    upgrade.set_defaults(handler=_upgrade)
    current = db_actions.add_parser("current", help="the database's revision and this kern_tasks' head")
    current.add_argument("--json", action="store_true")
    current.set_defaults(handler=_current)

    runs = commands.add_parser("runs", help="schedule run history")
    runs_actions = runs.add_subparsers(dest="action", required=True)
    prune = runs_actions.add_parser("prune", help="delete finished runs older than a duration, in small batches")
    prune.add_argument("--older-than", required=True, help='e.g. "30d", "12h" (never a queued or running run)')
    prune.add_argument("--batch", type=int, default=PRUNE_BATCH, help=f"runs per transaction (default {PRUNE_BATCH})")
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(handler=_prune)
