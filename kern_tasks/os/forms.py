"""The body of POST /agents|workflows/{id}/runs, in agno's form protocol.

agno's clients (and kern_tasks' firing worker) send application/x-www-form-urlencoded
fields: `message` (required), `stream`, `background`, `session_id`, `user_id`, and
`session_state` and `additional_data`, each a JSON object in a field's text (a workflow
run's; agents ignore them); other fields (metadata, ...) are accepted and ignored. A JSON
object with the same fields is accepted too (there the two may be objects themselves).
Multipart (file uploads) is not supported: 415.

`stream` defaults to true, as agno's does (server-sent events; agents stream, see
routers/runs.py); send stream=false for the finished run as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from kern_tasks.errors import ValidationError
from kern_tasks.os.auth import acting_user
from kern_tasks.os.errors import RequestRefused
from kern_tasks.runs.safe import has_unstorable_text

ID_MAX = 255
MAX_FIELDS = 200
# What `_ident` accepts: empty (none), or up to ID_MAX characters, not all blank, no NUL.
ID_FIELD = {"type": "string", "maxLength": ID_MAX, "pattern": r"^([^\x00]*[^\s\x00-\x1f\x85][^\x00]*)?$"}
# A JSON object in a form field's text (the pattern says what a JSON schema can: braces).
JSON_OBJECT_FIELD = {"type": "string", "pattern": r"^\s*\{[\s\S]*\}\s*$", "description": "a JSON object"}
FORM_FIELDS: dict[str, Any] = {
    "message": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean", "default": True, "description": "true: server-sent events; false: JSON"},
    "background": {"type": "boolean", "default": False},
    "session_id": ID_FIELD,
    "user_id": ID_FIELD,
}
WORKFLOW_FORM_FIELDS: dict[str, Any] = {
    **FORM_FIELDS,
    "stream": {"type": "boolean", "default": True, "description": "true: agno's workflow events (SSE); false: JSON"},
    "session_state": {**JSON_OBJECT_FIELD, "description": "a JSON object: the run's session_state"},
    "additional_data": {**JSON_OBJECT_FIELD, "description": "a JSON object: the run's additional_data"},
}


def form_doc(fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI description of a run form (a run route's requestBody content)."""
    schema = {"type": "object", "required": ["message"], "properties": fields}
    return {"application/x-www-form-urlencoded": {"schema": schema}}


WORKFLOW_FORM_DOC = form_doc(WORKFLOW_FORM_FIELDS)
TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


@dataclass(frozen=True)
class RunRequest:
    message: str
    stream: bool = True
    background: bool = False
    session_id: str | None = None
    user_id: str | None = None
    session_state: dict[str, Any] | None = None
    additional_data: dict[str, Any] | None = None


def _flag(name: str, value: Any, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise ValidationError(name, f"must be true or false, got {str(value)[:40]!r}")


def _ident(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if len(value) > ID_MAX or has_unstorable_text(value) or not value.strip():
        raise ValidationError(name, f"must be a non-blank string of at most {ID_MAX} characters without NUL")
    return value


def _json_object(name: str, value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ValidationError(name, "must be a JSON object; its text is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationError(name, f"must be a JSON object, got {json.dumps(value)[:40]}")
    return value


async def _fields(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("multipart/"):
        raise RequestRefused(
            "multipart bodies (file uploads) are not supported: send application/x-www-form-urlencoded",
            status_code=415,
        )
    body = await request.body()
    if content_type == "application/json":
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise ValidationError("body", "malformed JSON body") from None
        if not isinstance(value, dict):
            raise ValidationError("body", "must be a JSON object with a message field")
        return value
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise RequestRefused(
            f"unsupported content type {content_type[:80]!r}: send application/x-www-form-urlencoded",
            status_code=415,
        )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise ValidationError("body", "form body is not valid UTF-8") from None
    except ValueError:
        raise ValidationError("body", f"a form may have at most {MAX_FIELDS} fields") from None
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields.setdefault(key, value)  # the first of repeated fields counts
    return fields


async def read_run_request(request: Request) -> RunRequest:
    """The run request, or `ValidationError` (422) / `RequestRefused` (415) naming what is
    wrong. Its user_id is whom the run runs as: a user token's subject, else the form's."""
    fields = await _fields(request)
    message = fields.get("message")
    if message is None or message == "":
        raise ValidationError("message", "is required (the input for the run)")
    if not isinstance(message, str):
        raise ValidationError("message", "must be a string")
    return RunRequest(
        message=message,
        stream=_flag("stream", fields.get("stream"), default=True),
        background=_flag("background", fields.get("background")),
        session_id=_ident("session_id", fields.get("session_id")),
        # A user token's subject runs it, whatever the form says (agno's rule; os/auth.py).
        user_id=acting_user(request, _ident("user_id", fields.get("user_id"))),
        session_state=_json_object("session_state", fields.get("session_state")),
        additional_data=_json_object("additional_data", fields.get("additional_data")),
    )
