"""Finds the texts inside a call's arguments and return value, and puts redacted texts back.

Recognised: plain strings, lists and tuples of them, and dicts whose content keys hold text: chat
messages (``{"role": "user", "content": "..."}``), content parts (``{"type": "text", "text": "..."}``) and
prompt/completion dicts. Other objects pass through unchecked; nothing is mutated, redaction builds copies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Keys whose values are user or model content; "role", "type", "id", "model" and the like are not.
CONTENT_KEYS: frozenset[str] = frozenset(
    {"content", "text", "prompt", "input", "query", "question", "message", "messages", "output", "completion"}
)


def texts(value: Any) -> list[str]:
    """Every text inside ``value``, in order."""
    found: list[str] = []
    _walk(value, found.append)
    return found


def replace(value: Any, new_texts: list[str]) -> Any:
    """``value`` with its texts (as :func:`texts` lists them) replaced, in order, by ``new_texts``."""
    it = iter(new_texts)
    return _rebuild(value, lambda _old: next(it))


def _walk(value: Any, visit: Callable[[str], None]) -> None:
    if isinstance(value, str):
        visit(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _walk(item, visit)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in CONTENT_KEYS:
                _walk(item, visit)


def _rebuild(value: Any, new: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return new(value)
    if isinstance(value, list):
        return [_rebuild(item, new) for item in value]
    if isinstance(value, tuple):
        items = [_rebuild(item, new) for item in value]
        # Named tuples rebuild through their fields; plain tuples through the iterable constructor.
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {key: _rebuild(item, new) if key in CONTENT_KEYS else item for key, item in value.items()}
    return value
