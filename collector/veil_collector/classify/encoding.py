"""Tokenizing batches for the classifier: padded ids and masks, or packed batches, ahead of the forward pass.

Why not just ``tokenizer(batch, padding=True, ...)``: on the H200 one 4,096-text scoring pass took 1.13 s
while the GPU computed for 0.37 s (``bench/results/classify_cuda_profile.txt``); a one-off timing there put
tokenizing through that call at 6,600 texts/s, so the GPU waited on it for most of the pass. The remedies,
all here:

- A fast tokenizer's Rust backend (``tokenizer.backend_tokenizer``) is called directly, with truncation
  configured on a private copy of it, and each batch padded here: the same ids and mask (tested) without
  the Python wrapper's per-batch bookkeeping (1.23x its texts/s on this project's CPU box before the two
  steps below). Where the backend has ``encode_batch_fast`` (tokenizers 0.21 and later), that entry point
  is used: it skips the character offsets of every token, which nothing here reads; the same ids (tested),
  1.39x ``encode_batch``'s speed in a one-off interleaved timing on the benchmark's texts (1,024 texts,
  best of 4). Slow (pure Python) tokenizers go through the wrapper call.
- ASCII texts skip BERT's normalizer where it cannot change them: for a text of ASCII characters without
  control characters other than tab, newline and carriage return, ``BertNormalizer`` (clean text, Chinese
  characters, accents, lowercase) does nothing but lowercase and turn those three into spaces, which the
  pre-tokenizer splits on anyway. Such texts go through a second copy of the backend whose normalizer only
  lowercases; others through the model's own. The same ids (a property test over arbitrary ASCII, special
  tokens' text included). With it and ``encode_batch_fast`` the encoder tokenizes the benchmark's texts at
  2.11x the tokenizer call's rate on this project's CPU box (``bench/results/classify_cpu_tokenize.md``);
  what it saves is the normalizer's per-character alignment bookkeeping.
- :meth:`BatchEncoder.iter_encoded` tokenizes the next batch on a helper thread while the caller runs the
  current one: the backend releases the GIL while it encodes, and CUDA kernels run asynchronously, so
  tokenizing overlaps the device's work instead of adding to it.
- :meth:`BatchEncoder.iter_packed` produces a batch without padding (:class:`PackedBatch`) for models that
  run packed (``toxicity.py``): the ids of all texts in one row, each text's positions, and where each text
  starts, in one pinned buffer that reaches the device in one asynchronous copy.
- Tried and not adopted: tokenizing in worker processes (one core each) instead of the backend's thread
  pool, to take the GIL and the cores off the process that launches the forward passes. On the H100 with
  packed batches it ran predict() at 1.04x with 12 workers and 1.00x with 8, on 16 cores
  (``bench/results/classify.md``); the code is in the history (commit 1a97355).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from tokenizers import normalizers

# The ASCII control characters BERT's clean-text step removes (tab, newline and carriage return it turns
# into spaces instead).
_REMOVED_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

EncodeBatch = Callable[[list[str]], list[Any]]

_Host = TypeVar("_Host")
_Device = TypeVar("_Device")


@dataclass(frozen=True)
class PackedBatch:
    """A batch without padding: the texts' tokens one after another, as one sequence, in one int64 buffer
    (``ids``, then ``positions``, then ``starts``), so that it reaches the device in one copy.

    Attributes:
        buffer: the whole buffer, ``2 * tokens + texts + 1`` long.
        tokens: how many tokens the texts have together (after truncation).
        longest: the longest text's token count.
    """

    buffer: torch.Tensor
    tokens: int
    longest: int

    @property
    def ids(self) -> torch.Tensor:
        """``(tokens,)``: every text's ids, text after text."""
        return self.buffer[: self.tokens]

    @property
    def positions(self) -> torch.Tensor:
        """``(tokens,)``: each token's position within its text, plus the model's first position."""
        return self.buffer[self.tokens : 2 * self.tokens]

    @property
    def starts(self) -> torch.Tensor:
        """``(texts + 1,)``: where each text starts in ``ids`` and, last, ``tokens`` (flash attention's
        ``cu_seqlens``)."""
        return self.buffer[2 * self.tokens :]

    def to(self, device: torch.device) -> PackedBatch:
        """This batch on ``device``; asynchronous where the buffer is pinned and ``device`` is CUDA."""
        return PackedBatch(self.buffer.to(device, non_blocking=True), self.tokens, self.longest)


class BatchEncoder:
    """Turns batches of texts into ``(input_ids, attention_mask)`` on ``device``, padded per batch, or into
    packed batches without padding (:class:`PackedBatch`).

    Args:
        tokenizer: a Hugging Face tokenizer (detoxify's ``.tokenizer``).
        max_length: texts are truncated to this many tokens, special tokens included.
        device: where the tensors go; on CUDA they are copied from pinned memory without blocking.
    """

    def __init__(self, tokenizer: Any, max_length: int, device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device
        self._backend = self._configured_backend(tokenizer, max_length)
        self._encode_batch: EncodeBatch | None = None
        self._encode_ascii: EncodeBatch | None = None
        if self._backend is not None:
            self._encode_batch = _batch_entry_point(self._backend)
            ascii_backend = self._ascii_backend(self._backend)
            if ascii_backend is not None:
                self._encode_ascii = _batch_entry_point(ascii_backend)

    @staticmethod
    def _configured_backend(tokenizer: Any, max_length: int) -> Any | None:
        """A copy of the tokenizer's Rust backend that truncates (padding is done here, per batch)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.pad_token_id is None:
            return None
        backend = copy.deepcopy(backend)  # the caller's tokenizer keeps its own settings
        backend.enable_truncation(max_length)
        backend.no_padding()
        return backend

    @staticmethod
    def _ascii_backend(backend: Any) -> Any | None:
        """A copy of ``backend`` that only lowercases, where its normalizer is BERT's and lowercases (see
        the module docstring); else None."""
        normalizer = backend.normalizer
        bert = isinstance(normalizer, normalizers.BertNormalizer)
        if not (bert and normalizer.clean_text and normalizer.lowercase):
            return None
        ascii_backend = copy.deepcopy(backend)
        ascii_backend.normalizer = normalizers.Lowercase()
        return ascii_backend

    def tokenize(self, batch: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask of ``batch`` on the CPU, padded to its longest text (after truncation)."""
        if self._encode_batch is None:
            encoded = self.tokenizer(
                list(batch),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            return encoded["input_ids"], encoded["attention_mask"]
        lengths, ids = self._encode_flat(batch, self._encode_batch)
        # Row i's ids fill the first lengths[i] places of row i: a boolean mask assigns in row-major order.
        mask = np.arange(int(lengths.max())) < lengths[:, None]
        padded = np.full(mask.shape, self.tokenizer.pad_token_id, dtype=np.int64)
        padded[mask] = ids
        return torch.from_numpy(padded), torch.from_numpy(mask.astype(np.int64))

    def tokenize_packed(self, batch: Sequence[str], position_offset: int = 0) -> PackedBatch:
        """``batch`` as a :class:`PackedBatch` on the CPU, pinned where the device is CUDA.
        ``position_offset``: the model's first position (RoBERTa's embeddings count from
        ``padding_idx + 1``, BERT's from 0).

        Raises:
            ValueError: the tokenizer has no Rust backend (packing needs its ids per text).
        """
        if self._encode_batch is None:
            raise ValueError("packed batches need a fast tokenizer (one with a Rust backend)")
        lengths, ids = self._encode_flat(batch, self._encode_batch)
        tokens = len(ids)
        pinned = self.device.type == "cuda"
        buffer = torch.empty(2 * tokens + len(lengths) + 1, dtype=torch.int64, pin_memory=pinned)
        host = buffer.numpy()
        starts = host[2 * tokens :]
        starts[0] = 0
        np.cumsum(lengths, out=starts[1:])
        host[:tokens] = ids
        # Each token's index minus its text's start, repeated over the text's tokens.
        host[tokens : 2 * tokens] = np.arange(tokens) - np.repeat(starts[:-1], lengths) + position_offset
        return PackedBatch(buffer, tokens, int(lengths.max()))

    def _encode_flat(self, batch: Sequence[str], encode_batch: EncodeBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's ids as ``(lengths, ids)``: int32 arrays, the ids of all texts one after another;
        through the ASCII backend where it applies (see the module docstring)."""
        if self._encode_ascii is None:
            rows = [encoding.ids for encoding in encode_batch(list(batch))]
        else:
            plain = [text.isascii() and _REMOVED_CONTROLS.search(text) is None for text in batch]
            rows = [[] for _ in batch]
            for encode, wanted in ((self._encode_ascii, True), (encode_batch, False)):
                indices = [i for i, is_plain in enumerate(plain) if is_plain is wanted]
                if indices:
                    for i, encoding in zip(indices, encode([batch[i] for i in indices]), strict=True):
                        rows[i] = encoding.ids
        lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
        ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
        return lengths, ids

    def to_device(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            return (
                ids.pin_memory().to(self.device, non_blocking=True),
                mask.pin_memory().to(self.device, non_blocking=True),
            )
        return ids.to(self.device), mask.to(self.device)

    def iter_encoded(self, batches: Sequence[Sequence[str]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's padded tensors on the device, in order; batch k + 1 is tokenized while the caller
        works on batch k (:meth:`_ahead`)."""
        return self._ahead(batches, self.tokenize, lambda encoded: self.to_device(*encoded))

    def iter_packed(
        self, batches: Sequence[Sequence[str]], position_offset: int = 0
    ) -> Iterator[PackedBatch]:
        """Each batch as a :class:`PackedBatch` on the device, in order, tokenized ahead like
        :meth:`iter_encoded`'s."""
        return self._ahead(
            batches,
            lambda batch: self.tokenize_packed(batch, position_offset),
            lambda packed: packed.to(self.device),
        )

    @staticmethod
    def _ahead(
        batches: Sequence[Sequence[str]],
        tokenize: Callable[[Sequence[str]], _Host],
        to_device: Callable[[_Host], _Device],
    ) -> Iterator[_Device]:
        """``to_device(tokenize(batch))`` for each batch, tokenizing batch k + 1 on a helper thread while
        the caller works on batch k. A single batch is tokenized on the calling thread (nothing to
        overlap)."""
        if len(batches) == 1:
            yield to_device(tokenize(batches[0]))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-tokenize") as pool:
            pending: Future[_Host] = pool.submit(tokenize, batches[0])
            for following in [*batches[1:], None]:
                encoded = pending.result()
                if following is not None:
                    pending = pool.submit(tokenize, following)
                yield to_device(encoded)


def _batch_entry_point(backend: Any) -> EncodeBatch:
    """``encode_batch_fast`` where the backend has it (tokenizers 0.21 and later), else ``encode_batch``."""
    return getattr(backend, "encode_batch_fast", backend.encode_batch)
