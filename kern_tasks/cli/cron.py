"""`kern-tasks cron EXPR [--tz ZONE] [--next N] [--from WHEN] [--json]`: what a cron
expression means and when it fires next, read by the scheduler's own cron engine, with
each fire time whose UTC offset differs from the one before it marked as a DST change.

    $ kern-tasks cron '0 9 * * *' --tz America/New_York --next 3 --from 2026-03-07
    At 09:00 (America/New_York)
      2026-03-07 09:00:00 EST  -05:00  2026-03-07 14:00:00 UTC
      2026-03-08 09:00:00 EDT  -04:00  2026-03-08 13:00:00 UTC  DST: -05:00 -> -04:00
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from kern_tasks.cli import output
from kern_tasks.scheduler import cron as cron_engine
from kern_tasks.scheduler.backfill import instant
from kern_tasks.scheduler.kinds import dst_marked
from kern_tasks.settings import Settings

MAX_NEXT = 1000


def fire_times(expr: str, zone: str, after: datetime, count: int) -> list[dict[str, Any]]:
    """The next `count` fire times after `after`, DST changes marked (kinds.dst_marked)."""
    tz = cron_engine.validate_timezone(zone)
    return dst_marked(cron_engine.next_runs(expr, zone, after, count=count), after.astimezone(tz))


def _cron(args: argparse.Namespace, settings: Settings) -> int:
    cron_engine.parse(args.expr)  # CronError (a ValidationError naming "cron") before anything else
    expr = args.expr.strip()
    zone = args.tz
    cron_engine.validate_timezone(zone)
    if not 1 <= args.next <= MAX_NEXT:
        raise output.bad_input("next", f"must be between 1 and {MAX_NEXT}, got {args.next}")
    after = datetime.now(UTC) if args.start is None else datetime.fromtimestamp(instant("from", args.start, zone) - 1, UTC)
    description = cron_engine.describe(expr)
    times = fire_times(expr, zone, after, args.next)
    if args.json:
        output.print_json({"expression": expr, "timezone": zone, "description": description, "next": times})
        return output.OK
    output.console().print(f"{description} ({zone})")
    rows = []
    for item in times:
        local = datetime.fromisoformat(item["at"])
        utc = datetime.fromisoformat(item["utc"])
        rows.append((local.strftime("%Y-%m-%d %a %H:%M:%S ") + (item["abbreviation"] or ""), item["offset"],
                     utc.strftime("%Y-%m-%d %H:%M:%S UTC"), f"DST: {item['dst_change']}" if item["dst_change"] else ""))
    output.table(None, ["local", "offset", "utc", "dst"], rows)
    return output.OK


def add_commands(commands: Any) -> None:
    cron = commands.add_parser("cron", help="describe a cron expression and list its next fire times")
    cron.add_argument("expr", help='5 fields, 6 with leading seconds, or a macro, e.g. "0 9 * * 1-5"')
    cron.add_argument("--tz", default="UTC", help='the IANA zone it is read in, e.g. "America/New_York"')
    cron.add_argument("--next", type=int, default=5, help="how many fire times (default 5)")
    cron.add_argument("--from", dest="start", default=None,
                      help="list fire times from this instant on (ISO 8601; without an offset: in --tz); default now")
    cron.add_argument("--json", action="store_true", help="JSON for scripts")
    cron.set_defaults(handler=_cron)
