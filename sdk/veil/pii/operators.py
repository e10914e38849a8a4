"""What replaces a detected entity: typed placeholder, mask, keyed pseudonym or nothing.

Placeholders are consistent within a trace: :class:`PlaceholderRegistry` keeps one value -> number map
per trace id in a bounded LRU, so ``jane@example.com`` is ``[EMAIL_1]`` in every span of that trace.
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

__all__ = ["Operator", "PlaceholderRegistry", "TraceNumbering", "normalize", "pseudonym"]

_NON_DIGITS = re.compile(r"[^0-9]+")
_LABEL_OF = {t: placeholder_label(t) for t in (CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, PHONE_NUMBER, US_SSN)}


class Operator(str, enum.Enum):
    """How a detected entity is replaced."""

    PLACEHOLDER = "placeholder"  # [EMAIL_1], numbered per trace
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
    """The value -> number map of one trace (or of one call without a trace id); counters are per label."""

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

    def reserve(self, label: str, number: int) -> None:
        """Make new values of ``label`` (``EMAIL``) get numbers above ``number`` (already used elsewhere)."""
        with self._lock:
            if number > self._counters.get(label, 0):
                self._counters[label] = number
