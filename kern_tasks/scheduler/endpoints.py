"""What a schedule's endpoint means: agno's run endpoints, the target one names, and the
endpoint policy that says which routes a schedule may call.

A schedule fires at KERN_BASE_URL + endpoint. A POST to a run endpoint
(`/agents|teams|workflows/{id}/runs`) speaks agno's run protocol and names its target
(stamped in target_type/target_id as agno does); any other path is a plain call.

The policy is handed to ScheduleManager (`ScheduleManager(db, endpoint_policy=...)`),
which applies it on every write that could point a live schedule at a route: create, a
change of endpoint or method, enabling, and trigger. Every way in (Python, HTTP,
SchedulerTools, CLI) therefore gets the same check and the same error. An AgentOS's
policy is its `Targets` (kern_tasks/os/targets.py): the run routes of what it serves and
its plain routes. A manager without a policy accepts any path (validation still refuses
full URLs and ".." segments).
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

# agno's pattern (agno.db.schemas.scheduler.RUN_ENDPOINT_RE): an optional trailing slash,
# and `\Z`, so a trailing newline cannot pass for a run endpoint.
RUN_ENDPOINT = re.compile(r"^/(agents|teams|workflows)/([^/]+)/runs/?\Z")


def target_of(endpoint: str) -> tuple[str | None, str | None]:
    """("agent", "my-agent") for "/agents/my-agent/runs", as agno stamps them; (None, None)
    for an endpoint that is not a run endpoint."""
    match = RUN_ENDPOINT.match(endpoint)
    if not match:
        return None, None
    return match.group(1).rstrip("s"), match.group(2)


@runtime_checkable
class EndpointPolicy(Protocol):
    def check_endpoint(self, method: str, endpoint: str) -> tuple[str, str]:
        """(method, endpoint) normalised when a schedule may call that route; otherwise
        `ValidationError` naming the field ("endpoint" or "method") and saying what is
        served instead."""
        ...
