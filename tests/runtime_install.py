"""A runtime-only install of kern_tasks, as the Dockerfile makes one: the files its COPY lines
copy, `pip install .` into a fresh venv, no test extra. The test venv holds packages the
runtime never installs (agno, opentelemetry's SDK, PyYAML, ...) that celery, kombu and redis
import when present, and lacks nothing by luck alone; this is what users run. Used by
tests/test_runtime_install.py and by bench/claim_cost.py (beat's RSS as deployed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT, clean_environ

# Laid over clean_environ() (which puts this checkout on PYTHONPATH): an empty PYTHONPATH,
# so a child of the runtime venv imports the installed package, not this checkout.
NO_CHECKOUT = {"PYTHONPATH": ""}


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY line of the Dockerfile."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [(words[1:-1], words[-1]) for words in (line.split() for line in lines) if words[:1] == ["COPY"]]


def install_runtime(folder: Path) -> Path:
    """Copy what the Dockerfile copies to folder/app, install it into folder/venv with
    pip (no extras); return the venv's python."""
    app = folder / "app"
    for sources, destination in dockerfile_copies():
        for source in sources:
            target = app / destination / source if destination.endswith("/") else app / destination
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(app)],
                   check=True, capture_output=True, text=True, timeout=900)  # fmt: skip
    return python


def runtime_environ() -> dict[str, str]:
    """clean_environ() (no KERN_* setting) for a child of the runtime venv: NO_CHECKOUT."""
    return clean_environ() | NO_CHECKOUT
