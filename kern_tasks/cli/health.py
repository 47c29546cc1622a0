"""`kern-tasks health beat [--max-age S]` and `kern-tasks health worker [--timeout S]`:
liveness and readiness probes (Kubernetes exec probes, docker-compose healthchecks).

Exit 0 while healthy; 1 otherwise, with one line on stderr saying why (no replica ticked
within S seconds, the database unreachable, no worker answered the ping); 2 for bad input.

- beat: some replica's heartbeat in kern_beats is at most S seconds old on the
  database's clock (kern_tasks.beat_health, the read /health and the alerts use too);
  `--hostname H` counts only the replicas on host H (a container's or pod's own probe:
  `--hostname "$HOSTNAME"`).
- worker: `celery control ping` over the broker KERN_BROKER_URL names; at least one
  worker answers within the timeout (`--destination NAME` to ask one worker only).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError

from kern_tasks import beat_health
from kern_tasks.cli import output
from kern_tasks.db import Database
from kern_tasks.errors import NotMigrated
from kern_tasks.settings import Settings

UNHEALTHY = 1


def _unhealthy(args: argparse.Namespace, why: str, details: dict[str, Any]) -> int:
    if args.json:
        output.print_json({"healthy": False, "reason": why, **details})
    print(f"unhealthy: {why}", file=sys.stderr)
    return UNHEALTHY


def _beat(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_age <= 0:
        raise output.bad_input("max_age", f"must be a positive number of seconds; got {args.max_age:g}")
    db = Database(settings=settings)
    try:
        health = beat_health.read_database(db)
    except DBAPIError as exc:
        return _unhealthy(args, f"database unreachable ({type(exc.orig).__name__}: {exc.orig})", {})
    except NotMigrated as exc:
        return _unhealthy(args, str(exc), {})
    finally:
        db.dispose()
    if args.hostname:
        health = health.on_host(args.hostname)
    why = health.reason(args.max_age)
    if why is not None and args.hostname:
        why = f"on host {args.hostname}: {why}"
    if why is not None:
        return _unhealthy(args, why, health.to_dict(args.max_age))
    newest = health.replicas[0]
    return output.answer(args, {"healthy": True, **health.to_dict(args.max_age)},
                         f"beat alive: replica {newest.id} ticked {newest.age_s} s ago "
                         f"({sum(r.age_s <= args.max_age for r in health.replicas)} replica(s) within "
                         f"{args.max_age:g} s)")


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.timeout <= 0:
        raise output.bad_input("timeout", f"must be a positive number of seconds; got {args.timeout:g}")
    from kern_tasks.app import create_app  # the Celery app only for this command

    app = create_app(settings, main="kern_tasks.health")
    try:
        destination = [args.destination] if args.destination else None
        replies = app.control.ping(destination=destination, timeout=args.timeout)
    except Exception as exc:  # noqa: BLE001 - any broker failure is an unhealthy answer, said why
        return _unhealthy(args, f"broker unreachable ({type(exc).__name__}: {exc})", {})
    finally:
        app.close()
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        who = f"worker {args.destination}" if args.destination else "no worker"
        return _unhealthy(args, f"{who} answered a ping within {args.timeout:g} s", {"workers": []})
    return output.answer(args, {"healthy": True, "workers": workers},
                         f"{len(workers)} worker(s) answered: {', '.join(workers)}")


def add_commands(commands: Any) -> None:
    health = commands.add_parser("health", help="liveness probes: exit 0 healthy, 1 not (why on stderr)")
    actions = health.add_subparsers(dest="action", required=True)
    beat = actions.add_parser("beat", help="some beat replica ticked within --max-age seconds")
    beat.add_argument("--max-age", type=float, default=beat_health.DEFAULT_MAX_AGE_S,
                      help=f"seconds (default {beat_health.DEFAULT_MAX_AGE_S})")
    beat.add_argument("--hostname", help="only replicas on this host (e.g. \"$HOSTNAME\" in a container)")
    beat.add_argument("--json", action="store_true")
    beat.set_defaults(handler=_beat)
    worker = actions.add_parser("worker", help="some worker answers a ping over the broker")
    worker.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers (default 2)")
    worker.add_argument("--destination", help="ping only this worker (its node name, e.g. worker@host)")
    worker.add_argument("--json", action="store_true")
    worker.set_defaults(handler=_worker)
