"""The AgentOS routers: health, runs (agents, workflows), schedules, and agno's read side:
config, components (agents, workflows), sessions, traces."""

from kern_tasks.os.routers.components import router as components_router
from kern_tasks.os.routers.config import router as config_router
from kern_tasks.os.routers.health import router as health_router
from kern_tasks.os.routers.runs import run_router
from kern_tasks.os.routers.schedules import router as schedules_router
from kern_tasks.os.routers.sessions import router as sessions_router
from kern_tasks.os.routers.traces import router as traces_router

# agno's read side, in the order AgentOS includes them.
READ_ROUTERS = (config_router, components_router, sessions_router, traces_router)

__all__ = [
    "READ_ROUTERS",
    "components_router",
    "config_router",
    "health_router",
    "run_router",
    "schedules_router",
    "sessions_router",
    "traces_router",
]
