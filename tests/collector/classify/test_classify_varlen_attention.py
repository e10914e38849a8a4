"""The variable-length flash attention path of the toxicity classifier.

The flash kernel is CUDA-only, so on this CPU-only machine the plumbing around it (packing the padded batch,
``transformers``' attention interface, the keyword arguments, the output layout) runs against a reference
kernel written here: plain attention over each sequence's first ``seqused_k`` keys. That fake stands in
for the one thing that cannot exist here, the CUDA kernel; the model, its loading and our code are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_detoxify import WORDS

from veil_collector.classify import toxicity, varlen_attention
from veil_collector.classify.loader import load_model, resolve_model
from veil_collector.classify.toxicity import ToxicityClassifier, resolve_attention
from veil_collector.classify.varlen_attention import varlen_kwargs


def _reference_kernel(
    calls: list[tuple[int, ...]],
) -> object:
    """What the flash kernel computes (see the module docstring), recording each call's sequence lengths."""

    def kernel(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        cu_seqlens: torch.Tensor,
        seqused_k: torch.Tensor,
        max_length: int,
        scale: float | None,
    ) -> torch.Tensor:
        calls.append(tuple(seqused_k.tolist()))
        # Poison every padded key and value: a kernel that read one would turn the outputs into NaN.
        key, value = key.clone(), value.clone()
        output = torch.empty_like(query)
        starts = cu_seqlens.tolist()
        for start, used in zip(starts, seqused_k.tolist(), strict=False):
            key[start + used : start + max_length] = float("nan")
            value[start + used : start + max_length] = float("nan")
        for start, used in zip(starts, seqused_k.tolist(), strict=False):
            rows = slice(start, start + max_length)
            output[rows] = torch.nn.functional.scaled_dot_product_attention(
                query[rows].transpose(0, 1),
                key[start : start + used].transpose(0, 1),
                value[start : start + used].transpose(0, 1),
                scale=scale,
            ).transpose(0, 1)
        return output

    return kernel


@pytest.fixture
def fake_flash(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Makes flash-varlen available on the CPU through the reference kernel; yields its calls."""
    calls: list[tuple[int, ...]] = []
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


def test_varlen_scores_equal_masked_sdpa_scores(models_dir: Path, fake_flash: list[tuple[int, ...]]) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    # Loose padding bound: batches mix lengths, so every batch but the last has padded keys to skip.
    options = {"batch_size": 4, "precision": "fp32", "max_padding": 0.95}
    masked = ToxicityClassifier.from_loaded(loaded, attention="sdpa", **options)
    packed = ToxicityClassifier.from_loaded(loaded, attention="flash-varlen", **options)
    assert (masked.attention, packed.attention) == ("sdpa", "flash-varlen")
    texts = _texts(13)

    expected, got = masked.predict(texts), packed.predict(texts)

    layers = loaded.detoxify.model.config.num_hidden_layers
    assert len(fake_flash) == layers * 4  # every layer of every batch went through the kernel
    assert any(len(set(lengths)) > 1 for lengths in fake_flash)  # and batches did hold padding
    for want, have in zip(expected, got, strict=True):
        assert list(have) == list(want)
        for label in want:
            assert have[label] == pytest.approx(want[label], abs=1e-5)
    # The caller's model keeps its attention: the classifier switched a copy.
    assert loaded.detoxify.model.config._attn_implementation == "sdpa"


def test_a_varlen_model_called_without_the_packing_says_what_it_needs(
    models_dir: Path, fake_flash: list[tuple[int, ...]]
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

    output = varlen_attention.flash_varlen(
        query,
        key,
        value,
        packing[varlen_attention.CU_SEQLENS],
        packing[varlen_attention.SEQUSED],
        length,
        None,
    )

    for row, used in enumerate((37, 5, 20)):
        rows = slice(row * length, row * length + length)
        reference = torch.nn.functional.scaled_dot_product_attention(
            query[rows].transpose(0, 1).float(),
            key[rows][:used].transpose(0, 1).float(),
            value[rows][:used].transpose(0, 1).float(),
        ).transpose(0, 1)
        torch.testing.assert_close(output[rows].float(), reference, atol=2e-2, rtol=2e-2)
