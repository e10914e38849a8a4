"""Where each `veil.init()` setting comes from: argument, VEIL_* variable, OTel variable, default."""

from __future__ import annotations

from typing import Any

import pytest

from veil import _config

_NONE: dict[str, Any] = dict.fromkeys(
    (
        "endpoint",
        "api_key",
        "service_name",
        "environment",
        "capture_content",
        "sample_rate",
        "scrub_pii",
        "max_attribute_size",
        "max_queue_size",
        "max_export_batch_size",
        "schedule_delay",
        "export_timeout",
        "shutdown_timeout",
    )
)


def resolve(**kwargs: Any) -> _config.Config:
    return _config.resolve(**{**_NONE, **kwargs})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "VEIL_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "VEIL_CAPTURE_CONTENT",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "VEIL_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    config = resolve()
    assert config.endpoint == "http://localhost:4318/v1/traces"
    assert config.headers == {}
    assert (config.capture_content, config.sample_rate, config.scrub_pii) == (True, 1.0, True)
    assert config.max_attribute_size == 32 * 1024


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-base:4318/")
    assert resolve().endpoint == "http://otel-base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    assert resolve().endpoint == "http://traces:4318/custom"  # used as is
    monkeypatch.setenv("VEIL_ENDPOINT", "https://veil.example.com")
    assert resolve().endpoint == "https://veil.example.com/v1/traces"
    assert resolve(endpoint="http://arg:4318/v1/traces").endpoint == "http://arg:4318/v1/traces"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SPAN_ONLY", True),
        ("SPAN_AND_EVENT", True),
        ("NO_CONTENT", False),
        ("EVENT_ONLY", False),
        ("false", False),
    ],
)
def test_otel_genai_capture_modes(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert resolve().capture_content is expected


def test_veil_variable_wins_over_otel_and_argument_wins_over_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    monkeypatch.setenv("VEIL_CAPTURE_CONTENT", "false")
    assert resolve().capture_content is False
    assert resolve(capture_content=True).capture_content is True


def test_api_key_becomes_a_bearer_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_API_KEY", "from-env")
    assert resolve().headers == {"authorization": "Bearer from-env"}
    assert resolve(api_key="arg").headers == {"authorization": "Bearer arg"}
