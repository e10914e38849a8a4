"""Loading detoxify checkpoints through detoxify's own loader, and our batched inference on them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tiny_detoxify import IDENTITY_CLASSES, WORDS

from veil_collector.classify.base import Precision
from veil_collector.classify.fallback import ProfanityClassifier
from veil_collector.classify.loader import ModelUnavailable, load_model, resolve_model
from veil_collector.classify.toxicity import ToxicityClassifier, load_toxicity_classifier, plan_batches

STANDARD_LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


def _texts(count: int) -> list[str]:
    """Texts of very different lengths (1 to ~700 words, so some pass the 512-token limit)."""
    texts = []
    for i in range(count):
        length = [1, 3, 12, 40, 150, 700][i % 6] + i
        texts.append(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(length)))
    return texts


def test_resolve_prefers_models_dir_and_reads_the_checkpoint_name(models_dir: Path) -> None:
    source = resolve_model("original", models_dir)
    assert source.checkpoint == models_dir / "original" / "toxic_tiny-0123abcd.ckpt"
    assert source.config_dir == models_dir / "original"
    assert source.version == "toxic_tiny-0123abcd"
    remote = resolve_model("unbiased", None)
    assert remote.is_remote
    assert remote.version == "toxic_debiased-c7548aa0"


def test_resolve_rejects_unknown_names_and_ambiguous_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown toxicity model 'nope'"):
        resolve_model("nope", tmp_path)
    (tmp_path / "a.ckpt").write_bytes(b"")
    (tmp_path / "b.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"exactly one detoxify \.ckpt file; found a\.ckpt, b\.ckpt"):
        resolve_model(str(tmp_path))


def test_loads_through_detoxify_offline_with_standardised_labels(models_dir: Path) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    assert loaded.labels == STANDARD_LABELS
    assert loaded.identity_labels == ()
    assert loaded.name == "detoxify-original"
    # The weights are the checkpoint's, unchanged.
    saved = torch.load(models_dir / "original" / "toxic_tiny-0123abcd.ckpt", weights_only=False)["state_dict"]
    state = loaded.detoxify.model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in saved.items())


def test_unbiased_identity_heads_are_labels_too(models_dir: Path) -> None:
    classifier = load_toxicity_classifier("unbiased", models_dir=models_dir, device="cpu")
    assert isinstance(classifier, ToxicityClassifier)
    assert classifier.identity_labels == tuple(IDENTITY_CLASSES)
    (scores,) = classifier.predict(["hello world"])
    assert list(scores) == [*classifier.labels, *IDENTITY_CLASSES]
    assert len(scores) == 16


# int8 too: its per-token scales and exact integer products keep a text's scores independent of its batch.
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batched_scores_equal_one_by_one_in_original_order(models_dir: Path, precision: Precision) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    # A loose padding bound, so that batches really mix lengths and padding must be masked.
    classifier = ToxicityClassifier.from_loaded(loaded, batch_size=4, precision=precision, max_padding=0.95)
    assert classifier.precision == precision
    texts = _texts(23)
    batched = classifier.predict(texts)
    assert len(batched) == len(texts)
    for text, scores in zip(texts, batched, strict=True):
        (alone,) = classifier.predict([text])
        assert list(scores) == list(STANDARD_LABELS)
        for label in STANDARD_LABELS:
            assert scores[label] == pytest.approx(alone[label], abs=1e-5)
    # Random weights with a wide init spread the scores: a permutation would be caught above.
    assert len({round(s["toxicity"], 4) for s in batched}) > 10


def test_matches_detoxify_predict_on_short_texts(models_dir: Path) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    classifier = ToxicityClassifier.from_loaded(loaded, batch_size=3, precision="fp32")
    texts = [*_texts(12)[:4], "you are stupid", "nice day"]
    ours = classifier.predict(texts)
    reference = loaded.detoxify.predict(texts)
    for label in STANDARD_LABELS:
        for i, scores in enumerate(ours):
            assert scores[label] == pytest.approx(reference[label][i], abs=1e-5)


def test_truncates_at_512_tokens(models_dir: Path) -> None:
    classifier = load_toxicity_classifier("original", models_dir=models_dir, device="cpu", precision="fp32")
    long = " ".join(["hello"] * 600)
    longer = long + " stupid idiot" * 200
    (a, b) = classifier.predict([long, longer])
    assert a == pytest.approx(b, abs=1e-6)  # everything past token 512 is ignored
    assert classifier.predict([]) == []


def test_falls_back_loudly_when_no_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="veil_collector.classify.toxicity"):
        classifier = load_toxicity_classifier("original", models_dir=tmp_path, device="cpu")
    assert isinstance(classifier, ProfanityClassifier)
    assert "offline fallback alt-profanity-check" in caplog.text
    assert classifier.labels == ("toxicity",)
    clean, profane = classifier.predict(["thank you for the help", "fuck you, you stupid shit"])
    assert clean["toxicity"] < 0.5 < profane["toxicity"]
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE"):
        load_toxicity_classifier("original", models_dir=tmp_path, allow_fallback=False)


def test_rejects_files_that_are_not_detoxify_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="is not a detoxify checkpoint"):
        load_model(resolve_model(str(path)))


def test_auto_device_is_cpu_without_cuda(models_dir: Path) -> None:
    classifier = load_toxicity_classifier("original", models_dir=models_dir, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert classifier.device.type == expected


def test_bf16_stays_close_to_fp32_and_leaves_the_callers_model_alone(models_dir: Path) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    fp32 = ToxicityClassifier.from_loaded(loaded, precision="fp32")
    bf16 = ToxicityClassifier.from_loaded(loaded, precision="bf16")
    assert (fp32.bf16, bf16.bf16) == (False, True)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(loaded.detoxify.model.parameters()).dtype == torch.float32
    texts = _texts(12)
    for exact, rounded in zip(fp32.predict(texts), bf16.predict(texts), strict=True):
        # Loose: the tiny model's huge random weights amplify rounding (bert-base: about 1e-3).
        assert rounded == pytest.approx(exact, abs=5e-2)


def test_plan_batches_bounds_count_and_padding() -> None:
    # Equal lengths: only the count limit cuts.
    assert plan_batches([10] * 5, 2, 0.2) == [range(0, 2), range(2, 4), range(4, 5)]
    # 10, 11, 12 pad to 12: 3 of 36 tokens are padding (8 %); adding 20 would make it 37 of 80 (54 %).
    assert plan_batches([10, 11, 12, 20, 21], 8, 0.2) == [range(0, 3), range(3, 5)]
    # No padding allowed: a new batch at every new length; any padding allowed: count limit only.
    assert plan_batches([1, 1, 2, 3, 3], 8, 0.0) == [range(0, 2), range(2, 3), range(3, 5)]
    assert plan_batches([1, 50, 900], 8, 0.99) == [range(0, 3)]
    assert plan_batches([], 8, 0.2) == []
    assert plan_batches([0, 0, 5], 8, 0.2) == [range(0, 2), range(2, 3)]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        plan_batches([1], 0, 0.2)
    with pytest.raises(ValueError, match=r"max_padding must be in \[0, 1\)"):
        plan_batches([1], 4, 1.0)


def test_length_diverse_texts_run_in_small_batches_and_a_backlog_in_full_ones(models_dir: Path) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    classifier = ToxicityClassifier.from_loaded(loaded, batch_size=8, precision="fp32")
    widths: list[int] = []

    def record(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]) -> None:
        widths.append(kwargs["input_ids"].shape[0])

    handle = classifier.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        classifier.predict(_texts(6))  # 1 to ~700 words: no two fit under 20 % padding
        assert widths == [1] * 6
        widths.clear()
        classifier.predict(["you are a stupid person"] * 20)
        assert widths == [8, 8, 4]
    finally:
        handle.remove()


def test_forward_passes_never_use_cudnn_attention(models_dir: Path) -> None:
    """cuDNN builds an attention plan per new (batch, length) shape; the classifier's shapes rarely repeat."""
    classifier = load_toxicity_classifier("original", models_dir=models_dir, device="cpu", precision="fp32")
    seen: list[bool] = []
    hook = classifier.model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.backends.cuda.cudnn_sdp_enabled())
    )
    try:
        before = torch.backends.cuda.cudnn_sdp_enabled()
        classifier.predict(_texts(5))
    finally:
        hook.remove()
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # the process-wide setting is restored
