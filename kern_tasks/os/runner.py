"""RunExecutor: runs agents (and, later, workflows) on a bounded thread pool, recording every
run in the RunStore: PENDING when accepted, RUNNING when a thread picks it up, then the
final status with its content and trace.

Promises:
- the event loop never runs an agent or waits on the database: runs go to the pool,
  store calls to worker threads;
- at most `max_workers` runs execute at once and at most `max_queued` more wait; beyond
  that a new run is refused (429, Retry-After) before anything is written;
- every accepted run ends in a terminal status: an agent that raises ends ERROR; at
  shutdown, runs still waiting end CANCELLED and runs still executing after
  `shutdown_grace_s` end ERROR (their late result is then ignored by the store);
- a caller that disconnects while waiting for a synchronous run, or while streaming one,
  does not cancel it: the run finishes and is recorded;
- a streamed run (`start(events=channel)`) sends its events to the channel (agno's event
  dicts, kern_tasks.agent.events) and its terminal event (RunCompleted, RunError,
  RunCancelled) only after the run is recorded, as the store has it; then ends the channel;
- `cancel` is cooperative: a waiting run ends CANCELLED at once, an executing agent stops
  at its next model or tool boundary and ends CANCELLED. An agent also stops there when
  its row was ended by someone else (a cancel that reached another replica).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from kern_tasks.agent import Agent
from kern_tasks.agent.events import TERMINAL_EVENTS, RunEvents
from kern_tasks.os.errors import RequestRefused
from kern_tasks.os.forms import RunRequest
from kern_tasks.os.run_stream import EventChannel
from kern_tasks.runs.store import TERMINAL, RunResult, RunStore, StoredRun

log = logging.getLogger("kern_tasks.os.runs")

RETRY_AFTER_S = 5
CANCELLED_BY_REQUEST = "the run was cancelled"


def _status(value: Any) -> str:
    value = getattr(value, "value", value)  # an enum
    return str(value).upper() if value else "COMPLETED"


def model_of(target: Any) -> dict[str, Any]:
    """agno's run_data model fields, when the target has a model."""
    model = getattr(target, "model", None)
    if model is None:
        return {}
    return {"model": getattr(model, "id", None), "model_provider": getattr(model, "provider", None)}


def result_of(output: Any, started_at: float, extra: dict[str, Any] | None = None) -> RunResult:
    """A RunResult from what `run()` returned (kern_tasks.agent.RunOutput or alike)."""
    status = _status(getattr(output, "status", None))
    error = getattr(output, "error", None)
    return RunResult(
        status=status if status in TERMINAL else "ERROR",
        content=getattr(output, "content", None),
        error=str(error) if error is not None else None,
        messages=getattr(output, "messages", None),
        metrics=getattr(output, "metrics", None),
        started_at=getattr(output, "started_at", None) or started_at,
        ended_at=getattr(output, "ended_at", None) or time.time(),
        spans=list(getattr(output, "spans", None) or []),
        extra=extra or {},
    )


class RunExecutor:
    def __init__(
        self,
        store: RunStore,
        *,
        max_workers: int = 8,
        max_queued: int = 1000,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        if max_workers < 1 or max_queued < 0:
            raise ValueError("need max_workers >= 1 and max_queued >= 0")
        self.store = store
        self.max_workers = max_workers
        self.capacity = max_workers + max_queued
        self.shutdown_grace_s = shutdown_grace_s
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: dict[str, tuple[Future[StoredRun | None], Any, EventChannel | None]] = {}
        self._cancel_requests: dict[str, threading.Event] = {}
        self._reserved = 0
        self._closed = False

    @property
    def in_progress(self) -> int:
        """Runs accepted by this process and not yet ended here (waiting or executing)."""
        with self._lock:
            return self._reserved

    # --- accepting --------------------------------------------------------------------

    def _reserve(self) -> None:
        with self._lock:
            if self._closed:
                raise RequestRefused("the server is shutting down", status_code=503, retry_after_s=RETRY_AFTER_S)
            if self._reserved >= self.capacity:
                raise RequestRefused(
                    f"too many runs in progress ({self._reserved}); retry later",
                    status_code=429,
                    retry_after_s=RETRY_AFTER_S,
                )
            self._reserved += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kern-run")

    def _release(self, run_id: str | None = None) -> None:
        with self._lock:
            self._reserved -= 1
            if run_id is not None:
                self._in_flight.pop(run_id, None)
                self._cancel_requests.pop(run_id, None)

    async def start(
        self, run_type: str, target: Any, request: RunRequest, *, events: EventChannel | None = None
    ) -> tuple[StoredRun, Future]:
        """Record the run (PENDING) and queue it; the future resolves to the finished run.
        With `events`, the run streams its events there (and ends it)."""
        self._reserve()
        try:
            stored = await asyncio.to_thread(
                self.store.start,
                run_type=run_type,
                component_id=target.id,
                component_name=getattr(target, "name", None),
                message=request.message,
                session_id=request.session_id,
                user_id=request.user_id,
            )
        except BaseException:
            self._release()
            raise
        with self._lock:
            pool = None if self._closed else self._pool
            if pool is not None:
                # Under the lock: the run's own release (another thread) waits for this entry.
                cancel = self._cancel_requests[stored.run_id] = threading.Event()
                future = pool.submit(self._execute, target, stored, request.message, events, cancel)
                self._in_flight[stored.run_id] = (future, target, events)
        if pool is None:  # shut down between the reservation and now: end the run at once
            self._release()
            if events is not None:
                events.end()
            await asyncio.to_thread(self._abandon, stored.run_id, target, "CANCELLED", "the server shut down")
            raise RequestRefused("the server is shutting down", status_code=503, retry_after_s=RETRY_AFTER_S)
        return stored, future

    @staticmethod
    async def wait(future: Future) -> StoredRun | None:
        """Wait for a run without cancelling it if the waiting request goes away."""
        return await asyncio.shield(asyncio.wrap_future(future))

    # --- cancelling --------------------------------------------------------------------

    def cancel(self, run_id: str) -> StoredRun | None:
        """Ask run `run_id` to stop (see the module's promises); the run as stored now.
        A run of this process is told directly; any other active run is ended CANCELLED in
        the store, which the process running it notices at its next boundary."""
        with self._lock:
            entry = self._in_flight.get(run_id)
            request = self._cancel_requests.get(run_id)
        if request is not None:
            request.set()
        if entry is not None:
            future, target, events = entry
            if future.cancel():  # still waiting for a thread: it never starts
                self._release(run_id)
                self._abandon(run_id, target, "CANCELLED", CANCELLED_BY_REQUEST, events)
            return self.store.get(run_id)
        stored = self.store.get(run_id)
        if stored is not None and stored.is_active:
            return self.store.finish(run_id, RunResult(status="CANCELLED", error=CANCELLED_BY_REQUEST))
        return stored

    def _stop_asked(self, run_id: str, request: threading.Event) -> bool:
        if request.is_set():
            return True
        stored = self.store.get(run_id)
        return stored is None or not stored.is_active

    # --- executing (pool threads) -----------------------------------------------------

    def _execute(
        self, target: Any, stored: StoredRun, message: str, events: EventChannel | None, cancel: threading.Event
    ) -> StoredRun | None:
        run_id = stored.run_id
        finished: StoredRun | None = None
        held: list[dict[str, Any]] = []  # the agent's own terminal event
        try:
            if not self.store.mark_running(run_id):
                finished = self.store.get(run_id)  # ended meanwhile (shutdown, cancel)
                return finished
            history = self.store.history(stored.session_id, before_index=stored.run_index)
            started = time.time()
            try:
                kwargs: dict[str, Any] = {}
                if isinstance(target, Agent):  # it streams and stops when asked
                    kwargs["cancelled"] = lambda: self._stop_asked(run_id, cancel)
                    if events is not None:
                        kwargs["on_event"] = lambda event: _forward(events, event, held)
                elif events is not None:
                    _run_events(events, stored, target).emit("RunStarted", **_model_fields(target))
                output = target.run(
                    message,
                    session_id=stored.session_id,
                    user_id=stored.user_id,
                    run_id=run_id,
                    history=history or None,
                    **kwargs,
                )
                result = result_of(output, started, model_of(target))
            except Exception as exc:  # noqa: BLE001 - an agent bug ends its run, not the pool
                log.exception("run %s of %s %s raised", run_id, stored.run_type, target.id)
                result = RunResult(
                    status="ERROR", error=f"{type(exc).__name__}: {exc}", started_at=started, ended_at=time.time()
                )
            finished = self.store.finish(run_id, result, component_name=getattr(target, "name", None))
            return finished
        except Exception:
            log.exception("run %s could not be recorded", run_id)
            raise
        finally:
            self._release(run_id)
            if events is not None:
                if finished is not None:
                    _terminal_event(_run_events(events, stored, target), finished, held)
                events.end()

    def _abandon(self, run_id: str, target: Any, status: str, error: str, events: EventChannel | None = None) -> None:
        """End a run that never ran (or overran the shutdown grace); end its stream too when
        its thread never will (a run that never started)."""
        finished = None
        try:
            finished = self.store.finish(
                run_id, RunResult(status=status, error=error), component_name=getattr(target, "name", None)
            )
        except Exception:  # noqa: BLE001 - shutdown goes on; the run stays visible as active
            log.exception("could not end run %s at shutdown", run_id)
        if events is not None:
            if finished is not None:
                _terminal_event(_run_events(events, finished, target), finished, [])
            events.end()

    # --- stopping ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Cancel waiting runs, give executing ones `shutdown_grace_s`, end the rest ERROR."""
        with self._lock:
            self._closed = True
            pool, in_flight = self._pool, dict(self._in_flight)
        if pool is None:
            return
        running = []
        for run_id, (future, target, events) in in_flight.items():
            if future.cancel():
                self._release(run_id)
                self._abandon(run_id, target, "CANCELLED", "the server shut down before the run started", events)
            else:
                running.append((run_id, future, target))
        _, not_done = wait([f for _, f, _ in running], timeout=self.shutdown_grace_s)
        for run_id, future, target in running:
            if future in not_done:
                self._abandon(run_id, target, "ERROR", "the server shut down during the run")
        pool.shutdown(wait=False, cancel_futures=True)


def _forward(events: EventChannel, event: dict[str, Any], held: list[dict[str, Any]]) -> None:
    """An agent's event to its stream; its terminal event waits for the store (`_execute`)."""
    if event.get("event") in TERMINAL_EVENTS:
        held.append(event)
    else:
        events.put(event)


def _model_fields(target: Any) -> dict[str, Any]:
    model = model_of(target)
    return {"model": model.get("model") or "", "model_provider": model.get("model_provider") or ""}


def _run_events(events: EventChannel, stored: StoredRun, target: Any) -> RunEvents:
    return RunEvents(events.put, run_id=stored.run_id, session_id=stored.session_id,
                     agent_id=stored.component_id or getattr(target, "id", ""), agent_name=getattr(target, "name", None))


TERMINAL_EVENT_OF = {"COMPLETED": "RunCompleted", "CANCELLED": "RunCancelled"}


def _terminal_event(events: RunEvents, finished: StoredRun, held: list[dict[str, Any]]) -> None:
    """The event a run ends with: the agent's own if the store agrees, else made from the
    run as recorded (it ended otherwise: shutdown, a cancel from elsewhere)."""
    if held and held[-1].get("event") == TERMINAL_EVENT_OF.get(finished.status, "RunError"):
        events.sink(held[-1])
        return
    data = finished.run_data
    if finished.status == "COMPLETED":
        events.completed(content=data.get("content"), metrics=data.get("metrics") or {})
    elif finished.status == "CANCELLED":
        events.cancelled(data.get("error") or CANCELLED_BY_REQUEST)
    else:
        events.error(data.get("error") or f"the run ended {finished.status}", error_type="RunError")
