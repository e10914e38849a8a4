"""The toxicity classifier in its own process: same scores, errors that keep their meaning, restarts."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from veil_collector.classify.loader import ModelUnavailable
from veil_collector.classify.process import (
    ClassifierOptions,
    ClassifierProcess,
    ClassifierProcessError,
    start_toxicity_classifier,
)
from veil_collector.classify.toxicity import ToxicityClassifier, load_toxicity_classifier
from veil_collector.config import Settings

TEXTS = ["you are a stupid idiot", "thanks for the help", "", "muslim women " * 40]


@pytest.fixture(scope="module")
def remote(models_dir: Path) -> Iterator[ClassifierProcess]:
    classifier = ClassifierProcess(ClassifierOptions("unbiased", models_dir=models_dir, device="cpu"))
    yield classifier
    classifier.close()


def test_scores_equal_the_in_process_classifiers(remote: ClassifierProcess, models_dir: Path) -> None:
    local = load_toxicity_classifier("unbiased", models_dir=models_dir, device="cpu")
    assert isinstance(local, ToxicityClassifier)
    assert (remote.name, remote.version, remote.labels, remote.identity_labels) == (
        local.name,
        local.version,
        local.labels,
        local.identity_labels,
    )
    assert remote.device == "cpu" and remote.pid not in (None, os.getpid())
    got, expected = remote.predict(TEXTS), local.predict(TEXTS)
    assert [list(row) for row in got] == [list(row) for row in expected]  # every label, in order
    for row, reference in zip(got, expected, strict=True):
        assert row == pytest.approx(reference, abs=1e-6)
    assert remote.predict([]) == []


def test_a_bad_request_fails_alone_and_the_process_keeps_serving(remote: ClassifierProcess) -> None:
    pid = remote.pid
    with pytest.raises(ClassifierProcessError, match="the classifier process failed"):
        remote.predict([None])  # type: ignore[list-item]  # the tokenizer rejects it in the child
    assert remote.pid == pid
    assert len(remote.predict(["still here"])) == 1


def test_a_killed_process_is_replaced_on_the_next_call(
    remote: ClassifierProcess, caplog: pytest.LogCaptureFixture
) -> None:
    before = remote.predict(["you are an idiot"])
    old = remote.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    # The kill may land before or while the next call is sent: that call fails, or the restart happens first.
    with caplog.at_level(logging.ERROR, logger="veil_collector.classify.process"):
        try:
            after = remote.predict(["you are an idiot"])
        except ClassifierProcessError:
            after = remote.predict(["you are an idiot"])
    assert remote.pid not in (None, old)
    assert after == before
    assert "classifier process exited" in caplog.text


def test_load_errors_keep_their_type(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown toxicity model 'nope'"):
        ClassifierProcess(ClassifierOptions("nope", models_dir=models_dir, device="cpu"))
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE"):
        ClassifierProcess(ClassifierOptions("original", models_dir=tmp_path, allow_fallback=False))


def test_the_settings_choose_the_process_and_the_fallback_runs_there_too(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models_dir=tmp_path, classifier_device="cpu")
    assert settings.classifier_process
    classifier = start_toxicity_classifier(settings)
    try:
        assert isinstance(classifier, ClassifierProcess)
        assert (classifier.name, classifier.labels) == ("alt-profanity-check", ("toxicity",))
        clean, profane = classifier.predict(["thank you for the help", "fuck you, you stupid shit"])
        assert clean["toxicity"] < 0.5 < profane["toxicity"]
    finally:
        classifier.close()
    assert classifier.pid is None
    classifier.close()  # idempotent
    in_process = start_toxicity_classifier(settings.model_copy(update={"classifier_process": False}))
    assert not isinstance(in_process, ClassifierProcess)
    assert in_process.name == "alt-profanity-check"


def test_the_precision_setting_is_read_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(data_dir=tmp_path).classifier_precision == "auto"
    monkeypatch.setenv("VEIL_CLASSIFIER_PRECISION", "int8")
    assert Settings(data_dir=tmp_path).classifier_precision == "int8"
    with pytest.raises(ValidationError, match="classifier_precision"):
        Settings(data_dir=tmp_path, classifier_precision="fp16")
    with pytest.raises(ValidationError, match="int8 runs on the CPU only; classifier_device is 'cuda:0'"):
        Settings(data_dir=tmp_path, classifier_device="cuda:0", classifier_precision="int8")
    assert Settings(data_dir=tmp_path, classifier_device="cuda:0", classifier_precision="bf16")


def test_the_precision_setting_reaches_the_classifier_in_and_out_of_process(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, models_dir=models_dir, classifier_device="cpu", classifier_precision="int8"
    )
    in_process = start_toxicity_classifier(settings.model_copy(update={"classifier_process": False}))
    assert isinstance(in_process, ToxicityClassifier)
    assert in_process.precision == "int8"
    expected = in_process.predict(TEXTS)
    other = load_toxicity_classifier("original", models_dir=models_dir, device="cpu", precision="fp32")
    # int8 scores are told apart from fp32 ones on the tiny model (5.3e-2 apart at most here)...
    fp32 = other.predict(TEXTS)
    assert max(abs(a[k] - b[k]) for a, b in zip(expected, fp32, strict=True) for k in a) > 1e-3
    remote = start_toxicity_classifier(settings)
    try:
        assert isinstance(remote, ClassifierProcess)
        # ... so the child's scores show which precision it runs.
        for row, reference in zip(remote.predict(TEXTS), expected, strict=True):
            assert row == pytest.approx(reference, abs=1e-6)
    finally:
        remote.close()
