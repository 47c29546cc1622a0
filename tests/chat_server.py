"""A local server speaking the OpenAI chat-completions wire format, for tests.

    with ChatServer() as server:
        server.script = [{"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}, "the answer is 2"]
        model = OpenAIChat("gpt-test", settings=Settings(openai_base_url=server.url, openai_api_key="k"))

It runs uvicorn on 127.0.0.1 (a free port) in a background thread, records every
request (`requests`: path, lower-cased headers, JSON body) and answers
POST /v1/chat/completions from `script`, one entry per request, in order:

    "text" or {"content": "text"}                 an assistant message
    {"tool_calls": [{"name", "arguments": dict | JSON text, "id"?}], "content"?}
    {"status": 401, "body": "..."}                an HTTP error with that body
    {"delay": 1.5, ...}                           wait that long first (for timeouts)
    a callable(request_json) -> one of the above  decided from the request

Every successful reply carries `usage` (fixed token counts, see USAGE). An exhausted
script answers 500 "script exhausted".
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.processes import ServerThread

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


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
            entry = self.script.pop(0) if self.script else None
        if entry is None:
            return PlainTextResponse("script exhausted", status_code=500)
        if callable(entry):
            entry = entry(body)
        if isinstance(entry, str):
            entry = {"content": entry}
        if entry.get("delay"):
            await asyncio.sleep(entry["delay"])
        if "status" in entry:
            return PlainTextResponse(entry.get("body", ""), status_code=entry["status"])
        return JSONResponse(completion(body.get("model", "?"), entry, len(self.requests)))


def completion(model: str, entry: dict[str, Any], serial: int) -> dict[str, Any]:
    """A chat.completion object as OpenAI sends it."""
    calls = [
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
