"""`veil.init()` settings: each is an argument, else a `VEIL_*` variable, else an OTel one, else a default.

Explicit arguments that make no sense raise `ValueError` (a programming error, found at startup).
Environment values that make no sense are logged once and replaced by the default: a deployment typo must
not take the application down.

Setting (argument): environment variables, first set wins → default
- traces URL (`endpoint`): VEIL_ENDPOINT (a base URL gets /v1/traces), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  (used as is), OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces) → http://localhost:4318/v1/traces
- API key (`api_key`): VEIL_API_KEY, sent as `Authorization: Bearer <key>` → none
- extra headers: OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS (read by the exporter)
- service name (`service_name`): VEIL_SERVICE_NAME, OTEL_SERVICE_NAME → OTel's "unknown_service"
- environment (`environment`): VEIL_ENVIRONMENT → none
- capture content (`capture_content`): VEIL_CAPTURE_CONTENT (true/false),
  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (the contrib instrumentations' switch: SPAN_ONLY,
  SPAN_AND_EVENT or true capture; NO_CONTENT, EVENT_ONLY or false do not) → true
- sample rate (`sample_rate`): VEIL_SAMPLE_RATE (0..1) → 1.0
- PII scrubbing (`scrub_pii`): VEIL_SCRUB_PII (true/false) → true
- content attribute limit (`max_attribute_size`): VEIL_MAX_ATTRIBUTE_SIZE (bytes, ≥ 256) → 32768
- queue size (`max_queue_size`): VEIL_MAX_QUEUE_SIZE → 8192
- batch size (`max_export_batch_size`): VEIL_MAX_EXPORT_BATCH_SIZE → 2048 (an over-size request is split)
- export interval (`schedule_delay`): VEIL_SCHEDULE_DELAY (seconds) → 1.0
- export timeout (`export_timeout`): VEIL_EXPORT_TIMEOUT, then the OTLP exporter's own variables → 10 s
- exit flush timeout (`shutdown_timeout`): VEIL_SHUTDOWN_TIMEOUT (seconds) → 2.0
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from veil._guarded import logger

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
TRACES_PATH = "/v1/traces"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Config:
    """Resolved settings; see the module docstring for where each comes from."""

    endpoint: str
    headers: dict[str, str]
    service_name: str | None
    environment: str | None
    capture_content: bool
    sample_rate: float
    scrub_pii: bool
    max_attribute_size: int
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay: float
    export_timeout: float | None
    shutdown_timeout: float


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_capture(text: str) -> bool:
    """VEIL_CAPTURE_CONTENT's booleans, plus the OTel GenAI content-capture mode names."""
    mode = text.strip().upper()
    if mode in ("SPAN_ONLY", "SPAN_AND_EVENT"):
        return True
    if mode in ("NO_CONTENT", "EVENT_ONLY"):
        return False
    return _parse_bool(text)


def _setting(
    name: str,
    argument: T | None,
    env_names: tuple[str, ...],
    parse: Callable[[str], T],
    default: T,
    valid: Callable[[T], bool] = lambda _: True,
) -> T:
    if argument is not None:
        if not valid(argument):
            raise ValueError(f"veil.init(): invalid {name}={argument!r}")
        return argument
    for env_name in env_names:
        raw = os.environ.get(env_name)
        if raw is None or not raw.strip():
            continue
        try:
            value = parse(raw.strip())
            if not valid(value):
                raise ValueError("out of range")
        except ValueError:
            logger.warning("veil: ignoring %s=%r (invalid %s); using %r", env_name, raw, name, default)
            return default
        return value
    return default


def _traces_url(endpoint: str) -> str:
    """A base URL gets /v1/traces appended; a URL already ending in it is used as is."""
    stripped = endpoint.rstrip("/")
    return stripped if stripped.endswith(TRACES_PATH) else stripped + TRACES_PATH


def _endpoint(argument: str | None) -> str:
    if argument is not None:
        if not argument.startswith(("http://", "https://")):
            raise ValueError(f"veil.init(): endpoint must be an http(s) URL, got {argument!r}")
        return _traces_url(argument)
    if veil := os.environ.get("VEIL_ENDPOINT", "").strip():
        return _traces_url(veil)
    if traces := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return traces
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return _traces_url(base)
    return DEFAULT_ENDPOINT


def resolve(
    *,
    endpoint: str | None,
    api_key: str | None,
    service_name: str | None,
    environment: str | None,
    capture_content: bool | None,
    sample_rate: float | None,
    scrub_pii: bool | None,
    max_attribute_size: int | None,
    max_queue_size: int | None,
    max_export_batch_size: int | None,
    schedule_delay: float | None,
    export_timeout: float | None,
    shutdown_timeout: float | None,
) -> Config:
    """Builds the `Config` from `veil.init()`'s arguments and the environment.

    Raises:
        ValueError: When an explicit argument is invalid.
    """
    positive_int: Callable[[Any], bool] = lambda v: isinstance(v, int) and v > 0  # noqa: E731
    positive: Callable[[Any], bool] = lambda v: isinstance(v, (int, float)) and v > 0  # noqa: E731
    key = _setting("api_key", api_key, ("VEIL_API_KEY",), str, "")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Config(
        endpoint=_endpoint(endpoint),
        headers=headers,
        service_name=_setting(
            "service_name", service_name, ("VEIL_SERVICE_NAME", "OTEL_SERVICE_NAME"), str, None
        ),
        environment=_setting("environment", environment, ("VEIL_ENVIRONMENT",), str, None),
        capture_content=_setting(
            "capture_content",
            capture_content,
            ("VEIL_CAPTURE_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
            _parse_capture,
            True,
        ),
        sample_rate=_setting(
            "sample_rate",
            sample_rate,
            ("VEIL_SAMPLE_RATE",),
            float,
            1.0,
            lambda v: isinstance(v, (int, float)) and 0.0 <= v <= 1.0,
        ),
        scrub_pii=_setting("scrub_pii", scrub_pii, ("VEIL_SCRUB_PII",), _parse_bool, True),
        max_attribute_size=_setting(
            "max_attribute_size",
            max_attribute_size,
            ("VEIL_MAX_ATTRIBUTE_SIZE",),
            int,
            32 * 1024,
            lambda v: isinstance(v, int) and v >= 256,
        ),
        max_queue_size=_setting(
            "max_queue_size", max_queue_size, ("VEIL_MAX_QUEUE_SIZE",), int, 8192, positive_int
        ),
        max_export_batch_size=_setting(
            "max_export_batch_size",
            max_export_batch_size,
            ("VEIL_MAX_EXPORT_BATCH_SIZE",),
            int,
            # 4x OTel's 512: each request's fixed cost is spread wider (~5 µs less export CPU per span).
            2048,
            positive_int,
        ),
        schedule_delay=_setting(
            "schedule_delay", schedule_delay, ("VEIL_SCHEDULE_DELAY",), float, 1.0, positive
        ),
        export_timeout=_setting(
            "export_timeout", export_timeout, ("VEIL_EXPORT_TIMEOUT",), float, None, positive
        ),
        shutdown_timeout=_setting(
            "shutdown_timeout", shutdown_timeout, ("VEIL_SHUTDOWN_TIMEOUT",), float, 2.0, positive
        ),
    )
