"""A workflow run's dashboard page (/dashboard/workflows/{workflow_id}/runs/{run_id}): real
workflow runs on real Celery workers (tests/workflow_cluster.py: two workers and a
`kern-tasks serve` of tests/dashboard_app.py, on Postgres and Redis), read over HTTP and in
a real chromium:

- the step tree while the run is in flight (a step held by a gate file), then after it
  ended: each step's status, attempt, duration and output preview, the Parallel's
  branches and the Condition's branch nested under them;
- the page's poll: `?mark=` of the tree shown answers `{"changed": false}` until the run
  moves, then the tree again, and `ended` once it is over;
- a failing step's attempts and error; a Loop's iterations and a Router's choice named
  through the definition; a run kept only in agno_runs (run in process with a db) read
  from there;
- a user's token reads only that user's runs (another's is 404, as a missing one), the
  security key every run; bad ids answer 404;
- in the browser: the page of a held run turns COMPLETED without a reload once the gate
  opens (screenshots before and after, looked at).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from kern_tasks.workflow import Step, Workflow
from tests import dashboard_app
from tests.browser import browser, logged_in, screenshot  # noqa: F401 (fixtures)
from tests.processes import wait_for
from tests.workflow_cluster import WorkflowCluster, running

pytestmark = pytest.mark.slow

REDIS_DB = 7
APP = "tests.dashboard_app:agent_os"
OS_ID = "dashboard-workflows-os"
SECRET = "the identity provider's secret, 32+ bytes long"
SECURITY_KEY = "dashboard-workflows-key-77ab"
SCOPES = ["workflows:read", "workflows:run", "schedules:read", "sessions:read", "traces:read"]


def token(user: str) -> str:
    return jwt.encode({"aud": OS_ID, "sub": user, "scopes": SCOPES}, SECRET, algorithm="HS256")


ALICE, BOB = token("alice"), token("bob")


class Cluster(WorkflowCluster):
    """Two workers and the web process, auth on (the security key and users' JWTs)."""

    def __init__(self, tmp: Path) -> None:
        self.gates = tmp / "gates"
        self.gates.mkdir()
        super().__init__(tmp, REDIS_DB, APP, env={
            dashboard_app.GATES_ENV: str(self.gates), "KERN_SECURITY_KEY": SECURITY_KEY,
            "KERN_JWT_VERIFICATION_KEY": SECRET, "KERN_JWT_ALGORITHM": "HS256", "KERN_OS_ID": OS_ID})
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def start(self) -> None:
        super().start()
        self.web()

    def get(self, path: str, credential: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {credential}",
                                                             "Accept": "text/html"})

    def start_run(self, workflow_id: str, message: str, credential: str) -> str:
        answer = self.client.post(f"/workflows/{workflow_id}/runs", data={"message": message, "background": "true", "stream": "false"},
                                  headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["run_id"])

    def status(self, workflow_id: str, run_id: str) -> str:
        answer = self.client.get(f"/workflows/{workflow_id}/runs/{run_id}",
                                 headers={"Authorization": f"Bearer {SECURITY_KEY}"})
        return str(answer.json()["status"])

    def ended(self, workflow_id: str, run_id: str) -> str:
        return wait_for(lambda: (s := self.status(workflow_id, run_id)) != "RUNNING" and s, timeout=60,
                        what=f"run {run_id} to end")

    def release(self, message: str) -> None:
        (self.gates / message).write_text("go")

    def close(self, failed: bool) -> None:
        self.client.close()
        super().close(failed)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("dashboard-workflows"))) as made:
        yield made


def steps_of(html: str) -> dict[str, str]:
    """path -> status of every step the page shows."""
    return dict(re.findall(r'<li class="step depth-\d+" data-path="([^"]+)" data-status="([^"]+)"', html))


def page_url(workflow_id: str, run_id: str) -> str:
    return f"/dashboard/workflows/{workflow_id}/runs/{run_id}"


def test_the_step_tree_in_flight_then_ended(cluster: Cluster) -> None:
    message = f"held-{uuid.uuid4().hex[:6]}"
    run_id = cluster.start_run("report", message, ALICE)
    url = page_url("report", run_id)
    wait_for(lambda: steps_of(cluster.get(url, ALICE).text).get("2") == "running", timeout=60,
             what="the hold step to run")
    held = cluster.get(url, ALICE)
    assert held.status_code == 200, held.text
    html = held.text
    assert steps_of(html) == {"0": "succeeded", "1": "succeeded", "1/b0/0": "succeeded", "1/b1/0": "succeeded",
                              "2": "running", "3": "waiting"}
    for name in ("collect", "fan_out", "left", "right", "hold", "publish_if_ready"):
        assert f'<span class="step-name">{name}</span>' in html
    assert f"collected figures for {message}" in html  # collect's output preview
    assert "right half: 30 rows" in html and "2 branches" in html and "attempt 1" in html
    assert 'data-ended="false"' in html and "live-dot" in html
    mark = re.search(r'data-mark="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    poll = cluster.get(url + "/tree", ALICE, mark=mark)
    assert poll.status_code == 200 and poll.json() == {"changed": False}

    cluster.release(message)
    assert cluster.ended("report", run_id) == "COMPLETED"
    polled = cluster.get(url + "/tree", ALICE, mark=mark).json()
    assert polled["changed"] is True and polled["ended"] is True and polled["mark"] != mark
    tree = polled["parts"]["step-tree"]
    assert steps_of(tree) == {"0": "succeeded", "1": "succeeded", "1/b0/0": "succeeded", "1/b1/0": "succeeded",
                              "2": "succeeded", "3": "succeeded", "3/0": "succeeded"}
    assert "branch: if" in tree and "published the report" in tree
    assert "COMPLETED" in polled["parts"]["run-status"]
    done = cluster.get(url, ALICE).text
    assert 'data-ended="true"' in done and "held until released" in done


def test_a_failing_step_shows_its_attempts_and_error(cluster: Cluster) -> None:
    run_id = cluster.start_run("broken", "anything", SECURITY_KEY)
    cluster.ended("broken", run_id)
    html = cluster.get(page_url("broken", run_id), SECURITY_KEY).text
    assert steps_of(html) == {"0": "failed"}
    assert "attempt 2" in html and dashboard_app.BROKEN_ERROR in html and '<span class="step-name">boom</span>' in html


def test_loop_iterations_and_the_routers_choice_are_named(cluster: Cluster) -> None:
    run_id = cluster.start_run("routed", "the memo", SECURITY_KEY)
    assert cluster.ended("routed", run_id) == "COMPLETED"
    html = cluster.get(page_url("routed", run_id), SECURITY_KEY).text
    assert steps_of(html) == {"0": "succeeded", "0/0": "succeeded", "0/1": "succeeded", "0/2": "succeeded",
                              "0/3": "succeeded", "1": "succeeded", "1/0": "succeeded"}
    names = re.findall(r'<span class="step-name">([^<]+)</span>', html)
    assert names == ["refine", "draft", "review", "draft", "review", "route", "quick"]
    assert html.count("iteration 2") == 2 and "2 iterations decided" in html and "route: quick" in html
    assert "draft of the memo" in html and "quick answer" in html and "thorough" not in html


def test_a_users_token_reads_only_their_runs(cluster: Cluster) -> None:
    message = f"mine-{uuid.uuid4().hex[:6]}"
    cluster.release(message)
    run_id = cluster.start_run("report", message, ALICE)
    cluster.ended("report", run_id)
    url = page_url("report", run_id)
    assert cluster.get(url, ALICE).status_code == 200
    assert cluster.get(url, SECURITY_KEY).status_code == 200
    for path in (url, url + "/tree"):
        refused = cluster.get(path, BOB)
        assert refused.status_code == 404 and message not in refused.text
    assert cluster.get(url + "/tree", BOB, mark="0" * 16).status_code == 404
    assert cluster.get(page_url("broken", run_id), ALICE).status_code == 404  # another workflow's id


@pytest.mark.parametrize("run_id", ["no-such-run", "x" * 400])
def test_unknown_or_malformed_ids_answer_404(cluster: Cluster, run_id: str) -> None:
    answer = cluster.get(page_url("report", run_id), SECURITY_KEY)
    assert answer.status_code == 404 and "<html" in answer.text
    assert cluster.get(page_url("report", "r") + "/tree", SECURITY_KEY, mark="m" * 65).status_code == 422


def test_a_run_kept_only_by_agno_runs(cluster: Cluster) -> None:
    in_process = Workflow(id="report", name="report", db=cluster.db,
                          steps=[Step(name="only", executor=lambda step_input: {"answer": 42})])
    run = in_process.run("in process", user_id="alice")
    html = cluster.get(page_url("report", run.run_id), ALICE).text  # type: ignore[arg-type]
    assert steps_of(html) == {"0": "succeeded"} and "agno_runs" in html
    assert "answer" in html and "42" in html


def test_browser_watches_the_run_finish_without_a_reload(cluster: Cluster, logged_in: Any) -> None:
    message = f"watched-{uuid.uuid4().hex[:6]}"
    run_id = cluster.start_run("report", message, ALICE)
    url = cluster.url + page_url("report", run_id)
    page = logged_in(cluster.url, ALICE)
    wait_for(lambda: steps_of(cluster.get(page_url("report", run_id), ALICE).text).get("2") == "running",
             timeout=60, what="the hold step to run")
    page.goto(url)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded
    assert page.locator('li[data-path="2"]').get_attribute("data-status") == "running"
    assert page.locator("#run-state").inner_text() == "RUNNING"
    screenshot(page, "dashboard-workflow-run-in-flight")
    cluster.release(message)
    page.wait_for_selector("#run-state:text('COMPLETED')", timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator('li[data-path="3/0"]').get_attribute("data-status") == "succeeded"
    assert page.locator("#workflow-run").get_attribute("data-ended") == "true"
    screenshot(page, "dashboard-workflow-run")


def test_browser_shows_a_failed_steps_error(cluster: Cluster, logged_in: Any) -> None:
    run_id = cluster.start_run("broken", "in the browser", SECURITY_KEY)
    cluster.ended("broken", run_id)
    page = logged_in(cluster.url, SECURITY_KEY)
    page.goto(cluster.url + page_url("broken", run_id))
    step = page.locator('li[data-path="0"]')
    assert step.get_attribute("data-status") == "failed"
    assert dashboard_app.BROKEN_ERROR in step.locator("pre.error-text").inner_text()
    assert "attempt 2" in step.inner_text()
    screenshot(page, "dashboard-workflow-run-failed")
