"""The JSON form of findings on a span (``veil.pii.findings`` / ``veil.collector.pii.findings``).

A list of ``{"entity_type": str, "count": int, "detector": str, "location": str}`` objects, one per
(entity type, detector, location), never the values. ``location`` is ``input``, ``output`` or
``attribute``; :func:`location_of` decides it from the attribute name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from veil import semconv as sc

__all__ = ["FindingKey", "add_findings", "decode_findings", "encode_findings", "location_of"]

FindingKey = tuple[str, str, str]  # (entity_type, detector, location)

_INPUT = frozenset(
    {sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_SYSTEM_INSTRUCTIONS, sc.VEIL_INPUT, sc.GEN_AI_TOOL_CALL_ARGUMENTS}
)
_OUTPUT = frozenset({sc.GEN_AI_OUTPUT_MESSAGES, sc.VEIL_OUTPUT, sc.GEN_AI_TOOL_CALL_RESULT})


def location_of(attribute: str) -> str:
    """Return ``"input"``, ``"output"`` or ``"attribute"`` for a span attribute name."""
    if attribute in _INPUT:
        return "input"
    if attribute in _OUTPUT:
        return "output"
    return "attribute"


def encode_findings(counts: Counter[FindingKey]) -> str:
    """Serialise counts keyed by (entity_type, detector, location), in a stable order."""
    return json.dumps(
        [
            {"entity_type": t, "count": n, "detector": d, "location": loc}
            for (t, d, loc), n in sorted(counts.items())
            if n > 0
        ],
        separators=(",", ":"),
    )


def decode_findings(text: str | None) -> Counter[FindingKey]:
    """Parse the JSON form back into counts; malformed entries are skipped (the text comes off the wire)."""
    counts: Counter[FindingKey] = Counter()
    if not text:
        return counts
    try:
        items = json.loads(text)
    except ValueError:
        return counts
    if not isinstance(items, list):
        return counts
    for item in items:
        if not isinstance(item, dict):
            continue
        entity_type, count = item.get("entity_type"), item.get("count")
        detector, location = item.get("detector", "pattern"), item.get("location", "attribute")
        if (
            isinstance(entity_type, str)
            and isinstance(count, int)
            and not isinstance(count, bool)
            and count > 0
        ):
            counts[(entity_type, str(detector), str(location))] += count
    return counts


def add_findings(
    counts: Counter[FindingKey], findings: Iterable[tuple[str, int, str]], location: str
) -> None:
    """Add ``(entity_type, count, detector)`` findings of one location to ``counts``."""
    for entity_type, count, detector in findings:
        counts[(entity_type, detector, location)] += count
