"""Alert rules: the pydantic model, durations, and loading a YAML rules file.

A rule belongs to one project and has exactly one condition: an *event* condition fires on single records
(a toxic output, a PII leak, a guard block) and a *window* condition runs a query on ClickHouse every
``every`` seconds. Each rule routes its notifications to its own list of destinations (webhook, Slack,
PagerDuty). The YAML file holds ``rules:`` (a list of rules, each with an optional ``project``); the API
creates the same model per project.

Example::

    rules:
      - id: toxic-output
        name: Toxic output
        severity: critical
        event: {type: toxicity, threshold: 0.8, group_by: [service, model]}
        repeat_interval: 4h
        destinations:
          - {name: ops, type: webhook, url: "https://ops.example/hooks/veil", secret: "whsec_..."}
      - id: error-rate
        name: Error rate above 5%
        window: {type: error_rate, window: 5m, threshold: 0.05, min_samples: 20}
        for: 2m
        destinations:
          - {name: oncall, type: pagerduty, routing_key: "..."}
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PROJECT = "default"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class RulesFileError(ValueError):
    """The rules file is missing, is not YAML, or holds an invalid rule (the message says which)."""


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a string such as ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"``.

    Raises:
        ValueError: the value is neither a non-negative number nor such a string.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 4h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30s, 5m or 4h; got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative; got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Severity = Literal["critical", "error", "warning", "info"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- destinations -----------------------------------------------------------------------------------------


class _DestinationBase(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class WebhookDestination(_DestinationBase):
    """Any HTTP receiver: a Grafana/Alertmanager-style JSON body signed with Standard Webhooks."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret: SecretStr | None = Field(
        default=None, description="whsec_<base64 of 24-64 random bytes>; unsigned when absent"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_key(value.get_secret_value())
        return value


class SlackDestination(_DestinationBase):
    """A Slack incoming webhook (the URL is the secret)."""

    type: Literal["slack"] = "slack"
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        TypeAdapter(HttpUrl).validate_python(value.get_secret_value())
        return value


class PagerDutyDestination(_DestinationBase):
    """PagerDuty Events API v2: trigger on firing, resolve on resolved, ``dedup_key`` = fingerprint."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr
    url: HttpUrl = HttpUrl(PAGERDUTY_EVENTS_URL)

    @field_validator("routing_key")
    @classmethod
    def _check_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("routing_key must not be empty")
        return value


Destination = Annotated[
    WebhookDestination | SlackDestination | PagerDutyDestination, Field(discriminator="type")
]


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks ``whsec_`` secret.

    Raises:
        ValueError: the secret lacks the ``whsec_`` prefix, is not base64, or is not 24-64 bytes.
    """
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret is 'whsec_' followed by base64 (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except binascii.Error as exc:
        raise ValueError("the part of a webhook secret after 'whsec_' must be base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret must decode to 24-64 bytes; this one has {len(key)}")
    return key


# --- conditions -------------------------------------------------------------------------------------------

EVENT_LABELS: dict[str, tuple[str, ...]] = {
    "toxicity": ("service", "environment", "model", "target"),
    "pii_leak": ("service", "entity_type", "location", "detector"),
    "guard_block": ("service", "environment", "model", "target", "check"),
}
WINDOW_LABELS: dict[str, tuple[str, ...]] = {
    "toxic_rate": ("service", "environment", "model"),
    "error_rate": ("service", "environment", "model"),
    "latency_p95": ("service", "environment", "model"),
    "token_spend": ("user", "session", "service", "model"),
    "bias_disparity": ("group", "service", "model"),
}


class _GroupedCondition(_Strict):
    type: str
    group_by: list[str] = Field(default_factory=lambda: ["service"])

    @model_validator(mode="after")
    def _check_group_by(self) -> _GroupedCondition:
        allowed = (EVENT_LABELS | WINDOW_LABELS)[self.type]
        unknown = [label for label in self.group_by if label not in allowed]
        if unknown:
            raise ValueError(
                f"{self.type} cannot group by {', '.join(unknown)}; choose from {', '.join(allowed)}"
            )
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by lists a label twice")
        return self


class ToxicityEvent(_GroupedCondition):
    """An evaluation with ``Evaluator='toxicity'`` and the given label scoring at or above ``threshold``."""

    type: Literal["toxicity"]
    threshold: float = Field(ge=0.0, le=1.0)
    label: str = "toxicity"
    target: Literal["output", "input", "any"] = "output"
    group_by: list[str] = Field(default_factory=lambda: ["service", "model"])


class PiiLeakEvent(_GroupedCondition):
    """PII the server found in a span that the SDK's scrubber had missed."""

    type: Literal["pii_leak"]
    entity_types: list[str] = Field(default_factory=list, description="empty: every entity type")


class GuardBlockEvent(_GroupedCondition):
    """A guardrail check that blocked a text."""

    type: Literal["guard_block"]
    checks: list[str] = Field(default_factory=list, description="empty: every check")


EventCondition = Annotated[ToxicityEvent | PiiLeakEvent | GuardBlockEvent, Field(discriminator="type")]


class _WindowCondition(_GroupedCondition):
    window: Duration = Field(default=300.0, gt=0, description="how far back each evaluation looks")
    threshold: float = Field(ge=0.0)
    min_samples: int = Field(default=1, ge=1, description="groups with fewer rows are not judged")


class ToxicRateWindow(_WindowCondition):
    """Share of outputs whose toxicity score is at least ``score_threshold``, above ``threshold``."""

    type: Literal["toxic_rate"]
    threshold: float = Field(ge=0.0, le=1.0)
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class ErrorRateWindow(_WindowCondition):
    """Share of LLM calls that ended in error, above ``threshold``."""

    type: Literal["error_rate"]
    threshold: float = Field(ge=0.0, le=1.0)


class LatencyP95Window(_WindowCondition):
    """95th percentile of LLM call duration in milliseconds, above ``threshold``."""

    type: Literal["latency_p95"]


class TokenSpendWindow(_WindowCondition):
    """Tokens (input + output) or cost in USD per user or session over the window, above ``threshold``."""

    type: Literal["token_spend"]
    metric: Literal["tokens", "cost_usd"] = "tokens"
    group_by: list[str] = Field(default_factory=lambda: ["user"])

    @model_validator(mode="after")
    def _needs_subject(self) -> TokenSpendWindow:
        if "user" not in self.group_by and "session" not in self.group_by:
            raise ValueError("token_spend groups by user or session (group_by must name one)")
        return self


class BiasDisparityWindow(_WindowCondition):
    """A group's toxic-output rate divided by the rate over outputs not mentioning it, above ``threshold``.

    A span mentions a group when an ``identity`` evaluation with that label scores at least
    ``identity_threshold``; an output is toxic when its toxicity score is at least ``score_threshold``.
    """

    type: Literal["bias_disparity"]
    group_by: list[str] = Field(default_factory=lambda: ["group"])
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    identity_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    target: Literal["output", "input"] = "output"

    @model_validator(mode="after")
    def _needs_group(self) -> BiasDisparityWindow:
        if "group" not in self.group_by:
            raise ValueError("bias_disparity compares identity groups: group_by must include 'group'")
        return self


WindowCondition = Annotated[
    ToxicRateWindow | ErrorRateWindow | LatencyP95Window | TokenSpendWindow | BiasDisparityWindow,
    Field(discriminator="type"),
]


# --- the rule ---------------------------------------------------------------------------------------------


class RuleSpec(_Strict):
    """A rule as a user writes it (API body or YAML entry without ``project``)."""

    id: str = Field(description="unique within the project; letters, digits and _ . : -")
    name: str = Field(min_length=1, max_length=256)
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict, description="added to every notification")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="summary, description, runbook_url, ... ({value} is replaced)"
    )
    event: EventCondition | None = None
    window: WindowCondition | None = None
    every: Duration = Field(default=30.0, gt=0, description="evaluation interval of a window rule")
    for_: Duration = Field(default=0.0, alias="for", description="how long a window must breach")
    repeat_interval: Duration = Field(default=4 * 3600.0, gt=0, description="re-send while firing")
    resolve_after: Duration = Field(
        default=300.0, gt=0, description="an event rule resolves after this long without a new event"
    )
    enabled: bool = True
    destinations: list[Destination] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError("id must be 1-128 letters, digits or _ . : - and start with a letter or digit")
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> RuleSpec:
        if (self.event is None) == (self.window is None):
            raise ValueError("a rule has exactly one condition: either 'event' or 'window'")
        if self.event is not None and self.for_ > 0:
            raise ValueError("'for' applies to window rules; an event rule fires on the record itself")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError("destination names must be unique within a rule")
        return self

    @property
    def kind(self) -> Literal["event", "window"]:
        return "event" if self.event is not None else "window"

    @property
    def condition(self) -> EventCondition | WindowCondition:
        condition = self.event if self.event is not None else self.window
        assert condition is not None  # guaranteed by _one_condition
        return condition

    def with_secrets(self) -> dict[str, Any]:
        """JSON-ready dict with secret values revealed: for persistence only, never for API responses."""
        data = self.model_dump(mode="json", by_alias=True)
        for raw, dest in zip(data["destinations"], self.destinations, strict=True):
            for key in ("secret", "url", "routing_key"):
                value = getattr(dest, key, None)
                if isinstance(value, SecretStr):
                    raw[key] = value.get_secret_value()
        return data


class Rule(RuleSpec):
    """A rule bound to its project."""

    project: str = Field(default=DEFAULT_PROJECT, min_length=1)
    source: Literal["file", "api"] = "api"


class RulesFile(_Strict):
    rules: list[Rule] = Field(default_factory=list)


def load_rules_file(path: Path) -> list[Rule]:
    """Read and validate a YAML rules file; every rule gets ``source='file'``.

    Raises:
        RulesFileError: the file cannot be read or parsed, a rule is invalid (with its position and field),
            or two rules of one project share an id.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesFileError(f"cannot read alert rules file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesFileError(f"alert rules file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise RulesFileError(f"alert rules file {path} must be a mapping with a 'rules' list")
    for entry in raw.get("rules") or []:
        if isinstance(entry, dict):
            entry["source"] = "file"
    try:
        rules = RulesFile.model_validate(raw).rules
    except ValidationError as exc:
        raise RulesFileError(f"invalid alert rules file {path}:\n{_describe(exc)}") from exc
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        key = (rule.project, rule.id)
        if key in seen:
            raise RulesFileError(
                f"alert rules file {path}: rule id {rule.id!r} appears twice in {rule.project!r}"
            )
        seen.add(key)
    return rules


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
