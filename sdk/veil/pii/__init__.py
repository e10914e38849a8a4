"""PII detection and redaction for prompts, responses and span attributes.

``veil.pii`` is pure Python: importing it loads no heavy dependency. Pattern recognizers (e-mail,
phone, card, IBAN, IP, SSN, crypto wallets, MAC, credential URLs, API keys, JWTs, private keys,
keyword-anchored secrets) are always available; the NER tier (PERSON, LOCATION, NRP) needs the
``presidio`` extra and is opt-in (``ScrubConfig(ner=True)``).

Example::

    from veil.pii import scrub
    result = scrub({"messages": [{"role": "user", "content": "mail me at jane@example.com"}]})
    result.value    # {"messages": [{"role": "user", "content": "mail me at [EMAIL_1]"}]}
    result.findings # (Finding(entity_type="EMAIL_ADDRESS", count=1, detector="pattern"),)

:class:`Scrubber` is what the SDK's export path and the collector use; :func:`scrub` is a convenience
over a shared default scrubber.
"""

from __future__ import annotations

import threading
from typing import Any

from veil.pii.entities import DEFAULT_NER_ENTITIES, NER_ENTITIES, PATTERN_ENTITIES, EntitySpan
from veil.pii.ner import NerUnavailableError
from veil.pii.operators import Operator
from veil.pii.scrubber import Finding, Scrubber, ScrubConfig, ScrubResult

__all__ = [
    "DEFAULT_NER_ENTITIES",
    "NER_ENTITIES",
    "PATTERN_ENTITIES",
    "EntitySpan",
    "Finding",
    "NerUnavailableError",
    "Operator",
    "ScrubConfig",
    "ScrubResult",
    "Scrubber",
    "scrub",
]

_default: Scrubber | None = None
_default_lock = threading.Lock()


def scrub(value: Any, *, trace_id: str | None = None, config: ScrubConfig | None = None) -> ScrubResult:
    """Scrub a string or nested structure with patterns only (or with ``config`` when given).

    Args:
        value: A string, bytes, number, or nesting of dicts/lists/tuples of those.
        trace_id: Placeholders are consistent across calls with the same trace id.
        config: Settings for a one-off scrubber; ``None`` uses the shared default scrubber.

    Returns:
        The scrubbed value (same shape) and the findings (types and counts, never values).
    """
    if config is not None:
        return Scrubber(config).scrub(value, trace_id=trace_id)
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Scrubber()
    return _default.scrub(value, trace_id=trace_id)
