"""Model strings: which Model a "provider:model" string names.

    get_model("openai:gpt-4o-mini")      OpenAIChat (the openai SDK), OPENAI_API_KEY / OPENAI_BASE_URL
    get_model("ollama:llama3.1")         same adapter, default base http://localhost:11434/v1, no key needed
    get_model("vllm:Qwen/Qwen2.5-7B")    same adapter, default base http://localhost:8000/v1, no key needed
    get_model("offline")                 OfflineModel: no network, deterministic (demos, tests)

To reach Ollama or vLLM somewhere else, use `openai:<model>` with OPENAI_BASE_URL set to
that server's /v1 URL. A module of its own because it imports every adapter, and the
adapters import models.py (the contract): the factory there made an import cycle.
"""

from __future__ import annotations

from kern_tasks.agent.models import Model, OfflineModel
from kern_tasks.agent.openai_chat import OpenAIChat
from kern_tasks.settings import Settings

PROVIDERS = ("openai", "ollama", "vllm", "offline")


def get_model(model: str | Model, settings: Settings | None = None) -> Model:
    """The Model for "provider:model" (or `model` itself if already a Model).

    Constructing one does no I/O; a missing API key is reported when the model is
    called. ValueError for an unknown provider or a missing model name.
    """
    if isinstance(model, Model):
        return model
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f'model must be "provider:model" (providers: {", ".join(PROVIDERS)}), got {model!r}')
    provider, _, name = model.strip().partition(":")
    provider = provider.lower()
    if provider == "offline":
        return OfflineModel(name or "echo")
    if provider not in PROVIDERS:
        raise ValueError(f'unknown model provider "{provider}" in {model!r}; known providers: {", ".join(PROVIDERS)}')
    if not name:
        raise ValueError(f'model {model!r} names no model: write "{provider}:<model>", e.g. "openai:gpt-4o-mini"')
    return OpenAIChat(name, provider=provider, settings=settings)
