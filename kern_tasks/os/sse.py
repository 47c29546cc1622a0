"""Server-sent events in agno's framing: one event per run event dict.

    event: RunContent
    data: {"event": "RunContent", "run_id": "...", "content": "..."}

(a blank line ends each event). agno's clients read the `event` line for the type and
parse `data` as JSON; the dict's own "event" key names the type, as agno's events do.
While no event comes for KEEPALIVE_S (a long step, a slow model), a comment line goes
out instead, so clients' read timeouts and proxies' idle timeouts do not cut the stream;
SSE readers (agno's client among them) skip comments.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

MEDIA_TYPE = "text/event-stream"
KEEPALIVE_S = 15.0
KEEPALIVE = ": keep-alive\n\n"


def encode(event: dict[str, Any]) -> str:
    """One event, framed: its "event" key (or "message") as the type, the dict as data."""
    data = json.dumps(event, default=str, separators=(",", ":"))
    return f"event: {event.get('event', 'message')}\ndata: {data}\n\n"


async def framed(events: AsyncIterator[dict[str, Any]], keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
    """`events` framed, with a keep-alive comment after each `keepalive_s` of silence.
    The next event is awaited as a task of its own, so a keep-alive never interrupts it."""
    iterator = aiter(events)
    next_event: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            done, _ = await asyncio.wait({next_event}, timeout=keepalive_s)
            if not done:
                yield KEEPALIVE
                continue
            try:
                event = next_event.result()
            except StopAsyncIteration:
                return
            yield encode(event)
            next_event = asyncio.ensure_future(anext(iterator))
    finally:
        next_event.cancel()


def response(events: AsyncIterator[dict[str, Any]], keepalive_s: float = KEEPALIVE_S) -> StreamingResponse:
    """A streaming response of `events`; proxies are asked not to buffer it."""
    return StreamingResponse(
        framed(events, keepalive_s), media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
