"""Batched toxicity inference on the model and tokenizer that detoxify loaded.

``Detoxify.predict`` pads a whole list to its longest text and runs it as one forward pass, so callers must
chunk, and one long text makes every text in its chunk pay for its length. :class:`ToxicityClassifier`
instead sorts texts by length and cuts length-homogeneous batches (:func:`plan_batches`: at most
``batch_size`` texts, and at most ``max_padding`` of a batch's tokens are padding), pads each batch only to
its own longest text (tokenized ahead of its forward pass by :mod:`~veil_collector.classify.encoding`),
runs under ``torch.inference_mode()`` in bf16 where the hardware computes in bf16 natively, applies a
sigmoid in fp32 and returns the scores in the caller's order.

Precision: ``auto`` means bf16 on CUDA (Ampere or later) and on CPUs with native bf16 instructions
(AVX512-BF16 or AMX), fp32 elsewhere; ``fp32``, ``bf16`` and ``int8`` force one. bf16 runs a bf16 copy of the
model's weights rather than fp32 weights under autocast: autocast re-casts activations around every layer
norm and softmax it keeps in fp32; on this project's 2-core AVX512-BF16 box the bf16 copy ran 8.64 against
7.88 texts/s in a one-off interleaved A/B (not a committed benchmark), while the scores moved no further
from fp32 ones (about 1.5e-3 on bert-base either way).

``int8`` (CPU only; ``ValueError`` on any other device, raised before a model is loaded there) runs the
encoder's linear layers as int8 products with per-token activation scales
(:mod:`~veil_collector.classify.int8` says why and what it gains) and the rest of the model in fp32. It
keeps the batching contract: per-token scales and exact int32 accumulation make a text's scores
independent of its batchmates, and fp32 elsewhere keeps it within 1e-5 (3.6e-7 measured on the tiny test
model). With the rest in bf16 a text differed by up to 2.6e-3 between batched and alone there: bf16
rounding turns fp32-level differences in accumulation order (attention over a differently padded length,
the head's products at another batch width) into whole bf16 steps, which the int8 rounding then passes
on. On bert-base the bf16 rest was not measurably faster (7.1 to 8.4 against 7.2 to 7.5 texts/s, three
interleaved one-off rounds on the busy 2-core box).

Attention kernels: where the device and precision allow it (CUDA in bf16; :func:`resolve_attention`), the
model's attention runs flash attention's variable-length kernel, which needs no per-shape plan
(:mod:`~veil_collector.classify.varlen_attention` says why and how). For the model types in
:data:`PACKED_HEADS` batches are then packed: the encoder runs over every text's tokens back to back, with no
padding to compute, and the head over each text's first token; batches are cut at ``batch_size`` texts only.
Each packed pass counts its attention calls: a model that skipped the kernel in a layer (a ``transformers``
version that ignores the attention interface) would have let texts attend to each other, so the classifier
logs it once, discards those scores and runs that call and all later ones padded. Other models run padded
batches through the same kernel, which never reads a padded key.
Elsewhere ``scaled_dot_product_attention`` runs with a padding mask, and with cuDNN's attention taken out of
the backends it may pick (:data:`ATTENTION_BACKENDS`). With a padding mask, torch 2.11 sends bf16 attention
on Hopper to cuDNN first, and cuDNN builds an execution plan for every new (batch, length) shape it meets:
on the H200, the first pass over 512 texts at batch 1 (nearly every length new) ran at 37 texts/s against
222 texts/s once the plans existed, and guard micro-batches, whose shapes rarely repeat, took 100 to 250 ms
each (``bench/results/classify.md``, ``guard_latency.md``). Without it SDPA uses the memory-efficient
kernel, which needs no per-shape plan. On a CPU the list changes nothing (cuDNN is a CUDA backend).

Truncation: texts are cut at 512 tokens (BERT/RoBERTa position limit, the same limit detoxify's models were
trained with); anything after the first 512 tokens of a long response is not scored.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel

from veil_collector.classify.base import Precision, TextClassifier
from veil_collector.classify.encoding import BatchEncoder, PackedBatch
from veil_collector.classify.int8 import quantize_encoder
from veil_collector.classify.loader import LoadedModel, ModelUnavailable, load_model, resolve_model
from veil_collector.classify.varlen_attention import (
    IMPLEMENTATION,
    flash_varlen_supported,
    packed_kwargs,
    use_varlen_attention,
    varlen_kwargs,
)

logger = logging.getLogger(__name__)

MAX_TOKENS = 512
# Character lengths stand in for token lengths when batches are cut (no tokenization pass up front); texts
# longer than this many characters per token limit are all truncated to MAX_TOKENS, so they count as equal.
CHARS_PER_TOKEN = 4

# Every SDPA backend but cuDNN's, whose per-shape plan building stalls variable-shape batches (see above).
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

# ``sdpa``: transformers' scaled_dot_product_attention with a padding mask; ``flash-varlen``: the
# variable-length flash kernel (varlen_attention.py); ``auto``: flash-varlen where supported, else sdpa.
Attention = Literal["auto", "sdpa", "flash-varlen"]

# A batch as the classifier's forward pass takes it: padded ``(input_ids, attention_mask)``, or packed.
Encoded = tuple[torch.Tensor, torch.Tensor] | PackedBatch


@dataclass(frozen=True)
class PackedHead:
    """How a model type's classification head reads a packed batch: ``head(model, first)`` maps the first
    token's final hidden state of each text, ``(texts, 1, hidden)``, to logits, as the model's own forward
    would from its padded output; ``positions_after_padding``: whether the model's positions start at
    ``padding_idx + 1`` (RoBERTa's embeddings) rather than 0."""

    head: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    positions_after_padding: bool = False


def _bert_head(model: torch.nn.Module, first: torch.Tensor) -> torch.Tensor:
    # BertForSequenceClassification: pooler (dense + tanh over [:, 0]), dropout (off in eval), classifier.
    return model.classifier(model.bert.pooler(first))  # type: ignore[operator,union-attr]


def _roberta_head(model: torch.nn.Module, first: torch.Tensor) -> torch.Tensor:
    # RobertaClassificationHead reads features[:, 0, :] itself.
    return model.classifier(first)  # type: ignore[operator]


# The model types (``config.model_type``) that run packed with flash-varlen attention: detoxify's
# ``original`` (BERT), ``unbiased`` (RoBERTa) and ``multilingual`` (XLM-R). Others (the ALBERT-based small
# models) run padded batches through the same kernel.
PACKED_HEADS = {
    "bert": PackedHead(_bert_head),
    "roberta": PackedHead(_roberta_head, positions_after_padding=True),
    "xlm-roberta": PackedHead(_roberta_head, positions_after_padding=True),
}


class PackedAttentionSkipped(RuntimeError):
    """A model ran a packed batch without the variable-length attention in every layer (a ``transformers``
    version whose model ignores the attention interface): its texts attended to each other, so the batch's
    scores were discarded."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; any other value is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (CUDA, or a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later
    if device.type != "cpu":
        return False
    # torch.cpu's feature probes are private but long-standing; a missing probe counts as "no".
    probes = (
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return any(probe() for probe in probes if probe is not None)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuses a precision that is unknown or that ``device`` cannot run. Makes no device call, so it can
    run before a model is loaded onto ``device``.

    Raises:
        ValueError: an unknown precision, or ``int8`` on a device other than the CPU (its integer products
            run through ``torch._int_mm``'s CPU kernel; see :mod:`~veil_collector.classify.int8`).
    """
    if precision not in get_args(Precision):
        raise ValueError(f"precision must be one of {', '.join(get_args(Precision))}; got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"int8 precision runs on the CPU only; got device {device}: use precision auto, bf16 or fp32 "
            "there, or device cpu"
        )


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16", "int8"]:
    """What ``precision`` means on ``device``: ``auto`` becomes bf16 where native (:func:`native_bf16`),
    else fp32; the others stand.

    Raises:
        ValueError: see :func:`check_precision`.
    """
    check_precision(precision, device)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision  # type: ignore[return-value]  # one of the three, checked above


def resolve_attention(
    attention: str, device: torch.device, dtype: torch.dtype
) -> Literal["sdpa", "flash-varlen"]:
    """What ``attention`` means for a model on ``device`` whose weights are ``dtype``: ``auto`` becomes
    ``flash-varlen`` where :func:`~veil_collector.classify.varlen_attention.flash_varlen_supported`, else
    ``sdpa``.

    Raises:
        ValueError: an unknown ``attention``, or ``flash-varlen`` where it is not supported.
    """
    if attention not in get_args(Attention):
        raise ValueError(f"attention must be one of {', '.join(get_args(Attention))}; got {attention!r}")
    supported = flash_varlen_supported(device, dtype)
    if attention == "flash-varlen" and not supported:
        raise ValueError(
            f"flash-varlen attention needs CUDA with bf16 or fp16 weights and torch's flash kernel; got "
            f"device {device}, {dtype}: use attention auto or sdpa"
        )
    if attention == "auto":
        return "flash-varlen" if supported else "sdpa"
    return attention  # type: ignore[return-value]  # one of the two, checked above


def plan_batches(lengths: Sequence[int], batch_size: int, max_padding: float) -> list[range]:
    """Cuts ascending ``lengths`` into consecutive batches for padded forward passes.

    A batch holds at most ``batch_size`` texts, and padding each text to the batch's longest (the last, as
    lengths ascend) wastes at most ``max_padding`` of the batch's padded tokens: ``1 - sum / (n * longest)``.
    A text that would break the bound starts the next batch, so a small, length-diverse set runs in small
    batches (padding is wasted compute on every device) and a large backlog, whose neighbouring lengths are
    close, in full ones.

    Raises:
        ValueError: ``batch_size`` below 1 or ``max_padding`` outside [0, 1).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    if not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1); got {max_padding}")
    batches: list[range] = []
    start, total = 0, 0
    for index, length in enumerate(lengths):
        count = index - start + 1
        if count > batch_size or (total + length) < (1 - max_padding) * count * length:
            batches.append(range(start, index))
            start, total = index, 0
        total += length
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches


class ToxicityClassifier:
    """Length-bucketed batched inference on a detoxify model. Implements :class:`TextClassifier`.

    Contract of :meth:`predict`: one dict per input text, in input order, mapping every label the model has
    (``labels`` then ``identity_labels``) to a sigmoid probability in [0, 1]. Scores of a text do not depend
    on which other texts share the call (padding is masked; batched equals one-by-one within float
    tolerance, 1e-5 in fp32). Thread-safe: calls are serialized by a lock, so concurrent callers should
    batch their texts (one call with many texts is far faster than many calls with one).

    In bf16 and int8 the classifier runs its own copy of ``model``; the caller's model is left as it was.

    Args:
        model: a ``transformers`` sequence-classification model (detoxify's ``.model``).
        tokenizer: its tokenizer (detoxify's ``.tokenizer``).
        labels: toxicity labels, the first ``len(labels)`` model outputs.
        identity_labels: identity heads, the outputs after them.
        name: stored as ``ModelName``.
        version: stored as ``ModelVersion``.
        batch_size: most texts per forward pass.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8`` (see the module docstring).
        max_padding: most share of a batch's tokens that may be padding (see :func:`plan_batches`).
        attention: ``auto``, ``sdpa`` or ``flash-varlen`` (see the module docstring).

    Attributes:
        precision: what ``precision`` resolved to: ``fp32``, ``bf16`` or ``int8``.
        bf16: whether the model's float weights are bf16 (only in ``bf16``).
        attention: what ``attention`` resolved to: ``sdpa`` or ``flash-varlen``.
        packed: how the model's head reads packed batches, where it runs them (flash-varlen attention and
            a model type in :data:`PACKED_HEADS`); None where it runs padded ones.

    Raises:
        ValueError: see :func:`check_precision`, :func:`resolve_attention` and :func:`plan_batches`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        labels: Sequence[str],
        identity_labels: Sequence[str] = (),
        *,
        name: str,
        version: str,
        batch_size: int = 64,
        precision: Precision = "auto",
        max_padding: float = 0.2,
        attention: Attention = "auto",
    ) -> None:
        plan_batches((), batch_size, max_padding)  # validates both
        device = next(model.parameters()).device
        self.precision = resolve_precision(precision, device)
        self.bf16 = self.precision == "bf16"
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        self.attention = resolve_attention(attention, device, dtype)
        if self.precision == "int8":
            model = copy.deepcopy(model).float()
            quantize_encoder(model)
        elif next(model.parameters()).dtype != dtype or self.attention == "flash-varlen":
            model = copy.deepcopy(model).to(dtype)
        self.packed: PackedHead | None = None
        if self.attention == "flash-varlen":
            use_varlen_attention(model)  # on our copy (above): the caller's model keeps its attention
            self.packed = PACKED_HEADS.get(model.config.model_type)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.identity_labels = tuple(identity_labels)
        self.name = name
        self.version = version
        self.batch_size = batch_size
        self.max_padding = max_padding
        self.device = device
        positions = getattr(model.config, "max_position_embeddings", MAX_TOKENS)
        self.max_length = min(MAX_TOKENS, positions)
        self._all_labels = self.labels + self.identity_labels
        self._encoder = BatchEncoder(tokenizer, self.max_length, device)
        self._lock = threading.Lock()

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        *,
        batch_size: int = 64,
        precision: Precision = "auto",
        max_padding: float = 0.2,
        attention: Attention = "auto",
    ) -> ToxicityClassifier:
        """Wrap a model loaded by :func:`~veil_collector.classify.loader.load_model`."""
        return cls(
            loaded.detoxify.model,
            loaded.detoxify.tokenizer,
            loaded.labels,
            loaded.identity_labels,
            name=loaded.name,
            version=loaded.version,
            batch_size=batch_size,
            precision=precision,
            max_padding=max_padding,
            attention=attention,
        )

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score ``texts``; see the class docstring for the contract."""
        if not texts:
            return []
        with self._lock:
            order, chunks = self.batches(texts)
            try:
                sorted_scores = self.score_encoded(self.encode(chunks))
            except PackedAttentionSkipped as exc:  # no wrong score leaves: rerun padded, the mask is kept
                logger.error("%s; running padded batches from now on", exc)
                self.packed = None
                order, chunks = self.batches(texts)
                sorted_scores = self.score_encoded(self.encode(chunks))
        scores = torch.empty_like(sorted_scores)
        scores[torch.tensor(order)] = sorted_scores
        # strict=False: a head may have more outputs than the checkpoint names; unnamed ones are not returned.
        return [dict(zip(self._all_labels, row, strict=False)) for row in scores.tolist()]

    def batches(self, texts: Sequence[str]) -> tuple[list[int], list[list[str]]]:
        """How :meth:`predict` cuts ``texts``: the indices of ``texts`` in length order, and the batches of
        the texts in that order: :func:`plan_batches`'s for padded batches, ``batch_size`` texts each for
        packed ones (no padding to bound)."""
        # Character length orders texts almost exactly as token length does, without a tokenization pass
        # up front: batch k + 1 is tokenized on a helper thread while batch k runs (see encoding.py).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        if self.packed is not None:
            size = self.batch_size
            plan = [range(start, min(start + size, len(texts))) for start in range(0, len(texts), size)]
        else:
            longest = self.max_length * CHARS_PER_TOKEN
            lengths = [min(len(texts[i]), longest) for i in order]
            plan = plan_batches(lengths, self.batch_size, self.max_padding)
        return order, [[texts[order[i]] for i in batch] for batch in plan]

    def encode(self, chunks: Sequence[Sequence[str]]) -> Iterator[Encoded]:
        """``chunks`` (from :meth:`batches`) tokenized, on the model's device, in the layout the forward pass
        takes (packed or padded); each chunk is tokenized while the one before it runs."""
        if self.packed is None:
            return self._encoder.iter_encoded(chunks)
        offset = self.model.config.pad_token_id + 1 if self.packed.positions_after_padding else 0
        return self._encoder.iter_packed(chunks, offset)

    def score_encoded(self, encoded: Iterable[Encoded]) -> torch.Tensor:
        """Sigmoid scores (fp32, on the CPU, one row per text) of :meth:`encode`'s batches, in their order.
        Not locked: :meth:`predict` holds the lock."""
        outputs: list[torch.Tensor] = []
        with torch.inference_mode(), sdpa_kernel(ATTENTION_BACKENDS):
            for batch in encoded:
                packed = isinstance(batch, PackedBatch)
                logits = self._packed_logits(batch) if packed else self._logits(*batch)
                # Kept on the device: one transfer (and one sync) for the whole call.
                outputs.append(torch.sigmoid(logits.float()))
            return torch.cat(outputs).cpu()

    def _logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        packing = varlen_kwargs(attention_mask) if self.attention == "flash-varlen" else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **packing).logits

    def _packed_logits(self, batch: PackedBatch) -> torch.Tensor:
        """The encoder over the packed tokens as one sequence (the attention kernel keeps each text to its
        own tokens), then the model's head over each text's first token.

        Raises:
            PackedAttentionSkipped: a layer's attention did not go through the kernel.
        """
        assert self.packed is not None  # only packed models get packed batches (encode)
        ids = batch.ids[None]
        starts = batch.starts
        calls = [0]
        hidden = self.model.base_model(
            input_ids=ids,
            position_ids=batch.positions[None],
            token_type_ids=torch.zeros_like(ids),
            **packed_kwargs(starts.to(torch.int32), batch.longest, calls),
        ).last_hidden_state[0]
        layers = self.model.config.num_hidden_layers
        if calls[0] != layers:
            raise PackedAttentionSkipped(
                f"{calls[0]} of the model's {layers} attention layers ran {IMPLEMENTATION} attention on a "
                f"packed batch (transformers {transformers.__version__})"
            )
        return self.packed.head(self.model, hidden[starts[:-1]][:, None])


def load_toxicity_classifier(
    model: str = "original",
    *,
    models_dir: Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    precision: Precision = "auto",
    allow_fallback: bool = True,
) -> TextClassifier:
    """The toxicity classifier the collector runs: the detoxify ``model``, or the offline fallback.

    Logs at WARNING which model runs when it falls back, and at INFO which model runs otherwise.

    Args:
        model: a detoxify model type or a path (see :func:`~veil_collector.classify.loader.resolve_model`).
        models_dir: the offline models folder (``VEIL_MODELS_DIR``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: most texts per forward pass.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8`` (see the module docstring).
        allow_fallback: when False, raise instead of falling back.

    Raises:
        ModelUnavailable: no weights could be had and ``allow_fallback`` is False.
        ValueError: ``model`` names nothing known, or a file is not a detoxify checkpoint, or
            ``precision`` is unknown or not available on the device (int8 off the CPU; see
            :func:`check_precision`).
    """
    source = resolve_model(model, models_dir)
    target = resolve_device(device)
    check_precision(precision, target)  # before loading: a refused precision must not cost a load first
    try:
        loaded = load_model(source, target)
    except ModelUnavailable as exc:
        if not allow_fallback:
            raise
        # Imported here: the fallback needs scikit-learn, which GPU benchmark machines need not have.
        from veil_collector.classify.fallback import ProfanityClassifier

        fallback = ProfanityClassifier()
        logger.warning(
            "toxicity model %r is unavailable (%s); classifying with the offline fallback %s %s, a linear "
            "profanity model with one label ('toxicity'). Put detoxify weights under VEIL_MODELS_DIR/%s/ "
            "for the real model.",
            model,
            exc,
            fallback.name,
            fallback.version,
            source.name,
        )
        return fallback
    classifier = ToxicityClassifier.from_loaded(loaded, batch_size=batch_size, precision=precision)
    logger.info(
        "toxicity model %s (%s) on %s, %s; labels: %s; identity heads: %s",
        classifier.name,
        classifier.version,
        target,
        classifier.precision,
        ", ".join(classifier.labels),
        ", ".join(classifier.identity_labels) or "none (lexicon)",
    )
    return classifier
