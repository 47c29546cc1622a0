"""Tools an agent's model may call: typed Python functions and toolkits of them.

    @tool
    def add(a: int, b: int = 1) -> int:
        '''Add two numbers.

        Args:
            a: the first number
            b: the second number
        '''
        return a + b

Each parameter has one pydantic `TypeAdapter` (see `kern_tasks.agent.schema`): its JSON
schema is what the model is told, and it validates (lax mode) what the model sends, so
the two cannot disagree. Descriptions come from the docstring (first paragraph =
description, `Args:` = parameter descriptions). A plain typed function is a tool too;
`@tool` only adds a name/description override and marks methods of a `Toolkit`
subclass. A mismatch raises `ToolArgumentError` with a message meant for the model.

A parameter named `run_context` (agno's convention) is not shown to the model: it receives
the `RunContext` of the run calling the tool (None outside a run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from kern_tasks.agent.run import CURRENT_RUN
from kern_tasks.agent.schema import adapter, parse_docstring, schema_of, without_null

_MARK = "__kern_tool__"
RUN_CONTEXT_PARAM = "run_context"


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the tool; the message says how to fix them."""


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Mark `fn` as a tool (`@tool` or `@tool(name=..., description=...)`); returns it unchanged."""

    def mark(target: Callable[..., Any]) -> Callable[..., Any]:
        setattr(target, _MARK, {"name": name, "description": description})
        return target

    return mark(fn) if fn is not None else mark


@dataclass
class Function:
    """One callable tool: its name, description, parameter schema and the Python callable."""

    name: str
    description: str
    parameters: dict[str, Any]
    entrypoint: Callable[..., Any]
    _adapters: dict[str, TypeAdapter[Any]] = field(default_factory=dict, repr=False)
    _required: frozenset[str] = field(default=frozenset(), repr=False)
    takes_run_context: bool = False

    @classmethod
    def from_callable(
        cls, fn: Callable[..., Any], name: str | None = None, description: str | None = None
    ) -> Function:
        marks = getattr(fn, _MARK, None) or {}
        name = name or marks.get("name") or fn.__name__
        doc_text, doc_params = parse_docstring(inspect.getdoc(fn))
        description = description or marks.get("description") or doc_text
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:
            raise TypeError(f"tool {name}: cannot resolve its type annotations: {exc}") from exc
        properties: dict[str, Any] = {}
        required: list[str] = []
        adapters: dict[str, TypeAdapter[Any]] = {}
        takes_run_context = False
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "self":
                continue
            if param.name == RUN_CONTEXT_PARAM:
                takes_run_context = True  # filled in by `execute`, never by the model
                continue
            try:
                validator = adapter(hints.get(param.name, Any))
                schema = schema_of(validator)  # the validator's own schema: told == accepted
            except TypeError as exc:
                raise TypeError(f"tool {name}, parameter {param.name}: {exc}") from exc
            if param.default is None:
                schema = without_null(schema)  # the model omits it rather than sending null
            if param.name in doc_params:
                schema = {**schema, "description": doc_params[param.name]}
            if param.default is param.empty:
                required.append(param.name)
            elif param.default is not None and _json_able(param.default):
                schema = {**schema, "default": param.default}
            properties[param.name] = schema
            adapters[param.name] = validator
        parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        parameters["additionalProperties"] = False
        return cls(name, description, parameters, fn, adapters, frozenset(required), takes_run_context)

    def to_openai(self) -> dict[str, Any]:
        """The chat-completions `tools` entry of this function."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def bind(self, arguments: Any) -> dict[str, Any]:
        """Check and convert the model's arguments; raises `ToolArgumentError`."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        known = list(self.parameters["properties"])
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise ToolArgumentError(
                f"unknown argument(s) {', '.join(unknown)}; {self.name} takes: {', '.join(known) or 'nothing'}"
            )
        missing = sorted(self._required - set(arguments))
        if missing:
            raise ToolArgumentError(f"missing required argument(s): {', '.join(missing)}")
        bound: dict[str, Any] = {}
        for key, value in arguments.items():
            expected = self.parameters["properties"][key].get("type")
            kinds = set(expected) if isinstance(expected, list) else {expected}
            if isinstance(value, str) and kinds & {"object", "array"}:
                # Models often send nested values as JSON text; accept that form too.
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            try:
                bound[key] = self._adapters[key].validate_python(value)
            except PydanticValidationError as exc:
                problems = "; ".join(error["msg"] for error in exc.errors())
                raise ToolArgumentError(f"argument {key}: {problems} (got {value!r:.200})") from None
        return bound

    def execute(self, arguments: Any) -> str:
        """Call the tool with checked arguments (and the current run's context, when it takes
        one); its result as text (JSON unless a str)."""
        bound = self.bind(arguments)
        if self.takes_run_context:
            bound[RUN_CONTEXT_PARAM] = CURRENT_RUN.get()
        result = self.entrypoint(**bound)
        if inspect.isawaitable(result):
            result = _run_coroutine(result)
        return to_text(result)


def to_text(result: Any) -> str:
    """What the model sees of a tool's return value."""
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    return json.dumps(result, default=str)


def _run_coroutine(awaitable: Any) -> Any:
    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # Called from inside an event loop (a sync run in async code): use a fresh loop elsewhere.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class Toolkit:
    """A group of tools that share state (a database, defaults).

    Subclasses list their tool methods by name in the class attribute `tools`, or leave
    it None and mark each tool method with `@tool`. Only public methods qualify.
    """

    tools: ClassVar[Sequence[str] | None] = None

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__

    def functions(self) -> list[Function]:
        """The tools of this toolkit, bound to this instance, in declaration order."""
        if self.tools is not None:
            names = list(self.tools)
        else:
            names = [n for n, member in vars_in_mro(type(self)) if hasattr(member, _MARK)]
        found = []
        for method_name in names:
            if method_name.startswith("_"):
                raise ValueError(f"{self.name}: tool {method_name} is not a public method")
            method = getattr(self, method_name, None)
            if not callable(method):
                raise TypeError(f"{self.name}: tools lists {method_name}, which is not a method")
            found.append(Function.from_callable(method))
        return found


def vars_in_mro(cls: type) -> Iterable[tuple[str, Any]]:
    """(name, member) of every public attribute, base classes first, each name once."""
    seen: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for member_name, member in vars(klass).items():
            if not member_name.startswith("_"):
                seen[member_name] = member
    return seen.items()


def resolve_tools(tools: Sequence[Toolkit | Function | Callable[..., Any]]) -> dict[str, Function]:
    """Name -> Function for an agent's `tools`; ValueError on a duplicate name."""
    functions: list[Function] = []
    for item in tools:
        if isinstance(item, Toolkit):
            functions.extend(item.functions())
        elif isinstance(item, Function):
            functions.append(item)
        elif callable(item):
            functions.append(Function.from_callable(item))
        else:
            raise TypeError(f"a tool must be a Toolkit, a Function or a callable, got {type(item).__name__}")
    by_name: dict[str, Function] = {}
    for function in functions:
        if function.name in by_name:
            raise ValueError(f"two tools are named {function.name}; tool names must be unique per agent")
        by_name[function.name] = function
    return by_name
