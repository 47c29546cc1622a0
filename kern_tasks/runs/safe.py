"""Values made storable: JSON-serialisable, and no NUL or lone surrogates (Postgres rejects
both in text and jsonb, SQLite rejects surrogates), whatever an agent or a model returned."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

MAX_DEPTH = 64
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text(value: str) -> str:
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def json_safe(value: Any, _depth: int = 0) -> Any:
    """A plain JSON value equal to `value` where it can be; str() of what cannot."""
    if _depth > MAX_DEPTH:
        return "..."
    if value is None or isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(str(key)): json_safe(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item, _depth + 1) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), _depth + 1)
    for method in ("model_dump", "to_dict"):  # pydantic models, agno-like objects
        dump = getattr(value, method, None)
        if callable(dump):
            try:
                return json_safe(dump(), _depth + 1)
            except Exception:  # noqa: BLE001 - fall back to str() below
                break
    return text(str(value))


def has_unstorable_text(value: Any) -> bool:
    """True when a string (or key) inside `value` holds NUL or a lone surrogate."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(has_unstorable_text(k) or has_unstorable_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_unstorable_text(item) for item in value)
    return False
