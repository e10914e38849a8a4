"""The variable-length flash attention path of the toxicity classifier.

The flash kernel is CUDA-only, so on this CPU-only machine the plumbing around it (packing the padded batch,
``transformers``' attention interface, the keyword arguments, the output layout) runs against a reference
kernel written here: plain attention over each sequence's first ``seqused_k`` keys. That fake stands in
for the one thing that cannot exist here, the CUDA kernel; the model, its loading and our code are real.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import torch
from tiny_detoxify import WORDS
from transformers import RobertaConfig, RobertaForSequenceClassification

from veil_collector.classify import toxicity, varlen_attention
from veil_collector.classify.loader import load_model, resolve_model
from veil_collector.classify.toxicity import ToxicityClassifier, resolve_attention
from veil_collector.classify.varlen_attention import varlen_kwargs

Calls = list[tuple[tuple[int, ...], tuple[int, ...] | None]]


def _reference_kernel(
    calls: list[tuple[tuple[int, ...], tuple[int, ...] | None]],
) -> object:
    """What the flash kernel computes (see the module docstring), recording each call's ``cu_seqlens`` and
    ``seqused_k`` (None for a packed batch)."""

    def kernel(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        cu_seqlens: torch.Tensor,
        seqused_k: torch.Tensor | None,
        max_length: int,
        scale: float | None,
    ) -> torch.Tensor:
        starts = cu_seqlens.tolist()
        calls.append((tuple(starts), tuple(seqused_k.tolist()) if seqused_k is not None else None))
        # Keys a sequence may read: its first seqused_k rows, or (packed) all rows up to the next start.
        used = seqused_k.tolist() if seqused_k is not None else [b - a for a, b in itertools.pairwise(starts)]
        # Poison every padded key and value: a kernel that read one would turn the outputs into NaN.
        key, value = key.clone(), value.clone()
        output = torch.empty_like(query)
        for start, end, count in zip(starts, starts[1:], used, strict=False):
            key[start + count : end] = float("nan")
            value[start + count : end] = float("nan")
        for start, end, count in zip(starts, starts[1:], used, strict=False):
            output[start:end] = torch.nn.functional.scaled_dot_product_attention(
                query[start:end].transpose(0, 1),
                key[start : start + count].transpose(0, 1),
                value[start : start + count].transpose(0, 1),
                scale=scale,
            ).transpose(0, 1)
        return output

    return kernel


@pytest.fixture
def fake_flash(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Makes flash-varlen available on the CPU through the reference kernel; yields its calls."""
    calls: Calls = []
    monkeypatch.setattr(varlen_attention, "flash_varlen", _reference_kernel(calls))
    monkeypatch.setattr(toxicity, "flash_varlen_supported", lambda device, dtype: True)
    return calls


def _texts(count: int) -> list[str]:
    return [
        " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range([2, 9, 30, 120][i % 4] + i))
        for i in range(count)
    ]


def test_flash_varlen_is_not_offered_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert not varlen_attention.flash_varlen_supported(cpu, torch.bfloat16)
    assert resolve_attention("auto", cpu, torch.bfloat16) == "sdpa"
    with pytest.raises(ValueError, match="flash-varlen attention needs CUDA"):
        resolve_attention("flash-varlen", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="attention must be one of"):
        resolve_attention("flash", cpu, torch.float32)


def _assert_same_scores(want: list[dict[str, float]], have: list[dict[str, float]]) -> None:
    assert len(have) == len(want)
    for expected, got in zip(want, have, strict=True):
        assert list(got) == list(expected)
        for label in expected:
            assert got[label] == pytest.approx(expected[label], abs=1e-5)


def test_packed_scores_equal_masked_sdpa_scores(models_dir: Path, fake_flash: Calls) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    options = {"batch_size": 4, "precision": "fp32"}
    masked = ToxicityClassifier.from_loaded(loaded, attention="sdpa", **options)
    packed = ToxicityClassifier.from_loaded(loaded, attention="flash-varlen", **options)
    assert (masked.attention, packed.attention) == ("sdpa", "flash-varlen")
    assert packed.packed is toxicity.PACKED_HEADS["bert"] and masked.packed is None
    texts = _texts(13)

    expected, got = masked.predict(texts), packed.predict(texts)

    _assert_same_scores(expected, got)
    layers = loaded.detoxify.model.config.num_hidden_layers
    assert len(fake_flash) == layers * 4  # batches of 4, 4, 4 and 1 text: every layer went through it
    lengths = sorted(int(mask.sum()) for mask in packed._encoder.tokenize(texts)[1])
    assert all(used is None for _, used in fake_flash)  # packed: no padded key to skip
    # Each text's own token count and nothing more: no padded token in any batch.
    first_layer_calls = [starts for starts, _ in fake_flash[::layers]]
    assert sorted(b - a for starts in first_layer_calls for a, b in itertools.pairwise(starts)) == lengths
    # The caller's model keeps its attention: the classifier switched a copy.
    assert loaded.detoxify.model.config._attn_implementation == "sdpa"


def test_a_model_that_skips_the_kernel_on_a_packed_batch_is_rerun_padded(
    models_dir: Path, fake_flash: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``transformers`` version whose model ignored the attention interface would let packed texts attend
    to each other; here the classifier's model is switched back to SDPA to stand for one."""
    loaded = load_model(resolve_model("original", models_dir))
    options = {"batch_size": 4, "precision": "fp32"}
    masked = ToxicityClassifier.from_loaded(loaded, attention="sdpa", **options)
    packed = ToxicityClassifier.from_loaded(loaded, attention="flash-varlen", **options)
    packed.model.set_attn_implementation("sdpa")
    texts = _texts(9)

    with caplog.at_level(logging.ERROR):
        got = packed.predict(texts)

    _assert_same_scores(masked.predict(texts), got)  # rerun padded, with the model's own masked attention
    assert packed.packed is None and not fake_flash
    assert "0 of the model's 2 attention layers ran veil_varlen attention on a packed batch" in caplog.text
    assert "running padded batches from now on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        packed.predict(texts)
    assert caplog.text == ""  # said once


def test_padded_varlen_scores_equal_masked_sdpa_scores(models_dir: Path, fake_flash: Calls) -> None:
    """The layout of model types without a known packed head (the ALBERT-based small models)."""
    loaded = load_model(resolve_model("original", models_dir))
    # Loose padding bound: batches mix lengths, so every batch but the last has padded keys to skip.
    options = {"batch_size": 4, "precision": "fp32", "max_padding": 0.95}
    masked = ToxicityClassifier.from_loaded(loaded, attention="sdpa", **options)
    padded = ToxicityClassifier.from_loaded(loaded, attention="flash-varlen", **options)
    padded.packed = None
    texts = _texts(13)

    _assert_same_scores(masked.predict(texts), padded.predict(texts))
    layers = loaded.detoxify.model.config.num_hidden_layers
    assert len(fake_flash) == layers * 4
    assert all(used is not None for _, used in fake_flash)
    assert any(len(set(used)) > 1 for _, used in fake_flash if used is not None)  # batches held padding


def test_a_roberta_model_runs_packed_with_positions_after_its_padding_index(
    models_dir: Path, fake_flash: Calls
) -> None:
    """detoxify's ``unbiased`` and ``multilingual`` models are RoBERTa and XLM-R, whose positions start at
    ``padding_idx + 1``: a tiny random RoBERTa on the tiny model's tokenizer (its pad id is the model's)."""
    tokenizer = load_model(resolve_model("original", models_dir)).detoxify.tokenizer
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=514,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config).eval()
    labels = ("toxicity", "insult", "threat")
    options = {"name": "tiny-roberta", "version": "random", "batch_size": 4, "precision": "fp32"}
    masked = ToxicityClassifier(model, tokenizer, labels, attention="sdpa", **options)
    packed = ToxicityClassifier(model, tokenizer, labels, attention="flash-varlen", **options)
    assert packed.packed is toxicity.PACKED_HEADS["roberta"]
    texts = _texts(9)

    _assert_same_scores(masked.predict(texts), packed.predict(texts))
    assert fake_flash and all(used is None for _, used in fake_flash)


def test_a_varlen_model_called_without_the_packing_says_what_it_needs(
    models_dir: Path, fake_flash: Calls
) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    packed = ToxicityClassifier.from_loaded(loaded, precision="fp32", attention="flash-varlen")
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = (ids != 0).long()
    with pytest.raises(ValueError, match="varlen_kwargs"):
        packed.model(input_ids=ids, attention_mask=mask)
    kwargs = varlen_kwargs(mask)
    assert kwargs[varlen_attention.CU_SEQLENS].tolist() == [0, 4, 8]
    assert kwargs[varlen_attention.SEQUSED].tolist() == [4, 3]
    assert kwargs[varlen_attention.MAX_LENGTH] == 4
    assert packed.model(input_ids=ids, attention_mask=mask, **kwargs).logits.shape[0] == 2


def _real_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: dict[str, object]
) -> torch.Tensor:
    """The flash kernel over ``(tokens, heads, head_dim)`` inputs, with varlen_kwargs' or packed_kwargs'."""
    return varlen_attention.flash_varlen(
        query,
        key,
        value,
        packing[varlen_attention.CU_SEQLENS],  # type: ignore[arg-type]
        packing[varlen_attention.SEQUSED],  # type: ignore[arg-type]
        packing[varlen_attention.MAX_LENGTH],  # type: ignore[arg-type]
        None,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash kernel runs on CUDA only")
def test_on_cuda_the_real_kernel_never_reads_a_padded_key() -> None:
    """Runs where a GPU is (``bench/gpu.sh test``). On a whole model, bf16 scores of this tiny random model
    move by up to 2.4e-2 between kernels, too much to tell a padded-key read from rounding; on bert-base the
    benchmark reports both attentions' distance from fp32 scores (``bench/results/classify_cuda.md``)."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    batch, heads, length, head_dim = 3, 4, 37, 64
    shape = (batch * length, heads, head_dim)
    query, key, value = (
        torch.randn(shape, generator=generator, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    mask = torch.zeros(batch, length, dtype=torch.long, device="cuda")
    for row, used in enumerate((37, 5, 20)):
        mask[row, :used] = 1
    packing = varlen_kwargs(mask)
    padded = (mask.flatten() == 0).nonzero().flatten()
    key[padded], value[padded] = float("nan"), float("nan")  # a kernel that read one would return NaN

    output = _real_kernel(query, key, value, packing)

    for row, used in enumerate((37, 5, 20)):
        rows = slice(row * length, row * length + length)
        reference = torch.nn.functional.scaled_dot_product_attention(
            query[rows].transpose(0, 1).float(),
            key[rows][:used].transpose(0, 1).float(),
            value[rows][:used].transpose(0, 1).float(),
        ).transpose(0, 1)
        torch.testing.assert_close(output[rows].float(), reference, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash kernel runs on CUDA only")
def test_on_cuda_the_real_kernel_keeps_each_packed_text_to_its_own_tokens() -> None:
    """Runs where a GPU is (``bench/gpu.sh test``): three texts back to back, no padding (packed_kwargs)."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    heads, head_dim, lengths = 4, 64, (37, 5, 20)
    shape = (sum(lengths), heads, head_dim)
    query, key, value = (
        torch.randn(shape, generator=generator, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    starts = torch.tensor([0, 37, 42, 62], dtype=torch.int32, device="cuda")
    packing = varlen_attention.packed_kwargs(starts, max(lengths))

    output = _real_kernel(query, key, value, packing)

    for start, end in itertools.pairwise(starts.tolist()):
        reference = torch.nn.functional.scaled_dot_product_attention(
            *(t[start:end].transpose(0, 1).float() for t in (query, key, value))
        ).transpose(0, 1)
        torch.testing.assert_close(output[start:end].float(), reference, atol=2e-2, rtol=2e-2)
