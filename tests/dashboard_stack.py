"""The dashboard tests' one stack: an AgentOS on real uvicorn over a fresh Postgres schema,
with its embedded scheduler (beat and a Celery worker on threads of the web process, the
embedded SQL broker in a temporary folder), so a triggered schedule really fires at the
AgentOS's own agents: `briefer` (an offline model: succeeds) and `raiser` (raises: its
fires fail with the agent's error), and any `extra_agents` a test module brings. Auth: a
security key, and users' JWTs (HS256).

    with dashboard_stack(tmp_path) as stack:
        client = stack.logged_in(SECURITY_KEY)        # httpx, with the dashboard's cookie
        stack.api.post("/schedules", json={...})      # the API, with the security key
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import jwt

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.os import AgentOS
from kern_tasks.settings import Settings
from tests.conftest import POSTGRES_URL, drop_schema, fresh_schema_name
from tests.os_server import LiveServer, RaisingAgent
from tests.processes import free_port

SECURITY_KEY = "dashboard-security-key-5d1e"
OS_ID = "dashboard-os"
JWT_SECRET = "the dashboard tests' identity provider secret, 32+ bytes"
USER_SCOPES = ["schedules:read", "schedules:write", "agents:run", "agents:read", "sessions:read", "traces:read"]
CSRF = re.compile(r'name="csrf(?:-token)?" (?:value|content)="([0-9a-f]+)"')


def user_token(user: str | None, scopes: list[str] = USER_SCOPES) -> str:
    claims: dict[str, Any] = {"aud": OS_ID, "scopes": scopes}
    if user is not None:
        claims["sub"] = user
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@dataclass
class DashboardStack:
    url: str
    db: Database
    agent_os: AgentOS

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, trust_env=False, **options)

    @property
    def api(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {SECURITY_KEY}"})

    def api_as(self, token: str) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {token}"})

    def logged_in(self, key: str = SECURITY_KEY) -> httpx.Client:
        """A client holding the dashboard's cookie, got through the login form."""
        client = self.client()
        answer = client.post("/dashboard/login", data={"key": key, "next": "/dashboard/schedules"})
        assert answer.status_code == 303, answer.text
        return client

    def create(self, token: str = SECURITY_KEY, **fields: Any) -> dict[str, Any]:
        body = {"cron_expr": "0 9 * * *", "endpoint": "/agents/briefer/runs", "payload": {"message": "brief"},
                **fields}
        body = {key: value for key, value in body.items() if value is not None}  # cron_expr=None: another kind
        with self.api_as(token) as api:
            made = api.post("/schedules", json=body)
        assert made.status_code == 201, made.text
        return made.json()


@contextmanager
def dashboard_stack(folder: Path, extra_agents: Sequence[Any] = (), **os_options: Any) -> Iterator[DashboardStack]:
    schema = fresh_schema_name()
    port = free_port()
    settings = Settings(database_url=POSTGRES_URL, db_schema=schema, data_dir=folder / "kern",
                        base_url=f"http://127.0.0.1:{port}", security_key=SECURITY_KEY,
                        jwt_verification_key=JWT_SECRET, jwt_algorithm="HS256", os_id=OS_ID)
    db = Database(settings=settings)
    agents = [Agent(model="offline", name="Briefer", id="briefer"), RaisingAgent(), *extra_agents]
    agent_os = AgentOS(agents=agents, db=db, settings=settings, scheduler=True, scheduler_poll_interval=1,
                       **os_options)
    try:
        with LiveServer(agent_os.get_app(), port=port) as server:
            yield DashboardStack(server.url, db, agent_os)
    finally:
        db.dispose()
        drop_schema(schema)
