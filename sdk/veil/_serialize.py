"""Bounded, never-raising conversion of arbitrary Python values to JSON text for span attributes.

Runs on the export thread. Every value becomes something: str, numbers, dicts, lists, tuples and sets as
JSON; pydantic models and dataclasses through their fields; bytes as their size only (binary payloads are
neither useful nor safe on a span); anything else as a bounded `repr`. Depth, items per container and the
length of each string are bounded before encoding, so a huge or cyclic object costs bounded work, and the
final text is cut to the attribute size limit with a visible marker.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

MAX_DEPTH = 8
MAX_ITEMS = 1000
MAX_REPR = 256
TRUNCATION_MARKER = "…[truncated by veil]"
_MARKER_BYTES = len(TRUNCATION_MARKER.encode("utf-8"))


def to_jsonable(value: Any, string_limit: int, _depth: int = 0) -> Any:
    """Returns a JSON-encodable copy of `value`, bounded in depth, items and string length.

    Never raises: an object whose conversion fails is replaced by a short description of its type.
    """
    # Exact-type checks first: they are the common case and much cheaper than ABC isinstance checks.
    cls = type(value)
    if cls is str:
        return value if len(value) <= string_limit else value[:string_limit] + TRUNCATION_MARKER
    if cls is int or cls is bool or value is None:
        return value
    if cls is float:
        # NaN and infinities are not JSON.
        return value if math.isfinite(value) else str(value)
    if _depth >= MAX_DEPTH:
        return f"<{cls.__name__} nested too deep>"
    try:
        if cls is dict:
            return _mapping(value, string_limit, _depth)
        if cls is list or cls is tuple:
            return _sequence(value, string_limit, _depth)
        return _convert_other(value, string_limit, _depth)
    except Exception:
        return f"<unserializable {cls.__name__}>"


def _mapping(value: Mapping[Any, Any], string_limit: int, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, (key, item) in enumerate(value.items()):
        if index == MAX_ITEMS:
            out["…"] = f"{len(value) - MAX_ITEMS} more items"
            break
        out[key if type(key) is str else str(key)] = to_jsonable(item, string_limit, depth + 1)
    return out


def _sequence(value: Any, string_limit: int, depth: int) -> list[Any]:
    items = [to_jsonable(item, string_limit, depth + 1) for item in itertools.islice(value, MAX_ITEMS)]
    if len(value) > MAX_ITEMS:
        items.append(f"…{len(value) - MAX_ITEMS} more items")
    return items


def _convert_other(value: Any, string_limit: int, depth: int) -> Any:
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, string_limit, depth + 1)
    for scalar in (str, int, float):
        if isinstance(value, scalar):
            # Other subclasses of the scalars, as the plain value.
            return to_jsonable(scalar(value), string_limit, depth + 1)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{type(value).__name__}: {len(value)} bytes>"
    if isinstance(value, Mapping):
        return _mapping(value, string_limit, depth)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _sequence(value, string_limit, depth)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        # pydantic v2 (OpenAI and Anthropic response objects are pydantic models).
        return to_jsonable(model_dump(), string_limit, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Shallow field access: dataclasses.asdict deep-copies, which is unbounded.
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return to_jsonable(fields, string_limit, depth + 1)
    return bounded_repr(value)


def bounded_repr(value: object) -> str:
    """Returns `repr(value)` cut to MAX_REPR characters, or a type description if `repr` fails."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + TRUNCATION_MARKER


def dumps(value: Any, limit: int) -> str:
    """Serializes `value` to JSON text of at most `limit` UTF-8 bytes (truncated with a marker)."""
    if isinstance(value, str):
        return truncate(value, limit)
    text = json.dumps(to_jsonable(value, limit), ensure_ascii=False, separators=(",", ":"))
    return truncate(text, limit)


@functools.lru_cache(maxsize=8)
def _json_encoder(string_limit: int) -> Callable[[Any], str]:
    """`encode_json`'s encoder for one limit, built once: `json.dumps` with options builds one per call."""
    return json.JSONEncoder(
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
        default=lambda obj: to_jsonable(obj, string_limit),
    ).encode


def encode_json(value: Any, string_limit: int) -> str:
    """JSON text of `value`, not truncated: the C encoder first, the bounded converter as the fallback.

    For values built of plain containers and strings (GenAI messages) this skips the Python-level walk.
    Objects the encoder does not know go through `to_jsonable`; NaN, cycles and other trouble send the
    whole value through `to_jsonable`.
    """
    try:
        return _json_encoder(string_limit)(value)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(to_jsonable(value, string_limit), ensure_ascii=False, separators=(",", ":"))


def truncate(text: str, limit: int) -> str:
    """Cuts `text` to at most `limit` UTF-8 bytes, ending it with TRUNCATION_MARKER when cut.

    The result is always valid UTF-8: lone surrogates (which would make the protobuf encoder reject the
    whole export batch) become "?".
    """
    if text.isascii():
        if len(text) <= limit:
            return text
        return text[: max(0, limit - _MARKER_BYTES)] + TRUNCATION_MARKER
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    return encoded[: max(0, limit - _MARKER_BYTES)].decode("utf-8", "ignore") + TRUNCATION_MARKER
