"""How to fix a schedule error, said to a model: `hint_for(exc)`.

The error messages of kern_tasks already name what is wrong (which cron field, which
zone); a hint adds what to send instead: cron examples, the IANA name behind an
abbreviation such as "ET", the right spelling of a zone given in the wrong case.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache

from kern_tasks.errors import Conflict, CronError, KernError, NotFound, ScheduleDisabled, ValidationError

CRON_EXAMPLES = (
    'Use 5 fields "minute hour day-of-month month day-of-week", e.g. "0 9 * * *" (every day at 09:00), '
    '"0 9 * * 1-5" (weekdays at 09:00), "*/15 * * * *" (every 15 minutes), "30 8 1 * *" (08:30 on the 1st).'
)

# How to say when a schedule runs, one way per kind (tools/scheduler.py's arguments).
KIND_EXAMPLES = (
    'Say when it runs with exactly one of: cron for calendar times ("0 9 * * 1-5"), interval_seconds for '
    '"every N seconds" (90), run_in_seconds for "in 20 minutes" (1200) or run_at for one local date and time '
    '("2026-12-24T09:00").'
)
TIME_EXAMPLES = (
    'Write a local date and time such as "2026-12-24T09:00" (read in the schedule\'s timezone), in the future; '
    'for "in 20 minutes" pass run_in_seconds=1200 instead of run_at.'
)
KIND_FIELDS = {"cron", "interval_seconds", "run_at", "run_in_seconds"}

# Abbreviations and colloquial names people use for zones -> the IANA zone meant.
ZONE_ALIASES = {
    "ET": "America/New_York", "EST": "America/New_York", "EDT": "America/New_York",
    "EASTERN": "America/New_York", "EASTERN TIME": "America/New_York",
    "CT": "America/Chicago", "CST": "America/Chicago", "CDT": "America/Chicago", "CENTRAL": "America/Chicago",
    "MT": "America/Denver", "MST": "America/Denver", "MDT": "America/Denver", "MOUNTAIN": "America/Denver",
    "PT": "America/Los_Angeles", "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
    "PACIFIC": "America/Los_Angeles", "BST": "Europe/London", "GMT": "Europe/London",
    "CEST": "Europe/Berlin", "CET": "Europe/Berlin", "IST": "Asia/Kolkata", "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney", "AEDT": "Australia/Sydney", "SGT": "Asia/Singapore", "HKT": "Asia/Hong_Kong",
}
_ZONE_IN_MESSAGE = re.compile(r'unknown time zone "([^"]*)"')


def hint_for(exc: KernError) -> str | None:
    """A sentence on how to fix `exc`, or None when its message says it all."""
    field = getattr(exc, "field", None)
    if isinstance(exc, CronError) and field == "cron":
        return CRON_EXAMPLES
    message = getattr(exc, "message", "")
    if isinstance(exc, ValidationError) and field in KIND_FIELDS and (
        "exactly one of" in message or "give when it runs" in message
    ):
        return KIND_EXAMPLES
    if isinstance(exc, ValidationError) and field in {"run_at", "start_at", "end_at"}:
        return TIME_EXAMPLES
    if isinstance(exc, ValidationError) and field == "max_runs" and "runs once" in message:
        return "Leave max_runs out for a one-off (run_at or run_in_seconds): it runs once."
    if isinstance(exc, CronError) and field == "timezone":
        match = _ZONE_IN_MESSAGE.search(str(exc))
        return zone_hint(match.group(1)) if match else None
    if isinstance(exc, NotFound):
        return "Call list_schedules to see the ids and names of existing schedules."
    if isinstance(exc, ScheduleDisabled):
        return "Call enable_schedule first, then trigger it again."
    if isinstance(exc, Conflict):
        return "Choose another name, or update the schedule that has this name."
    if isinstance(exc, ValidationError) and field == "endpoint":
        return 'Give only the path, e.g. "/agents/my-agent/runs" or "/workflows/my-workflow/runs".'
    return None


def zone_hint(given: str) -> str:
    """Suggest the IANA zone meant by `given` (an abbreviation, a city, a miscased name)."""
    suggestion = suggest_zone(given)
    if suggestion:
        return f'Use timezone="{suggestion}" (IANA names only; "{given}" is not one).'
    return ('Use an IANA time zone name such as "America/New_York" (ET), "America/Chicago" (CT), '
            '"America/Los_Angeles" (PT), "Europe/London", "Europe/Berlin", "Asia/Tokyo" or "UTC".')


def suggest_zone(given: str) -> str | None:
    key = " ".join(given.replace("_", " ").split()).upper()
    if key in ZONE_ALIASES:
        return ZONE_ALIASES[key]
    folded = key.replace(" ", "_").lower()
    zones = _zones_by_folded_name()
    if folded in zones:
        return zones[folded]
    # A bare city ("new york", "Berlin") matches the last part of one zone.
    by_city = [zone for name, zone in zones.items() if name.rsplit("/", 1)[-1] == folded]
    return by_city[0] if len(by_city) == 1 else None


@lru_cache(maxsize=1)
def _zones_by_folded_name() -> dict[str, str]:
    return {zone.lower(): zone for zone in zoneinfo.available_timezones()}
