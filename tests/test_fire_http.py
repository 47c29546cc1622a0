"""Tests for kern_tasks.firing.http: real HTTP against a loopback target (tests/targets.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pytest

from kern_tasks import __version__
from kern_tasks.firing.http import FireOutcome, FireRequest, fire, make_client, run_form
from kern_tasks.firing.response import OUTPUT_LIMIT_BYTES
from tests.targets import (
    AgnoRun,
    Reply,
    TargetServer,
    dropping_server,
    read_log,
    target,
    target_process,
    target_server,
)
from tests.processes import free_port

__all__ = ["target", "target_server"]  # the fixtures, imported for pytest

TOKEN = "s3cr3t/token+x"  # a "/" and a "+", so escaped and encoded echoes are tried too
KEY = "kern:sched-1:slot:1700000000"
FAST_POLL = {"poll_initial_s": 0.02, "poll_max_s": 0.1}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with make_client() as made:
        yield made


def req(
    endpoint: str,
    *,
    method: str = "POST",
    payload: dict[str, Any] | None = None,
    timeout: int = 5,
    user_id: str | None = None,
    attempt: int = 1,
) -> FireRequest:
    return FireRequest(
        schedule_id="sched-1",
        attempt_id="row-1",
        attempt=attempt,
        method=method,
        endpoint=endpoint,
        payload=payload,
        timeout_seconds=timeout,
        user_id=user_id,
        idempotency_key=KEY,
    )


def go(target: TargetServer, client: httpx.Client, request: FireRequest, **kwargs: Any) -> FireOutcome:
    options = {"base_url": target.url, "service_token": TOKEN, **FAST_POLL, **kwargs}
    return fire(client, request, **options)


# --- headers and bodies --------------------------------------------------------------------


def test_every_request_carries_the_headers_polls_included(target: TargetServer, client: httpx.Client) -> None:
    target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING", "RUNNING", "COMPLETED"]))
    outcome = go(target, client, req("/agents/a1/runs", user_id="ana maría/1", attempt=3))
    assert outcome.status == "success"
    seen = target.requests()
    assert [r.method for r in seen] == ["POST", "GET", "GET", "GET"]
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["idempotency-key"] == KEY
        assert request.headers["x-kern-schedule-id"] == "sched-1"
        assert request.headers["x-kern-run-id"] == "row-1"
        assert request.headers["x-kern-attempt"] == "3"
        assert request.headers["user-agent"] == f"kern_tasks/{__version__}"
        assert request.headers["x-schedule-owner"] == "ana%20mar%C3%ADa%2F1"


def test_no_token_no_owner_no_such_headers(target: TargetServer, client: httpx.Client) -> None:
    outcome = fire(client, req("/hook"), base_url=target.url + "/", service_token=None)
    assert outcome.status == "success"
    (request,) = target.requests("/hook")  # the trailing "/" of base_url is not doubled
    assert "authorization" not in request.headers and "x-schedule-owner" not in request.headers


def test_idempotency_key_is_the_same_on_every_attempt(target: TargetServer, client: httpx.Client) -> None:
    target.script("/hook", [Reply(503), Reply(200)])
    outcomes = [go(target, client, req("/hook", attempt=n)).status for n in (1, 2)]
    assert outcomes == ["failed", "success"]
    seen = target.wait_for_requests(2, "/hook", timeout=1)
    assert [r.headers["idempotency-key"] for r in seen] == [KEY, KEY]
    assert [r.headers["x-kern-attempt"] for r in seen] == ["1", "2"]


def test_run_endpoint_form_body_is_agnos(target: TargetServer, client: httpx.Client) -> None:
    payload = {
        "message": "hi there",
        "stream": True,
        "background": False,
        "user_id": "mallory",
        "flag": True,
        "off": False,
        "n": 3,
        "x": 1.5,
        "meta": {"a": [1, 2]},
        "tags": ["a", "b"],
        "skip": None,
    }
    go(target, client, req("/teams/t1/runs", payload=payload, user_id="owner"))
    (post,) = target.requests("/teams/t1/runs")
    assert post.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert post.form() == {
        "message": "hi there",
        "flag": "true",
        "off": "false",
        "n": "3",
        "x": "1.5",
        "meta": '{"a": [1, 2]}',
        "tags": '["a", "b"]',
        "stream": "false",
        "background": "true",
        "user_id": "owner",
    }


def test_a_payload_never_chooses_the_user() -> None:
    assert "user_id" not in run_form({"user_id": "mallory", "message": "x"}, None)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_other_endpoints_get_a_json_body(target: TargetServer, client: httpx.Client, method: str) -> None:
    payload = {"a": 1, "b": [1, "two"], "c": None}
    outcome = go(target, client, req("/hooks/daily", method=method.lower(), payload=payload))
    assert outcome.status == "success" and outcome.status_code == 200
    (request,) = target.requests("/hooks/daily")
    assert request.method == method
    assert request.headers["content-type"] == "application/json"
    assert request.json() == payload


@pytest.mark.parametrize(
    ("method", "payload", "endpoint"),
    [
        ("GET", {"a": 1}, "/hooks/daily"),
        ("DELETE", {"a": 1}, "/hooks/daily"),
        ("POST", None, "/hooks/daily"),
        ("GET", {"a": 1}, "/agents/a1/runs"),  # not a POST: not the run protocol
    ],
)
def test_no_body_when_there_is_none_to_send(
    target: TargetServer, client: httpx.Client, method: str, payload: dict[str, Any] | None, endpoint: str
) -> None:
    outcome = go(target, client, req(endpoint, method=method, payload=payload))
    assert outcome.status == "success"
    (request,) = target.requests(endpoint)
    assert request.method == method and request.body == b""


@pytest.mark.parametrize(
    ("reply", "output"),
    [
        (Reply(200, json={"done": [1, 2]}), {"done": [1, 2]}),
        (Reply(201, body="plain words"), "plain words"),
        (Reply(204), None),
        (Reply(200, body=b"a\x00b"), "a\ufffdb"),  # Postgres text cannot hold NUL
        (Reply(200, body='{"not": "declared json"}'), '{"not": "declared json"}'),
    ],
)
def test_plain_success_output(target: TargetServer, client: httpx.Client, reply: Reply, output: Any) -> None:
    target.script("/hook", reply)
    outcome = go(target, client, req("/hook"))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("success", False, reply.status)
    assert outcome.output == output


# --- agno's run protocol -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terminal", "fields", "status", "error"),
    [
        ("COMPLETED", {"input": {"input_content": "hi"}}, "success", None),
        ("completed", {}, "success", None),  # statuses are case-insensitive
        ("PAUSED", {"requirements": [{"tool": "approve", "id": 7}]}, "paused", None),
        ("CANCELLED", {}, "cancelled", "run was cancelled"),
        ("ERROR", {"error": "model exploded"}, "failed", "model exploded"),
        ("ERROR", {}, "failed", "the content"),  # no error field: the content says why
    ],
)
def test_terminal_run_statuses(
    target: TargetServer, client: httpx.Client, terminal: str, fields: dict[str, Any], status: str, error: str | None
) -> None:
    polls = ["RUNNING", Reply(503), "RUNNING", terminal]
    target.script("/workflows/w1/runs", AgnoRun(polls=polls, content="the content", fields=fields))
    outcome = go(target, client, req("/workflows/w1/runs"))
    accepted = target.requests("/workflows/w1/runs")[0]
    assert (outcome.status, outcome.retryable, outcome.error) == (status, False, error)
    assert outcome.status_code == 200
    assert outcome.output == {"content": "the content", "content_type": "str"}
    assert outcome.input == fields.get("input")
    assert outcome.requirements == fields.get("requirements")
    polls_made = [r for r in target.requests() if r.method == "GET"]
    assert len(polls_made) == 4  # and none after the terminal status
    assert outcome.run_id and polls_made[0].path == f"/workflows/w1/runs/{outcome.run_id}"
    assert polls_made[0].params == {"session_id": outcome.session_id}
    assert accepted.method == "POST"


def test_polls_wait_doubling_up_to_the_cap_never_busy(target: TargetServer, client: httpx.Client) -> None:
    now = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING"] * 6 + ["COMPLETED"]))
    outcome = fire(
        client, req("/agents/a1/runs", timeout=60), base_url=target.url, service_token=TOKEN,
        poll_initial_s=0.5, poll_max_s=3.0, clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    assert outcome.status == "success"
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


def test_poll_waits_stop_at_the_deadline(target: TargetServer, client: httpx.Client) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING"]))
    outcome = fire(
        client, req("/agents/a1/runs", timeout=10), base_url=target.url, service_token=TOKEN,
        poll_initial_s=1.0, poll_max_s=4.0, clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    assert (outcome.status, outcome.retryable) == ("timeout", True)
    assert waits == [1.0, 2.0, 4.0, 3.0]  # the last wait is what was left, then no more polls
    assert outcome.run_id is not None and outcome.run_id in (outcome.error or "")


def test_a_429_while_polling_is_honoured(target: TargetServer, client: httpx.Client) -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    polls = [Reply(429, headers={"Retry-After": "7"}), "COMPLETED"]
    target.script("/agents/a1/runs", AgnoRun(polls=polls))
    fire(
        client, req("/agents/a1/runs", timeout=60), base_url=target.url, service_token=TOKEN,
        poll_initial_s=0.5, poll_max_s=2.0, clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    assert waits == [0.5, 7.0]


def test_deadline_during_polling_is_a_retryable_timeout(target: TargetServer, client: httpx.Client) -> None:
    target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING", Reply(404), Reply(500)]))
    started = time.monotonic()
    outcome = go(target, client, req("/agents/a1/runs", timeout=1))
    elapsed = time.monotonic() - started
    assert (outcome.status, outcome.retryable) == ("timeout", True)
    assert outcome.run_id and outcome.session_id
    assert "HTTP 500" in (outcome.error or "")
    assert 1.0 <= elapsed < 1.8
    assert len(target.requests()) >= 5  # it kept polling through 404 and 500


def test_polling_rides_out_a_peer_that_hangs_up(target: TargetServer, client: httpx.Client) -> None:
    target.script("/agents/a1/runs", AgnoRun(polls=[Reply(200, body="{}", hangup=True), "COMPLETED"]))
    outcome = go(target, client, req("/agents/a1/runs"))
    assert outcome.status == "success"
    assert len(target.requests()) == 3


def test_a_forbidden_poll_fails_for_good(target: TargetServer, client: httpx.Client) -> None:
    target.script("/agents/a1/runs", AgnoRun(polls=[Reply(403, json={"detail": "nope"})]))
    outcome = go(target, client, req("/agents/a1/runs"))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", False, 403)
    assert outcome.run_id is not None and "nope" in (outcome.error or "")


def test_a_synchronous_completed_answer_is_used_as_is(target: TargetServer, client: httpx.Client) -> None:
    body = {"run_id": "r9", "session_id": "s9", "status": "COMPLETED", "content": {"k": 1}, "content_type": "dict"}
    target.script("/agents/a1/runs", Reply(200, json=body))
    outcome = go(target, client, req("/agents/a1/runs"))
    assert (outcome.status, outcome.run_id, outcome.session_id) == ("success", "r9", "s9")
    assert outcome.output == {"content": {"k": 1}, "content_type": "dict"}
    assert len(target.requests()) == 1  # nothing to poll


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply(202, json={"status": "PENDING", "session_id": "s1"}), "without a run_id"),
        (Reply(200, body="accepted!"), "without a JSON object"),
        (Reply(200, json=["run_id", "r1"]), "without a JSON object"),
    ],
)
def test_a_run_answer_without_a_run_id_fails_for_good(
    target: TargetServer, client: httpx.Client, reply: Reply, words: str
) -> None:
    target.script("/agents/a1/runs", reply)
    outcome = go(target, client, req("/agents/a1/runs"))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", False, reply.status)
    assert words in (outcome.error or "")
    assert len(target.requests()) == 1


# --- failures, and which are retried -------------------------------------------------------


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
@pytest.mark.parametrize("endpoint", ["/hook", "/agents/a1/runs"])
def test_other_4xx_fail_for_good(target: TargetServer, client: httpx.Client, code: int, endpoint: str) -> None:
    target.script(endpoint, Reply(code, json={"detail": f"because {code}"}))
    outcome = go(target, client, req(endpoint))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", False, code)
    assert f"HTTP {code}" in (outcome.error or "") and f"because {code}" in (outcome.error or "")


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("endpoint", ["/hook", "/agents/a1/runs"])
def test_408_429_and_5xx_are_retryable(target: TargetServer, client: httpx.Client, code: int, endpoint: str) -> None:
    target.script(endpoint, Reply(code, body="busy"))
    outcome = go(target, client, req(endpoint))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", True, code)
    assert outcome.error == f"HTTP {code}: busy"
    assert outcome.retry_after is None


def test_an_empty_error_body_still_names_the_status(target: TargetServer, client: httpx.Client) -> None:
    target.script("/hook", Reply(500))
    assert go(target, client, req("/hook")).error == "HTTP 500"


@pytest.mark.parametrize(
    ("code", "header", "low", "high"),
    [
        (429, "7", 7, 7),
        (503, "in-a-while", None, None),
        (500, "7", None, None),  # only 429 and 503 carry a wait we honour
    ],
)
def test_retry_after_is_parsed(
    target: TargetServer, client: httpx.Client, code: int, header: str, low: float | None, high: float | None
) -> None:
    target.script("/hook", Reply(code, headers={"Retry-After": header}))
    outcome = go(target, client, req("/hook"))
    assert outcome.retryable
    if low is None:
        assert outcome.retry_after is None
    else:
        assert outcome.retry_after is not None and low <= outcome.retry_after <= (high or low)


def test_retry_after_as_an_http_date(target: TargetServer, client: httpx.Client) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    target.script("/hook", Reply(503, headers={"Retry-After": later}))
    outcome = go(target, client, req("/hook"))
    assert outcome.retry_after is not None and 115 <= outcome.retry_after <= 120


def test_connection_refused_is_retryable(client: httpx.Client) -> None:
    started = time.monotonic()
    outcome = fire(client, req("/hook"), base_url=f"http://127.0.0.1:{free_port()}", service_token=TOKEN)
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", True, None)
    assert "ConnectError" in (outcome.error or "")
    assert time.monotonic() - started < 1


def test_a_peer_that_hangs_up_is_retryable(client: httpx.Client) -> None:
    with dropping_server() as url:
        outcome = fire(client, req("/agents/a1/runs"), base_url=url, service_token=TOKEN)
    assert (outcome.status, outcome.retryable) == ("failed", True)
    assert "RemoteProtocolError" in (outcome.error or "")


def test_a_peer_that_hangs_up_mid_answer_is_retryable(target: TargetServer, client: httpx.Client) -> None:
    target.script("/hook", Reply(200, body="half an ans", hangup=True))
    outcome = go(target, client, req("/hook"))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", True, None)
    assert "RemoteProtocolError" in (outcome.error or "")


def test_a_run_endpoint_id_cannot_smuggle_a_query(target: TargetServer, client: httpx.Client) -> None:
    # Not a run endpoint (the "id" would end the path), so a plain JSON POST.
    assert go(target, client, req("/agents/a?x/runs", payload={"m": 1})).status == "success"
    (request,) = target.requests("/agents/a")
    assert (request.query, request.json()) == ("x/runs", {"m": 1})


def test_a_trailing_slash_is_still_a_run_endpoint(target: TargetServer, client: httpx.Client) -> None:
    target.script("/workflows/w-1/runs/", AgnoRun(polls=["COMPLETED"]))
    outcome = go(target, client, req("/workflows/w-1/runs/"))
    assert outcome.status == "success"
    assert [r.path for r in target.requests()] == ["/workflows/w-1/runs/", f"/workflows/w-1/runs/{outcome.run_id}"]


@pytest.mark.parametrize("endpoint", ["/hook", "/agents/a1/runs"])
def test_a_hung_target_times_out_on_time(target: TargetServer, client: httpx.Client, endpoint: str) -> None:
    target.script(endpoint, Reply(200, delay=10))
    started = time.monotonic()
    outcome = go(target, client, req(endpoint, timeout=1))
    assert (outcome.status, outcome.retryable) == ("timeout", True)
    assert 1.0 <= time.monotonic() - started < 1.8


def test_a_trickling_body_cannot_stretch_the_deadline(target: TargetServer, client: httpx.Client) -> None:
    # Each piece comes well within a read timeout; only the attempt's deadline stops it.
    target.script("/hook", Reply(200, body="x" * 1000, trickle=0.3))
    started = time.monotonic()
    outcome = go(target, client, req("/hook", timeout=1))
    assert (outcome.status, outcome.retryable) == ("timeout", True)
    assert time.monotonic() - started < 1.8  # all 10 pieces would take 3 s


def test_redirects_are_not_followed(target: TargetServer) -> None:
    target.script("/hook", Reply(302, headers={"Location": target.url + "/elsewhere"}))
    # Even a client that would follow them does not, for a fire.
    with httpx.Client(follow_redirects=True) as following:
        outcome = go(target, following, req("/hook"))
    assert (outcome.status, outcome.retryable, outcome.status_code) == ("failed", False, 302)
    assert "redirects are not followed" in (outcome.error or "")
    assert target.requests("/elsewhere") == []


@pytest.mark.parametrize("endpoint", ["@evil.example/x", "http://evil.example/x", "", "hook", "/x\n"])
def test_an_endpoint_that_is_not_a_path_is_refused(target: TargetServer, client: httpx.Client, endpoint: str) -> None:
    outcome = go(target, client, req(endpoint))
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert "not a path" in (outcome.error or "")
    assert target.requests() == []


def test_programming_errors_raise(client: httpx.Client) -> None:
    with pytest.raises(ValueError):
        fire(client, req("/hook", timeout=0), base_url="http://127.0.0.1:1", service_token=None)
    with pytest.raises(ValueError):
        fire(client, req("/hook"), base_url="http://127.0.0.1:1", service_token=None, poll_initial_s=0)


def test_fires_ignore_proxy_settings_in_the_environment(target: TargetServer, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with make_client() as fresh:
        assert go(target, fresh, req("/hook")).status == "success"


# --- what is recorded is bounded and never holds the token ---------------------------------


def test_big_plain_answers_are_truncated(target: TargetServer, client: httpx.Client) -> None:
    target.script("/hook", Reply(200, body="é" * 100_000))
    outcome = go(target, client, req("/hook"))
    assert outcome.output["truncated"] is True and outcome.output["size_bytes"] == 200_000
    assert len(outcome.output["content"].encode()) <= OUTPUT_LIMIT_BYTES
    assert outcome.output["content"] == "é" * (OUTPUT_LIMIT_BYTES // 2)


def test_big_json_answers_are_truncated(target: TargetServer, client: httpx.Client) -> None:
    target.script("/hook", Reply(200, json={"rows": list(range(50_000))}))
    outcome = go(target, client, req("/hook"))
    assert outcome.output["truncated"] is True and outcome.output["content"].startswith('{"rows": [0, 1, 2')


def test_big_run_content_and_errors_are_truncated(target: TargetServer, client: httpx.Client) -> None:
    target.script("/agents/a1/runs", AgnoRun(polls=["COMPLETED"], content="z" * 100_000))
    outcome = go(target, client, req("/agents/a1/runs"))
    assert outcome.output == {
        "content": "z" * OUTPUT_LIMIT_BYTES,
        "content_type": "str",
        "truncated": True,
        "size_bytes": 100_000,
    }
    target.script("/hook", Reply(500, body="e" * 100_000))
    assert len(go(target, client, req("/hook")).error or "") <= 1000


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, echo=True),  # output
        Reply(500, echo=True),  # error, from JSON
        Reply(502, body=f"proxy said: Authorization: Bearer {TOKEN}"),  # error, from text
        Reply(502, body='{"auth": "Bearer s3cr3t\\/token+x"}', headers={"Content-Type": "application/json"}),
        Reply(200, body=f"token={quote(TOKEN, safe='')}"),  # percent-encoded
        Reply(302, headers={"Location": f"/login?token={TOKEN}"}),
    ],
)
def test_the_token_is_never_recorded(target: TargetServer, client: httpx.Client, reply: Reply) -> None:
    target.script("/hook", reply)
    outcome = go(target, client, req("/hook"))
    assert "s3cr3t" not in repr(outcome)
    assert outcome.status in ("success", "failed")


def test_the_token_is_never_recorded_from_a_run(target: TargetServer, client: httpx.Client) -> None:
    leaky = {"error": f"Bearer {TOKEN}", "input": {"headers": {"authorization": TOKEN}}, "requirements": [TOKEN]}
    target.script("/agents/a1/runs", AgnoRun(polls=["PAUSED"], content={TOKEN: TOKEN}, fields=leaky))
    outcome = go(target, client, req("/agents/a1/runs"))
    assert outcome.status == "paused"
    assert "s3cr3t" not in repr(outcome)
    assert outcome.requirements == ["[redacted]"]


# --- a target in a process of its own ------------------------------------------------------


def test_fires_reach_a_target_process_that_logs_arrivals(client: httpx.Client, tmp_path: Path) -> None:
    log = tmp_path / "arrivals.log"
    with target_process(tmp_path / "logs", log=log) as process:  # returns once it printed TARGET_URL
        assert process.url.startswith("http://127.0.0.1:")
        before = time.time()
        paths = ["/hook", "/agents/a1/runs", "/hook"]
        outcomes = [fire(client, req(path), base_url=process.url, service_token=TOKEN) for path in paths]
        after = time.time()
        # The process answers everything; a run endpoint as if it ran synchronously.
        assert [o.status for o in outcomes] == ["success"] * 3
        assert outcomes[1].run_id and outcomes[1].output == {"content": "ok", "content_type": "str"}
        arrivals = read_log(str(log))
        assert [(path, key) for path, key, _ in arrivals] == [(path, KEY) for path in paths]
        assert all(before <= at <= after for *_, at in arrivals)
