"""Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

The signed content is ``"{id}.{timestamp}.{body}"``; the signature is ``v1,`` followed by the base64 of its
HMAC-SHA256 under the key that the ``whsec_`` secret encodes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from veil_collector.alert.rules import secret_key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt.

    Args:
        secret: a ``whsec_`` secret.
        message_id: the ``webhook-id`` (must not contain ``.``).
        timestamp: the ``webhook-timestamp`` of this attempt, in Unix seconds.
        body: the exact request body.

    Raises:
        ValueError: the secret is malformed or the id contains ``.``.
    """
    if "." in message_id:
        raise ValueError(f"a webhook-id must not contain '.': {message_id!r}")
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secret: str | None, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (no ``webhook-signature`` when there is no secret)."""
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign(secret, message_id, timestamp, body)
    return headers
