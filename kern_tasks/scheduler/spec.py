"""A schedule's fields, once: type, default, bounds and the check with its message.

    ScheduleFields   what a caller describes: when, what to call, retries, policies
                     (the HTTP create body is exactly this)
    ScheduleSpec     ScheduleFields plus what the store stamps: enabled, owner, provenance
    DEFAULTS         {field: default} of every field that has one
    check(field, value), check_fields(values)
                     one field / several, normalised, or `ValidationError(field, message)`

Everything else reads these: `validation` (the per-field functions callers use),
`os/schemas.py` (request bodies derive from these models, so the OpenAPI document
states the same maxLength, pattern, minimum/maximum and enums), `models.Schedule`,
`slots.plan_slots`, the manager and SchedulerTools (their defaults are `DEFAULTS`).

Some rules a JSON schema cannot state (cron syntax, IANA zones, ".." segments, the 256 KiB
payload, no NUL inside a payload): the checks hold them and the field descriptions say them.
Text Postgres cannot store (NUL, lone surrogates) is refused in every field.

How a check speaks: each field's validator raises a `ValueError` whose text says how to
fix the value (it may be shown to a model as is); the cron engine raises `CronError`
itself. `check`/`check_fields` turn pydantic's error into `ValidationError(field,
message)` chained `from` it, and `message_of` does the same for a request body's errors
(os/errors.py), so Python and HTTP callers read the same words. The bounds a check
enforces are the ones its JSON schema states: both come from one `Field(...)`.

The SQL server defaults of our columns (db/tables.py, migration 0002) are DDL history,
not a second copy to edit: a test checks they equal `DEFAULTS`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import Annotated, Any, Literal, Optional, get_args
from urllib.parse import unquote

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from kern_tasks.alerts.incidents import DEFAULT_ALERT_AFTER_FAILURES
from kern_tasks.dispatch import MAX_PRIORITY
from kern_tasks.errors import KernError, ValidationError
from kern_tasks.runs.safe import has_unstorable_text
from kern_tasks.scheduler import cron as cron_engine

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
MisfirePolicy = Literal["skip", "once", "all"]
OverlapPolicy = Literal["forbid", "allow"]
IfExists = Literal["raise", "update", "skip"]
METHODS: tuple[str, ...] = get_args(Method)
MISFIRE_POLICIES: tuple[str, ...] = get_args(MisfirePolicy)
OVERLAP_POLICIES: tuple[str, ...] = get_args(OverlapPolicy)
IF_EXISTS: tuple[str, ...] = get_args(IfExists)

NAME_MAX = 255
# Python's `$` also matches before a final newline; `\Z` does not (the JSON schema's `$` is ECMA's).
NAME_CHARS = r"^[A-Za-z0-9][A-Za-z0-9 _.:@/\-]{0,254}$"
NAME_PATTERN = re.compile(NAME_CHARS[:-1] + r"\Z")
ENDPOINT_MAX = 2048
# What the JSON schema can say of an endpoint: a path, no whitespace, backslash or control character.
# ".." segments (also percent-encoded) are refused by the check beyond it.
ENDPOINT_CHARS = r"^/[^\s\\\x00-\x1f\x7f-\x9f]*$"
DESCRIPTION_MAX = 10_000
# Free text the JSON schema can keep storable (Postgres stores no NUL in text or jsonb).
NO_NUL = r"^[^\x00]*$"
UNSTORABLE = "must not contain NUL characters or unpaired surrogates"
TEXT_MAX = 255
PAYLOAD_MAX_BYTES = 256 * 1024
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_RETRIES = 20
MAX_RETRY_DELAY_SECONDS = 24 * 3600
MAX_JITTER_SECONDS = 3600
MAX_CATCHUP_WINDOW_SECONDS = 30 * 24 * 3600
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
MAX_EXPIRES_AFTER_SECONDS = 30 * 24 * 3600
MAX_RUNS = 10**9
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z
# A one-off may be given this far in the past and still fire (on time: slots.DEFAULT_GRACE_S).
RUN_AT_PAST_GRACE_S = 60
# When a schedule runs: exactly one of these (check_kind), in the order errors name them.
KIND_FIELDS = ("cron_expr", "interval_seconds", "run_at")
# What check_kind reads: the kinds, the window and the limit.
TIMING_FIELDS = (*KIND_FIELDS, "start_at", "end_at", "max_runs")
QUEUE_MAX = 200
# A Celery queue name that every broker accepts as is (Redis key, AMQP queue name).
QUEUE_CHARS = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$"
QUEUE_PATTERN = re.compile(QUEUE_CHARS[:-1] + r"\Z")
# Failed slots in a row before an alert incident (kern_tasks.alerts): the bound (the default
# and MAX_PRIORITY live where beat reads them without pydantic).
MAX_ALERT_AFTER_FAILURES = 1000

# A field's errors are reported under the name its callers pass (manager.create(cron=...)).
ERROR_NAMES = {"cron_expr": "cron"}


# --- checks: each returns the normalised value or raises ValueError(how to fix it) -------------


def whole_number(value: Any, *, low: int, high: int) -> int:
    """An integer in [low, high]; a whole float (30.0) is that integer; bool and text are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be an integer between {low} and {high}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ValueError(f"must be a whole number, got {value}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}, got {value}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    value = value.strip()
    if len(value) > NAME_MAX:
        raise ValueError(f"must be at most {NAME_MAX} characters, got {len(value)}")
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f'"{value}" has characters outside letters, digits, space and _ . : @ / - '
            "(and must start with a letter or digit)"
        )
    return value


def _endpoint(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError('must be a path such as "/agents/my-agent/runs"')
    if "://" in value or value.startswith("//"):
        raise ValueError(
            f'"{value}" is a full URL; give only the path (such as "/agents/my-agent/runs"): '
            "schedules fire at KERN_BASE_URL + endpoint"
        )
    if not value.startswith("/"):
        raise ValueError(f'"{value}" must start with "/"')
    if len(value) > ENDPOINT_MAX:
        raise ValueError(f"must be at most {ENDPOINT_MAX} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value) or "\\" in value:
        raise ValueError(f"{value!r} must not contain whitespace, control characters or backslashes")
    # Percent-decoded too: proxies and servers resolve "%2e%2e" (and "%2f") like "..".
    if any(part == ".." for part in unquote(value.split("?")[0]).split("/")):
        raise ValueError(f'"{value}" must not contain ".." segments')
    return value


def _method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise ValueError(f"{value!r} is not one of {', '.join(METHODS)}")
    return value.upper()


def _choice(value: Any, *, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value  # type: ignore[no-any-return]


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) > DESCRIPTION_MAX:
        raise ValueError(f"must be at most {DESCRIPTION_MAX} characters")
    if has_unstorable_text(value):
        raise ValueError(UNSTORABLE)
    return value


def _payload(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object (a dict), got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be JSON-serialisable: {exc}") from exc
    if len(encoded.encode()) > PAYLOAD_MAX_BYTES:
        raise ValueError(f"must be at most {PAYLOAD_MAX_BYTES} bytes as JSON")
    return json.loads(encoded)  # type: ignore[no-any-return]  # a plain copy: what is stored is what we checked


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _text(value: Any, *, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ValueError(f"must be a string of at most {max_length} characters")
    if has_unstorable_text(value):
        raise ValueError(UNSTORABLE)
    return value


def _user_id(value: Any) -> str | None:
    value = _text(value, max_length=TEXT_MAX)
    # agno's executor refuses blank owners and its own reserved name when firing.
    if value is not None and (not value.strip() or value == "__scheduler__"):
        raise ValueError(f"{value!r} cannot own a schedule: give a real user id or none")
    return value


def _queue(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not QUEUE_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a queue name: letters, digits and _ . : - (starting with a letter or digit), "
            f"at most {QUEUE_MAX} characters; null for the app's default queue"
        )
    return value


def _priority(value: Any) -> int | None:
    if value is None:
        return None
    return whole_number(value, low=0, high=MAX_PRIORITY)


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('must be a cron expression such as "0 9 * * 1-5"')
    cron_engine.parse(value)  # raises CronError naming the field and what to fix
    return value.strip()


def _instant(value: Any) -> int | None:
    """Epoch seconds (as agno stores every time), or an aware datetime (from Python)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} is a naive datetime: give one with a time zone (tzinfo), or epoch seconds"
            )
        value = math.floor(value.timestamp())
    if isinstance(value, str):
        raise ValueError(f"must be epoch seconds (an integer), got the text {value[:40]!r}")
    return whole_number(value, low=0, high=MAX_EPOCH)


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('must be an IANA name such as "America/New_York"')
    cron_engine.validate_timezone(value)  # raises CronError
    return value


# --- field types: the bounds stated once, for the check and the JSON schema ----------------------


def _bounded(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(partial(whole_number, low=low, high=high))]


def _optional_whole(value: Any, *, low: int, high: int) -> int | None:
    return None if value is None else whole_number(value, low=low, high=high)


def _optional_bounded(low: int, high: int) -> Any:
    number = Annotated[int, Field(ge=low, le=high)]
    return Annotated[Optional[number], BeforeValidator(partial(_optional_whole, low=low, high=high))]


def _optional_text(max_length: int, check: Any = None) -> Any:
    validator = check or partial(_text, max_length=max_length)
    text = Annotated[str, Field(max_length=max_length, pattern=NO_NUL)]
    return Annotated[Optional[text], BeforeValidator(validator)]


def _one_of(kind: Any) -> Any:
    return Annotated[kind, BeforeValidator(partial(_choice, allowed=get_args(kind)))]


Name = Annotated[str, Field(max_length=NAME_MAX, pattern=NAME_CHARS), BeforeValidator(_name)]
CronExpr = Annotated[str, Field(min_length=1), BeforeValidator(_cron)]
Endpoint = Annotated[
    str, Field(min_length=1, max_length=ENDPOINT_MAX, pattern=ENDPOINT_CHARS), BeforeValidator(_endpoint)
]
HttpMethod = Annotated[Method, BeforeValidator(_method)]
Description = _optional_text(DESCRIPTION_MAX, _description)
Payload = Annotated[Optional[dict[str, Any]], BeforeValidator(_payload)]
Timezone = Annotated[str, Field(min_length=1), BeforeValidator(_timezone)]
TimeoutSeconds = _bounded(1, MAX_TIMEOUT_SECONDS)
Retries = _bounded(0, MAX_RETRIES)
RetryDelaySeconds = _bounded(0, MAX_RETRY_DELAY_SECONDS)
JitterSeconds = _bounded(0, MAX_JITTER_SECONDS)
CatchupWindowSeconds = _bounded(1, MAX_CATCHUP_WINDOW_SECONDS)
Enabled = Annotated[bool, BeforeValidator(_enabled)]
# The kinds other than cron: not nullable in a request body (a kind is given or left out),
# so "exactly one of" is a rule the OpenAPI document can state (os/schemas.py's oneOf).
IntervalSeconds = _bounded(1, MAX_INTERVAL_SECONDS)
Instant = Annotated[int, Field(ge=0, le=MAX_EPOCH), BeforeValidator(_instant)]
# The window and the limits: null clears them.
OptionalInstant = Annotated[Optional[Annotated[int, Field(ge=0, le=MAX_EPOCH)]], BeforeValidator(_instant)]
MaxRuns = _optional_bounded(1, MAX_RUNS)
ExpiresAfterSeconds = _optional_bounded(1, MAX_EXPIRES_AFTER_SECONDS)
AlertAfterFailures = _optional_bounded(0, MAX_ALERT_AFTER_FAILURES)
Misfire = _one_of(MisfirePolicy)
Overlap = _one_of(OverlapPolicy)
OptionalText = _optional_text(TEXT_MAX)
LongText = _optional_text(DESCRIPTION_MAX)
UserId = _optional_text(TEXT_MAX, _user_id)
Queue = Annotated[
    Optional[Annotated[str, Field(max_length=QUEUE_MAX, pattern=QUEUE_CHARS)]], BeforeValidator(_queue)
]
Priority = Annotated[Optional[Annotated[int, Field(ge=0, le=MAX_PRIORITY)]], BeforeValidator(_priority)]


class ScheduleFields(BaseModel):
    """What a caller describes of a schedule: name, endpoint and exactly one of cron_expr,
    interval_seconds or run_at are required (check_kind)."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="unique per owner: letters, digits, space and _ . : @ / -")
    cron_expr: CronExpr = Field(
        None, description='5 fields, 6 with leading seconds ("*/5 * * * * *"), or a macro (@daily); '
        "exactly one of cron_expr, interval_seconds or run_at"
    )
    interval_seconds: IntervalSeconds = Field(
        None, description="every N seconds of elapsed time, from start_at (else from when the schedule was made)"
    )
    run_at: Instant = Field(None, description="one run at this instant (epoch seconds); then the schedule disables "
                            'itself with disabled_reason "completed"; at most 60 s in the past')
    start_at: OptionalInstant = Field(None, description="no slot before this instant (epoch seconds)")
    end_at: OptionalInstant = Field(
        None, description="no slot after this instant (epoch seconds, in the future, after start_at); then the "
        "schedule disables itself"
    )
    max_runs: MaxRuns = Field(None, description="at most this many slots ever fire (not with run_at); then the "
                              "schedule disables itself")
    expires_after_seconds: ExpiresAfterSeconds = Field(
        None, description="a slot whose first attempt cannot start within this many seconds of its time is "
        "skipped (a run row with status skipped)"
    )
    endpoint: Endpoint = Field(description='a route of this AgentOS, e.g. "/agents/my-agent/runs"')
    method: HttpMethod = "POST"
    description: Description = None
    payload: Payload = Field(
        None, description=f"a JSON object, at most {PAYLOAD_MAX_BYTES} bytes as JSON, no NUL character in any string"
    )
    timezone: Timezone = Field("UTC", description='an IANA name, e.g. "America/New_York"')
    timeout_seconds: TimeoutSeconds = 3600
    max_retries: Retries = 0
    retry_delay_seconds: RetryDelaySeconds = 60
    misfire_policy: Misfire = Field(
        "once", description="slots missed while no beat ran: skip none fire, once the newest fires, all fire "
        "(within catchup_window_seconds)"
    )
    overlap_policy: Overlap = Field(
        "forbid", description="forbid: a slot waits for the previous one's last attempt; allow: slots overlap"
    )
    jitter_seconds: JitterSeconds = Field(0, description="a fixed per-slot delay in [0, jitter_seconds]")
    catchup_window_seconds: CatchupWindowSeconds = 3600
    queue: Queue = Field(
        None, description="the Celery queue of its fires and of the workflow steps they start "
        "(a worker started with -Q <queue> takes them); null: the app's default queue"
    )
    priority: Priority = Field(
        None, description=f"the Celery message priority (0-{MAX_PRIORITY}) of its fires and their workflow steps: "
        "on Redis 0 is served first (kombu's priority steps 0, 3, 6, 9), on RabbitMQ the highest; null: none"
    )
    alert_after_failures: AlertAfterFailures = Field(
        None, description=f"this many failed slots in a row open an alert incident (a log warning, and one POST to "
        f"KERN_ALERT_WEBHOOK); 0: never; null: {DEFAULT_ALERT_AFTER_FAILURES}"
    )


class ScheduleSpec(ScheduleFields):
    """Every field a caller may set: ScheduleFields plus state, owner and provenance."""

    enabled: Enabled = True
    user_id: UserId = None
    managed_by: OptionalText = None
    target_type: OptionalText = None
    target_id: OptionalText = None
    disabled_reason: LongText = None
    created_by_run_id: OptionalText = None
    created_by_session_id: OptionalText = None
    updated_by_run_id: OptionalText = None
    updated_by_session_id: OptionalText = None


FIELDS: tuple[str, ...] = tuple(ScheduleSpec.model_fields)
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {key: info.default for key, info in ScheduleSpec.model_fields.items() if not info.is_required()}
)
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    key: TypeAdapter(Annotated[info.annotation, *info.metadata]) for key, info in ScheduleSpec.model_fields.items()
}
_IF_EXISTS: TypeAdapter[Any] = TypeAdapter(_one_of(IfExists))


# --- the boundary: pydantic's errors in, ValidationError out ------------------------------------


def message_of(error: Any) -> str:
    """The how-to-fix text of one pydantic error (an item of `exc.errors()`)."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KernError):
        return str(getattr(cause, "message", cause))
    if isinstance(cause, ValueError):
        return str(cause)
    return str(error.get("msg", "is invalid"))


def _translate(exc: PydanticValidationError, field: str) -> ValidationError:
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValidationError):  # the cron engine's CronError, as it raised it
        return cause
    return ValidationError(ERROR_NAMES.get(field, field), message_of(error))


def check(field: str, value: Any) -> Any:
    """`value` checked and normalised as schedule field `field`; raises `ValidationError`."""
    adapter = _ADAPTERS.get(field)
    if adapter is None:
        raise ValidationError(field, f"is not a schedule field (known: {', '.join(sorted(FIELDS))})")
    try:
        checked = adapter.validate_python(value)
    except PydanticValidationError as exc:
        raise _translate(exc, field) from exc
    # Postgres stores neither in text nor jsonb (SQLite no surrogates): refused for every field.
    if has_unstorable_text(checked):
        raise ValidationError(field, UNSTORABLE)
    return checked


def check_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Every given field checked, in the given order; an unknown name is an error too."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        check(unknown[0], None)
    return {key: check(key, value) for key, value in values.items()}


def check_kind(values: Mapping[str, Any], *, now: int | None = None, changed: Any = None) -> None:
    """The rules across a schedule's timing fields (checked values, the whole schedule's):
    exactly one of cron_expr (non-empty), interval_seconds or run_at; start_at before
    end_at; a run_at inside the window and without max_runs. With `now` (epoch s), the
    fields in `changed` (default: all) must not lie in the past: end_at after now, run_at
    at most RUN_AT_PAST_GRACE_S before it. Raises `ValidationError` naming the field."""
    given = [key for key in KIND_FIELDS if values.get(key) not in (None, "")]
    names = [ERROR_NAMES.get(key, key) for key in given]
    if not given:
        raise ValidationError("cron", 'give when it runs: one of cron (a cron expression such as "0 9 * * 1-5"), '
                                      "interval_seconds (every N seconds) or run_at (one run at an instant)")
    if len(given) > 1:
        raise ValidationError(
            names[1], f"a schedule has exactly one of cron, interval_seconds or run_at; {names[0]} is given too"
        )
    start, end, run_at = values.get("start_at"), values.get("end_at"), values.get("run_at")
    if start is not None and end is not None and end <= start:
        raise ValidationError("end_at", f"{_iso(end)} must be after start_at ({_iso(start)})")
    if run_at is not None:
        if values.get("max_runs") is not None:
            raise ValidationError("max_runs", "a run_at schedule runs once; max_runs is for cron and interval ones")
        if start is not None and run_at < start:
            raise ValidationError("run_at", f"{_iso(run_at)} is before start_at ({_iso(start)})")
        if end is not None and run_at > end:
            raise ValidationError("run_at", f"{_iso(run_at)} is after end_at ({_iso(end)})")
    if now is None:
        return
    changed = set(values) if changed is None else set(changed)
    if "end_at" in changed and end is not None and end <= now:
        raise ValidationError("end_at", f"{_iso(end)} is in the past (now {_iso(now)}): no slot could fire")
    if "run_at" in changed and run_at is not None and run_at < now - RUN_AT_PAST_GRACE_S:
        raise ValidationError(
            "run_at", f"{_iso(run_at)} is in the past (now {_iso(now)}); give a future instant"
        )


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def if_exists(value: Any) -> str:
    """What create does with a taken name: raise | update | skip."""
    try:
        return _IF_EXISTS.validate_python(value)  # type: ignore[no-any-return]
    except PydanticValidationError as exc:
        raise _translate(exc, "if_exists") from exc


def bounded_int(field: str, value: Any, low: int, high: int) -> int:
    """An integer argument in [low, high] (paging), with the message a schedule field would give."""
    try:
        return whole_number(value, low=low, high=high)
    except ValueError as exc:
        raise ValidationError(field, str(exc)) from exc
