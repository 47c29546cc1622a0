"""The `kern-tasks` command (also `python -m kern_tasks`), one module per command group:

    kern-tasks run | serve | demo            the processes (basic.py)
    kern-tasks cron EXPR [--tz] [--next N]   what a cron means, its next fire times (cron.py)
    kern-tasks schedules list|show|create|update|enable|disable|trigger|delete|runs|backfill
                                             the schedules, by name or id (schedules.py)
    kern-tasks db upgrade|current            migrations (maintenance.py)
    kern-tasks runs prune --older-than 30d   retention (maintenance.py)
    kern-tasks health beat|worker            liveness probes: exit 0 healthy, 1 not (health.py)

Every command calls the core (ScheduleManager, Database) and prints what it answers: a
table for people, `--json` (agno's field names) for scripts. Exit codes (output.py): 0
done, 1 not found, 2 bad input, the field named on stderr.
"""

from __future__ import annotations

import argparse
import sys

from kern_tasks.cli import basic, cron, health, maintenance, output, schedules
from kern_tasks.cli.basic import load_app
from kern_tasks.settings import Settings

__all__ = ["load_app", "main"]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kern-tasks", description="kern_tasks: schedules and agent jobs on Celery")
    commands = root.add_subparsers(dest="command", required=True)
    basic.add_commands(commands)
    cron.add_commands(commands)
    schedules.add_commands(commands)
    maintenance.add_commands(commands)
    health.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    return output.run(args.handler, args, settings)


if __name__ == "__main__":
    sys.exit(main())
