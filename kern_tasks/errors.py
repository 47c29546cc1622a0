"""Every error kern_tasks raises on purpose.

    KernError
     ├── ValidationError (ValueError)     bad input; nothing was written     -> HTTP 422
     │    ├── CronError                   a cron expression or time zone is wrong
     │    └── CelError                    a workflow's CEL expression cannot be used
     ├── NotFound (LookupError)           no such schedule or run           -> HTTP 404
     ├── Conflict (ValueError)            a name is taken, or the schedule's -> HTTP 409
     │    │                               state refuses the operation
     │    └── ScheduleDisabled            a trigger of a disabled schedule
     └── NotMigrated (RuntimeError)       the database lacks our tables and   -> refuses to start
                                          auto-upgrade is off                    (HTTP 503)

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


class CelError(ValidationError):
    """A CEL expression cannot be used where it was given (raised when a workflow is
    defined: the message names the expression, the position and the variables allowed)."""


class NotFound(KernError, LookupError):
    """The schedule or run asked for does not exist."""


class Conflict(KernError, ValueError):
    """The write would break a uniqueness rule (a schedule name is taken), or the schedule's
    state refuses the operation. A ValueError, as agno's ScheduleManager raises for a taken
    name, so agno code that catches ValueError keeps working."""


class ScheduleDisabled(Conflict):
    """The operation needs an enabled schedule (a trigger): enable it first."""


class NotMigrated(KernError, RuntimeError):
    """The database lacks kern_tasks' tables, or is behind its migrations, and automatic
    upgrades are off. The message names `kern-tasks db upgrade`; processes stop at start."""
