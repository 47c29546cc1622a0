"""The `kern-tasks` command as a person or a script runs it: subprocesses (`python -m
kern_tasks ...`) on a real Postgres schema, their output parsed (`--json`) and their exit
codes read: 0 done, 1 not found, 2 bad input with the field named on stderr.

One schema for the module (each test uses schedules of its own names); `kern-tasks db
upgrade` migrates it, as an operator would before anything else.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import insert, select

from kern_tasks.db import Database, schedule_runs
from kern_tasks.scheduler.claims import queued_attempt
from tests.conftest import EMPTY_SETTINGS, POSTGRES_URL, drop_schema, fresh_schema_name
from tests.processes import PYTHON, ROOT, clean_environ

# A guard, not a timing check: ~40 subprocesses, ~1 s each on an idle machine, several on a busy one.
pytestmark = pytest.mark.timeout(400)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    env: dict[str, str]
    schema: str

    def __call__(self, *args: str) -> Result:
        done = subprocess.run([PYTHON, "-m", "kern_tasks", *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        return Result(done.returncode, done.stdout, done.stderr)

    def migrated(self) -> None:
        """The schema at head (test_db_current_then_upgrade does it through the CLI; this
        lets any test run alone)."""
        db = Database(POSTGRES_URL, schema=self.schema, settings=EMPTY_SETTINGS)
        db.upgrade()
        db.dispose()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    schema = fresh_schema_name()
    folder: Path = tmp_path_factory.mktemp("cli")
    env = {**clean_environ(), "KERN_DATABASE_URL": POSTGRES_URL, "KERN_DB_SCHEMA": schema,
           "KERN_DATA_DIR": str(folder / "kern"), "KERN_AUTO_UPGRADE": "false", "COLUMNS": "200"}
    try:
        yield Cli(env, schema)
    finally:
        drop_schema(schema)


def test_db_current_then_upgrade(cli: Cli) -> None:
    before = cli("db", "current", "--json")
    assert before.code == 0, before.err
    assert before.json()["current"] is None and before.json()["at_head"] is False
    upgraded = cli("db", "upgrade")
    assert upgraded.code == 0 and "up to date" in upgraded.out, upgraded.err
    after = cli("db", "current", "--json").json()
    assert after["at_head"] and after["current"] == after["head"]


def test_cron_marks_both_2026_new_york_dst_changes(cli: Cli) -> None:
    spring = cli("cron", "0 9 * * *", "--tz", "America/New_York", "--from", "2026-03-07", "--next", "3", "--json")
    assert spring.code == 0, spring.err
    times = spring.json()["next"]
    assert spring.json()["description"] == "At 09:00"
    assert [t["at"] for t in times] == ["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00",
                                        "2026-03-09T09:00:00-04:00"]
    assert [t["dst_change"] for t in times] == [None, "-05:00 -> -04:00", None]
    autumn = cli("cron", "0 9 * * *", "--tz", "America/New_York", "--from", "2026-10-31", "--next", "2")
    assert autumn.code == 0, autumn.err
    assert "2026-11-01 Sun 09:00:00 EST" in autumn.out and "DST: -04:00 -> -05:00" in autumn.out
    # 02:30 does not exist on 2026-03-08 in New York: it fires once, at 03:00 EDT.
    gap = cli("cron", "30 2 * * *", "--tz", "America/New_York", "--from", "2026-03-08", "--next", "1", "--json")
    assert gap.json()["next"][0]["at"] == "2026-03-08T03:00:00-04:00"
    bad = cli("cron", "0 25 * * *")
    assert bad.code == 2 and "cron" in bad.err and bad.out == ""
    zone = cli("cron", "0 9 * * *", "--tz", "Mars/Olympus", "--json")
    assert zone.code == 2 and json.loads(zone.err)["field"] == "timezone"


def test_schedules_every_subcommand(cli: Cli) -> None:
    cli.migrated()
    made = cli("schedules", "create", "cli-report", "--cron", "*/10 * * * *", "--endpoint", "/agents/a/runs",
               "--tz", "America/New_York", "--payload", '{"message": "report"}', "--queue", "reports",
               "--priority", "3", "--json")
    assert made.code == 0, made.err
    created = made.json()
    assert (created["name"], created["cron_expr"], created["timezone"], created["payload"], created["queue"],
            created["priority"], created["enabled"]) == ("cli-report", "*/10 * * * *", "America/New_York",
                                                         {"message": "report"}, "reports", 3, True)
    taken = cli("schedules", "create", "cli-report", "--cron", "0 9 * * *", "--endpoint", "/x")
    assert taken.code == 2 and "already exists" in taken.err
    kept = cli("schedules", "create", "cli-report", "--cron", "0 9 * * *", "--endpoint", "/x",
               "--if-exists", "skip", "--json")
    assert kept.code == 0 and kept.json()["cron_expr"] == "*/10 * * * *"
    for args, field in [(("--cron", "* * *", "--endpoint", "/x"), "cron"),
                        (("--cron", "0 9 * * *", "--endpoint", "http://elsewhere/x"), "endpoint"),
                        (("--cron", "0 9 * * *", "--endpoint", "/x", "--payload", "{not json"), "payload")]:
        refused = cli("schedules", "create", "cli-bad", *args, "--json")
        assert refused.code == 2 and json.loads(refused.err)["field"] == field, (args, refused.err)

    listed = cli("schedules", "list", "--json").json()
    assert [s["name"] for s in listed["data"]] == ["cli-report"] and listed["meta"]["total_count"] == 1
    table = cli("schedules", "list")
    assert table.code == 0 and "cli-report" in table.out and "reports" in table.out
    by_id = cli("schedules", "show", created["id"], "--json").json()
    assert by_id == cli("schedules", "show", "cli-report", "--json").json()
    assert cli("schedules", "show", "no-such").code == 1

    changed = cli("schedules", "update", "cli-report", "--priority", "12", "--json")
    assert changed.code == 2 and json.loads(changed.err)["field"] == "priority"
    updated = cli("schedules", "update", "cli-report", "--cron", "*/10 * * * *", "--tz", "UTC", "--json")
    assert updated.code == 0 and updated.json()["timezone"] == "UTC", updated.err

    disabled = cli("schedules", "disable", "cli-report", "--json").json()
    assert disabled["enabled"] is False
    assert cli("schedules", "trigger", "cli-report").code == 2  # a disabled schedule does not run
    assert cli("schedules", "enable", created["id"], "--json").json()["enabled"] is True
    run = cli("schedules", "trigger", "cli-report", "--json").json()
    assert (run["status"], run["manual"]) == ("queued", True)

    end = int(datetime.now(UTC).timestamp()) // 600 * 600
    start, stop = datetime.fromtimestamp(end - 7200, UTC).isoformat(), datetime.fromtimestamp(end, UTC).isoformat()
    first = cli("schedules", "backfill", "cli-report", "--from", start, "--to", stop, "--json")
    assert first.code == 0, first.err
    assert (first.json()["slots"], first.json()["added"]) == (12, 12)
    again = cli("schedules", "backfill", "cli-report", "--from", start, "--to", stop)
    assert again.code == 0 and "0 queued, 12 had a run already" in again.out
    future = cli("schedules", "backfill", "cli-report", "--from", start, "--to", "2099-01-01T00:00Z", "--json")
    assert future.code == 2 and json.loads(future.err)["field"] == "end"

    runs = cli("schedules", "runs", "cli-report", "--limit", "50", "--json").json()
    assert runs["meta"]["total_count"] == 13
    assert sum(r["backfill"] for r in runs["data"]) == 12 and sum(r["manual"] for r in runs["data"]) == 1

    # The kinds beside cron: a one-off in the user's zone; two kinds at once is bad input.
    once = cli("schedules", "create", "cli-remind", "--run-at", "2027-03-14T09:00", "--tz", "America/New_York",
               "--endpoint", "/agents/a/runs", "--json")
    assert once.code == 0 and once.json()["run_at"] == 1805029200, once.err  # 13:00 UTC (EDT)
    both = cli("schedules", "create", "cli-both", "--interval", "90", "--cron", "* * * * *", "--endpoint", "/x",
               "--json")
    assert both.code == 2 and json.loads(both.err)["field"] == "interval_seconds"
    assert "once at 2027-03-14 09:00:00 EDT" in cli("schedules", "list").out

    deleted = cli("schedules", "delete", "cli-report", "--json")
    assert deleted.code == 0 and deleted.json()["deleted"] is True
    assert cli("schedules", "delete", "cli-report").code == 1


def test_runs_prune_removes_only_finished_old_runs(cli: Cli) -> None:
    cli.migrated()
    made = cli("schedules", "create", "cli-prune", "--cron", "0 0 1 1 *", "--endpoint", "/x", "--json")
    assert made.code == 0, made.err
    schedule_id = made.json()["id"]
    now = int(datetime.now(UTC).timestamp())
    old = now - 40 * 86400
    rows = []
    for slot, status in enumerate(["success", "failed", "timeout", "queued", "running", "success"]):
        row = queued_attempt(schedule_id=schedule_id, attempt=1, scheduled_for=old + slot, manual=False,
                             user_id=None, now=old)
        recent = slot == 5
        rows.append({**row, "status": status, "completed_at": None if status in ("queued", "running")
                     else (now if recent else old)})
    db = Database(POSTGRES_URL, schema=cli.schema, settings=EMPTY_SETTINGS)
    try:
        with db.begin() as conn:
            conn.execute(insert(schedule_runs), rows)
        assert cli("runs", "prune", "--older-than", "thirty days").code == 2
        pruned = cli("runs", "prune", "--older-than", "30d", "--batch", "2", "--json")
        assert pruned.code == 0, pruned.err
        assert pruned.json()["deleted"] == 3
        with db.connect() as conn:
            left = sorted(conn.execute(select(schedule_runs.c.status)
                                       .where(schedule_runs.c.schedule_id == schedule_id)).scalars())
        assert left == ["queued", "running", "success"]
        assert "deleted 0 finished run(s)" in cli("runs", "prune", "--older-than", "30d").out
    finally:
        db.dispose()
