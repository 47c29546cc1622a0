"""A local server speaking the OpenAI chat-completions wire format, for tests.

    with ChatServer() as server:
        server.script = [{"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}, "the answer is 2"]
        model = OpenAIChat("gpt-test", settings=Settings(openai_base_url=server.url, openai_api_key="k"))

It runs uvicorn on 127.0.0.1 (a free port) in a background thread, records every
request (`requests`: path, lower-cased headers, JSON body) and answers
POST /v1/chat/completions from `script`, one entry per request, in order:

    "text" or {"content": "text"}                 an assistant message
    {"tool_calls": [{"name", "arguments": dict | JSON text, "id"?}], "content"?}
    {"status": 401, "body": "...", "headers"?}    an HTTP error with that body; it asks a
                                                  retrying client to wait 5 ms (retry-after-ms)
    {"delay": 1.5, ...}                           wait that long first (for timeouts)
    {"forever": True, ...}                        this entry answers every request from now on
    a callable(request_json) -> one of the above  decided from the request

A request with `"stream": true` is answered as OpenAI streams: server-sent chat.completion.chunk
events, the text a word at a time (or the entry's "chunks"), each tool call as a first delta with
its id and name then its arguments in two pieces, the finish reason, `usage` in a last chunk when
`stream_options.include_usage` is set, then `data: [DONE]`.

Every successful reply carries `usage` (fixed token counts, see USAGE). An exhausted
script answers 500 "script exhausted".
"""

from __future__ import annotations

import asyncio
import json
import threading
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.processes import ServerThread

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
RETRY_SOON = {"retry-after-ms": "5"}


class ChatServer:
    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        self._served = ServerThread(app, name="chat server")
        self.port = self._served.port

    @property
    def url(self) -> str:
        """The base URL an OpenAI client is given (".../v1")."""
        return f"{self._served.url}/v1"

    def start(self) -> Self:
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop(timeout=10)

    def reset(self, script: list[Any] | None = None) -> None:
        with self._lock:
            self.script = list(script or [])
            self.requests = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"path": request.url.path, "headers": dict(request.headers), "json": body})
            entry = self.script[0] if self.script else None
            if self.script and not (isinstance(entry, dict) and entry.get("forever")):
                self.script.pop(0)
            serial = len(self.requests)
        if entry is None:
            return PlainTextResponse("script exhausted", status_code=500)
        if callable(entry):
            entry = entry(body)
        if isinstance(entry, str):
            entry = {"content": entry}
        if entry.get("delay"):
            await asyncio.sleep(entry["delay"])
        if "status" in entry:
            return PlainTextResponse(entry.get("body", ""), status_code=entry["status"],
                                     headers=entry.get("headers", RETRY_SOON))
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(chunks(body.get("model", "?"), entry, serial, usage),
                                     media_type="text/event-stream")
        return JSONResponse(completion(body.get("model", "?"), entry, serial))


def _calls(entry: dict[str, Any], serial: int) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id", f"call_{serial}_{index}"),
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": call["arguments"] if isinstance(call["arguments"], str) else json.dumps(call["arguments"]),
            },
        }
        for index, call in enumerate(entry.get("tool_calls", []))
    ]


async def chunks(model: str, entry: dict[str, Any], serial: int, usage: bool) -> AsyncIterator[str]:
    """The reply as OpenAI streams it (chat.completion.chunk events)."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body = {"id": f"chatcmpl-{serial}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    content = entry.get("content")
    for piece in entry.get("chunks") or (re.findall(r"\S+\s*", content) if content else []):
        yield chunk({"content": piece})
    calls = _calls(entry, serial)
    for index, call in enumerate(calls):
        yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]})
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if calls else "stop")
    if usage:
        yield chunk(None, usage=dict(USAGE))  # type: ignore[arg-type]
    yield "data: [DONE]\n\n"


def completion(model: str, entry: dict[str, Any], serial: int) -> dict[str, Any]:
    """A chat.completion object as OpenAI sends it."""
    calls = _calls(entry, serial)
    message: dict[str, Any] = {"role": "assistant", "content": entry.get("content")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": dict(USAGE),
    }


@pytest.fixture(scope="module")
def chat_server_module() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


@pytest.fixture
def chat_server(chat_server_module: ChatServer) -> Iterator[ChatServer]:
    """The module's chat server with an empty script and no recorded requests."""
    chat_server_module.reset()
    yield chat_server_module
