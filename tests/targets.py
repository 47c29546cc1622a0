"""A real HTTP target on loopback, for tests and benchmarks: scriptable, and it records.

In a test (real HTTP/1.1 through uvicorn, in a background thread):

    with TargetServer() as target:
        target.script("/hook", [Reply(500), Reply(503, headers={"Retry-After": "2"}), Reply(200, json={"ok": 1})])
        target.script("/agents/a1/runs", AgnoRun(polls=["RUNNING", "RUNNING", "COMPLETED"], content="hi"))
        ...fire at target.url + "/hook"...
        [r.headers["idempotency-key"] for r in target.requests("/hook")]

or with the fixtures: `from tests.targets import target, target_server  # noqa: F401`
(one server per test session, `reset()` before each test).

Per path: scripted replies are served in order and the last one repeats. Unscripted paths
answer 200 {"ok": true}, except a POST to a run endpoint, which answers like an agno
server that ran it synchronously: 200 {"run_id", "session_id", "status": "COMPLETED",
"content": "ok"}. `AgnoRun` speaks agno's background protocol: the POST answers 202
{"run_id", "session_id", "status": "PENDING"}, then GET {path}/{run_id} walks `polls`.

As a process, for multi-process tests and benchmarks:

    python -m tests.targets --port 0 --log arrivals.log [--slow /hook/1 --slow-delay 1.5]

(`start_target_process(procs)` starts it as one of a tests.processes.Processes) prints
"TARGET_URL http://127.0.0.1:PORT" once its socket listens, answers the defaults above
(the --slow paths after --slow-delay seconds), records nothing in memory, and appends one
line per request to the log: raw path, Idempotency-Key ("-" if absent), arrival epoch
seconds, tab-separated (`read_log` parses it). Thread-safe: tests read while the server's
loop writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json as jsonlib
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from tests.processes import PYTHON, ROOT, Processes, ServerThread, listening_socket, wait_for

RUN_PATH = re.compile(r"^/(agents|teams|workflows)/([^/]+)/runs/?$")
TERMINAL = {"COMPLETED", "PAUSED", "CANCELLED", "ERROR"}
_NO_JSON: Any = object()


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    json: Any = _NO_JSON  # a JSON body (application/json)
    body: bytes | str = b""  # a raw body when `json` is not given (text/plain for str)
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # wait this long first (a hung target); ends early if the client leaves
    echo: bool = False  # answer with the request itself: {"method", "path", "query", "headers", "body"}
    trickle: float = 0.0  # send the body in 10 pieces, this many seconds apart (a slow peer)
    hangup: bool = False  # start the answer, then close the connection mid-body (a crash)


@dataclass(frozen=True)
class AgnoRun:
    """agno's background run protocol on one run endpoint.

    polls: what successive GETs of a run answer; a status string gives agno's run body
    (terminal statuses carry `content`, `content_type` and `fields`), a Reply is served as
    is (e.g. Reply(503) or Reply(404) while the run is "not visible yet"). The last repeats.
    """

    polls: Sequence[str | Reply] = ("RUNNING", "COMPLETED")
    content: Any = "done"
    content_type: str = "str"
    fields: Mapping[str, Any] = field(default_factory=dict)  # e.g. error, requirements, input


@dataclass(frozen=True)
class Request:
    """One request as it arrived. Header names are lower-case; repeats are joined by ", "."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float  # epoch seconds of arrival
    monotonic: float  # time.monotonic() of arrival, to measure gaps

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True, strict_parsing=bool(self.body)))

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


class _Script:
    def __init__(self, replies: Sequence[Reply]) -> None:
        if not replies:
            raise ValueError("a script needs at least one reply")
        self.replies, self.served = list(replies), 0

    def next(self) -> Reply:
        reply = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return reply


class _Run:
    def __init__(self, spec: AgnoRun, run_id: str, session_id: str) -> None:
        self.spec, self.run_id, self.session_id, self.polled = spec, run_id, session_id, 0

    def next(self) -> Reply:
        polls = self.spec.polls
        step = polls[min(self.polled, len(polls) - 1)]
        self.polled += 1
        if isinstance(step, Reply):
            return step
        body: dict[str, Any] = {"run_id": self.run_id, "session_id": self.session_id, "status": step}
        if step.upper() in TERMINAL:
            body.update(content=self.spec.content, content_type=self.spec.content_type, **self.spec.fields)
        return Reply(200, json=body)


def _form_field(request: Request, name: str) -> str | None:
    try:
        return request.form().get(name)
    except (ValueError, UnicodeDecodeError):  # not a form: the server still answers
        return None


def sync_completed(request: Request) -> Reply:
    """What an agno server that ran a run synchronously answers."""
    session_id = _form_field(request, "session_id") or uuid.uuid4().hex
    body = {"run_id": uuid.uuid4().hex, "session_id": session_id, "status": "COMPLETED", "content": "ok"}
    return Reply(200, json={**body, "content_type": "str"})


class TargetServer:
    """A loopback HTTP server whose answers are scripted per path; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, log: str | None = None, record: bool = True):
        self.host, self.record = host, record
        self._lock = threading.Condition()
        self._scripts: dict[str, _Script | AgnoRun] = {}
        self._runs: dict[str, _Run] = {}
        self._requests: list[Request] = []
        self._log: IO[str] | None = open(log, "a", encoding="utf-8") if log else None
        self._served = ServerThread(
            self, host, port, backlog=4096, name="target", proxy_headers=False, timeout_graceful_shutdown=1
        )  # fmt: skip
        self.port: int = self._served.port
        self.url = self._served.url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # --- life ----------------------------------------------------------------------------
    def start(self) -> "TargetServer":
        self._served.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() (or SIGINT/SIGTERM in the main thread)."""
        self._served.serve_forever()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)  # ends every hanging reply
        self._served.stop(timeout=10)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> "TargetServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- scripting and inspection (any thread) ----------------------------------------------
    def script(self, path: str, replies: Reply | Sequence[Reply] | AgnoRun) -> None:
        """Set how `path` answers from now on (a single Reply answers every time)."""
        with self._lock:
            if isinstance(replies, AgnoRun):
                self._scripts[path] = replies
            else:
                self._scripts[path] = _Script([replies] if isinstance(replies, Reply) else replies)

    def requests(self, path: str | None = None) -> list[Request]:
        """Recorded requests in arrival order; only those to `path` when given."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for_requests(self, count: int, path: str | None = None, timeout: float = 5.0) -> list[Request]:
        """Block until at least `count` requests (to `path`) arrived; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(found := [r for r in self._requests if path is None or r.path == path]) < count:
                if not self._lock.wait(timeout=deadline - time.monotonic()):
                    raise TimeoutError(f"{len(found)} of {count} requests to {path or 'any path'} arrived")
            return found

    def reset(self) -> None:
        """Forget scripts, runs and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._runs.clear()
            self._requests.clear()

    # --- the ASGI app (the server's loop) -----------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        at, monotonic = time.time(), time.monotonic()
        if self._stopping is None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
        request = Request(
            scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, b"".join(chunks), at,
            monotonic,
        )  # fmt: skip
        reply = self._answer(request, scope.get("raw_path") or scope["path"].encode())
        if reply.delay > 0 and await self._wait(reply.delay, receive):
            return  # the client left (or the server stops): nobody to answer
        await _send(send, reply, request, lambda: self._wait(reply.trickle, receive))

    def _answer(self, request: Request, raw_path: bytes) -> Reply:
        with self._lock:
            if self.record:
                self._requests.append(request)
                self._lock.notify_all()
            if self._log is not None:
                key = " ".join(request.headers.get("idempotency-key", "-").split()) or "-"  # keep it one field
                self._log.write(f"{raw_path.decode('latin-1')}\t{key}\t{request.at:.6f}\n")
                self._log.flush()  # readers in other processes count lines as they come
            return self._route(request)

    def _route(self, request: Request) -> Reply:
        spec = self._scripts.get(request.path)
        if isinstance(spec, _Script):
            return spec.next()
        if isinstance(spec, AgnoRun) and request.method == "POST":
            session_id = _form_field(request, "session_id") or uuid.uuid4().hex
            run = _Run(spec, uuid.uuid4().hex, session_id)
            self._runs[f"{request.path.rstrip('/')}/{run.run_id}"] = run
            return Reply(202, json={"run_id": run.run_id, "session_id": session_id, "status": "PENDING"})
        run = self._runs.get(request.path)
        if run is not None and request.method == "GET":
            return run.next()
        parent = request.path.rsplit("/", 1)[0]
        if isinstance(self._scripts.get(parent) or self._scripts.get(parent + "/"), AgnoRun):
            return Reply(404, json={"detail": "Run not found"})
        if request.method == "POST" and RUN_PATH.match(request.path):
            return sync_completed(request)
        return Reply(200, json={"ok": True})

    async def _wait(self, seconds: float, receive: Any) -> bool:
        """Sleep; True when cut short because the client left or the server stops."""

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        assert self._stopping is not None
        nap = asyncio.ensure_future(asyncio.sleep(seconds))
        others = [asyncio.ensure_future(client_left()), asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait([nap, *others], return_when=asyncio.FIRST_COMPLETED)
        for task in (nap, *others):
            task.cancel()
        return not (nap.done() and not nap.cancelled())


async def _send(send: Any, reply: Reply, request: Request, pause: Callable[[], Awaitable[bool]]) -> None:
    headers = {k.lower(): v for k, v in reply.headers.items()}
    if reply.echo:
        echoed = {"method": request.method, "path": request.path, "query": request.query,
                  "headers": request.headers, "body": request.body.decode("utf-8", "replace")}  # fmt: skip
        body, content_type = jsonlib.dumps(echoed).encode(), "application/json"
    elif reply.json is not _NO_JSON:
        body, content_type = jsonlib.dumps(reply.json).encode(), "application/json"
    elif isinstance(reply.body, str):
        body, content_type = reply.body.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = reply.body, "application/octet-stream"
    if reply.status in (204, 304) and not body:
        pass  # no body, so no Content-Type or Content-Length either (RFC 9110)
    else:
        headers.setdefault("content-type", content_type)
        headers["content-length"] = str(len(body) + (1 if reply.hangup else 0))  # promise a byte more
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw})
    if reply.hangup:  # returning mid-body makes uvicorn close the connection
        await send({"type": "http.response.body", "body": body, "more_body": True})
        return
    if reply.trickle > 0:
        step = max(1, -(-len(body) // 10))
        for start in range(0, len(body), step):
            await send({"type": "http.response.body", "body": body[start : start + step], "more_body": True})
            if await pause():
                return
        body = b""
    await send({"type": "http.response.body", "body": body})


@contextmanager
def dropping_server(host: str = "127.0.0.1") -> Iterator[str]:
    """A TCP server that reads a request and closes without answering; yields its URL.

    For "the peer went away" tests (httpx raises RemoteProtocolError)."""
    listener = listening_socket(host, backlog=64)
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, name="dropping-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def read_log(path: str) -> list[tuple[str, str, float]]:
    """(path, idempotency key, arrival epoch) per complete line of a --log file."""
    with open(path, encoding="utf-8") as log:
        lines = log.read().split("\n")[:-1]  # the last piece is "" or a line still being written
    return [(p, k, float(t)) for p, k, t in (line.split("\t") for line in lines)]


try:
    import pytest
except ImportError:  # pragma: no cover - the CLI may run without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def target_server() -> Any:
        """One target server for the whole session."""
        with TargetServer() as server:
            yield server

    @pytest.fixture
    def target(target_server: TargetServer) -> TargetServer:
        """The session's target server, with no scripts and no recorded requests."""
        target_server.reset()
        return target_server


@dataclass
class TargetProcess:
    """`python -m tests.targets` running as a process of its own (see start_target_process)."""

    url: str
    log: Path
    proc: Any  # subprocess.Popen

    def arrivals(self) -> list[tuple[str, str, float]]:
        return read_log(str(self.log)) if self.log.exists() else []


def start_target_process(procs: Processes, name: str = "target", log: Path | None = None,
                         slow: Sequence[str] = (), delay: float = 1.0) -> TargetProcess:  # fmt: skip
    """Start the target as one of `procs` (its output in logs/<name>.log, its arrivals in
    `log`, default logs/<name>-arrivals.tsv; the paths in `slow` answer after `delay` s);
    returns once it printed its URL. It stops with the other processes."""
    log = log or procs.logs / f"{name}-arrivals.tsv"
    argv = [PYTHON, "-m", "tests.targets", "--port", "0", "--log", str(log)]
    argv += [arg for path in slow for arg in ("--slow", path)] + (["--slow-delay", str(delay)] if slow else [])
    proc = procs.start(name, argv, cwd=ROOT)

    def url() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError(f"the target exited:\n{procs.tail(name)}")
        found = re.search(r"^TARGET_URL (\S+)$", procs.log_text(name), re.M)
        return found.group(1) if found else None

    return TargetProcess(wait_for(url, 30, 0.05, "the target's URL"), log, proc)


@contextmanager
def target_process(logs: Path, log: Path | None = None, slow: Sequence[str] = (),
                   delay: float = 1.0) -> Iterator[TargetProcess]:  # fmt: skip
    """start_target_process in a Processes of its own (output in `logs`, printed with a
    cluster's logs sharing the folder), stopped on exit."""
    procs = Processes(logs)
    try:
        yield start_target_process(procs, log=log, slow=slow, delay=delay)
    finally:
        procs.stop_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.targets", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--log", help="append 'path<TAB>idempotency-key<TAB>epoch' per request")
    parser.add_argument("--slow", action="append", default=[], help="a path that answers after --slow-delay")
    parser.add_argument("--slow-delay", type=float, default=1.0, help="seconds (default 1)")
    args = parser.parse_args(argv)
    server = TargetServer(args.host, args.port, log=args.log, record=False)
    for path in args.slow:
        server.script(path, Reply(200, json={"ok": True}, delay=args.slow_delay))
    print(f"TARGET_URL {server.url}", flush=True)
    try:
        server.serve_forever()  # in the main thread: uvicorn handles SIGINT and SIGTERM
    finally:
        server.stop()


if __name__ == "__main__":
    main()
