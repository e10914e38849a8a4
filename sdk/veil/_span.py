"""The live Veil span: a small record the caller's thread fills, turned into an OTel span later.

Creating an OpenTelemetry SDK span on the caller's thread (sampler, id generator, locked attribute dicts,
per-attribute validation) costs tens of microseconds. A `VeilSpan` records only references and
timestamps: the arguments, the result or exception, stream chunks. `_convert.to_readable` turns it into an
OTel `ReadableSpan` with GenAI attributes on the export thread.

`VeilSpan` implements the OpenTelemetry `Span` API and is placed in the OTel context while it runs, so
spans that other instrumentations open inside it (an HTTP client, the OpenAI contrib instrumentation) are
its children, and `opentelemetry.trace.get_current_span().set_attribute(...)` works on it.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util import types

if TYPE_CHECKING:
    from veil._context import Stamps

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

# Streams keep at most this many chunks; the concatenated output is cut to the attribute limit anyway.
MAX_STREAM_CHUNKS = 10_000
# Events kept per span, the latest ones (OTel's default OTEL_SPAN_EVENT_COUNT_LIMIT): a guarded stream adds
# events per checked window, and neither memory nor the export request may grow with the stream.
MAX_SPAN_EVENTS = 128


class _Parameters:
    """A function's parameters, digested once for fast binding on the export thread."""

    __slots__ = ("defaults", "keyword", "positional", "signature", "simple", "skip")

    def __init__(self, function: Callable[..., Any]) -> None:
        kind = inspect.Parameter
        self.signature = inspect.signature(function)
        params = list(self.signature.parameters.values())
        # `self` / `cls` carry no information worth recording.
        self.skip = params[0].name if params and params[0].name in ("self", "cls") else None
        self.positional = tuple(
            p.name for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        )
        self.keyword = tuple(p.name for p in params if p.kind is kind.KEYWORD_ONLY)
        self.defaults = {p.name: p.default for p in params if p.default is not kind.empty}
        # *args needs the general (slower) binder; **kwargs is flattened either way.
        self.simple = not any(p.kind is kind.VAR_POSITIONAL for p in params)


class SpanTarget:
    """What a span traces: its name, Veil kind, capture switches and the function whose arguments it binds.

    One per decorated function (built once at decoration time), so the hot path allocates nothing for it.
    The signature is read lazily, on the export thread, the first time arguments are bound.
    """

    __slots__ = ("_parameters", "capture_input", "capture_output", "function", "kind", "name")

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        capture_input: bool = True,
        capture_output: bool = True,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.function = function
        self._parameters: _Parameters | None = None

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Maps the call's arguments (defaults included) to parameter names, leaving out `self` / `cls`.

        Defaults count: `def chat(messages, model="gpt-4o")` called without `model` still asks for gpt-4o.
        Extra keyword arguments (`**kwargs`) are flattened in: `f(**opts)` reads as `f(model=..., ...)`.
        Falls back to {"args": [...], **kwargs} when the arguments do not fit the signature.
        """
        if self.function is None:
            return dict(kwargs)
        params = self._parameters
        if params is None:
            try:
                params = self._parameters = _Parameters(self.function)
            except (TypeError, ValueError):  # no introspectable signature (some builtins, C callables)
                return {"args": list(args), **kwargs}
        if params.simple and len(args) <= len(params.positional):
            arguments: dict[str, Any] = {}
            defaults = params.defaults
            for index, name in enumerate(params.positional):
                if index < len(args):
                    arguments[name] = args[index]
                elif name in kwargs:
                    arguments[name] = kwargs[name]
                elif name in defaults:
                    arguments[name] = defaults[name]
            for name in params.keyword:
                if name in kwargs:
                    arguments[name] = kwargs[name]
                elif name in defaults:
                    arguments[name] = defaults[name]
            for name, value in kwargs.items():
                arguments.setdefault(name, value)
        else:
            try:
                bound = params.signature.bind_partial(*args, **kwargs)
            except TypeError:
                return {"args": list(args), **kwargs}
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            for param in params.signature.parameters.values():
                if param.kind is inspect.Parameter.VAR_KEYWORD and param.name in arguments:
                    arguments.update(arguments.pop(param.name))
        if params.skip is not None:
            arguments.pop(params.skip, None)
        return arguments


def snapshot(value: Any) -> Any:
    """A shallow copy of list and dict arguments, taken on the caller's thread.

    Content is serialized later, on the export thread. Apps often append to the `messages` list right after
    the call; copying the top level keeps what the call actually received (deeper mutation still shows).
    """
    cls = type(value)
    if cls is list:
        return value.copy()
    if cls is dict:
        return value.copy()
    return value


class VeilSpan(trace.Span):
    """A span recorded cheaply on the caller's thread; see the module docstring.

    Only the thread that runs the traced code writes to it until `end()`; after that it belongs to the
    export thread, and further calls are ignored.
    """

    __slots__ = (
        "_context",
        "_processor",
        "args",
        "attributes",
        "chunks",
        "end_ns",
        "error",
        "events",
        "first_chunk_ns",
        "kwargs",
        "name",
        "parent_context",
        "parent_id",
        "result",
        "sampled",
        "span_id",
        "stamps",
        "start_ns",
        "status",
        "stream_end",
        "target",
        "trace_id",
        "updates",
    )

    def __init__(
        self,
        processor: Any,
        target: SpanTarget,
        trace_id: int,
        span_id: int,
        parent_id: int,
        parent_context: SpanContext | None,
        sampled: bool,
        stamps: Stamps | None,
    ) -> None:
        self._processor = processor
        self.target = target
        self.name: str | None = None
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_context = parent_context
        self.sampled = sampled
        self.stamps = stamps
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.attributes: dict[str, Any] | None = None
        self.updates: dict[str, Any] | None = None
        self.events: deque[tuple[str, types.Attributes, int, BaseException | None]] | None = None
        self.status: Status | None = None
        self.chunks: list[Any] | None = None
        self.first_chunk_ns = 0
        self.stream_end: str | None = None
        self._context: SpanContext | None = None

    # --- recording (caller's thread) --------------------------------------------------------------------
    def capture_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Keeps the call's arguments (top-level lists and dicts copied) for serialization at export."""
        if args:
            self.args = tuple(snapshot(a) for a in args)
        if kwargs:
            self.kwargs = {k: snapshot(v) for k, v in kwargs.items()}

    def add_chunk(self, chunk: Any) -> None:
        """Records one streamed chunk: time to first chunk, and the chunk itself while within bounds."""
        if not self.first_chunk_ns:
            self.first_chunk_ns = time.time_ns()
        chunks = self.chunks
        if chunks is None:
            chunks = self.chunks = []
        if len(chunks) < MAX_STREAM_CHUNKS:
            chunks.append(chunk)

    def update(self, values: Mapping[str, Any]) -> None:
        """Stores `veil.update_current` values (model, usage, output, metadata, ...) for the converter."""
        if self.end_ns:
            return
        if self.updates is None:
            self.updates = {}
        metadata = values.get("metadata")
        if metadata is not None:
            merged = dict(self.updates.get("metadata") or {})
            merged.update(metadata)
            values = {**values, "metadata": merged}
        self.updates.update(values)

    def finish(
        self, result: Any = None, error: BaseException | None = None, end_ns: int | None = None
    ) -> None:
        """Ends the span with the traced call's result or exception and hands it to the export queue.

        Only the first call counts; the span is read-only for this thread afterwards.
        """
        if self.end_ns:
            return
        self.result = result
        self.error = error
        self.end_ns = end_ns or time.time_ns()
        if self.sampled:
            self._processor.submit(self)

    # --- OpenTelemetry Span API -------------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self.trace_id,
                self.span_id,
                is_remote=False,
                trace_flags=_SAMPLED if self.sampled else _NOT_SAMPLED,
                trace_state=self.parent_context.trace_state if self.parent_context is not None else None,
            )
        return context

    def is_recording(self) -> bool:
        return self.sampled and not self.end_ns

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if not self.is_recording():
            return
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if not self.is_recording():
            return
        if self.events is None:
            self.events = deque(maxlen=MAX_SPAN_EVENTS)
        self.events.append((name, attributes, timestamp or time.time_ns(), None))

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The traceback is formatted on the export thread; only the reference is kept here.
        if not self.is_recording():
            return
        if self.events is None:
            self.events = deque(maxlen=MAX_SPAN_EVENTS)
        self.events.append(("exception", attributes, timestamp or time.time_ns(), exception))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self.is_recording():
            return
        self.status = status if isinstance(status, Status) else Status(status, description)

    def update_name(self, name: str) -> None:
        if self.is_recording():
            self.name = name

    def end(self, end_time: int | None = None) -> None:
        """Ends the span (OTel API). Spans opened by `veil.observe` and `veil.span` end themselves."""
        self.finish(self.result, self.error, end_time)

    def __repr__(self) -> str:
        return f"VeilSpan(name={self.name or self.target.name!r}, trace_id={self.trace_id:032x})"
