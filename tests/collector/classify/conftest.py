"""Fixtures for the classifier tests. No network: ``HF_HUB_OFFLINE=1`` for every test here."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
from tiny_detoxify import IDENTITY_CLASSES, ORIGINAL_CLASSES, UNBIASED_CLASSES, write_tiny_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import, which may have happened before this fixture.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VEIL_MODELS_DIR`` with tiny ``original`` (6 heads) and ``unbiased`` (7 + 9 identity) models."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root / "original", ORIGINAL_CLASSES)
    write_tiny_model(root / "unbiased", UNBIASED_CLASSES, IDENTITY_CLASSES, seed=1)
    return root
