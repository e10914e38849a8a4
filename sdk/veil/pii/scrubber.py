"""The scrubber: walks a value, finds entities (patterns, optionally NER) and replaces them.

A value is a string, bytes, a number, or any nesting of dicts, lists and tuples of those. Dict keys and
the shape are kept; string leaves are scrubbed; a string that holds a JSON object or array (tool-call
arguments, message lists) is parsed, walked and serialised again; integers long enough to be a card or
phone number are scanned as text. Cost is bounded: strings longer than ``max_text_chars`` are truncated
(the tail is dropped, never emitted unscanned), nesting deeper than ``max_depth`` is replaced by
``"[MAX_DEPTH]"``, bytes are decoded as UTF-8 with replacement characters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from veil.pii.entities import DEFAULT_NER_ENTITIES, NER_ENTITIES, PATTERN_ENTITIES, EntitySpan
from veil.pii.ner import DEFAULT_SPACY_MODEL, NerTier
from veil.pii.operators import Operator, PlaceholderRegistry, TraceNumbering, pseudonym
from veil.pii.recognizers import find_patterns_many

__all__ = ["DEPTH_MARKER", "TRUNCATION_MARKER", "Finding", "ScrubConfig", "ScrubResult", "Scrubber"]

TRUNCATION_MARKER = "[TRUNCATED]"
DEPTH_MARKER = "[MAX_DEPTH]"
# Replacements made by an earlier pass (SDK, then collector) must not be re-detected by NER.
_REPLACEMENT = re.compile(r"\[[A-Z_]{2,32}(?:_[0-9]{1,9}|:[0-9a-f]{16})\]")


class Finding(NamedTuple):
    """How many entities of one type one detector replaced. Never the values."""

    entity_type: str
    count: int
    detector: str  # "pattern" | "ner"


class ScrubResult(NamedTuple):
    """The scrubbed value (same shape as the input) and what was found in it."""

    value: Any
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class ScrubConfig:
    """Scrubber settings.

    Attributes:
        pattern_entities: Pattern entity types to detect (default: all of ``PATTERN_ENTITIES``).
        ner: Run the NER tier (needs presidio-analyzer, spaCy and the model).
        ner_entities: NER entity types (default PERSON, LOCATION, NRP; ORGANIZATION is opt-in).
        spacy_model: spaCy model package name or directory for the NER tier; never downloaded.
        ner_batch_size: Texts per ``nlp.pipe`` batch.
        ner_score_threshold: Minimum Presidio score for an NER result.
        operators: Operator per entity type; types not listed use ``default_operator``.
        default_operator: Operator for unlisted types.
        pseudonym_secret: Key for the ``pseudonym`` operator (required when any type uses it).
        mask_char: Character used by the ``mask`` operator.
        max_text_chars: Strings longer than this are truncated before scanning.
        max_depth: Nesting deeper than this is replaced by ``"[MAX_DEPTH]"``.
        parse_json_strings: Walk strings that hold a JSON object or array.
        max_traces: Traces whose placeholder numbering is remembered (LRU).
        max_values_per_trace: Values numbered consistently per trace.
    """

    pattern_entities: frozenset[str] = PATTERN_ENTITIES
    ner: bool = False
    ner_entities: frozenset[str] = DEFAULT_NER_ENTITIES
    spacy_model: str = DEFAULT_SPACY_MODEL
    ner_batch_size: int = 32
    ner_score_threshold: float = 0.5
    operators: Mapping[str, Operator | str] = field(default_factory=dict)
    default_operator: Operator | str = Operator.PLACEHOLDER
    pseudonym_secret: bytes | str | None = None
    mask_char: str = "*"
    max_text_chars: int = 1 << 20
    max_depth: int = 32
    parse_json_strings: bool = True
    max_traces: int = 4096
    max_values_per_trace: int = 4096

    def __post_init__(self) -> None:
        unknown = (set(self.pattern_entities) - PATTERN_ENTITIES) | (set(self.ner_entities) - NER_ENTITIES)
        unknown |= set(self.operators) - PATTERN_ENTITIES - NER_ENTITIES
        if unknown:
            raise ValueError(f"unknown entity types {sorted(unknown)}")
        ops = {Operator(op) for op in self.operators.values()} | {Operator(self.default_operator)}
        if Operator.PSEUDONYM in ops and not self.pseudonym_secret:
            raise ValueError("the pseudonym operator needs pseudonym_secret (a key only you hold)")
        if len(self.mask_char) != 1:
            raise ValueError("mask_char must be a single character")
        if self.max_text_chars < 1 or self.max_depth < 1:
            raise ValueError("max_text_chars and max_depth must be positive")


class _Leaf(NamedTuple):
    index: int
    original: Any  # the int a numeric leaf came from, else None


class _JsonText(NamedTuple):
    skeleton: Any  # a parsed JSON string, re-serialised after scrubbing


class Scrubber:
    """Finds and replaces PII in values; safe to share between threads.

    Args:
        config: Settings; the defaults give patterns only with typed placeholders.
    """

    def __init__(self, config: ScrubConfig | None = None) -> None:
        self.config = config or ScrubConfig()
        cfg = self.config
        self._operators = {k: Operator(v) for k, v in cfg.operators.items()}
        self._default_operator = Operator(cfg.default_operator)
        secret = cfg.pseudonym_secret
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._registry = PlaceholderRegistry(cfg.max_traces, cfg.max_values_per_trace)
        self._ner = (
            NerTier(cfg.spacy_model, cfg.ner_entities, cfg.ner_score_threshold, cfg.ner_batch_size)
            if cfg.ner
            else None
        )

    @property
    def ner_tier(self) -> NerTier | None:
        """The NER tier, or ``None`` when NER is off."""
        return self._ner

    def scrub(self, value: Any, *, trace_id: str | None = None) -> ScrubResult:
        """Scrub one value; placeholders are consistent with earlier calls for the same ``trace_id``."""
        return self.scrub_many([value], trace_ids=[trace_id])[0]

    def scrub_many(
        self, values: Sequence[Any], *, trace_ids: Sequence[str | None] | None = None
    ) -> list[ScrubResult]:
        """Scrub several values at once; the NER tier sees all their strings in one batch.

        Args:
            values: The values to scrub.
            trace_ids: One trace id (or ``None``) per value, for consistent placeholders.

        Returns:
            One :class:`ScrubResult` per value, in order.

        Raises:
            ValueError: When ``trace_ids`` does not have one entry per value.
        """
        if trace_ids is None:
            trace_ids = [None] * len(values)
        elif len(trace_ids) != len(values):
            raise ValueError(f"got {len(trace_ids)} trace ids for {len(values)} values")
        texts: list[str] = []
        skeletons = []
        owners: list[int] = []  # the index of the value each text came from
        for i, value in enumerate(values):
            first = len(texts)
            skeletons.append(self._decompose(value, texts, 0))
            owners.extend([i] * (len(texts) - first))
        spans = self.analyze(texts)
        # Numbering maps and counters are made only for values with findings (most have none).
        maps: dict[int, TraceNumbering] = {}
        counters: dict[int, Counter[tuple[str, str]]] = {}
        scrubbed = []
        for text, text_spans, owner in zip(texts, spans, owners, strict=True):
            if not text_spans:
                scrubbed.append(text)
                continue
            trace_map = maps.get(owner)
            if trace_map is None:
                trace_map = maps[owner] = self._registry.for_trace(trace_ids[owner])
            counter = counters.setdefault(owner, Counter())
            scrubbed.append(self._replace(text, text_spans, trace_map, counter))
        return [
            ScrubResult(
                _assemble(skeleton, scrubbed),
                tuple(Finding(t, n, d) for (t, d), n in sorted(counters[i].items())) if i in counters else (),
            )
            for i, skeleton in enumerate(skeletons)
        ]

    def analyze(self, texts: Sequence[str]) -> list[list[EntitySpan]]:
        """Return what :meth:`scrub_many` would replace in each text: non-overlapping spans by position.

        Pattern spans win over NER spans that overlap them; NER runs once over all ``texts``. Texts are
        scanned as given (no truncation or JSON parsing: that is the walk's job).
        """
        spans = find_patterns_many(texts, self.config.pattern_entities)
        if self._ner is not None and texts:
            for i, ner_spans in enumerate(self._ner.analyze(texts)):
                if ner_spans:
                    spans[i] = _merge(spans[i], ner_spans, texts[i])
        return spans

    def _replace(
        self, text: str, spans: list[EntitySpan], trace_map: TraceNumbering, counter: Counter[tuple[str, str]]
    ) -> str:
        if not spans:
            return text
        parts: list[str] = []
        swept: dict[str, tuple[str, tuple[str, str]]] = {}  # value -> (replacement, finding key)
        pos = 0
        operators, default = self._operators, self._default_operator
        for start, end, entity_type, detector in spans:
            value = text[start:end]
            operator = operators.get(entity_type, default)
            if operator is Operator.PLACEHOLDER:
                replacement = trace_map.placeholder(entity_type, value)
            elif operator is Operator.MASK:
                replacement = self.config.mask_char * len(value)
            elif operator is Operator.PSEUDONYM:
                replacement = pseudonym(self._secret, entity_type, value)  # type: ignore[arg-type]
            else:
                replacement = ""
            key = (entity_type, detector)
            if detector == "pattern":
                swept.setdefault(value, (replacement, key))
            parts.append(text[pos:start])
            parts.append(replacement)
            pos = end
            counter[key] += 1
        parts.append(text[pos:])
        out = "".join(parts)
        # A value found once may also occur where no recognizer accepted it ("ID555-123-4567"): replace
        # every remaining occurrence of each pattern-detected value as well.
        for value, (replacement, key) in swept.items():
            if value in out:
                counter[key] += out.count(value)
                out = out.replace(value, replacement)
        return out

    def _decompose(self, value: Any, texts: list[str], depth: int) -> Any:
        """Return ``value``'s skeleton with each string leaf replaced by a :class:`_Leaf` into ``texts``."""
        if depth > self.config.max_depth:
            return DEPTH_MARKER
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).decode("utf-8", errors="replace")
        if isinstance(value, str):
            if len(value) > self.config.max_text_chars:
                value = value[: self.config.max_text_chars] + TRUNCATION_MARKER
            elif self.config.parse_json_strings and value[:1] in ("{", "[") and value[-1:] in ("}", "]"):
                try:
                    parsed = json.loads(value)
                except (ValueError, RecursionError):
                    pass  # not JSON, or nested beyond the parser's recursion limit: scanned as text
                else:
                    return _JsonText(self._decompose(parsed, texts, depth + 1))
            texts.append(value)
            return _Leaf(len(texts) - 1, None)
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            if abs(value) < 1_000_000:
                return value  # too short to be a phone, card or SSN
            texts.append(str(value))
            return _Leaf(len(texts) - 1, value)
        if isinstance(value, Mapping):
            return {k: self._decompose(v, texts, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._decompose(v, texts, depth + 1) for v in value)
        return value


def _assemble(skeleton: Any, texts: list[str]) -> Any:
    if isinstance(skeleton, _Leaf):
        text = texts[skeleton.index]
        if skeleton.original is not None and text == str(skeleton.original):
            return skeleton.original
        return text
    if isinstance(skeleton, _JsonText):
        return json.dumps(_assemble(skeleton.skeleton, texts), ensure_ascii=False)
    if isinstance(skeleton, dict):
        return {k: _assemble(v, texts) for k, v in skeleton.items()}
    if isinstance(skeleton, list | tuple):
        return type(skeleton)(_assemble(v, texts) for v in skeleton)
    return skeleton


def _merge(pattern_spans: list[EntitySpan], ner_spans: list[EntitySpan], text: str) -> list[EntitySpan]:
    """Add NER spans that overlap neither a pattern span nor an earlier pass's replacement."""
    taken = [(s.start, s.end) for s in pattern_spans]
    taken += [(m.start(), m.end()) for m in _REPLACEMENT.finditer(text)] if "[" in text else []
    merged = list(pattern_spans)
    for span in ner_spans:
        if not any(span.start < end and start < span.end for start, end in taken):
            merged.append(span)
    merged.sort(key=lambda s: s.start)
    return merged
