"""Turns a finished `VeilSpan` into an OTel `ReadableSpan` with GenAI attributes, on the export thread.

All the per-call work the caller's thread skipped happens here: binding arguments to parameter names,
reading model / usage / finish reasons from the response, building semconv messages, serializing content
with the size limit, formatting tracebacks.

Attributes by Veil kind (span names follow semconv):

| kind      | operation        | span name                    | content attributes                          |
|-----------|------------------|------------------------------|---------------------------------------------|
| llm       | chat             | `chat {model}` (else name)   | gen_ai.input/output.messages, system instr. |
| embedding | embeddings       | `embeddings {model}`         | veil.input                                  |
| tool      | execute_tool     | `execute_tool {name}`        | gen_ai.tool.call.arguments / .result        |
| agent     | invoke_agent     | `invoke_agent {name}`        | veil.input / veil.output                    |
| chain     | invoke_workflow  | `invoke_workflow {name}`     | veil.input / veil.output                    |
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from veil import _genai, _serialize
from veil import semconv as sc
from veil._span import VeilSpan

_OPERATIONS = {
    sc.KIND_LLM: sc.OP_CHAT,
    sc.KIND_EMBEDDING: sc.OP_EMBEDDINGS,
    sc.KIND_TOOL: sc.OP_EXECUTE_TOOL,
    sc.KIND_AGENT: sc.OP_INVOKE_AGENT,
    sc.KIND_CHAIN: sc.OP_INVOKE_WORKFLOW,
}
_NAME_ATTRIBUTE = {
    sc.KIND_TOOL: sc.GEN_AI_TOOL_NAME,
    sc.KIND_AGENT: sc.GEN_AI_AGENT_NAME,
    sc.KIND_CHAIN: sc.GEN_AI_WORKFLOW_NAME,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _qualified_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return _serialize.bounded_repr(exc)


class Converter:
    """Callable `VeilSpan` → `ReadableSpan`, configured once at `veil.init()`.

    Args:
        resource: The resource every Veil span carries.
        scope: The instrumentation scope (`veil`, SDK version).
        capture_content: False leaves out every content attribute (model and usage are still recorded).
        max_attribute_size: UTF-8 byte limit of each content attribute.
    """

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        capture_content: bool,
        max_attribute_size: int,
    ) -> None:
        self._resource = resource
        self._scope = scope
        self._capture = capture_content
        self._limit = max_attribute_size

    def __call__(self, span: VeilSpan) -> ReadableSpan:
        target = span.target
        kind = target.kind
        operation = _OPERATIONS[kind]
        attrs: dict[str, Any] = {sc.VEIL_KIND: kind, sc.GEN_AI_OPERATION_NAME: operation}
        capture_in = self._capture and target.capture_input
        capture_out = self._capture and target.capture_output and span.error is None
        updates = span.updates or {}
        params = target.bind(span.args, span.kwargs or {})
        name = span.name or target.name

        if kind in (sc.KIND_LLM, sc.KIND_EMBEDDING):
            self._genai(span, params, updates, attrs, capture_in, capture_out)
            model = attrs.get(sc.GEN_AI_REQUEST_MODEL) or attrs.get(sc.GEN_AI_RESPONSE_MODEL)
            if span.name is None and model:
                name = f"{operation} {model}"
        else:
            attrs[_NAME_ATTRIBUTE[kind]] = target.name
            if span.name is None:
                name = f"{operation} {target.name}"
            self._generic_content(span, params, updates, attrs, kind, capture_in, capture_out)
            self._apply_updates_genai(updates, attrs)

        self._stamp(span, updates, attrs)
        if span.attributes:
            for key, value in span.attributes.items():
                attrs[str(key)] = self._attribute_value(value)

        events = self._events(span)
        status = span.status
        if span.error is not None:
            attrs[sc.ERROR_TYPE] = _qualified_name(span.error)
            events.append(self._exception_event(span.error, span.end_ns))
            status = Status(StatusCode.ERROR, type(span.error).__name__)

        parent = span.parent_context
        if parent is None and span.parent_id:
            parent = SpanContext(span.trace_id, span.parent_id, is_remote=False, trace_flags=_SAMPLED)
        return ReadableSpan(
            name=name,
            context=span.get_span_context(),
            parent=parent,
            resource=self._resource,
            attributes=attrs,
            events=events,
            kind=SpanKind.CLIENT if kind in (sc.KIND_LLM, sc.KIND_EMBEDDING) else SpanKind.INTERNAL,
            status=status or Status(StatusCode.UNSET),
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=self._scope,
        )

    # --- GenAI (llm, embedding) ---------------------------------------------------------------------------
    def _genai(
        self,
        span: VeilSpan,
        params: Mapping[str, Any],
        updates: Mapping[str, Any],
        attrs: dict[str, Any],
        capture_in: bool,
        capture_out: bool,
    ) -> None:
        attrs.update(_genai.request_attributes(params))
        output: Any = span.result
        stream_text: str | None = None
        if span.chunks is not None or span.stream_end is not None:
            stream_text, found = _genai.stream_output(span.chunks or (), self._limit)
            attrs.update(found)
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
            attrs[sc.VEIL_STREAM_END] = span.stream_end or "exhausted"
            attrs[sc.VEIL_STREAM_CHUNKS] = len(span.chunks or ())
            if span.first_chunk_ns:
                attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (span.first_chunk_ns - span.start_ns) / 1e9
        else:
            attrs.update(_genai.response_attributes(output))
        self._apply_updates_genai(updates, attrs)
        if sc.GEN_AI_REQUEST_MODEL not in attrs and sc.GEN_AI_RESPONSE_MODEL in attrs:
            attrs[sc.GEN_AI_REQUEST_MODEL] = attrs[sc.GEN_AI_RESPONSE_MODEL]

        if capture_in:
            system, messages = _genai.input_content(params)
            if system is not None:
                attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = self._fit(system)
            if messages is None and len(params) == 1:
                only = next(iter(params.values()))
                if isinstance(only, str):
                    messages = [{"role": "user", "parts": [{"type": "text", "content": only}]}]
            if messages is not None and span.target.kind == sc.KIND_LLM:
                attrs[sc.GEN_AI_INPUT_MESSAGES] = self._fit(messages)
            elif params:
                attrs[sc.VEIL_INPUT] = _serialize.dumps(params, self._limit)
        if capture_out and span.target.kind == sc.KIND_LLM:
            if "output" in updates:
                messages = _genai.output_messages(updates["output"])
            elif stream_text is not None:
                messages = _genai.iter_stream_messages(
                    stream_text, attrs.get(sc.GEN_AI_RESPONSE_FINISH_REASONS, ())
                )
            else:
                messages = _genai.output_messages(output)
            if messages is not None:
                attrs[sc.GEN_AI_OUTPUT_MESSAGES] = self._fit(messages)
            elif output is not None:
                attrs[sc.VEIL_OUTPUT] = _serialize.dumps(output, self._limit)

    def _apply_updates_genai(self, updates: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        """Values given to `veil.update_current` win over what was read from the call."""
        model = updates.get("model")
        if isinstance(model, str):
            attrs[sc.GEN_AI_RESPONSE_MODEL] = model
            attrs.setdefault(sc.GEN_AI_REQUEST_MODEL, model)
        provider = updates.get("provider")
        if isinstance(provider, str):
            attrs[sc.GEN_AI_PROVIDER_NAME] = provider
        usage = updates.get("usage")
        if usage is not None:
            attrs.update(_genai.usage_attributes(usage))

    # --- other kinds --------------------------------------------------------------------------------------
    def _generic_content(
        self,
        span: VeilSpan,
        params: Mapping[str, Any],
        updates: Mapping[str, Any],
        attrs: dict[str, Any],
        kind: str,
        capture_in: bool,
        capture_out: bool,
    ) -> None:
        tool = kind == sc.KIND_TOOL
        if capture_in and params:
            attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS if tool else sc.VEIL_INPUT] = _serialize.dumps(
                params, self._limit
            )
        chunks = span.chunks
        if chunks is not None:
            attrs[sc.VEIL_STREAM_END] = span.stream_end or "exhausted"
            attrs[sc.VEIL_STREAM_CHUNKS] = len(chunks)
        if not capture_out:
            return
        output: Any = updates.get("output", span.result)
        if chunks is not None and "output" not in updates:
            output = chunks
            if all(type(chunk) is str for chunk in chunks):
                # Text streams read as one string; joined only up to the attribute limit.
                output = _genai.stream_output(chunks, self._limit)[0] or ""
        if output is not None:
            attrs[sc.GEN_AI_TOOL_CALL_RESULT if tool else sc.VEIL_OUTPUT] = _serialize.dumps(
                output, self._limit
            )

    # --- shared ---------------------------------------------------------------------------------------
    def _stamp(self, span: VeilSpan, updates: Mapping[str, Any], attrs: dict[str, Any]) -> None:
        stamps = span.stamps
        if stamps is not None:
            if stamps.user_id is not None:
                attrs[sc.USER_ID] = stamps.user_id
            if stamps.session_id is not None:
                attrs[sc.SESSION_ID] = stamps.session_id
                attrs[sc.GEN_AI_CONVERSATION_ID] = stamps.session_id
            if stamps.tags:
                attrs[sc.VEIL_TAGS] = list(stamps.tags)
            for key, value in stamps.metadata.items():
                attrs[sc.VEIL_METADATA_PREFIX + key] = self._attribute_value(value)
        metadata = updates.get("metadata")
        if metadata:
            for key, value in metadata.items():
                attrs[sc.VEIL_METADATA_PREFIX + str(key)] = self._attribute_value(value)

    def _attribute_value(self, value: Any) -> Any:
        """A user-set value as a valid OTLP attribute: primitives and homogeneous lists kept, else JSON."""
        if isinstance(value, str):
            return _serialize.truncate(value, self._limit)
        if isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, (list, tuple)) and value:
            first = type(value[0])
            if first in (str, bool, int, float) and all(type(v) is first for v in value):
                return [_serialize.truncate(v, self._limit) for v in value] if first is str else list(value)
        return _serialize.dumps(value, self._limit)

    def _fit(self, messages: list[Any]) -> str:
        """Messages as JSON within the size limit, cutting text parts first so the JSON stays valid."""
        limit = self._limit
        text = _serialize.encode_json(messages, limit)
        if len(text) * 4 <= limit or len(text.encode("utf-8", "replace")) <= limit:
            return _serialize.truncate(text, limit)
        jsonable = _serialize.to_jsonable(messages, limit)
        parts = [
            p for m in jsonable if isinstance(m, dict) for p in m.get("parts", ()) if isinstance(p, dict)
        ]
        texts = [p for p in parts if isinstance(p.get("content"), str)]
        if texts:
            text = json.dumps(jsonable, ensure_ascii=False, separators=(",", ":"))
            content_bytes = sum(len(p["content"].encode("utf-8", "replace")) for p in texts)
            overhead = len(text.encode("utf-8", "replace")) - content_bytes
            share = (limit - overhead) // len(texts) - len(_serialize.TRUNCATION_MARKER.encode("utf-8")) - 8
            if share > 0:
                for part in texts:
                    part["content"] = _serialize.truncate(part["content"], share)
            text = json.dumps(jsonable, ensure_ascii=False, separators=(",", ":"))
        return _serialize.truncate(text, limit)

    def _events(self, span: VeilSpan) -> list[Event]:
        events = []
        for name, attributes, timestamp, exc in span.events or ():
            event_attrs = {str(k): self._attribute_value(v) for k, v in (attributes or {}).items()}
            if exc is not None:
                events.append(self._exception_event(exc, timestamp, event_attrs))
            else:
                events.append(Event(name, event_attrs, timestamp))
        return events

    def _exception_event(
        self, exc: BaseException, timestamp: int, extra: dict[str, Any] | None = None
    ) -> Event:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        attributes = {
            "exception.type": _qualified_name(exc),
            "exception.message": _serialize.truncate(_message(exc), self._limit),
            "exception.stacktrace": _serialize.truncate(stack, self._limit),
            **(extra or {}),
        }
        return Event("exception", attributes, timestamp)
