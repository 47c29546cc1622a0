"""Announcing an incident: one structured log warning, and a JSON POST to
KERN_ALERT_WEBHOOK when it is set.

The POST never runs on the caller's thread: `Notifier.send` puts the body on a queue that a
daemon thread of this process drains (one per process, started on first use, again in a
forked child), each POST with a short timeout (POST_TIMEOUT_S), so a slow or dead receiver
never holds a beat tick, a claim transaction or a fire. A POST that fails (no answer, or
5xx/429) is tried again after RETRY_WAITS_S, then given up and logged: the incident row and
its log line stay the record (a process that stops meanwhile takes its unsent POSTs along).

The body (`payload`):

    {"event": "opened" | "resolved", "kind": "overdue" | "failing" | "no_beat",
     "incident_id": "...", "message": "...", "schedule_id": "..." | null,
     "schedule_name": "..." | null, "slot": 1796...| null, "slot_at": "2026-12-02T07:00:00Z" | null,
     "last_error": "..." | null, "opened_at": 1796..., "resolved_at": 1796... | null}
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from kern_tasks.alerts.incidents import Incident

log = logging.getLogger("kern_tasks.alerts")

POST_TIMEOUT_S = 5.0
RETRY_WAITS_S = (1.0, 4.0)  # waits before the second and third tries of one POST
MAX_WAITING = 1000  # beyond this many unsent bodies, new ones are dropped (and logged)


def payload(event: str, incident: Incident) -> dict[str, Any]:
    slot_at = datetime.fromtimestamp(incident.slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if incident.slot else None
    return {
        "event": event, "kind": incident.kind, "incident_id": incident.id, "message": incident.message,
        "schedule_id": incident.schedule_id, "schedule_name": incident.schedule_name, "slot": incident.slot,
        "slot_at": slot_at, "last_error": incident.last_error, "opened_at": incident.opened_at,
        "resolved_at": incident.resolved_at,
    }  # fmt: skip


class Notifier:
    """Log and POST incidents of one process (see the module docstring)."""

    def __init__(self, url: str | None, *, timeout_s: float = POST_TIMEOUT_S,
                 retry_waits_s: tuple[float, ...] = RETRY_WAITS_S) -> None:  # fmt: skip
        self.url = url or None
        self.timeout_s = timeout_s
        self.retry_waits_s = retry_waits_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(MAX_WAITING)
        self._lock = threading.Lock()
        self._pid: int | None = None

    def announce(self, event: str, incident: Incident) -> None:
        body = payload(event, incident)
        if event == "opened":
            log.warning("alert %s: %s", incident.kind, incident.message, extra={"alert": body})
        else:
            log.info("alert %s resolved: %s", incident.kind, incident.message, extra={"alert": body})
        if self.url is not None:
            self.send(body)

    def send(self, body: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.error("alert webhook: %d bodies waiting; incident %s not sent", MAX_WAITING, body.get("incident_id"))

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child (threads do not survive a fork)
                self._queue = queue.Queue(MAX_WAITING)
                threading.Thread(target=self._drain, name="kern-alert-webhook", daemon=True).start()
                self._pid = os.getpid()

    def _drain(self) -> None:
        # httpx (and the rich it loads) only once a webhook is set and something is sent:
        # beat and workers import this module, most of them never post.
        import httpx

        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                body = self._queue.get()
                self._post(client, body)
                self._queue.task_done()

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> None:
        import httpx  # already loaded by _drain

        for wait in (*self.retry_waits_s, None):
            try:
                answer = client.post(self.url, json=body)  # type: ignore[arg-type]
                problem = f"answered {answer.status_code}"
                if answer.status_code < 300:
                    return
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # the receiver refuses this body: trying again changes nothing
            except httpx.HTTPError as exc:
                problem = f"unreachable ({type(exc).__name__})"
            if wait is not None:
                time.sleep(wait)
        log.warning("alert webhook %s for incident %s (%s %s): not sent", problem, body["incident_id"],
                    body["kind"], body["event"])  # fmt: skip



_notifiers: dict[str | None, Notifier] = {}
_notifiers_lock = threading.Lock()


def notifier_for(url: str | None) -> Notifier:
    """The process's one Notifier for a webhook URL (None: log only)."""
    with _notifiers_lock:
        if url not in _notifiers:
            _notifiers[url] = Notifier(url)
        return _notifiers[url]
