"""JSON schemas of Python type annotations, and Google-style docstrings, for tools.

`json_schema(annotation)` maps what tool signatures use to the JSON Schema subset that
chat-completions APIs accept:

    str -> string   int -> integer   float -> number   bool -> boolean   Any -> {}
    list[X] / tuple[X, ...] / set[X] -> array of X      dict / dict[str, X] -> object
    Literal["a", "b"] / Enum -> enum   X | None -> X plus "null"   X | Y -> anyOf
    pydantic models, dataclasses, TypedDicts -> pydantic's schema of them

`parse_docstring(doc)` returns (description, {param: description}): the first paragraph
is the description; lines under `Args:` (``name: text`` or ``name (type): text``, with
indented continuation lines) describe the parameters.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SECTION = re.compile(r"^\s*([A-Z][A-Za-z ]*):\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params"}


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one parameter annotation; TypeError if it has none."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Union or origin is types.UnionType:
        return _union(args)
    if origin is Literal:
        return _enum(list(args))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum([member.value for member in annotation])
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, Sequence, AbstractSet):
        schema: dict[str, Any] = {"type": "array"}
        items = [a for a in args if a is not Ellipsis]
        if len(items) == 1 or (items and all(a == items[0] for a in items)):
            item_schema = json_schema(items[0])
            if item_schema:
                schema["items"] = item_schema
        return schema
    if annotation is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2 and json_schema(args[1]):
            schema["additionalProperties"] = json_schema(args[1])
        return schema
    try:  # pydantic models, dataclasses, TypedDicts: pydantic knows them (inlined, no $refs)
        return _inline_refs(TypeAdapter(annotation).json_schema())
    except Exception as exc:
        raise TypeError(f"cannot describe {annotation!r} as a JSON schema for a tool parameter") from exc


def _union(args: tuple[Any, ...]) -> dict[str, Any]:
    options = [a for a in args if a is not type(None)]
    nullable = len(options) < len(args)
    if len(options) == 1:
        schema = dict(json_schema(options[0]))
    else:
        schema = {"anyOf": [json_schema(a) for a in options]}
    if not nullable or not schema:
        return schema
    if isinstance(schema.get("type"), str) and "enum" not in schema:
        schema["type"] = [schema["type"], "null"]
    elif "anyOf" in schema:
        schema["anyOf"].append({"type": "null"})
    else:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _enum(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_SCALARS.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), "enum": values}
    return schema


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve local "$defs" references: some OpenAI-compatible servers reject $ref."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any, depth: int = 0) -> Any:
        if depth > 20:  # a recursive model: leave it open rather than loop
            return {}
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
                return resolve(defs[ref[8:]], depth + 1)
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


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
