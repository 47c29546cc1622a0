"""An AgentOS app served by a real uvicorn on loopback (a background thread, its own port),
and agents whose runs a test can hold and release.

    with LiveServer(AgentOS(agents=[agent], db=db).get_app()) as server:
        httpx.post(server.url + "/agents/demo/runs", data={"message": "hi"})

The app's lifespan runs (startup on start(), shutdown on stop()), like in production.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from kern_tasks.agent import Agent
from kern_tasks.agent.models import Model, ModelResponse


class LiveServer:
    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="on", http="h11",
            ws="none", loop="asyncio", timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveServer":
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"AgentOS on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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


def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)
