"""An AgentOS app served by a real uvicorn on loopback (a background thread, its own port),
and agents whose runs a test can hold and release.

    with LiveServer(AgentOS(agents=[agent], db=db).get_app()) as server:
        httpx.post(server.url + "/agents/demo/runs", data={"message": "hi"})

The app's lifespan runs (startup on start(), shutdown on stop()), like in production.
"""

from __future__ import annotations

import threading
from typing import Any

from kern_tasks.agent import Agent
from kern_tasks.agent.models import Model, ModelResponse
from tests.processes import ServerThread


class LiveServer(ServerThread):
    """The app on its own loopback port, its lifespan run by start() and stop()."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app, host, port, name="AgentOS", lifespan="on")


class GateModel(Model):
    """Blocks every call until `release` is set; `entered` says a call is waiting."""

    provider = "gate"

    def __init__(self, answer: str = "released") -> None:
        super().__init__("gate")
        self.answer = answer
        self.entered = threading.Event()
        self.release = threading.Event()

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        self.entered.set()
        self.release.wait(timeout=20)
        return ModelResponse(content=self.answer, usage={"total_tokens": 1}, finish_reason="stop")


def gate_agent(agent_id: str = "gate") -> tuple[Agent, GateModel]:
    model = GateModel()
    return Agent(model, id=agent_id, name=agent_id.title()), model


class RaisingAgent:
    """Breaks the run() contract (it raises): the run must still end, as ERROR."""

    id = "raiser"
    name = "Raiser"

    def run(self, message: str, **_: Any) -> Any:
        raise RuntimeError(f"agent bug while handling {message!r}")
