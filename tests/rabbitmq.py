"""RabbitMQ for tests: a vhost of a test's own on the machine's broker, or a private node
a test may kill and start again.

    with rabbit_vhost() as url:          # amqp://guest:guest@127.0.0.1:5672/kt_1a2b...
        ...                              # the vhost (and every queue in it) is deleted after
    with PrivateRabbitMQ() as broker:    # rabbitmq-server on free ports, data in a temp folder
        broker.restart(down_for=4)       # SIGKILL, 4 s of nothing, start again on its data

`KERN_TEST_RABBITMQ_URL` names another broker for the vhosts (its management needs
`rabbitmqctl` on this machine). `skip_unless_rabbitmq()` skips the calling test, with the
reason, when rabbitmqctl (vhosts) or rabbitmq-server (private nodes) is missing.

A private node has its own node name, ports, config, data and log folders (no plugins), so
the machine's node is never touched; like a real broker restart, its durable queues and
persistent messages survive `restart()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from tests.processes import free_port, wait_for

SHARED_URL = os.environ.get("KERN_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the script itself (the /usr/sbin one su's to rabbitmq)
READY_TIMEOUT_S = 60.0


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def skip_unless_rabbitmq(private: bool = False) -> None:
    import pytest

    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on PATH (no RabbitMQ here)")
    if private and not SERVER.exists():
        pytest.skip(f"{SERVER} is missing: no private RabbitMQ node")


@contextmanager
def rabbit_vhost() -> Iterator[str]:
    """A fresh vhost on the shared broker (guest may use it), its URL; deleted afterwards."""
    skip_unless_rabbitmq()
    name = f"kt_{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, urlsplit(SHARED_URL).username or "guest", ".*", ".*", ".*")
        shared = urlsplit(SHARED_URL)
        yield f"{shared.scheme}://{shared.netloc}/{name}"
    finally:
        _ctl("delete_vhost", name)


class PrivateRabbitMQ:
    """rabbitmq-server on a free loopback port, as a process group of our own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kern-rabbit-"))
        self.node = f"kt{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()), "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.dir / "log"),
        }  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateRabbitMQ":
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(self.dir / "server.out", "ab") as out:
            self.proc = subprocess.Popen([str(SERVER)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.dir, start_new_session=True)  # fmt: skip
        wait_for(self.answers, READY_TIMEOUT_S, 0.2, f"rabbitmq node {self.node} on port {self.port}")
        return self

    def answers(self) -> bool:
        """An AMQP handshake succeeds (the port alone opens before the broker is ready)."""
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"rabbitmq-server exited:\n{self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=0)
            return True
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill the node's process group (SIGKILL: no goodbye to clients) and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def restart(self, down_for: float = 0.0) -> None:
        """SIGKILL, stay down `down_for` seconds, start again on the same port and data."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        out = self.dir / "server.out"
        return "\n".join(out.read_text(errors="replace").splitlines()[-lines:]) if out.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateRabbitMQ":
        skip_unless_rabbitmq(private=True)
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
