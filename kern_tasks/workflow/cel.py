"""CEL expressions for Loop end conditions, Condition evaluators and Router selectors.

Each primitive gives its expressions agno 3.1.10's variables (`agno/workflow/cel.py`):

    Loop end_condition    current_iteration, max_iterations, all_success, last_step_content,
                          step_outputs
    Condition evaluator   input, previous_step_content, previous_step_outputs,
                          additional_data, session_state
    Router selector       the Condition's, plus step_choices

An expression is compiled and type-checked once, when the primitive is built, against the
variables of its primitive; an expression that does not compile, names a variable (or a
function) that is not there, or mixes types CEL cannot compare raises `CelError` (a
ValidationError, so a ValueError) naming the expression, the line and column, and the
variables allowed. agno instead treats such an expression as false at run time.

An expression that compiled but fails while evaluating (a missing map key, say) counts as
agno counts it: false for a Loop or Condition, no choice for a Router (`evaluate` raises
CelEvaluationError; the primitive turns it into that answer).

The library is cel-expr-python (the CEL project's binding of cel-cpp): measured here at
3.5-5 µs per evaluation against 7-8 µs for common-expression-language (Rust) and
165-300 µs for cel-python (agno's, which also recompiles on every evaluation: 300 µs).
Its type checker is what makes "unknown variable" a definition-time error without
guessing; it has no dependencies and ships wheels for Linux x86-64 and aarch64, macOS and
Windows. Only this module imports it.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from kern_tasks.errors import CelError


def _cel() -> Any:
    """The CEL engine (cel-cpp, ~9 MiB), imported when an expression is first compiled:
    beat, and workers and web processes without Condition/Loop/Router, never load it."""
    from cel_expr_python import cel

    return cel


def _cel_type(spec: Any) -> Any:
    """A variable's CEL type from its spec: "STRING", or ("Map", key, value) / ("List", item)."""
    kinds = _cel().Type
    if isinstance(spec, str):
        return getattr(kinds, spec)
    maker, *args = spec
    return getattr(kinds, maker)(*(_cel_type(arg) for arg in args))


class CelEvaluationError(RuntimeError):
    """A compiled expression failed on the values it was given."""


@dataclass(frozen=True)
class Scope:
    """The variables one kind of expression may use, with their CEL types."""

    name: str
    variables: tuple[tuple[str, Any], ...]  # (name, type spec): see _cel_type

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.variables]


_STEP_INPUT_VARIABLES: tuple[tuple[str, Any], ...] = (
    ("input", "STRING"),
    ("previous_step_content", "STRING"),
    ("previous_step_outputs", ("Map", "STRING", "STRING")),
    ("additional_data", ("Map", "STRING", "DYN")),
    ("session_state", ("Map", "STRING", "DYN")),
)

LOOP_END_CONDITION = Scope("Loop end_condition", (
    ("current_iteration", "INT"),
    ("max_iterations", "INT"),
    ("all_success", "BOOL"),
    ("last_step_content", "STRING"),
    ("step_outputs", ("Map", "STRING", "STRING")),
))
CONDITION_EVALUATOR = Scope("Condition evaluator", _STEP_INPUT_VARIABLES)
ROUTER_SELECTOR = Scope("Router selector", (*_STEP_INPUT_VARIABLES, ("step_choices", ("List", "STRING"))))

_envs: dict[str, Any] = {}
_envs_lock = threading.Lock()


def _env(scope: Scope) -> Any:
    with _envs_lock:
        if scope.name not in _envs:
            _envs[scope.name] = _cel().NewEnv(variables={name: _cel_type(spec) for name, spec in scope.variables})
        return _envs[scope.name]


# cel-cpp reports "ERROR: <input>:LINE:COL: reason" followed by the source and a caret.
_ERROR_RE = re.compile(r"<input>:(\d+):(\d+):\s*(.*?)\s*(?:\n|\|\s|$)")
_UNDECLARED_RE = re.compile(r"undeclared reference to '([^']+)'")


class CelExpression:
    """One expression, compiled once for `scope`. Raises CelError when it cannot be used;
    `field` names where it was given (e.g. "Loop 'review'.end_condition")."""

    def __init__(self, source: str, scope: Scope, field: str) -> None:
        self.source = source
        self.scope = scope
        try:
            self._expression = _env(scope).compile(source)
        except Exception as exc:  # noqa: BLE001 - cel-cpp raises RuntimeError for every compile error
            raise CelError(field, _explain(source, scope, str(exc))) from None

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The expression's value (plain Python) for `variables`; CelEvaluationError if it fails."""
        value = self._expression.eval(data={k: to_cel_value(v) for k, v in variables.items()})
        if value.type() == _cel().Type.ERROR:
            raise CelEvaluationError(f"CEL expression {self.source!r} failed: {value.value()}")
        return value.plain_value()

    def __repr__(self) -> str:
        return f"CelExpression({self.source!r}, {self.scope.name})"


def _explain(source: str, scope: Scope, error: str) -> str:
    allowed = ", ".join(scope.names)
    match = _ERROR_RE.search(error)
    if not match:
        return f"CEL expression {source!r} does not compile ({error.strip()}); variables allowed: {allowed}"
    line, column, reason = match.group(1), match.group(2), match.group(3)
    where = f"at line {line}, column {column}"
    undeclared = _UNDECLARED_RE.search(reason)
    if undeclared:
        return (f"CEL expression {source!r} names {undeclared.group(1)!r} {where}, which a {scope.name} "
                f"does not provide; variables allowed: {allowed}")
    return f"CEL expression {source!r} does not compile {where}: {reason}; variables allowed: {allowed}"


def to_cel_value(value: Any) -> Any:
    """agno's `_to_cel`: None, bools, numbers, strings, lists and str-keyed maps as they are;
    anything else as its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_cel_value(item) for item in value]
    if isinstance(value, dict):
        return {str(k): to_cel_value(v) for k, v in value.items()}
    return str(value)


def as_bool(value: Any) -> bool:
    """agno coerces a Loop's or Condition's CEL result with bool()."""
    return bool(value)


def as_choice(value: Any) -> str:
    """agno coerces a Router's CEL result with str()."""
    return value if isinstance(value, str) else str(value)


def step_input_variables(step_input: Any, session_state: dict[str, Any] | None) -> dict[str, Any]:
    """agno's `_build_step_input_context`: the Condition's (and Router's) variables."""
    input_text = ""
    if step_input.input is not None:
        input_text = step_input.get_input_as_string() or ""
    previous = step_input.previous_step_content
    if previous is None:
        previous_text = ""
    elif hasattr(previous, "model_dump_json"):
        previous_text = previous.model_dump_json()
    elif isinstance(previous, dict):
        previous_text = json.dumps(previous, default=str)
    else:
        previous_text = str(previous)
    outputs = {name: str(out.content) if out.content else "" for name, out in
               (step_input.previous_step_outputs or {}).items()}
    return {
        "input": input_text,
        "previous_step_content": previous_text,
        "previous_step_outputs": outputs,
        "additional_data": step_input.additional_data or {},
        "session_state": session_state or {},
    }


def loop_variables(iteration_results: list[Any], current_iteration: int, max_iterations: int) -> dict[str, Any]:
    """agno's `_build_loop_step_output_context`, from the outputs of the iteration just run."""
    outputs: dict[str, str] = {}
    last = ""
    all_success = True
    for result in iteration_results:
        content = str(result.content) if result.content else ""
        outputs[result.step_name or f"step_{len(outputs)}"] = content
        last = content
        all_success = all_success and bool(result.success)
    return {
        "current_iteration": current_iteration,
        "max_iterations": max_iterations,
        "all_success": all_success,
        "last_step_content": last,
        "step_outputs": outputs,
    }
