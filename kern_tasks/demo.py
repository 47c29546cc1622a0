"""The main command: everything in one process on the embedded default.

    make run            (python -m kern_tasks run)

SQLite in KERN_DATA_DIR (.kern/), the embedded broker, and the web app, beat and a
Celery worker in this one process; a demo agent and a schedule that fires it every
few seconds. With KERN_DATABASE_URL and KERN_BROKER_URL set, the same app runs
distributed (workers and more beat replicas elsewhere).
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import uvicorn

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import SchedulerTools

DEMO_SCHEDULE = "demo_heartbeat"
DEMO_CRON = "*/5 * * * * *"  # every five seconds


def build_demo(settings: Settings) -> AgentOS:
    """The demo AgentOS: one agent, one schedule created at start-up (idempotently)."""
    db = Database(settings=settings)
    agent = Agent(
        model="offline",
        name="Demo",
        id="demo",
        instructions="You are the kern_tasks demo agent.",
        tools=[SchedulerTools(db=db, default_endpoint="/agents/demo/runs", default_timezone="UTC")],
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        manager = ScheduleManager(db=db)
        await manager.acreate(
            name=DEMO_SCHEDULE,
            cron=DEMO_CRON,
            endpoint="/agents/demo/runs",
            payload={"message": "Give me the morning briefing."},
            timeout_seconds=60,
            if_exists="update",
        )
        yield

    return AgentOS(agents=[agent], db=db, scheduler=True, scheduler_poll_interval=5, lifespan=lifespan,
                   settings=settings)


class _FireLines(logging.Handler):
    """Prints each fire as it happens, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{self.format(record)}", flush=True)


def _show_fires() -> None:
    handler = _FireLines()
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    fire_log = logging.getLogger("kern_tasks.fire")
    fire_log.addHandler(handler)
    fire_log.setLevel(logging.INFO)
    fire_log.propagate = False


def run(settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    parts = urlsplit(settings.base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 7777
    agent_os = build_demo(settings)
    _show_fires()
    print(f"kern_tasks on {agent_os.db!r}")
    print(f"  API    {settings.base_url}        (agents: POST /agents/demo/runs, schedules: /schedules)")
    print(f"  docs   {settings.base_url}/docs")
    print(f"  demo   schedule {DEMO_SCHEDULE!r} fires /agents/demo/runs every 5 s; Ctrl-C stops", flush=True)
    config = uvicorn.Config(agent_os.get_app(), host=host, port=port, log_level="warning", lifespan="on")
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
