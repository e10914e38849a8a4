"""``POST /v1/traces``: OTLP/HTTP trace ingest into the durable spool.

The route does auth -> limits -> decode -> validate -> fast scrub -> ``spool.append`` -> status code,
and answers only after the spool has fsynced the request. Errors carry a ``google.rpc.Status`` body in
the request's encoding (JSON when the encoding itself is unsupported); throttling is 503 with
``Retry-After``, the one status that every OTLP exporter retries.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter

from veil_collector.api.deps import Unauthorized, authorize
from veil_collector.receiver import (
    Encoding,
    PayloadTooLarge,
    ReceiverError,
    encode_export_response,
    encode_status,
    negotiate_encoding,
)
from veil_collector.spool import SpoolFailed, SpoolFull

router = APIRouter(tags=["otlp"])

RETRY_AFTER_S = 2
_GRPC_UNAUTHENTICATED = 16
_GRPC_UNAVAILABLE = 14

SPANS_RECEIVED = Counter("veil_spans_received_total", "Spans accepted into the spool", ["encoding"])
SPANS_REJECTED = Counter(
    "veil_spans_rejected_total", "Spans refused individually or with their request", ["reason"]
)
REQUESTS_REJECTED = Counter(
    "veil_otlp_requests_rejected_total", "OTLP requests refused as a whole", ["reason"]
)


def _error(
    encoding: Encoding,
    status: int,
    code: int,
    message: str,
    reason: str,
    headers: dict[str, str] | None = None,
) -> Response:
    REQUESTS_REJECTED.labels(reason).inc()
    return Response(
        encode_status(encoding, code=code, message=message),
        status_code=status,
        media_type=encoding.media_type,
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(chunks)


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON, optionally gzip)",
    responses={
        400: {"description": "Malformed body (google.rpc.Status)"},
        401: {"description": "Missing or unknown API key"},
        413: {"description": "Body over the size limit, before or after decompression"},
        415: {"description": "Unsupported Content-Type or Content-Encoding"},
        503: {"description": "Spool full or failed; retry after Retry-After seconds"},
    },
)
async def export_traces(request: Request) -> Response:
    state = request.app.state
    settings = state.settings
    try:
        encoding = negotiate_encoding(request.headers.get("content-type"))
    except ReceiverError as exc:
        return _error(Encoding.JSON, exc.status_code, exc.grpc_code, str(exc), "unsupported_media_type")
    try:
        project_id = await authorize(request)
    except Unauthorized as exc:
        return _error(
            encoding, 401, _GRPC_UNAUTHENTICATED, str(exc), "unauthorized", {"WWW-Authenticate": "Bearer"}
        )
    try:
        raw = await _read_body(request, settings.max_request_bytes)
        prepared = await state.preparer.prepare(
            raw, request.headers.get("content-encoding"), encoding, settings.max_request_bytes, project_id
        )
    except ReceiverError as exc:
        reason = {400: "malformed", 413: "too_large", 415: "unsupported_media_type"}[exc.status_code]
        return _error(encoding, exc.status_code, exc.grpc_code, str(exc), reason)
    result = prepared.result
    if result.rejected:
        SPANS_REJECTED.labels("invalid_id").inc(result.rejected)
    if result.accepted:
        try:
            # The rows the preparer encoded ride along in memory to the drain (spool attachments).
            await asyncio.wrap_future(state.spool.append(project_id, prepared.body, prepared.rows))
        except SpoolFull as exc:
            SPANS_REJECTED.labels("spool_full").inc(result.accepted)
            return _error(
                encoding,
                503,
                _GRPC_UNAVAILABLE,
                f"collector is busy ({exc}); retry later",
                "spool_full",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        except SpoolFailed as exc:
            SPANS_REJECTED.labels("spool_failed").inc(result.accepted)
            return _error(encoding, 503, _GRPC_UNAVAILABLE, str(exc), "spool_failed", {"Retry-After": "30"})
        SPANS_RECEIVED.labels(encoding.name.lower()).inc(result.accepted)
    return Response(
        encode_export_response(encoding, rejected_spans=result.rejected, error_message=result.message),
        media_type=encoding.media_type,
    )
