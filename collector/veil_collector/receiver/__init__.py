"""OTLP/HTTP trace receiver: body limits, decoding, per-span validation and response encoding."""

from __future__ import annotations

from veil_collector.receiver.codec import (
    Encoding,
    decode_request,
    encode_export_response,
    encode_status,
    negotiate_encoding,
)
from veil_collector.receiver.errors import (
    MalformedRequest,
    PayloadTooLarge,
    ReceiverError,
    UnsupportedMediaType,
)
from veil_collector.receiver.limits import decompress
from veil_collector.receiver.prepare import PreparedRequest, RequestPreparer, prepare
from veil_collector.receiver.validate import ValidationResult, drop_invalid_spans

__all__ = [
    "Encoding",
    "MalformedRequest",
    "PayloadTooLarge",
    "PreparedRequest",
    "ReceiverError",
    "RequestPreparer",
    "UnsupportedMediaType",
    "ValidationResult",
    "decode_request",
    "decompress",
    "drop_invalid_spans",
    "encode_export_response",
    "encode_status",
    "negotiate_encoding",
    "prepare",
]
