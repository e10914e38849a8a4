"""The collector's two PII passes over decoded OTLP requests, both in place.

* :meth:`ServerScrubber.fast_pass` (patterns) runs in the OTLP route before the spool write, so raw PII
  that a sender did not scrub never touches the collector's disk. It covers every string ``AnyValue``
  (nested arrays and key-value lists included) of resources, scopes, spans, events and links, and each
  span's status message.
* :meth:`ServerScrubber.ner_pass` (Presidio NER) runs in the drain before ClickHouse, on the content
  attributes (``semconv.CONTENT_ATTRIBUTES``) of every span of the request, in one batch.

Both append what they found to the span's ``veil.collector.pii.findings`` attribute (JSON, see
:mod:`veil.pii.findings`), so findings survive the spool and reach ``pii_findings`` rows through
:func:`veil_collector.scrub.pii_findings_for_span`. Findings in resource or scope attributes are recorded
on the first span of that resource or scope.

Placeholders the collector adds are in its own namespace, ``[EMAIL_c3f9a1b20d4]``, never the SDK's
``[EMAIL_1]``: the SDK numbers a trace's values in the app's process, and the collector cannot know every
number the SDK used. Nor can the collector number values itself: receiver worker processes, replicas and
a restarted collector each scrub some of a trace's spans and share no state. So the tag is derived, not
counted (:func:`veil.pii.operators.collector_placeholder`): 10 hex characters of HMAC-SHA256 over the
trace id, the entity type and the normalized value, under the placeholder key
(:mod:`veil_collector.scrub.keys`). Every process holding the key, replicas too when the operator gives
them the same one, names a value alike throughout a trace; two values of a type in a trace share a tag
only by a 40-bit collision (about 4.5e-7 for 1,000 values); another trace gives the value another tag.
Placeholders of either pass, and the ``[EMAIL_c1]`` of collectors that numbered theirs, are left as they
are (NER skips them too).
"""

from __future__ import annotations

import logging
import secrets
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from veil import semconv as sc
from veil.pii import DEFAULT_NER_ENTITIES, Operator, Scrubber, ScrubConfig
from veil.pii.findings import FindingKey, add_findings, decode_findings, encode_findings, location_of
from veil.pii.ner import DEFAULT_SPACY_MODEL
from veil_collector.scrub.keys import placeholder_key

__all__ = ["PassResult", "ServerScrubber"]

logger = logging.getLogger(__name__)

PII_FOUND = PromCounter(
    "veil_collector_pii_entities",
    "Entities the collector's PII passes replaced",
    ["scrub_pass", "entity_type"],
)
PASS_SECONDS = Histogram(
    "veil_collector_pii_pass_seconds", "Time per request of each PII pass", ["scrub_pass"]
)

_OWN_KEYS = frozenset({sc.VEIL_PII_SCRUBBED, sc.VEIL_PII_FINDINGS, sc.VEIL_COLLECTOR_PII_FINDINGS})
_MAX_VALUE_DEPTH = 16


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one PII pass did to a request.

    Attributes:
        replaced: entities replaced.
        changed: strings rewritten: those with entities, and those cut to the scrubber's length limit
            (a cut string may hold no entity). 0 means the request is exactly as it came.
    """

    replaced: int = 0
    changed: int = 0


class _Targets:
    """The strings of a request to scrub, and where each came from, in as few objects as possible: ingest
    collects a dozen strings per span, and most come back unchanged, so the span, attribute key and trace
    id of a string are worked out only for the few that changed.

    ``holders[i]`` holds ``values[i]``: the attribute's ``KeyValue`` (its key names the attribute), an
    ``AnyValue`` nested in an array or key-value list (``nested_keys`` names its attribute), or a span's
    ``Status``. The strings from ``owner_starts[k]`` on belong to ``owners[k]``, the span their findings
    go to (``None`` where there is none).
    """

    __slots__ = ("holders", "nested_keys", "owner_starts", "owners", "values")

    def __init__(self) -> None:
        self.holders: list[Any] = []
        self.values: list[str] = []
        self.nested_keys: dict[int, str] = {}
        self.owner_starts: list[int] = []
        self.owners: list[Span | None] = []

    def start_owner(self, span: Span | None) -> None:
        """The strings added from now on belong to ``span``."""
        self.owner_starts.append(len(self.values))
        self.owners.append(span)

    def span_of(self, index: int) -> Span | None:
        """The span the findings of string ``index`` go to."""
        return self.owners[bisect_right(self.owner_starts, index) - 1]

    def key_of(self, index: int) -> str:
        """The attribute string ``index`` belongs to (``status.message`` for a status message)."""
        holder = self.holders[index]
        if type(holder) is KeyValue:
            return holder.key
        if type(holder) is Status:
            return "status.message"
        return self.nested_keys[index]

    def write(self, index: int, text: str) -> None:
        """Replace string ``index`` in the request."""
        holder = self.holders[index]
        if type(holder) is KeyValue:
            holder.value.string_value = text
        elif type(holder) is Status:
            holder.message = text
        else:
            holder.string_value = text


class _TraceIds(Sequence[str | None]):
    """The trace id of each string of a :class:`_Targets`, made only when asked for (the scrubber asks for
    those of strings with findings alone)."""

    __slots__ = ("_targets",)

    def __init__(self, targets: _Targets) -> None:
        self._targets = targets

    def __len__(self) -> int:
        return len(self._targets.values)

    @overload
    def __getitem__(self, index: int) -> str | None: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str | None]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str | None] | None:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        span = self._targets.span_of(index)
        return span.trace_id.hex() if span is not None else None


class ServerScrubber:
    """The collector's PII scrubber.

    Args:
        ner_enabled: Run the NER pass (``ner_pass`` is a no-op when False).
        spacy_model: spaCy model package or directory for the NER pass (never downloaded).
        ner_entities: NER entity types (default PERSON, LOCATION, NRP).
        ner_batch_size: Texts per ``nlp.pipe`` batch.
        operators: Operator per entity type (default: typed placeholders).
        pseudonym_secret: Key for the ``pseudonym`` operator.
        placeholder_key: Key of the placeholder tags; every scrubber of a deployment needs the same one
            (:func:`from_settings` reads the collector's). None: a random key of this instance alone, so
            its placeholders agree with no other process (embedded use, benchmarks).

    Raises:
        veil.pii.NerUnavailableError: NER is enabled but presidio-analyzer, spaCy or the model is missing.
    """

    def __init__(
        self,
        *,
        ner_enabled: bool = True,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        ner_entities: frozenset[str] = DEFAULT_NER_ENTITIES,
        ner_batch_size: int = 64,
        operators: Mapping[str, Operator | str] | None = None,
        pseudonym_secret: bytes | str | None = None,
        placeholder_key: bytes | None = None,
    ) -> None:
        self._placeholder_key = secrets.token_bytes(32) if placeholder_key is None else placeholder_key
        common: dict[str, Any] = {
            "operators": dict(operators or {}),
            "pseudonym_secret": pseudonym_secret,
            "collector_placeholder_key": self._placeholder_key,
        }
        self._patterns = Scrubber(ScrubConfig(**common))
        self._ner = (
            Scrubber(
                ScrubConfig(
                    pattern_entities=frozenset(),
                    ner=True,
                    ner_entities=ner_entities,
                    spacy_model=spacy_model,
                    ner_batch_size=ner_batch_size,
                    **common,
                )
            )
            if ner_enabled
            else None
        )
        if self._ner is not None and self._ner.ner_tier is not None:
            # Fail at startup, not in the drain, when the model is missing (the model loads on first use).
            self._ner.ner_tier.check_available()

    @classmethod
    def from_settings(cls, settings: Any) -> ServerScrubber:
        """Build from the collector's ``Settings`` (``pii_ner_enabled``, ``spacy_model``, and the placeholder
        key: ``pii_placeholder_key``, else the key file in ``data_dir``, generated on first use)."""
        return cls(
            ner_enabled=settings.pii_ner_enabled,
            spacy_model=settings.spacy_model,
            placeholder_key=placeholder_key(settings),
        )

    @property
    def placeholder_key(self) -> bytes:
        """The key of the placeholder tags, for the receiver's worker processes (theirs must match)."""
        return self._placeholder_key

    @property
    def ner_enabled(self) -> bool:
        """Whether :meth:`ner_pass` runs NER."""
        return self._ner is not None

    def warm_up(self) -> None:
        """Prepare both passes now instead of on the first request: the pattern scan (the Hyperscan seed
        database compiles on first use, about 50 ms, plus this thread's scratch space) and the spaCy model.

        Raises:
            veil.pii.NerUnavailableError: NER is enabled and the model is missing.
        """
        self._patterns.scrub_changed(["warm-up"])
        if self._ner is not None and self._ner.ner_tier is not None:
            self._ner.ner_tier.warm_up()

    def fast_pass(self, request: ExportTraceServiceRequest) -> PassResult:
        """Replace pattern entities in every string of ``request``."""
        with PASS_SECONDS.labels("pattern").time():
            return self._run(self._patterns, _all_strings(request), "pattern")

    def ner_pass(self, request: ExportTraceServiceRequest) -> PassResult:
        """Replace NER entities in the content attributes of ``request``."""
        if self._ner is None:
            return PassResult()
        with PASS_SECONDS.labels("ner").time():
            return self._run(self._ner, _content_strings(request), "ner")

    @staticmethod
    def _run(scrubber: Scrubber, targets: _Targets, pass_name: str) -> PassResult:
        if not targets.values:
            return PassResult()
        started = time.perf_counter()
        # Only the changed strings come back (most hold no PII): nothing to write back for the rest.
        changed = scrubber.scrub_changed(targets.values, trace_ids=_TraceIds(targets))
        per_span: dict[int, tuple[Span, Counter[FindingKey]]] = {}
        total = 0
        for index, result in changed.items():
            targets.write(index, result.value)
            for finding in result.findings:
                total += finding.count
                PII_FOUND.labels(pass_name, finding.entity_type).inc(finding.count)
            span = targets.span_of(index)
            if span is not None and result.findings:  # a truncated value may have changed without any
                _, counts = per_span.setdefault(id(span), (span, Counter()))
                add_findings(counts, result.findings, location_of(targets.key_of(index)))
        for span, counts in per_span.values():
            _append_findings(span, counts)
        logger.debug(
            "%s pass: %d entities in %.1f ms", pass_name, total, (time.perf_counter() - started) * 1e3
        )
        return PassResult(replaced=total, changed=len(changed))


def _append_findings(span: Span, counts: Counter[FindingKey]) -> None:
    for kv in span.attributes:
        if kv.key == sc.VEIL_COLLECTOR_PII_FINDINGS:
            merged = decode_findings(kv.value.string_value) + counts
            kv.value.string_value = encode_findings(merged)
            return
    span.attributes.append(
        KeyValue(key=sc.VEIL_COLLECTOR_PII_FINDINGS, value=AnyValue(string_value=encode_findings(counts)))
    )


def _values(key: str, items: Iterable[AnyValue], out: _Targets, depth: int) -> None:
    """Collect the strings among ``items``, the values of an array or key-value list at ``depth``."""
    for value in items:
        text = value.string_value
        if text:
            out.nested_keys[len(out.values)] = key
            out.holders.append(value)
            out.values.append(text)
        elif depth < _MAX_VALUE_DEPTH:
            kind = value.WhichOneof("value")
            if kind == "array_value":
                _values(key, value.array_value.values, out, depth + 1)
            elif kind == "kvlist_value":
                _values(key, [kv.value for kv in value.kvlist_value.values], out, depth + 1)


def _attributes(attributes: Iterable[KeyValue], out: _Targets, only: frozenset[str] | None = None) -> None:
    # Plain loops and appends, no generators: this runs for every attribute of every span on ingest.
    holders, values = out.holders, out.values
    for kv in attributes:
        value = kv.value
        # Most attributes are strings: reading the string first saves a WhichOneof on each of them. An
        # empty string (or a value of another kind, which reads as "") holds nothing to scrub.
        text = value.string_value
        if text:
            key = kv.key
            if key not in _OWN_KEYS and (only is None or key in only):
                holders.append(kv)
                values.append(text)
        else:
            kind = value.WhichOneof("value")
            if kind != "array_value" and kind != "kvlist_value":
                continue
            key = kv.key
            if key in _OWN_KEYS or (only is not None and key not in only):
                continue
            if kind == "array_value":
                _values(key, value.array_value.values, out, 1)
            else:
                _values(key, [kv.value for kv in value.kvlist_value.values], out, 1)


def _all_strings(request: ExportTraceServiceRequest) -> _Targets:
    out = _Targets()
    for resource_spans in request.resource_spans:
        out.start_owner(next((s for ss in resource_spans.scope_spans for s in ss.spans), None))
        _attributes(resource_spans.resource.attributes, out)
        for scope_spans in resource_spans.scope_spans:
            out.start_owner(scope_spans.spans[0] if scope_spans.spans else None)
            _attributes(scope_spans.scope.attributes, out)
            for span in scope_spans.spans:
                out.start_owner(span)
                _attributes(span.attributes, out)
                for event in span.events:
                    _attributes(event.attributes, out)
                for link in span.links:
                    _attributes(link.attributes, out)
                status = span.status
                if status.message:
                    out.holders.append(status)
                    out.values.append(status.message)
    return out


def _content_strings(request: ExportTraceServiceRequest) -> _Targets:
    out = _Targets()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.start_owner(span)
                _attributes(span.attributes, out, sc.CONTENT_ATTRIBUTES)
    return out
