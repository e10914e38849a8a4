"""int8 linear layers for the toxicity classifier on CPUs: W8A8 with per-token activation scales.

Why: on this project's shared 2-core AVX512-BF16/VNNI box (no AMX) a bert-base forward pass is
compute-bound in its linear layers even at batch 1, and bf16 weights reach only 1.75-1.9x
``Detoxify.predict()`` per request (issue #5 asks for 2x). AVX512-VNNI multiplies int8 at twice bf16's
rate: a 2048x768 @ 768x3072 product took 67 ms in fp32, 26.5 ms in bf16 and 14.5 ms through
``torch._int_mm`` (int8 x int8 -> int32) on 2 threads there (one-off timings).

Why not ``torch.ao.quantization.quantize_dynamic`` (18.3 ms on the same product): it quantizes activations
with one scale per tensor, i.e. per batch, so a text's scores would depend on which texts share its batch,
which :class:`~veil_collector.classify.toxicity.ToxicityClassifier`'s contract forbids. Here instead:

- weights: symmetric int8 with one scale per output channel, quantized once when the layer is built;
- activations: symmetric int8 with one scale per row (per token), computed on every call from that row
  alone;
- the product accumulates exactly in int32 (``torch._int_mm``), then is dequantized with
  ``row scale x column scale`` and the bias added, in fp32.

Every step is either per row or exact, so a token's output depends only on that token's input: batching
changes nothing (tested bit for bit). :func:`quantize_encoder` swaps the encoder's linear layers
(attention query/key/value/output, intermediate and output dense) for :class:`Int8Linear`; embeddings,
layer norms, attention itself, the pooler and the classifier head keep their float weights (fp32: the
classifier's module docstring says why not bf16).

``torch._int_mm`` on the CPU (torch 2.13) takes any shape, M = 1 and K or N not multiples of 8 included
(the tiny test model has hidden size 32 and intermediate size 64), and its results equal an int32 matrix
product: both are checked in the tests, so a torch that starts refusing a shape fails them rather than
the collector. Its CUDA kernel has shape limits of its own and is not used: int8 is a CPU-only precision
(the classifier raises ``ValueError`` for it on any other device).
"""

from __future__ import annotations

import torch
from torch import nn

QMAX = 127  # symmetric: -128 is never produced, so negation cannot overflow
# Rows whose largest |value| is below this quantize to zeros instead of dividing by (nearly) zero.
EPSILON = 1e-12


def quantize_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row of a 2-D tensor on its own.

    Returns ``(int8 values, fp32 scales of shape (rows, 1))`` with ``values * scales ~= matrix``. A row's
    result depends on that row only (max and elementwise arithmetic), which is what makes the int8 layers
    batch-invariant.
    """
    values = matrix.to(torch.float32, copy=True)  # a copy even of fp32: it is scaled in place below
    amax = values.abs().amax(dim=1, keepdim=True).clamp_(min=EPSILON)
    quantized = values.mul_(QMAX / amax).round_().clamp_(-QMAX, QMAX).to(torch.int8)
    return quantized, amax / QMAX


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` computing in int8: per-channel weight scales, per-row activation scales.

    Inputs may be fp32 or bf16; the output has the input's dtype. Inference only (no gradients).

    Args:
        linear: the float layer to quantize; it is read, not changed.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        # (out, in) row-major, handed to _int_mm as its (in, out) transposed view: faster than a
        # contiguous (in, out) copy for the few-row products of short texts (one-off timing on the CPU box).
        # An int8 buffer: Module.to(torch.bfloat16) casts floating-point tensors only.
        self.register_buffer("weight", weight)
        # Plain attributes, not buffers: casting the rest of the model to bf16 must leave them in fp32.
        self.weight_scale = scale.reshape(1, -1)
        self.bias = linear.bias.detach().float().clone() if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        quantized, scale = quantize_rows(rows)
        out = torch._int_mm(quantized, self.weight.t()).float()
        out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


def quantize_encoder(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` in ``model``'s transformer encoder by an :class:`Int8Linear`, in place;
    returns how many.

    Only the encoder (``model.base_model.encoder``: ``bert``, ``roberta``, ``albert`` alike): the pooler
    and the classifier head are a few small products, kept in float for the scores' sake.

    Raises:
        ValueError: ``model`` has no ``base_model.encoder`` (not a Hugging Face encoder model).
    """
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"int8 precision needs a transformer encoder model; {type(model).__name__} has none")
    targets = [(name, module) for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    for name, module in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, attribute, Int8Linear(module))
    return len(targets)
