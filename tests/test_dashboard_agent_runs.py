"""An agent's run as a dashboard page (kern_tasks/dashboard/agent_runs.py), on real uvicorn
and Postgres with the embedded scheduler firing for real (tests/dashboard_stack.py): a
schedule's attempt links to its run's page, which shows the input, the output, the tool
calls and the error, links to its session, trace and the attempts that started it, is
refreshed while the run is in flight, and is a 404 for another user's key; bad ids 404,
bad query values 422. One chromium test follows the link from a schedule's page and
watches an in-flight run end without a reload (screenshot dashboard-agent-run.png)."""

from __future__ import annotations

import html
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any, Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from kern_tasks.agent import Agent
from kern_tasks.agent.models import Model, ModelResponse, ToolCall
from kern_tasks.dashboard.agent_runs import tool_calls_of
from kern_tasks.scheduler.models import ScheduleRun
from tests.browser import browser, logged_in, screenshot  # noqa: F401 (fixtures)
from tests.dashboard_stack import SECURITY_KEY, DashboardStack, dashboard_stack, user_token
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(180)

# A city whose name starts with "held" waits in its tool call until the test releases it.
GATES: dict[str, threading.Event] = {}


def lookup_weather(city: str) -> str:
    """The weather in a city."""
    gate = GATES.get(city)
    if gate is not None:
        gate.wait(60)
    return f"sunny in {city}, 21 C"


class ForecastModel(Model):
    """Asks for lookup_weather with the user's message as the city, then answers with the
    tool's result: a tool-calling model without a network."""

    provider = "test"

    def invoke(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        last = messages[-1]
        if last["role"] == "tool":
            return ModelResponse(content=f"Forecast: {last['content']}", finish_reason="stop")
        city = str(last["content"])
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name="lookup_weather",
                        arguments=json.dumps({"city": city}))
        return ModelResponse(tool_calls=[call], finish_reason="tool_calls")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    forecaster = Agent(ForecastModel("forecast-1"), name="Forecaster", id="forecaster", tools=[lookup_weather])
    with dashboard_stack(tmp_path_factory.mktemp("dashboard-agent-runs"), extra_agents=[forecaster]) as made:
        yield made
    for gate in GATES.values():
        gate.set()


@pytest.fixture(scope="module")
def key_client(stack: DashboardStack) -> Iterator[httpx.Client]:
    with closing(stack.logged_in()) as client:
        yield client


def fired(stack: DashboardStack, city: str, token: str = SECURITY_KEY, agent: str = "forecaster",
          ended: bool = True) -> tuple[dict[str, Any], ScheduleRun]:
    """A schedule calling `agent` with `city`, triggered: it and its attempt once the
    attempt knows its run (and, if `ended`, once the attempt ended)."""
    made = stack.create(token=token, name=f"weather-{uuid.uuid4().hex[:6]}", endpoint=f"/agents/{agent}/runs",
                        payload={"message": city}, max_retries=0)
    with stack.api as api:
        assert api.post(f"/schedules/{made['id']}/trigger").status_code in (200, 201, 202)

    def attempt() -> ScheduleRun | None:
        rows = stack.agent_os.manager.runs(made["id"], limit=5).data
        if not rows or rows[0].run_id is None:
            return None
        return rows[0] if not ended or rows[0].status not in ("queued", "running") else None

    return made, wait_for(attempt, timeout=45, what=f"the fire of {made['name']}")


def run_link(client: httpx.Client, schedule_id: str) -> str:
    shown = client.get(f"/dashboard/schedules/{schedule_id}").text
    found = re.search(r'href="(/dashboard/agents/[^"]+/runs/[^"]+)">run</a>', shown)
    assert found, "the schedule's page links no agent run"
    return html.unescape(found.group(1))


def test_a_fired_runs_page_shows_its_input_output_and_tool_calls(stack: DashboardStack,
                                                                 key_client: httpx.Client) -> None:
    made, attempt = fired(stack, "Oslo")
    assert attempt.status == "success", attempt.error
    link = run_link(key_client, made["id"])
    assert link == f"/dashboard/agents/forecaster/runs/{attempt.run_id}"
    answer = key_client.get(link)
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert ">COMPLETED<" in page and 'data-ended="true"' in page and "forecast-1" in page
    assert re.search(r'id="run-input">Oslo</pre>', page)
    assert "Forecast: sunny in Oslo, 21 C" in page
    assert '<code class="tool-name">lookup_weather</code>' in page
    assert '{"city": "Oslo"}' in html.unescape(page) and "sunny in Oslo, 21 C</pre>" in page
    # Its session, its trace, and the schedule whose attempt started it.
    assert f'href="/dashboard/sessions/{attempt.session_id}"' in page
    assert f'href="/dashboard/traces?run_id={attempt.run_id}"' in page
    assert f'<a class="name" href="/dashboard/schedules/{made["id"]}">{made["name"]}</a>' in page
    assert f'data-attempt="{attempt.id}"' in page
    # The session page's run and the runs page link here too.
    session = key_client.get(f"/dashboard/sessions/{attempt.session_id}").text
    assert f'href="{link}">run</a>' in session
    runs = key_client.get("/dashboard/runs").text
    assert f'href="{link}">agent run</a>' in runs
    # The poll: unchanged for the mark shown, else the body again.
    mark = re.search(r'data-mark="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert key_client.get(link + "/state", params={"mark": mark}).json() == {"changed": False}
    again = key_client.get(link + "/state").json()
    assert again["ended"] is True and "lookup_weather" in again["parts"]["agent-run-body"]


def test_a_failed_run_shows_its_error(stack: DashboardStack, key_client: httpx.Client) -> None:
    made, attempt = fired(stack, "Lima", agent="raiser")
    assert attempt.status == "failed"
    page = key_client.get(run_link(key_client, made["id"])).text
    assert ">ERROR<" in page and 'class="card run-error"' in page
    assert "agent bug while handling 'Lima'" in html.unescape(page)
    assert "No tool calls." in page


def test_an_in_flight_run_is_polled_until_it_ends(stack: DashboardStack, key_client: httpx.Client) -> None:
    city = f"held-{uuid.uuid4().hex[:6]}"
    GATES[city] = threading.Event()
    made, attempt = fired(stack, city, ended=False)
    link = run_link(key_client, made["id"])
    page = wait_for(lambda: (shown := key_client.get(link).text) and ">RUNNING<" in shown and shown,
                    timeout=20, what="the run to be running")
    assert 'data-ended="false"' in page and "live-dot" in page and "Not yet: the run is running." in page
    mark = re.search(r'data-mark="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert key_client.get(link + "/state", params={"mark": mark}).json() == {"changed": False}
    GATES[city].set()
    polled = wait_for(lambda: (answer := key_client.get(link + "/state", params={"mark": mark}).json())["changed"]
                      and answer.get("ended") and answer, timeout=30, what="the run to end")
    assert polled["mark"] != mark and f"Forecast: sunny in {city}, 21 C" in polled["parts"]["agent-run-body"]


def test_another_users_key_gets_404_and_the_owner_sees_it(stack: DashboardStack) -> None:
    made, attempt = fired(stack, "Bergen", token=user_token("alice"))
    assert attempt.status == "success", attempt.error
    with closing(stack.logged_in(user_token("alice"))) as alice, closing(stack.logged_in(user_token("bob"))) as bob:
        link = run_link(alice, made["id"])
        mine = alice.get(link)
        assert mine.status_code == 200 and "Forecast: sunny in Bergen" in mine.text and ">alice<" in mine.text
        assert f'data-attempt="{attempt.id}"' in mine.text  # her attempt, found under her scope
        for path in (link, link + "/state"):
            theirs = bob.get(path)
            assert theirs.status_code == 404 and "Bergen" not in theirs.text
        # Without sessions:read the page is refused, naming the scope.
        with closing(stack.logged_in(user_token("alice", ["schedules:read"]))) as narrow:
            refused = narrow.get(link)
            assert refused.status_code == 403 and "sessions:read" in refused.text


def test_bad_ids_answer_404_and_bad_values_422(stack: DashboardStack, key_client: httpx.Client) -> None:
    made, attempt = fired(stack, "Quito")
    run_id = attempt.run_id
    for path in (f"/dashboard/agents/forecaster/runs/no-such-run",
                 f"/dashboard/agents/briefer/runs/{run_id}",         # another agent's id
                 f"/dashboard/teams/forecaster/runs/{run_id}",        # an agent's run is no team's
                 f"/dashboard/agents/forecaster/runs/{'x' * 300}",
                 f"/dashboard/agents/{'y' * 300}/runs/{run_id}",
                 "/dashboard/agents/forecaster/runs/no-such-run/state"):
        answer = key_client.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
    page = f"/dashboard/agents/forecaster/runs/{run_id}"
    assert key_client.get(page, params={"tz": "Mars/Base"}).status_code == 422
    assert key_client.get(page + "/state", params={"mark": "m" * 100}).status_code == 422


def test_follow_a_schedules_run_link_and_watch_the_run_end(stack: DashboardStack,
                                                           logged_in: Callable[[str, str], Page]) -> None:
    city = f"held-{uuid.uuid4().hex[:4]}"
    GATES[city] = threading.Event()
    made, attempt = fired(stack, city, ended=False)
    page = logged_in(stack.url, SECURITY_KEY)
    page.goto(f"{stack.url}/dashboard/schedules/{made['id']}")
    page.locator(f'tr[data-attempt="{attempt.id}"] a', has_text="run").first.click()
    expect(page).to_have_url(re.compile(rf"/dashboard/agents/forecaster/runs/{attempt.run_id}$"))
    expect(page.locator("#run-state")).to_have_text("RUNNING")
    GATES[city].set()
    # No reload: the page's poller replaces its body once the run ended.
    expect(page.locator("#run-state")).to_have_text("COMPLETED")
    expect(page.locator("#run-output")).to_have_text(f"Forecast: sunny in {city}, 21 C")
    expect(page.locator(".tool-calls")).to_contain_text("lookup_weather")
    expect(page.locator("#agent-run")).to_have_attribute("data-ended", "true")
    expect(page.locator(".started-by")).to_contain_text(made["name"])
    screenshot(page, "dashboard-agent-run")
    page.click("text=Session")
    expect(page).to_have_url(re.compile(r"/dashboard/sessions/"))


def test_tool_calls_are_read_from_agnos_tools_or_from_the_chat_messages() -> None:
    agnos = tool_calls_of({"tools": [{"tool_name": "search", "tool_args": {"q": "x"}, "result": "found",
                                      "tool_call_error": True}]})
    assert [(c.name, c.arguments, c.result, c.failed) for c in agnos] == [("search", '{"q": "x"}', "found", True)]
    ours = tool_calls_of({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "add", "arguments": '{"a": 1}'}},
                                             {"id": "c2", "function": {"name": "bad", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
        {"role": "tool", "tool_call_id": "c2", "content": '{"error": "boom"}'}]})
    assert [(c.name, c.result, c.failed) for c in ours] == [("add", "2", False), ("bad", '{"error": "boom"}', True)]
