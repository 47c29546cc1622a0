"""The OpenAPI document is the API's contract: a schema-driven property test (schemathesis).

For every operation of the document the real app serves (uvicorn on loopback, a migrated
Postgres schema and SQLite), schemathesis generates requests from the document itself,
valid ones and ones that break it, and checks each answer:

- no 5xx, whatever was sent;
- the status is one the operation documents, and its body matches the schema documented
  for that status (so error bodies are ErrorBody too);
- a request the document allows is not refused (positive data is accepted) and one it
  forbids is refused; schedule fields whose rules a JSON schema cannot say (cron syntax,
  IANA zones, ".." segments, endpoints this OS serves) are pinned to valid values, so
  that check stays meaningful for everything else.

Examples per operation are bounded so the module runs in seconds. Existing ids come from
a few schedules made first (a generated id answers 404, which is documented too).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi import checks as openapi_checks

from kern_tasks.agent import Agent
from kern_tasks.db import Database
from kern_tasks.errors import ValidationError
from kern_tasks.os import AgentOS
from kern_tasks.scheduler import ScheduleManager, spec

from .conftest import EMPTY_SETTINGS
from .os_server import LiveServer

MAX_EXAMPLES = int(os.environ.get("KERN_CONTRACT_EXAMPLES", "12"))
# Values of the fields whose validity the document can only describe in words.
VALID = {
    "cron_expr": st.sampled_from(["@daily", "*/5 * * * *", "0 9 * * 1-5", "*/10 * * * * *"]),
    "timezone": st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    "endpoint": st.sampled_from(["/agents/demo/runs", "/health"]),
}
# Instants whose rules are in words (a one-off in the future, end_at after now and start_at),
# relative to now so that any mix of them is a valid window.
HOUR = 3600
TIMES = {
    "run_at": lambda now: st.integers(now + HOUR, now + 2 * HOUR),
    "start_at": lambda now: st.integers(now - 2 * HOUR, now - HOUR),
    "end_at": lambda now: st.integers(now + 3 * HOUR, now + 4 * HOUR),
}
CONFORMANCE = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, openapi_checks.positive_data_acceptance],
    GenerationMode.NEGATIVE: [*CONFORMANCE, openapi_checks.negative_data_rejection],
}


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    return None


Served = tuple[str, Any, Callable[[], list[str]]]


@pytest.fixture
def served(db: Database) -> Iterator[Served]:
    """(base URL, the document as schemathesis reads it, seed() -> ids of two fresh schedules)."""
    agent_os = AgentOS(agents=[Agent(model="offline", name="Demo")], db=db, settings=EMPTY_SETTINGS)
    with LiveServer(agent_os.get_app()) as server:
        with httpx.Client(base_url=server.url, timeout=15, trust_env=False) as client:

            def seed() -> list[str]:
                made = [
                    client.post("/schedules", json={"name": f"seed-{uuid.uuid4().hex[:8]}", "cron_expr": "@hourly",
                                                    "endpoint": "/agents/demo/runs", "payload": {"message": "hi"}})
                    for _ in range(2)
                ]
                ids = [reply.json()["id"] for reply in made]
                assert client.post(f"/schedules/{ids[0]}/trigger").status_code == 202
                return ids

            document = client.get("/openapi.json").json()
            yield server.url, schemathesis.openapi.from_dict(document), seed


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _pinned(case: Any, ids: list[str], data: st.DataObject) -> Any:
    """Existing ids in the path (sometimes), and valid values for the fields described in words."""
    if case.path_parameters and "schedule_id" in case.path_parameters and data.draw(st.booleans()):
        case.path_parameters["schedule_id"] = data.draw(st.sampled_from(ids))
    if case.path_parameters and "component_id" in case.path_parameters and data.draw(st.booleans()):
        case.path_parameters["component_id"] = "demo"
    if isinstance(case.body, dict) and case.path.endswith("/backfill"):
        # The range's rules are said in words (start before end, end by now, a bounded count).
        now = int(time.time())
        case.body["start"], case.body["end"] = now - data.draw(st.integers(3600, 7200)), now - 60
    if isinstance(case.body, dict) and case.path.startswith("/schedules"):
        for field, values in VALID.items():
            if field in case.body:
                case.body[field] = data.draw(values)
        now = int(time.time())
        for field, instants in TIMES.items():
            if case.body.get(field) is not None:
                case.body[field] = data.draw(instants(now))
        if case.method.upper() == "PATCH":
            case.body.pop("run_at", None)  # a seed kept recurring, so max_runs stays valid for it
        elif "run_at" in case.body:
            case.body.pop("max_runs", None)  # a one-off runs once (a rule in words)
        if isinstance(case.body.get("payload"), dict):
            case.body["payload"] = _without_nul(case.body["payload"])
        if case.body.get("endpoint") == "/health":
            case.body["method"] = "GET"
        elif "endpoint" in case.body or "method" in case.body:
            case.body["endpoint"], case.body["method"] = "/agents/demo/runs", "POST"
    return case


def _without_nul(value: Any) -> Any:
    """The payload's rule the document states only in words: no NUL in any string."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_keeps_its_documented_contract(served: Served, mode: GenerationMode) -> None:
    base_url, schema, seed = served
    operations = _operations(schema)
    assert len(operations) >= 15, [op.label for op in operations]
    tested: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)
        ids = seed()  # an earlier operation may have deleted or disabled the last ones

        @given(case=strategy, data=st.data())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any, data: st.DataObject) -> None:
            if mode is GenerationMode.POSITIVE:
                case = _pinned(case, ids, data)
            case.call_and_validate(base_url=base_url, checks=[not_a_server_error, *CHECKS[mode]])

        try:
            check()
            tested.append(operation.label)
        except Unsatisfiable:
            # Nothing to break: no input, or only free-form path ids (any text is an id, and
            # an unknown one answers 404). Only invalid data may run out of cases.
            assert mode is GenerationMode.NEGATIVE, operation.label
    # Every operation with a body or a bounded query is among the ones broken on purpose.
    must = {op.label for op in operations if len(op.body) or len(op.query)}
    assert must <= set(tested), must - set(tested)


def test_the_document_states_the_specs_constraints(served: Served) -> None:
    base_url, _, _ = served
    document = httpx.get(base_url + "/openapi.json", timeout=15, trust_env=False).json()
    create = document["components"]["schemas"]["ScheduleCreate"]
    update = document["components"]["schemas"]["ScheduleUpdate"]
    fields = create["properties"]
    assert create["required"] == ["name", "endpoint"] and create["additionalProperties"] is False
    assert create["oneOf"] == [{"required": [kind]} for kind in spec.KIND_FIELDS]  # exactly one kind
    assert (fields["interval_seconds"]["minimum"], fields["max_runs"]["anyOf"][0]["minimum"]) == (1, 1)
    assert (fields["name"]["maxLength"], fields["name"]["pattern"]) == (spec.NAME_MAX, spec.NAME_CHARS)
    assert (fields["timeout_seconds"]["minimum"], fields["timeout_seconds"]["maximum"]) == (1, spec.MAX_TIMEOUT_SECONDS)
    assert fields["max_retries"]["maximum"] == spec.MAX_RETRIES
    assert fields["method"]["enum"] == list(spec.METHODS)
    assert fields["misfire_policy"]["enum"] == list(spec.MISFIRE_POLICIES)
    assert fields["overlap_policy"]["enum"] == list(spec.OVERLAP_POLICIES)
    for field, default in spec.DEFAULTS.items():
        if field in fields:
            assert fields[field].get("default") == default, field
    # An update changes only what it is sent: no defaults, and null only where a field allows it.
    assert all("default" not in prop for prop in update["properties"].values())
    assert "null" not in json.dumps(update["properties"]["name"])
    assert {"type": "null"} in update["properties"]["payload"]["anyOf"]


def test_http_and_python_callers_read_the_same_message(served: Served, db: Database) -> None:
    base_url, _, _ = served
    body = {"name": "same-words", "cron_expr": "@daily", "endpoint": "/agents/demo/runs", "timeout_seconds": 0}
    reply = httpx.post(base_url + "/schedules", json=body, timeout=15, trust_env=False)
    with pytest.raises(ValidationError) as err:
        ScheduleManager(db).create(name="same-words", cron="@daily", endpoint="/agents/demo/runs", timeout_seconds=0)
    assert reply.status_code == 422
    assert (reply.json()["field"], reply.json()["detail"]) == ("timeout_seconds", str(err.value))
    unreadable = httpx.post(base_url + "/schedules", content=b'{"name": "\xff"}', timeout=15, trust_env=False,
                            headers={"content-type": "application/json"})
    assert unreadable.status_code == 422 and "malformed JSON body" in unreadable.json()["detail"]
