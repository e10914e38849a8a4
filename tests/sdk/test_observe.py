"""`@veil.observe` and `veil.span` on every kind of callable, exported to the real OTLP receiver."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import veil
from veil import semconv as sc


def test_before_init_calls_pass_straight_through() -> None:
    calls = []

    @veil.observe
    def add(a: int, b: int = 1) -> int:
        calls.append((a, b))
        return a + b

    assert add(2, b=3) == 5
    assert calls == [(2, 3)]
    with veil.span("block") as span:
        assert not span.is_recording()
    assert veil.flush(1.0)
    assert veil.stats()["exported"] == 0


def test_wrapper_keeps_name_doc_and_signature() -> None:
    def original(x: int, *, y: str = "a") -> str:
        """Docstring."""
        return f"{x}{y}"

    wrapped = veil.observe(kind="tool")(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Docstring."
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped.__wrapped__ is original


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        veil.observe(kind="retriever")


def test_sync_function_nesting_and_kinds(start_veil: Any) -> None:
    receiver = start_veil(service_name="svc", environment="test")

    @veil.observe(kind="tool")
    def search(query: str, limit: int = 3) -> list[str]:
        return [query] * limit

    @veil.observe(kind="agent", name="planner")
    def plan(goal: str) -> str:
        return ",".join(search(goal, limit=2))

    assert plan("x") == "x,x"
    assert veil.flush(5)
    tool = receiver.by_name("execute_tool search")
    agent = receiver.by_name("invoke_agent planner")
    assert tool.parent_span_id == agent.span_id
    assert tool.trace_id == agent.trace_id
    assert agent.parent_span_id == ""
    assert tool.attributes[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool.attributes[sc.GEN_AI_TOOL_NAME] == "search"
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"query":"x","limit":2}'
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == '["x","x"]'
    assert agent.attributes[sc.GEN_AI_AGENT_NAME] == "planner"
    assert agent.attributes[sc.VEIL_INPUT] == '{"goal":"x"}'
    assert agent.attributes[sc.VEIL_OUTPUT] == "x,x"
    assert agent.resource[sc.SERVICE_NAME] == "svc"
    assert agent.resource[sc.DEPLOYMENT_ENVIRONMENT_NAME] == "test"
    assert agent.scope == "veil"
    assert agent.start_ns <= tool.start_ns <= tool.end_ns <= agent.end_ns


def test_exception_is_recorded_and_reraised_unchanged(start_veil: Any) -> None:
    receiver = start_veil()

    class Boom(Exception):
        pass

    error = Boom("bad input")

    @veil.observe
    def fails() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is error
    assert veil.flush(5)
    span = receiver.by_name("invoke_workflow fails")
    assert span.status_code == 2  # ERROR
    assert span.attributes[sc.ERROR_TYPE].endswith("Boom")
    assert sc.VEIL_OUTPUT not in span.attributes
    name, attrs = span.events[0]
    assert name == "exception"
    assert attrs["exception.message"] == "bad input"
    assert "raise error" in attrs["exception.stacktrace"]


def test_async_function_and_tasks_nest_by_context(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.001)
        return i * 2

    @veil.observe(kind="agent")
    async def gather() -> list[int]:
        return list(await asyncio.gather(*(asyncio.create_task(fetch(i)) for i in range(3))))

    assert asyncio.run(gather()) == [0, 2, 4]
    assert veil.flush(5)
    parent = receiver.by_name("invoke_agent gather")
    children = [s for s in receiver.spans if s.name == "execute_tool fetch"]
    assert len(children) == 3
    assert {c.parent_span_id for c in children} == {parent.span_id}


def test_generator_span_lasts_until_exhausted(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm", name="stream")
    def stream(prompt: str):
        yield "Hel"
        yield "lo"
        return "done"

    gen = stream("hi")
    assert veil.flush(5)
    assert receiver.spans == []  # nothing ends before the stream does
    assert list(gen) == ["Hel", "lo"]
    assert veil.flush(5)
    span = receiver.by_name("stream")
    assert span.attributes[sc.VEIL_STREAM_END] == "exhausted"
    assert span.attributes[sc.VEIL_STREAM_CHUNKS] == 2
    assert span.attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert '"content":"Hello"' in span.attributes[sc.GEN_AI_OUTPUT_MESSAGES]
    assert '"content":"hi"' in span.attributes[sc.GEN_AI_INPUT_MESSAGES]


def test_generator_closed_early_and_abandoned_end_their_spans(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="chain")
    def numbers():
        yield from range(100)

    closed = numbers()
    assert next(closed) == 0
    closed.close()

    abandoned = numbers()
    assert next(abandoned) == 0
    del abandoned  # CPython finalizes it now: the span ends as well

    assert veil.flush(5)
    spans = [s for s in receiver.spans if s.name == "invoke_workflow numbers"]
    assert [s.attributes[sc.VEIL_STREAM_END] for s in spans] == ["closed", "closed"]
    assert all(s.attributes[sc.VEIL_STREAM_CHUNKS] == 1 for s in spans)


def test_generator_send_and_throw_pass_through(start_veil: Any) -> None:
    start_veil()

    @veil.observe
    def echo():
        received = None
        while True:
            try:
                received = yield received
            except KeyError:
                received = "recovered"

    gen = echo()
    assert next(gen) is None
    assert gen.send("a") == "a"
    assert gen.throw(KeyError("k")) == "recovered"
    gen.close()


def test_async_generator(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    async def ticks(n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield str(i)

    async def consume() -> list[str]:
        return [t async for t in ticks(3)]

    assert asyncio.run(consume()) == ["0", "1", "2"]
    assert veil.flush(5)
    span = receiver.by_name("execute_tool ticks")
    assert span.attributes[sc.VEIL_STREAM_END] == "exhausted"
    assert span.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == "012"


def test_spans_inside_a_generator_body_nest_under_it(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    def lookup(i: int) -> int:
        return i

    @veil.observe
    def produce():
        for i in range(2):
            yield lookup(i)

    @veil.observe
    def consumer_step(x: int) -> int:
        return x

    for x in produce():
        consumer_step(x)
    assert veil.flush(5)
    stream = receiver.by_name("invoke_workflow produce")
    lookups = [s for s in receiver.spans if s.name == "execute_tool lookup"]
    steps = [s for s in receiver.spans if s.name == "invoke_workflow consumer_step"]
    assert {s.parent_span_id for s in lookups} == {stream.span_id}
    assert all(s.parent_span_id == "" for s in steps)


class Service:
    factor = 10

    @veil.observe(kind="tool")
    def method(self, x: int) -> int:
        return x * self.factor

    @veil.observe(kind="tool")
    @classmethod
    def klass(cls, x: int) -> int:
        return x + cls.factor

    @staticmethod
    @veil.observe(kind="tool")
    def static(x: int) -> int:
        return -x


def test_methods_classmethods_staticmethods(start_veil: Any) -> None:
    receiver = start_veil()
    service = Service()
    assert service.method(2) == 20
    assert Service.klass(2) == 12
    assert service.static(2) == -2
    assert veil.flush(5)
    assert receiver.names() == ["execute_tool klass", "execute_tool method", "execute_tool static"]
    for span in receiver.spans:
        # self / cls are not arguments worth recording
        assert span.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"x":2}'


def test_span_context_manager_with_input_output_and_error(start_veil: Any) -> None:
    receiver = start_veil()
    with veil.span("retrieve", kind="tool", input={"q": "cats"}) as span:
        span.set_attribute("custom.count", 3)
        veil.update_current(output=["doc1"], metadata={"index": "v2"})
    with pytest.raises(RuntimeError), veil.span("broken"):
        raise RuntimeError("nope")
    assert veil.flush(5)
    retrieve = receiver.by_name("execute_tool retrieve")
    assert retrieve.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"q":"cats"}'
    assert retrieve.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == '["doc1"]'
    assert retrieve.attributes["custom.count"] == 3
    assert retrieve.attributes["veil.metadata.index"] == "v2"
    assert receiver.by_name("invoke_workflow broken").status_code == 2


def test_capture_switches(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool", capture_input=False)
    def secret_in(password: str) -> str:
        return "ok"

    @veil.observe(kind="tool", capture_output=False)
    def secret_out(x: int) -> str:
        return "token"

    secret_in("hunter2")
    secret_out(1)
    assert veil.flush(5)
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in receiver.by_name("execute_tool secret_in").attributes
    assert sc.GEN_AI_TOOL_CALL_RESULT not in receiver.by_name("execute_tool secret_out").attributes


def test_capture_content_off_keeps_model_and_usage(start_veil: Any) -> None:
    receiver = start_veil(capture_content=False)

    @veil.observe(kind="llm")
    def chat(messages: list[dict[str, str]], model: str = "gpt-4o") -> dict[str, Any]:
        return {"model": "gpt-4o-1", "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "choices": []}

    chat([{"role": "user", "content": "my email is a@b.c"}])
    assert veil.flush(5)
    span = receiver.by_name("chat gpt-4o")
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert not set(span.attributes) & sc.CONTENT_ATTRIBUTES


def test_arguments_mutated_after_the_call_are_recorded_as_sent(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="llm")
    def chat(messages: list[dict[str, str]]) -> str:
        return "answer"

    history = [{"role": "user", "content": "q1"}]
    chat(history)
    history.append({"role": "assistant", "content": "answer"})
    assert veil.flush(5)
    assert "answer" not in receiver.spans[0].attributes[sc.GEN_AI_INPUT_MESSAGES]


def test_async_generator_abandoned_mid_stream_ends_its_span(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    async def endless():
        i = 0
        while True:
            yield i
            i += 1

    async def take_two() -> list[int]:
        stream = endless()
        return [await stream.__anext__(), await stream.__anext__()]

    # asyncio.run finalizes the abandoned async generator through its async-generator hooks.
    assert asyncio.run(take_two()) == [0, 1]
    assert veil.flush(5)
    span = receiver.by_name("execute_tool endless")
    # asyncio cancels the finalizing task at shutdown: the stream ends by CancelledError or by aclose().
    assert span.attributes[sc.VEIL_STREAM_END] in ("error", "closed")
    assert span.attributes[sc.VEIL_STREAM_CHUNKS] == 2


def test_span_works_with_async_with(start_veil: Any) -> None:
    receiver = start_veil()

    async def main() -> None:
        async with veil.span("fetch", kind="tool", input="q") as span:
            await asyncio.sleep(0)
            assert span.is_recording()

    asyncio.run(main())
    assert veil.flush(5)
    assert receiver.by_name("execute_tool fetch").attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"input":"q"}'


def test_events_on_a_long_lived_span_are_bounded_latest_kept(start_veil: Any) -> None:
    # A guarded stream adds a decision event per checked window; a long stream must not grow the span
    # (and its export request) without bound. Like OTel's SDK, the latest 128 are kept.
    receiver = start_veil()
    with veil.span("stream") as span:
        for i in range(1000):
            span.add_event("chunk", {"i": i})
    assert veil.flush(5)
    events = receiver.by_name("invoke_workflow stream").events
    assert len(events) == 128
    assert events[-1] == ("chunk", {"i": 999})
