"""The process commands of `kern-tasks`:

    kern-tasks run           the main command: web, beat and worker in one process
    kern-tasks serve         serve KERN_APP ("module:attribute", an AgentOS or ASGI app)
    kern-tasks demo          a short tour of the store on the embedded default
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from kern_tasks.db import Database
from kern_tasks.settings import Settings


def _demo(settings: Settings) -> int:
    from kern_tasks.scheduler import ScheduleManager, describe, next_runs

    db = Database(settings=settings)
    manager = ScheduleManager(db)
    examples = [
        ("morning_briefing", "0 8 * * 1-5", "America/New_York", "/agents/briefer/runs"),
        ("daily_triage", "30 2 * * *", "America/New_York", "/agents/triage/runs"),
        ("weekly_digest", "0 9 * * mon", "Europe/London", "/workflows/weekly-digest/runs"),
        ("health_check", "*/15 * * * *", "UTC", "/health"),
    ]
    print(f"database: {db!r}\n")
    for name, cron, zone, endpoint in examples:
        method = "GET" if endpoint == "/health" else "POST"
        s = manager.create(
            name=name, cron=cron, timezone=zone, endpoint=endpoint, method=method,
            payload={"message": f"run {name}"} if method == "POST" else None, if_exists="update",
        )
        upcoming = next_runs(s.cron_expr, s.timezone, datetime.now(UTC), count=3)
        print(f"{s.name:<18} {s.cron_expr:<14} {s.timezone:<17} {describe(s.cron_expr)}")
        for when in upcoming:
            print(f"{'':<18} next: {when.isoformat()}  ({when.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    print(f"\n{manager.list_page().total_count} schedules stored; run `make test` for the full suite.")
    return 0


def load_app(spec: str) -> object:
    """The ASGI app named by "module:attribute" (an AgentOS is asked for its app)."""
    from kern_tasks.app_ref import load_ref

    try:
        target = load_ref(spec)
    except LookupError as exc:
        raise SystemExit(str(exc)) from None
    return target.get_app() if hasattr(target, "get_app") else target


def _serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    if not settings.app:
        raise SystemExit('set KERN_APP to your AgentOS, e.g. KERN_APP="myproject.os:agent_os"')
    from kern_tasks.logs import uvicorn_log_config

    log_config = uvicorn_log_config(settings)  # None: uvicorn's own text lines
    uvicorn.run(load_app(settings.app), host=host, port=port,  # type: ignore[arg-type]
                **({"log_config": log_config} if log_config else {}))
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from kern_tasks.demo import run

    return run(settings)


def add_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="web app, beat and worker in one process, with a demo agent")
    run.set_defaults(handler=_run)
    serve = commands.add_parser("serve", help='serve KERN_APP ("module:attribute") with uvicorn')
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7777)
    serve.set_defaults(handler=lambda args, settings: _serve(settings, args.host, args.port))
    demo = commands.add_parser("demo", help="a short tour of the store on the embedded default")
    demo.set_defaults(handler=lambda args, settings: _demo(settings))
