"""Every error kern_tasks raises on purpose.

    KernError
     ├── ValidationError (ValueError)     bad input; nothing was written     -> HTTP 422
     │    └── CronError                   a cron expression or time zone is wrong
     ├── NotFound (LookupError)           no such schedule or run           -> HTTP 404
     └── Conflict                         a name is taken                    -> HTTP 409

Each message names what is wrong, so it can be shown to a person (or a model) as is.
"""

from __future__ import annotations


class KernError(Exception):
    """Base class of every error kern_tasks raises deliberately."""


class ValidationError(KernError, ValueError):
    """Input is invalid. `field` names the offending argument; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CronError(ValidationError):
    """A cron expression or time zone cannot be used."""


class NotFound(KernError, LookupError):
    """The schedule or run asked for does not exist."""


class Conflict(KernError):
    """The write would break a uniqueness rule (a schedule name is taken)."""
