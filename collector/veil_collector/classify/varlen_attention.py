"""Attention that skips padding: flash attention's variable-length kernel under a ``transformers`` encoder.

Why: with a padding mask, ``scaled_dot_product_attention`` cannot use the flash kernel and falls back to the
memory-efficient one, which reads an additive mask for every (query, key) pair. On the H200 that kernel
took 27 % of the GPU time of a batch-256 pass over the benchmark's texts while attention is about 3 % of
its FLOPs; the one unpadded batch of that pass ran through the flash kernel at about 566 TFLOP/s
(``bench/results/classify_cuda_profile.txt``). With this kernel attention took 54 ms of that pass instead of
119 ms (``bench/results/classify.md``).

How, without copying a tensor: ``transformers`` hands an attention function the query, key and value as
``(batch, heads, length, head_dim)`` views of the ``(batch, length, heads, head_dim)`` projections, so
``(batch * length, heads, head_dim)`` is the same memory. The flash kernel's variable-length entry point
reads it as ``batch`` sequences that start every ``length`` rows (``cu_seqlens``), of which only the first
``seqused_k`` rows are keys: padded keys are never read, padded query rows get values that nothing reads
(the classifier pools the first token, and padded rows feed no real token). Each sequence is computed by
its own thread blocks, so a text's result does not depend on its batchmates.

Packed batches (no padding at all): where the classifier knows the model's head (``toxicity.py``), it runs
the encoder over one sequence holding every text's tokens back to back, with ``cu_seqlens`` at the texts'
own starts and no ``seqused_k`` (:func:`packed_kwargs`); the same kernel then keeps each text to its own
tokens. The linear layers, layer norms and activations, about 95 % of the work, then skip the padding too:
batches cut at 20 % padding held 11 % padding at batch 256 on the benchmark's texts (7.6 % at 128).

The kernel is CUDA-only (Ampere or later) and bf16/fp16-only (:func:`flash_varlen_supported`). It is reached
through ``torch.ops.aten._flash_attention_forward``, the op behind torch's nested-tensor attention and
``torch.nn.attention.varlen`` (a prototype API in torch 2.13), called directly so that it needs nothing
newer than the op's ``seqused_k`` argument, which :func:`flash_varlen_supported` checks for.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface

# No "flash" in the name: transformers takes any such name for a hub flash-attention kernel to load.
IMPLEMENTATION = "veil_varlen"
# Keyword arguments the model's forward passes down to every attention call (``transformers`` forwards
# unknown keyword arguments from the task model to the attention interface).
CU_SEQLENS = "veil_cu_seqlens"
SEQUSED = "veil_seqused_k"
MAX_LENGTH = "veil_max_length"
# A one-item list that each call of the attention function adds 1 to: a packed batch is only right if every
# layer's attention went through the kernel (a model that ignored it would let texts attend to each other).
CALLS = "veil_attention_calls"


def flash_varlen_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch build can run the variable-length flash kernel on ``device`` for ``dtype``."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return False
    if not torch.backends.cuda.is_flash_attention_available():
        return False
    if torch.cuda.get_device_capability(device) < (8, 0):  # flash attention 2 needs Ampere or later
        return False
    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    return op is not None and any(arg.name == "seqused_k" for arg in op.default._schema.arguments)


def flash_varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    seqused_k: torch.Tensor,
    max_length: int,
    scale: float | None,
) -> torch.Tensor:
    """The kernel: ``(tokens, heads, head_dim)`` in, the same shape out (see the module docstring)."""
    output, *_ = torch.ops.aten._flash_attention_forward(
        query,
        key,
        value,
        cu_seqlens,
        cu_seqlens,
        max_length,
        max_length,
        0.0,  # dropout
        False,  # is_causal: an encoder attends both ways
        False,  # return_debug_mask
        scale=scale,
        seqused_k=seqused_k,
    )
    return output


def varlen_kwargs(attention_mask: torch.Tensor) -> dict[str, Any]:
    """The keyword arguments a forward pass over a right-padded batch needs: pass them to the model's call
    beside ``attention_mask``. Device-side only (no host sync): sequence ``b`` starts at row ``b * length``
    and has ``attention_mask[b].sum()`` real tokens."""
    batch, length = attention_mask.shape
    starts = torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=attention_mask.device)
    return {
        CU_SEQLENS: starts,
        SEQUSED: attention_mask.sum(dim=1, dtype=torch.int32),
        MAX_LENGTH: length,
    }


def packed_kwargs(starts: torch.Tensor, longest: int, calls: list[int]) -> dict[str, Any]:
    """The keyword arguments a forward pass over a packed batch needs (see the module docstring):
    ``starts`` (int32, on the device) where each text starts and, last, the token count; ``longest``, the
    longest text's token count; ``calls``, ``[0]``, counts the attention calls (:data:`CALLS`)."""
    return {CU_SEQLENS: starts, SEQUSED: None, MAX_LENGTH: longest, CALLS: calls}


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A ``transformers`` attention function (``AttentionInterface``) over :func:`varlen_kwargs`'s or
    :func:`packed_kwargs`'s layout.

    ``attention_mask`` is ignored: ``transformers`` builds none for an implementation it has no mask
    function for, and the packing carries the padding instead.

    Raises:
        ValueError: the call lacks :func:`varlen_kwargs`'s arguments (the model was called without them).
    """
    if CU_SEQLENS not in kwargs:
        raise ValueError(
            f"{IMPLEMENTATION} attention needs the padding as keyword arguments: call the model with "
            "**varlen_kwargs(attention_mask) or **packed_kwargs(starts, longest)"
        )
    if CALLS in kwargs:
        kwargs[CALLS][0] += 1
    batch, heads, length, head_dim = query.shape
    packed = [t.transpose(1, 2).reshape(batch * length, heads, head_dim) for t in (query, key, value)]
    output = flash_varlen(*packed, kwargs[CU_SEQLENS], kwargs[SEQUSED], kwargs[MAX_LENGTH], scaling)
    # transformers expects (batch, length, heads, head_dim), as SDPA's output is after its transpose.
    return output.view(batch, length, heads, head_dim), None


def use_varlen_attention(model: torch.nn.Module) -> None:
    """Switches ``model`` (a ``transformers`` model) to :func:`varlen_attention_forward`, in place. Its calls
    then need :func:`varlen_kwargs`."""
    AttentionInterface.register(IMPLEMENTATION, varlen_attention_forward)
    model.set_attn_implementation(IMPLEMENTATION)
