"""Agents: a model, instructions and tools, run as a tool-calling loop.

    from kern_tasks.agent import Agent, tool

See `agent.py` for the loop, `models.py` for the Model contract, `providers.py` for model
strings ("openai:<model>", "ollama:<model>", "vllm:<model>", "offline"), `tools.py` for
toolkits, `events.py` for the run events (agno's) a streamed run reports.
"""

from kern_tasks.agent.agent import Agent
from kern_tasks.agent.models import Model, ModelError, ModelResponse, OfflineModel, ScriptedModel, ToolCall
from kern_tasks.agent.openai_chat import OpenAIChat
from kern_tasks.agent.providers import get_model
from kern_tasks.agent.run import RunContext, RunOutput, Span
from kern_tasks.agent.tools import Function, ToolArgumentError, Toolkit, tool

__all__ = [
    "Agent",
    "Function",
    "Model",
    "ModelError",
    "ModelResponse",
    "OfflineModel",
    "OpenAIChat",
    "RunContext",
    "RunOutput",
    "ScriptedModel",
    "Span",
    "ToolArgumentError",
    "ToolCall",
    "Toolkit",
    "get_model",
    "tool",
]
