"""The agno_* tables kern_tasks reads and writes, as SQLAlchemy Core tables.

Column names and types are agno's (as agno 3.1 creates them on Postgres), so kern_tasks
can run on the database of an existing agno AgentOS and agno can read what we write.
Columns of our own come last in each table; they are nullable or defaulted, so agno's
own inserts keep working.

Tables carry no schema here: `Database` maps them into `KERN_DB_SCHEMA` (agno's "ai")
with SQLAlchemy's schema_translate_map.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSONB on Postgres (agno's type), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

SCHEDULE_STATUSES = (
    "queued", "running", "success", "failed", "retrying", "timeout", "paused", "cancelled", "skipped",
)
# The values our policy columns take, and every field's default, are
# kern_tasks.scheduler.spec's; the server defaults below are migration 0002's DDL
# (tests/test_validation.py checks they agree with the spec).

schedules = Table(
    "agno_schedules",
    metadata,
    # --- agno's columns ---
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("description", Text),
    Column("method", String, nullable=False),
    Column("endpoint", String, nullable=False),
    Column("payload", JSONType),
    Column("cron_expr", String, nullable=False),
    Column("timezone", String, nullable=False),
    Column("timeout_seconds", BigInteger, nullable=False),
    Column("max_retries", BigInteger, nullable=False),
    Column("retry_delay_seconds", BigInteger, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("next_run_at", BigInteger),
    Column("locked_by", String),
    Column("locked_at", BigInteger),
    Column("user_id", String),
    Column("managed_by", String),
    Column("target_type", String),
    Column("target_id", String),
    Column("created_by_run_id", String),
    Column("created_by_session_id", String),
    Column("updated_by_run_id", String),
    Column("updated_by_session_id", String),
    Column("disabled_reason", String),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger),
    # --- ours ---
    # What to do with slots missed while no beat ran: skip | once | all (within the window).
    Column("misfire_policy", String, nullable=False, server_default="once"),
    Column("catchup_window_seconds", BigInteger, nullable=False, server_default="3600"),
    # forbid: the lease is held until the slot's last attempt ends; allow: released at enqueue.
    Column("overlap_policy", String, nullable=False, server_default="forbid"),
    # Deterministic per-slot delay in [0, jitter_seconds].
    Column("jitter_seconds", BigInteger, nullable=False, server_default="0"),
    # Slots passed over by the misfire policy (each one is also logged by beat).
    Column("skipped_slots", BigInteger, nullable=False, server_default="0"),
    # The kinds beside cron (migration 0009; kern_tasks.scheduler.kinds): cron_expr is ""
    # on such rows. Every N seconds from start_at (else created_at); or one run at run_at.
    Column("interval_seconds", BigInteger),
    Column("run_at", BigInteger),
    # The window (any kind): no slot before start_at or after end_at.
    Column("start_at", BigInteger),
    Column("end_at", BigInteger),
    # At most this many slots fire (counted from the slot rows).
    Column("max_runs", BigInteger),
    # A slot whose first attempt cannot start within this many seconds is "skipped".
    Column("expires_after_seconds", BigInteger),
    # The Celery queue and message priority of its fires (and of the workflow steps a fire
    # starts); NULL: the app's default queue, the broker's default priority (migration 0010).
    Column("queue", String),
    Column("priority", BigInteger),
    # Failed slots in a row that make an alert incident (kern_tasks.alerts); NULL: the
    # default (3), 0: never (migration 0012).
    Column("alert_after_failures", BigInteger),
)

# agno's indexes, by agno's names, so a database agno created is recognised as is.
# Beat's claim reads only due rows: enabled AND next_run_at <= now.
Index("idx_agno_schedules_enabled_next_run_at", schedules.c.enabled, schedules.c.next_run_at)
Index("idx_agno_schedules_next_run_at", schedules.c.next_run_at)
Index("idx_agno_schedules_created_at", schedules.c.created_at)
Index("idx_agno_schedules_managed_by", schedules.c.managed_by)
Index("idx_agno_schedules_name", schedules.c.name)
Index("idx_agno_schedules_target_id", schedules.c.target_id)
Index("idx_agno_schedules_user_id", schedules.c.user_id)
Index(
    "idx_agno_schedules_user_id_enabled_next_run_at",
    schedules.c.user_id,
    schedules.c.enabled,
    schedules.c.next_run_at,
)
# Ours: beat's wake-up query reads the earliest claimable slot from this index alone.
Index(
    "ix_kern_schedules_claimable",
    schedules.c.next_run_at,
    postgresql_where=text("enabled AND locked_by IS NULL"),
    sqlite_where=text("enabled AND locked_by IS NULL"),
)
# Ours: the few leased rows (their runs are in flight), for the wake-up query too.
Index(
    "ix_kern_schedules_leased",
    schedules.c.next_run_at,
    postgresql_where=text("enabled AND locked_by IS NOT NULL"),
    sqlite_where=text("enabled AND locked_by IS NOT NULL"),
)
# Ours: schedules with no slot left that a limit or a one-off will finish (the sweep's
# limits.finish_exhausted reads only these).
FINISHING = "enabled AND next_run_at IS NULL AND (run_at IS NOT NULL OR end_at IS NOT NULL OR max_runs IS NOT NULL)"
Index(
    "ix_kern_schedules_finishing",
    schedules.c.id,
    postgresql_where=text(FINISHING),
    sqlite_where=text(FINISHING),
)
# Ours (0014): the dashboard's listing "by next fire": enabled schedules by next_run_at,
# those with no fire to come (paused, on demand, finished) after them; keyset-paged on
# (key, id), alone or within one owner's rows; and by name.
NO_NEXT_FIRE = 2**63 - 1
NEXT_FIRE_SQL = f"(CASE WHEN enabled AND next_run_at IS NOT NULL THEN next_run_at ELSE {NO_NEXT_FIRE} END)"
Index("ix_kern_schedules_next_fire", text(NEXT_FIRE_SQL), schedules.c.id)
Index("ix_kern_schedules_owner_next_fire", schedules.c.user_id, text(NEXT_FIRE_SQL), schedules.c.id)
Index("ix_kern_schedules_name_id", schedules.c.name, schedules.c.id)
# A name is unique per owner; rows without user_id form one owner of their own.
Index(
    "agno_schedules_uq_user_name",
    schedules.c.user_id,
    schedules.c.name,
    unique=True,
    postgresql_where=text("user_id IS NOT NULL"),
    sqlite_where=text("user_id IS NOT NULL"),
)
Index(
    "agno_schedules_uq_unowned_name",
    schedules.c.name,
    unique=True,
    postgresql_where=text("user_id IS NULL"),
    sqlite_where=text("user_id IS NULL"),
)

schedule_runs = Table(
    "agno_schedule_runs",
    metadata,
    # --- agno's columns ---
    Column("id", String, primary_key=True),
    Column(
        "schedule_id",
        String,
        ForeignKey("agno_schedules.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", BigInteger, nullable=False),
    Column("triggered_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("status", String, nullable=False),
    Column("status_code", BigInteger),
    Column("run_id", String),
    Column("session_id", String),
    Column("error", Text),
    Column("input", JSONType),
    Column("output", JSONType),
    Column("requirements", JSONType),
    Column("user_id", String),
    Column("created_at", BigInteger, nullable=False),
    # --- ours ---
    # The cron slot (epoch seconds) this attempt belongs to; NULL on rows agno wrote.
    Column("scheduled_for", BigInteger),
    # True for a run asked for by trigger(), not by the cron.
    Column("manual", Boolean, nullable=False, server_default=false()),
    # A queued attempt is not published before this instant (retry backoff lives here,
    # not in broker ETAs, so long waits never outlive the broker's visibility timeout).
    Column("not_before", BigInteger),
    # When the attempt was last handed to the broker; NULL until then. The sweep
    # re-publishes queued attempts whose message may be lost (never sent, or sent
    # before a broker restart).
    Column("enqueued_at", BigInteger),
    # The schedule's locked_by value of the claim this slot came from; the last
    # attempt releases the lease only if the schedule still carries this token.
    Column("lease_token", String),
    # The worker process that took the attempt (kern_workers.id); NULL until taken, and
    # on rows from before the upgrade (those are found lost by their deadline only).
    Column("worker_id", String),
    # True when the attempt ended because its worker stopped beating (not the target's fault).
    Column("lost", Boolean, nullable=False, server_default=false()),
    # True for a slot that ScheduleManager.backfill asked for (and its retries), not beat.
    Column("backfill", Boolean, nullable=False, server_default=false()),
)

Index("idx_agno_schedule_runs_created_at", schedule_runs.c.created_at)
Index("idx_agno_schedule_runs_schedule_id", schedule_runs.c.schedule_id)
Index("idx_agno_schedule_runs_status", schedule_runs.c.status)
Index("idx_agno_schedule_runs_user_id", schedule_runs.c.user_id)
# Ours: a slot is materialised at most once per attempt (manual runs are slots of their own).
Index(
    "uq_kern_schedule_runs_slot_attempt",
    schedule_runs.c.schedule_id,
    schedule_runs.c.scheduled_for,
    schedule_runs.c.manual,
    schedule_runs.c.attempt,
    unique=True,
)
# Ours (0014): a schedule's newest attempts first (its last status, its timeline).
Index("ix_kern_schedule_runs_schedule_created", schedule_runs.c.schedule_id, schedule_runs.c.created_at)
# Ours: the sweep reads open attempts (queued, running) without scanning finished history.
Index(
    "ix_kern_schedule_runs_open",
    schedule_runs.c.status,
    schedule_runs.c.not_before,
    postgresql_where=text("status IN ('queued', 'running')"),
    sqlite_where=text("status IN ('queued', 'running')"),
)

# Ours: one row per worker process that has taken an attempt; its heartbeat says it lives
# (kern_tasks.firing.liveness). agno never reads it.
workers = Table(
    "kern_workers",
    metadata,
    Column("id", String, primary_key=True),  # hostname:pid:random, new in every process
    Column("hostname", String, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("heartbeat_at", BigInteger, nullable=False),
)
Index("ix_kern_workers_heartbeat_at", workers.c.heartbeat_at)

# Ours: one row per beat replica (kern_tasks.beat_health), migration 0011.
beats = Table(
    "kern_beats",
    metadata,
    Column("id", String, primary_key=True),  # hostname:pid:random, new in every beat process
    Column("hostname", String, nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("tick_at", BigInteger, nullable=False),  # the database's epoch seconds of the last recorded tick
)
Index("ix_kern_beats_tick_at", beats.c.tick_at)

# Ours: alert incidents (kern_tasks.alerts), migration 0012. Open while resolved_at is NULL;
# one open incident per key (the partial unique index), so it is announced once.
OPEN_INCIDENT = "resolved_at IS NULL"
incidents = Table(
    "kern_alert_incidents",
    metadata,
    Column("id", String, primary_key=True),
    Column("key", String, nullable=False),  # "overdue:<schedule id>", "failing:<schedule id>", "no_beat"
    Column("kind", String, nullable=False),  # overdue | failing | no_beat
    Column("schedule_id", String),  # no foreign key: an incident outlives its schedule
    Column("schedule_name", String),
    Column("slot", BigInteger),  # the missed slot, or the newest failed one
    Column("last_error", Text),
    Column("message", Text, nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger),
)
Index("uq_kern_alert_incidents_open_key", incidents.c.key, unique=True,
      postgresql_where=text(OPEN_INCIDENT), sqlite_where=text(OPEN_INCIDENT))  # fmt: skip
Index("ix_kern_alert_incidents_open_kind", incidents.c.kind,
      postgresql_where=text(OPEN_INCIDENT), sqlite_where=text(OPEN_INCIDENT))  # fmt: skip
