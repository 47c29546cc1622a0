"""The runtime dependencies alone run every process type: the Dockerfile's install
(tests/runtime_install.py), checked by importing what each process type imports and by each
command line's own --help. A missing dependency (kombu.transport.redis imports `packaging`,
which only kombu's redis extra installs) fails here, not in a user's container."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.runtime_install import install_runtime, runtime_environ

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# What the Procfile's process types import: beat (python -m beat), workers (celery -A workers
# worker), the web app (kern-tasks serve: the AgentOS, its dashboard, uvicorn), flower, the CLI.
IMPORTS = """
import json, sys
import beat, beat.__main__, workers, kern_tasks.celery, kern_tasks.cli, kern_tasks.os, kern_tasks.dashboard
import uvicorn, flower.command, kern_tasks.workflow.tasks, kern_tasks.metrics.exposition
print(json.dumps({"kern_tasks": kern_tasks.__file__, "test_only": sorted(m for m in ("agno", "pytest") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("runtime")
    return install_runtime(folder), folder


def run(python: Path, cwd: Path, program: str, *args: str) -> subprocess.CompletedProcess:
    """`program` (python, celery, kern-tasks) of the runtime venv, run in `cwd`."""
    return subprocess.run([str(python.parent / program), *args], cwd=cwd, env=runtime_environ() | {"KERN_DATA_DIR": str(cwd / "kern")},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_runtime_install_imports_every_process_type(runtime: tuple[Path, Path]) -> None:
    python, folder = runtime
    done = run(python, folder, "python", "-c", IMPORTS)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(folder / "venv") in found["kern_tasks"], found  # the installed package, not the checkout
    assert found["test_only"] == []


@pytest.mark.parametrize("argv", [
    ["python", "-m", "beat", "--help"], ["celery", "-A", "workers", "worker", "--help"],
    ["celery", "-A", "kern_tasks", "flower", "--help"], ["kern-tasks", "--help"], ["kern-tasks", "health", "--help"],
])  # fmt: skip
def test_each_process_types_command_line_parses_in_the_runtime_install(
    runtime: tuple[Path, Path], argv: list[str]
) -> None:
    python, folder = runtime
    done = run(python, folder, *argv)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stderr[-3000:]}"
    assert "usage" in done.stdout.lower(), done.stdout[-1000:]
