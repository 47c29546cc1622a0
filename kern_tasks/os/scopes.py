"""Which scope each route needs, as agno's AgentOS decides it (agno/os/scopes.py).

    required_scopes("POST", "/agents/demo/runs")   -> ("agents:run",)
    allows(["agents:demo:run"], ("agents:run",), "/agents/demo/runs")   -> True

The table is agno's default scope table for the route families this OS serves (config,
agents, teams, workflows, sessions, traces, schedules), then the dashboard's pages, in agno's form and order:
"METHOD /path" with `*` matching any run of characters (slashes too), an exact entry
before the patterns, the first pattern that matches wins. tests/test_jwt_scopes.py checks
every route of the app against agno's own table.

A token's scopes grant as agno's do:
- `agent_os:admin` grants everything;
- `resource:action` (e.g. `schedules:read`) grants that action on every resource of the kind;
- `resource:<id>:action` (e.g. `agents:demo:run`) grants it on that one agent, team or
  workflow, `resource:*:action` on all of them; a route under /agents/{id}, /teams/{id}
  or /workflows/{id} needing that kind's scope is satisfied by either. Elsewhere only a
  global or wildcard scope of the kind counts;
- `system:` is the old name of `config:` and is read as it.
A route needs every scope its entry lists.

Scheduling is running later, so pointing a schedule at a route needs what calling it
would (agno's run_permissions): `<kind>:run` on that agent, team or workflow for a run
endpoint (POST /agents|teams|workflows/{id}/runs), `agent_os:admin` for any other route.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

from kern_tasks.scheduler.endpoints import RUN_ENDPOINT

ADMIN_SCOPE = "agent_os:admin"
LEGACY_FAMILIES = {"system": "config"}
PER_RESOURCE_KINDS = ("agents", "teams", "workflows")

ROUTE_SCOPES: dict[str, tuple[str, ...]] = {
    "GET /config": ("config:read",),
    "GET /models": ("config:read",),
    "GET /agents": ("agents:read",),
    "GET /agents/*": ("agents:read",),
    "POST /agents": ("agents:write",),
    "PATCH /agents/*": ("agents:write",),
    "DELETE /agents/*": ("agents:delete",),
    "POST /agents/*/runs": ("agents:run",),
    "POST /agents/*/runs/*/continue": ("agents:run",),
    "POST /agents/*/runs/*/cancel": ("agents:run",),
    "GET /teams": ("teams:read",),
    "GET /teams/*": ("teams:read",),
    "POST /teams": ("teams:write",),
    "PATCH /teams/*": ("teams:write",),
    "DELETE /teams/*": ("teams:delete",),
    "POST /teams/*/runs": ("teams:run",),
    "POST /teams/*/runs/*/continue": ("teams:run",),
    "POST /teams/*/runs/*/cancel": ("teams:run",),
    "GET /workflows": ("workflows:read",),
    "GET /workflows/*": ("workflows:read",),
    "POST /workflows": ("workflows:write",),
    "PATCH /workflows/*": ("workflows:write",),
    "DELETE /workflows/*": ("workflows:delete",),
    "POST /workflows/*/runs": ("workflows:run",),
    "POST /workflows/*/runs/*/continue": ("workflows:run",),
    "POST /workflows/*/runs/*/cancel": ("workflows:run",),
    "GET /sessions": ("sessions:read",),
    "GET /sessions/*": ("sessions:read",),
    "POST /sessions": ("sessions:write",),
    "POST /sessions/*/rename": ("sessions:write",),
    "PATCH /sessions/*": ("sessions:write",),
    "DELETE /sessions": ("sessions:delete",),
    "DELETE /sessions/*": ("sessions:delete",),
    "GET /traces": ("traces:read",),
    "GET /traces/*": ("traces:read",),
    "GET /trace_session_stats": ("traces:read",),
    "POST /traces/search": ("traces:read",),
    "GET /schedules": ("schedules:read",),
    "GET /schedules/*": ("schedules:read",),
    "POST /schedules": ("schedules:write",),
    "PATCH /schedules/*": ("schedules:write",),
    "DELETE /schedules/*": ("schedules:delete",),
    "POST /schedules/*/enable": ("schedules:write",),
    "POST /schedules/*/disable": ("schedules:write",),
    "POST /schedules/*/trigger": ("schedules:write",),
    "POST /schedules/*/backfill": ("schedules:write",),  # ours (agno has no backfill): as trigger
    "GET /schedules/*/runs": ("schedules:read",),
    "GET /schedules/*/runs/*": ("schedules:read",),
    "GET /metrics": ("metrics:read",),  # agno's scope; ours serves Prometheus' format there
    # Ours (agno has no dashboard): a page needs the scopes of the data it shows, an
    # action the scope of its API twin (kern_tasks/dashboard).
    "GET /dashboard": ("schedules:read",),
    "GET /dashboard/": ("schedules:read",),
    "GET /dashboard/schedules": ("schedules:read",),
    "GET /dashboard/schedules/*": ("schedules:read",),
    "POST /dashboard/schedules/*": ("schedules:write",),
    "GET /dashboard/runs": ("schedules:read",),
    "GET /dashboard/health": ("schedules:read",),
    "GET /dashboard/workflows/*": ("workflows:read",),
    "GET /dashboard/sessions/*": ("sessions:read",),
    "GET /dashboard/agents/*": ("sessions:read",),  # an agent's or a team's run: what its session holds
    "GET /dashboard/teams/*": ("sessions:read",),
    "GET /dashboard/traces": ("traces:read",),
}

_RESOURCE = re.compile(r"^/(agents|teams|workflows)/([^/]+)")


def required_scopes(method: str, path: str) -> tuple[str, ...] | None:
    """The scopes `method path` needs; None when the table has no entry for it."""
    exact = ROUTE_SCOPES.get(f"{method} {path}")
    if exact is not None:
        return exact
    for key, scopes in ROUTE_SCOPES.items():
        entry_method, pattern = key.split(" ", 1)
        if entry_method == method and fnmatch.fnmatchcase(path, pattern):
            return scopes
    return None


def resource_of(path: str) -> tuple[str | None, str | None]:
    """("agents", "demo") for /agents/demo/...; (None, None) off the per-resource kinds."""
    match = _RESOURCE.match(path)
    return (match.group(1), match.group(2)) if match else (None, None)


def _parts(scope: str) -> tuple[str, str | None, str] | None:
    """(family, resource id or None, action) of a scope; None for one of no known form."""
    parts = scope.split(":")
    if len(parts) == 2:
        return LEGACY_FAMILIES.get(parts[0], parts[0]), None, parts[1]
    if len(parts) == 3:
        return LEGACY_FAMILIES.get(parts[0], parts[0]), parts[1], parts[2]
    return None


def _grants(held: str, family: str, action: str, resource_id: str | None) -> bool:
    parts = _parts(held)
    if parts is None or parts[0] != family or parts[2] != action:
        return False
    held_id = parts[1]
    if held_id is None or held_id == "*":
        return True
    return resource_id is not None and held_id == resource_id


def allows(held: Iterable[str], required: Sequence[str], path: str) -> bool:
    """True when the scopes `held` grant every one of `required` on `path` (module docstring)."""
    held = [scope for scope in held if isinstance(scope, str)]
    if ADMIN_SCOPE in held:
        return True
    kind, resource_id = resource_of(path)
    for needed in required:
        parts = _parts(needed)
        if parts is None:
            return False
        family, _, action = parts
        # A per-resource scope counts only for a route about that resource's own kind: an
        # agents:demo:read must not satisfy a sessions:read needed under /agents/demo.
        on_resource = resource_id if family == kind else None
        if not any(_grants(scope, family, action, on_resource) for scope in held):
            return False
    return True


def listable_ids(held: Iterable[str], kind: str, action: str = "read") -> set[str] | None:
    """Which of `kind`'s resources (agents, teams, workflows) the scopes `held` may see in
    its listing: None for all of them (admin, `kind:action` or `kind:*:action`), else the
    ids of their `kind:<id>:action` scopes, possibly none. agno lets such a token list
    (GET /agents) and filters the list, rather than refuse it."""
    held = [scope for scope in held if isinstance(scope, str)]
    if ADMIN_SCOPE in held or any(_grants(scope, kind, action, None) for scope in held):
        return None
    ids = set()
    for scope in held:
        parts = _parts(scope)
        if parts is not None and parts[0] == kind and parts[2] == action and parts[1] is not None:
            ids.add(parts[1])
    return ids


def is_listing(method: str, path: str) -> str | None:
    """The kind when `method path` is a per-resource kind's listing (GET /agents), else None."""
    kind = path.strip("/")
    return kind if method == "GET" and kind in PER_RESOURCE_KINDS else None


def schedule_refusal(held: Iterable[str], method: str, endpoint: str) -> str | None:
    """Why scopes `held` may not point a schedule at `method endpoint` (None: they may)."""
    held = list(held)
    if ADMIN_SCOPE in held:
        return None
    # As the fire will reach it: a percent-encoded id is the id it decodes to.
    match = RUN_ENDPOINT.match(unquote(endpoint)) if method.upper() == "POST" else None
    if match is None:
        return f"Insufficient permissions: only {ADMIN_SCOPE} may schedule a route that is not a run endpoint"
    kind, resource_id = match.group(1), match.group(2)
    needed = f"{kind}:run"
    if allows(held, (needed,), f"/{kind}/{resource_id}/runs"):
        return None
    return f"Insufficient permissions to schedule {kind} {resource_id!r}. Required scope(s): {needed}"
