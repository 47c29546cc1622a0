"""Reading a target's responses, and making what we record of them safe to store.

Bodies are read in chunks with the attempt's deadline checked in between and never more
than MAX_READ_BYTES; what is recorded is bounded (OUTPUT_LIMIT_BYTES, ERROR_CHARS) and
scrubbed: the service token never appears, nor do NUL or lone surrogates (Postgres
rejects them), nor NaN/Infinity parsed as JSON.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import httpx

ERROR_CHARS = 1000  # an error is a line for people, not a dump
OUTPUT_LIMIT_BYTES = 32 * 1024  # what output/input keep; more is cut and marked truncated
MAX_READ_BYTES = 16 * 1024 * 1024  # more than this is never read into memory


class DeadlineExceeded(Exception):
    """The attempt's deadline passed while a response was still arriving."""


@dataclass(frozen=True)
class Reply:
    """A response, read (up to MAX_READ_BYTES) before the deadline."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    complete: bool  # False when the body was cut at MAX_READ_BYTES
    encoding: str

    def text(self) -> str:
        return self.body.decode(self.encoding, errors="replace")


class Scrubber:
    """Makes text safe to record: no service token, no NUL, no lone surrogates."""

    def __init__(self, token: str | None) -> None:
        # The token as sent, JSON-escaped and percent-encoded: the ways an echo may show it.
        variants = {token, json.dumps(token)[1:-1], quote(token, safe="")} if token else set()
        self.variants = sorted(variants, key=len, reverse=True)

    def text(self, text: str) -> str:
        for variant in self.variants:
            text = text.replace(variant, "[redacted]")
        # Postgres text and jsonb reject NUL and invalid UTF-8: the run row must be writable.
        return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(key)): self.value(item) for key, item in value.items()}
        return value


def exchange(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str],
    timeout: float,
    deadline: float,
    clock: Callable[[], float],
    **kwargs: Any,
) -> Reply:
    """Send one request; read its body in chunks, checking the deadline between them."""
    # follow_redirects=False here too, so a caller's client that follows them cannot.
    with client.stream(method, url, headers=headers, timeout=timeout, follow_redirects=False, **kwargs) as response:
        chunks: list[bytes] = []
        size, complete = 0, True
        for chunk in response.iter_bytes():
            if clock() > deadline:
                raise DeadlineExceeded()
            if size + len(chunk) > MAX_READ_BYTES:
                chunks.append(chunk[: MAX_READ_BYTES - size])
                complete = False
                break
            chunks.append(chunk)
            size += len(chunk)
        try:
            encoding = codecs.lookup(response.charset_encoding or "utf-8").name
        except LookupError:
            encoding = "utf-8"
        return Reply(response.status_code, response.headers, b"".join(chunks), complete, encoding)


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: jsonb cannot store them


def decoded(reply: Reply, scrub: Scrubber) -> tuple[bool, Any]:
    """(True, the scrubbed JSON value) when the whole body is JSON, else (False, None)."""
    if reply.complete and reply.body:
        try:
            return True, scrub.value(json.loads(reply.text(), parse_constant=reject_constant))
        except (ValueError, RecursionError):
            pass
    return False, None


def json_object(reply: Reply, scrub: Scrubber) -> dict[str, Any] | None:
    ok, value = decoded(reply, scrub)
    return value if ok and isinstance(value, dict) else None


def snippet(reply: Reply, scrub: Scrubber) -> str:
    """The body as one short line; JSON is re-serialised after scrubbing (escaped echoes)."""
    ok, value = decoded(reply, scrub)
    text = json.dumps(value, ensure_ascii=False) if ok else scrub.text(reply.text())
    return " ".join(text[: ERROR_CHARS * 2].split())


def short(error: str) -> str:
    return error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "\u2026"


def truncate(value: Any) -> tuple[Any, int | None]:
    """(value, None) when it fits OUTPUT_LIMIT_BYTES, else (a prefix of its text, full size)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    raw = text.encode("utf-8")
    if len(raw) <= OUTPUT_LIMIT_BYTES:
        return value, None
    return raw[:OUTPUT_LIMIT_BYTES].decode("utf-8", "ignore"), len(raw)


def bounded(value: Any) -> Any:
    """value, or {"truncated": True, "size_bytes": n, "content": prefix} when too big."""
    kept, size = truncate(value)
    return value if size is None else {"truncated": True, "size_bytes": size, "content": kept}


def plain_output(reply: Reply, scrub: Scrubber) -> Any:
    """A 2xx body: its JSON when it says it is JSON, else its text; bounded."""
    if not reply.body:
        return None
    is_json = "json" in reply.headers.get("content-type", "").lower()
    ok, value = decoded(reply, scrub) if is_json else (False, None)
    return bounded(value if ok else scrub.text(reply.text()))
