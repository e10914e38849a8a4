"""OTLP/HTTP encodings: protobuf and the OTLP flavour of proto3 JSON, requests in, responses out.

OTLP JSON differs from proto3 JSON in that trace and span ids are case-insensitive hex strings, not
base64; enums are integers; 64-bit integers may be strings or numbers. Hex ids are converted to bytes
before ``json_format`` parses the message. An id that is not valid hex becomes empty bytes, so the span
is rejected individually by ``validate`` (partial success) rather than failing the whole request.
"""

from __future__ import annotations

import base64
import enum
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from veil_collector.receiver.errors import MalformedRequest, UnsupportedMediaType


class Encoding(enum.Enum):
    """The two OTLP/HTTP encodings, by media type."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"

    @property
    def media_type(self) -> str:
        return self.value


def negotiate_encoding(content_type: str | None) -> Encoding:
    """The encoding named by a ``Content-Type`` header (parameters such as charset are ignored).

    Raises:
        UnsupportedMediaType: anything but ``application/x-protobuf`` or ``application/json``.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    for encoding in Encoding:
        if media_type == encoding.value:
            return encoding
    raise UnsupportedMediaType(
        f"unsupported Content-Type {content_type!r}; OTLP/HTTP accepts application/x-protobuf or "
        "application/json"
    )


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Parse an ``ExportTraceServiceRequest``.

    Raises:
        MalformedRequest: the body is not a valid message in ``encoding``.
    """
    request = ExportTraceServiceRequest()
    if encoding is Encoding.PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise MalformedRequest(f"invalid protobuf ExportTraceServiceRequest: {exc}") from exc
        return request
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedRequest("an OTLP JSON body must be an object with resourceSpans")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise MalformedRequest(f"invalid OTLP JSON: {exc}") from exc
    return request


# camelCase is what OTLP specifies; the snake_case spellings are accepted as json_format does.
_LINK_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")
_SPAN_ID_KEYS = (*_LINK_ID_KEYS, "parentSpanId", "parent_span_id")


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    for resource_spans in _objects(document.get("resourceSpans", document.get("resource_spans"))):
        for scope_spans in _objects(resource_spans.get("scopeSpans", resource_spans.get("scope_spans"))):
            for span in _objects(scope_spans.get("spans")):
                _convert_ids(
                    span, ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
                )
                for link in _objects(span.get("links")):
                    _convert_ids(link, ("traceId", "trace_id", "spanId", "span_id"))


def _objects(value: Any) -> list[dict[str, Any]]:
    # Shape errors are left to json_format, which reports them with field names.
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _convert_ids(message: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = message.get(key)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""  # rejected per span by validate, with a message naming the id
            message[key] = base64.b64encode(raw).decode("ascii")


def encode_export_response(encoding: Encoding, *, rejected_spans: int = 0, error_message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``; ``partial_success`` is set only when something is reported."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if encoding is Encoding.PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode("utf-8")


def encode_status(encoding: Encoding, *, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` error body in the request's encoding."""
    status = status_pb2.Status(code=code, message=message)
    if encoding is Encoding.PROTOBUF:
        return status.SerializeToString()
    return json_format.MessageToJson(status, indent=None).encode("utf-8")
