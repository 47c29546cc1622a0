"""os/sse.py: agno's framing, and keep-alive comments while a stream is silent."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from kern_tasks.os import sse


def test_an_event_is_framed_as_agno_frames_it() -> None:
    framed = sse.encode({"event": "RunContent", "content": "hé\nllo"})
    name, data, end = framed.split("\n", 2)
    assert name == "event: RunContent" and end == "\n"
    assert json.loads(data.removeprefix("data: ")) == {"event": "RunContent", "content": "hé\nllo"}
    assert sse.encode({"x": 1}).startswith("event: message\n")


async def _collect(events: AsyncIterator[dict[str, Any]], keepalive_s: float) -> list[str]:
    return [chunk async for chunk in sse.framed(events, keepalive_s)]


def test_a_silent_stream_sends_keep_alives_and_loses_no_event() -> None:
    async def slow() -> AsyncIterator[dict[str, Any]]:
        yield {"event": "StepStarted"}
        await asyncio.sleep(0.5)  # a long step: ten keep-alive periods
        yield {"event": "StepCompleted"}

    chunks = asyncio.run(_collect(slow(), keepalive_s=0.05))
    events = [c for c in chunks if c != sse.KEEPALIVE]
    assert [c.split("\n", 1)[0] for c in events] == ["event: StepStarted", "event: StepCompleted"]
    first, last = chunks.index(events[0]), chunks.index(events[1])
    assert sse.KEEPALIVE in chunks[first + 1:last]  # sent while the step ran
    assert sse.KEEPALIVE.startswith(":")  # a comment: SSE readers skip it


def test_a_busy_stream_sends_no_keep_alive() -> None:
    async def busy() -> AsyncIterator[dict[str, Any]]:
        for i in range(50):
            yield {"event": "RunContent", "content": str(i)}

    chunks = asyncio.run(_collect(busy(), keepalive_s=5.0))
    assert len(chunks) == 50 and sse.KEEPALIVE not in chunks
