"""Every command the Procfile and docker-compose.yml name resolves and imports, read from
the files themselves: `celery -A <app> <command> ...` loads its app (a subprocess, as the
command would) and Celery accepts the command line; `kern-tasks ...` is a subcommand our
parser accepts; `python -c` health checks compile. Also the files' shape: the Procfile's
five process types, compose's services (two beat replicas, a health check on each, all
after the one-shot migration), and the Dockerfile shipping the process types' packages.
The process types' apps (`beat`, `workers`) take their settings from KERN_* variables.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kern_tasks.cli import parser
from tests.processes import PYTHON, ROOT, clean_environ

BEAT = ["python", "-m", "beat"]  # the beat process type: beat/__main__.py, the celery beat of beat.app
PROCESS_TYPES = {"release", "web", "worker", "beat", "flower"}
SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat", "beat-2", "flower"}
# What the images of postgres and redis bring (not ours to resolve).
IMAGE_TOOLS = {"pg_isready", "redis-cli"}
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")

LOAD_APP = """
import json, sys
from celery.app.utils import find_app
app = find_app(sys.argv[1])
conf = app.conf
print(json.dumps({"main": app.main, "pool": conf.worker_pool, "concurrency": conf.worker_concurrency,
                  "queues": [q.name for q in conf.task_queues or []], "batch": conf.get("kern_beat_batch"),
                  "sweep": conf.get("kern_sweep_interval"), "events": conf.worker_send_task_events,
                  "sent": conf.task_send_sent_event, "scheduler": conf.beat_scheduler,
                  "tasks": sorted(t for t in app.tasks if t.startswith("kern."))}))
"""


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    pairs = (line.split(":", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): command.strip() for name, command in pairs}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def shell_words(line: str) -> list[str]:
    """A Procfile or CMD-SHELL line as the shell would split it: ${X:-default} as its
    default, compose's $$HOSTNAME as a host name."""
    return shlex.split(_DEFAULT.sub(lambda m: m.group(2), line).replace("$$HOSTNAME", "host").replace("$HOSTNAME", "host"))


def every_command() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the two files run, health checks included."""
    found = [(f"Procfile {name}", shell_words(line)) for name, line in procfile().items()]
    for name, service in compose()["services"].items():
        if "command" in service:
            command = service["command"]
            found.append((f"compose {name}", command if isinstance(command, list) else shell_words(command)))
        test = service["healthcheck"]["test"]
        argv = shell_words(test[1]) if test[0] == "CMD-SHELL" else list(test[1:])
        found.append((f"compose {name} healthcheck", argv))
    return found


def app_of(argv: list[str]) -> str | None:
    """The app a command runs: `celery -A NAME ...`'s NAME, `python -m beat`'s beat."""
    if argv[:1] == ["celery"]:
        return argv[argv.index("-A") + 1]
    return "beat" if argv[:3] == BEAT else None


def load_app(name: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", LOAD_APP, name], env={**clean_environ(), **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """The apps `celery -A` names in either file, each loaded in a process of its own (in an
    empty folder: the embedded default's files land there)."""
    folder = tmp_path_factory.mktemp("apps")
    names = {app_of(argv) for _, argv in every_command() if app_of(argv)}
    loaded = {}
    for name in sorted(names):
        done = load_app(name, {"KERN_DATA_DIR": str(folder / "kern")}, cwd=folder)
        assert done.returncode == 0, f"celery -A {name}: the app does not load:\n{done.stderr}"
        loaded[name] = json.loads(done.stdout.strip().splitlines()[-1])
    yield loaded


def test_procfile_has_the_five_process_types_and_release_migrates() -> None:
    types = procfile()
    assert set(types) == PROCESS_TYPES
    assert types["release"] == "kern-tasks db upgrade"
    assert shell_words(types["worker"])[:4] == ["celery", "-A", "workers", "worker"]
    assert shell_words(types["beat"])[:3] == BEAT
    assert " -E" not in types["worker"]  # task events are on by default (kern_tasks/app.py)


def test_compose_runs_two_beats_after_the_migration_with_a_health_check_each() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    beats = [name for name, s in services.items() if s.get("command", [])[:3] == BEAT]
    assert sorted(beats) == ["beat", "beat-2"]
    assert services["migrate"]["command"] == ["kern-tasks", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        if name in ("web", "worker", "beat", "beat-2", "flower"):
            assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
            assert service["environment"]["KERN_AUTO_UPGRADE"] == "false", name


@pytest.mark.timeout(300)
def test_every_command_resolves(apps: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    seen = set()
    for where, argv in every_command():
        program, args = argv[0], argv[1:]
        if program in IMAGE_TOOLS:
            continue
        if program == "kern-tasks":
            namespace = parser().parse_args(args)  # SystemExit (a failure) on a subcommand we lack
            assert callable(namespace.handler), where
        elif argv[:3] == BEAT:
            # beat/__main__.py's own parser on the whole line; --help stops before anything starts.
            done = subprocess.run([PYTHON, *args, "--help"], env={**clean_environ(), "KERN_DATA_DIR": str(tmp_path / "kern")},
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0 and "python -m beat" in done.stdout, f"{where}: {shlex.join(argv)}\n{done.stderr}"
        elif program == "python":
            assert args[0] == "-c", where
            compile(args[1], where, "exec")
        elif program == "celery":
            assert args[0] == "-A" and args[1] in apps, where
            key = tuple(args)
            if key in seen:
                continue
            seen.add(key)
            # Celery's own parser on the whole line; --help stops before anything starts.
            done = subprocess.run([PYTHON, "-m", "celery", *args, "--help"], env={**clean_environ(),
                                  "KERN_DATA_DIR": str(tmp_path / "kern")}, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0, f"{where}: {shlex.join(argv)}\n{done.stderr}"
        else:
            pytest.fail(f"{where}: {shlex.join(argv)} names a program nothing here resolves")
    assert "kern-tasks = \"kern_tasks.cli:main\"" in (ROOT / "pyproject.toml").read_text()


def test_the_process_types_apps_are_kern_tasks_with_events_on(apps: dict[str, dict[str, Any]]) -> None:
    assert set(apps) == {"beat", "workers", "kern_tasks"}
    tasks = ["kern.fire", "kern.fire_batch", "kern.workflow.advance", "kern.workflow.step"]
    for name, app in apps.items():
        assert app["tasks"] == tasks and app["events"] is True and app["sent"] is True, name
        assert app["scheduler"] == "kern_tasks.beat:LeaseScheduler", name
    assert (apps["workers"]["pool"], apps["workers"]["concurrency"], apps["workers"]["queues"]) == ("threads", 32, [])
    assert (apps["beat"]["batch"], apps["beat"]["sweep"]) == (500, 1.0)


def test_the_process_types_take_their_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"KERN_DATA_DIR": str(tmp_path / "kern"), "KERN_WORKER_POOL": "prefork", "KERN_WORKER_CONCURRENCY": "3",
           "KERN_WORKER_QUEUES": "reports, celery", "KERN_BEAT_BATCH": "7", "KERN_BEAT_SWEEP_INTERVAL": "0.5"}
    workers = load_app("workers", env, cwd=tmp_path)
    beat = load_app("beat", env, cwd=tmp_path)
    assert workers.returncode == 0 and beat.returncode == 0, workers.stderr + beat.stderr
    w, b = json.loads(workers.stdout.splitlines()[-1]), json.loads(beat.stdout.splitlines()[-1])
    assert (w["pool"], w["concurrency"], w["queues"]) == ("prefork", 3, ["reports", "celery"])
    assert (b["batch"], b["sweep"]) == (7, 0.5)
    bad = load_app("workers", {**env, "KERN_WORKER_POOL": "fork-bomb"}, cwd=tmp_path)
    assert bad.returncode != 0 and "KERN_WORKER_POOL" in bad.stderr and "threads" in bad.stderr


def test_the_dockerfile_ships_the_process_types() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {"kern_tasks", "beat", "workers"} <= copied
    assert not re.search(r"\bcurl\b", "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#")))
    find = re.search(r"\[tool\.setuptools\.packages\.find\]\ninclude = (\[.*?\])", (ROOT / "pyproject.toml").read_text())
    assert find is not None and {"beat", "workers"} <= set(json.loads(find.group(1)))
