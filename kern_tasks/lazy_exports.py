"""A package's names, loaded on first use (PEP 562): the one `__getattr__` our packages share.

    __getattr__ = lazy_exports(__name__, {"ScheduleManager": "kern_tasks.scheduler.manager"})

A package hands out names from its modules without importing them with itself, so a
process imports only what it uses: `celery -A kern_tasks worker` not the web app, beat
neither httpx, pydantic nor the workflow definitions (tests/test_beat_imports.py). A name is
imported from its module the first time it is asked for, then kept in the package, so
later lookups are plain attribute reads. Like a package re-exporting its submodules, this
is not an import edge for tests/test_imports.py.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`: each name of `exports` from its module."""

    def __getattr__(name: str) -> Any:
        home = exports.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
