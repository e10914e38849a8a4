"""What replaces a detected entity: typed placeholder, mask, keyed pseudonym or nothing.

Placeholders are consistent within a trace: :class:`PlaceholderRegistry` keeps one value -> number map
per trace id in a bounded LRU, so ``jane@example.com`` is ``[EMAIL_1]`` in every span of that trace.

The SDK and the collector name values apart. The SDK numbers ``[EMAIL_1]`` in the app's process; the
collector replaces what reaches it unscrubbed in several processes (receiver workers, replicas, before
and after a restart) that share no state, so it cannot number: :func:`collector_placeholder` derives a
tag from a keyed hash of the trace id, the entity type and the value, ``[EMAIL_c3f9a1b20d4]``. Every
process holding the key gives a value the same tag within a trace; the lowercase ``c`` marker, which no
label (``[A-Z_]``) and no SDK number can hold, keeps the collector's placeholders from equalling the SDK's.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import threading
from collections import OrderedDict

from veil.pii.entities import CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, PHONE_NUMBER, US_SSN, placeholder_label
from veil.pii.recognizers import NUMBER_PUNCTUATION

__all__ = [
    "COLLECTOR_TAG_CHARS",
    "REPLACEMENT",
    "Operator",
    "PlaceholderRegistry",
    "TraceNumbering",
    "collector_placeholder",
    "normalize",
    "pseudonym",
]

COLLECTOR_TAG_CHARS = 10
"""Hex characters of a collector placeholder's tag: 40 bits, so 1,000 distinct values of one type in one
trace share a tag with probability about n(n-1)/2 / 2**40 = 4.5e-7."""
REPLACEMENT = re.compile(
    rf"\[[A-Z_]{{2,32}}(?:_[0-9]{{1,9}}|_c(?:[0-9a-f]{{{COLLECTOR_TAG_CHARS}}}|[0-9]{{1,9}})|:[0-9a-f]{{16}})\]"
)
"""Any replacement text the operators write: an SDK placeholder, a collector placeholder (with a tag, or
numbered as collectors before tags did: ``[EMAIL_c1]``), or a pseudonym."""

_NON_DIGITS = re.compile(r"[^0-9]+")
_LABEL_OF = {t: placeholder_label(t) for t in (CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, PHONE_NUMBER, US_SSN)}


class Operator(str, enum.Enum):
    """How a detected entity is replaced."""

    PLACEHOLDER = "placeholder"  # [EMAIL_1], numbered per trace (the collector's: [EMAIL_c<keyed tag>])
    MASK = "mask"  # every character replaced by the mask character (length kept)
    PSEUDONYM = "pseudonym"  # [EMAIL:<16 hex of HMAC-SHA256(secret, type + value)>], stable across traces
    DROP = "drop"  # removed


def normalize(entity_type: str, value: str) -> str:
    """Return the canonical form of a value, so formatting variants share a placeholder or pseudonym."""
    if entity_type == EMAIL_ADDRESS:
        return value.lower()
    if entity_type in (CREDIT_CARD, US_SSN, PHONE_NUMBER):
        # Pattern matches hold digits and number punctuation only: deleting that is cheaper than a regex.
        digits = value.translate(NUMBER_PUNCTUATION)
        return digits if digits.isascii() and digits.isdigit() else _NON_DIGITS.sub("", value)
    if entity_type == IBAN_CODE:
        return value.replace(" ", "").upper()
    return value


def pseudonym(secret: bytes, entity_type: str, value: str) -> str:
    """Return the keyed pseudonym of a value: the same secret and value always give the same text."""
    digest = hmac.new(secret, f"{entity_type}\x00{normalize(entity_type, value)}".encode(), hashlib.sha256)
    return f"[{placeholder_label(entity_type)}:{digest.hexdigest()[:16]}]"


def collector_placeholder(key: bytes, trace_id: str | None, entity_type: str, value: str) -> str:
    """Return the collector's placeholder of a value in a trace, ``[LABEL_c<tag>]``.

    The tag is the first :data:`COLLECTOR_TAG_CHARS` hex characters of HMAC-SHA256(key, trace id, entity
    type, normalized value): any process with the key gives the same value of a trace the same tag, with
    no state to share, while tags of other traces are unrelated and, without the key, nobody can confirm
    a guessed value from its tag. Values without a trace id share one namespace (the empty trace id).
    """
    # NUL separates the fields (neither a trace id nor an entity type holds one), so no two inputs meet;
    # the prefix keeps these digests apart from pseudonyms should an operator reuse one key for both.
    message = f"placeholder\x00{trace_id or ''}\x00{entity_type}\x00{normalize(entity_type, value)}"
    tag = hmac.digest(key, message.encode(), "sha256")[: COLLECTOR_TAG_CHARS // 2].hex()
    return f"[{_LABEL_OF.get(entity_type) or placeholder_label(entity_type)}_c{tag}]"


class PlaceholderRegistry:
    """Per-trace numbering of entity values, bounded in traces and in values per trace.

    Thread-safe. When a trace's map is full, new values get fresh numbers that are not remembered
    (still unique, no longer consistent); the least recently used trace is evicted when there are too
    many traces.

    Args:
        max_traces: Traces whose numbering is remembered.
        max_values_per_trace: Values numbered consistently per trace.
    """

    def __init__(self, max_traces: int = 4096, max_values_per_trace: int = 4096) -> None:
        if max_traces < 1 or max_values_per_trace < 1:
            raise ValueError("max_traces and max_values_per_trace must be at least 1")
        self._max_traces = max_traces
        self._max_values = max_values_per_trace
        self._traces: OrderedDict[str, TraceNumbering] = OrderedDict()
        self._lock = threading.Lock()

    def for_trace(self, trace_id: str | None) -> TraceNumbering:
        """Return the numbering for ``trace_id``; ``None`` gives a fresh, unshared numbering."""
        if trace_id is None:
            return TraceNumbering(self._max_values)
        with self._lock:
            trace_map = self._traces.get(trace_id)
            if trace_map is None:
                trace_map = self._traces[trace_id] = TraceNumbering(self._max_values)
                if len(self._traces) > self._max_traces:
                    self._traces.popitem(last=False)
            else:
                self._traces.move_to_end(trace_id)
            return trace_map

    def __len__(self) -> int:
        return len(self._traces)


class TraceNumbering:
    """The value -> number map of one trace (or of one call without a trace id); counters are per label.

    Args:
        max_values: Values remembered; later values get fresh numbers that are not remembered.
    """

    __slots__ = ("_counters", "_lock", "_max_values", "_numbers")

    def __init__(self, max_values: int) -> None:
        self._numbers: dict[tuple[str, str], int] = {}
        self._counters: dict[str, int] = {}
        self._max_values = max_values
        self._lock = threading.Lock()

    def placeholder(self, entity_type: str, value: str) -> str:
        """Return ``[LABEL_n]`` for the value: the same n for the same normalized value."""
        key = (entity_type, normalize(entity_type, value))
        label = _LABEL_OF.get(entity_type) or placeholder_label(entity_type)
        with self._lock:
            number = self._numbers.get(key)
            if number is None:
                number = self._counters.get(label, 0) + 1
                self._counters[label] = number
                if len(self._numbers) < self._max_values:
                    self._numbers[key] = number
        return f"[{label}_{number}]"
