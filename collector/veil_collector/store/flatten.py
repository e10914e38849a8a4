"""OTLP trace requests to ClickHouse rows: ``otel_traces`` as the OTel ClickHouse exporter writes it, plus
Veil's typed GenAI rows.

``otel_traces`` values follow ``exporter_traces.go`` of the OTel Collector's ClickHouse exporter: lowercase
hex ids (empty when absent), ``SpanKind`` ``Unspecified/Internal/Server/Client/Producer/Consumer``,
``StatusCode`` ``Unset/Ok/Error``, ``Timestamp`` = span start, ``Duration`` = end - start in nanoseconds,
and every attribute value stringified like pdata's ``Value.AsString`` (ints in decimal, doubles as ES6
numbers, bools ``true``/``false``, bytes base64, arrays and maps as JSON with sorted keys and HTML
escaping, as Go's ``encoding/json`` writes them).

One ``llm_calls`` row and one :class:`~veil_collector.records.GenAICall` are produced per inference or
embeddings span: ``gen_ai.operation.name`` in chat, text_completion, generate_content, embeddings, or a
span that only carries the legacy ``gen_ai.system``. ``veil.guard`` span events become
:class:`~veil_collector.records.GuardDecision` rows.

Flattening is deterministic (same request, same rows in the same order): replayed batches must
reproduce their blocks exactly for insert deduplication to recognise them.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from veil import semconv
from veil_collector.records import GenAICall, GuardDecision, PiiFinding

TRACE_COLUMNS: tuple[str, ...] = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId",
    "Links.SpanId", "Links.TraceState", "Links.Attributes", "ProjectId", "VeilBatch",
)  # fmt: skip

LLM_CALL_COLUMNS: tuple[str, ...] = (
    "ProjectId", "Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "Duration", "ServiceName",
    "Environment", "Operation", "Provider", "RequestModel", "ResponseModel", "InputTokens", "OutputTokens",
    "CostUsd", "StatusCode", "ErrorType", "FinishReasons", "TimeToFirstChunk", "UserId", "SessionId", "Tags",
    "VeilBatch",
)  # fmt: skip

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")

INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
# Attribute names of older GenAI semconv versions and of OpenLLMetry, accepted on ingest.
LEGACY_SYSTEM = "gen_ai.system"
LEGACY_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
LEGACY_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
LEGACY_PROMPT = "gen_ai.prompt"
LEGACY_COMPLETION = "gen_ai.completion"
LEGACY_REQUEST_TYPE = "llm.request.type"
LEGACY_ENVIRONMENT = "deployment.environment"
_LEGACY_OPERATIONS = {"completion": "text_completion", "embedding": "embeddings", "chat": "chat"}


# Go's encoding/json escapes these inside strings; pdata's AsString of maps and arrays inherits that.
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

CostFunction = Callable[[str, int, int], "float | None"]
PiiFindingsFunction = Callable[..., Sequence[PiiFinding]]


@dataclass(slots=True)
class FlatBatch:
    """Rows of every table one batch writes, in insert order, plus the records handed to later stages."""

    traces: list[list[Any]] = field(default_factory=list)
    llm_calls: list[list[Any]] = field(default_factory=list)
    pii_findings: list[PiiFinding] = field(default_factory=list)
    guard_decisions: list[GuardDecision] = field(default_factory=list)
    calls: list[GenAICall] = field(default_factory=list)

    def tables(self) -> list[tuple[str, Sequence[str], list[Sequence[Any]]]]:
        """``(table, columns, rows)`` for each table, always in the same order."""
        return [
            ("otel_traces", TRACE_COLUMNS, self.traces),
            ("llm_calls", LLM_CALL_COLUMNS, self.llm_calls),
            (PiiFinding.TABLE, PiiFinding.COLUMNS, [f.as_row() for f in self.pii_findings]),
            (GuardDecision.TABLE, GuardDecision.COLUMNS, [d.as_row() for d in self.guard_decisions]),
        ]


# ---------------------------------------------------------------------------- attribute values


def format_double(value: float) -> str:
    """A double as Go's pdata writes it: ES6 number formatting (``1``, ``0.5``, ``1e-7``, ``1e+21``)."""
    if math.isnan(value) or math.isinf(value):
        return "json: unsupported value: " + (
            "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        )
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e-6 <= magnitude < 1e21:
        text = repr(value)
        if "e" in text:
            text = format(Decimal(text), "f")
        return text[:-2] if text.endswith(".0") else text
    mantissa, _, exponent = repr(value).partition("e")
    mantissa = mantissa[:-2] if mantissa.endswith(".0") else mantissa
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"


def _raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_raw(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    return None


# One encoder for every call: json.dumps with non-default options builds a new JSONEncoder each time.
_GO_JSON_ENCODER = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
)


def _string_array_json(values: Sequence[AnyValue]) -> str | None:
    """``_go_json`` of an array of non-empty strings (tags, finish reasons); None for any other array.

    The common case, read without a oneof dispatch per item and joined from the C string encoder that
    ``_GO_JSON_ENCODER`` uses, so the text is the same; anything else goes through ``_raw``.
    """
    items = [item.string_value for item in values]
    if not items or not all(items):
        return None
    return _go_escape("[" + ",".join(map(encode_basestring, items)) + "]")


def _go_escape(text: str) -> str:
    # translate() is slow even when nothing matches; most texts hold none of these characters.
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        return text.translate(_GO_JSON_ESCAPES)
    return text


def _go_json(value: Any) -> str:
    return _go_escape(_GO_JSON_ENCODER.encode(value))


def as_string(value: AnyValue) -> str:
    """pdata's ``Value.AsString``: the exporter's stringification of one attribute value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return format_double(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        try:
            if kind == "array_value":
                return _string_array_json(value.array_value.values) or _go_json(_raw(value))
            return _go_json(_raw(value))
        except ValueError:  # NaN or infinity inside: Go's json.Marshal fails and pdata returns ""
            return ""
    return ""


def attributes_map(attributes: Iterable[KeyValue]) -> dict[str, str]:
    """Attributes as the ``Map(LowCardinality(String), String)`` the exporter writes (last key wins)."""
    out = {}
    for kv in attributes:
        value = kv.value
        # Most values are non-empty strings: read them without the oneof dispatch (the drain's hot loop).
        # An empty string_value is also what every other kind reads as, so those go through as_string.
        text = value.string_value
        out[kv.key] = text if text else as_string(value)
    return out


# ---------------------------------------------------------------------------- GenAI helpers


def _int(text: str | None) -> int:
    if not text:
        return 0
    try:
        return max(int(float(text)), 0)
    except ValueError:
        return 0


def _float(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        number = float(text)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


def _string_list(text: str | None) -> list[str]:
    """An attribute that may be a string array (JSON after stringification) or a single string."""
    return list(_parse_string_list(text)) if text else []


@functools.lru_cache(maxsize=1024)
def _parse_string_list(text: str) -> tuple[str, ...]:
    # Cached: finish reasons and tags take a handful of distinct values across millions of spans.
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            return (text,)
        if isinstance(items, list):
            return tuple(item if isinstance(item, str) else json.dumps(item) for item in items)
    return (text,)


def message_text(messages_json: str | None) -> str:
    """The text parts of semconv messages (``[{"role", "parts": [{"type": "text", "content"}]}]``).

    Parts of other types are skipped; a message with a plain ``content`` string (older shapes) counts
    as text. Returns "" when the attribute is absent or not in this shape.
    """
    if not messages_json:
        return ""
    try:
        messages = json.loads(messages_json)
    except ValueError:
        return ""
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return ""
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        for part in message.get("parts") or ():
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("content"), str):
                texts.append(part["content"])
    return "\n".join(texts)


def _legacy_indexed(attributes: dict[str, str], prefix: str) -> str:
    """OpenLLMetry's ``gen_ai.prompt.{i}.content`` attributes, joined in index order."""
    found = []
    for key, value in attributes.items():
        if key.startswith(prefix) and key.endswith(".content"):
            index = key[len(prefix) : -len(".content")]
            if index.isdigit():
                found.append((int(index), value))
    return "\n".join(value for _, value in sorted(found))


def _content(attributes: dict[str, str], messages_key: str, veil_key: str, legacy_key: str) -> str:
    return (
        message_text(attributes.get(messages_key))
        or attributes.get(veil_key, "")
        or attributes.get(legacy_key, "")
        or _legacy_indexed(attributes, legacy_key + ".")
    )


def _datetime(unix_ns: int) -> datetime:
    return datetime.fromtimestamp(unix_ns / 1e9, tz=timezone.utc)


# ---------------------------------------------------------------------------- flattening


@dataclass(frozen=True, slots=True)
class _Origin:
    """What every span of one resource and scope shares."""

    project_id: str
    batch: int
    resource: dict[str, str]
    service: str
    environment: str
    scope_name: str
    scope_version: str


class Flattener:
    """Turns decoded requests of one batch into the rows of every table.

    Args:
        cost_usd: ``(model, input_tokens, output_tokens) -> USD or None`` (a ``PriceTable.cost_usd``);
            None leaves every ``CostUsd`` NULL.
        pii_findings: ``veil_collector.scrub.pii_findings_for_span``; None stores no PII findings.
    """

    def __init__(
        self, *, cost_usd: CostFunction | None = None, pii_findings: PiiFindingsFunction | None = None
    ) -> None:
        self._cost_usd = cost_usd
        self._pii_findings = pii_findings

    def flatten(
        self,
        requests: Iterable[tuple[str, ExportTraceServiceRequest]],
        *,
        batch: int,
        out: FlatBatch,
        calls: bool = True,
    ) -> None:
        """Append the rows of ``(project_id, request)`` pairs to ``out``; ``batch`` fills ``VeilBatch``.

        ``calls=False`` leaves ``out.calls`` empty: the :class:`GenAICall` records (with the message texts
        parsed out of their JSON, a fifth of the flatten's CPU) only feed later stages, so a pipeline
        without listeners skips them. The rows of every table are the same either way.
        """
        for project_id, request in requests:
            for resource_spans in request.resource_spans:
                resource = attributes_map(resource_spans.resource.attributes)
                environment = resource.get(semconv.DEPLOYMENT_ENVIRONMENT_NAME) or resource.get(
                    LEGACY_ENVIRONMENT, ""
                )
                for scope_spans in resource_spans.scope_spans:
                    origin = _Origin(
                        project_id=project_id,
                        batch=batch,
                        resource=resource,
                        service=resource.get(semconv.SERVICE_NAME, ""),
                        environment=environment,
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                    )
                    for span in scope_spans.spans:
                        self._span(span, origin, out, calls)

    def _span(self, span: Span, origin: _Origin, out: FlatBatch, calls: bool) -> None:
        trace_id = span.trace_id.hex()
        span_id = span.span_id.hex()
        start = span.start_time_unix_nano
        duration = max(span.end_time_unix_nano - start, 0)
        attributes = attributes_map(span.attributes)
        status = STATUS_CODES[span.status.code] if span.status.code < len(STATUS_CODES) else "Unset"
        events = span.events
        links = span.links
        # Nearly every span has neither: skip building six empty lists through the upb wrappers.
        if events:
            event_columns = (
                [event.time_unix_nano for event in events],
                [event.name for event in events],
                [attributes_map(event.attributes) for event in events],
            )
        else:
            event_columns = ([], [], [])
        if links:
            link_columns = (
                [link.trace_id.hex() for link in links],
                [link.span_id.hex() for link in links],
                [link.trace_state for link in links],
                [attributes_map(link.attributes) for link in links],
            )
        else:
            link_columns = ([], [], [], [])
        out.traces.append(
            [
                start,
                trace_id,
                span_id,
                span.parent_span_id.hex(),
                span.trace_state,
                span.name,
                SPAN_KINDS[span.kind] if span.kind < len(SPAN_KINDS) else "Unspecified",
                origin.service,
                origin.resource,
                origin.scope_name,
                origin.scope_version,
                attributes,
                duration,
                status,
                span.status.message,
                *event_columns,
                *link_columns,
                origin.project_id,
                origin.batch,
            ]
        )
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME, "")
        if operation in INFERENCE_OPERATIONS or (not operation and LEGACY_SYSTEM in attributes):
            self._llm_call(span, origin, attributes, status, out, calls)
        for event in events:
            if event.name == semconv.VEIL_GUARD_EVENT:
                out.guard_decisions.append(_guard_decision(event, span, origin, attributes))
        if self._pii_findings is not None:
            out.pii_findings.extend(
                self._pii_findings(
                    project_id=origin.project_id,
                    timestamp=_datetime(start),
                    trace_id=trace_id,
                    span_id=span_id,
                    service_name=origin.service,
                    attributes=attributes,
                    veil_batch=origin.batch,
                )
            )

    def _llm_call(
        self,
        span: Span,
        origin: _Origin,
        attributes: dict[str, str],
        status: str,
        out: FlatBatch,
        calls: bool,
    ) -> None:
        get = attributes.get
        operation = get(semconv.GEN_AI_OPERATION_NAME) or _LEGACY_OPERATIONS.get(
            get(LEGACY_REQUEST_TYPE, ""), "chat"
        )
        request_model = get(semconv.GEN_AI_REQUEST_MODEL, "")
        response_model = get(semconv.GEN_AI_RESPONSE_MODEL, "")
        input_tokens = _int(get(semconv.GEN_AI_USAGE_INPUT_TOKENS) or get(LEGACY_PROMPT_TOKENS))
        output_tokens = _int(get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS) or get(LEGACY_COMPLETION_TOKENS))
        cost = None
        if self._cost_usd is not None:
            # The response model is the more precise (dated) name; fall back to the requested one.
            for model in dict.fromkeys(m for m in (response_model, request_model) if m):
                cost = self._cost_usd(model, input_tokens, output_tokens)
                if cost is not None:
                    break
        user_id = get(semconv.USER_ID, "")
        session_id = get(semconv.SESSION_ID) or get(semconv.GEN_AI_CONVERSATION_ID, "")
        start = span.start_time_unix_nano
        trace_id = span.trace_id.hex()
        span_id = span.span_id.hex()
        out.llm_calls.append(
            [
                origin.project_id,
                start,
                trace_id,
                span_id,
                span.parent_span_id.hex(),
                span.name,
                max(span.end_time_unix_nano - start, 0),
                origin.service,
                origin.environment,
                operation,
                get(semconv.GEN_AI_PROVIDER_NAME) or get(LEGACY_SYSTEM, ""),
                request_model,
                response_model,
                input_tokens,
                output_tokens,
                cost,
                status,
                get(semconv.ERROR_TYPE, ""),
                _string_list(get(semconv.GEN_AI_RESPONSE_FINISH_REASONS)),
                _float(get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)),
                user_id,
                session_id,
                _string_list(get(semconv.VEIL_TAGS)),
                origin.batch,
            ]
        )
        if not calls:
            return
        out.calls.append(
            GenAICall(
                project_id=origin.project_id,
                trace_id=trace_id,
                span_id=span_id,
                timestamp=_datetime(start),
                service_name=origin.service,
                environment=origin.environment,
                request_model=request_model or response_model,
                input_text=_content(
                    attributes, semconv.GEN_AI_INPUT_MESSAGES, semconv.VEIL_INPUT, LEGACY_PROMPT
                ),
                output_text=_content(
                    attributes, semconv.GEN_AI_OUTPUT_MESSAGES, semconv.VEIL_OUTPUT, LEGACY_COMPLETION
                ),
                user_id=user_id,
                session_id=session_id,
            )
        )


def _guard_decision(
    event: Span.Event, span: Span, origin: _Origin, attributes: dict[str, str]
) -> GuardDecision:
    """A ``veil.guard`` span event (``veil.guard.check/decision/score/target``) as a stored decision."""
    event_attributes = attributes_map(event.attributes)
    return GuardDecision(
        project_id=origin.project_id,
        timestamp=_datetime(event.time_unix_nano),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        service_name=origin.service,
        environment=origin.environment,
        request_model=attributes.get(semconv.GEN_AI_REQUEST_MODEL, ""),
        target=event_attributes.get(semconv.VEIL_GUARD_TARGET, ""),
        check=event_attributes.get(semconv.VEIL_GUARD_CHECK, ""),
        decision=event_attributes.get(semconv.VEIL_GUARD_DECISION, ""),
        score=_float(event_attributes.get(semconv.VEIL_GUARD_SCORE)),
        source="sdk",
        veil_batch=origin.batch,
    )
