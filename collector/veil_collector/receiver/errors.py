"""Errors the receiver raises for requests it refuses as a whole, each with its HTTP status."""

from __future__ import annotations


class ReceiverError(ValueError):
    """A request refused as a whole; ``status_code`` is the HTTP answer, ``grpc_code`` the Status code."""

    status_code = 400
    grpc_code = 3  # INVALID_ARGUMENT


class MalformedRequest(ReceiverError):
    """The body cannot be decoded (400, not retryable)."""


class PayloadTooLarge(ReceiverError):
    """The body exceeds the size limit, before or after decompression (413)."""

    status_code = 413
    grpc_code = 8  # RESOURCE_EXHAUSTED


class UnsupportedMediaType(ReceiverError):
    """Neither protobuf nor JSON, or a compression other than gzip (415)."""

    status_code = 415
