"""AgentOS: the HTTP app serving agents, workflows and the schedules API.

`AgentOS` loads on first use (PEP 562), so importing a module of this package (os/auth.py,
which the dashboard's pages use) does not build the app module, which mounts the dashboard.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AgentOS"]


def __getattr__(name: str) -> Any:
    if name == "AgentOS":
        from kern_tasks.os.app import AgentOS

        return AgentOS
    raise AttributeError(f"module 'kern_tasks.os' has no attribute {name!r}")
