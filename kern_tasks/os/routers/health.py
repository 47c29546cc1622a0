"""GET /health: open even with a security key (load balancers and schedules call it).

agno's fields (status, instantiated_at), then what this web process depends on: the
database (one short read, which is also beat's heartbeat: kern_tasks.beat_health), the
broker (a fresh connection, so a broker that went away is seen, not a pooled socket's
memory) and beat's heartbeat age. 503 when the database is down (a load balancer takes
the replica out, body status "unavailable"); otherwise status is agno's "ok", and a
broker that is down or a silent beat shows in their own fields (this process still serves
reads and schedules: restarting it would mend neither). Each check runs on a thread with a deadline, so
the event loop never waits on a dead host.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kern_tasks import beat_health
from kern_tasks.os.schemas import Health

router = APIRouter(tags=["Health"])

CHECK_TIMEOUT_S = 5.0


def _database_and_beat(agent_os: Any) -> dict[str, Any]:
    health = beat_health.read_database(agent_os.db)
    max_age = beat_health.DEFAULT_MAX_AGE_S
    status = "ok" if health.alive(max_age) else ("stale" if health.replicas else "none")
    return {"status": status, "heartbeat_age_s": health.newest_age_s, "max_age_s": max_age,
            "replicas": len(health.replicas)}


def _broker(agent_os: Any) -> dict[str, Any]:
    if agent_os.settings.broker_url is None and not agent_os.scheduler:
        # The embedded default's SQL transport lives with the scheduler in a process that
        # runs one; this web process has none to check (and must not create its file).
        return {"status": "embedded"}
    connection = agent_os.celery_app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT_S)  # no retry: a probe answers now
        connection.default_channel  # noqa: B018 - a channel is what proves the broker answers (Redis: a PING)
    finally:
        connection.release()
    return {"status": "ok"}


async def _check(fn: Any, agent_os: Any) -> tuple[dict[str, Any] | None, str | None]:
    """`fn(agent_os)` on a thread within CHECK_TIMEOUT_S: (its answer, None) or (None, the error's type)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, agent_os), CHECK_TIMEOUT_S), None
    except TimeoutError:
        return None, "Timeout"
    except Exception as exc:  # noqa: BLE001 - any failure is a down dependency, named by its type
        return None, type(getattr(exc, "orig", None) or exc).__name__


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "database down"}})
async def health(request: Request) -> Any:
    agent_os = request.app.state.agent_os
    (beat, db_error), (broker, broker_error) = await asyncio.gather(
        _check(_database_and_beat, agent_os), _check(_broker, agent_os))
    body: dict[str, Any] = {
        "status": "ok",
        "instantiated_at": agent_os.instantiated_at,
        "database": {"status": "down", "error": db_error} if db_error else {"status": "ok"},
        "broker": {"status": "down", "error": broker_error} if broker_error else broker,
        "beat": beat or {"status": "unknown", "max_age_s": beat_health.DEFAULT_MAX_AGE_S},
    }
    if db_error:
        body["status"] = "unavailable"
        return JSONResponse(Health(**body).model_dump(), status_code=503)
    return body
