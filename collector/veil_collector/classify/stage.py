"""The classifier stage: scores every stored GenAI call and writes the scores to ``evaluations``.

Wiring: ``pipeline.add_listener(stage.on_stored)`` after ``stage.start()``. ``on_stored`` runs on the
pipeline's dispatch thread and only enqueues; one worker thread takes whatever is queued (up to
``DRAIN_BATCHES`` model batches of ``classifier_batch_size`` calls: a larger pool sorts into tighter length
buckets and makes larger inserts), scores the output texts (and the inputs when ``classify_inputs``),
writes all rows of the pool in one insert, then hands them to the :class:`~veil_collector.records.EventSink`.

Backpressure: the queue holds at most ``classifier_queue_size`` calls. When traffic outruns the model the
queue fills and ``on_stored`` blocks the pipeline, whose own bounded queue then fills and makes the
receiver answer 503 with ``Retry-After``: memory stays bounded and so does the classification lag.

Rows per scored text: one ``Evaluator='toxicity'`` row per model label; identity groups as
``Evaluator='identity'`` rows (every identity head's probability when the model has them, else one row with
score 1.0 per group the lexicon finds); with a bias model, one ``Evaluator='bias'`` row per label. Empty
texts are not scored.

Metrics (``/metrics``): ``veil_classifier_lag_seconds`` (span time to scored),
``veil_classifier_queue_depth``, ``veil_classifier_texts_total`` (rate = texts/s),
``veil_classifier_batch_size``, ``veil_classifier_dropped_total{reason}``, ``veil_classifier_model_info``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from veil_collector.classify.identity import IdentityLexicon
from veil_collector.classify.process import close_classifier, start_toxicity_classifier
from veil_collector.records import Evaluation, EventSink, GenAICall, StoredBatch

if TYPE_CHECKING:
    from veil_collector.classify.base import ModelIdentity, TextClassifier
    from veil_collector.classify.bias_model import BiasClassifier
    from veil_collector.config import Settings
    from veil_collector.store.client import Store

logger = logging.getLogger(__name__)

LAG = Histogram(
    "veil_classifier_lag_seconds",
    "Seconds from a span's start time until its texts were scored and stored",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
QUEUE_DEPTH = Gauge("veil_classifier_queue_depth", "Calls waiting to be classified")
TEXTS = Counter("veil_classifier_texts_total", "Texts classified", ["target"])
BATCH_SIZE = Histogram(
    "veil_classifier_batch_size",
    "Texts per classifier pass (one predict call, one insert)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
DROPPED = Counter("veil_classifier_dropped_total", "Calls not classified, by reason", ["reason"])
MODEL_INFO = Gauge(
    "veil_classifier_model_info", "The models the classifier runs", ["evaluator", "model", "version"]
)

DRAIN_BATCHES = 8
_STORE_RETRIES = (0.5, 1.0, 2.0)
_POLL_S = 0.1


class ClassifierStage:
    """Scores stored calls on a worker thread; see the module docstring for the contract.

    Args:
        settings: reads ``toxicity_model``, ``models_dir``, ``classify_inputs``, ``classifier_device``,
            ``classifier_batch_size`` and ``classifier_queue_size``.
        store: where ``evaluations`` rows go.
        sink: receives each batch's rows after they are stored (alert rules).
        toxicity: a ready classifier; by default :meth:`start` loads the configured detoxify model (or the
            offline fallback). Pass one to share a model with the guardrails.
        bias: an optional "bias" text classifier
            (:class:`~veil_collector.classify.bias_model.BiasClassifier`).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        sink: EventSink | None = None,
        *,
        toxicity: TextClassifier | None = None,
        bias: BiasClassifier | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._sink = sink
        self._toxicity = toxicity
        self._owns_toxicity = False  # True once start() built it: shutdown() then stops it
        self._bias = bias
        self._lexicon = IdentityLexicon()
        self._batch_size = settings.classifier_batch_size
        self._drain_size = settings.classifier_batch_size * DRAIN_BATCHES
        self._queue: queue.Queue[GenAICall] = queue.Queue(maxsize=settings.classifier_queue_size)
        # Calls accepted and not yet finished (queued or in the worker's hands), for force_flush.
        self._pending = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def toxicity(self) -> TextClassifier | None:
        """The toxicity classifier in use (None before :meth:`start`), e.g. to share with the guardrails."""
        return self._toxicity

    def start(self) -> None:
        """Load the models (on this thread; can take seconds, or a download) and start the worker.

        Raises:
            RuntimeError: already started.
            ValueError: the configured model names nothing known, or a file is not a detoxify checkpoint.
        """
        if self._thread is not None:
            raise RuntimeError("ClassifierStage.start() called twice")
        if self._toxicity is None:
            self._toxicity = start_toxicity_classifier(self._settings)
            self._owns_toxicity = True
        MODEL_INFO.labels("toxicity", self._toxicity.name, self._toxicity.version).set(1)
        identity = self._toxicity if self._toxicity.identity_labels else self._lexicon
        MODEL_INFO.labels("identity", identity.name, identity.version).set(1)
        if self._bias is not None:
            MODEL_INFO.labels("bias", self._bias.name, self._bias.version).set(1)
        self._thread = threading.Thread(target=self._run, name="veil-classifier", daemon=True)
        self._thread.start()

    def on_stored(self, batch: StoredBatch) -> None:
        """Pipeline listener: enqueue ``batch.calls``, blocking while the queue is full (backpressure).

        After :meth:`shutdown` calls are dropped and counted (``reason="shutdown"``).

        Raises:
            RuntimeError: the stage was never started (nothing would ever drain the queue).
        """
        if self._thread is None:
            raise RuntimeError("ClassifierStage.on_stored() before start()")
        for call in batch.calls:
            with self._idle:
                self._pending += 1
            while True:
                if self._stopping.is_set():
                    DROPPED.labels("shutdown").inc()
                    self._finished(1)
                    break
                try:
                    self._queue.put(call, timeout=_POLL_S)
                except queue.Full:
                    continue
                QUEUE_DEPTH.set(self._queue.qsize())
                break

    def force_flush(self, timeout: float | None = None) -> bool:
        """Wait until every call accepted so far is scored and stored (or dropped); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting calls, finish the queued ones within ``timeout``, stop the worker.

        Returns:
            True when everything accepted was scored; False when calls were left (counted as dropped).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        drained = self._thread is None or self.force_flush(timeout)
        if self._thread is not None:
            self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = self._queue.qsize()
        if left:
            DROPPED.labels("shutdown").inc(left)
            logger.warning("classifier stopped with %d calls unscored", left)
        if self._owns_toxicity:
            close_classifier(self._toxicity)
        return drained and not left

    # --- worker -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            calls = [first]
            while len(calls) < self._drain_size:
                try:
                    calls.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            QUEUE_DEPTH.set(self._queue.qsize())
            try:
                self._process(calls)
            except Exception:  # the worker must survive a bad batch; the loss is logged and counted
                logger.exception("classifier batch of %d calls failed", len(calls))
                DROPPED.labels("classifier_error").inc(len(calls))
            finally:
                self._finished(len(calls))

    def _finished(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            if not self._pending:
                self._idle.notify_all()

    def _process(self, calls: Sequence[GenAICall]) -> None:
        targets = ("output", "input") if self._settings.classify_inputs else ("output",)
        items = [
            (call, target, text)
            for call in calls
            for target in targets
            if (text := call.output_text if target == "output" else call.input_text)
        ]
        if not items:
            return
        texts = [text for _, _, text in items]
        BATCH_SIZE.observe(len(texts))
        rows = self._score(items, texts)
        if not self._insert(rows):
            DROPPED.labels("store_error").inc(len(calls))
            return
        scored_at = time.time()
        for call in calls:
            LAG.observe(max(0.0, scored_at - _epoch_seconds(call.timestamp)))
        for _, target, _ in items:
            TEXTS.labels(target).inc()
        if self._sink is not None and rows:
            try:
                self._sink.on_evaluations(rows)
            except Exception:  # user-configurable rules run here; one bad rule must not stop scoring
                logger.exception("event sink failed on %d evaluations", len(rows))

    def _score(self, items: list[tuple[GenAICall, str, str]], texts: list[str]) -> list[Evaluation]:
        toxicity = self._toxicity
        assert toxicity is not None  # set by start(), which starts this thread
        predictions = toxicity.predict(texts)
        identity_model: ModelIdentity = toxicity if toxicity.identity_labels else self._lexicon
        identities = predictions if toxicity.identity_labels else self._lexicon.predict(texts)
        biases = self._bias.predict(texts) if self._bias is not None else [{}] * len(texts)
        evaluated_at = datetime.now(timezone.utc)
        rows: list[Evaluation] = []
        for (call, target, _), scores, groups, bias in zip(
            items, predictions, identities, biases, strict=True
        ):
            scored = [("toxicity", label, scores[label], toxicity) for label in toxicity.labels]
            scored += [
                ("identity", label, groups[label], identity_model)
                for label in (toxicity.identity_labels or tuple(groups))
            ]
            if self._bias is not None:
                scored += [("bias", label, score, self._bias) for label, score in bias.items()]
            rows.extend(
                Evaluation(
                    project_id=call.project_id,
                    timestamp=call.timestamp,
                    evaluated_at=evaluated_at,
                    trace_id=call.trace_id,
                    span_id=call.span_id,
                    service_name=call.service_name,
                    environment=call.environment,
                    request_model=call.request_model,
                    target=target,
                    evaluator=evaluator,
                    label=label,
                    score=score,
                    model_name=model.name,
                    model_version=model.version,
                )
                for evaluator, label, score, model in scored
            )
        return rows

    def _insert(self, rows: list[Evaluation]) -> bool:
        """One insert for the whole batch, retried a few times; False when it never succeeded."""
        data = [r.as_row() for r in rows]
        for attempt, pause in enumerate((*_STORE_RETRIES, None), start=1):
            try:
                self._store.insert(Evaluation.TABLE, data, Evaluation.COLUMNS)
                return True
            # Either driver (chDB or HTTP) may raise; transient and permanent errors look alike here, so
            # retry briefly, then count the loss rather than stall the pipeline behind a broken store.
            except Exception:
                if pause is None or self._stopping.is_set():
                    logger.exception("could not store %d evaluations after %d attempts", len(rows), attempt)
                    return False
                time.sleep(pause)
        return False


def _epoch_seconds(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC (how the store hands times over)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
