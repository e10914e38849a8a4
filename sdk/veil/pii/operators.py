"""What replaces a detected entity: typed placeholder, mask, keyed pseudonym or nothing.

Placeholders are consistent within a trace: :class:`PlaceholderRegistry` keeps one value -> number map
per trace id in a bounded LRU, so ``jane@example.com`` is ``[EMAIL_1]`` in every span of that trace.

The SDK and the collector number apart. The SDK numbers ``[EMAIL_1]`` in the app's process; the
collector numbers what reaches it unscrubbed without having seen the whole trace (spans arrive late, on
other replicas, after restarts), so it numbers in its own namespace, ``[EMAIL_c1]``: a lowercase marker
that no label (``[A-Z_]``) and no SDK number can hold, so its placeholders never equal the SDK's.
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

__all__ = ["REPLACEMENT", "Operator", "PlaceholderRegistry", "TraceNumbering", "normalize", "pseudonym"]

_COLLECTOR_MARKER = "c"  # between a collector placeholder's label and its number
REPLACEMENT = re.compile(rf"\[[A-Z_]{{2,32}}(?:_{_COLLECTOR_MARKER}?[0-9]{{1,9}}|:[0-9a-f]{{16}})\]")
"""Any replacement text the operators write: an SDK or collector placeholder, or a pseudonym."""

_NON_DIGITS = re.compile(r"[^0-9]+")
_LABEL_OF = {t: placeholder_label(t) for t in (CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, PHONE_NUMBER, US_SSN)}


class Operator(str, enum.Enum):
    """How a detected entity is replaced."""

    PLACEHOLDER = "placeholder"  # [EMAIL_1] (the collector's: [EMAIL_c1]), numbered per trace
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


class PlaceholderRegistry:
    """Per-trace numbering of entity values, bounded in traces and in values per trace.

    Thread-safe. When a trace's map is full, new values get fresh numbers that are not remembered
    (still unique, no longer consistent); the least recently used trace is evicted when there are too
    many traces.

    Args:
        max_traces: Traces whose numbering is remembered.
        max_values_per_trace: Values numbered consistently per trace.
        collector: Number in the collector's namespace (``[EMAIL_c1]``) instead of the SDK's.
    """

    def __init__(
        self, max_traces: int = 4096, max_values_per_trace: int = 4096, *, collector: bool = False
    ) -> None:
        if max_traces < 1 or max_values_per_trace < 1:
            raise ValueError("max_traces and max_values_per_trace must be at least 1")
        self._max_traces = max_traces
        self._max_values = max_values_per_trace
        self._marker = _COLLECTOR_MARKER if collector else ""
        self._traces: OrderedDict[str, TraceNumbering] = OrderedDict()
        self._lock = threading.Lock()

    def for_trace(self, trace_id: str | None) -> TraceNumbering:
        """Return the numbering for ``trace_id``; ``None`` gives a fresh, unshared numbering."""
        if trace_id is None:
            return TraceNumbering(self._max_values, self._marker)
        with self._lock:
            trace_map = self._traces.get(trace_id)
            if trace_map is None:
                trace_map = self._traces[trace_id] = TraceNumbering(self._max_values, self._marker)
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
        marker: Written before each number: ``""`` for the SDK, ``"c"`` for the collector.
    """

    __slots__ = ("_counters", "_lock", "_marker", "_max_values", "_numbers")

    def __init__(self, max_values: int, marker: str = "") -> None:
        self._numbers: dict[tuple[str, str], int] = {}
        self._counters: dict[str, int] = {}
        self._max_values = max_values
        self._marker = marker
        self._lock = threading.Lock()

    def placeholder(self, entity_type: str, value: str) -> str:
        """Return ``[LABEL_n]`` (with the marker, ``[LABEL_cn]``) for the value: the same n for the same
        normalized value."""
        key = (entity_type, normalize(entity_type, value))
        label = _LABEL_OF.get(entity_type) or placeholder_label(entity_type)
        with self._lock:
            number = self._numbers.get(key)
            if number is None:
                number = self._counters.get(label, 0) + 1
                self._counters[label] = number
                if len(self._numbers) < self._max_values:
                    self._numbers[key] = number
        return f"[{label}_{self._marker}{number}]"
