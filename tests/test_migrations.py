"""Migrations: what `Database.upgrade()` creates on an empty database, and what it adds to
one agno created.

Empty databases are tested on real Postgres (a fresh schema) and SQLite; the database
agno created is made by agno 3.1's own PostgresDb in a fresh Postgres schema.
"""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text

from kern_tasks.db import Database
from kern_tasks.db.migrate import VERSION_TABLE, alembic_config
from kern_tasks.errors import NotMigrated
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.settings import Settings

from .conftest import EMPTY_SETTINGS, POSTGRES_URL

# agno 3.1.10's columns, as its PostgresDb creates them: name -> (Postgres type, nullable).
AGNO_SCHEDULE_COLUMNS = {
    "id": ("VARCHAR", False),
    "name": ("VARCHAR", False),
    "description": ("TEXT", True),
    "method": ("VARCHAR", False),
    "endpoint": ("VARCHAR", False),
    "payload": ("JSONB", True),
    "cron_expr": ("VARCHAR", False),
    "timezone": ("VARCHAR", False),
    "timeout_seconds": ("BIGINT", False),
    "max_retries": ("BIGINT", False),
    "retry_delay_seconds": ("BIGINT", False),
    "enabled": ("BOOLEAN", False),
    "next_run_at": ("BIGINT", True),
    "locked_by": ("VARCHAR", True),
    "locked_at": ("BIGINT", True),
    "user_id": ("VARCHAR", True),
    "managed_by": ("VARCHAR", True),
    "target_type": ("VARCHAR", True),
    "target_id": ("VARCHAR", True),
    "created_by_run_id": ("VARCHAR", True),
    "created_by_session_id": ("VARCHAR", True),
    "updated_by_run_id": ("VARCHAR", True),
    "updated_by_session_id": ("VARCHAR", True),
    "disabled_reason": ("VARCHAR", True),
    "created_at": ("BIGINT", False),
    "updated_at": ("BIGINT", True),
}
AGNO_RUN_COLUMNS = {
    "id": ("VARCHAR", False),
    "schedule_id": ("VARCHAR", False),
    "attempt": ("BIGINT", False),
    "triggered_at": ("BIGINT", True),
    "completed_at": ("BIGINT", True),
    "status": ("VARCHAR", False),
    "status_code": ("BIGINT", True),
    "run_id": ("VARCHAR", True),
    "session_id": ("VARCHAR", True),
    "error": ("TEXT", True),
    "input": ("JSONB", True),
    "output": ("JSONB", True),
    "requirements": ("JSONB", True),
    "user_id": ("VARCHAR", True),
    "created_at": ("BIGINT", False),
}
# Ours: name -> the value a row written without it gets (None: nullable, no default).
KERN_SCHEDULE_COLUMNS = {
    "misfire_policy": "once",
    "catchup_window_seconds": 3600,
    "overlap_policy": "forbid",
    "jitter_seconds": 0,
    "skipped_slots": 0,
}
KERN_RUN_COLUMNS = {"scheduled_for": None, "manual": False, "not_before": None}
# Worker liveness (0004): the worker that took an attempt, and whether it ended lost.
KERN_LIVENESS_RUN_COLUMNS = {"worker_id": None, "lost": False}

# name -> (unique, columns, fragments of the partial index's WHERE as the database reports it)
AGNO_SCHEDULE_INDEXES = {
    "agno_schedules_uq_unowned_name": (True, ["name"], ["user_id IS NULL"]),
    "agno_schedules_uq_user_name": (True, ["user_id", "name"], ["user_id IS NOT NULL"]),
    "idx_agno_schedules_enabled_next_run_at": (False, ["enabled", "next_run_at"], []),
}
KERN_RUN_INDEXES = {
    "uq_kern_schedule_runs_slot_attempt": (True, ["schedule_id", "scheduled_for", "manual", "attempt"], []),
    "ix_kern_schedule_runs_open": (False, ["status", "not_before"], ["status", "'queued'", "'running'"]),
}


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config(None, None)).get_current_head()  # type: ignore[arg-type]


def versions(engine: Engine, schema: str | None) -> list[str]:
    table = f'"{schema}".{VERSION_TABLE}' if schema else VERSION_TABLE
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))]


def columns(engine: Engine, table: str, schema: str | None) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in inspect(engine).get_columns(table, schema=schema)}


def indexes(engine: Engine, table: str, schema: str | None) -> dict[str, dict[str, Any]]:
    return {ix["name"]: ix for ix in inspect(engine).get_indexes(table, schema=schema)}


def where_of(index: dict[str, Any]) -> str | None:
    options = index.get("dialect_options", {})
    where = options.get("postgresql_where") or options.get("sqlite_where")
    return None if where is None else str(where)


def assert_indexes(found: dict[str, dict[str, Any]], expected: dict[str, tuple]) -> None:
    for name, (unique, cols, where) in expected.items():
        assert name in found, f"index {name} missing; have {sorted(found)}"
        assert bool(found[name]["unique"]) is unique, name
        assert found[name]["column_names"] == cols, name
        reported = where_of(found[name])
        if reported is None:
            assert not where, f"{name} should be a partial index ({where})"
            continue
        assert where, f"{name} is partial ({reported}) but should not be"
        for fragment in where:
            assert fragment in reported, (name, reported)


def schema_picture(engine: Engine, schema: str | None) -> dict[str, Any]:
    """Everything upgrade() may touch, for before/after comparisons."""
    insp = inspect(engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in insp.get_columns(table, schema=schema)],
            sorted((ix["name"], ix["unique"], tuple(ix["column_names"])) for ix in insp.get_indexes(table, schema=schema)),
            sorted(str(fk) for fk in insp.get_foreign_keys(table, schema=schema)),
        )
        for table in sorted(insp.get_table_names(schema=schema))
    }


# --- an empty database, both kinds ---------------------------------------------------


def test_upgrade_creates_agno_tables_our_columns_indexes_and_version(db_url_schema) -> None:
    url, schema = db_url_schema
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    try:
        db.upgrade()
        engine = db.engine
        dialect = engine.dialect.name
        tables = set(inspect(engine).get_table_names(schema=schema))
        assert {"agno_schedules", "agno_schedule_runs", "kern_workers", VERSION_TABLE} <= tables
        assert "alembic_version" not in tables  # the application's own Alembic history stays its own

        for table, agno_columns, kern_columns in (
            ("agno_schedules", AGNO_SCHEDULE_COLUMNS, KERN_SCHEDULE_COLUMNS),
            ("agno_schedule_runs", AGNO_RUN_COLUMNS, {**KERN_RUN_COLUMNS, **KERN_LIVENESS_RUN_COLUMNS}),
        ):
            found = columns(engine, table, schema)
            missing = (set(agno_columns) | set(kern_columns)) - set(found)
            assert not missing, f"{table} lacks {sorted(missing)}"
            for name, (pg_type, nullable) in agno_columns.items():
                assert found[name]["nullable"] is nullable, (table, name)
                if dialect == "postgresql":
                    assert str(found[name]["type"]) == pg_type, (table, name, found[name]["type"])
            for name in kern_columns:  # agno's inserts leave ours out: nullable or defaulted
                assert found[name]["nullable"] or found[name]["default"] is not None, (table, name)
            assert found["id"]["name"] in inspect(engine).get_pk_constraint(table, schema=schema)["constrained_columns"]

        assert_indexes(indexes(engine, "agno_schedules", schema), AGNO_SCHEDULE_INDEXES)
        assert_indexes(indexes(engine, "agno_schedule_runs", schema), KERN_RUN_INDEXES)

        (fk,) = inspect(engine).get_foreign_keys("agno_schedule_runs", schema=schema)
        assert fk["referred_table"] == "agno_schedules" and fk["constrained_columns"] == ["schedule_id"]
        assert fk["options"].get("ondelete", "").upper() == "CASCADE"

        assert versions(engine, schema) == [head_revision()]
    finally:
        db.dispose()


def test_upgraded_tables_take_rows_with_our_defaults(db_url_schema) -> None:
    """A row inserted with agno's columns only gets our defaults (what agno's inserts do)."""
    url, schema = db_url_schema
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    try:
        db.upgrade()
        prefix = f'"{schema}".' if schema else ""
        with db.engine.begin() as conn:
            conn.execute(text(
                f"INSERT INTO {prefix}agno_schedules (id, name, method, endpoint, cron_expr, timezone, "
                "timeout_seconds, max_retries, retry_delay_seconds, enabled, created_at) "
                "VALUES ('s1', 'plain', 'POST', '/x', '* * * * *', 'UTC', 60, 0, 60, true, 1000)"
            ))
            conn.execute(text(
                f"INSERT INTO {prefix}agno_schedule_runs (id, schedule_id, attempt, status, created_at) "
                "VALUES ('r1', 's1', 1, 'running', 1000)"
            ))
        s = ScheduleManager(db).get("s1")
        assert {k: getattr(s, k) for k in KERN_SCHEDULE_COLUMNS} == KERN_SCHEDULE_COLUMNS
        (run,) = ScheduleManager(db).runs("s1").data
        assert {k: getattr(run, k) for k in KERN_RUN_COLUMNS} == KERN_RUN_COLUMNS
    finally:
        db.dispose()


def test_upgrade_twice_is_a_no_op(db_url_schema) -> None:
    url, schema = db_url_schema
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    try:
        db.upgrade()
        manager = ScheduleManager(db)
        s = manager.create(name="keep", cron="0 9 * * *", endpoint="/agents/a/runs", payload={"k": 1})
        run = manager.trigger_run(s.id)
        before = schema_picture(db.engine, schema)
        db.upgrade()
        Database(url, schema=schema, settings=EMPTY_SETTINGS).upgrade()  # another process, same database
        assert schema_picture(db.engine, schema) == before
        assert versions(db.engine, schema) == [head_revision()]
        assert manager.get(s.id) == s
        assert manager.runs(s.id).data == [manager.get_run(s.id, run.id)]
    finally:
        db.dispose()


def test_a_configured_database_is_migrated_on_first_use_not_on_construction(sqlite_url: str) -> None:
    """Every database upgrades itself on first use unless auto_upgrade is off (it was only
    the embedded default before issue 7); reaching the raw engine migrates nothing."""
    db = Database(sqlite_url, settings=EMPTY_SETTINGS)
    try:
        assert db.auto_upgrade is True
        assert inspect(db.engine).get_table_names() == []
        assert ScheduleManager(db).get_runs("missing") == []
        assert {"agno_schedules", "agno_schedule_runs", VERSION_TABLE} <= set(inspect(db.engine).get_table_names())
        assert versions(db.engine, None) == [head_revision()]
    finally:
        db.dispose()


def test_with_auto_upgrade_off_first_use_raises_not_migrated_and_writes_nothing(db_url_schema) -> None:
    url, schema = db_url_schema
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS, auto_upgrade=False)
    try:
        for _ in range(2):  # not remembered as ready: asked again, refused again
            with pytest.raises(NotMigrated, match="kern-tasks db upgrade"):
                ScheduleManager(db).list()
        assert inspect(db.engine).get_table_names(schema=schema) == []
        db.upgrade()  # the command's way in works whatever auto_upgrade says
        assert ScheduleManager(db).list() == []
    finally:
        db.dispose()


def test_behind_is_migrated_on_first_use_and_at_head_costs_one_query_once(db_url_schema) -> None:
    url, schema = db_url_schema
    first = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    try:
        first.upgrade("0001")
        assert versions(first.engine, schema) == ["0001"]
    finally:
        first.dispose()
    behind = Database(url, schema=schema, settings=EMPTY_SETTINGS, auto_upgrade=False)
    try:
        with pytest.raises(NotMigrated, match="at revision 0001"):
            behind.ensure_ready()
    finally:
        behind.dispose()
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        ScheduleManager(db).list()
        assert versions(db.engine, schema) == [head_revision()]
        again = Database(url, schema=schema, settings=EMPTY_SETTINGS, auto_upgrade=False)
        event.listen(again.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        statements.clear()
        manager = ScheduleManager(again)
        for _ in range(5):
            manager.list()
        assert sum(VERSION_TABLE in sql for sql in statements) == 1  # one version query, not one per call
        again.dispose()
    finally:
        db.dispose()


def test_embedded_default_upgrades_itself_on_first_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    db = Database(settings=settings)
    try:
        assert db.dialect == "sqlite" and db.auto_upgrade is True
        assert not (tmp_path / "data" / "kern.db").exists()  # constructing does no I/O
        s = ScheduleManager(db).create(name="first", cron="@hourly", endpoint="/health", method="GET")
        assert ScheduleManager(db).get(s.id).name == "first"
        assert (tmp_path / "data" / "kern.db").is_file()
        tables = set(inspect(db.engine).get_table_names())
        assert {"agno_schedules", "agno_schedule_runs", VERSION_TABLE} <= tables
        assert versions(db.engine, None) == [head_revision()]
    finally:
        db.dispose()
    # A second process on the same file finds it migrated and its rows there.
    again = Database(settings=settings)
    try:
        assert [x.name for x in ScheduleManager(again).list()] == ["first"]
        assert versions(again.engine, None) == [head_revision()]
    finally:
        again.dispose()


def test_a_database_a_newer_release_migrated_is_used_as_it_is(db_url_schema, caplog) -> None:
    """A revision this kern_tasks does not know is a newer release's (a rolling deploy):
    revisions only add, so the older code carries on, with a warning, and migrates nothing."""
    url, schema = db_url_schema
    db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
    db.upgrade()
    table = f'"{schema}".{VERSION_TABLE}' if schema else VERSION_TABLE
    with db.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET version_num = 'zz_newer'"))
    db.dispose()
    newer = Database(url, schema=schema, settings=EMPTY_SETTINGS, auto_upgrade=False)
    try:
        with caplog.at_level("WARNING", logger="kern_tasks.db"):
            assert ScheduleManager(newer).list() == []
        assert "newer than this kern_tasks knows" in caplog.text
        assert versions(newer.engine, schema) == ["zz_newer"]
    finally:
        newer.dispose()


def _upgrade_in_process(url: str, schema: str, barrier, results) -> None:
    try:
        db = Database(url, schema=schema, settings=EMPTY_SETTINGS)
        with db.engine.connect():  # connect (the raw engine: no check) before the barrier,
            pass  # so the upgrades really start together
        barrier.wait()
        db.upgrade()
        db.dispose()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(repr(exc))


def test_concurrent_upgrades_on_a_fresh_postgres_schema_all_succeed(pg_schema: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 5
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_in_process, args=(POSTGRES_URL, pg_schema, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * n
    engine = create_engine(POSTGRES_URL)
    try:
        assert versions(engine, pg_schema) == [head_revision()]
        assert set(AGNO_SCHEDULE_COLUMNS) | set(KERN_SCHEDULE_COLUMNS) <= set(columns(engine, "agno_schedules", pg_schema))
    finally:
        engine.dispose()


# --- a database agno created ------------------------------------------------------------


@pytest.fixture
def agno_db(pg_schema: str) -> Iterator[Any]:
    """agno's own PostgresDb on a fresh schema (its tables are made on first use)."""
    pytest.importorskip("agno")
    from agno.db.postgres import PostgresDb

    db = PostgresDb(db_url=POSTGRES_URL, db_schema=pg_schema)
    yield db
    db.db_engine.dispose()


def _agno_run(schedule_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "schedule_id": schedule_id,
        "attempt": 1,
        "triggered_at": 1_700_000_000,
        "completed_at": 1_700_000_005,
        "status": "success",
        "status_code": 200,
        "run_id": "run-1",
        "session_id": "sess-1",
        "input": {"message": "hi"},
        "output": {"content": "done"},
        "requirements": [{"kind": "none"}],
        "user_id": None,
        "created_at": 1_700_000_000,
        **extra,
    }


def test_upgrade_on_an_agno_database_only_adds_ours(agno_db: Any, pg_schema: str) -> None:
    from agno.db.postgres import PostgresDb
    from agno.scheduler import ScheduleManager as AgnoManager

    agno_mgr = AgnoManager(agno_db)
    made = agno_mgr.create(
        name="agno-made",
        cron="0 9 * * 1-5",
        endpoint="/agents/reporter/runs",
        payload={"message": "report", "nested": {"n": [1, 2]}},
        timezone="Europe/Berlin",
        description="made by agno",
        max_retries=2,
    )
    agno_db.create_schedule_run(_agno_run(made.id))  # agno makes its runs table on the first run

    engine = create_engine(POSTGRES_URL)
    try:
        agno_tables = set(inspect(engine).get_table_names(schema=pg_schema))
        assert {"agno_schedules", "agno_schedule_runs"} <= agno_tables
        before_columns = {t: columns(engine, t, pg_schema) for t in ("agno_schedules", "agno_schedule_runs")}
        before_indexes = {t: indexes(engine, t, pg_schema) for t in ("agno_schedules", "agno_schedule_runs")}
        # agno's tables are exactly what the data model says.
        for table, expected in (("agno_schedules", AGNO_SCHEDULE_COLUMNS), ("agno_schedule_runs", AGNO_RUN_COLUMNS)):
            assert {n: (str(c["type"]), c["nullable"]) for n, c in before_columns[table].items()} == expected
        with engine.connect() as conn:
            row_before = dict(conn.execute(text(f'SELECT * FROM "{pg_schema}".agno_schedules')).mappings().one())
            run_before = dict(conn.execute(text(f'SELECT * FROM "{pg_schema}".agno_schedule_runs')).mappings().one())

        ours = Database(POSTGRES_URL, schema=pg_schema, settings=EMPTY_SETTINGS)
        try:
            ours.upgrade()
            ours.upgrade()  # and again: still nothing to do

            after_tables = set(inspect(engine).get_table_names(schema=pg_schema))
            assert agno_tables | {VERSION_TABLE} <= after_tables
            assert "alembic_version" not in after_tables
            for table, kern_columns in (("agno_schedules", KERN_SCHEDULE_COLUMNS), ("agno_schedule_runs", KERN_RUN_COLUMNS)):
                after = columns(engine, table, pg_schema)
                # agno's columns are untouched: same names, types, nullability, defaults, order.
                assert list(after)[: len(before_columns[table])] == list(before_columns[table])
                for name, column in before_columns[table].items():
                    assert (str(after[name]["type"]), after[name]["nullable"], after[name]["default"]) == (
                        str(column["type"]), column["nullable"], column["default"]
                    ), (table, name)
                assert set(kern_columns) <= set(after)
                # agno's indexes are all still there, and none was duplicated under our name.
                after_ix = indexes(engine, table, pg_schema)
                for name, ix in before_indexes[table].items():
                    assert after_ix[name]["column_names"] == ix["column_names"], name
                    assert after_ix[name]["unique"] == ix["unique"], name
                signatures = [(tuple(ix["column_names"]), ix["unique"], where_of(ix)) for ix in after_ix.values()]
                assert len(signatures) == len(set(signatures)), sorted(after_ix)
            assert str(columns(engine, "agno_schedules", pg_schema)["payload"]["type"]) == "JSONB"
            assert_indexes(indexes(engine, "agno_schedules", pg_schema), AGNO_SCHEDULE_INDEXES)
            assert_indexes(indexes(engine, "agno_schedule_runs", pg_schema), KERN_RUN_INDEXES)
            assert versions(engine, pg_schema) == [head_revision()]

            # The existing rows are intact, with our defaults filled in.
            with engine.connect() as conn:
                row_after = dict(conn.execute(text(f'SELECT * FROM "{pg_schema}".agno_schedules')).mappings().one())
                run_after = dict(conn.execute(text(f'SELECT * FROM "{pg_schema}".agno_schedule_runs')).mappings().one())
                payload_type = conn.execute(
                    text(f'SELECT jsonb_typeof(payload) FROM "{pg_schema}".agno_schedules')
                ).scalar_one()
            assert {k: row_after[k] for k in row_before} == row_before
            assert {k: row_after[k] for k in KERN_SCHEDULE_COLUMNS} == KERN_SCHEDULE_COLUMNS
            assert {k: run_after[k] for k in run_before} == run_before
            assert {k: run_after[k] for k in KERN_RUN_COLUMNS} == KERN_RUN_COLUMNS
            assert {k: run_after[k] for k in KERN_LIVENESS_RUN_COLUMNS} == KERN_LIVENESS_RUN_COLUMNS
            assert payload_type == "object"
            assert ScheduleManager(ours).get(made.id).payload == {"message": "report", "nested": {"n": [1, 2]}}

            # agno still writes: the instance that made the tables, and a new one that reflects them.
            later = agno_mgr.create(name="agno-later", cron="*/10 * * * *", endpoint="/workflows/w/runs")
            fresh_agno = PostgresDb(db_url=POSTGRES_URL, db_schema=pg_schema)
            try:
                newest = AgnoManager(fresh_agno).create(
                    name="agno-newest", cron="0 0 * * *", endpoint="/teams/t/runs", user_id="carol"
                )
                fresh_agno.create_schedule_run(_agno_run(newest.id, user_id="carol"))
                assert {s.name for s in AgnoManager(fresh_agno).list()} == {"agno-made", "agno-later", "agno-newest"}
            finally:
                fresh_agno.db_engine.dispose()
            agno_db.create_schedule_run(_agno_run(later.id))

            manager = ScheduleManager(ours)
            for schedule_id in (later.id, newest.id):
                s = manager.get(schedule_id)
                assert (s.misfire_policy, s.catchup_window_seconds, s.overlap_policy, s.jitter_seconds, s.skipped_slots) == (
                    "once", 3600, "forbid", 0, 0,
                )
                (run,) = manager.runs(schedule_id).data
                assert (run.manual, run.scheduled_for, run.not_before, run.status) == (False, None, None, "success")
            assert manager.get_by_name("agno-newest", user_id="carol").id == newest.id
            assert len(manager.list()) == 3
        finally:
            ours.dispose()
    finally:
        engine.dispose()


def test_upgrade_on_agno_database_with_only_the_schedules_table(agno_db: Any, pg_schema: str) -> None:
    """agno makes agno_schedule_runs lazily; upgrade() creates it when agno has not yet."""
    from agno.scheduler import ScheduleManager as AgnoManager

    made = AgnoManager(agno_db).create(name="only-schedules", cron="0 9 * * *", endpoint="/agents/a/runs")
    engine = create_engine(POSTGRES_URL)
    try:
        assert "agno_schedule_runs" not in inspect(engine).get_table_names(schema=pg_schema)
        ours = Database(POSTGRES_URL, schema=pg_schema, settings=EMPTY_SETTINGS)
        try:
            ours.upgrade()
            found = columns(engine, "agno_schedule_runs", pg_schema)
            assert set(AGNO_RUN_COLUMNS) | set(KERN_RUN_COLUMNS) <= set(found)
            assert {n: (str(found[n]["type"]), found[n]["nullable"]) for n in AGNO_RUN_COLUMNS} == AGNO_RUN_COLUMNS
            run = ScheduleManager(ours).trigger_run(made.id)
            # agno reads the runs table we made.
            (agno_run,) = AgnoManager(agno_db).get_runs(made.id)
            assert (agno_run.id, agno_run.status, agno_run.attempt) == (run.id, "queued", 1)
        finally:
            ours.dispose()
    finally:
        engine.dispose()


def test_the_shipped_revisions_read_without_alembic_are_alembics() -> None:
    """Processes at head learn so without importing alembic (migrate.shipped_revisions
    reads the scripts' revision lines): the chain and head must be alembic's own."""
    from kern_tasks.db import migrate

    scripts = ScriptDirectory.from_config(alembic_config(None, None))  # type: ignore[arg-type]
    assert migrate.head_revision() == scripts.get_current_head()
    assert migrate.shipped_revisions() == {
        r.revision: r.down_revision for r in scripts.walk_revisions()  # type: ignore[misc]
    }
    assert not migrate.is_known_revision("9999")
