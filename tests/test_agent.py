"""Agent, model adapters and toolkits.

The loop is tested through the real OpenAI adapter (the `openai` SDK) against a local server
that speaks the chat-completions wire format (tests/chat_server.py); no test needs a network.
Streaming, retries and cancellation: tests/test_agent_stream.py.
"""

from __future__ import annotations

import asyncio
import enum
import json
import socket
from typing import Any, Literal, Optional

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kern_tasks.agent import Agent, Function, OpenAIChat, ScriptedModel, Toolkit, get_model, tool
from kern_tasks.agent.models import OfflineModel
from kern_tasks.agent.schema import json_schema, parse_docstring
from kern_tasks.settings import Settings
from tests.processes import free_port

pytest_plugins = ["tests.chat_server"]  # the chat_server fixture

API_KEY = "sk-test-SECRET-1234567890"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    "annotation, schema",
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Any, {}),
        (list, {"type": "array"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (list[list[str]], {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (dict, {"type": "object"}),
        (dict[str, Any], {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Optional[str], {"type": ["string", "null"]}),  # noqa: UP045 - the typing form on purpose
        (int | None, {"type": ["integer", "null"]}),
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Literal["daily", "weekly"], {"type": "string", "enum": ["daily", "weekly"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", None], {"enum": ["a", None]}),  # noqa: PYI061 - on purpose
        (Color, {"type": "string", "enum": ["red", "blue"]}),
    ],
)
def test_json_schema_of_annotations(annotation: Any, schema: dict[str, Any]) -> None:
    assert json_schema(annotation) == schema


class Window(BaseModel):
    """A nested model: its enum is a $ref in pydantic's schema, inlined for the model."""

    start: int
    colour: Color = Color.RED
    tags: list[str] | None = None


def test_json_schema_of_what_pydantic_validates() -> None:
    """Shapes the old hand-written converter got wrong or could not say."""
    assert json_schema(tuple[int, str]) == {
        "type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2,
    }
    assert json_schema(set[int]) == {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    assert json_schema(Window) == {
        "type": "object",
        "description": "A nested model: its enum is a $ref in pydantic's schema, inlined for the model.",
        "properties": {
            "start": {"type": "integer"},
            "colour": {"type": "string", "enum": ["red", "blue"], "default": "red"},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
        },
        "required": ["start"],
    }
    assert '"$ref"' not in json.dumps(json_schema(list[Window])) and "$defs" not in json_schema(list[Window])


ANNOTATIONS = [
    int, float, bool, str, list[int], tuple[int, str], tuple[str, ...], dict[str, int], set[str], int | None,
    int | str, Literal["a", "b"], Color, Window, list[Window], Optional[tuple[int, bool]],  # noqa: UP045
]


@pytest.mark.parametrize("annotation", ANNOTATIONS, ids=str)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_a_tool_accepts_its_schema_allows(annotation: Any, data: st.DataObject) -> None:
    """Any value of the type, as JSON, is valid under the schema the model is told, and
    the tool's validator accepts that JSON: told and accepted come from one adapter."""
    function = Function.from_callable(_one_parameter(annotation))
    adapter = function._adapters["x"]  # noqa: SLF001 - the validator the tool uses
    value = data.draw(st.from_type(annotation).filter(lambda v: not _has_nan(v)))
    sent = adapter.dump_python(value, mode="json")
    schema = function.parameters["properties"]["x"]
    assert jsonschema_rs.validator_for(schema).is_valid(sent), (schema, sent)
    assert function.bind({"x": sent})["x"] == adapter.validate_python(sent)


def test_a_value_outside_the_schema_is_refused_by_the_tool_too() -> None:
    function = Function.from_callable(_one_parameter(tuple[int, str]))
    schema = jsonschema_rs.validator_for(function.parameters["properties"]["x"])
    for wrong in (["a", 1], [1], [1, "a", 2], "x"):
        assert not schema.is_valid(wrong)
        with pytest.raises(ValueError, match="argument x"):
            function.bind({"x": wrong})


def _one_parameter(annotation: Any) -> Any:
    def tool_fn(x):  # type: ignore[no-untyped-def]
        return x

    tool_fn.__annotations__ = {"x": annotation}
    return tool_fn


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, BaseModel):
        return _has_nan(value.model_dump())
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_nan(v) for v in value)
    return False


def test_unsupported_annotation_is_named() -> None:
    with pytest.raises(TypeError, match="socket"):
        json_schema(socket.socket)


def documented(
    city: str,
    days: int = 3,
    units: Literal["metric", "imperial"] = "metric",
    tags: list[str] | None = None,
    note: str | None = None,
    strict: bool = False,
) -> str:
    """Forecast the weather
    for a city.

    A second paragraph that is not part of the description.

    Args:
        city: the city, e.g. "Paris".
        days (int): how many days,
            from 1 to 10.
        units: metric or imperial.
        tags: labels.

    Returns:
        str: the forecast.
    """
    return f"{city}:{days}:{units}:{tags}:{note}:{strict}"


def test_function_schema_from_signature_and_docstring() -> None:
    function = Function.from_callable(documented)
    assert function.to_openai() == {
        "type": "function",
        "function": {
            "name": "documented",
            "description": "Forecast the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": 'the city, e.g. "Paris".'},
                    "days": {"type": "integer", "description": "how many days, from 1 to 10.", "default": 3},
                    "units": {"type": "string", "enum": ["metric", "imperial"],
                              "description": "metric or imperial.", "default": "metric"},
                    "tags": {"type": "array", "items": {"type": "string"}, "description": "labels."},
                    "note": {"type": "string"},
                    "strict": {"type": "boolean", "default": False},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }


def test_docstring_sections() -> None:
    assert parse_docstring(None) == ("", {})
    description, params = parse_docstring("One line.\n\nArgs:\n    x: the x\n\nRaises:\n    y: not a param\n")
    assert description == "One line." and params == {"x": "the x"}


def test_arguments_are_checked_and_converted() -> None:
    function = Function.from_callable(documented)
    assert function.execute({"city": "Oslo", "days": 2.0, "tags": '["a"]'}) == "Oslo:2:metric:['a']:None:False"
    for arguments, fragment in [
        ({}, "missing required argument(s): city"),
        ({"city": "x", "colour": 1}, "unknown argument(s) colour"),
        ({"city": "x", "units": "kelvin"}, "argument units"),
        ({"city": "x", "days": "many"}, "argument days"),
        ([1, 2], "must be a JSON object"),
    ]:
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            function.bind(arguments)


class Calculator(Toolkit):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    @tool
    def add(self, a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: first addend
            b: second addend
        """
        self.calls.append((a, b))
        return a + b

    @tool(name="explode", description="Always fails.")
    def fail(self) -> str:
        raise RuntimeError("kaboom")

    def helper(self) -> None:
        """Public but not a tool: not decorated."""


class Listed(Toolkit):
    tools = ("one",)

    def one(self) -> str:
        return "1"

    def two(self) -> str:
        return "2"


def test_toolkits_expose_decorated_or_listed_methods() -> None:
    assert [f.name for f in Calculator().functions()] == ["add", "explode"]
    assert [f.name for f in Listed().functions()] == ["one"]
    with pytest.raises(ValueError, match="unique"):
        Agent(tools=[Calculator(), Calculator()])


def make_agent(server: Any, tools: list[Any], **kwargs: Any) -> Agent:
    settings = Settings(openai_base_url=server.url, openai_api_key=API_KEY)
    return Agent(model="openai:gpt-test", tools=tools, settings=settings, **kwargs)


def test_tool_loop_over_the_wire(chat_server: Any) -> None:
    calculator = Calculator()
    agent = make_agent(chat_server, [calculator], name="Math Bot", instructions="You add numbers.")
    chat_server.reset([
        {"tool_calls": [{"id": "call_abc", "name": "add", "arguments": {"a": 2, "b": 3}}]},
        "2 + 3 = 5",
    ])
    out = agent.run("what is 2 + 3?", session_id="s1", user_id="u1")
    assert (out.status, out.content, out.error) == ("COMPLETED", "2 + 3 = 5", None)
    assert (out.agent_id, out.session_id, out.user_id, out.input) == ("math-bot", "s1", "u1", "what is 2 + 3?")
    assert calculator.calls == [(2, 3)]

    first, second = chat_server.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == f"Bearer {API_KEY}"
    system = {"role": "system", "content": "You add numbers."}
    user = {"role": "user", "content": "what is 2 + 3?"}
    assert first["json"] == {"model": "gpt-test", "messages": [system, user], "tools": agent.tool_schemas()}
    assert [t["function"]["name"] for t in first["json"]["tools"]] == ["add", "explode"]
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]}
    result = {"role": "tool", "tool_call_id": "call_abc", "content": "5"}
    assert second["json"]["messages"] == [system, user, assistant, result]
    assert out.messages == [system, user, assistant, result, {"role": "assistant", "content": "2 + 3 = 5"}]
    assert out.metrics | {"duration": 0} == {"model_calls": 2, "tool_calls": 1, "tool_errors": 0, "duration": 0,
                                             "input_tokens": 22, "output_tokens": 14, "total_tokens": 36}

    root, *children = out.spans
    assert (root.name, root.kind, root.parent_span_id, root.status) == ("agent.run", "agent", None, "OK")
    assert [(s.name, s.kind, s.status) for s in children] == [
        ("model.call", "model", "OK"), ("tool.add", "tool", "OK"), ("model.call", "model", "OK")]
    assert all(s.parent_span_id == root.span_id and s.trace_id == out.run_id for s in children)
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in children)
    assert out.started_at <= root.start_time and root.end_time == out.ended_at
    assert children[0].attributes["usage"] == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    tool_attributes = children[1].attributes
    assert {k: tool_attributes[k] for k in ("arguments", "result", "tool_call_id")} == {
        "arguments": {"a": 2, "b": 3}, "result": "5", "tool_call_id": "call_abc"}
    json.dumps(out.to_dict())  # the whole output is JSON-able


def test_tool_mistakes_go_back_to_the_model(chat_server: Any) -> None:
    agent = make_agent(chat_server, [Calculator()])
    chat_server.reset([
        {"tool_calls": [
            {"id": "c1", "name": "add", "arguments": "{not json"},
            {"id": "c2", "name": "add", "arguments": {"a": "two", "b": 1}},
            {"id": "c3", "name": "add", "arguments": {"a": 1}},
            {"id": "c4", "name": "subtract", "arguments": {}},
            {"id": "c5", "name": "explode", "arguments": ""},
        ]},
        "sorry",
    ])
    out = agent.run("add")
    assert out.status == "COMPLETED" and out.content == "sorry"
    results = {m["tool_call_id"]: json.loads(m["content"])["error"] for m in out.messages if m["role"] == "tool"}
    assert "not valid JSON" in results["c1"]
    assert "argument a" in results["c2"]
    assert "missing required argument(s): b" in results["c3"]
    assert "unknown tool 'subtract'" in results["c4"] and "add, explode" in results["c4"]
    assert "kaboom" in results["c5"]
    sent = [m for m in chat_server.requests[1]["json"]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent] == ["c1", "c2", "c3", "c4", "c5"]
    assert out.metrics["tool_errors"] == 5
    assert [s.status for s in out.spans if s.kind == "tool"] == ["ERROR"] * 5


def test_max_tool_rounds(chat_server: Any) -> None:
    agent = make_agent(chat_server, [Calculator()], max_tool_rounds=2)
    call = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}
    chat_server.reset([call, call, call, "never reached"])
    out = agent.run("loop forever")
    assert out.status == "ERROR" and "max_tool_rounds=2" in out.error
    assert len(chat_server.requests) == 3
    # Every tool call is answered, so the messages can be sent to a model again.
    asked = [c["id"] for m in out.messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in out.messages if m["role"] == "tool"]
    assert asked == answered and len(asked) == 3
    assert out.spans[0].status == "ERROR"


@pytest.mark.parametrize("status", [401, 500])
def test_http_errors_end_the_run_without_leaking_the_key(chat_server: Any, status: int) -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {API_KEY}", "pad": "x" * 5000}})
    chat_server.reset([{"status": status, "body": body, "forever": True}])
    out = make_agent(chat_server, []).run("hi")
    assert out.status == "ERROR" and f"HTTP {status}" in out.error
    # The SDK retries a 500 (twice, by default), not a 401.
    assert len(chat_server.requests) == (3 if status == 500 else 1)
    assert API_KEY not in out.error and API_KEY not in json.dumps(out.to_dict())
    assert len(out.error) < 800
    model_span = out.spans[1]
    assert (model_span.name, model_span.status) == ("model.call", "ERROR")


def test_missing_key_timeout_and_unreachable_server(chat_server: Any) -> None:
    # Seed code: constructing with no key works and does no I/O; the call reports the key.
    agent = Agent(model="openai:gpt-5.4", settings=Settings())
    out = agent.run("hi")
    assert out.status == "ERROR" and "OPENAI_API_KEY" in out.error

    slow = OpenAIChat("gpt-test", api_key=API_KEY, base_url=chat_server.url, timeout=0.3, max_retries=1)
    chat_server.reset([{"delay": 1.0, "content": "late", "forever": True}])
    out = Agent(model=slow).run("hi")
    assert out.status == "ERROR" and "timeout" in out.error and "2 attempts" in out.error
    assert len(chat_server.requests) == 2

    closed_port = free_port()
    unreachable = OpenAIChat("m", api_key=API_KEY, base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=0)
    out = Agent(model=unreachable).run("hi")
    assert out.status == "ERROR" and "request failed" in out.error


def test_offline_model_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the offline model touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    agent = Agent(name="Demo", tools=[Calculator()])
    first, second = agent.run("Summarise the week, please."), agent.run("Summarise the week, please.")
    assert first.status == "COMPLETED" and first.content == second.content
    assert "Summarise the week, please." in first.content and "add, explode" in first.content
    assert agent.model.name == "offline:echo" and first.metrics["model_calls"] == 1


def test_get_model() -> None:
    assert isinstance(get_model("offline"), OfflineModel)
    assert get_model("offline:demo").name == "offline:demo"
    settings = Settings(openai_base_url="https://proxy.example/v1/")
    assert get_model("openai:gpt-4o", settings).base_url == "https://proxy.example/v1"
    assert get_model("ollama:llama3.1", settings).base_url == "http://localhost:11434/v1"
    assert get_model("vllm:qwen", settings).base_url == "http://localhost:8000/v1"
    with pytest.raises(ValueError, match=r'unknown model provider "anthropic".*openai, ollama, vllm, offline'):
        get_model("anthropic:claude")
    with pytest.raises(ValueError, match="names no model"):
        get_model("openai:")


def test_agent_ids_history_and_arun() -> None:
    assert Agent().id == "agent"
    assert Agent(name="  Daily PR Digest! ").id == "daily-pr-digest"
    assert Agent(name="x", id="given").id == "given"
    model = ScriptedModel(["one", "two"])
    agent = Agent(model=model, instructions="be brief")
    history = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello"}]
    out = asyncio.run(agent.arun("again", history=history, run_id="r1"))
    assert (out.run_id, out.content) == ("r1", "one")
    assert [m["content"] for m in model.calls[0][0]] == ["be brief", "hi", "hello", "again"]
    assert out.spans[0].trace_id == "r1"


def test_settings_read_openai_variables() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": "http://localhost:11434/v1"})
    assert settings.openai_api_key == API_KEY and settings.openai_base_url == "http://localhost:11434/v1"
    assert Settings.from_env({}).openai_base_url == "https://api.openai.com/v1"
    assert API_KEY not in repr(settings)
