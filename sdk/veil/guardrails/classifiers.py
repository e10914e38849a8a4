"""The ``"toxicity"`` and ``"bias"`` checks, scored in-process or by the collector.

Scoring needs a transformer model. When the collector's classifier code and a local model folder are
installed in the application's own environment (``pip install 'veil[collector]'`` plus weights under
``VEIL_MODELS_DIR``), :class:`LocalClassifier` scores in-process with the collector's own scorer;
otherwise :class:`RemoteClassifier` asks the collector's ``POST /v1/guard``, where concurrent requests
are micro-batched. Both are blocking checks: the guard stops waiting at its deadline and ``fail_open``
decides what an unanswered check means.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veil.guardrails._result import Action
from veil.guardrails.checks import Check, CheckContext, CheckOutcome, register_check

if TYPE_CHECKING:
    from veil_collector.guard.scoring import Scorer

DEFAULT_COLLECTOR = "http://localhost:4318"
GUARD_PATH = "/v1/guard"
_TRACES_PATH = "/v1/traces"


class ClassifierBackend(ABC):
    """Where a classifier check gets its score. Implementations are thread-safe."""

    @abstractmethod
    def score(self, text: str, check: str, ctx: CheckContext) -> float:
        """The ``check`` score of ``text`` in [0, 1]; must give up by ``ctx.deadline``. May raise."""


class RemoteClassifier(ClassifierBackend):
    """Scores on the collector's ``POST /v1/guard``.

    Args:
        endpoint: The collector's base URL (a traces URL ending in ``/v1/traces`` is accepted too);
            default ``VEIL_ENDPOINT``, else ``http://localhost:4318``.
        api_key: Sent as ``Authorization: Bearer <key>``; default ``VEIL_API_KEY``.
    """

    def __init__(self, endpoint: str | None = None, api_key: str | None = None) -> None:
        base = (endpoint or os.environ.get("VEIL_ENDPOINT") or DEFAULT_COLLECTOR).rstrip("/")
        base = base.removesuffix(_TRACES_PATH)
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the collector endpoint must be an http(s) URL; got {base!r}")
        self.url = base + GUARD_PATH
        key = api_key if api_key is not None else os.environ.get("VEIL_API_KEY", "")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def score(self, text: str, check: str, ctx: CheckContext) -> float:
        from veil import _runtime

        body = {
            "texts": [text],
            "checks": [check],
            "target": ctx.target,
            "on_fail": "flag",
            # An initialized SDK records the decision on the span; the collector ingests it from there.
            "record": _runtime.ACTIVE is None,
            "trace_id": ctx.trace_id or "",
        }
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=self._headers, method="POST"
        )
        left = ctx.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left for the collector")
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise RuntimeError(f"collector answered {exc.code} to {GUARD_PATH}: {detail}") from exc
        return float(answer["results"][0]["checks"][0]["score"])


class LocalClassifier(ClassifierBackend):
    """Scores in-process with the collector's scorer and a local detoxify model (loaded on first use).

    Args:
        model: A detoxify model type or path (see ``veil_collector.classify.loader``).
        models_dir: The offline models folder; default ``VEIL_MODELS_DIR``.
        device: ``cpu``, ``cuda``, ``auto``, ...
    """

    def __init__(
        self, model: str = "original", *, models_dir: Path | None = None, device: str = "cpu"
    ) -> None:
        self.model = model
        self.models_dir = models_dir if models_dir is not None else _env_models_dir()
        self.device = device
        self._scorer: Scorer | None = None
        self._lock = threading.Lock()

    @staticmethod
    def available(model: str = "original", models_dir: Path | None = None) -> bool:
        """True when the collector extra is installed and ``model`` is on local disk (no download).

        Decided without importing torch: the classifier modules are found, and ``model`` is a path or a
        folder under ``models_dir`` (default ``VEIL_MODELS_DIR``).
        """
        if importlib.util.find_spec("veil_collector") is None or importlib.util.find_spec("detoxify") is None:
            return False
        folder = models_dir if models_dir is not None else _env_models_dir()
        return Path(model).expanduser().exists() or (folder is not None and (folder / model).is_dir())

    def load(self) -> None:
        """Loads the model now (it takes seconds), so that the first guarded call does not time out."""
        self._loaded()

    def score(self, text: str, check: str, ctx: CheckContext) -> float:
        from veil_collector.guard.scoring import ScoreItem

        scores = self._loaded().score([ScoreItem(text, bias=check == "bias")])[0]
        return scores.toxicity if check == "toxicity" else float(scores.bias or 0.0)

    def _loaded(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                from veil_collector.classify.toxicity import load_toxicity_classifier
                from veil_collector.guard.scoring import Scorer

                classifier = load_toxicity_classifier(
                    self.model, models_dir=self.models_dir, device=self.device, allow_fallback=False
                )
                self._scorer = Scorer(classifier)
            return self._scorer


def _env_models_dir() -> Path | None:
    folder = os.environ.get("VEIL_MODELS_DIR")
    return Path(folder) if folder else None


_default_backend: ClassifierBackend | None = None
_default_lock = threading.Lock()


def default_backend() -> ClassifierBackend:
    """In-process scoring when :meth:`LocalClassifier.available`, else the collector; chosen once."""
    global _default_backend
    with _default_lock:
        if _default_backend is None:
            model = os.environ.get("VEIL_TOXICITY_MODEL", "original")
            _default_backend = (
                LocalClassifier(model) if LocalClassifier.available(model) else RemoteClassifier()
            )
        return _default_backend


class _ClassifierCheck(Check):
    blocking = True

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        backend: ClassifierBackend | None = None,
        on_fail: Action | None = None,
    ) -> None:
        super().__init__(on_fail=on_fail)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
        self.threshold = threshold
        self.backend = backend

    def evaluate(self, text: str, ctx: CheckContext) -> CheckOutcome:
        backend = self.backend if self.backend is not None else default_backend()
        score = backend.score(text, self.name, ctx)
        if score < self.threshold:
            return CheckOutcome(violated=False, score=score)
        # No redaction: a classifier scores the whole text and cannot say which words to cut.
        return CheckOutcome(violated=True, score=score, reason=f"score {score:.2f} >= {self.threshold:g}")


class Toxicity(_ClassifierCheck):
    """Toxic text (the highest of the detoxify labels). Blocks by default.

    Args:
        threshold: Score at or above which the text violates.
        backend: Where scores come from (default: :func:`default_backend`).
        on_fail: Overrides the guard's action (``redact`` blocks: toxicity cannot be cut out).
    """

    name = "toxicity"
    default_action: Action = "block"


class Bias(_ClassifierCheck):
    """Biased text: toxicity aimed at an identity group, or a bias model's score. Flags by default.

    Args as for :class:`Toxicity`.
    """

    name = "bias"
    default_action: Action = "flag"


register_check("toxicity", Toxicity)
register_check("bias", Bias)
