"""Server-sent events in agno's framing: one event per run event dict.

    event: RunContent
    data: {"event": "RunContent", "run_id": "...", "content": "..."}

(a blank line ends each event). agno's clients read the `event` line for the type and
parse `data` as JSON; the dict's own "event" key names the type, as agno's events do.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

MEDIA_TYPE = "text/event-stream"


def encode(event: dict[str, Any]) -> str:
    """One event, framed: its "event" key (or "message") as the type, the dict as data."""
    data = json.dumps(event, default=str, separators=(",", ":"))
    return f"event: {event.get('event', 'message')}\ndata: {data}\n\n"


def response(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """A streaming response of `events`; proxies are asked not to buffer it."""

    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield encode(event)

    return StreamingResponse(
        body(), media_type=MEDIA_TYPE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
