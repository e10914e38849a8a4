"""``pii_findings`` rows from a stored span's attributes (called by the flattener in the drain)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from veil import semconv as sc
from veil.pii.findings import decode_findings
from veil_collector.records import PiiFinding

__all__ = ["pii_findings_for_span"]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def pii_findings_for_span(
    *,
    project_id: str,
    timestamp: datetime,
    trace_id: str,
    span_id: str,
    service_name: str,
    attributes: Mapping[str, Any],
    veil_batch: int = 0,
) -> list[PiiFinding]:
    """Return one :class:`PiiFinding` per (entity type, detector, location, source) recorded on a span.

    Args:
        project_id, timestamp, trace_id, span_id, service_name: Copied onto every row.
        attributes: The span's attributes (protobuf values already turned into strings, or Python values).
        veil_batch: The drained spool batch, for idempotent replays.

    Returns:
        Rows with source ``"sdk"`` from ``veil.pii.findings`` and ``"server"`` from
        ``veil.collector.pii.findings``. ``SdkScrubbed`` mirrors ``veil.pii.scrubbed``; every server
        finding is ``SdkMissed`` (the SDK, if it ran, did not replace that entity).
    """
    found = (
        (attributes.get(sc.VEIL_PII_FINDINGS), "sdk"),
        (attributes.get(sc.VEIL_COLLECTOR_PII_FINDINGS), "server"),
    )
    if not found[0][0] and not found[1][0]:
        return []  # most spans: no need to decode anything (this runs for every span on ingest)
    sdk_scrubbed = _truthy(attributes.get(sc.VEIL_PII_SCRUBBED, False))
    rows: list[PiiFinding] = []
    for raw, source in found:
        for (entity_type, detector, location), count in sorted(decode_findings(raw).items()):
            rows.append(
                PiiFinding(
                    project_id=project_id,
                    timestamp=timestamp,
                    trace_id=trace_id,
                    span_id=span_id,
                    service_name=service_name,
                    entity_type=entity_type,
                    count=count,
                    detector=detector,
                    location=location,
                    source=source,
                    sdk_scrubbed=sdk_scrubbed,
                    sdk_missed=source == "server",
                    veil_batch=veil_batch,
                )
            )
    return rows
