"""The main command: everything in one process on the embedded default.

    make run            (python -m kern_tasks run)

SQLite in KERN_DATA_DIR (.kern/), the embedded broker, and the web app, beat and a
Celery worker in this one process; a demo agent fired every few seconds and a demo
workflow (the seed's content pipeline: a Parallel of two research angles, an outline,
then a draft/review Loop with a CEL end condition) fired at start-up and every 30 s,
each fire printed as it ends (a workflow's with its steps). With KERN_DATABASE_URL and
KERN_BROKER_URL set, the same app runs distributed: workers elsewhere run the workflow
with KERN_APP=kern_tasks.demo:pipeline, and fires are printed where they run.
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import uvicorn

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.os import AgentOS
from kern_tasks.runs.store import RunStore
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings
from kern_tasks.tools.scheduler import SchedulerTools
from kern_tasks.workflow import Loop, Parallel, Step, StepInput, Workflow

DEMO_SCHEDULE = "demo_heartbeat"
DEMO_CRON = "*/5 * * * * *"  # every five seconds
DEMO_WORKFLOW_SCHEDULE = "demo_content_pipeline"
DEMO_WORKFLOW_CRON = "*/30 * * * * *"  # every 30 s (and once at start-up)
DEMO_WORKFLOW_ENDPOINT = "/workflows/content-pipeline/runs"
CONTENT_SHOWN = 72  # characters of a step's content printed under a fire


def editor(step_input: StepInput) -> str:
    """The review step: asks for one revision, then approves the draft written after its
    notes (the Loop forwards each iteration's output, so the second draft answers the
    first review). Deterministic, so the Loop ends after exactly two iterations."""
    draft = str(step_input.get_step_content("draft") or "")
    if "REVISE" in draft:
        return "APPROVED: the draft answers the review."
    return "REVISE: open with the main claim, then the evidence."


def content_pipeline() -> Workflow:
    """The seed's pipeline with offline agents (no network): research from two angles at
    once, an outline, then draft and review until the editor approves (at most 3 rounds)."""

    def offline(name: str) -> Agent:
        return Agent(model="offline", name=name, id=f"demo-{name.lower()}")

    return Workflow(
        name="content_pipeline",
        description="Research (two angles in parallel), outline, then draft/review until approved.",
        steps=[
            Parallel(Step(name="market", agent=offline("Market")), Step(name="technology", agent=offline("Technology")),
                     name="research"),
            Step(name="outline", agent=offline("Outliner")),
            Loop(name="draft_review", steps=[Step(name="draft", agent=offline("Writer")),
                                             Step(name="review", executor=editor)],
                 end_condition='last_step_content.contains("APPROVED")', max_iterations=3,
                 forward_iteration_output=True),
        ],
    )


# What workers in other processes load (KERN_APP=kern_tasks.demo:pipeline); the demo serves it.
pipeline = content_pipeline()


def build_demo(settings: Settings) -> AgentOS:
    """The demo AgentOS: an agent and a workflow, and a schedule for each, created at
    start-up idempotently (if_exists="update": a restart changes nothing, a schedule
    someone disabled stays disabled)."""
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
        manager: ScheduleManager = agent_os.manager  # the AgentOS's: it checks the routes are served
        await manager.acreate(
            name=DEMO_SCHEDULE,
            cron=DEMO_CRON,
            endpoint="/agents/demo/runs",
            payload={"message": "Give me the morning briefing."},
            timeout_seconds=60,
            if_exists="update",
        )
        scheduled = await manager.acreate(
            name=DEMO_WORKFLOW_SCHEDULE,
            cron=DEMO_WORKFLOW_CRON,
            endpoint=DEMO_WORKFLOW_ENDPOINT,
            payload={"message": "AI agents in 2026"},
            timeout_seconds=120,
            if_exists="update",
        )
        if scheduled.enabled:
            await manager.atrigger_run(scheduled.id)  # show one now rather than within 30 s
        yield

    agent_os = AgentOS(agents=[agent], workflows=[pipeline], db=db, scheduler=True,
                       scheduler_poll_interval=5, lifespan=lifespan, settings=settings)
    return agent_os


# --- printing fires ---------------------------------------------------------------------------


def step_lines(steps: list[dict[str, Any]], depth: int = 0) -> Iterator[str]:
    """One line per step of a workflow run's step_results, nested steps indented."""
    for step in steps:
        mark = "ok" if step.get("success", True) else "FAILED"
        nested = step.get("steps") or []
        if step.get("step_type") == "Parallel" and step.get("success", True):
            text = f"{len(nested)} branches"  # its content repeats theirs
        else:
            text = " ".join(str(step.get("error") or step.get("content") or "").split())
        if len(text) > CONTENT_SHOWN:
            text = text[: CONTENT_SHOWN - 3] + "..."
        label = f"{'  ' * depth}{step.get('step_name')} ({step.get('step_type')})"
        yield f"{label:<32} {mark:<6} {text}"
        yield from step_lines(nested, depth + 1)


def workflow_lines(store: RunStore, run_id: str) -> list[str]:
    """The workflow run `run_id` as printed under its fire: status, then its steps."""
    stored = store.get(run_id)
    if stored is None or stored.run_type != "workflow":
        return []
    data = stored.run_data
    head = f"workflow {stored.component_id} run {run_id}: {stored.status}"
    if stored.status == "ERROR" and data.get("content"):
        head += f" ({' '.join(str(data['content']).split())[:CONTENT_SHOWN]})"
    return [head, *step_lines(data.get("step_results") or [])]


class _FireLines(logging.Handler):
    """Prints each fire as it ends, one line each; under a workflow's fire, its steps."""

    def __init__(self, store: RunStore) -> None:
        super().__init__()
        self.store = store

    def emit(self, record: logging.LogRecord) -> None:
        lines = [self.format(record)]
        fire = getattr(record, "fire", None)
        if isinstance(fire, dict) and fire.get("run_id") and str(fire.get("endpoint")).startswith("/workflows/"):
            try:
                lines += [f"          {line}" for line in workflow_lines(self.store, fire["run_id"])]
            except Exception as exc:  # noqa: BLE001 - printing must never break a fire
                lines.append(f"          (workflow run not readable: {type(exc).__name__})")
        print("\n".join(lines), flush=True)


def _show_fires(db: Database) -> None:
    handler = _FireLines(RunStore(db))
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
    _show_fires(agent_os.db)
    print(f"kern_tasks on {agent_os.db!r}")
    print(f"  API    {settings.base_url}        (agents: POST /agents/demo/runs, schedules: /schedules)")
    print(f"  docs   {settings.base_url}/docs")
    print(f"  demo   schedule {DEMO_SCHEDULE!r} fires /agents/demo/runs every 5 s")
    print(f"  demo   schedule {DEMO_WORKFLOW_SCHEDULE!r} fires {DEMO_WORKFLOW_ENDPOINT} now and every 30 s"
          " (Parallel research, outline, draft/review Loop); Ctrl-C stops", flush=True)
    config = uvicorn.Config(agent_os.get_app(), host=host, port=port, log_level="warning", lifespan="on")
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
