"""Checks every schedule field before anything is written: one function per field.

Each returns the normalised value or raises `ValidationError` naming the field, with a
message that says how to fix it (it may be shown to a model as is). The rules, bounds
and defaults are `kern_tasks.scheduler.spec`'s; these are its per-field entry points.
"""

from __future__ import annotations

from typing import Any

from kern_tasks.scheduler import spec
from kern_tasks.scheduler.spec import bounded_int, if_exists

__all__ = [
    "bounded_int", "catchup_window_seconds", "cron_expr", "description", "enabled", "endpoint", "fields",
    "if_exists", "jitter_seconds", "max_retries", "method", "misfire_policy", "name", "optional_str",
    "overlap_policy", "payload", "retry_delay_seconds", "timeout_seconds", "timezone", "user_id",
]


def name(value: Any) -> str:
    return spec.check("name", value)  # type: ignore[no-any-return]


def endpoint(value: Any) -> str:
    return spec.check("endpoint", value)  # type: ignore[no-any-return]


def method(value: Any) -> str:
    return spec.check("method", value)  # type: ignore[no-any-return]


def description(value: Any) -> str | None:
    return spec.check("description", value)  # type: ignore[no-any-return]


def payload(value: Any) -> dict[str, Any] | None:
    return spec.check("payload", value)  # type: ignore[no-any-return]


def timeout_seconds(value: Any) -> int:
    return spec.check("timeout_seconds", value)  # type: ignore[no-any-return]


def max_retries(value: Any) -> int:
    return spec.check("max_retries", value)  # type: ignore[no-any-return]


def retry_delay_seconds(value: Any) -> int:
    return spec.check("retry_delay_seconds", value)  # type: ignore[no-any-return]


def jitter_seconds(value: Any) -> int:
    return spec.check("jitter_seconds", value)  # type: ignore[no-any-return]


def catchup_window_seconds(value: Any) -> int:
    return spec.check("catchup_window_seconds", value)  # type: ignore[no-any-return]


def enabled(value: Any) -> bool:
    return spec.check("enabled", value)  # type: ignore[no-any-return]


def misfire_policy(value: Any) -> str:
    return spec.check("misfire_policy", value)  # type: ignore[no-any-return]


def overlap_policy(value: Any) -> str:
    return spec.check("overlap_policy", value)  # type: ignore[no-any-return]


def user_id(value: Any) -> str | None:
    return spec.check("user_id", value)  # type: ignore[no-any-return]


def optional_str(field: str, value: Any) -> str | None:
    """One of the optional text fields (managed_by, target_id, disabled_reason, ...)."""
    return spec.check(field, value)  # type: ignore[no-any-return]


def cron_expr(value: Any) -> str:
    """Raises `CronError` for an expression the engine refuses; errors name the field "cron"."""
    return spec.check("cron_expr", value)  # type: ignore[no-any-return]


def timezone(value: Any) -> str:
    """Raises `CronError` for a zone that is not an IANA name."""
    return spec.check("timezone", value)  # type: ignore[no-any-return]


def fields(values: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise every given field; unknown names are an error too."""
    return spec.check_fields(values)
