"""Log lines as JSON (KERN_LOG_FORMAT=json): one object per line from web, beat and worker.

    {"time": "2026-12-02T07:01:02.345Z", "level": "INFO", "logger": "kern_tasks.fire",
     "message": "fired digest: POST /hook -> success 200 in 0.01s (...)", "process": "MainProcess",
     "pid": 4242, "task": "kern.fire", "task_id": "...",
     "fire": {"schedule_id": "...", "schedule": "digest", "attempt_id": "...", "slot": 1796...,
              "attempt": 1, "endpoint": "/hook", "status": "success", "run_id": null, "session_id": null}}

Every record gets time (UTC), level, logger, message, process and pid; a record logged
inside a Celery task gets its `task` and `task_id` (and a kern.fire its `attempt_id`, the
task's argument); fields a caller passes as `extra=` (the fire line's `fire`) are kept as
they are; an exception is `exc_info` (the formatted traceback, one string).

Wiring, one place per process type:
- worker and beat: `install(app, settings)` (kern_tasks/app.py) calls `use(settings)`, which
  connects Celery's `after_setup_logger` and `after_setup_task_logger` signals: Celery sets
  logging up as it always does (levels, --logfile, print() redirected into records), then
  every handler it made gets `JsonFormatter`. Celery's start-up banners are plain text, so
  in JSON they are off, as with `--quiet` (`quiet_banners`); what is logged or warned
  before Celery's set-up (its SecurityWarning for root) goes through a JSON handler too. Celery still prints one plain
  line on shutdown ("worker: Warm shutdown (MainProcess)"), on its own: not a log record.
- web: `kern-tasks serve` hands uvicorn `uvicorn_log_config(settings)`: uvicorn's loggers
  (error and access) and the root logger (the app's) write JSON to stderr.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery import signals
from celery._state import get_current_task  # what Celery's own TaskFormatter reads

from kern_tasks.dispatch import TASK_FIRE
from kern_tasks.settings import Settings

# What every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Celery's TaskFormatter (which our formatter replaces on task loggers) sets these itself.
_STANDARD |= {"task_id", "task_name"}
# uvicorn's copy of the message with terminal colours.
_STANDARD.add("color_message")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "pid": record.process,
        }
        task = get_current_task()
        if task is not None and task.request.id is not None:
            entry["task"] = task.name
            entry["task_id"] = task.request.id
            if task.name == TASK_FIRE and task.request.args:
                entry["attempt_id"] = task.request.args[0]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _json_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery has set `logger` up (after_setup_logger / after_setup_task_logger): every
    handler it gave it writes JSON from now on."""
    for handler in (logger.handlers if logger is not None else []):
        handler.setFormatter(JsonFormatter())


def quiet_banners(app: Any) -> None:
    """`celery -A ... worker|beat` print an ASCII banner before logging starts; in JSON that
    is noise a log shipper cannot parse, so these apps start as with `--quiet`."""
    worker_cls, beat_cls = app.Worker, app.Beat

    class QuietWorker(worker_cls):  # type: ignore[misc, valid-type]
        def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
            super().on_before_init(quiet=True, **kwargs)

    class QuietBeat(beat_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "quiet": True})

    app.Worker, app.Beat = QuietWorker, QuietBeat


def use(settings: Settings, app: Any = None) -> None:
    """Apply `settings.log_format` to Celery's logging in this process (and to `app`'s
    banners). Text: Celery's own formats, unchanged."""
    if settings.log_format != "json":
        return
    # Until Celery sets logging up (it replaces the root logger's handlers), what is logged
    # or warned (Celery's SecurityWarning for root, say) is JSON on stderr too.
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        early = logging.StreamHandler()
        early.setFormatter(JsonFormatter())
        root.addHandler(early)
    signals.after_setup_logger.connect(_json_handlers, weak=False, dispatch_uid="kern_tasks.logs")
    signals.after_setup_task_logger.connect(_json_handlers, weak=False, dispatch_uid="kern_tasks.logs.task")
    if app is not None:
        quiet_banners(app)


def uvicorn_log_config(settings: Settings) -> dict[str, Any] | None:
    """uvicorn's `log_config` for `kern-tasks serve`: None keeps uvicorn's own (text); JSON
    sends uvicorn's loggers and the root logger (the app's, INFO and up) to stderr as JSON."""
    if settings.log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": "INFO"},
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }

