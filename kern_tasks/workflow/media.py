"""Media between steps on workers: images, videos, audio and files stored by reference beyond
a size bound (issue 8, part 7: text to speech, code to narration across workers).

A step's output carries media as agno's `to_dict()` gives them (`content` base64, or UTF-8
text for a text/* File). On workers the output is a JSON row (kern_workflow_steps.output)
that every later replay of the run reads again, so a media item whose content is larger
than INLINE_MAX_BYTES is kept in a row of its own (kern_workflow_media, migration 0006,
deleted with its run) and the output holds a reference in agno's own offload shape
(`media_reference`, agno.media.reference.MediaReference, storage_backend BACKEND):

    {"id": "a1", "mime_type": "audio/wav", "format": "wav",
     "media_reference": {"media_id": "a1", "storage_key": "<row id>", "storage_backend": "kern_workflow_media",
                         "size": 1048576, "content_hash": "<sha256>", "media_type": "audio", ...}}

Smaller content stays inline. Broker messages never carry media (ids only: tasks.py).

- `offloaded(conn, run_id, outcome)`: the outcome to record, large content moved out, in
  the transaction that records it (an attempt that lost its race leaves a row the run's
  deletion removes; the same bytes again in the run reuse a row, by hash);
- `resolve_input(db, run_id, step_input)`: before a step runs, the references in its input
  (media so far, earlier outputs) become content again: the step sees what it would see
  in-process, equal bytes;
- `inlined(db, run_id, data)`: a copy of a run's dict with every reference resolved, for
  agno's record of the run (agno_runs.run_data reads as agno's own, content inline);
- `content_bytes(item)`: the bytes of a media item, whichever form it takes (an agno
  object in-process, a dict on workers).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    BigInteger, Column, Connection, Float, ForeignKey, Index, LargeBinary, String, Table, select,
)  # fmt: skip

from kern_tasks.db.tables import metadata
from kern_tasks.workflow.progress import Outcome, runs  # noqa: F401  (runs: the table the key refers to)
from kern_tasks.workflow.types import MEDIA_FIELDS, StepInput, StepOutput

# Content up to this many bytes stays in the output's JSON; beyond, a row of its own.
INLINE_MAX_BYTES = 64 * 1024
BACKEND = "kern_workflow_media"
MEDIA_TYPES = {"images": "image", "videos": "video", "audio": "audio", "files": "file"}

media = Table(
    "kern_workflow_media",
    metadata,
    Column("id", String, primary_key=True),
    Column("run_id", String, ForeignKey("kern_workflow_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("mime", String),
    Column("bytes", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_kern_workflow_media_run", media.c.run_id, media.c.sha256)


# --- the form of a content --------------------------------------------------------------------


def _raw(item: dict[str, Any]) -> tuple[bytes, str] | None:
    """(the content's bytes, how it is written in the dict: "base64" or "text"), or None
    when the item has no content of its own (a url, a filepath, agno's own reference)."""
    content = item.get("content")
    if content is None or item.get("media_reference") is not None:
        return None
    if isinstance(content, (bytes, bytearray)):
        return bytes(content), "base64"  # written back as agno's to_dict() writes bytes
    if not isinstance(content, str):
        return None
    if not str(item.get("mime_type") or "").startswith("text/"):
        try:
            raw = base64.b64decode(content, validate=True)
        except ValueError:
            raw = None
        if raw is not None and base64.b64encode(raw).decode("ascii") == content:
            return raw, "base64"
    return content.encode("utf-8"), "text"  # kept exactly as written


def _written(raw: bytes, encoding: str) -> str:
    return base64.b64encode(raw).decode("ascii") if encoding == "base64" else raw.decode("utf-8")


def content_bytes(item: Any) -> bytes | None:
    """The bytes of a media item: an object's `content` (agno's Image, Audio, ...), or a
    dict's content as agno's to_dict() writes it; None without content of its own."""
    if isinstance(item, dict):
        found = _raw(item)
        return None if found is None else found[0]
    content = getattr(item, "content", None)
    if isinstance(content, str):
        return content.encode("utf-8")
    return bytes(content) if isinstance(content, (bytes, bytearray)) else None


def _ours(item: Any) -> str | None:
    """The media row id an item refers to, if it is one of our references."""
    if not isinstance(item, dict):
        return None
    ref = item.get("media_reference")
    if isinstance(ref, dict) and ref.get("storage_backend") == BACKEND:
        return str(ref["storage_key"])
    return None


# --- storing ----------------------------------------------------------------------------------


def _store(conn: Connection, run_id: str, raw: bytes, mime: str | None, now: float) -> tuple[str, str]:
    """The id and hash of a row holding `raw` for the run: an existing one with the same
    bytes (a step passing its input's media on), else a new one."""
    digest = hashlib.sha256(raw).hexdigest()
    found = conn.execute(select(media.c.id).where(media.c.run_id == run_id, media.c.sha256 == digest)).first()
    if found is not None:
        return str(found[0]), digest
    row_id = str(uuid.uuid4())
    conn.execute(media.insert().values(id=row_id, run_id=run_id, mime=mime, bytes=raw, size=len(raw),
                                       sha256=digest, created_at=now))  # fmt: skip
    return row_id, digest


def _offload_item(conn: Connection, run_id: str, kind: str, item: Any, now: float) -> Any:
    if not isinstance(item, dict):
        return item
    found = _raw(item)
    if found is None:
        return item
    raw, encoding = found
    if len(raw) <= INLINE_MAX_BYTES:
        return item if isinstance(item["content"], str) else {**item, "content": _written(raw, encoding)}
    mime = item.get("mime_type")
    row_id, digest = _store(conn, run_id, raw, mime, now)
    reference = {
        "media_id": item.get("id") or row_id, "storage_key": row_id, "storage_backend": BACKEND, "mime_type": mime,
        "size": len(raw), "content_hash": digest, "media_type": MEDIA_TYPES[kind],
        "metadata": {"content_encoding": encoding},
    }  # fmt: skip
    return {**{k: v for k, v in item.items() if k != "content"}, "media_reference": reference}


def _offload_output(conn: Connection, run_id: str, output: dict[str, Any], now: float) -> dict[str, Any]:
    result = dict(output)
    for kind in MEDIA_FIELDS:
        if output.get(kind):
            result[kind] = [_offload_item(conn, run_id, kind, item, now) for item in output[kind]]
    if output.get("steps"):  # a nested workflow's step keeps its inner outputs
        result["steps"] = [_offload_output(conn, run_id, inner, now) for inner in output["steps"]]
    return result


def offloaded(conn: Connection, run_id: str, outcome: Outcome, *, now: float) -> Outcome:
    """The outcome to record: media content beyond INLINE_MAX_BYTES in rows of the run's
    (written on `conn`, so they commit with the outcome), references in their place."""
    if outcome.output is None:
        return outcome
    return replace(outcome, output=_offload_output(conn, run_id, outcome.output, now))


# --- reading back -----------------------------------------------------------------------------


def _contents(conn: Connection, run_id: str, keys: set[str]) -> dict[str, bytes]:
    rows = conn.execute(select(media.c.id, media.c.bytes).where(media.c.run_id == run_id, media.c.id.in_(keys)))
    return {str(row_id): bytes(raw) for row_id, raw in rows}


def _resolved(item: dict[str, Any], contents: dict[str, bytes]) -> dict[str, Any]:
    ref = item["media_reference"]
    key = str(ref["storage_key"])
    if key not in contents:
        raise LookupError(f"media {ref.get('media_id')!r} of this run is gone (kern_workflow_media row {key})")
    encoding = (ref.get("metadata") or {}).get("content_encoding", "base64")
    return {**{k: v for k, v in item.items() if k != "media_reference"},
            "content": _written(contents[key], encoding)}  # fmt: skip


def _references(value: Any, into: set[str]) -> None:
    key = _ours(value)
    if key is not None:
        into.add(key)
    elif isinstance(value, dict):
        for inner in value.values():
            _references(inner, into)
    elif isinstance(value, list):
        for inner in value:
            _references(inner, into)


def _replaced(value: Any, contents: dict[str, bytes]) -> Any:
    if _ours(value) is not None:
        return _resolved(value, contents)
    if isinstance(value, dict):
        return {k: _replaced(v, contents) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, contents) for v in value]
    return value


def inlined(db: Any, run_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a run's dict) with every reference to the run's media resolved (a copy;
    `data` itself when it holds none, without a query)."""
    keys: set[str] = set()
    _references(data, keys)
    if not keys:
        return data
    with db.connect() as conn:
        contents = _contents(conn, run_id, keys)
    return _replaced(copy.deepcopy(data), contents)


def _outputs(output: StepOutput) -> list[StepOutput]:
    return [output, *[o for inner in output.steps or [] for o in _outputs(inner)]]


def resolve_input(db: Any, run_id: str, step_input: StepInput) -> None:
    """Resolve, in place, the references in what a step is about to be given: the media
    so far and those of earlier outputs (a query only when there is one)."""
    holders: list[Any] = [step_input, *[o for out in (step_input.previous_step_outputs or {}).values()
                                        for o in _outputs(out)]]  # fmt: skip
    keys: set[str] = set()
    for holder in holders:
        for kind in MEDIA_FIELDS:
            _references(getattr(holder, kind) or [], keys)
    if not keys:
        return
    with db.connect() as conn:
        contents = _contents(conn, run_id, keys)
    for holder in holders:
        for kind in MEDIA_FIELDS:
            items = getattr(holder, kind)
            if items:
                setattr(holder, kind, [_resolved(i, contents) if _ours(i) is not None else i for i in items])
