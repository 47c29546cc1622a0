"""OpenAIChat: the OpenAI chat-completions wire format over httpx.

One POST to `{base_url}/chat/completions` per call:

    {"model": id, "messages": [...], "tools": [{"type": "function", "function": {...}}]}

with `Authorization: Bearer <api key>` when a key is configured. The reply's
`choices[0].message` gives the text and `tool_calls`; `usage` gives token counts.
Every request has a timeout. Failures raise `ModelError` whose message has the HTTP
status and a bounded body snippet with the API key redacted: the key never reaches a
run's `error`, a log or a trace.

Providers: "openai" (default base https://api.openai.com/v1, key required),
"ollama" (http://localhost:11434/v1) and "vllm" (http://localhost:8000/v1), whose
keys are optional and sent when set. `base_url=` overrides the default; for "openai"
the default comes from `Settings.openai_base_url` (OPENAI_BASE_URL).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import httpx

from kern_tasks.agent.models import Model, ModelError, ModelResponse, ToolCall
from kern_tasks.settings import Settings

LOCAL_BASE_URLS = {"ollama": "http://localhost:11434/v1", "vllm": "http://localhost:8000/v1"}
SNIPPET_CHARS = 500


class OpenAIChat(Model):
    """A chat-completions model. Construction does no I/O; the HTTP client is made on first use."""

    def __init__(
        self,
        id: str,
        *,
        provider: str = "openai",
        api_key: str | None = None,
        base_url: str | None = None,
        settings: Settings | None = None,
        timeout: float = 120.0,
        request_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(id)
        settings = settings if settings is not None else Settings.from_env()
        self.provider = provider
        self._api_key = api_key or settings.openai_api_key
        if base_url is None:
            base_url = LOCAL_BASE_URLS.get(provider, settings.openai_base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Extra body fields (temperature, max_tokens, ...), sent as given.
        self.request_params = dict(request_params or {})
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _http(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))
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
        if not self._api_key and self.provider == "openai":
            raise ModelError(
                f"no API key for {self.name}: set OPENAI_API_KEY (or Settings(openai_api_key=...)); "
                'for a local server use "ollama:<model>" / "vllm:<model>" or set OPENAI_BASE_URL'
            )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        where = f"{self.provider} at {httpx.URL(self.base_url).host}"
        try:
            response = self._http().post(self.url, json=self.request_body(messages, tools), headers=headers)
        except httpx.TimeoutException:
            raise ModelError(f"{where}: no reply within {self.timeout:g} s (timeout)") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"{where}: request failed: {type(exc).__name__}: {self._redact(str(exc))}") from None
        if response.status_code >= 400:
            raise ModelError(f"{where}: HTTP {response.status_code}: {self._snippet(response.text)}")
        try:
            return parse_completion(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelError(
                f"{where}: unexpected reply ({exc}): {self._snippet(response.text)}"
            ) from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _snippet(self, text: str) -> str:
        text = self._redact(" ".join(text.split()))
        return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def parse_completion(data: Any) -> ModelResponse:
    """A ModelResponse from a chat-completions JSON body; KeyError/TypeError if malformed."""
    choice = data["choices"][0]
    message = choice["message"]
    calls = []
    for raw in message.get("tool_calls") or []:
        function = raw["function"]
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an object, not JSON text
            arguments = json.dumps(arguments if arguments is not None else {})
        # Some servers omit ids; the tool message must answer to one, so make one up.
        calls.append(ToolCall(id=raw.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                              name=function["name"], arguments=arguments))
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not text")
    usage = data.get("usage") or {}
    tokens = {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    return ModelResponse(
        content=content,
        tool_calls=calls,
        usage={key: int(value) for key, value in tokens.items() if isinstance(value, int)},
        finish_reason=choice.get("finish_reason"),
    )
