"""Request body decompression with the size limit enforced while inflating (gzip bombs stop early)."""

from __future__ import annotations

import zlib

from veil_collector.receiver.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

_CHUNK = 1024 * 1024


def decompress(body: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """The request body after ``Content-Encoding`` is undone, at most ``limit`` bytes.

    Args:
        body: the raw body as received.
        content_encoding: the header value; None, ``identity`` or ``gzip``.
        limit: the largest decompressed size accepted.

    Raises:
        PayloadTooLarge: the body, or what it inflates to, exceeds ``limit``; inflation stops as soon
            as the limit is passed, so a small gzip bomb costs at most ``limit`` bytes of memory.
        UnsupportedMediaType: a compression other than gzip.
        MalformedRequest: the gzip stream is corrupt or truncated.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body of {len(body)} bytes exceeds the limit of {limit} bytes")
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {content_encoding!r}; use gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = body
    try:
        while True:
            out += inflater.decompress(pending, min(_CHUNK, limit + 1 - len(out)))
            if len(out) > limit:
                raise PayloadTooLarge(f"request body inflates beyond the limit of {limit} bytes")
            pending = inflater.unconsumed_tail
            if not pending:
                break
        out += inflater.flush()
    except zlib.error as exc:
        raise MalformedRequest(f"invalid gzip body: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"request body inflates beyond the limit of {limit} bytes")
    if not inflater.eof:
        raise MalformedRequest("truncated gzip body")
    return bytes(out)
