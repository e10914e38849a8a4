"""The collector's FastAPI application factory.

The lifespan opens the store and applies migrations, recovers and opens the spool, and starts the
drain pipeline; at shutdown it commits what the spool has queued, stops the pipeline (what is not yet
stored stays in the spool and is replayed at the next start) and closes the store. The components are
published on ``app.state`` (``settings``, ``store``, ``spool``, ``pipeline``, ``scrubber``) so that
other stages can register pipeline listeners and routes can reach them through ``api.deps``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from veil_collector.api.routes import health, otlp, projects
from veil_collector.config import Settings
from veil_collector.pipeline import Pipeline
from veil_collector.pricing import PriceTable
from veil_collector.spool import Spool
from veil_collector.store.client import Store, redact_dsn
from veil_collector.store.flatten import Flattener
from veil_collector.store.migrate import migrate

logger = logging.getLogger(__name__)


def _server_scrubber(settings: Settings) -> Any | None:
    """The PII engine's ``ServerScrubber``; None (no collector-side scrub) only while it is absent."""
    try:
        scrub = importlib.import_module("veil_collector.scrub")
    except ModuleNotFoundError as exc:
        if exc.name != "veil_collector.scrub":
            raise
        scrub = None
    scrubber_class = getattr(scrub, "ServerScrubber", None)
    if scrubber_class is None:
        logger.warning("veil_collector.scrub is absent: spans are stored without the collector's PII scrub")
        return None
    return scrubber_class.from_settings(settings)


def _pii_findings_function(scrubber: Any | None) -> Any | None:
    if scrubber is None:
        return None
    return importlib.import_module("veil_collector.scrub").pii_findings_for_span


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the collector app. ``settings`` defaults to ``Settings()`` (``VEIL_*`` environment)."""
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.clickhouse_dsn, database=settings.database)
        migrate(store, ttl_days=settings.ttl_days)
        spool = Spool(
            settings.spool_path,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
        )
        spool.start()
        scrubber = _server_scrubber(settings)
        flattener = Flattener(
            cost_usd=PriceTable.load(settings.prices_file).cost_usd,
            pii_findings=_pii_findings_function(scrubber),
        )
        pipeline = Pipeline(
            spool,
            store,
            flattener=flattener,
            scrubber=scrubber if settings.pii_ner_enabled else None,
            batch_spans=settings.drain_batch_spans,
            interval_s=settings.drain_interval_s,
        )
        app.state.settings = settings
        app.state.store = store
        app.state.spool = spool
        app.state.pipeline = pipeline
        app.state.scrubber = scrubber
        pipeline.start()
        logger.info(
            "veil collector: ClickHouse %s (database %s), spool %s",
            redact_dsn(settings.clickhouse_dsn),
            settings.database,
            settings.spool_path,
        )
        if settings.no_auth:
            logger.warning(
                "AUTHENTICATION IS OFF (--no-auth): every request is accepted into the '%s' project. "
                "Use this for local development only.",
                "default",
            )
        try:
            yield
        finally:
            spool.close()
            pipeline.stop()
            store.close()

    app = FastAPI(
        title="Veil collector",
        summary="OTLP/HTTP ingest of LLM traces into ClickHouse, with PII scrubbing and a query API",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(otlp.router)
    app.include_router(health.router)
    app.include_router(projects.router)
    try:
        query = importlib.import_module("veil_collector.api.routes.query")
    except ModuleNotFoundError as exc:
        if exc.name != "veil_collector.api.routes.query":
            raise
        logger.info("the query API (veil_collector.api.routes.query) is not installed")
    else:
        app.include_router(query.router)
    return app
