"""Tokenizing batches for the classifier: padded id and mask tensors, produced ahead of the forward pass.

Why not just ``tokenizer(batch, padding=True, ...)``: on the H200 one 4,096-text scoring pass took 1.13 s
while the GPU computed for 0.37 s (``bench/results/classify_cuda_profile.txt``); a one-off timing there put
tokenizing through that call at 6,600 texts/s, so the GPU waited on it for most of the pass. Two remedies,
both here:

- A fast tokenizer's Rust backend (``tokenizer.backend_tokenizer``) is called directly, with truncation
  and padding configured on a private copy of it: the same ids and mask (tested) without the Python
  wrapper's per-batch bookkeeping: 1.23x its texts/s on this project's CPU box
  (``bench/results/classify_cpu_tokenize.md``). Where the backend has ``encode_batch_fast`` (tokenizers
  0.21 and later), that entry point is used: it skips the character offsets of every token, which nothing
  here reads; the same ids (tested), 1.39x ``encode_batch``'s speed in a one-off interleaved timing on the
  benchmark's texts (1,024 texts, best of 4). Slow (pure Python) tokenizers go through the wrapper call.
- :meth:`BatchEncoder.iter_encoded` tokenizes the next batch on a helper thread while the caller runs the
  current one: the backend releases the GIL while it encodes, and CUDA kernels run asynchronously, so
  tokenizing overlaps the device's work instead of adding to it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch


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
        if self._backend is not None:
            self._encode_batch = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)

    @staticmethod
    def _configured_backend(tokenizer: Any, max_length: int) -> Any | None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.pad_token_id is None:
            return None
        backend = copy.deepcopy(backend)  # the caller's tokenizer keeps its own settings
        backend.enable_truncation(max_length)
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        return backend

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
        encodings = self._encode_batch(list(batch))
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return torch.from_numpy(ids), torch.from_numpy(mask)

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
