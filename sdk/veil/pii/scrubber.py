"""The scrubber: walks a value, finds entities (patterns, optionally NER) and replaces them.

A value is a string, bytes, a number, or any nesting of dicts, lists and tuples of those. Dict keys and
the shape are kept; string leaves are scrubbed; a string that holds a JSON object or array (tool-call
arguments, message lists) is parsed, walked and serialised again; integers long enough to be a card or
phone number are scanned as text. Cost is bounded: strings longer than ``max_text_chars`` are truncated
(the tail is dropped, never emitted unscanned), nesting deeper than ``max_depth`` is replaced by
``"[MAX_DEPTH]"``, bytes are decoded as UTF-8 with replacement characters.

Fast paths (the export thread and the collector's ingest scrub almost every prompt; most hold no PII):

* a value in which nothing is found is returned as the very object passed in (nothing is re-built or
  re-serialised), unless the walk had to change it (truncation, depth limit, bytes, ...);
* a JSON string without backslashes is first scanned as one text. Its string literals are then verbatim
  substrings between two quotes, and a quote, like the start or end of a lone string, is neither a word
  character nor a digit and is matched by no entity, so every recognizer finds in the literal what it
  finds in the parsed string (only phone numbers may see more context words). When nothing is found the
  string is kept as is, unparsed; when every span lies inside one string value (not a key) it is
  replaced in place, which keeps the JSON valid and its structure unchanged (replacements hold no quote
  or backslash). Only otherwise is the string parsed and walked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress
from typing import Any, NamedTuple

from veil.pii.entities import DEFAULT_NER_ENTITIES, NER_ENTITIES, PATTERN_ENTITIES, EntitySpan
from veil.pii.ner import DEFAULT_SPACY_MODEL, NerTier
from veil.pii.operators import REPLACEMENT, Operator, PlaceholderRegistry, collector_placeholder, pseudonym
from veil.pii.recognizers import find_patterns_many

__all__ = ["DEPTH_MARKER", "TRUNCATION_MARKER", "Finding", "ScrubConfig", "ScrubResult", "Scrubber"]

TRUNCATION_MARKER = "[TRUNCATED]"
DEPTH_MARKER = "[MAX_DEPTH]"


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
        max_traces: Traces whose placeholder numbering is remembered (LRU; the SDK's placeholders).
        max_values_per_trace: Values numbered consistently per trace.
        collector_placeholder_key: Write the collector's placeholders, ``[EMAIL_c<tag>]`` with a tag keyed
            by this key (see :func:`veil.pii.operators.collector_placeholder`), instead of numbering
            ``[EMAIL_1]``: scrubbers with the same key agree without sharing state, and their
            placeholders never equal an SDK placeholder of the same trace.
    """

    pattern_entities: frozenset[str] = PATTERN_ENTITIES
    ner: bool = False
    ner_entities: frozenset[str] = DEFAULT_NER_ENTITIES
    spacy_model: str = DEFAULT_SPACY_MODEL
    ner_batch_size: int = 64
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
    collector_placeholder_key: bytes | None = None

    def __post_init__(self) -> None:
        unknown = (set(self.pattern_entities) - PATTERN_ENTITIES) | (set(self.ner_entities) - NER_ENTITIES)
        unknown |= set(self.operators) - PATTERN_ENTITIES - NER_ENTITIES
        if unknown:
            raise ValueError(f"unknown entity types {sorted(unknown)}")
        ops = {Operator(op) for op in self.operators.values()} | {Operator(self.default_operator)}
        if Operator.PSEUDONYM in ops and not self.pseudonym_secret:
            raise ValueError("the pseudonym operator needs pseudonym_secret (a key only you hold)")
        if self.collector_placeholder_key == b"":  # an empty key would make the tags an unkeyed hash
            raise ValueError("collector_placeholder_key must not be empty")
        if len(self.mask_char) != 1:
            raise ValueError("mask_char must be a single character")
        if self.max_text_chars < 1 or self.max_depth < 1:
            raise ValueError("max_text_chars and max_depth must be positive")


class _Leaf(NamedTuple):
    index: int
    original: Any  # the int a numeric leaf came from, else None


class _JsonText(NamedTuple):
    skeleton: Any  # a parsed JSON string, re-serialised after scrubbing


class _Walk:
    """The state of one :meth:`Scrubber.scrub_many` call's walk."""

    __slots__ = ("lossy", "raw_json", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.raw_json: dict[int, int] = {}  # index into texts of a JSON string scanned whole -> its depth
        self.lossy = False  # the current value's skeleton differs from it even without findings


_Counts = dict[tuple[str, str], int]  # replacements per (entity type, detector)
_JSON_OPENERS = ("{", "[")
_WHOLE = object()  # the skeleton of a value that is a single text (text i of value i)
# Builds a named tuple without its Python-level __new__ (the per-value cost on ingest adds up).
_tuple_new = tuple.__new__
# Characters a replacement must not contain to be written inside a JSON string literal as is.
_JSON_UNSAFE = frozenset('"\\') | frozenset(map(chr, range(32)))
_Namer = Callable[[str, str], str]  # (entity type, value) -> the placeholder of the value in one trace


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
        # NER reads context (keys and JSON syntax would change what it finds): it sees parsed strings only.
        self._scan_json_whole = self._ner is None
        self._in_place_ok = cfg.mask_char not in _JSON_UNSAFE

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
            One :class:`ScrubResult` per value, in order. A value in which nothing was found is returned
            as the same object, unless the walk had to change it (truncation, depth limit, bytes).

        Raises:
            ValueError: When ``trace_ids`` does not have one entry per value.
        """
        changed = self.scrub_changed(values, trace_ids=trace_ids)
        return [changed.get(i) or _tuple_new(ScrubResult, (value, ())) for i, value in enumerate(values)]

    def scrub_changed(
        self, values: Sequence[Any], *, trace_ids: Sequence[str | None] | None = None
    ) -> dict[int, ScrubResult]:
        """:meth:`scrub_many`, returning only the results whose value changed, by index.

        The export thread and the collector scrub many values in which nothing is found: this makes no
        object per such value (fewer allocations, less garbage-collector work on a large heap).

        Raises:
            ValueError: When ``trace_ids`` does not have one entry per value.
        """
        if trace_ids is None:
            trace_ids = [None] * len(values)
        elif len(trace_ids) != len(values):
            raise ValueError(f"got {len(trace_ids)} trace ids for {len(values)} values")
        walk = _Walk()
        # Text i is value i itself when that value is one text to scan as given (most are: plain strings,
        # message lists scanned whole), so nothing per such value is recorded; a value that has to be
        # walked leaves "" at i (nothing is found in it) and its leaves after all the values.
        texts = walk.texts
        texts.extend(values)
        owners = list(range(len(values)))  # the index of the value each text came from
        skeletons: dict[int, Any] = {}  # the skeleton of each walked value
        lossy: list[int] = []  # values the walk changed even where nothing is found
        max_chars = self.config.max_text_chars
        for i, value in enumerate(values):
            if type(value) is str and len(value) <= max_chars:
                if value[:1] not in _JSON_OPENERS:
                    continue
                if self._whole_json(value, 0):
                    walk.raw_json[i] = 0
                    continue
            elif (
                type(value) is tuple
                and value
                and all(type(v) is str and len(v) <= max_chars and v[:1] not in _JSON_OPENERS for v in value)
            ):
                # A string array attribute of plain strings (finish reasons): one text per item, as the
                # walk would make them, without it.
                first = len(texts)
                skeletons[i] = tuple(_Leaf(k, None) for k in range(first, first + len(value)))
                texts[i] = ""
                texts.extend(value)
                owners.extend([i] * len(value))
                continue
            texts[i] = ""
            first = len(texts)
            walk.lossy = False
            skeletons[i] = self._decompose(value, walk, 0)
            if walk.lossy:
                lossy.append(i)
            owners.extend([i] * (len(texts) - first))
        spans = self.analyze(texts)
        parsed = self._walk_json_with_findings(walk, spans, owners)
        # Placeholder namers and counters are made only for values with findings (most have none).
        namers: dict[int, _Namer] = {}
        # Plain dicts, not Counters: a Counter costs microseconds to make, and this runs per span.
        counters: dict[int, _Counts] = {}
        scrubbed = list(texts)
        for index in compress(range(len(spans)), spans):  # the texts with spans, found in C
            owner = owners[index]
            namer = namers.get(owner)
            if namer is None:
                namer = namers[owner] = self._namer(trace_ids[owner])
            counter = counters.get(owner)
            if counter is None:
                counter = counters[owner] = {}
            scrubbed[index] = self._replace(texts[index], spans[index], namer, counter)
        changed: dict[int, ScrubResult] = {}
        for i in {*counters, *lossy} if lossy else counters:
            skeleton = skeletons.get(i, _WHOLE)
            if skeleton is _WHOLE:
                json_text = parsed.get(i)
                # A single text, not walked: its scrubbed text is the value (what _assemble returns).
                value = scrubbed[i] if json_text is None else _assemble(json_text, scrubbed, parsed)
            else:
                value = _assemble(skeleton, scrubbed, parsed)
            counter = counters.get(i)
            items = sorted(counter.items()) if counter else ()
            findings = tuple(_tuple_new(Finding, (t, n, d)) for (t, d), n in items)
            changed[i] = _tuple_new(ScrubResult, (value, findings))
        return changed

    def _walk_json_with_findings(
        self, walk: _Walk, spans: list[Sequence[EntitySpan]], owners: list[int]
    ) -> dict[int, _JsonText]:
        """Parse and walk the JSON strings scanned whole whose spans cannot be replaced in place.

        Their leaves are appended to ``walk.texts``, ``spans`` and ``owners``; the whole string's spans
        are cleared (its leaves carry them now). Returns the skeleton of each such string by its index.
        """
        texts = walk.texts
        parsed: dict[int, _JsonText] = {}
        while walk.raw_json:
            raw_json, walk.raw_json = walk.raw_json, {}
            first = len(texts)
            for index, depth in raw_json.items():
                if not spans[index] or (self._in_place_ok and _in_place(texts[index], spans[index])):
                    continue
                start = len(texts)
                skeleton = self._parse(texts[index], walk, depth)
                if skeleton is None:
                    continue  # not JSON: the spans of the text stand
                parsed[index] = skeleton
                spans[index] = ()
                owners.extend([owners[index]] * (len(texts) - start))
            # Leaves that are JSON strings themselves are scanned whole in the next round.
            if len(texts) > first:
                spans.extend(self.analyze(texts[first:]))
        return parsed

    def _namer(self, trace_id: str | None) -> _Namer:
        """The placeholders of ``trace_id``: the collector's keyed tags, or the SDK's per-trace numbers."""
        key = self.config.collector_placeholder_key
        if key is not None:
            return partial(collector_placeholder, key, trace_id)
        return self._registry.for_trace(trace_id).placeholder

    def analyze(self, texts: Sequence[str]) -> list[Sequence[EntitySpan]]:
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

    def _replace(self, text: str, spans: Sequence[EntitySpan], namer: _Namer, counter: _Counts) -> str:
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
                replacement = namer(entity_type, value)
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
            counter[key] = counter.get(key, 0) + 1
        parts.append(text[pos:])
        out = "".join(parts)
        # A value found once may also occur where no recognizer accepted it ("ID555-123-4567"): replace
        # every remaining occurrence of each pattern-detected value as well.
        for value, (replacement, key) in swept.items():
            if value in out:
                counter[key] = counter.get(key, 0) + out.count(value)
                out = out.replace(value, replacement)
        return out

    def _decompose(self, value: Any, walk: _Walk, depth: int) -> Any:
        """Return ``value``'s skeleton with each string leaf replaced by a :class:`_Leaf` into the texts."""
        cfg = self.config
        if depth > cfg.max_depth:
            walk.lossy = True
            return DEPTH_MARKER
        if not isinstance(value, str) and isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).decode("utf-8", errors="replace")
            walk.lossy = True
        if isinstance(value, str):
            texts = walk.texts
            if len(value) > cfg.max_text_chars:
                value = value[: cfg.max_text_chars] + TRUNCATION_MARKER
                walk.lossy = True
            elif cfg.parse_json_strings and value[:1] in _JSON_OPENERS and value[-1:] in ("}", "]"):
                if self._whole_json(value, depth):
                    walk.raw_json[len(texts)] = depth
                elif (skeleton := self._parse(value, walk, depth)) is not None:
                    return skeleton
            texts.append(value)
            return _Leaf(len(texts) - 1, None)
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            if abs(value) < 1_000_000:
                return value  # too short to be a phone, card or SSN
            walk.texts.append(str(value))
            return _Leaf(len(walk.texts) - 1, value)
        # Lists and tuples first: an isinstance against the Mapping ABC is several times slower.
        if isinstance(value, list | tuple):
            return type(value)(self._decompose(v, walk, depth + 1) for v in value)
        if isinstance(value, Mapping):
            walk.lossy |= type(value) is not dict  # assembled as a dict
            return {k: self._decompose(v, walk, depth + 1) for k, v in value.items()}
        return value

    def _whole_json(self, value: str, depth: int) -> bool:
        """Whether ``value`` (at ``depth``, not truncated) is JSON to scan whole: that is exact when it has
        no escapes and too few brackets to reach ``max_depth``."""
        cfg = self.config
        return (
            self._scan_json_whole
            and cfg.parse_json_strings
            and value[:1] in _JSON_OPENERS
            and value[-1:] in ("}", "]")
            and "\\" not in value
            and _brackets_at_most(value, cfg.max_depth - depth - 1)
        )

    def _parse(self, value: str, walk: _Walk, depth: int) -> _JsonText | None:
        """The skeleton of a JSON string, or ``None`` when it is not JSON (it is then scanned as text)."""
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None  # not JSON, or nested beyond the parser's recursion limit
        return _JsonText(self._decompose(parsed, walk, depth + 1))


def _brackets_at_most(value: str, limit: int) -> bool:
    """``value.count("{") + value.count("[") <= limit``, by memchr from bracket to bracket: ``count``
    reads every character, and a message list holds few brackets (at most ``limit + 1`` are visited)."""
    if limit < 0:
        return False
    n = 0
    for bracket in _JSON_OPENERS:
        at = value.find(bracket)
        while at != -1:
            n += 1
            if n > limit:
                return False
            at = value.find(bracket, at + 1)
    return True


def _assemble(skeleton: Any, texts: list[str], parsed: dict[int, _JsonText]) -> Any:
    if isinstance(skeleton, _Leaf):
        if skeleton.index in parsed:
            return _assemble(parsed[skeleton.index], texts, parsed)
        text = texts[skeleton.index]
        if skeleton.original is not None and text == str(skeleton.original):
            return skeleton.original
        return text
    if isinstance(skeleton, _JsonText):
        return json.dumps(_assemble(skeleton.skeleton, texts, parsed), ensure_ascii=False)
    if isinstance(skeleton, dict):
        return {k: _assemble(v, texts, parsed) for k, v in skeleton.items()}
    if isinstance(skeleton, list | tuple):
        return type(skeleton)(_assemble(v, texts, parsed) for v in skeleton)
    return skeleton


_KEY_END = re.compile(r"\s*:")
_VALUE_ENDS = frozenset(",}]")


def _in_place(text: str, spans: Sequence[EntitySpan]) -> bool:
    """Whether replacing ``spans`` in the JSON ``text`` (no backslashes) is what the walk would do.

    True when every span lies inside one string value (after an odd number of quotes, before the next
    quote, which is not followed by ``:``) and no found value occurs elsewhere (``Scrubber._replace``
    replaces every occurrence of a found value, which could be in a key or a number). When ``text`` is
    not JSON at all, replacing the spans is what the walk does too (it scans such a string as text).
    """
    quotes = pos = 0
    found: dict[str, int] = {}
    for start, end, _, _ in spans:  # in text order: quotes are counted once, by memchr
        quotes += text.count('"', pos, start)
        pos = start
        close = text.find('"', start)
        if not quotes % 2 or close < end:
            return False
        # Most values end in "," or "}": only else may whitespace and ":" follow (a key).
        if text[close + 1 : close + 2] not in _VALUE_ENDS and _KEY_END.match(text, close + 1):
            return False
        value = text[start:end]
        found[value] = found.get(value, 0) + 1
    return all(text.count(value) == n for value, n in found.items())


def _merge(pattern_spans: Sequence[EntitySpan], ner_spans: list[EntitySpan], text: str) -> list[EntitySpan]:
    """Add NER spans that overlap neither a pattern span nor an earlier pass's replacement."""
    taken = [(s.start, s.end) for s in pattern_spans]
    taken += [(m.start(), m.end()) for m in REPLACEMENT.finditer(text)] if "[" in text else []
    merged = list(pattern_spans)
    for span in ner_spans:
        if not any(span.start < end and start < span.end for start, end in taken):
            merged.append(span)
    merged.sort(key=lambda s: s.start)
    return merged
