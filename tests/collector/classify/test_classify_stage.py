"""The classifier stage end to end: calls in, rows in real embedded ClickHouse, sink called, backpressure."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tiny_detoxify import IDENTITY_CLASSES, write_tiny_text_classifier

from veil_collector.classify import stage as stage_module
from veil_collector.classify.bias_model import BiasClassifier
from veil_collector.classify.stage import ClassifierStage
from veil_collector.config import Settings
from veil_collector.records import Evaluation, GenAICall, GuardDecision, PiiFinding, StoredBatch
from veil_collector.store import Store

NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


def call(n: int, output: str, input_text: str = "", project: str = "p1") -> GenAICall:
    return GenAICall(
        project_id=project,
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        timestamp=NOW + timedelta(seconds=n),
        service_name="svc",
        environment="test",
        request_model="gpt-4o",
        input_text=input_text,
        output_text=output,
    )


class RecordingSink:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Evaluation]] = []

    def on_evaluations(self, evaluations: Sequence[Evaluation]) -> None:
        self.batches.append(list(evaluations))

    def on_pii_findings(self, findings: Sequence[PiiFinding]) -> None:
        raise AssertionError("the classifier only emits evaluations")

    def on_guard_decisions(self, decisions: Sequence[GuardDecision]) -> None:
        raise AssertionError("the classifier only emits evaluations")


def settings(tmp_path: Path, models_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "models_dir": models_dir,
        "classifier_device": "cpu",
        "classifier_batch_size": 4,
        **overrides,
    }
    return Settings(**values)


def rows(store: Store, where: str = "1") -> list[tuple]:
    return store.query(
        "SELECT ProjectId, TraceId, Target, Evaluator, Label, Score, ModelName, ModelVersion "
        f"FROM evaluations WHERE {where} ORDER BY TraceId, Target, Evaluator, Label"
    ).result_rows


def test_scores_outputs_and_inputs_into_clickhouse(store: Store, tmp_path: Path, models_dir: Path) -> None:
    sink = RecordingSink()
    stage = ClassifierStage(settings(tmp_path, models_dir, classify_inputs=True), store, sink)
    stage.start()
    calls = [
        call(1, "you are a stupid idiot", "hello"),
        call(2, "muslim women are nice people", ""),  # no input text: only the output is scored
        call(3, "", ""),  # nothing to score
        *[call(n, "thanks for the help with python code") for n in range(4, 11)],
    ]
    stage.on_stored(StoredBatch(calls=calls[:5]))
    stage.on_stored(StoredBatch(calls=calls[5:]))
    assert stage.force_flush(timeout=60)
    stage.shutdown(timeout=10)

    stored = rows(store)
    toxicity = [r for r in stored if r[3] == "toxicity"]
    # 9 outputs + 1 input scored, 6 labels each.
    assert len(toxicity) == 10 * len(LABELS)
    assert {r[6:] for r in toxicity} == {("detoxify-original", "toxic_tiny-0123abcd")}
    assert {r[2] for r in toxicity if r[1] == f"{1:032x}"} == {"output", "input"}
    assert not [r for r in stored if r[1] == f"{3:032x}"]

    # Scores are the model's: the same as predicting directly (up to bf16 rounding on CPUs that use it).
    (expected,) = stage.toxicity.predict(["you are a stupid idiot"])
    got = {r[4]: r[5] for r in toxicity if r[1] == f"{1:032x}" and r[2] == "output"}
    assert got == pytest.approx(expected, abs=1e-2)

    identity = [r for r in stored if r[3] == "identity"]
    assert [(r[1], r[4], r[5], r[6]) for r in identity] == [
        (f"{2:032x}", "female", 1.0, "veil-identity-lexicon"),
        (f"{2:032x}", "muslim", 1.0, "veil-identity-lexicon"),
    ]
    assert sum(len(b) for b in sink.batches) == len(stored)
    assert {e.project_id for b in sink.batches for e in b} == {"p1"}


def test_identity_heads_of_the_unbiased_model(store: Store, tmp_path: Path, models_dir: Path) -> None:
    stage = ClassifierStage(settings(tmp_path, models_dir, toxicity_model="unbiased"), store)
    stage.start()
    stage.on_stored(StoredBatch(calls=[call(1, "hello world")]))
    assert stage.force_flush(timeout=60)
    stage.shutdown()
    identity = [r for r in rows(store) if r[3] == "identity"]
    assert sorted(r[4] for r in identity) == sorted(IDENTITY_CLASSES)  # every head, probabilities
    assert {r[6] for r in identity} == {"detoxify-unbiased"}
    assert all(0 < r[5] < 1 for r in identity)


def test_offline_fallback_rows_name_their_model(store: Store, tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    stage = ClassifierStage(settings(tmp_path, empty), store)
    stage.start()
    stage.on_stored(StoredBatch(calls=[call(1, "fuck off you shit"), call(2, "have a nice day")]))
    assert stage.force_flush(timeout=60)
    stage.shutdown()
    stored = [r for r in rows(store) if r[3] == "toxicity"]
    assert [(r[4], r[6]) for r in stored] == [("toxicity", "alt-profanity-check")] * 2
    assert stored[0][5] > 0.5 > stored[1][5]


def test_bias_model_rows(store: Store, tmp_path: Path, models_dir: Path) -> None:
    bias = BiasClassifier(str(write_tiny_text_classifier(tmp_path / "bias", ["NEUTRAL", "BIASED"])))
    stage = ClassifierStage(settings(tmp_path, models_dir), store, bias=bias)
    stage.start()
    stage.on_stored(StoredBatch(calls=[call(1, "hello world")]))
    assert stage.force_flush(timeout=60)
    stage.shutdown()
    scored = [r for r in rows(store) if r[3] == "bias"]
    assert [(r[4], r[6]) for r in scored] == [("BIASED", "bias"), ("NEUTRAL", "bias")]
    assert scored[0][5] + scored[1][5] == pytest.approx(1.0, abs=1e-5)


class GatedClassifier:
    """A stand-in model that waits for a gate before scoring, to hold the worker busy."""

    name = "gated"
    version = "1"
    labels = ("toxicity",)
    identity_labels = ()

    def __init__(self) -> None:
        self.gate = threading.Event()

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        self.gate.wait()
        return [{"toxicity": 0.25} for _ in texts]


def test_full_queue_blocks_the_caller_until_the_worker_catches_up(store: Store, tmp_path: Path) -> None:
    model = GatedClassifier()
    assert stage_module.DRAIN_BATCHES * 1 + 2 < 12
    config = settings(tmp_path, tmp_path, classifier_queue_size=2, classifier_batch_size=1)
    stage = ClassifierStage(config, store, toxicity=model)
    stage.start()
    # The worker holds at most DRAIN_BATCHES calls while it waits on the gate and the queue 2 more: of 12
    # calls some must wait.
    calls = [call(n, f"text {n}") for n in range(1, 13)]
    producer = threading.Thread(target=stage.on_stored, args=(StoredBatch(calls=calls),))
    producer.start()
    producer.join(timeout=1.0)
    assert producer.is_alive(), "on_stored returned although the queue was full"
    assert stage.force_flush(timeout=0.2) is False
    model.gate.set()
    producer.join(timeout=30)
    assert not producer.is_alive()
    assert stage.force_flush(timeout=30)
    assert stage.shutdown(timeout=10)
    assert len(rows(store, "Evaluator = 'toxicity'")) == 12


def test_after_shutdown_calls_are_dropped_and_counted(store: Store, tmp_path: Path) -> None:
    model = GatedClassifier()
    model.gate.set()
    stage = ClassifierStage(settings(tmp_path, tmp_path), store, toxicity=model)
    stage.start()
    assert stage.shutdown(timeout=10)
    before = REGISTRY.get_sample_value("veil_classifier_dropped_total", {"reason": "shutdown"}) or 0.0
    stage.on_stored(StoredBatch(calls=[call(1, "late")]))
    after = REGISTRY.get_sample_value("veil_classifier_dropped_total", {"reason": "shutdown"})
    assert after == before + 1
    assert stage.force_flush(timeout=1)
    assert rows(store) == []


def test_store_failure_is_counted_and_the_worker_goes_on(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage_module, "_STORE_RETRIES", (0.0,))
    model = GatedClassifier()
    model.gate.set()
    stage = ClassifierStage(settings(tmp_path, tmp_path), store, toxicity=model)
    stage.start()
    store.command("RENAME TABLE evaluations TO evaluations_away")
    before = REGISTRY.get_sample_value("veil_classifier_dropped_total", {"reason": "store_error"}) or 0.0
    stage.on_stored(StoredBatch(calls=[call(1, "lost")]))
    assert stage.force_flush(timeout=30)
    after = REGISTRY.get_sample_value("veil_classifier_dropped_total", {"reason": "store_error"})
    assert after == before + 1
    store.command("RENAME TABLE evaluations_away TO evaluations")
    stage.on_stored(StoredBatch(calls=[call(2, "kept")]))
    assert stage.force_flush(timeout=30)
    stage.shutdown()
    assert [r[1] for r in rows(store)] == [f"{2:032x}"]


def test_metrics_after_a_batch(store: Store, tmp_path: Path) -> None:
    model = GatedClassifier()
    model.gate.set()
    stage = ClassifierStage(settings(tmp_path, tmp_path), store, toxicity=model)
    before = REGISTRY.get_sample_value("veil_classifier_texts_total", {"target": "output"}) or 0.0
    lag_before = REGISTRY.get_sample_value("veil_classifier_lag_seconds_count") or 0.0
    lag_sum_before = REGISTRY.get_sample_value("veil_classifier_lag_seconds_sum") or 0.0
    stage.start()
    stage.on_stored(StoredBatch(calls=[call(1, "a"), call(2, "b")]))
    assert stage.force_flush(timeout=30)
    stage.shutdown()
    assert REGISTRY.get_sample_value("veil_classifier_texts_total", {"target": "output"}) == before + 2
    assert REGISTRY.get_sample_value("veil_classifier_lag_seconds_count") == lag_before + 2
    # The spans are about five minutes old: the lag runs from the span time, not from the enqueue.
    lag_sum = REGISTRY.get_sample_value("veil_classifier_lag_seconds_sum") - lag_sum_before
    assert lag_sum >= 2 * (5 * 60 - 2)
    assert REGISTRY.get_sample_value("veil_classifier_queue_depth") == 0
    assert (
        REGISTRY.get_sample_value(
            "veil_classifier_model_info", {"evaluator": "toxicity", "model": "gated", "version": "1"}
        )
        == 1
    )


def test_start_twice_or_enqueue_before_start_is_an_error(store: Store, tmp_path: Path) -> None:
    model = GatedClassifier()
    stage = ClassifierStage(settings(tmp_path, tmp_path), store, toxicity=model)
    with pytest.raises(RuntimeError, match="before start"):
        stage.on_stored(StoredBatch(calls=[call(1, "early")]))
    stage.start()
    with pytest.raises(RuntimeError, match="called twice"):
        stage.start()
    stage.shutdown()
