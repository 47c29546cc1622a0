"""AgentOS: the HTTP app serving agents, workflows and the schedules API.

`AgentOS` loads on first use (PEP 562), so importing a module of this package (os/auth.py,
which the dashboard's pages use) does not build the app module, which mounts the dashboard.
"""

from __future__ import annotations

from kern_tasks.lazy_exports import lazy_exports

__all__ = ["AgentOS"]
__getattr__ = lazy_exports(__name__, {"AgentOS": "kern_tasks.os.app"})
