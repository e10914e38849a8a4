"""Tokenizing batches for the classifier: padded id and mask tensors, produced ahead of the forward pass.

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
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tokenizers import normalizers

# The ASCII control characters BERT's clean-text step removes (tab, newline and carriage return it turns
# into spaces instead).
_REMOVED_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class BatchEncoder:
    """Turns batches of texts into ``(input_ids, attention_mask)`` on ``device``, padded per batch.

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
        self._encode_batch: Callable[[list[str]], list[Any]] | None = None
        self._encode_ascii: Callable[[list[str]], list[Any]] | None = None
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
        rows = self._encode_rows(batch, self._encode_batch)
        ids = np.full((len(rows), max(map(len, rows))), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros(ids.shape, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def _encode_rows(
        self, batch: Sequence[str], encode_batch: Callable[[list[str]], list[Any]]
    ) -> list[list[int]]:
        """Each text's ids (truncated, not padded), through the ASCII backend where it applies."""
        if self._encode_ascii is None:
            return [encoding.ids for encoding in encode_batch(list(batch))]
        plain = [text.isascii() and _REMOVED_CONTROLS.search(text) is None for text in batch]
        rows: list[list[int]] = [[] for _ in batch]
        for encode, wanted in ((self._encode_ascii, True), (encode_batch, False)):
            indices = [i for i, is_plain in enumerate(plain) if is_plain is wanted]
            if indices:
                for i, encoding in zip(indices, encode([batch[i] for i in indices]), strict=True):
                    rows[i] = encoding.ids
        return rows

    def to_device(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            return (
                ids.pin_memory().to(self.device, non_blocking=True),
                mask.pin_memory().to(self.device, non_blocking=True),
            )
        return ids.to(self.device), mask.to(self.device)

    def iter_encoded(self, batches: Sequence[Sequence[str]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's tensors on the device, in order; batch k + 1 is tokenized while the caller works
        on batch k. A single batch is tokenized on the calling thread (nothing to overlap)."""
        if len(batches) == 1:
            yield self.to_device(*self.tokenize(batches[0]))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-tokenize") as pool:
            pending: Future[tuple[torch.Tensor, torch.Tensor]] = pool.submit(self.tokenize, batches[0])
            for following in [*batches[1:], None]:
                ids, mask = pending.result()
                if following is not None:
                    pending = pool.submit(self.tokenize, following)
                yield self.to_device(ids, mask)


def _batch_entry_point(backend: Any) -> Callable[[list[str]], list[Any]]:
    """``encode_batch_fast`` where the backend has it (tokenizers 0.21 and later), else ``encode_batch``."""
    return getattr(backend, "encode_batch_fast", backend.encode_batch)
