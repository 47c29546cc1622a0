"""How long to wait between the attempts of one slot: pure functions, no I/O.

Contract:
- Retry number n (1-based: the wait before the 2nd attempt is retry 1) has the bound
  `min(cap, retry_delay_seconds * 2 ** (n - 1))`; bounds never shrink as n grows.
- The wait itself is "full jitter": uniform in [0, bound], so a burst of failures does not
  come back as a burst. A server's Retry-After is a floor (we never come back earlier
  than asked) but nothing exceeds `cap_seconds`.
- `retry_budget_seconds` is the longest all attempts of a slot can take when every
  attempt runs to its timeout and every wait is at its bound. Beat's lease does not call
  it: `scheduler.claims.lease_budget` counts every wait at the cap (one formula that
  SQL can evaluate too), which is never less than this budget (a property test holds
  them together), and so also covers a Retry-After floor that pushes a wait above its
  bound, up to the cap.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import datetime, timezone

DEFAULT_CAP_SECONDS = 3600


def _check(retry_delay_seconds: float, retry_number: int, cap_seconds: float) -> None:
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    if retry_delay_seconds < 0:
        raise ValueError(f"retry_delay_seconds must be >= 0, got {retry_delay_seconds}")
    if cap_seconds < 0:
        raise ValueError(f"cap_seconds must be >= 0, got {cap_seconds}")


def backoff_bound(retry_delay_seconds: int, retry_number: int, cap_seconds: int = DEFAULT_CAP_SECONDS) -> float:
    """The longest wait before retry `retry_number` (1-based)."""
    _check(retry_delay_seconds, retry_number, cap_seconds)
    try:
        # ldexp, not 2 ** n: a schedule with max_retries=10**6 must not build a huge int.
        raw = math.ldexp(float(retry_delay_seconds), retry_number - 1)
    except OverflowError:
        raw = math.inf
    return float(min(cap_seconds, raw))


def backoff_delay(
    retry_delay_seconds: int,
    retry_number: int,
    *,
    retry_after: float | None = None,
    cap_seconds: int = DEFAULT_CAP_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry `retry_number`: full jitter, floored by Retry-After, capped.

    Without `rng` the module-level generator of `random` is used: Python reseeds it in
    every forked child, so Celery prefork workers do not all draw the same "jitter".
    """
    bound = backoff_bound(retry_delay_seconds, retry_number, cap_seconds)
    uniform = rng.uniform if rng is not None else random.uniform
    # uniform(0, 0) is 0 without consuming randomness worth worrying about.
    jittered = min(bound, max(0.0, uniform(0.0, bound)))
    if retry_after is None or math.isnan(retry_after):
        return jittered
    # jittered <= bound, so this is never above max(bound, retry_after), and never above cap.
    return float(min(cap_seconds, max(max(0.0, retry_after), jittered)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date.

    A date in the past, or a negative number, means "now" (0.0); anything unparseable
    is None, so a broken header never breaks a retry.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        # RFC 9110 says digits only; decimals are accepted because servers send them.
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until_http_date(text: str, now: datetime | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    if current.tzinfo is None:
        current = current.replace(tzinfo=timezone.utc)
    return max(0.0, (when - current).total_seconds())


def retry_budget_seconds(
    timeout_seconds: int,
    max_retries: int,
    retry_delay_seconds: int,
    cap_seconds: int = DEFAULT_CAP_SECONDS,
) -> int:
    """Every attempt's timeout plus every wait at its bound, rounded up to whole seconds."""
    if timeout_seconds < 0 or max_retries < 0:
        raise ValueError("timeout_seconds and max_retries must be >= 0")
    total = float(timeout_seconds) * (max_retries + 1)
    for retry_number in range(1, max_retries + 1):
        bound = backoff_bound(retry_delay_seconds, retry_number, cap_seconds)
        if bound >= cap_seconds:
            # Every later bound is the cap too: no need to walk a million retries.
            total += float(cap_seconds) * (max_retries - retry_number + 1)
            break
        total += bound
    return int(math.ceil(total))
