"""Batch tokenization for the classifier: the Rust-backend path equals the tokenizer's own call."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_detoxify import WORDS
from transformers import AutoTokenizer

from veil_collector.classify.encoding import BatchEncoder

BATCHES = [
    ["", "hello", "Hello, World! ünïcödé 🙂"],
    [" ".join(WORDS[i % len(WORDS)] for i in range(n)) for n in (3, 40, 700)],  # 700 words: truncated
    ["one"],
]


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(models_dir / "original")


def reference(tokenizer: object, batch: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer(  # type: ignore[operator]
        batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


@pytest.mark.parametrize("max_length", [512, 16])
def test_backend_path_gives_the_tokenizers_own_ids_and_mask(tokenizer: object, max_length: int) -> None:
    before = (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding)  # type: ignore[attr-defined]
    encoder = BatchEncoder(tokenizer, max_length, torch.device("cpu"))
    assert encoder._backend is not None  # the tiny model's tokenizer is a fast one: the path under test
    # tokenizers >= 0.21 (pinned by transformers 5): the entry point without character offsets.
    assert encoder._encode_batch == encoder._backend.encode_batch_fast
    # The tokenizer handed in keeps its own settings: the encoder configured a copy of its backend.
    after = (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding)  # type: ignore[attr-defined]
    assert after == before and encoder._backend is not tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    for batch in BATCHES:
        ids, mask = encoder.tokenize(batch)
        expected_ids, expected_mask = reference(tokenizer, batch, max_length)
        assert ids.dtype == torch.int64 and mask.dtype == torch.int64
        assert torch.equal(ids, expected_ids)
        assert torch.equal(mask, expected_mask)
        assert ids.shape[1] <= max_length


# Pieces that exercise what BERT's normalizer does: case, every ASCII control character, the special
# tokens' own text (matched before normalization), accents and CJK (which must take the model's path).
PIECES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30),
    st.sampled_from(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[pad]"]),
    st.sampled_from(["Café", "naïve", "東京", "\u00a0"]),
    st.sampled_from(WORDS).map(str.upper),
)
TEXTS = st.lists(PIECES, max_size=12).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(TEXTS, min_size=1, max_size=6), max_length=st.sampled_from([512, 8]))
def test_ascii_texts_skip_bert_normalization_with_the_same_ids(
    tokenizer: object, batch: list[str], max_length: int
) -> None:
    encoder = BatchEncoder(tokenizer, max_length, torch.device("cpu"))
    assert encoder._encode_ascii is not None  # the tiny model's normalizer is BERT's, lowercasing
    ids, mask = encoder.tokenize(batch)
    expected_ids, expected_mask = reference(tokenizer, batch, max_length)
    assert torch.equal(ids, expected_ids)
    assert torch.equal(mask, expected_mask)


def test_iter_encoded_keeps_order_and_tokenizes_ahead_on_another_thread(tokenizer: object) -> None:
    encoder = BatchEncoder(tokenizer, 512, torch.device("cpu"))
    threads: list[str] = []
    tokenize = encoder.tokenize

    def recording(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        threads.append(threading.current_thread().name)
        return tokenize(batch)

    encoder.tokenize = recording  # type: ignore[method-assign]
    got = list(encoder.iter_encoded(BATCHES))
    assert len(got) == len(BATCHES)
    for (ids, mask), batch in zip(got, BATCHES, strict=True):
        expected_ids, expected_mask = reference(tokenizer, batch, 512)
        assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    assert all(name.startswith("veil-tokenize") for name in threads)
    threads.clear()
    (single,) = list(encoder.iter_encoded(BATCHES[:1]))  # one batch: nothing to overlap, no thread
    assert threads == [threading.current_thread().name]
    assert torch.equal(single[0], reference(tokenizer, BATCHES[0], 512)[0])


def test_a_tokenizer_without_a_rust_backend_goes_through_its_own_call(tokenizer: object) -> None:
    class PythonTokenizer:
        """Stands for a slow (pure-Python) tokenizer: callable, no ``backend_tokenizer``."""

        pad_token_id = 0

        def __call__(self, *args: object, **kwargs: object) -> object:
            return tokenizer(*args, **kwargs)  # type: ignore[operator]

    encoder = BatchEncoder(PythonTokenizer(), 512, torch.device("cpu"))
    assert encoder._backend is None
    ids, mask = encoder.tokenize(BATCHES[1])
    expected_ids, expected_mask = reference(tokenizer, BATCHES[1], 512)
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)


def test_a_packed_batch_holds_each_texts_ids_positions_and_start(tokenizer: object) -> None:
    encoder = BatchEncoder(tokenizer, 512, torch.device("cpu"))
    batch = [text for texts in BATCHES for text in texts]
    ids, mask = encoder.tokenize(batch)
    lengths = mask.sum(dim=1)

    packed = encoder.tokenize_packed(batch, position_offset=2)

    assert packed.buffer.dtype == torch.int64
    assert packed.starts.tolist() == [0, *torch.cumsum(lengths, 0).tolist()]
    assert packed.tokens == int(lengths.sum()) and packed.longest == int(lengths.max()) == 512
    for row, (start, end) in enumerate(itertools.pairwise(packed.starts.tolist())):
        assert packed.ids[start:end].tolist() == ids[row, : lengths[row]].tolist()
        assert packed.positions[start:end].tolist() == list(range(2, 2 + end - start))
    (moved,) = list(encoder.iter_packed([batch], position_offset=2))
    assert torch.equal(moved.buffer, packed.buffer) and moved.longest == packed.longest


def test_packing_needs_a_fast_tokenizer(tokenizer: object) -> None:
    class PythonTokenizer:
        pad_token_id = 0

    with pytest.raises(ValueError, match="packed batches need a fast tokenizer"):
        BatchEncoder(PythonTokenizer(), 512, torch.device("cpu")).tokenize_packed(["text"])
