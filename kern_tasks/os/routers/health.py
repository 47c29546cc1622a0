"""GET /health: open even with a security key (load balancers and schedules call it)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kern_tasks.os.schemas import Health

router = APIRouter(tags=["Health"])


@router.get("/health", response_model=Health)
async def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "instantiated_at": request.app.state.agent_os.instantiated_at}
