"""What this AgentOS serves: its runnable agents and workflows by id, and the routes a
schedule may call (a schedule fires at KERN_BASE_URL + endpoint, so it must name a route
of this app: no other host, no path we do not serve).

`Targets` is this AgentOS's endpoint policy (kern_tasks.scheduler.endpoints): AgentOS
hands it to its ScheduleManager and to its agents' SchedulerTools, so the API, the tools
and Python callers refuse the same routes with the same message.

An agent is anything with `id`, `name` and
`run(message, *, session_id=None, user_id=None, run_id=None, history=None) -> RunOutput`
(kern_tasks.agent.Agent); a workflow is a kern_tasks.workflow.Workflow, which the workflow
run routes hand to Celery workers (os/routers/workflow_runs.py). Both are served by id
here, so schedules may target /agents/{id}/runs and /workflows/{id}/runs alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol
from urllib.parse import unquote

from kern_tasks.errors import NotFound, ValidationError
from kern_tasks.scheduler import validation
from kern_tasks.scheduler.endpoints import RUN_ENDPOINT

PLAIN_ROUTES = {"/health": "GET"}
KINDS = {"agents": "agent", "teams": "team", "workflows": "workflow"}
LISTED_ROUTES_MAX = 20


class Runnable(Protocol):
    id: str
    name: str | None

    def run(
        self,
        message: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        run_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> Any: ...


def by_id(components: Iterable[Any], kind: str) -> dict[str, Any]:
    """{id: component}; raises TypeError/ValueError for a component we cannot serve."""
    found: dict[str, Any] = {}
    for component in components:
        component_id = getattr(component, "id", None)
        if not isinstance(component_id, str) or not component_id or "/" in component_id:
            raise ValueError(f"every {kind} needs a non-empty id without '/', got {component_id!r}")
        if not callable(getattr(component, "run", None)):
            raise TypeError(f"{kind} {component_id!r} has no run() method")
        if component_id in found:
            raise ValueError(f"two {kind}s have the id {component_id!r}; ids must be unique")
        found[component_id] = component
    return found


@dataclass
class Targets:
    agents: dict[str, Any] = field(default_factory=dict)
    teams: dict[str, Any] = field(default_factory=dict)  # none yet
    workflows: dict[str, Any] = field(default_factory=dict)

    def registry(self, kind: str) -> dict[str, Any]:
        return {"agents": self.agents, "teams": self.teams, "workflows": self.workflows}[kind]

    def get(self, kind: str, component_id: str) -> Any:
        """The served component, or NotFound ("unknown agent 'x'")."""
        found = self.registry(kind).get(component_id)
        if found is None:
            raise NotFound(f"unknown {KINDS[kind]} {component_id[:200]!r}")
        return found

    def routes(self) -> list[str]:
        """Every route a schedule may call, as "METHOD /path"."""
        served = [f"POST /{kind}/{cid}/runs" for kind in KINDS for cid in sorted(self.registry(kind))]
        return served + [f"{method} {path}" for path, method in PLAIN_ROUTES.items()]

    def describe_routes(self) -> str:
        routes = self.routes()
        shown = ", ".join(routes[:LISTED_ROUTES_MAX])
        more = len(routes) - LISTED_ROUTES_MAX
        return shown + (f" and {more} more" if more > 0 else "")

    def check_endpoint(self, method: Any, endpoint: Any) -> tuple[str, str]:
        """(method, endpoint) normalised, when this app serves that route; else
        ValidationError naming the endpoint (or the method) and listing what is served."""
        method = validation.method(method)
        endpoint = validation.endpoint(endpoint)
        # The run routes are served without a trailing slash (agno's pattern allows one).
        run = None if endpoint.endswith("/") else RUN_ENDPOINT.match(endpoint)
        if run is not None:
            kind, component_id = run.group(1), unquote(run.group(2))
            if component_id not in self.registry(kind):
                raise ValidationError(
                    "endpoint",
                    f'"{endpoint}" names an unknown {KINDS[kind]} "{component_id[:200]}"; '
                    f"this AgentOS serves: {self.describe_routes()}",
                )
            if method != "POST":
                raise ValidationError("method", f'"{endpoint}" is a run endpoint: call it with POST, not {method}')
            return method, endpoint
        if endpoint in PLAIN_ROUTES:
            if method != PLAIN_ROUTES[endpoint]:
                raise ValidationError("method", f'"{endpoint}" answers {PLAIN_ROUTES[endpoint]}, not {method}')
            return method, endpoint
        raise ValidationError(
            "endpoint", f'"{endpoint[:300]}" is not served by this AgentOS; it serves: {self.describe_routes()}'
        )
