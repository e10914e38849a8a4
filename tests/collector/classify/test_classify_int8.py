"""The int8 precision: exact integer products, per-row scales, CPU only (batching: test_classify_toxicity)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_classify_toxicity import STANDARD_LABELS, _texts

from veil_collector.classify import toxicity
from veil_collector.classify.int8 import Int8Linear, quantize_encoder, quantize_rows
from veil_collector.classify.loader import load_model, resolve_model
from veil_collector.classify.toxicity import (
    ToxicityClassifier,
    check_precision,
    load_toxicity_classifier,
    resolve_precision,
)


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(1, 32, 64), (1, 64, 32), (3, 32, 32), (17, 64, 32), (5, 30, 62), (1, 7, 9), (33, 768, 768)],
)
def test_int_mm_takes_any_cpu_shape_and_equals_an_int32_product(m: int, k: int, n: int) -> None:
    """The shapes the tiny model (hidden 32, intermediate 64) and single tokens give _int_mm."""
    generator = torch.Generator().manual_seed(m * 1000 + k + n)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=generator)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=generator)
    product = torch._int_mm(a, weight.t())
    assert product.dtype == torch.int32
    assert torch.equal(product, a.int() @ weight.t().int())


def test_int_mm_accumulates_exactly_at_the_extremes() -> None:
    a = torch.full((2, 3072), -127, dtype=torch.int8)
    b = torch.full((3072, 8), -127, dtype=torch.int8)
    assert torch.equal(torch._int_mm(a, b), torch.full((2, 8), 127 * 127 * 3072, dtype=torch.int32))


def test_quantize_rows_scales_each_row_alone() -> None:
    rows = torch.tensor([[1.0, -2.0, 0.5], [100.0, 50.0, -25.0], [0.0, 0.0, 0.0]])
    values, scales = quantize_rows(rows)
    assert values.dtype == torch.int8
    assert values.tolist() == [[64, -127, 32], [127, 64, -32], [0, 0, 0]]
    assert scales.flatten().tolist() == pytest.approx([2 / 127, 100 / 127, 1e-12 / 127])
    assert rows[0].tolist() == [1.0, -2.0, 0.5]  # the input is not scaled in place
    alone, alone_scale = quantize_rows(rows[1:2])
    assert torch.equal(alone, values[1:2]) and torch.equal(alone_scale, scales[1:2])


def test_int8_linear_is_close_to_the_float_layer_and_rows_do_not_see_each_other() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 64)
    before = {name: tensor.clone() for name, tensor in linear.state_dict().items()}
    layer = Int8Linear(linear)
    assert all(torch.equal(before[name], tensor) for name, tensor in linear.state_dict().items())
    # Rows of very different magnitudes: one per-tensor scale would crush the small ones.
    x = torch.randn(3, 5, 32) * torch.tensor([1e-3, 1.0, 1e3]).reshape(3, 1, 1)
    out = layer(x)
    assert out.shape == (3, 5, 64) and out.dtype == torch.float32
    exact = linear(x)
    for i in range(3):
        error = (out[i] - exact[i]).abs().max() / exact[i].abs().max()
        assert error < 2e-2  # observed up to 5.7e-3: two int8 roundings per product
    # Each row's output, computed in a batch of 15 rows, is bit for bit its output computed alone.
    flat = x.reshape(15, 32)
    together = layer(flat)
    for row in range(15):
        assert torch.equal(layer(flat[row : row + 1]), together[row : row + 1])
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_quantize_encoder_swaps_the_encoders_linear_layers_only(models_dir: Path) -> None:
    model = load_model(resolve_model("original", models_dir)).detoxify.model
    # 2 layers x (query, key, value, attention output, intermediate, output)
    assert quantize_encoder(model) == 12
    layer = model.bert.encoder.layer[0]
    assert isinstance(layer.attention.self.query, Int8Linear)
    assert isinstance(layer.intermediate.dense, Int8Linear)
    assert type(model.bert.pooler.dense) is torch.nn.Linear
    assert type(model.classifier) is torch.nn.Linear
    with pytest.raises(ValueError, match="needs a transformer encoder model; Linear has none"):
        quantize_encoder(torch.nn.Linear(2, 2))


def test_int8_stays_near_fp32_and_leaves_the_callers_model_alone(models_dir: Path) -> None:
    loaded = load_model(resolve_model("original", models_dir))
    model = loaded.detoxify.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fp32 = ToxicityClassifier.from_loaded(loaded, precision="fp32")
    int8 = ToxicityClassifier.from_loaded(loaded, precision="int8")
    assert (int8.precision, int8.bf16) == ("int8", False)
    assert isinstance(int8.model.bert.encoder.layer[0].output.dense, Int8Linear)
    assert next(int8.model.parameters()).dtype == torch.float32  # the float rest: fp32 (see toxicity.py)
    # The caller's model: same modules, same weights, still fp32.
    assert type(model.bert.encoder.layer[0].output.dense) is torch.nn.Linear
    state = model.state_dict()
    assert state.keys() == before.keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in before.items())
    texts = _texts(12)
    worst = max(
        abs(rounded[label] - exact[label])
        for exact, rounded in zip(fp32.predict(texts), int8.predict(texts), strict=True)
        for label in STANDARD_LABELS
    )
    # Loose: the tiny model's huge random weights (init range 0.5) amplify rounding; observed 0.052 on
    # these texts (0.12 on 23 of them), 3e-3 on the random bert-base of bench/classify.py.
    assert 0 < worst < 0.25


def test_int8_is_refused_off_the_cpu_before_anything_is_loaded(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for device in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ValueError, match=f"int8 precision runs on the CPU only; got device {device}"):
            check_precision("int8", torch.device(device))
    check_precision("int8", torch.device("cpu"))

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the precision was checked")

    monkeypatch.setattr(toxicity, "load_model", no_load)
    with pytest.raises(ValueError, match="int8 precision runs on the CPU only"):
        load_toxicity_classifier("original", models_dir=models_dir, device="cuda", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, int8; got 'fp16'"):
        load_toxicity_classifier("original", models_dir=models_dir, device="cpu", precision="fp16")  # type: ignore[arg-type]


def test_auto_precision_stays_bf16_or_fp32() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if toxicity.native_bf16(cpu) else "fp32")
    assert resolve_precision("int8", cpu) == "int8"
