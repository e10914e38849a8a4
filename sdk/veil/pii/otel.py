"""The SDK's span scrubber: the ``SpanScrubber`` hook of ``veil._export.ScrubbingSpanExporter``.

Runs on the export thread, one batch at a time. Every string attribute value (and every string in a
string array) of each span and of its events is scrubbed; placeholders are consistent per trace id.
The status description is scrubbed too (OTel's SDK writes an exception's message there).
Each returned span is a new ``ReadableSpan`` (the originals are not mutated) with
``veil.pii.scrubbed = True`` and, when anything was found, ``veil.pii.findings`` (JSON, see
:mod:`veil.pii.findings`). NER runs only when the ``presidio`` extra is installed and enabled
(``VEIL_PII_NER=1`` or ``ner=True``); it then sees the whole batch in one ``nlp.pipe`` call.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status

from veil import semconv as sc
from veil._export import with_content
from veil.pii.findings import FindingKey, encode_findings, location_of
from veil.pii.ner import ner_importable
from veil.pii.scrubber import Scrubber, ScrubConfig, ScrubResult

__all__ = ["NER_ENV", "OtelSpanScrubber", "default_span_scrubber"]

logger = logging.getLogger("veil.internal")

NER_ENV = "VEIL_PII_NER"
_OWN_KEYS = frozenset({sc.VEIL_PII_SCRUBBED, sc.VEIL_PII_FINDINGS, sc.VEIL_COLLECTOR_PII_FINDINGS})
_SCALARS = frozenset({bool, int, float})  # the other attribute value types: never scrubbed


def default_span_scrubber(**options: Any) -> OtelSpanScrubber:
    """Build the SDK's span scrubber.

    Args:
        **options: ``ScrubConfig`` fields. ``ner`` defaults to ``VEIL_PII_NER`` (``1``/``true``) and is
            turned off, with a warning, when the ``presidio`` extra is not installed.

    Returns:
        An object with ``scrub(spans) -> spans``.
    """
    if "ner" not in options:
        options["ner"] = os.environ.get(NER_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if options["ner"] and not ner_importable():
        logger.warning("PII NER requested but the 'presidio' extra is not installed; using patterns only")
        options["ner"] = False
    return OtelSpanScrubber(Scrubber(ScrubConfig(**options)))


class OtelSpanScrubber:
    """Scrubs batches of finished spans with a :class:`~veil.pii.Scrubber`."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber

    def scrub(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        """Return scrubbed copies of ``spans``, in order."""
        # One scrub call per batch: NER (when on) batches across every span of the export batch.
        values: list[Any] = []
        trace_ids: list[str | None] = []
        # Per span: where its values start and their attribute keys, then the same for each event. A
        # span's values are consecutive, so no (key, index) pair is made per attribute.
        # Last, the index of the status description (OTel's SDK puts an exception's message there), or -1.
        layout: list[tuple[int, list[str], list[tuple[int, list[str]]], int]] = []
        for span in spans:
            trace_id = format(span.context.trace_id, "032x") if span.context is not None else None
            start = len(values)
            keys = _collect(span.attributes, values, trace_ids, trace_id)
            event_layout = [
                (len(values), _collect(event.attributes, values, trace_ids, trace_id))
                for event in span.events
            ]
            status_index = -1
            description = span.status.description
            if type(description) is str and description:
                status_index = len(values)
                values.append(description)
                trace_ids.append(trace_id)
            layout.append((start, keys, event_layout, status_index))
        # Only the changed values come back (most attributes hold no PII): the rest stay as they are.
        changed = self.scrubber.scrub_changed(values, trace_ids=trace_ids) if values else {}

        out: list[ReadableSpan] = []
        # The changed indices in order: each span visits only its own, not every one of its keys.
        changed_at = sorted(changed) if changed else []
        n_changed = len(changed_at)
        at = 0
        for span, (start, keys, event_layout, status_index) in zip(spans, layout, strict=True):
            counts: dict[FindingKey, int] = {}  # a plain dict: a Counter costs a microsecond to make
            attributes = dict(span.attributes or {})
            while at < n_changed and changed_at[at] < start:
                at += 1  # an event's or the status description's (handled below)
            end = start + len(keys)
            while at < n_changed and (index := changed_at[at]) < end:
                at += 1
                key = keys[index - start]
                result = changed[index]
                attributes[key] = result.value
                _add_findings(counts, result.findings, location_of(key))
            # Events are copied only when one of theirs changed (most spans have no event findings).
            events = span.events
            if (changed and event_layout) and any(
                index in changed
                for first, event_keys in event_layout
                for index in range(first, first + len(event_keys))
            ):
                events = [
                    _scrubbed_event(event, first, event_keys, changed, counts)
                    for event, (first, event_keys) in zip(span.events, event_layout, strict=True)
                ]
            status = None
            status_result = changed.get(status_index) if changed and status_index >= 0 else None
            if status_result is not None:
                status = Status(span.status.status_code, status_result.value)
                _add_findings(counts, status_result.findings, "attribute")
            attributes[sc.VEIL_PII_SCRUBBED] = True
            if counts:
                attributes[sc.VEIL_PII_FINDINGS] = _encoded(tuple(sorted(counts.items())))
            out.append(with_content(span, attributes, events, status))
        return out


def _scrubbed_event(
    event: Event, first: int, keys: list[str], changed: dict[int, ScrubResult], counts: dict[FindingKey, int]
) -> Event:
    attributes = dict(event.attributes or {})
    for index, key in enumerate(keys, first):
        result = changed.get(index)
        if result is not None:
            attributes[key] = result.value
            _add_findings(counts, result.findings, "attribute")
    return Event(event.name, attributes, event.timestamp)


def _add_findings(counts: dict[FindingKey, int], findings: Any, location: str) -> None:
    """``findings.add_findings`` into a plain dict."""
    for entity_type, count, detector in findings:
        key = (entity_type, detector, location)
        counts[key] = counts.get(key, 0) + count


@functools.lru_cache(maxsize=1024)
def _encoded(counts: tuple[tuple[FindingKey, int], ...]) -> str:
    """``encode_findings``, cached: the same few combinations of findings recur on span after span."""
    return encode_findings(Counter(dict(counts)))


def _collect(
    attributes: Any, values: list[Any], trace_ids: list[str | None], trace_id: str | None
) -> list[str]:
    """Queue the string (and string-array) attribute values for scrubbing; return their keys, in order."""
    keys: list[str] = []
    for key, value in (attributes or {}).items():
        if key in _OWN_KEYS:
            continue
        # Exact-type tests first: an isinstance against the Sequence ABC costs far more, per number.
        if type(value) is str:
            keys.append(key)
            values.append(value)
            trace_ids.append(trace_id)
        elif type(value) is tuple:  # the SDK stores string arrays as tuples: no Sequence ABC test
            if value and all(isinstance(v, str) for v in value):
                keys.append(key)
                values.append(value)
                trace_ids.append(trace_id)
        elif (
            type(value) not in _SCALARS
            and isinstance(value, Sequence)
            and value
            and all(isinstance(v, str) for v in value)
        ):
            keys.append(key)
            values.append(tuple(value) if not isinstance(value, str) else value)
            trace_ids.append(trace_id)
    return keys
