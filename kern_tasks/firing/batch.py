"""Several calls at once, their results handed on in groups as they end.

One `kern.fire_batch` message carries several attempts of a beat tick; the task takes
them in one transaction, then runs their HTTP calls here: each call on a thread of its
own (http.fire is synchronous and keeps its own deadline), so a slow target never holds
the others back, and what has ended is handed to `on_done` in groups (one transaction
per group for the caller): the first result, plus whatever ends within `linger_s` of it.

The threads come from one pool per process, made lazily and never shared across a fork;
it grows to what is in flight (at most the tasks a process runs at once times the batch
size) and reuses idle threads, so a batch does not start threads of its own.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")

# Results that end this close together are recorded together (one transaction).
LINGER_S = 0.05
# More than a process ever has in flight (tasks at once x batch size), so a call never
# waits for a thread.
MAX_THREADS = 4096

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="kern-fire")
    return _pool


def _after_fork_in_child() -> None:
    # A pool's threads do not survive a fork (and its lock may be held): start from nothing.
    global _lock, _pool
    _lock, _pool = threading.Lock(), None


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_all(
    calls: Sequence[Callable[[], T]], on_done: Callable[[list[tuple[int, T]]], None], *, linger_s: float = LINGER_S
) -> None:
    """Run every call; `on_done([(index, result), ...])` gets the results in groups as
    they end (in this thread, one group at a time). A single call runs in this thread.
    A call that raises does not stop the others: their results are handed on, then the
    first exception is raised."""
    if len(calls) == 1:
        on_done([(0, calls[0]())])
        return
    futures: dict[Future[T], int] = {_threads().submit(call): index for index, call in enumerate(calls)}
    pending: set[Future[T]] = set(futures)
    failure: BaseException | None = None
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        if pending and linger_s > 0:
            more, pending = wait(pending, timeout=linger_s)
            done |= more
        group = []
        for future in done:
            error = future.exception()
            if error is not None:
                failure = failure or error
            else:
                group.append((futures[future], future.result()))
        if group:
            on_done(sorted(group, key=lambda item: item[0]))
    if failure is not None:
        raise failure
