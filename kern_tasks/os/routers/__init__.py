"""The AgentOS routers: health, runs (agents, workflows), schedules."""

from kern_tasks.os.routers.health import router as health_router
from kern_tasks.os.routers.runs import run_router
from kern_tasks.os.routers.schedules import router as schedules_router

__all__ = ["health_router", "run_router", "schedules_router"]
