"""Fire one attempt of a schedule as an HTTP call, and say how it ended.

Contract (docs/architecture.md, "Fire: the worker's task"):
- `fire()` never raises for HTTP or network trouble; each such problem is a `FireOutcome`.
  Only programming errors (bad arguments) raise.
- URL = base_url + endpoint. An endpoint that is not a path on base_url's host is refused;
  redirects are never followed (a redirect to another host would be an SSRF).
- Every request of an attempt, polls included, carries Authorization (when a token is
  given), Idempotency-Key, X-Kern-Schedule-Id, X-Kern-Run-Id, X-Kern-Attempt, User-Agent,
  and X-Schedule-Owner (percent-encoded, as agno sends it) when the run has an owner.
  X-Kern-Run-Id keeps its wire name, but its value is our attempt id (agno_schedule_runs.id),
  not agno's run id; in this module `run_id` means only agno's run id.
- The attempt (POST and every poll) ends by `timeout_seconds`; each request gets what is
  left. Bodies are read in chunks with the deadline checked in between, so a peer that
  trickles bytes overruns by at most one read timeout.
- Run endpoints (POST /agents|teams|workflows/{id}/runs) speak agno's protocol: a form
  body with stream=false, background=true and the owner as user_id, then polling
  GET .../runs/{run_id} with doubling waits until a terminal status or the deadline.
  `on_accepted(run_id, session_id)` is called once the run is known (the 202 came), before
  the first poll, so the caller can record it; a request that names `resume_run_id` (a
  run an earlier attempt of the slot started on a worker that was lost) never POSTs: it
  polls that run, and calls `on_accepted` with it first.
  Other endpoints: a JSON body for POST/PUT/PATCH; any 2xx is success.
- Retryable: connection errors, timeouts, 408, 429, 5xx. Not retryable: other 4xx, 3xx,
  answers that break the run protocol, and every terminal run status.
- The service token never appears in error, output, input or requirements, even when a
  target echoes the request; nor do NUL or lone surrogates (Postgres rejects them).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal
from urllib.parse import quote

import httpx

from kern_tasks import __version__
from kern_tasks.firing.backoff import parse_retry_after
from kern_tasks.firing.response import (
    DeadlineExceeded,
    Reply,
    Scrubber,
    bounded,
    exchange,
    json_object,
    plain_output,
    short,
    snippet,
    truncate,
)

# agno's pattern, but an id never holds "?" or "#" (the poll URL is built from it).
RUN_ENDPOINT_RE = re.compile(r"^/(agents|teams|workflows)/([^/?#]+)/runs/?\Z")
TERMINAL_RUN_STATUSES = frozenset({"COMPLETED", "PAUSED", "CANCELLED", "ERROR"})
USER_AGENT = f"kern_tasks/{__version__}"

Status = Literal["success", "failed", "timeout", "paused", "cancelled"]


@dataclass(frozen=True)
class FireRequest:
    """Everything one attempt needs; the task builds it from the schedule and run rows."""

    schedule_id: str
    attempt_id: str  # our agno_schedule_runs.id; agno's run id is FireOutcome.run_id
    attempt: int
    method: str
    endpoint: str  # a path, e.g. "/agents/digest/runs"
    payload: dict[str, Any] | None
    timeout_seconds: int
    user_id: str | None
    idempotency_key: str  # stable for the slot across attempts and duplicate deliveries
    # agno's run an earlier attempt of this slot started (202) before its worker was lost:
    # poll it instead of starting a second one (run endpoints only).
    resume_run_id: str | None = None
    resume_session_id: str | None = None
    # The schedule's route (queue, priority): sent as X-Kern-Queue / X-Kern-Priority so the
    # workflow run the call starts publishes its steps on the same route.
    queue: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class FireOutcome:
    """How one attempt ended; the fields map onto agno_schedule_runs columns."""

    status: Status
    retryable: bool
    status_code: int | None = None
    error: str | None = None
    output: Any = None
    run_id: str | None = None
    session_id: str | None = None
    input: dict[str, Any] | None = None
    requirements: Any = None
    retry_after: float | None = None  # seconds the server asked for (429/503)


def make_client(timeout_s: float = 30.0) -> httpx.Client:
    """A client for fires. One per process: never use one across a fork."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,  # no HTTP(S)_PROXY rerouting, no .netrc credentials
        # Idle sockets expire before a server's usual 5 s keep-alive does, so a request is
        # not written to a socket the server is closing (that would burn an attempt).
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0),
        headers={"User-Agent": USER_AGENT},
    )


def fire(
    client: httpx.Client,
    request: FireRequest,
    *,
    base_url: str,
    service_token: str | None,
    poll_initial_s: float = 0.5,
    poll_max_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_accepted: Callable[[str, str | None], None] | None = None,
) -> FireOutcome:
    """Send one attempt of `request`; return how it ended (see the module docstring).
    `on_accepted` must not raise (what it raises propagates)."""
    if request.timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be > 0, got {request.timeout_seconds}")
    if not 0 < poll_initial_s <= poll_max_s:
        raise ValueError("need 0 < poll_initial_s <= poll_max_s (a zero wait is a busy loop)")
    base = base_url.rstrip("/")
    attempt = _Attempt(client, request, service_token, clock, sleep, poll_initial_s, poll_max_s, on_accepted)
    url = _target_url(base, request.endpoint)
    if url is None:
        error = f"endpoint {attempt.scrub.text(request.endpoint)[:200]!r} is not a path on {base}"
        return FireOutcome("failed", retryable=False, error=error)
    method = (request.method or "POST").upper()  # agno's default
    match = RUN_ENDPOINT_RE.match(request.endpoint)
    if match is None or method != "POST":
        return attempt.plain(method, url)
    poll_base = f"{base}/{match.group(1)}/{match.group(2)}/runs/"
    if request.resume_run_id is not None:
        return attempt.poll(poll_base, request.resume_run_id, request.resume_session_id)
    return attempt.run(url, poll_base=poll_base)


def run_form(payload: dict[str, Any] | None, user_id: str | None) -> dict[str, str]:
    """agno's form body for a run endpoint: background, not streamed, run as the owner."""
    form = {
        key: _form_value(value)
        for key, value in (payload or {}).items()
        # user_id goes even without an owner: a payload must not choose who runs it (agno).
        if value is not None and key not in ("stream", "background", "user_id")
    }
    form.update(stream="false", background="true")
    if user_id is not None:
        form["user_id"] = user_id
    return form


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def _target_url(base: str, endpoint: str) -> str | None:
    """base + endpoint, or None when that is not a path on base's scheme, host and port."""
    if not endpoint.startswith("/"):
        return None  # "@evil.example/" appended to "http://host" would change the host
    try:
        base_url, url = httpx.URL(base), httpx.URL(base + endpoint)
    except httpx.InvalidURL:
        return None
    same_origin = (url.scheme, url.host, url.port) == (base_url.scheme, base_url.host, base_url.port)
    return str(url) if same_origin else None


QUEUE_HEADER, PRIORITY_HEADER = "X-Kern-Queue", "X-Kern-Priority"


def _headers(request: FireRequest, service_token: str | None) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": request.idempotency_key,
        "X-Kern-Schedule-Id": request.schedule_id,
        "X-Kern-Run-Id": request.attempt_id,  # wire name kept; the value is our attempt id
        "X-Kern-Attempt": str(request.attempt),
    }
    if service_token:
        headers["Authorization"] = f"Bearer {service_token}"
    if request.queue is not None:
        headers[QUEUE_HEADER] = request.queue
    if request.priority is not None:
        headers[PRIORITY_HEADER] = str(request.priority)
    if request.user_id is not None:
        headers["X-Schedule-Owner"] = quote(request.user_id, safe="")  # values must be latin-1
    return headers


class _Attempt:
    """One attempt in flight: its client, headers, deadline, polling waits and scrubber."""

    def __init__(
        self,
        client: httpx.Client,
        request: FireRequest,
        service_token: str | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        poll_initial_s: float,
        poll_max_s: float,
        on_accepted: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.client, self.request, self.clock, self.sleep = client, request, clock, sleep
        self.on_accepted = on_accepted
        self.poll_initial_s, self.poll_max_s = poll_initial_s, poll_max_s
        self.headers = _headers(request, service_token)
        self.scrub = Scrubber(service_token)
        self.timeout_s = request.timeout_seconds
        self.deadline = clock() + self.timeout_s

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def send(self, method: str, url: str, **kwargs: Any) -> Reply:
        """One request within the deadline; raises httpx.HTTPError or DeadlineExceeded."""
        remaining = self.remaining()
        if remaining <= 0:
            raise DeadlineExceeded()
        timeout = min(remaining, self.timeout_s)
        return exchange(self.client, method, url, self.headers, timeout, self.deadline, self.clock, **kwargs)

    def failure(self, exc: Exception) -> FireOutcome:
        """The outcome of a request that raised: timeout, or failed (retryable or not)."""
        if isinstance(exc, (DeadlineExceeded, httpx.TimeoutException)):
            return FireOutcome("timeout", retryable=True, error=f"no answer within {self.timeout_s}s ({_name(exc)})")
        # A bad scheme, a request we cannot encode, a body we cannot decode: retrying won't help.
        permanent = isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.DecodingError))
        retryable = isinstance(exc, httpx.TransportError) and not permanent
        error = short(f"{_name(exc)}: {self.scrub.text(str(exc))}")
        return FireOutcome("failed", retryable=retryable, error=error)

    def plain(self, method: str, url: str) -> FireOutcome:
        payload = self.request.payload
        kwargs = {"json": payload} if method in ("POST", "PUT", "PATCH") and payload is not None else {}
        try:
            reply = self.send(method, url, **kwargs)
        except (httpx.HTTPError, DeadlineExceeded) as exc:
            return self.failure(exc)
        failure = _status_failure(reply, self.scrub)
        if failure is not None:
            return failure
        output = plain_output(reply, self.scrub)
        return FireOutcome("success", retryable=False, status_code=reply.status_code, output=output)

    def run(self, url: str, poll_base: str) -> FireOutcome:
        try:
            reply = self.send("POST", url, data=run_form(self.request.payload, self.request.user_id))
        except (httpx.HTTPError, DeadlineExceeded) as exc:
            return self.failure(exc)
        failure = _status_failure(reply, self.scrub)
        if failure is not None:
            return failure
        code, body = reply.status_code, json_object(reply, self.scrub)
        if body is None:
            error = short(f"HTTP {code}: run endpoint answered without a JSON object: {snippet(reply, self.scrub)}")
            return FireOutcome("failed", retryable=False, status_code=code, error=error)
        run_id, session_id = _id(body.get("run_id")), _id(body.get("session_id"))
        if _is_terminal(body):  # the server ran it synchronously
            return _terminal(body, code, run_id, session_id)
        if run_id is None:
            error = short(f"HTTP {code}: run endpoint answered without a run_id: {snippet(reply, self.scrub)}")
            return FireOutcome("failed", retryable=False, status_code=code, error=error, session_id=session_id)
        return self.poll(poll_base, run_id, session_id)

    def poll(self, poll_base: str, run_id: str, session_id: str | None) -> FireOutcome:
        """Poll until a terminal status or the deadline; waits double and are never zero."""
        if self.on_accepted is not None:
            self.on_accepted(run_id, session_id)
        poll_url = poll_base + quote(run_id, safe="")
        params = {"session_id": session_id} if session_id else None
        delay, last_problem = self.poll_initial_s, "no terminal status yet"
        while (remaining := self.remaining()) > 0:
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_max_s)
            try:
                reply = self.send("GET", poll_url, params=params)
            except DeadlineExceeded:
                break
            except httpx.HTTPError as exc:
                last_problem = _name(exc)  # the server may be restarting: keep polling
                continue
            code = reply.status_code
            if code in (404, 408, 429) or 500 <= code < 600:
                # 404: the run may not be visible yet (another replica, a lagging read).
                last_problem = f"HTTP {code}"
                delay = max(delay, parse_retry_after(reply.headers.get("retry-after")) or 0.0)
                continue
            failure = _status_failure(reply, self.scrub)
            if failure is not None:
                return replace(failure, run_id=run_id, session_id=session_id)
            body = json_object(reply, self.scrub)
            if body is not None and _is_terminal(body):
                return _terminal(body, code, run_id, session_id)
        error = f"run {run_id} did not finish within {self.timeout_s}s (last poll: {last_problem})"
        return FireOutcome("timeout", retryable=True, error=error, run_id=run_id, session_id=session_id)


def _name(exc: Exception) -> str:
    return "deadline" if isinstance(exc, DeadlineExceeded) else type(exc).__name__


def _status_failure(reply: Reply, scrub: Scrubber) -> FireOutcome | None:
    """None for a 2xx; otherwise the failed outcome the status code means."""
    code = reply.status_code
    if 200 <= code < 300:
        return None
    if 300 <= code < 400:
        location = scrub.text(reply.headers.get("location", ""))[:200]
        error = f"HTTP {code}: redirects are not followed (Location: {location})"
        return FireOutcome("failed", retryable=False, status_code=code, error=error)
    retryable = code in (408, 429) or 500 <= code < 600
    retry_after = parse_retry_after(reply.headers.get("retry-after")) if code in (429, 503) else None
    body = snippet(reply, scrub)
    error = short(f"HTTP {code}: {body}" if body else f"HTTP {code}")
    return FireOutcome("failed", retryable=retryable, status_code=code, error=error, retry_after=retry_after)


def _id(value: Any) -> str | None:
    ok = isinstance(value, (str, int)) and not isinstance(value, bool) and value != ""
    return str(value) if ok else None


def _is_terminal(body: dict[str, Any]) -> bool:
    status = body.get("status")
    return isinstance(status, str) and status.upper() in TERMINAL_RUN_STATUSES


def _terminal(body: dict[str, Any], code: int, run_id: str | None, session_id: str | None) -> FireOutcome:
    """The outcome of a run in a terminal status (body already scrubbed); none is retried."""
    status = str(body["status"]).upper()
    content, size = truncate(body.get("content"))
    output: dict[str, Any] = {"content": content, "content_type": body.get("content_type")}
    if size is not None:
        output.update(truncated=True, size_bytes=size)
    raw_input = body.get("input")
    common: dict[str, Any] = {
        "retryable": False,
        "status_code": code,
        "output": output,
        "run_id": run_id,
        "session_id": session_id,
        "input": bounded(raw_input) if isinstance(raw_input, dict) else None,
    }
    if status == "COMPLETED":
        return FireOutcome("success", **common)
    if status == "PAUSED":
        return FireOutcome("paused", requirements=body.get("requirements"), **common)
    if status == "CANCELLED":
        error = body.get("error") or "run was cancelled"
    else:  # ERROR: agno puts the reason in `error`, or only in `content`
        error = body.get("error") or body.get("content") or "run ended with status ERROR"
    error = short(error if isinstance(error, str) else json.dumps(error, ensure_ascii=False))
    return FireOutcome("cancelled" if status == "CANCELLED" else "failed", error=error, **common)
