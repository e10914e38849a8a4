"""Checks a streamed response over a sliding window of chunks, before each chunk reaches the consumer.

New chunks wait in ``pending`` until ``stride`` of them arrived (or the stream ended); then the output
checks see the last ``window`` released chunks plus the pending ones, so a violation that straddles chunk
boundaries is still seen whole. Passing chunks are released unchanged; on a redaction the pending chunks
are released as the redacted text. A block is the caller's to act on (it stops the stream).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from veil.guardrails import _payload
from veil.guardrails._result import GuardResult
from veil.guardrails.vault import StreamRestorer, Vault


class StreamWindow:
    """The sliding-window state of one guarded stream.

    Args:
        window: How many released chunks stay in view as context for the next check.
        stride: How many new chunks are checked together (1 = every chunk, the lowest latency).
        vault: When set, placeholders in released chunks are restored (split placeholders included).
    """

    def __init__(self, *, window: int, stride: int, vault: Vault | None) -> None:
        self._history: deque[str] = deque(maxlen=window)
        self._pending: list[Any] = []
        self._pending_texts: list[str] = []
        self._stride = stride
        self._vault = vault
        self._restorer: StreamRestorer | None = None

    def add(self, chunk: Any) -> bool:
        """Queues ``chunk``; True when enough chunks wait for a check."""
        self._pending.append(chunk)
        self._pending_texts.append("".join(_payload.texts(chunk)))
        return len(self._pending) >= self._stride

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def text(self) -> str:
        """What the output checks look at: the context window followed by the pending chunks."""
        return "".join(self._history) + "".join(self._pending_texts)

    def release(self, result: GuardResult) -> list[Any] | None:
        """The chunks to hand to the consumer after a passing (or flagged, or redacting) ``result``.

        Returns None when the result redacted text that cannot be put back into the pending chunks (they
        are not plain strings): the caller must then treat the stream as blocked.
        """
        chunks, texts = self._pending, self._pending_texts
        self._pending, self._pending_texts = [], []
        checked = "".join(self._history) + "".join(texts)
        if result.text != checked:
            context = "".join(self._history)
            # The part of the context the redaction left alone was released already and stays so.
            kept = _common_prefix_length(context, result.text)
            redacted = result.text[kept:]
            if all(isinstance(chunk, str) for chunk in chunks):
                chunks = [redacted]
            elif len(chunks) == 1 and len(_payload.texts(chunks[0])) == 1:
                chunks = [_payload.replace(chunks[0], [redacted])]
            else:
                return None
            texts = [redacted]
        self._history.extend(texts)
        return [restored for chunk in chunks if (restored := self._restore(chunk)) != ""]

    def finish(self) -> list[str]:
        """What the vault restorer still holds back at the end of the stream."""
        if self._restorer is None:
            return []
        rest = self._restorer.flush()
        return [rest] if rest else []

    def _restore(self, chunk: Any) -> Any:
        if self._vault is None or not len(self._vault):
            return chunk
        if isinstance(chunk, str):
            if self._restorer is None:
                self._restorer = self._vault.restorer()
            return self._restorer.feed(chunk)
        return _payload.replace(chunk, [self._vault.restore(t) for t in _payload.texts(chunk)])


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
