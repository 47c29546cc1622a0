"""Checks every schedule field before anything is written.

Each check returns the normalised value or raises `ValidationError` naming the field,
with a message that says how to fix it (it may be shown to a model as is).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import unquote

from kern_tasks.db.tables import MISFIRE_POLICIES, OVERLAP_POLICIES
from kern_tasks.errors import ValidationError
from kern_tasks.scheduler import cron as cron_engine

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
IF_EXISTS = ("raise", "update", "skip")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@/\-]{0,254}$")
ENDPOINT_MAX = 2048
DESCRIPTION_MAX = 10_000
PAYLOAD_MAX_BYTES = 256 * 1024
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_RETRIES = 20
MAX_RETRY_DELAY_SECONDS = 24 * 3600
MAX_JITTER_SECONDS = 3600
MAX_CATCHUP_WINDOW_SECONDS = 30 * 24 * 3600


def name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name", "must be a non-empty string")
    value = value.strip()
    if len(value) > 255:
        raise ValidationError("name", f"must be at most 255 characters, got {len(value)}")
    if not NAME_PATTERN.match(value):
        raise ValidationError(
            "name",
            f'"{value}" has characters outside letters, digits, space and _ . : @ / - '
            "(and must start with a letter or digit)",
        )
    return value


def endpoint(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("endpoint", 'must be a path such as "/agents/my-agent/runs"')
    if "://" in value or value.startswith("//"):
        raise ValidationError(
            "endpoint",
            f'"{value}" is a full URL; give only the path (such as "/agents/my-agent/runs"): '
            "schedules fire at KERN_BASE_URL + endpoint",
        )
    if not value.startswith("/"):
        raise ValidationError("endpoint", f'"{value}" must start with "/"')
    if len(value) > ENDPOINT_MAX:
        raise ValidationError("endpoint", f"must be at most {ENDPOINT_MAX} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value) or "\\" in value:
        raise ValidationError(
            "endpoint", f"{value!r} must not contain whitespace, control characters or backslashes"
        )
    # Percent-decoded too: proxies and servers resolve "%2e%2e" (and "%2f") like "..".
    if any(part == ".." for part in unquote(value.split("?")[0]).split("/")):
        raise ValidationError("endpoint", f'"{value}" must not contain ".." segments')
    return value


def method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise ValidationError("method", f"{value!r} is not one of {', '.join(METHODS)}")
    return value.upper()


def description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("description", "must be a string")
    if len(value) > DESCRIPTION_MAX:
        raise ValidationError("description", f"must be at most {DESCRIPTION_MAX} characters")
    return value


def payload(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("payload", f"must be a JSON object (a dict), got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("payload", f"must be JSON-serialisable: {exc}") from exc
    if len(encoded.encode()) > PAYLOAD_MAX_BYTES:
        raise ValidationError("payload", f"must be at most {PAYLOAD_MAX_BYTES} bytes as JSON")
    return json.loads(encoded)  # a plain copy: what is stored is what we checked


def bounded_int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, f"must be an integer between {low} and {high}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ValidationError(field, f"must be a whole number, got {value}")
    value = int(value)
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}, got {value}")
    return value


def timeout_seconds(value: Any) -> int:
    return bounded_int("timeout_seconds", value, 1, MAX_TIMEOUT_SECONDS)


def max_retries(value: Any) -> int:
    return bounded_int("max_retries", value, 0, MAX_RETRIES)


def retry_delay_seconds(value: Any) -> int:
    return bounded_int("retry_delay_seconds", value, 0, MAX_RETRY_DELAY_SECONDS)


def jitter_seconds(value: Any) -> int:
    return bounded_int("jitter_seconds", value, 0, MAX_JITTER_SECONDS)


def catchup_window_seconds(value: Any) -> int:
    return bounded_int("catchup_window_seconds", value, 1, MAX_CATCHUP_WINDOW_SECONDS)


def enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("enabled", "must be true or false")
    return value


def choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def misfire_policy(value: Any) -> str:
    return choice("misfire_policy", value, MISFIRE_POLICIES)


def overlap_policy(value: Any) -> str:
    return choice("overlap_policy", value, OVERLAP_POLICIES)


def if_exists(value: Any) -> str:
    return choice("if_exists", value, IF_EXISTS)


def optional_str(field: str, value: Any, max_length: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationError(field, f"must be a string of at most {max_length} characters")
    return value


def user_id(value: Any) -> str | None:
    value = optional_str("user_id", value)
    # agno's executor refuses blank owners and its own reserved name when firing.
    if value is not None and (not value.strip() or value == "__scheduler__"):
        raise ValidationError("user_id", f"{value!r} cannot own a schedule: give a real user id or none")
    return value


def cron_expr(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("cron", 'must be a cron expression such as "0 9 * * 1-5"')
    cron_engine.parse(value)
    return value.strip()


def timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("timezone", 'must be an IANA name such as "America/New_York"')
    cron_engine.validate_timezone(value)
    return value


# Field name -> check, for every column a caller may set.
FIELD_CHECKS = {
    "name": name,
    "cron_expr": cron_expr,
    "endpoint": endpoint,
    "method": method,
    "description": description,
    "payload": payload,
    "timezone": timezone,
    "timeout_seconds": timeout_seconds,
    "max_retries": max_retries,
    "retry_delay_seconds": retry_delay_seconds,
    "enabled": enabled,
    "misfire_policy": misfire_policy,
    "catchup_window_seconds": catchup_window_seconds,
    "overlap_policy": overlap_policy,
    "jitter_seconds": jitter_seconds,
    "user_id": lambda v: user_id(v),
    "managed_by": lambda v: optional_str("managed_by", v),
    "target_type": lambda v: optional_str("target_type", v),
    "target_id": lambda v: optional_str("target_id", v),
    "disabled_reason": lambda v: optional_str("disabled_reason", v, DESCRIPTION_MAX),
    "created_by_run_id": lambda v: optional_str("created_by_run_id", v),
    "created_by_session_id": lambda v: optional_str("created_by_session_id", v),
    "updated_by_run_id": lambda v: optional_str("updated_by_run_id", v),
    "updated_by_session_id": lambda v: optional_str("updated_by_session_id", v),
}


def fields(values: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise every given field; unknown names are an error too."""
    unknown = sorted(set(values) - set(FIELD_CHECKS))
    if unknown:
        raise ValidationError(unknown[0], f"is not a schedule field (known: {', '.join(sorted(FIELD_CHECKS))})")
    return {key: FIELD_CHECKS[key](value) for key, value in values.items()}
