"""Context propagation: `veil.context` stamps, asyncio tasks, threads that copy contextvars, OTel interop."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from typing import Any

import pytest
from opentelemetry import trace

import veil
from veil import semconv as sc


def test_context_stamps_every_span_and_nests(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe
    def step(name: str) -> str:
        return name

    with veil.context(user_id="u1", session_id="s1", tags=["beta"], metadata={"tenant": "acme", "n": 3}):
        step("outer")
        with veil.context(user_id="u2", tags=["vip"], metadata={"tenant": "other"}):
            step("inner")
    step("outside")
    assert veil.flush(5)
    spans = {s.attributes[sc.VEIL_INPUT]: s.attributes for s in receiver.spans}
    outer, inner, outside = spans['{"name":"outer"}'], spans['{"name":"inner"}'], spans['{"name":"outside"}']
    assert outer[sc.USER_ID] == "u1"
    assert outer[sc.SESSION_ID] == outer[sc.GEN_AI_CONVERSATION_ID] == "s1"
    assert outer[sc.VEIL_TAGS] == ["beta"]
    assert outer["veil.metadata.tenant"] == "acme"
    assert outer["veil.metadata.n"] == 3
    assert inner[sc.USER_ID] == "u2"
    assert inner[sc.SESSION_ID] == "s1"
    assert inner[sc.VEIL_TAGS] == ["beta", "vip"]
    assert inner["veil.metadata.tenant"] == "other"
    assert sc.USER_ID not in outside


def test_context_as_decorator_on_sync_and_async(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.context(session_id="sync-session")
    @veil.observe
    def sync_call() -> None:
        return None

    @veil.context(session_id="async-session")
    @veil.observe
    async def async_call() -> None:
        return None

    sync_call()
    asyncio.run(async_call())
    assert veil.flush(5)
    assert sorted(s.attributes[sc.SESSION_ID] for s in receiver.spans) == ["async-session", "sync-session"]


def test_context_rejects_a_string_for_tags() -> None:
    with pytest.raises(TypeError, match="list of strings"):
        veil.context(tags="oops")


def test_asyncio_tasks_inherit_parent_and_stamps(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @veil.observe(kind="agent")
    async def root() -> None:
        with veil.context(user_id="task-user"):
            tasks = [asyncio.create_task(work(i)) for i in range(4)]
        await asyncio.gather(*tasks)

    asyncio.run(root())
    assert veil.flush(5)
    parent = receiver.by_name("invoke_agent root")
    workers = [s for s in receiver.spans if s.name == "execute_tool work"]
    assert len(workers) == 4
    assert all(w.parent_span_id == parent.span_id for w in workers)
    assert all(w.attributes[sc.USER_ID] == "task-user" for w in workers)


def test_threads_that_copy_the_context_nest_and_those_that_do_not_start_traces(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(kind="tool")
    def in_thread(label: str) -> str:
        return label

    with veil.span("parent"), veil.context(user_id="ctx-user"):
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(in_thread, "copied"))
        plain = threading.Thread(target=in_thread, args=("plain",))
        copied.start()
        plain.start()
        copied.join()
        plain.join()
    assert veil.flush(5)
    parent = receiver.by_name("invoke_workflow parent")
    by_label = {
        s.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS]: s for s in receiver.spans if s.name != parent.name
    }
    assert by_label['{"label":"copied"}'].parent_span_id == parent.span_id
    assert by_label['{"label":"copied"}'].attributes[sc.USER_ID] == "ctx-user"
    assert by_label['{"label":"plain"}'].parent_span_id == ""
    assert by_label['{"label":"plain"}'].trace_id != parent.trace_id


def test_otel_spans_nest_under_veil_spans_and_the_other_way_round(start_veil: Any) -> None:
    receiver = start_veil()
    tracer = trace.get_tracer("app")

    @veil.observe(kind="llm", name="model-call")
    def call_model() -> str:
        with tracer.start_as_current_span("http POST") as http_span:
            http_span.set_attribute("http.request.method", "POST")
        return "ok"

    with tracer.start_as_current_span("request handler"):
        call_model()
    assert veil.flush(5)
    handler = receiver.by_name("request handler")
    model = receiver.by_name("model-call")
    http = receiver.by_name("http POST")
    assert model.parent_span_id == handler.span_id
    assert http.parent_span_id == model.span_id
    assert len({handler.trace_id, model.trace_id, http.trace_id}) == 1


def test_current_span_api_works_on_veil_spans(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe
    def annotate() -> None:
        span = trace.get_current_span()
        span.set_attribute("app.flag", True)
        span.add_event("checkpoint", {"step": 1})
        span.update_name("renamed")

    annotate()
    assert veil.flush(5)
    span = receiver.by_name("renamed")
    assert span.attributes["app.flag"] is True
    assert span.events == [("checkpoint", {"step": 1})]


def test_context_as_decorator_on_generators_stamps_spans_opened_in_the_body(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(name="inner")
    def inner(label: str) -> str:
        return label

    @veil.context(session_id="gen-session")
    def stream() -> Any:
        yield inner("gen")

    @veil.context(session_id="agen-session")
    async def astream() -> Any:
        yield inner("agen")

    async def consume() -> list[str]:
        return [chunk async for chunk in astream()]

    assert inspect.isgeneratorfunction(stream)
    assert inspect.isasyncgenfunction(astream)
    assert list(stream()) == ["gen"]
    assert asyncio.run(consume()) == ["agen"]
    assert veil.flush(5)
    sessions = {s.attributes[sc.VEIL_INPUT]: s.attributes.get(sc.SESSION_ID) for s in receiver.spans}
    assert sessions == {'{"label":"gen"}': "gen-session", '{"label":"agen"}': "agen-session"}


def test_context_above_classmethod_and_staticmethod_keeps_the_descriptor(start_veil: Any) -> None:
    receiver = start_veil()

    @veil.observe(name="inner")
    def inner(label: str) -> str:
        return label

    class Service:
        @veil.context(session_id="cm-session")
        @classmethod
        def run(cls, label: str) -> str:
            return inner(label)

        @veil.context(session_id="sm-session")
        @staticmethod
        async def arun(label: str) -> str:
            return inner(label)

    assert inspect.iscoroutinefunction(Service.arun)
    assert Service.run("cm") == "cm"
    assert asyncio.run(Service.arun("sm")) == "sm"
    assert veil.flush(5)
    sessions = {s.attributes[sc.VEIL_INPUT]: s.attributes.get(sc.SESSION_ID) for s in receiver.spans}
    assert sessions == {'{"label":"cm"}': "cm-session", '{"label":"sm"}': "sm-session"}
