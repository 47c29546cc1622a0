"""Model adapters: what an Agent calls to get the next assistant message.

`Model` is the contract: stateless between calls and safe to share between threads;
`invoke` returns a `ModelResponse` or raises `ModelError` (with a message fit for a run's
`error`); `stream` does the same while handing each text delta to a callback as it comes
(by default: the whole text at once, after `invoke`). Here too the two models that need no network: `OfflineModel` (deterministic,
for demos) and `ScriptedModel` (replies given in advance, for tests). `OpenAIChat` lives in
openai_chat.py; `get_model` (providers.py) turns a "provider:model" string into one.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ModelError(RuntimeError):
    """A model call failed (HTTP error, timeout, missing key, malformed reply)."""


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; `arguments` is the JSON text it sent."""

    id: str
    name: str
    arguments: str

    def to_message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ModelResponse:
    """The assistant's reply: text, tool calls, or both; `usage` as reported (may be empty)."""

    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The assistant message in chat-completions format."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_message() for call in self.tool_calls]
        return message


class Model(ABC):
    """An LLM (or a stand-in). `id` is the provider's model name, `provider` its kind."""

    provider: str = "model"

    def __init__(self, id: str) -> None:
        self.id = id

    @property
    def name(self) -> str:
        """"provider:id", as accepted by `get_model`."""
        return f"{self.provider}:{self.id}"

    @abstractmethod
    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        """The next assistant message for `messages` (chat-completions format), given the
        `tools` (chat-completions `tools` entries, possibly empty). Raises ModelError."""

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]
    ) -> ModelResponse:
        """`invoke`, calling `on_text` with each piece of the reply's text as it arrives; the
        pieces joined are the response's content. Models that cannot stream send it whole."""
        response = self.invoke(messages, tools)
        if response.content:
            on_text(response.content)
        return response

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class OfflineModel(Model):
    """A stand-in for demos and tests: no network, no reasoning, no tool calls.

    It answers every message with the same deterministic text: a short echo of the
    last user message, the tools a real model could call, and how to configure one.
    It never pretends to have done what was asked.
    """

    provider = "offline"

    def __init__(self, id: str = "echo") -> None:
        super().__init__(id or "echo")

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
        text = " ".join(str(last or "").split())
        snippet = text if len(text) <= 160 else text[:157] + "..."
        answer = f'Offline model: I received "{snippet}" ({len(text.split())} words).'
        if tools:
            names = ", ".join(t["function"]["name"] for t in tools)
            answer += f" I do not call tools; a real model could use: {names}."
        answer += ' For real answers set model="openai:<model>" and OPENAI_API_KEY.'
        words_in = sum(len(str(m.get("content") or "").split()) for m in messages)
        return ModelResponse(
            content=answer,
            usage={"input_tokens": words_in, "output_tokens": len(answer.split()),
                   "total_tokens": words_in + len(answer.split())},
            finish_reason="stop",
        )

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]
    ) -> ModelResponse:
        """The same answer, a word (with its following space) at a time."""
        response = self.invoke(messages, tools)
        for piece in re.findall(r"\S+\s*", response.content or ""):
            on_text(piece)
        return response


class ScriptedModel(Model):
    """A test double replying from a script, one entry per call, in order.

    An entry is a str (assistant text), a ModelResponse, an Exception (raised as is),
    or a dict {"content": ..., "tool_calls": [{"name": ..., "arguments": dict | str,
    "id": optional}]}. `calls` records (messages, tools) of every call.
    """

    provider = "scripted"

    def __init__(self, replies: list[Any], id: str = "script") -> None:
        super().__init__(id)
        self.replies = list(replies)
        self.calls: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self._lock = threading.Lock()

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        with self._lock:
            self.calls.append(([dict(m) for m in messages], list(tools)))
            if not self.replies:
                raise ModelError(f"scripted model has no reply left for call {len(self.calls)}")
            reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, ModelResponse):
            return reply
        if isinstance(reply, str):
            return ModelResponse(content=reply, finish_reason="stop")
        calls = [
            ToolCall(
                id=c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                name=c["name"],
                arguments=c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"]),
            )
            for c in reply.get("tool_calls", [])
        ]
        return ModelResponse(content=reply.get("content"), tool_calls=calls,
                             finish_reason="tool_calls" if calls else "stop")
