"""GET /metrics: Prometheus' text format, this web process's counters (an embedded
scheduler's fires count here) and the SQL gauges (kern_runs, kern_schedules_overdue).

Auth (os/auth.py): guarded like every route when auth is on: the security key, or
KERN_METRICS_TOKEN, a token good for this route only (what Prometheus' scrape config
sends as `authorization: {credentials: ...}`), or a user's JWT with agno's `metrics:read`
scope. Open when auth is off, as every route is then. agno's AgentOS answers its own
usage metrics (JSON) at this path; ours is Prometheus' text, what operators scrape.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from kern_tasks.metrics import exposition

router = APIRouter(tags=["Metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state
    registry = getattr(state, "metrics_registry", None)
    if registry is None:
        agent_os = state.agent_os
        registry = state.metrics_registry = exposition.web_registry(lambda: agent_os.db)
    body = await asyncio.to_thread(exposition.render, registry)  # the SQL gauges query
    return Response(body, media_type=exposition.CONTENT_TYPE)
