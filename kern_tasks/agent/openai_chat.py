"""OpenAIChat: chat-completions models through the `openai` SDK.

One `client.chat.completions.create` per model call:

    {"model": id, "messages": [...], "tools": [{"type": "function", "function": {...}}]}

`invoke` asks for the whole reply; `stream` asks for it token by token (`stream=true`,
usage in the last chunk) and hands each text delta to `on_text` as it arrives, tool-call
deltas assembled by their index. The SDK retries connection errors, timeouts, 408, 409,
429 and 5xx with exponential backoff (honouring Retry-After), `max_retries` times; every
attempt has `timeout` seconds (for a stream: between chunks). What still fails raises
`ModelError` with the HTTP status, the attempts made and a bounded body snippet with the
API key redacted: the key never reaches a run's `error`, a log or a trace.

Providers: "openai" (default base https://api.openai.com/v1, key required), "ollama"
(http://localhost:11434/v1) and "vllm" (http://localhost:8000/v1), whose keys are
optional (the SDK needs one, so the provider name stands in, as Ollama's docs do).
`base_url=` overrides the default; for "openai" the default comes from
`Settings.openai_base_url` (OPENAI_BASE_URL).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import openai

from kern_tasks.agent.models import Model, ModelError, ModelResponse, ToolCall
from kern_tasks.settings import Settings

LOCAL_BASE_URLS = {"ollama": "http://localhost:11434/v1", "vllm": "http://localhost:8000/v1"}
SNIPPET_CHARS = 500
DEFAULT_MAX_RETRIES = 2  # the SDK's own default: three attempts in all


class OpenAIChat(Model):
    """A chat-completions model. Construction does no I/O; the SDK client is made on first use."""

    def __init__(
        self,
        id: str,
        *,
        provider: str = "openai",
        api_key: str | None = None,
        base_url: str | None = None,
        settings: Settings | None = None,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        request_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(id)
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        settings = settings if settings is not None else Settings.from_env()
        self.provider = provider
        self._api_key = api_key or settings.openai_api_key
        if base_url is None:
            base_url = LOCAL_BASE_URLS.get(provider, settings.openai_base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        # Extra body fields (temperature, max_tokens, ...), sent as given.
        self.request_params = dict(request_params or {})
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _sdk(self) -> openai.OpenAI:
        if not self._api_key and self.provider == "openai":
            raise ModelError(
                f"no API key for {self.name}: set OPENAI_API_KEY (or Settings(openai_api_key=...)); "
                'for a local server use "ollama:<model>" / "vllm:<model>" or set OPENAI_BASE_URL'
            )
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = openai.OpenAI(
                        api_key=self._api_key or self.provider, base_url=self.base_url,
                        timeout=self.timeout, max_retries=self.max_retries,
                    )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def request_body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.id, "messages": messages, **self.request_params}
        if tools:
            body["tools"] = tools
        return body

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        client = self._sdk()
        try:
            completion = client.chat.completions.create(**self.request_body(messages, tools))
            return parse_completion(completion.model_dump())
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ModelError, key redacted
            raise self._error(exc) from None

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]
    ) -> ModelResponse:
        client = self._sdk()
        reply = _StreamedReply()
        try:
            chunks = client.chat.completions.create(
                **self.request_body(messages, tools), stream=True, stream_options={"include_usage": True}
            )
            with chunks:
                for chunk in chunks:
                    text = reply.add(chunk.model_dump())
                    if text:
                        on_text(text)
            return reply.response()
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in invoke
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> ModelError:
        where = f"{self.provider} at {urlsplit(self.base_url).hostname}"
        if isinstance(exc, openai.APIStatusError):
            attempts = _attempts(exc.response)
            tried = f" after {attempts} attempts" if attempts > 1 else ""
            return ModelError(f"{where}: HTTP {exc.status_code}{tried}: {self._snippet(exc.response.text)}")
        if isinstance(exc, openai.APITimeoutError):
            return ModelError(f"{where}: no reply within {self.timeout:g} s (timeout, {self.max_retries + 1} attempts)")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return ModelError(
                f"{where}: request failed after {self.max_retries + 1} attempts: "
                f"{type(cause).__name__}: {self._redact(str(cause))}"
            )
        if isinstance(exc, (ValueError, KeyError, IndexError, TypeError)):
            return ModelError(f"{where}: unexpected reply ({self._redact(str(exc))[:SNIPPET_CHARS]})")
        return ModelError(f"{where}: {type(exc).__name__}: {self._snippet(str(exc))}")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _snippet(self, text: str) -> str:
        text = self._redact(" ".join(text.split()))
        return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def _attempts(response: Any) -> int:
    """How many attempts the SDK made: it numbers its retries in a request header."""
    try:
        return int(response.request.headers.get("x-stainless-retry-count", "0")) + 1
    except (AttributeError, RuntimeError, ValueError):
        return 1


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    # Some servers send an object, not JSON text.
    return json.dumps(arguments if arguments is not None else {})


def _usage(usage: Any) -> dict[str, int]:
    usage = usage or {}
    tokens = {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    return {key: int(value) for key, value in tokens.items() if isinstance(value, int)}


def _call_id(raw: str | None) -> str:
    # Some servers omit ids; the tool message must answer to one, so make one up.
    return raw or f"call_{uuid.uuid4().hex[:24]}"


def parse_completion(data: Any) -> ModelResponse:
    """A ModelResponse from a chat-completions JSON body; KeyError/TypeError if malformed."""
    choice = data["choices"][0]
    message = choice["message"]
    calls = [
        ToolCall(id=_call_id(raw.get("id")), name=raw["function"]["name"],
                 arguments=_arguments_text(raw["function"].get("arguments")))
        for raw in message.get("tool_calls") or []
    ]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not text")
    return ModelResponse(content=content, tool_calls=calls, usage=_usage(data.get("usage")),
                         finish_reason=choice.get("finish_reason"))


class _StreamedReply:
    """The reply of a streamed completion, assembled from its chunks (dicts)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}  # by the delta's index
        self.usage: dict[str, int] = {}
        self.finish_reason: str | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk in; its text delta ("" if none)."""
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for raw in delta.get("tool_calls") or []:
                call = self.calls.setdefault(raw.get("index", len(self.calls)), {"id": None, "name": "", "arguments": ""})
                function = raw.get("function") or {}
                call["id"] = call["id"] or raw.get("id")
                call["name"] += function.get("name") or ""
                arguments = function.get("arguments")
                call["arguments"] += arguments if isinstance(arguments, str) else (
                    _arguments_text(arguments) if arguments is not None else "")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if text:
            self.text.append(text)
        return text

    def response(self) -> ModelResponse:
        calls = [ToolCall(id=_call_id(c["id"]), name=c["name"], arguments=c["arguments"])
                 for _, c in sorted(self.calls.items())]
        if any(not call.name for call in calls):
            raise ModelError("the streamed reply has a tool call without a name")
        content = "".join(self.text) if self.text else None
        return ModelResponse(content=content, tool_calls=calls, usage=self.usage, finish_reason=self.finish_reason)
