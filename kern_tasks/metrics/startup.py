"""KERN_METRICS_PORT for `celery beat` and `celery worker`: `connect` (which
kern_tasks.app.install calls) hooks Celery's start signals, and the server starts in the
main process (beat_init; celeryd_after_setup, before a prefork pool forks) when the port is
set. A module apart from exposition.py so that a beat or worker without the port never
imports prometheus_client (and the http.server, wsgiref and threading bits it brings):
exposition.py is imported only once a port is to be served.
"""

from __future__ import annotations

from typing import Any, Callable

from celery import signals

from kern_tasks.runtime import runtime_for


def connect() -> None:
    """Serve KERN_METRICS_PORT from `celery beat` (beat_init) and `celery worker`
    (celeryd_after_setup: the main process, before the pool forks). Once per process."""
    signals.beat_init.connect(_on_start("beat"), weak=False, dispatch_uid="kern_tasks.metrics.beat")
    signals.celeryd_after_setup.connect(_on_start("worker"), weak=False, dispatch_uid="kern_tasks.metrics.worker")


def _on_start(role: str) -> Callable[..., None]:
    def start(sender: Any = None, instance: Any = None, **_: Any) -> None:
        app = getattr(instance if instance is not None else sender, "app", None)
        if app is None:
            return
        runtime = runtime_for(app)
        port = runtime.settings.metrics_port
        if port is None:
            return  # no port: prometheus_client stays unimported (the module docstring)
        from kern_tasks.metrics import exposition

        if port not in exposition.serving:
            exposition.serve_port(port, database=(lambda: runtime_for(app).db) if role == "beat" else None)

    return start
