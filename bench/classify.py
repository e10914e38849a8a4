"""Toxicity classifier benchmark: texts/s of our batched inference against ``Detoxify.predict()``.

Both run the same model on the same device and the same texts: detoxify's ``original`` architecture
(bert-base-uncased shape: 12 layers, hidden 768, 12 heads, 30,522-token WordPiece vocabulary, 6 heads)
with random weights, saved in detoxify's checkpoint format and loaded through detoxify's own loader by
``veil_collector.classify.loader``. Throughput does not depend on weight values, so no download is needed.

Texts: a generated vocabulary of whole words (one token each) and a length mix typical of LLM traffic:
35 % short (10-60 tokens), 40 % medium (60-250), 20 % long (250-512), 5 % over the 512-token limit
(512-1500, truncated by both runners). Shuffled with a fixed seed.

Runners:
- ``detoxify per-request``: ``predict(text)`` once per text, as a service scoring each request does.
- ``detoxify chunk=k``: ``predict(texts[i:i+k])``, the chunking detoxify's maintainers advise (issue #69);
  detoxify pads each chunk to its longest text.
- ``veil batch=b``: ``ToxicityClassifier.predict(texts)`` on the whole list (the collector's worker drains
  a backlog): length-sorted batches of at most b texts, packed (no padding) on CUDA, elsewhere padded per
  batch with at most 20 % padding, ``inference_mode``, in the ``auto`` precision: bf16 where the device
  computes bf16 natively, else fp32.
  On the CPU the rows of the other fast precisions run too, at the same
  batch sizes: ``veil bf16`` (where native) and ``veil int8`` (the encoder's linear layers as int8 products
  with per-token scales, the rest in fp32: ``veil_collector.classify.int8``).
- ``veil fp32`` (where ``auto`` is not fp32): controls at the two smallest batch sizes.
- ``veil bf16 sdpa`` (where ``auto`` attention is flash-varlen, i.e. on CUDA): the same classifier with
  masked ``scaled_dot_product_attention`` instead of the variable-length flash kernel, at the three largest
  batch sizes (``veil_collector.classify.varlen_attention``).
- ``veil bf16 padded`` (where ``auto`` runs packed batches, i.e. on CUDA): the same kernel over padded
  batches (at most 20 % padding), at the three largest batch sizes.

The table's notes give how far the bf16 and int8 scores are from ``veil fp32`` ones (max |diff| over
every label of every text) on the benchmark's texts.

Slow configurations (per-request, batch 1) run on a prefix of the texts (same length mix) to bound the
run time. FLOPs count only real (unpadded) tokens: per layer ``2 * L * (4 h^2 + 2 h i) + 4 * L^2 * h``;
TFLOP/s is the useful work rate, compared with the card's dense bf16 peak where known.

Usage::

    python bench/classify.py --quick                 # CPU smoke run
    PYTHONPATH=sdk:collector:bench/vendor python3 bench/classify.py --device cuda --out $OUT

Writes ``classify_<device>.md`` into ``--out`` (default ``bench/results``). Imports only
``veil_collector.classify.{loader,toxicity}`` (torch, transformers, detoxify).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collector"))

from veil_collector.classify.encoding import BatchEncoder  # noqa: E402
from veil_collector.classify.loader import LoadedModel, load_model, resolve_model  # noqa: E402
from veil_collector.classify.toxicity import (  # noqa: E402
    MAX_TOKENS,
    ToxicityClassifier,
    native_bf16,
    resolve_device,
)

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
LENGTH_MIX = ((0.35, 10, 60), (0.40, 60, 250), (0.20, 250, 512), (0.05, 512, 1500))
# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
PEAK_BF16 = {
    "H200": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}


@dataclass(frozen=True)
class Plan:
    """``slow_texts``: the prefix that per-request and batch-1 runs use; ``rounds``: repeats, best kept."""

    texts: int
    slow_texts: int
    batch_sizes: tuple[int, ...]
    chunks: tuple[int, ...]
    rounds: int


PLANS = {
    # A few minutes on 2 busy CPU cores (bert-base costs ~30 GFLOP per text of this mix).
    "quick": Plan(texts=16, slow_texts=16, batch_sizes=(1, 4, 16), chunks=(1, 8), rounds=3),
    # For a dedicated many-core machine.
    "cpu": Plan(
        texts=256, slow_texts=64, batch_sizes=(1, 8, 32, 64, 128, 256), chunks=(1, 8, 32, 64), rounds=2
    ),
    "cuda": Plan(
        texts=4096, slow_texts=512, batch_sizes=(1, 8, 32, 64, 128, 256), chunks=(1, 8, 32, 64, 128), rounds=2
    ),
}


@dataclass(frozen=True)
class Row:
    runner: str
    size: int
    texts: int
    tokens: int
    seconds: float
    flops: float

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds

    @property
    def tflops(self) -> float:
        return self.flops / self.seconds / 1e12


def make_vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size - len(SPECIALS):
        words.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))))
    return SPECIALS + sorted(words)


def make_texts(count: int, words: list[str], rng: random.Random) -> list[str]:
    """Texts whose token counts (each word and mark is one token, plus [CLS]/[SEP]) follow LENGTH_MIX."""
    texts = []
    weights = [w for w, _, _ in LENGTH_MIX]
    for _ in range(count):
        _, low, high = rng.choices(LENGTH_MIX, weights=weights)[0]
        target = rng.randint(low, high) - 2
        tokens: list[str] = []
        while len(tokens) < target:
            sentence = rng.choices(words, k=min(rng.randint(6, 18), target - len(tokens)))
            tokens.extend(sentence)
            if len(tokens) < target:
                tokens.append(".")
        texts.append(" ".join(tokens))
    return texts


def write_checkpoint(folder: Path, vocabulary: list[str]) -> None:
    """A bert-base-uncased-shaped detoxify ``original`` checkpoint with random weights, plus HF files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    config = BertConfig(vocab_size=len(vocabulary), num_labels=len(CLASSES))  # BertConfig defaults: base
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=MAX_TOKENS).save_pretrained(
        folder
    )
    config.save_pretrained(folder)
    torch.manual_seed(0)
    state_dict = BertForSequenceClassification(config).state_dict()
    arch = {
        "model_type": "bert-base-uncased",
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(CLASSES),
    }
    checkpoint = {
        "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": CLASSES}}},
        "state_dict": state_dict,
    }
    torch.save(checkpoint, folder / "toxic_bench-random.ckpt")


def count(plan: Plan, size: int) -> int:
    """Texts a runner scores: the slow prefix for one-at-a-time runners, all texts otherwise."""
    return plan.slow_texts if size == 1 else plan.texts


def flops_per_text(tokens: int, config: BertConfig) -> float:
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (2 * tokens * (4 * h * h + 2 * h * i) + 4 * tokens * tokens * h)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_tflops(device: torch.device, override: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or platform.machine(), override
    name = torch.cuda.get_device_name(device)
    if override is not None:
        return name, override
    return name, next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="a small CPU smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the table")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile veil at batch 256 on all texts: top kernels into classify_<device>_profile.txt",
    )
    parser.add_argument(
        "--tokenize",
        action="store_true",
        help="only time tokenizing, the tokenizer's call against veil's (classify_<device>_tokenize.md)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="only split veil at batch 256 on all texts into tokenizing alone, forward passes alone (inputs "
        "tokenized and on the device beforehand) and predict() end to end (classify_<device>_stages.md)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="only compare veil with and without torch.compile (dynamic shapes) at batch 128 and 256 on all "
        "texts, compile time included in the table (classify_<device>_compile.md)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 TFLOP/s")
    args = parser.parse_args()

    device = resolve_device(args.device)
    plan = PLANS["quick" if args.quick else device.type if device.type in PLANS else "cpu"]
    rng = random.Random(0)
    vocabulary = make_vocabulary(30522, rng)
    texts = make_texts(plan.texts, vocabulary, rng)

    setup_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "original"
        write_checkpoint(folder, vocabulary)
        loaded = load_model(resolve_model(str(folder)), device)
    setup_s = time.perf_counter() - setup_start
    detoxify = loaded.detoxify
    ours = ToxicityClassifier.from_loaded(loaded)
    config = detoxify.model.config
    lengths = [len(ids) for ids in ours.tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]]

    # The shortest texts on the CPU (warm-up there costs real time), a full batch's worth on CUDA.
    warmup = sorted(texts, key=len)[: 64 if device.type == "cuda" else 2]
    fp32 = ToxicityClassifier.from_loaded(loaded, precision="fp32")

    def detoxify_chunks(size: int) -> Callable[[list[str]], object]:
        if size == 1:
            return lambda batch: [detoxify.predict(text) for text in batch]
        return lambda batch: [detoxify.predict(batch[i : i + size]) for i in range(0, len(batch), size)]

    def veil_batches(classifier: ToxicityClassifier, size: int) -> Callable[[list[str]], object]:
        def run(batch: list[str]) -> object:
            classifier.batch_size = size
            return classifier.predict(batch)

        return run

    precision = ours.precision
    if args.profile:
        profile(ours, texts, warmup, device, args.out)
        return
    single = SingleRun(texts, lengths, config, device, args.out, *peak_tflops(device, args.peak_tflops))
    if args.stages:
        stages(loaded, ours, single)
        return
    if args.compile:
        compiled(loaded, single)
        return
    if args.tokenize:
        tokenizing(ours, make_texts(TOKENIZE_TEXTS, vocabulary, rng), device, args.out)
        return
    configs: list[tuple[str, int, int, Callable[[list[str]], object]]] = [
        (
            "detoxify per-request" if size == 1 else "detoxify chunk",
            size,
            count(plan, size),
            detoxify_chunks(size),
        )
        for size in plan.chunks
    ]
    # `auto`'s precision, and on the CPU the other fast ones, so that precisions compare within one run.
    classifiers = {precision: ours}
    if device.type == "cpu":
        for other in ("bf16", "int8"):
            if other not in classifiers and (other == "int8" or native_bf16(device)):
                classifiers[other] = ToxicityClassifier.from_loaded(loaded, precision=other)
    names = sorted(classifiers, key=("fp32", "bf16", "int8").index)
    configs += [
        (f"veil {name}", size, count(plan, size), veil_batches(classifiers[name], size))
        for name in names
        for size in plan.batch_sizes
    ]
    if precision != "fp32":  # controls: how much of the gain is batching, how much is precision
        configs += [
            ("veil fp32", size, count(plan, size), veil_batches(fp32, size))
            for size in (plan.batch_sizes[0], plan.batch_sizes[1])
        ]
    if ours.attention == "flash-varlen":  # control: how much of the gain is the attention kernel
        classifiers["bf16 sdpa"] = ToxicityClassifier.from_loaded(loaded, attention="sdpa")
        configs += [
            ("veil bf16 sdpa", size, count(plan, size), veil_batches(classifiers["bf16 sdpa"], size))
            for size in plan.batch_sizes[-3:]
        ]
        names.append("bf16 sdpa")
    if ours.packed:  # control: how much of the gain is packing (the same kernel over padded batches)
        classifiers["bf16 padded"] = ToxicityClassifier.from_loaded(loaded)
        classifiers["bf16 padded"].packed = None
        configs += [
            ("veil bf16 padded", size, count(plan, size), veil_batches(classifiers["bf16 padded"], size))
            for size in plan.batch_sizes[-3:]
        ]
        names.append("bf16 padded")
    reference = fp32.predict(texts)
    differences = {
        f"veil {name}": max_difference(classifiers[name].predict(texts), reference)
        for name in names
        if name != "fp32"
    }

    best: dict[int, float] = {}
    for round_ in range(plan.rounds):  # rounds interleave the runners, so a burst of load hits all alike
        for index, (runner, size, n, fn) in enumerate(configs):
            fn(warmup)  # first-call costs: kernel loading, allocator, oneDNN/cuBLAS setup
            seconds = timed(lambda fn=fn, n=n: fn(texts[:n]), device)
            best[index] = min(best.get(index, seconds), seconds)
            print(f"round {round_ + 1}: {runner:>20} {size:>4} x {n}: {n / seconds:9.2f} texts/s", flush=True)
    rows = [
        Row(
            runner,
            size,
            n,
            sum(lengths[:n]),
            best[index],
            sum(flops_per_text(tokens, config) for tokens in lengths[:n]),
        )
        for index, (runner, size, n, _) in enumerate(configs)
    ]

    device_name, peak = peak_tflops(device, args.peak_tflops)
    table = render(
        rows,
        device,
        device_name,
        peak,
        lengths,
        setup_s,
        args.quick,
        precision,
        ours.attention,
        plan.rounds,
        differences,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"classify_{device.type}.md"
    path.write_text(table)
    print(table)
    print(f"written to {path}")


def max_difference(scores: list[dict[str, float]], reference: list[dict[str, float]]) -> float:
    """Largest |score - reference score| over every label of every text."""
    pairs = zip(scores, reference, strict=True)
    return max(abs(row[label] - expected[label]) for row, expected in pairs for label in row)


TOKENIZE_TEXTS = 4096
TOKENIZE_BATCH = 256
TOKENIZE_ROUNDS = 5


def tokenizing(classifier: ToxicityClassifier, texts: list[str], device: torch.device, out: Path) -> None:
    """Texts/s of tokenizing length-sorted batches of 256 (CPU tensors, no forward pass): the tokenizer's
    own padded call, as ``Detoxify.predict`` and our classifier once used it, against
    :class:`~veil_collector.classify.encoding.BatchEncoder` (the Rust backend, called directly). Best of
    interleaved rounds; the two produce identical ids and masks (``tests/collector/classify``)."""
    tokenizer, encoder = classifier.tokenizer, BatchEncoder(classifier.tokenizer, MAX_TOKENS, device)
    ordered = sorted(texts, key=len)
    batches = [ordered[i : i + TOKENIZE_BATCH] for i in range(0, len(ordered), TOKENIZE_BATCH)]

    def wrapper_call(batch: list[str]) -> object:
        return tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
            return_token_type_ids=False,
        )

    runners = {
        "tokenizer(batch, padding=True, ...)": wrapper_call,
        "veil BatchEncoder.tokenize": encoder.tokenize,
    }
    best: dict[str, float] = {}
    for _ in range(TOKENIZE_ROUNDS):
        for name, run in runners.items():
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    baseline = best["tokenizer(batch, padding=True, ...)"]
    lines = [
        f"# Tokenizing for the classifier ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs)",
        "",
        f"{len(texts)} texts of the benchmark's length mix, length-sorted batches of {TOKENIZE_BATCH}, "
        f"truncated at {MAX_TOKENS} tokens; best of {TOKENIZE_ROUNDS} interleaved rounds; "
        f"transformers {transformers.__version__}. Command: `python bench/classify.py --tokenize`.",
        "",
        "| runner | texts/s | vs the tokenizer's call |",
        "|---|---:|---:|",
        *(
            f"| {name} | {len(texts) / seconds:,.0f} | {baseline / seconds:.2f}x |"
            for name, seconds in best.items()
        ),
    ]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"classify_{device.type}_tokenize.md").write_text(text)
    print(text)


@dataclass(frozen=True)
class SingleRun:
    """What the single-purpose modes (``--stages``, ``--compile``) share: the texts and their token counts,
    the model's shape, the device, where the table goes, and the card's bf16 peak (None where unknown)."""

    texts: list[str]
    lengths: list[int]
    config: BertConfig
    device: torch.device
    out: Path
    device_name: str
    peak: float | None

    def share_of_peak(self, seconds: float) -> str:
        """The model FLOPs of all texts done in ``seconds``, as a share of the peak."""
        if not self.peak:
            return "n/a"
        flops = sum(flops_per_text(tokens, self.config) for tokens in self.lengths)
        return f"{100 * flops / seconds / 1e12 / self.peak:.1f} %"

    def write(self, mode: str, lines: list[str]) -> None:
        """Prints the table and writes it to ``classify_<device>_<mode>.md`` under ``out``."""
        text = "\n".join(lines) + "\n"
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"classify_{self.device.type}_{mode}.md").write_text(text)
        print(text)


STAGES_BATCH = 256
STAGES_ROUNDS = 3


def stages(loaded: LoadedModel, classifier: ToxicityClassifier, setup: SingleRun) -> None:
    """What bounds ``predict``: its two halves alone against the whole. ``predict`` overlaps tokenizing
    batch k + 1 with the forward pass of batch k, so it can at best run at the slower half's rate. Where the
    classifier runs packed batches, a copy that runs padded ones is the control. CPU use (CPU seconds per
    wall second) shows how much of the machine tokenizing takes."""
    classifier.batch_size = STAGES_BATCH
    texts = setup.texts
    layouts = {"packed" if classifier.packed else "padded": classifier}
    if classifier.packed:
        layouts["padded"] = ToxicityClassifier.from_loaded(loaded, batch_size=STAGES_BATCH)
        layouts["padded"].packed = None

    def tokenize_all(runner: ToxicityClassifier) -> Callable[[], object]:
        _, batches = runner.batches(texts)
        encoder = runner._encoder
        if runner.packed:
            return lambda: [encoder.tokenize_packed(batch) for batch in batches]
        return lambda: [encoder.tokenize(batch) for batch in batches]

    def forward_all(runner: ToxicityClassifier) -> Callable[[], object]:
        _, batches = runner.batches(texts)
        encoded = list(runner.encode(batches))
        return lambda: runner.score_encoded(encoded)

    runners = {f"tokenizing alone ({name})": tokenize_all(runner) for name, runner in layouts.items()}
    for name, runner in layouts.items():
        runners[f"forward passes alone, {name} batches (inputs on the device)"] = forward_all(runner)
    for name, runner in layouts.items():
        runners[f"predict() end to end, {name} batches"] = lambda runner=runner: runner.predict(texts)
    for runner in layouts.values():
        runner.predict(texts[:64])
    best: dict[str, tuple[float, float]] = {}
    for _ in range(STAGES_ROUNDS):  # interleaved, best kept
        for name, runner in runners.items():
            cpu = time.process_time()
            seconds = timed(runner, setup.device)
            cores = (time.process_time() - cpu) / seconds
            if seconds < best.get(name, (float("inf"), 0.0))[0]:
                best[name] = (seconds, cores)
    lines = [
        f"# Where predict() spends its time ({setup.device_name}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__})",
        "",
        f"{len(texts)} texts of the benchmark's mix in batches of at most {STAGES_BATCH} ("
        + ", ".join(f"{name}: {len(runner.batches(texts)[1])}" for name, runner in layouts.items())
        + f" batches); precision {classifier.precision}, attention {classifier.attention}; best of "
        f"{STAGES_ROUNDS} "
        "interleaved rounds. Command: `python bench/classify.py --stages`. CPU: the process's CPU "
        "seconds per wall second in the best round.",
        "",
        "| stage | texts/s | vs end to end | % of bf16 peak (model FLOPs at this rate) | CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    whole = best[f"predict() end to end, {next(iter(layouts))} batches"][0]
    for name, (seconds, cores) in best.items():
        share = setup.share_of_peak(seconds)
        lines.append(
            f"| {name} | {len(texts) / seconds:,.0f} | {whole / seconds:.2f}x | {share} | {cores:.1f} |"
        )
    setup.write("stages", lines)


COMPILE_BATCHES = (128, 256)
COMPILE_ROUNDS = 3


def compiled(loaded: LoadedModel, setup: SingleRun) -> None:
    """An experiment, not a collector option: would ``torch.compile`` (kernel fusion of the layer norms, GELU
    and residual adds, a quarter of the GPU time in the profile) pay for its compile time and its
    recompiles on new shapes? Same texts and batch sizes, eager and compiled classifiers interleaved."""
    texts, device = setup.texts, setup.device
    eager = ToxicityClassifier.from_loaded(loaded)
    fused = ToxicityClassifier.from_loaded(loaded)
    fused.model = torch.compile(fused.model, dynamic=True)
    fused.batch_size = COMPILE_BATCHES[0]
    compile_s = timed(lambda: fused.predict(texts), device)  # compiles (and recompiles) on first shapes
    best: dict[tuple[str, int], float] = {}
    for _ in range(COMPILE_ROUNDS):
        for name, classifier in (("eager", eager), ("compiled", fused)):
            for size in COMPILE_BATCHES:
                classifier.batch_size = size
                seconds = timed(lambda c=classifier: c.predict(texts), device)
                best[name, size] = min(best.get((name, size), seconds), seconds)
    difference = max_difference(fused.predict(texts), eager.predict(texts))
    lines = [
        f"# torch.compile experiment ({setup.device_name}; torch {torch.__version__})",
        "",
        f"{len(texts)} texts of the benchmark's mix, attention {eager.attention}, precision "
        f"{eager.precision}; best of {COMPILE_ROUNDS} interleaved rounds; first compiled pass (compiling) "
        f"{compile_s:.1f} s; scores compiled vs eager max |diff| {difference:.1e}. "
        "Command: `python bench/classify.py --compile`.",
        "",
        "| runner | batch | texts/s | vs eager | % of bf16 peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for (name, size), seconds in best.items():
        speedup = best["eager", size] / seconds
        share = setup.share_of_peak(seconds)
        lines.append(f"| {name} | {size} | {len(texts) / seconds:,.1f} | {speedup:.2f}x | {share} |")
    setup.write("compile", lines)


def profile(
    classifier: ToxicityClassifier, texts: list[str], warmup: list[str], device: torch.device, out: Path
) -> None:
    """Where the time of one ``predict(texts)`` at batch 256 goes: the top operators by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    classifier.batch_size = 256
    classifier.predict(warmup)
    seconds = min(timed(lambda: classifier.predict(texts), device) for _ in range(2))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        timed(lambda: classifier.predict(texts), device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)
    rate = f"veil batch 256 on {len(texts)} texts: {len(texts) / seconds:,.1f} texts/s (best of 2)"
    text = f"{rate}\n\n{table}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"classify_{device.type}_profile.txt").write_text(text)
    print(text)


def render(
    rows: list[Row],
    device: torch.device,
    device_name: str,
    peak: float | None,
    lengths: list[int],
    setup_s: float,
    quick: bool,
    precision: str,
    attention: str,
    rounds: int,
    differences: dict[str, float],
) -> str:
    per_request = next(r for r in rows if r.runner == "detoxify per-request")
    detoxify_best = max((r for r in rows if r.runner.startswith("detoxify")), key=lambda r: r.texts_per_s)
    chunked_best = max((r for r in rows if r.runner == "detoxify chunk"), key=lambda r: r.texts_per_s)
    veil_best = max((r for r in rows if r.runner.startswith("veil")), key=lambda r: r.texts_per_s)
    ordered = sorted(lengths)
    int8_rows = any(row.runner == "veil int8" for row in rows)
    lines = [
        f"# Toxicity classifier throughput ({device.type}{', quick' if quick else ''})",
        "",
        f"- device: {device_name}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}",
        "- model: detoxify `original` architecture (bert-base-uncased shape, random weights), loaded through "
        f"detoxify's loader (setup {setup_s:.1f} s)",
        f"- texts: {len(lengths)}; tokens per text after truncation: mean {sum(lengths) / len(lengths):.0f}, "
        f"median {ordered[len(ordered) // 2]}, max {ordered[-1]}; per-request and batch-1 rows score the "
        f"first {per_request.texts}; best of {rounds} interleaved rounds",
        f"- precision: detoxify fp32 (its default); veil `auto` = {precision} (bf16 weights where native, "
        f"else fp32); veil attention `auto` = {attention}"
        + ("; veil int8: the encoder's linear layers in int8, the rest fp32" if int8_rows else "")
        + "; veil batches hold at most 20 % padding"
        + ("; quick run on a shared, busy machine: compare ratios, not absolute rates" if quick else ""),
        "",
        "| runner | batch/chunk | texts | texts/s | vs per-request | vs best detoxify | TFLOP/s |"
        + (" % of bf16 peak |" if peak else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if peak else ""),
    ]
    for row in rows:
        line = (
            f"| {row.runner} | {row.size} | {row.texts} | {row.texts_per_s:,.2f} | "
            f"{row.texts_per_s / per_request.texts_per_s:.2f}x | "
            f"{row.texts_per_s / detoxify_best.texts_per_s:.2f}x | "
            f"{row.tflops:.3f} |"
        )
        if peak:
            line += f" {100 * row.tflops / peak:.1f} % |"
        lines.append(line)
    target = 5.0 if device.type == "cuda" else 2.0
    lines += [
        "",
        f"Best veil ({veil_best.runner}, batch {veil_best.size}): {veil_best.texts_per_s:,.2f} texts/s = "
        f"{veil_best.texts_per_s / per_request.texts_per_s:.2f}x detoxify per-request, "
        f"{veil_best.texts_per_s / detoxify_best.texts_per_s:.2f}x the best detoxify runner "
        f"({detoxify_best.runner}, {detoxify_best.size}), "
        f"{veil_best.texts_per_s / chunked_best.texts_per_s:.2f}x the best chunked-list detoxify "
        f"(chunk {chunked_best.size}); target >= {target:.0f}x.",
    ]
    if differences:
        lines.append(
            f"Scores against veil fp32 on all {len(lengths)} texts, max |diff| over every label: "
            + ", ".join(f"{name} {difference:.1e}" for name, difference in differences.items())
            + "."
        )
    if peak:
        lines.append(
            f"Useful work: {veil_best.tflops:.1f} TFLOP/s = {100 * veil_best.tflops / peak:.1f} % of the "
            f"{peak:.0f} TFLOP/s dense bf16 peak; target >= 30 %."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
