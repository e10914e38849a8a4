"""Fixtures of the guard tests: a tiny random detoxify model, the real scorer, span capture.

The tiny model is written by the classifier tests' own helper (``tests/collector/classify/tiny_detoxify.py``)
in detoxify's checkpoint format and loaded through the collector's real loader, offline.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from veil import _guarded


def _tiny_detoxify() -> ModuleType:
    path = Path(__file__).parents[1] / "collector" / "classify" / "tiny_detoxify.py"
    spec = importlib.util.spec_from_file_location("tiny_detoxify_for_guard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_detoxify = _tiny_detoxify()


@pytest.fixture(autouse=True)
def _no_swallowed_errors() -> Iterator[None]:
    """Fails the test when SDK code swallowed an exception inside ``capture_internal_exceptions``."""
    caught: list[BaseException] = []
    remove = _guarded._add_capture_hook(lambda stage, exc: caught.append(exc))
    yield
    remove()
    if caught:
        raise caught[0]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VEIL_MODELS_DIR`` holding a tiny random ``original`` detoxify model."""
    root = tmp_path_factory.mktemp("guard-models")
    tiny_detoxify.write_tiny_model(root / "original", tiny_detoxify.ORIGINAL_CLASSES)
    return root


@pytest.fixture(scope="session")
def toxicity(models_dir: Path) -> object:
    """The collector's real toxicity classifier on the tiny model (CPU), loaded with no network."""
    from veil_collector.classify.toxicity import load_toxicity_classifier

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        return load_toxicity_classifier("original", models_dir=models_dir, device="cpu", allow_fallback=False)


@pytest.fixture
def spans() -> Iterator[tuple[object, InMemorySpanExporter]]:
    """A tracer whose finished spans land in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("guard-tests"), exporter
    provider.shutdown()
