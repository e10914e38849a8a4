"""Keeps the values that redaction replaced, so the placeholders can be put back in the response.

The PII check redacts a prompt before it reaches the model provider (``"Mail [EMAIL_ADDRESS_1]"``) and
records ``[EMAIL_ADDRESS_1] -> alice@example.com`` here; after the output checks the guard calls
:meth:`Vault.restore` on the response, so the user sees the real value the provider never saw (LLM Guard's
Anonymize/Deanonymize pair). Values live in memory only, for as long as the vault object lives: the guard
makes one per call unless it is given a vault to share (for example one per conversation).
"""

from __future__ import annotations

import re
import threading
import uuid


class Vault:
    """A thread-safe, in-memory map of placeholder -> original value."""

    def __init__(self) -> None:
        # Names this vault's placeholder numbering in the PII engine, so its numbers never collide.
        self.key = f"vault:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, placeholder: str, value: str) -> None:
        """Remembers that ``placeholder`` stands for ``value``.

        Raises:
            ValueError: when the placeholder is empty or already stands for a different value (two
                values behind one placeholder could not both be restored).
        """
        if not placeholder:
            raise ValueError("a vault placeholder must not be empty")
        with self._lock:
            known = self._values.get(placeholder)
            if known is not None and known != value:
                raise ValueError(f"placeholder {placeholder} already stands for another value")
            if known is None:
                self._values[placeholder] = value
                self._pattern = None

    def get(self, placeholder: str) -> str | None:
        """The value behind ``placeholder``, or None."""
        with self._lock:
            return self._values.get(placeholder)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __contains__(self, placeholder: object) -> bool:
        with self._lock:
            return placeholder in self._values

    def placeholders(self) -> tuple[str, ...]:
        """Every placeholder held, in insertion order."""
        with self._lock:
            return tuple(self._values)

    def restore(self, text: str) -> str:
        """Returns ``text`` with every known placeholder replaced by its value (exact match)."""
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                # Longest first: "[PERSON_10]" must not be read as "[PERSON_1]" followed by "0]".
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(p) for p in ordered))
            pattern, values = self._pattern, dict(self._values)
        return pattern.sub(lambda m: values[m.group(0)], text)

    def restorer(self) -> StreamRestorer:
        """A restorer for a response that arrives in chunks (see :class:`StreamRestorer`)."""
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in a chunked response, where a placeholder may be split across chunks.

    :meth:`feed` returns what can be released now; it holds back a tail that could still grow into a
    placeholder (``"... [EMAIL_"``) until the next chunk decides it. :meth:`flush` releases the rest.
    """

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._pending = ""

    def feed(self, chunk: str) -> str:
        """Adds ``chunk``; returns the restored text that is safe to release."""
        text = self._pending + chunk
        keep = self._held_tail(text)
        self._pending = text[len(text) - keep :] if keep else ""
        return self._vault.restore(text[: len(text) - keep])

    def flush(self) -> str:
        """Releases whatever is held back, restored."""
        text, self._pending = self._pending, ""
        return self._vault.restore(text)

    def _held_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some placeholder."""
        placeholders = self._vault.placeholders()
        longest = max((len(p) for p in placeholders), default=0)
        for size in range(min(longest - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(p.startswith(tail) for p in placeholders):
                return size
        return 0
