"""JSON schemas of tool parameters, from the pydantic validator that checks them, and
Google-style docstrings.

`adapter(annotation)` is the pydantic `TypeAdapter` a tool's argument is validated with;
`schema_of(adapter)` is that adapter's own JSON schema, cut to the subset chat-completions
APIs accept: local `$defs` references inlined (some OpenAI-compatible servers reject
`$ref`), titles dropped, `X | None` written as `"type": [X, "null"]`, and the no-op
`items: {}` / `additionalProperties: true` left out. What the model is told and what is
accepted therefore come from one object and cannot disagree:

    str -> string   int -> integer   float -> number   bool -> boolean   Any -> {}
    list[X] / tuple[X, ...] / set[X] -> array of X   tuple[X, Y] -> prefixItems [X, Y]
    dict / dict[str, X] -> object   Literal / Enum -> enum   X | Y -> anyOf
    pydantic models, dataclasses, TypedDicts -> their properties

`parse_docstring(doc)` returns (description, {param: description}): the first paragraph
is the description; lines under `Args:` (``name: text`` or ``name (type): text``, with
indented continuation lines) describe the parameters.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import TypeAdapter

_SECTION = re.compile(r"^\s*([A-Z][A-Za-z ]*):\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params"}
# Keys whose values are schemas, or lists / maps of schemas; every other key holds data.
_SCHEMA_KEYS = {"items", "additionalProperties", "not"}
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems"}
_SCHEMA_MAPS = {"properties", "patternProperties"}
_MAX_DEPTH = 20  # a recursive model is left open below this depth rather than expanded forever


def adapter(annotation: Any) -> TypeAdapter[Any]:
    """The validator of one parameter annotation (none: Any); TypeError if pydantic has none."""
    if annotation is inspect.Parameter.empty:
        annotation = Any
    try:
        return TypeAdapter(annotation)
    except Exception as exc:
        raise TypeError(f"cannot validate {annotation!r} as a tool parameter: {exc}") from exc


def schema_of(validator: TypeAdapter[Any]) -> dict[str, Any]:
    """The JSON schema of what `validator` accepts, in the subset described above."""
    try:
        raw = validator.json_schema()
    except Exception as exc:
        raise TypeError(f"cannot describe {validator!r} as a JSON schema for a tool parameter") from exc
    defs = raw.pop("$defs", {})
    return _simplify(raw, defs, 0)


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one parameter annotation; TypeError if it has none."""
    return schema_of(adapter(annotation))


def without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its null alternative (a parameter defaulting to None: omit it instead)."""
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        siblings = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**rest[0], **siblings} if len(rest) == 1 else {**siblings, "anyOf": rest}
    return schema


def _simplify(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict):
        return node
    if depth > _MAX_DEPTH:
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
        target = _simplify(defs[ref[8:]], defs, depth + 1)
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in _SCHEMA_KEYS and isinstance(value, dict):
            out[key] = _simplify(value, defs, depth)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_simplify(v, defs, depth) for v in value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _simplify(v, defs, depth) for name, v in value.items()}
        else:
            out[key] = value
    if out.get("items") == {}:
        del out["items"]
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]
    return _nullable_as_type_list(out)


def _nullable_as_type_list(schema: dict[str, Any]) -> dict[str, Any]:
    """{"anyOf": [{"type": "string"}, {"type": "null"}]} -> {"type": ["string", "null"]}."""
    options = schema.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options):
        return schema
    other = options[0] if options[1] == {"type": "null"} else options[1]
    if not isinstance(other.get("type"), str) or "enum" in other or "const" in other:
        return schema
    siblings = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**other, **siblings, "type": [other["type"], "null"]}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) of a Google-style docstring."""
    text = inspect.cleandoc(doc or "")
    if not text:
        return "", {}
    lines = text.splitlines()
    paragraph: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        paragraph.append(line.strip())
    params: dict[str, str] = {}
    in_args, current, indent = False, None, 0
    for line in lines:
        section = _SECTION.match(line)
        if section:
            in_args, current = section.group(1) in _ARG_SECTIONS, None
            continue
        if not in_args or not line.strip():
            continue
        line_indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (current is None or line_indent <= indent):
            current, indent = match.group(1), line_indent
            params[current] = match.group(2).strip()
        elif current is not None and line_indent > indent:
            params[current] = f"{params[current]} {line.strip()}".strip()
        else:
            in_args = False  # dedented text: the section has ended
    return " ".join(paragraph), params
