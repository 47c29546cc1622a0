"""GET /config: this OS, its agents and workflows, and which of agno's features it has
(agno's ConfigResponse; see kern_tasks.os.describe.config)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from kern_tasks.os.agno_schemas import ConfigBody
from kern_tasks.os.describe import config
from kern_tasks.os.errors import error_responses

router = APIRouter(tags=["Core"], responses=error_responses(401, 403))


@router.get("/config", response_model=ConfigBody, summary="Get OS configuration")
async def get_config(request: Request) -> Any:
    return config(request.app.state.agent_os)
