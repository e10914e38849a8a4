"""Run the toxicity classifier in its own process, behind the :class:`TextClassifier` interface.

Why a process: the model's own Python work (tokenizing, and launching a forward pass's hundreds of
kernels) then runs on its own interpreter and core instead of taking GIL time from the collector's HTTP
event loop and ingest threads. On the H200 box one 4,096-text scoring pass took 1.13 s, of which the GPU
computed 0.37 s and torch's operator calls 0.16 s (``bench/results/classify_cuda_profile.txt``); tokenizing
took about 0.6 s of CPU (6,600 texts/s there, a one-off timing): all of it GIL time in a single-process
collector.
A crash or an out-of-memory kill in the model takes down the child, not the collector. What it does not
buy (measured on the H200 over HTTP, ``bench/results/guard_latency.md``): guard throughput, which the
HTTP stack's per-request cost bounds either way (344 requests/s with the child, 232 to 394 without it).
The collector's side only sends texts down a pipe and waits in ``recv`` with the GIL released.

The child loads the model with :func:`~veil_collector.classify.toxicity.load_toxicity_classifier` (so the
offline fallback applies there too, and the child logs which model runs) and answers one request at a
time. Texts go down as a list of strings; scores come back as rows of floats in label order.

If the child dies (killed, out of memory), the call in flight raises :class:`ClassifierProcessError` and
the next call starts a new child, logging why.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veil_collector.gc_tuning import tune_gc

if TYPE_CHECKING:
    from veil_collector.classify.base import Precision, TextClassifier
    from veil_collector.config import Settings

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 600.0  # a first download of a detoxify checkpoint can take minutes
_STOP_TIMEOUT_S = 10.0


class ClassifierProcessError(RuntimeError):
    """The classifier process failed a request or exited while serving it."""


@dataclass(frozen=True)
class ClassifierOptions:
    """What the child passes to :func:`~veil_collector.classify.toxicity.load_toxicity_classifier`."""

    model: str = "original"
    models_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    precision: Precision = "auto"
    allow_fallback: bool = True


class ClassifierProcess:
    """A :class:`~veil_collector.classify.base.TextClassifier` whose model runs in a child process.

    Construction starts the child and waits until its model is loaded. Thread-safe: calls are serialized
    (the child runs one forward batch at a time anyway), so concurrent callers should batch their texts.

    Attributes:
        name, version, labels, identity_labels: the child's classifier's, as
            :class:`~veil_collector.classify.base.TextClassifier` defines them.
        device: where the child's model runs (``cpu``, ``cuda:0``; ``cpu`` for the fallback).
        pid: the child's process id.

    Raises:
        ModelUnavailable: no weights could be had and ``options.allow_fallback`` is False.
        ValueError: the model names nothing known, or a file is not a detoxify checkpoint.
        ClassifierProcessError: the child failed otherwise, or did not load within 10 minutes.
    """

    def __init__(self, options: ClassifierOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        identity = self._start()
        self.name: str = identity["name"]
        self.version: str = identity["version"]
        self.labels: tuple[str, ...] = tuple(identity["labels"])
        self.identity_labels: tuple[str, ...] = tuple(identity["identity_labels"])
        self.device: str = identity["device"]
        self._all_labels = self.labels + self.identity_labels

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Scores ``texts`` in the child; the contract of :meth:`TextClassifier.predict`.

        Raises:
            ClassifierProcessError: the child failed this request or exited while serving it.
        """
        if not texts:
            return []
        with self._lock:
            if self._process is None or not self._process.is_alive():
                code = self._process.exitcode if self._process is not None else None
                logger.error("classifier process exited (code %s); starting a new one", code)
                self._start()
            assert self._conn is not None
            try:
                self._conn.send(("predict", list(texts)))
                reply = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._reap()
                raise ClassifierProcessError(f"the classifier process exited while scoring: {exc!r}") from exc
        if reply[0] != "ok":
            raise ClassifierProcessError(f"the classifier process failed: {reply[1]}: {reply[2]}")
        return [dict(zip(self._all_labels, row, strict=False)) for row in reply[1]]

    def close(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Stops the child (waits at most ``timeout``, then kills it). Idempotent."""
        with self._lock:
            if self._conn is not None and self._process is not None and self._process.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._process.join(timeout)
            self._reap()

    def _start(self) -> dict[str, Any]:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self.options), name="veil-classifier-model", daemon=True
        )
        process.start()
        child.close()  # only the child holds its end now: its exit shows up here as EOF
        self._process, self._conn = process, parent
        try:
            if not parent.poll(_START_TIMEOUT_S):
                raise ClassifierProcessError(
                    f"the classifier process did not load within {_START_TIMEOUT_S:.0f} s"
                )
            reply = parent.recv()
        except (EOFError, OSError) as exc:
            self._reap()
            raise ClassifierProcessError(
                f"the classifier process exited while loading (code {process.exitcode})"
            ) from exc
        except ClassifierProcessError:
            self._reap()
            raise
        if reply[0] == "ready":
            return reply[1]
        self._reap()
        kind, message = reply[1], reply[2]
        raise _start_error(kind)(message)

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(_STOP_TIMEOUT_S)
        self._process, self._conn = None, None


def _start_error(kind: str) -> type[Exception]:
    """Load errors the caller can act on keep their type across the process boundary."""
    if kind == "ModelUnavailable":
        from veil_collector.classify.loader import ModelUnavailable  # imports torch: only on this path

        return ModelUnavailable
    return ValueError if kind == "ValueError" else ClassifierProcessError


def _serve(conn: Connection, options: ClassifierOptions) -> None:
    """The child: load the classifier, say what it is, then answer predict requests until told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s [classifier process] %(name)s: %(message)s")
    try:
        from veil_collector.classify.toxicity import load_toxicity_classifier

        classifier = load_toxicity_classifier(
            options.model,
            models_dir=options.models_dir,
            device=options.device,
            batch_size=options.batch_size,
            precision=options.precision,
            allow_fallback=options.allow_fallback,
        )
    except Exception as exc:  # the parent re-raises it; nothing else can be done here
        conn.send(("failed", type(exc).__name__, str(exc)))
        return
    tune_gc()  # torch and transformers hold ~430k objects: full GC passes would stall batches for ~0.2 s
    identity = {
        "name": classifier.name,
        "version": classifier.version,
        "labels": classifier.labels,
        "identity_labels": classifier.identity_labels,
        "device": str(getattr(classifier, "device", "cpu")),
    }
    conn.send(("ready", identity))
    labels = classifier.labels + classifier.identity_labels
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the collector is gone
            return
        if request is None:
            return
        try:
            scores = classifier.predict(request[1])
            reply: tuple[Any, ...] = ("ok", [[row[label] for label in labels] for row in scores])
        except Exception as exc:  # one bad batch must not end the process; the caller learns why
            reply = ("error", type(exc).__name__, str(exc))
        conn.send(reply)


def start_toxicity_classifier(settings: Settings) -> TextClassifier:
    """The toxicity classifier the collector runs, per ``settings``: in a child process when
    ``classifier_process`` is on (the default; see the module docstring), else in this process.

    Either way it is the configured detoxify model or, without weights, the offline fallback. The caller
    owns the result: close a :class:`ClassifierProcess` when done with it.

    Raises:
        ValueError: the configured model names nothing known, or a file is not a detoxify checkpoint.
        ClassifierProcessError: the child process failed to start.
    """
    options = ClassifierOptions(
        model=settings.toxicity_model,
        models_dir=settings.models_dir,
        device=settings.classifier_device,
        batch_size=settings.classifier_batch_size,
        precision=settings.classifier_precision,
    )
    if not settings.classifier_process:
        from veil_collector.classify.toxicity import load_toxicity_classifier  # imports torch

        return load_toxicity_classifier(
            options.model,
            models_dir=options.models_dir,
            device=options.device,
            batch_size=options.batch_size,
            precision=options.precision,
        )
    classifier = ClassifierProcess(options)
    logger.info(
        "toxicity model %s (%s) runs in classifier process %s on %s",
        classifier.name,
        classifier.version,
        classifier.pid,
        classifier.device,
    )
    return classifier


def close_classifier(classifier: TextClassifier | None) -> None:
    """Stops ``classifier``'s child process if it has one; other classifiers hold nothing to release."""
    if isinstance(classifier, ClassifierProcess):
        classifier.close()
