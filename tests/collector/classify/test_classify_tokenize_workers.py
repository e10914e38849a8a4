"""Tokenizing in worker processes: the ids the scoring process gets itself; a failed worker loses no text."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tiny_detoxify import WORDS
from transformers import AutoTokenizer

from veil_collector.classify.encoding import BatchEncoder
from veil_collector.classify.tokenize_workers import TokenizerWorkerError, TokenizerWorkers

BATCH = [
    "",
    "Hello, World! ünïcödé 🙂",
    *(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n)) for i, n in enumerate((1, 5, 40, 700, 9))),
    "tab\there\x07bell",
]


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(models_dir / "original")


@pytest.fixture
def in_process(tokenizer: object) -> BatchEncoder:
    return BatchEncoder(tokenizer, 512, torch.device("cpu"))


@pytest.fixture
def with_workers(tokenizer: object) -> BatchEncoder:
    encoder = BatchEncoder(tokenizer, 512, torch.device("cpu"), workers=3)
    yield encoder
    encoder.close()


def test_workers_give_the_same_ids_as_the_scoring_process(
    in_process: BatchEncoder, with_workers: BatchEncoder
) -> None:
    assert with_workers.workers == 3
    for batch in (BATCH, BATCH[:2], BATCH[3:4]):  # more texts than workers, fewer, one
        ids, mask = with_workers.tokenize(batch)
        expected_ids, expected_mask = in_process.tokenize(batch)
        assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
        packed, expected = with_workers.tokenize_packed(batch, 2), in_process.tokenize_packed(batch, 2)
        assert torch.equal(packed.buffer, expected.buffer) and packed.longest == expected.longest


def test_packed_batch_holds_each_texts_ids_positions_and_start(in_process: BatchEncoder) -> None:
    ids, mask = in_process.tokenize(BATCH)
    lengths = mask.sum(dim=1)

    packed = in_process.tokenize_packed(BATCH, position_offset=2)

    assert packed.starts.tolist() == [0, *torch.cumsum(lengths, 0).tolist()]
    assert packed.tokens == int(lengths.sum()) and packed.longest == int(lengths.max())
    for row, (start, end) in enumerate(zip(packed.starts.tolist(), packed.starts.tolist()[1:], strict=False)):
        assert packed.ids[start:end].tolist() == ids[row, : lengths[row]].tolist()
        assert packed.positions[start:end].tolist() == list(range(2, 2 + end - start))


def test_a_dead_worker_sends_the_encoder_back_to_tokenizing_itself(
    in_process: BatchEncoder, with_workers: BatchEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    workers = with_workers._workers
    assert workers is not None
    victim = workers._workers[1][0]
    victim.kill()
    victim.wait()

    with caplog.at_level(logging.ERROR):
        ids, mask = with_workers.tokenize(BATCH)  # this batch is not lost: tokenized in this process

    expected_ids, expected_mask = in_process.tokenize(BATCH)
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    assert with_workers.workers == 0
    assert "tokenizer workers failed" in caplog.text and "exited" in caplog.text
    assert all(process.poll() is not None for process, _ in workers._workers) or not workers._workers
    with caplog.at_level(logging.ERROR):
        caplog.clear()
        with_workers.tokenize(BATCH)
    assert caplog.text == ""  # logged once, not per batch


def test_closing_stops_every_worker_and_is_idempotent(with_workers: BatchEncoder) -> None:
    workers = with_workers._workers
    assert workers is not None
    processes = [process for process, _ in workers._workers]

    with_workers.close()
    with_workers.close()

    assert all(process.returncode == 0 for process in processes)  # ended by the closed connection
    assert with_workers.workers == 0
    assert with_workers.tokenize(["still works"])[0].shape == (1, 4)


def test_bad_worker_counts_are_refused(tokenizer: object) -> None:
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        BatchEncoder(tokenizer, 512, torch.device("cpu"), workers=-1)
    with pytest.raises(ValueError, match="count must be at least 1"):
        TokenizerWorkers(object(), None, 0)


def test_a_worker_that_fails_a_slice_says_why(tokenizer: object) -> None:
    """A text the backend cannot take (not a string) fails in the worker; the parent hears the reason."""
    encoder = BatchEncoder(tokenizer, 512, torch.device("cpu"), workers=1)
    workers = encoder._workers
    assert workers is not None
    try:
        with pytest.raises(TokenizerWorkerError, match=r"a tokenizer worker failed: \w*Error"):
            workers.encode([b"bytes"])  # type: ignore[list-item]
        lengths, ids = workers.encode(["still serving"])  # the worker stays usable
        assert lengths.tolist() == [4] and len(ids) == 4
    finally:
        encoder.close()
