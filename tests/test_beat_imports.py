"""Beat's import diet (issue 10: beat's RSS at 1M schedules): what the beat process types
import, and what one real round of LeaseScheduler against Postgres and Redis brings with it,
leaves out the web stack, the validation models, the workflow definitions and the clients
beat never uses. A fresh interpreter per check (this test process has imported everything).

The heavy modules and why beat must not hold them: pydantic (scheduler/spec.py's models,
workflow definitions), fastapi/starlette/jinja2 (the web app, the dashboard), alembic
(migrations: beat only checks the revision), the workflow definition modules (workflow/tasks.py:
beat's sweep lives in workflow/sweep.py), httpx and rich (the alert webhook posts from a
thread of its own, and only once something is sent), prometheus_client (KERN_METRICS_PORT
unset), croniter's neighbours cron_descriptor, the CEL engine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sqlalchemy import text

from kern_tasks.db import Database
from kern_tasks.scheduler import ScheduleManager
from tests.conftest import POSTGRES_URL, broker_url_for, flush_broker
from tests.processes import PYTHON, ROOT, clean_environ

REDIS_DB = 15

HEAVY = (
    "pydantic", "fastapi", "starlette", "jinja2", "alembic", "httpx", "rich", "prometheus_client",
    "cron_descriptor", "celpy", "lark", "openai", "uvicorn", "sqlalchemy.orm",
    "kern_tasks.workflow.workflow", "kern_tasks.workflow.tasks", "kern_tasks.workflow.runner",
    "kern_tasks.scheduler.spec", "kern_tasks.scheduler.manager", "kern_tasks.os", "kern_tasks.dashboard",
)

# Imports what `python -m beat` (the Procfile's) and `celery -A beat beat`
# import, builds the scheduler as Celery's beat service does and, given a number of rounds, runs that
# many rounds at least, until one claimed something; prints which HEAVY modules (or their submodules) are loaded, and what it fired.
CHILD = """
import json, sys, time
import beat, beat.__main__, kern_tasks.celery, celery.apps.beat
from celery.beat import Service
service = Service(beat.app, max_interval=1, scheduler_cls=beat.app.conf.beat_scheduler)  # as celery.apps.beat.Beat
scheduler = service.get_scheduler()
rounds, claimed, deadline = int(sys.argv[1]), 0, time.monotonic() + 60
while int(sys.argv[1]) and (claimed == 0 or rounds > 0) and time.monotonic() < deadline:
    scheduler.tick()  # until the due schedule was claimed (its second may not have come yet)
    claimed, rounds = claimed + scheduler.claimed, rounds - 1
    time.sleep(0.05)
if int(sys.argv[1]):
    scheduler.close()
heavy = sys.argv[2].split(",")
loaded = sorted(m for m in sys.modules for h in heavy if m == h or m.startswith(h + "."))
print(json.dumps({"loaded": loaded, "claimed": claimed, "scheduler": type(scheduler).__name__}))
"""


def run_beat(ticks: int, env: dict[str, str]) -> dict[str, object]:
    found = subprocess.run(
        [PYTHON, "-c", CHILD, str(ticks), ",".join(HEAVY)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert found.returncode == 0, found.stderr[-3000:]
    return json.loads(found.stdout.strip().splitlines()[-1])


def test_beat_imports_none_of_the_heavy_modules_when_set_up(tmp_path: Path) -> None:
    env = clean_environ() | {"KERN_DATA_DIR": str(tmp_path), "KERN_BROKER_URL": "redis://127.0.0.1:1/0"}
    found = run_beat(0, env)  # no round: the scheduler's construction does no I/O
    assert found["scheduler"] == "LeaseScheduler"
    assert found["loaded"] == [], f"beat imports modules it does not need: {found['loaded']}"


def test_a_round_against_postgres_and_redis_imports_none_of_them(pg_db: Database, pg_schema: str) -> None:
    ScheduleManager(pg_db).create(name="due", cron="* * * * * *", endpoint="/due")
    flush_broker(REDIS_DB)
    env = clean_environ() | {
        "KERN_DATABASE_URL": POSTGRES_URL, "KERN_DB_SCHEMA": pg_schema, "KERN_BROKER_URL": broker_url_for(REDIS_DB),
    }
    found = run_beat(2, env)  # claim, materialise, publish, sweep, heartbeat, alerts
    assert found["claimed"] == 1, found
    assert found["loaded"] == [], f"a beat round imports modules it does not need: {found['loaded']}"
    with pg_db.connect() as conn:
        runs = conn.execute(text(f'SELECT count(*) FROM "{pg_schema}".agno_schedule_runs')).scalar_one()
        beats = conn.execute(text(f'SELECT count(*) FROM "{pg_schema}".kern_beats')).scalar_one()
    assert runs >= 1, "the round fired nothing: the check above saw no real tick"
    assert beats == 0  # the clean stop removed the heartbeat it recorded
