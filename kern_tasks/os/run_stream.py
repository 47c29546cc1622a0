"""EventChannel: a run's events from its pool thread to the one response streaming them.

    channel = EventChannel(asyncio.get_running_loop())
    # pool thread:  channel.put(event) ... channel.end()
    # event loop:   async for event in channel: ...

Promises:
- the event loop never waits on the run: events cross by `call_soon_threadsafe`, into
  a bounded queue (`maxsize` events);
- a full queue (a slow reader) makes the run's thread wait, at most `put_timeout_s` per
  event; past that the reader is given up on: the queue is cut short with an end, the
  run goes on without a stream;
- a reader that goes away (the client disconnected: `close()`) never stops the run: later
  events are dropped and a waiting `put` returns at once;
- `end()` always reaches a reader still there, so its iteration finishes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, AsyncIterator

MAX_QUEUED = 256
PUT_TIMEOUT_S = 30.0
_END = object()


class EventChannel:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, maxsize: int = MAX_QUEUED,
                 put_timeout_s: float = PUT_TIMEOUT_S) -> None:
        self._loop = loop
        self._maxsize = maxsize
        self._put_timeout_s = put_timeout_s
        self._items: deque[Any] = deque()  # touched only under _lock
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # the writer waits here when full
        self._closed = False  # the reader went away, or was given up on
        self._ended = False
        self._ready = asyncio.Event()  # set by the loop when there is something to read

    # --- the run's thread ----------------------------------------------------------

    def put(self, event: dict[str, Any]) -> None:
        """Queue one event; waits while the queue is full (see the module's promises)."""
        with self._lock:
            if self._closed or self._ended:
                return
            if len(self._items) >= self._maxsize and not self._room.wait_for(
                lambda: self._closed or len(self._items) < self._maxsize, timeout=self._put_timeout_s
            ):
                # The reader stopped reading: end its stream here, the run goes on.
                self._items.clear()
                self._items.append(_END)
                self._closed = True
                self._wake()
                return
            if self._closed:
                return
            self._items.append(event)
        self._wake()

    def end(self) -> None:
        """No more events: the reader finishes after those queued."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if not self._closed:
                self._items.append(_END)  # past maxsize on purpose: the end is never dropped
        self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody is reading
            with self._lock:
                self._closed = True
                self._room.notify_all()

    # --- the response (event loop) -------------------------------------------------

    def close(self) -> None:
        """The reader is gone: drop what is queued and release a waiting writer."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._room.notify_all()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                with self._lock:
                    item = self._items.popleft() if self._items else None
                    if item is not None:
                        self._room.notify()
                    else:
                        self._ready.clear()
                if item is None:
                    await self._ready.wait()
                    continue
                if item is _END:
                    return
                yield item
        finally:
            self.close()
