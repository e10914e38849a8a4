"""OTLP/HTTP trace export with a direct protobuf encoder and a cheap gzip level.

The stock `OTLPSpanExporter` builds one upb message object per span, attribute and value in Python and
then gzips at level 9; on the export thread that was most of the CPU Veil spent per span. `encode_spans`
writes the `ExportTraceServiceRequest` wire format straight from the `ReadableSpan`s instead (same fields,
same grouping by resource and scope as `opentelemetry.exporter.otlp.proto.common.trace_encoder`, checked
against it in the tests), and `VeilOTLPExporter` compresses at gzip level 1, which on span batches costs a
fraction of level 9's CPU for a payload within a few percent of its size. Sending, retries, backoff and
`Retry-After` stay the OTel exporter's.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

_logger = logging.getLogger(__name__)

GZIP_LEVEL = 1
"""Level 1 keeps most of the size win of gzip on span JSON and text at a small share of level 9's CPU."""

# SpanFlags: the parent's is_remote is known (always, here) and whether it is set.
# Span.flags is field 16 (a two-byte tag), Link.flags field 6; both fixed32.
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
_LINK_FLAGS_LOCAL = b"\x35" + struct.pack("<I", 0x100)
_LINK_FLAGS_REMOTE = b"\x35" + struct.pack("<I", 0x300)
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_CACHE_LIMIT = 4096


def _varint(value: int) -> bytes:
    """Unsigned base-128 varint; negative int64 values are taken as their 64-bit two's complement."""
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int64(value: int) -> bytes:
    """An int64 varint; out of range raises, like the upb encoder (the attribute is then left out)."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{value} is out of int64 range")
    return _varint(value)


# Lengths below 128 are one byte: a table avoids a function call for nearly every field.
_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _utf8(text: str) -> bytes:
    # Lone surrogates cannot be UTF-8; replace them rather than lose the whole batch.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message for an attribute value (the types OTel's encoder accepts)."""
    if value is None:
        return b""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", _utf8(value))
    if isinstance(value, int):
        return b"\x18" + _int64(int(value))
    if isinstance(value, float):
        return b"\x21" + _pack_double(float(value))
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join([_key_value(b"\x0a", str(k), v) for k, v in value.items()]))
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


_keys: dict[str, bytes] = {}
_pairs: dict[tuple[bytes, str, type, Any], bytes] = {}
_CACHEABLE = frozenset({str, bool, int, float})
_CACHED_STRING_MAX = 128


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    """A `KeyValue` field under `tag`; encoded keys are cached (the same few names recur in every span)."""
    encoded_key = _keys.get(key)
    if encoded_key is None:
        if len(_keys) >= _CACHE_LIMIT:
            _keys.clear()
        encoded_key = _keys[key] = _field(b"\x0a", _utf8(key))
    return _field(tag, encoded_key + _field(b"\x12", _any_value(value)))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Repeated `KeyValue` fields; a value of an invalid type is logged and left out, like OTel's encoder.

    Most attributes repeat from span to span (operation, provider, model, kind, temperature, often the
    token counts): a scalar pair, with a string value up to `_CACHED_STRING_MAX` characters, is encoded
    once and then looked up.
    """
    if not attributes:
        return []
    out = []
    pairs = _pairs
    for key, value in attributes.items():
        cls = type(value)
        cacheable = cls in _CACHEABLE and (cls is not str or len(value) <= _CACHED_STRING_MAX)
        if cacheable:
            # The type is part of the key: True, 1 and 1.0 are equal but encode differently.
            cache_key = (tag, key, cls, value)
            encoded = pairs.get(cache_key)
            if encoded is not None:
                out.append(encoded)
                continue
        try:
            encoded = _key_value(tag, key, value)
        except Exception as error:
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        if cacheable:
            if len(pairs) >= _CACHE_LIMIT:
                pairs.clear()
            pairs[cache_key] = encoded
        out.append(encoded)
    return out


def _trace_state(context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _field(b"\x1a", _utf8(",".join(f"{key}={value}" for key, value in state.items())))


def _span(span: ReadableSpan) -> bytes:
    """One `Span` message (without its field tag)."""
    context = span.get_span_context()
    parent = span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(context),
    ]
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_field(b"\x2a", _utf8(span.name)))
    parts.append(b"\x30" + _SMALL[span.kind.value + 1])
    parts.append(b"\x39" + _pack_fixed64(span.start_time or 0))
    parts.append(b"\x41" + _pack_fixed64(span.end_time or 0))
    parts.extend(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        event_parts = [b"\x09" + _pack_fixed64(event.timestamp), _field(b"\x12", _utf8(event.name))]
        event_parts.extend(_attributes(b"\x1a", event.attributes))
        if event.dropped_attributes:
            event_parts.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(event_parts)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        link_parts = [
            b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + link.context.span_id.to_bytes(8, "big"),
        ]
        link_parts.extend(_attributes(b"\x22", link.attributes))
        if link.dropped_attributes:
            link_parts.append(b"\x28" + _varint(link.dropped_attributes))
        link_parts.append(_LINK_FLAGS_REMOTE if link.context.is_remote else _LINK_FLAGS_LOCAL)
        parts.append(_field(b"\x6a", b"".join(link_parts)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    code = status.status_code.value
    status_body = (_field(b"\x12", _utf8(status.description)) if status.description else b"") + (
        b"\x18" + _SMALL[code] if code else b""
    )
    parts.append(_field(b"\x7a", status_body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    return b"".join(_attributes(b"\x0a", resource.attributes))


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = [_field(b"\x0a", _utf8(scope.name))]
    if scope.version:
        parts.append(_field(b"\x12", _utf8(scope.version)))
    parts.extend(_attributes(b"\x1a", scope.attributes))
    return b"".join(parts)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` for `spans`, grouped by resource, then by scope."""
    # Grouped by identity first: nearly every span of a batch shares one resource and one scope object.
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
    field = _field
    for span in spans:
        resource = span.resource
        scopes = groups.get(id(resource))
        if scopes is None:
            scopes = groups[id(resource)] = (resource, {})
        scope = span.instrumentation_scope or None
        entry = scopes[1].get(id(scope))
        if entry is None:
            entry = scopes[1][id(scope)] = (scope, [])
        entry[1].append(field(b"\x12", _span(span)))
    out = []
    for resource, scopes in groups.values():
        body = [field(b"\x0a", _resource(resource))]
        for scope, encoded in scopes.values():
            scope_body = [field(b"\x0a", _scope(scope)), *encoded]
            if scope is not None and scope.schema_url:
                scope_body.append(field(b"\x1a", _utf8(scope.schema_url)))
            body.append(field(b"\x12", b"".join(scope_body)))
        if resource.schema_url:
            body.append(field(b"\x1a", _utf8(resource.schema_url)))
        out.append(field(b"\x0a", b"".join(body)))
    return b"".join(out)


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """`data` as one gzip member (what `Content-Encoding: gzip` means), at `level`."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


class VeilOTLPExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` encoding with `encode_spans`, gzip at `GZIP_LEVEL`, sent by OTel's client.

    Relies on the exporter's `_client` (opentelemetry-exporter-otlp-proto-http 1.45+) for sending, retries,
    backoff and `Retry-After`; `otlp_exporter` picks OTel's own exporter where that is missing.

    Args:
        endpoint: The full `/v1/traces` URL.
        headers: Extra request headers (authorization).
        timeout: Seconds per export, retries included.
        max_request_size: Largest uncompressed body sent (OTel's default, 64 MiB, when None); a larger
            batch is split in halves until each part fits, so a batch of big spans is not lost whole.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        *,
        max_request_size: int | None = None,
    ) -> None:
        # The client is told "no compression" so it sends our gzip body as is; the header says what it is.
        super().__init__(
            endpoint=endpoint,
            headers={**(headers or {}), "Content-Encoding": "gzip"},
            timeout=timeout,
            compression=Compression.NoCompression,
            # Passed only when set: exporters older than the `_client` design do not take it either.
            **({} if max_request_size is None else {"max_request_size": max_request_size}),
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encodes, compresses and posts one batch (in parts when it is too large).

        FAILURE when it cannot be encoded, a single span is over the size limit, or the collector refuses
        any part (the parts sent before still count as delivered there).
        """
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans)
        except Exception as error:
            _logger.error("Failed to encode span batch: %s", error)
            return SpanExportResult.FAILURE
        if 0 < self._max_request_size < len(body):
            if len(spans) > 1:
                half = len(spans) // 2
                results = (self.export(spans[:half]), self.export(spans[half:]))
                ok = all(result is SpanExportResult.SUCCESS for result in results)
                return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
            _logger.warning(
                "Dropping a span of %d serialized bytes: over max_request_size (%d bytes).",
                len(body),
                self._max_request_size,
            )
            return SpanExportResult.FAILURE
        result = self._client.export(gzip_bytes(body))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE


def otlp_exporter(endpoint: str, headers: Mapping[str, str], timeout: float | None) -> SpanExporter:
    """`VeilOTLPExporter`, or OTel's `OTLPSpanExporter` (gzip) where the installed one is too old for it."""
    exporter = VeilOTLPExporter(endpoint, headers, timeout)
    if hasattr(exporter, "_client"):
        return exporter
    exporter.shutdown()
    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout, compression=Compression.Gzip)
