"""The AgentOS routers: health, agent runs, workflow runs, schedules, and agno's read side:
config, components (agents, workflows), sessions, traces."""

from kern_tasks.os.routers.components import router as components_router
from kern_tasks.os.routers.config import router as config_router
from kern_tasks.os.routers.health import router as health_router
from kern_tasks.os.routers.metrics import router as metrics_router
from kern_tasks.os.routers.runs import router as agent_runs_router
from kern_tasks.os.routers.schedules import router as schedules_router
from kern_tasks.os.routers.sessions import router as sessions_router
from kern_tasks.os.routers.traces import router as traces_router
from kern_tasks.os.routers.workflow_runs import router as workflow_runs_router

# agno's read side, in the order AgentOS includes them.
READ_ROUTERS = (config_router, components_router, sessions_router, traces_router)

__all__ = [
    "READ_ROUTERS",
    "agent_runs_router",
    "components_router",
    "config_router",
    "health_router",
    "metrics_router",
    "schedules_router",
    "sessions_router",
    "traces_router",
    "workflow_runs_router",
]
