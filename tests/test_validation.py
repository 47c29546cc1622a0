"""Every invalid write to ScheduleManager raises ValidationError naming the field and writes nothing.

Runs on both real Postgres and SQLite. Each case checks the error's `field`, that it is
a `ValueError`, that its message says what is wrong, and that the tables are exactly as
they were before the call.

There are some 150 cases per database, so this module overrides conftest's `db`: one
migrated database of each kind per module, emptied before every test (a fresh Postgres
schema per case would cost ~0.1 s each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import delete, func, select

from kern_tasks.db import Database
from kern_tasks.db.tables import schedule_runs, schedules
from kern_tasks.errors import CronError, KernError, ValidationError
from kern_tasks.scheduler import ScheduleManager
from kern_tasks.scheduler.spec import DEFAULTS

from .conftest import EMPTY_SETTINGS, POSTGRES_URL, drop_schema, fresh_schema_name


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("validation") / "kern.db"
        database = Database(f"sqlite:///{path}", settings=EMPTY_SETTINGS)
        database.upgrade()
        yield database
        database.dispose()
    else:
        schema = fresh_schema_name()
        database = Database(POSTGRES_URL, schema=schema, settings=EMPTY_SETTINGS)
        database.upgrade()
        yield database
        database.dispose()
        drop_schema(schema)


@pytest.fixture
def db(migrated: Database) -> Database:
    """A migrated, empty database, on Postgres and on SQLite."""
    with migrated.begin() as conn:
        conn.execute(delete(schedule_runs))
        conn.execute(delete(schedules))
    return migrated

VALID: dict[str, Any] = {
    "name": "daily_digest",
    "cron": "0 9 * * 1-5",
    "endpoint": "/workflows/daily-digest/runs",
}

# (overrides of VALID, field named by the error, fragments its message must contain)
BAD_CREATE = [
    # --- endpoint: a path, never a URL ---
    pytest.param(
        {"endpoint": "https://evil.example/agents/x/runs"},
        "endpoint",
        ['"https://evil.example/agents/x/runs" is a full URL', "give only the path", "KERN_BASE_URL"],
        id="endpoint-full-url",
    ),
    pytest.param({"endpoint": "http://127.0.0.1/x"}, "endpoint", ["full URL"], id="endpoint-http-url"),
    pytest.param({"endpoint": "//evil.example/x"}, "endpoint", ["full URL", "give only the path"], id="endpoint-scheme-relative"),
    pytest.param({"endpoint": "agents/x/runs"}, "endpoint", ['"agents/x/runs" must start with "/"'], id="endpoint-no-slash"),
    pytest.param({"endpoint": "/agents/my agent/runs"}, "endpoint", ["whitespace"], id="endpoint-space"),
    pytest.param({"endpoint": "/agents/x/runs\n"}, "endpoint", ["whitespace"], id="endpoint-newline"),
    pytest.param({"endpoint": "/agents/x\t/runs"}, "endpoint", ["whitespace"], id="endpoint-tab"),
    pytest.param({"endpoint": "/agents\\x/runs"}, "endpoint", ["backslash"], id="endpoint-backslash"),
    pytest.param({"endpoint": "/agents/../admin"}, "endpoint", ['".." segments'], id="endpoint-dotdot"),
    pytest.param({"endpoint": "/.."}, "endpoint", ['".." segments'], id="endpoint-dotdot-end"),
    pytest.param({"endpoint": "/agents/%2e%2e/admin"}, "endpoint", ['".." segments'], id="endpoint-encoded-dotdot"),
    pytest.param({"endpoint": "/agents/%2E./admin"}, "endpoint", ['".." segments'], id="endpoint-mixed-encoded-dotdot"),
    pytest.param({"endpoint": "/agents/x/..%2f..%2fadmin"}, "endpoint", ['".." segments'], id="endpoint-encoded-slash-dotdot"),
    pytest.param({"endpoint": "/agents/x\x00/runs"}, "endpoint", ["control characters"], id="endpoint-nul"),
    pytest.param({"endpoint": "/agents/x\x7f/runs"}, "endpoint", ["control characters"], id="endpoint-del"),
    pytest.param({"endpoint": ""}, "endpoint", ['must be a path such as "/agents/my-agent/runs"'], id="endpoint-empty"),
    pytest.param({"endpoint": None}, "endpoint", ["must be a path"], id="endpoint-none"),
    pytest.param({"endpoint": "/" + "a" * 2048}, "endpoint", ["at most 2048 characters"], id="endpoint-too-long"),
    # --- method ---
    pytest.param({"method": "FETCH"}, "method", ["'FETCH' is not one of GET, POST, PUT, PATCH, DELETE"], id="method-unknown"),
    pytest.param({"method": "HEAD"}, "method", ["'HEAD' is not one of"], id="method-head"),
    pytest.param({"method": ""}, "method", ["is not one of GET, POST"], id="method-empty"),
    pytest.param({"method": " post"}, "method", ["is not one of"], id="method-padded"),
    pytest.param({"method": None}, "method", ["None is not one of"], id="method-none"),
    # --- name ---
    pytest.param({"name": ""}, "name", ["must be a non-empty string"], id="name-empty"),
    pytest.param({"name": "   "}, "name", ["must be a non-empty string"], id="name-blank"),
    pytest.param({"name": None}, "name", ["must be a non-empty string"], id="name-none"),
    pytest.param({"name": 42}, "name", ["must be a non-empty string"], id="name-int"),
    pytest.param({"name": "a" * 256}, "name", ["at most 255 characters, got 256"], id="name-256-chars"),
    pytest.param({"name": "drop;table"}, "name", ['"drop;table" has characters outside', "letters, digits"], id="name-semicolon"),
    pytest.param({"name": "line\nbreak"}, "name", ["characters outside"], id="name-newline"),
    pytest.param({"name": "<script>"}, "name", ["characters outside"], id="name-angle-brackets"),
    pytest.param({"name": "-leading-dash"}, "name", ["must start with a letter or digit"], id="name-leading-dash"),
    # --- numbers ---
    pytest.param({"timeout_seconds": 0}, "timeout_seconds", ["between 1 and 604800, got 0"], id="timeout-zero"),
    pytest.param({"timeout_seconds": -5}, "timeout_seconds", ["between 1 and 604800, got -5"], id="timeout-negative"),
    pytest.param({"timeout_seconds": 604_801}, "timeout_seconds", ["between 1 and 604800, got 604801"], id="timeout-too-big"),
    pytest.param({"timeout_seconds": 1.5}, "timeout_seconds", ["must be a whole number, got 1.5"], id="timeout-fraction"),
    pytest.param({"timeout_seconds": float("inf")}, "timeout_seconds", ["must be a whole number"], id="timeout-inf"),
    pytest.param({"timeout_seconds": float("nan")}, "timeout_seconds", ["must be a whole number"], id="timeout-nan"),
    pytest.param({"timeout_seconds": "60"}, "timeout_seconds", ["must be an integer between 1 and 604800"], id="timeout-string"),
    pytest.param({"timeout_seconds": True}, "timeout_seconds", ["must be an integer"], id="timeout-bool"),
    pytest.param({"timeout_seconds": None}, "timeout_seconds", ["must be an integer"], id="timeout-none"),
    pytest.param({"max_retries": -1}, "max_retries", ["between 0 and 20, got -1"], id="retries-negative"),
    pytest.param({"max_retries": 21}, "max_retries", ["between 0 and 20, got 21"], id="retries-21"),
    pytest.param({"max_retries": False}, "max_retries", ["must be an integer"], id="retries-bool"),
    pytest.param({"retry_delay_seconds": -1}, "retry_delay_seconds", ["between 0 and 86400, got -1"], id="retry-delay-negative"),
    pytest.param({"retry_delay_seconds": 86_401}, "retry_delay_seconds", ["between 0 and 86400"], id="retry-delay-too-big"),
    pytest.param({"jitter_seconds": -1}, "jitter_seconds", ["between 0 and 3600, got -1"], id="jitter-negative"),
    pytest.param({"jitter_seconds": 3601}, "jitter_seconds", ["between 0 and 3600, got 3601"], id="jitter-too-big"),
    pytest.param({"catchup_window_seconds": 0}, "catchup_window_seconds", ["between 1 and 2592000, got 0"], id="catchup-zero"),
    # --- payload ---
    pytest.param({"payload": [1, 2]}, "payload", ["must be a JSON object (a dict), got list"], id="payload-list"),
    pytest.param({"payload": "message=hi"}, "payload", ["must be a JSON object (a dict), got str"], id="payload-str"),
    pytest.param({"payload": {"tags": {"a", "b"}}}, "payload", ["must be JSON-serialisable", "set"], id="payload-set"),
    pytest.param({"payload": {"score": float("nan")}}, "payload", ["must be JSON-serialisable"], id="payload-nan"),
    pytest.param({"payload": {"score": float("inf")}}, "payload", ["must be JSON-serialisable"], id="payload-inf"),
    pytest.param({"payload": {"when": object()}}, "payload", ["must be JSON-serialisable", "object"], id="payload-object"),
    pytest.param({"payload": {"blob": "x" * (256 * 1024)}}, "payload", ["at most 262144 bytes"], id="payload-too-big"),
    # --- time zone ---
    pytest.param({"timezone": "Mars/Base"}, "timezone", ['unknown time zone "Mars/Base"', "IANA name"], id="tz-mars"),
    pytest.param({"timezone": ""}, "timezone", ["unknown time zone"], id="tz-empty"),
    pytest.param({"timezone": " UTC"}, "timezone", ["unknown time zone"], id="tz-padded"),
    pytest.param({"timezone": "localtime"}, "timezone", ["unknown time zone"], id="tz-localtime"),
    pytest.param({"timezone": "../../etc/passwd"}, "timezone", ["unknown time zone"], id="tz-path"),
    pytest.param({"timezone": None}, "timezone", ["IANA name"], id="tz-none"),
    # --- cron ---
    pytest.param({"cron": "61 * * * *"}, "cron", ['minute field "61"', "0-59"], id="cron-minute-61"),
    pytest.param({"cron": "0 24 * * *"}, "cron", ['hour field "24"', "0-23"], id="cron-hour-24"),
    pytest.param({"cron": "0 9 0 * *"}, "cron", ['day-of-month field "0"'], id="cron-dom-0"),
    pytest.param({"cron": "0 9 * 13 *"}, "cron", ['month field "13"'], id="cron-month-13"),
    pytest.param({"cron": "0 9 * * 8"}, "cron", ['day-of-week field "8"'], id="cron-dow-8"),
    pytest.param({"cron": "* * *"}, "cron", ["expected 5 fields", "got 3"], id="cron-3-fields"),
    pytest.param({"cron": "* * * * * * *"}, "cron", ["expected 5 fields", "got 7"], id="cron-7-fields"),
    pytest.param({"cron": ""}, "cron", ["expected 5 fields", "got 0"], id="cron-empty"),
    pytest.param({"cron": "@reboot"}, "cron", ['unknown macro "@reboot"'], id="cron-reboot"),
    pytest.param({"cron": "0 0 31 2 *"}, "cron", ["never"], id="cron-never-fires"),
    pytest.param({"cron": None}, "cron", ['cron expression such as "0 9 * * 1-5"'], id="cron-none"),
    # --- our own policies ---
    pytest.param({"misfire_policy": "sometimes"}, "misfire_policy", ["'sometimes' is not one of skip, once, all"], id="misfire-unknown"),
    pytest.param({"overlap_policy": "queue"}, "overlap_policy", ["'queue' is not one of forbid, allow"], id="overlap-unknown"),
    pytest.param({"if_exists": "merge"}, "if_exists", ["'merge' is not one of raise, update, skip"], id="if-exists-merge"),
    # --- the rest ---
    pytest.param({"description": 123}, "description", ["must be a string"], id="description-int"),
    pytest.param({"description": "d" * 10_001}, "description", ["at most 10000 characters"], id="description-too-long"),
    pytest.param({"enabled_on_create": "yes"}, "enabled_on_create", ["must be true or false"], id="enabled-string"),
    pytest.param({"user_id": 7}, "user_id", ["must be a string"], id="user-id-int"),
]

# (fields passed to update, field named by the error, fragments its message must contain)
BAD_UPDATE = [
    pytest.param({"endpoint": "https://evil.example/agents/x/runs"}, "endpoint", ["full URL", "give only the path"], id="endpoint-full-url"),
    pytest.param({"endpoint": "agents/x/runs"}, "endpoint", ['must start with "/"'], id="endpoint-no-slash"),
    pytest.param({"endpoint": "//evil.example/x"}, "endpoint", ["full URL"], id="endpoint-scheme-relative"),
    pytest.param({"endpoint": "/a b"}, "endpoint", ["whitespace"], id="endpoint-space"),
    pytest.param({"endpoint": "/agents/../admin"}, "endpoint", ['".." segments'], id="endpoint-dotdot"),
    pytest.param({"method": "FETCH"}, "method", ["is not one of GET, POST, PUT, PATCH, DELETE"], id="method-unknown"),
    pytest.param({"name": ""}, "name", ["must be a non-empty string"], id="name-empty"),
    pytest.param({"name": "a" * 256}, "name", ["at most 255 characters, got 256"], id="name-256-chars"),
    pytest.param({"name": "bad|name"}, "name", ["characters outside"], id="name-pipe"),
    pytest.param({"timeout_seconds": 0}, "timeout_seconds", ["between 1 and 604800, got 0"], id="timeout-zero"),
    pytest.param({"timeout_seconds": 10**9}, "timeout_seconds", ["between 1 and 604800"], id="timeout-too-big"),
    pytest.param({"timeout_seconds": 2.5}, "timeout_seconds", ["whole number"], id="timeout-fraction"),
    pytest.param({"timeout_seconds": True}, "timeout_seconds", ["must be an integer"], id="timeout-bool"),
    pytest.param({"max_retries": -1}, "max_retries", ["between 0 and 20, got -1"], id="retries-negative"),
    pytest.param({"max_retries": 21}, "max_retries", ["between 0 and 20, got 21"], id="retries-21"),
    pytest.param({"retry_delay_seconds": -1}, "retry_delay_seconds", ["between 0 and 86400, got -1"], id="retry-delay-negative"),
    pytest.param({"payload": ["a"]}, "payload", ["must be a JSON object (a dict), got list"], id="payload-list"),
    pytest.param({"payload": {"s": {1, 2}}}, "payload", ["must be JSON-serialisable"], id="payload-set"),
    pytest.param({"payload": {"x": float("nan")}}, "payload", ["must be JSON-serialisable"], id="payload-nan"),
    pytest.param({"timezone": "Mars/Base"}, "timezone", ['unknown time zone "Mars/Base"'], id="tz-mars"),
    pytest.param({"cron": "61 * * * *"}, "cron", ['minute field "61"'], id="cron-minute-61"),
    pytest.param({"cron_expr": "61 * * * *"}, "cron", ['minute field "61"'], id="cron-expr-minute-61"),
    pytest.param({"cron": "* * * *"}, "cron", ["expected 5 fields", "got 4"], id="cron-4-fields"),
    pytest.param({"misfire_policy": "never"}, "misfire_policy", ["is not one of skip, once, all"], id="misfire-unknown"),
    pytest.param({"overlap_policy": "parallel"}, "overlap_policy", ["is not one of forbid, allow"], id="overlap-unknown"),
    pytest.param({"jitter_seconds": 3601}, "jitter_seconds", ["between 0 and 3600, got 3601"], id="jitter-too-big"),
    pytest.param({"enabled": 1}, "enabled", ["must be true or false"], id="enabled-int"),
    # Not fields a caller may set: unknown names, and columns the store owns.
    pytest.param({"colour": "blue"}, "colour", ["is not a schedule field", "known:", "cron_expr"], id="unknown-field"),
    pytest.param({"next_run_at": 0}, "next_run_at", ["is not a schedule field"], id="next-run-at"),
    pytest.param({"locked_by": "me"}, "locked_by", ["is not a schedule field"], id="locked-by"),
    pytest.param({"id": "other-id"}, "id", ["is not a schedule field"], id="id"),
    pytest.param({"created_at": 0}, "created_at", ["is not a schedule field"], id="created-at"),
    pytest.param({"skipped_slots": 9}, "skipped_slots", ["is not a schedule field"], id="skipped-slots"),
    # One bad field among good ones: the good ones are not written either.
    pytest.param(
        {"description": "changed", "payload": {"ok": 1}, "timeout_seconds": 0},
        "timeout_seconds",
        ["between 1 and 604800"],
        id="good-fields-with-one-bad",
    ),
    pytest.param(
        {"cron": "*/5 * * * *", "timezone": "Mars/Base"},
        "timezone",
        ["unknown time zone"],
        id="good-cron-bad-timezone",
    ),
]


def snapshot(db: Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of both tables, in a stable order."""
    with db.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(schedules).order_by(schedules.c.id)).mappings()]
        runs = [dict(r) for r in conn.execute(select(schedule_runs).order_by(schedule_runs.c.id)).mappings()]
    return rows, runs


def count(db: Database) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(schedules)).scalar_one()


def seed(manager: ScheduleManager) -> str:
    """One existing schedule with one run, so "nothing written" covers updates too."""
    s = manager.create(
        name="existing",
        cron="15 7 * * *",
        endpoint="/agents/seed/runs",
        payload={"message": "keep me"},
        description="seed",
    )
    manager.trigger(s.id)
    return s.id


def assert_error(err: pytest.ExceptionInfo, field: str, fragments: list[str]) -> None:
    exc = err.value
    assert isinstance(exc, ValueError) and isinstance(exc, KernError)
    assert exc.field == field, f"field {exc.field!r}, message {exc}"
    assert str(exc).startswith(f"{field}: "), str(exc)
    for fragment in fragments:
        assert fragment in exc.message, f"{fragment!r} not in {exc.message!r}"


@pytest.mark.parametrize("overrides, field, fragments", BAD_CREATE)
def test_create_rejects_and_writes_nothing(
    db: Database, overrides: dict[str, Any], field: str, fragments: list[str]
) -> None:
    manager = ScheduleManager(db)
    seed(manager)
    before = snapshot(db)
    with pytest.raises(ValidationError) as err:
        manager.create(**{**VALID, **overrides})
    assert_error(err, field, fragments)
    assert snapshot(db) == before
    assert count(db) == 1


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"endpoint": "https://evil.example/x"}, "endpoint"),
        ({"payload": {"x": float("nan")}}, "payload"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"max_retries": 21}, "max_retries"),
    ],
    ids=["cron", "endpoint", "payload", "timezone", "max_retries"],
)
@pytest.mark.parametrize("mode", ["update", "skip"])
def test_create_if_exists_with_bad_values_leaves_the_existing_row(
    db: Database, overrides: dict[str, Any], field: str, mode: str
) -> None:
    """The name is taken: validation still comes first, and the stored row is untouched."""
    manager = ScheduleManager(db)
    seed(manager)
    before = snapshot(db)
    with pytest.raises(ValidationError) as err:
        manager.create(**{**VALID, "name": "existing", **overrides}, if_exists=mode)
    assert err.value.field == field
    assert snapshot(db) == before


@pytest.mark.parametrize("fields, field, fragments", BAD_UPDATE)
def test_update_rejects_and_writes_nothing(
    db: Database, fields: dict[str, Any], field: str, fragments: list[str]
) -> None:
    manager = ScheduleManager(db)
    schedule_id = seed(manager)
    other = manager.create(name="other", cron="0 0 * * *", endpoint="/health", method="GET")
    before = snapshot(db)
    with pytest.raises(ValidationError) as err:
        manager.update(schedule_id, **fields)
    assert_error(err, field, fragments)
    assert snapshot(db) == before
    assert count(db) == 2
    assert manager.get(other.id) == other


def test_update_of_unknown_schedule_with_bad_field_is_a_validation_error(db: Database) -> None:
    """Validation comes before the lookup, so the caller learns about the input first."""
    with pytest.raises(ValidationError) as err:
        ScheduleManager(db).update("no-such-id", cron="99 * * * *")
    assert err.value.field == "cron"
    assert count(db) == 0


def test_cron_and_timezone_errors_are_cron_errors(db: Database) -> None:
    manager = ScheduleManager(db)
    with pytest.raises(CronError):
        manager.create(**{**VALID, "cron": "61 * * * *"})
    with pytest.raises(CronError):
        manager.create(**{**VALID, "timezone": "Mars/Base"})
    assert count(db) == 0


@pytest.mark.parametrize(
    "overrides, attribute, stored",
    [
        ({"method": "post"}, "method", "POST"),
        ({"method": "Delete"}, "method", "DELETE"),
        ({"method": "get"}, "method", "GET"),
        ({"name": "  padded name  "}, "name", "padded name"),
        ({"name": "a" * 255}, "name", "a" * 255),
        ({"name": "team@corp/job:1.v2"}, "name", "team@corp/job:1.v2"),
        ({"cron": "  0 9 * * 1-5  "}, "cron_expr", "0 9 * * 1-5"),
        ({"cron": "*/5 * * * * *"}, "cron_expr", "*/5 * * * * *"),
        ({"cron": "@hourly"}, "cron_expr", "@hourly"),
        ({"timeout_seconds": 30.0}, "timeout_seconds", 30),
        ({"timeout_seconds": 604_800}, "timeout_seconds", 604_800),
        ({"max_retries": 20}, "max_retries", 20),
        ({"retry_delay_seconds": 0}, "retry_delay_seconds", 0),
        ({"jitter_seconds": 3600}, "jitter_seconds", 3600),
        ({"endpoint": "/agents/x/runs?stream=false&a=..b"}, "endpoint", "/agents/x/runs?stream=false&a=..b"),
        ({"endpoint": "/files/v1..2/x"}, "endpoint", "/files/v1..2/x"),
        ({"payload": {}}, "payload", {}),
        ({"payload": {"nested": {"list": [1, 2.5, None, True]}}}, "payload", {"nested": {"list": [1, 2.5, None, True]}}),
        ({"timezone": "Asia/Kolkata"}, "timezone", "Asia/Kolkata"),
        ({"misfire_policy": "all"}, "misfire_policy", "all"),
        ({"overlap_policy": "allow"}, "overlap_policy", "allow"),
    ],
)
def test_valid_edge_values_are_accepted_and_normalised(
    db: Database, overrides: dict[str, Any], attribute: str, stored: Any
) -> None:
    """The checks do not over-reject: boundary values pass, and are stored normalised."""
    manager = ScheduleManager(db)
    created = manager.create(**{**VALID, **overrides})
    assert getattr(created, attribute) == stored
    assert getattr(manager.get(created.id), attribute) == stored
    assert count(db) == 1


def test_update_normalises_method_and_accepts_valid_changes(db: Database) -> None:
    manager = ScheduleManager(db)
    s = manager.create(**VALID)
    changed = manager.update(s.id, method="put", max_retries=20, payload={"a": [1]})
    assert (changed.method, changed.max_retries, changed.payload) == ("PUT", 20, {"a": [1]})
    assert manager.get(s.id) == changed


def test_sql_server_defaults_are_the_specs() -> None:
    """Rows agno inserts (without our columns) get the defaults the spec gives ours."""
    for column in ("misfire_policy", "catchup_window_seconds", "overlap_policy", "jitter_seconds"):
        assert schedules.c[column].server_default.arg == str(DEFAULTS[column]), column


def test_update_refuses_null_for_fields_that_cannot_be_null(db: Database) -> None:
    manager = ScheduleManager(db)
    s = manager.create(**VALID, description="d", payload={"a": 1})
    for field in ("name", "endpoint", "timeout_seconds", "misfire_policy", "enabled"):
        with pytest.raises(ValidationError) as err:
            manager.update(s.id, **{field: None})
        assert err.value.field == field
    cleared = manager.update(s.id, description=None, payload=None)
    assert (cleared.description, cleared.payload) == (None, None)


@pytest.mark.parametrize(
    "field, value",
    [("name", "a\x00b"), ("description", "nul \x00"), ("payload", {"m": "\ud800"}), ("payload", {"\x00": 1})],
)
def test_text_postgres_cannot_store_is_refused_on_both_databases(db: Database, field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        ScheduleManager(db).create(**{**VALID, field: value})
    assert err.value.field == field
    assert count(db) == 0
