"""The collector's FastAPI application factory.

The lifespan opens the store and applies migrations, recovers and opens the spool, and starts the
drain pipeline; at shutdown it commits what the spool has queued, stops the pipeline (what is not yet
stored stays in the spool and is replayed at the next start) and closes the store. The components are
published on ``app.state`` (``settings``, ``store``, ``spool``, ``pipeline``, ``scrubber``,
``preparer``, ``alert_engine``, ``classifier``) so that routes reach them through ``api.deps``.

Stages after storage are pipeline listeners: the classifier stage (``classifiers_enabled``) scores the
stored calls and hands its evaluations to the alert engine (``alerts_enabled``), which also receives the
PII findings and guard decisions of each stored batch.

A spool write or sync error is fatal: every later request gets 503, readiness fails, and
``app.state.on_spool_failure`` (set by ``server.serve`` to stop the process) is called with the error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from veil_collector.alert import AlertEngine
from veil_collector.api.routes import alerts as alerts_routes
from veil_collector.api.routes import evaluations, guard, health, otlp, projects, query
from veil_collector.auth import DEFAULT_PROJECT_ID
from veil_collector.classify.stage import ClassifierStage
from veil_collector.config import Settings
from veil_collector.gc_tuning import tune_gc
from veil_collector.guard.decisions import DecisionLog
from veil_collector.guard.service import GuardService
from veil_collector.pipeline import Pipeline
from veil_collector.pricing import PriceTable
from veil_collector.receiver import RequestPreparer
from veil_collector.records import StoredBatch
from veil_collector.scrub import ServerScrubber, pii_findings_for_span
from veil_collector.spool import Spool
from veil_collector.store.client import Store, redact_dsn
from veil_collector.store.flatten import Flattener
from veil_collector.store.migrate import migrate
from veil_collector.store.native import RequestEncoder

if TYPE_CHECKING:
    from veil_collector.classify.bias_model import BiasClassifier

logger = logging.getLogger(__name__)


def _alert_listener(engine: AlertEngine) -> Callable[[StoredBatch], None]:
    """Forward a stored batch's PII findings and guard decisions to the alert rules."""

    def forward(batch: StoredBatch) -> None:
        if batch.pii_findings:
            engine.on_pii_findings(batch.pii_findings)
        if batch.guard_decisions:
            engine.on_guard_decisions(batch.guard_decisions)

    return forward


def _bias_classifier(settings: Settings) -> BiasClassifier | None:
    """The optional bias model; imported only when configured (transformers takes seconds to import)."""
    if settings.bias_model is None:
        return None
    from veil_collector.classify.bias_model import BiasClassifier
    from veil_collector.classify.toxicity import resolve_device

    device = str(resolve_device(settings.classifier_device))
    return BiasClassifier(settings.bias_model, device=device, batch_size=settings.classifier_batch_size)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the collector app. ``settings`` defaults to ``Settings()`` (``VEIL_*`` environment)."""
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.clickhouse_dsn, database=settings.database)
        migrate(store, ttl_days=settings.ttl_days, cluster=settings.cluster)
        spool = Spool(
            settings.spool_path,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
            min_free_bytes=settings.spool_min_free_bytes,
            on_failure=getattr(app.state, "on_spool_failure", None),
        )
        spool.start()
        scrubber = ServerScrubber.from_settings(settings)
        # Load the NER model now (a missing model fails the start, not every batch of the drain), and
        # compile the pattern scan before the first request.
        scrubber.warm_up()
        flattener = Flattener(
            cost_usd=PriceTable.load(settings.prices_file).cost_usd,
            pii_findings=pii_findings_for_span,
        )
        # The GenAICall records feed only the classifier stage: without it, they are not built.
        encoder = RequestEncoder.for_store(store, flattener, calls=settings.classifiers_enabled)
        # The receiver encodes the rows unless the drain's NER pass has still to change the requests.
        preparer = RequestPreparer(
            scrubber,
            processes=settings.receiver_processes,
            encoder=None if settings.pii_ner_enabled else encoder,
        )
        pipeline = Pipeline(
            spool,
            store,
            encoder=encoder,
            scrubber=scrubber if settings.pii_ner_enabled else None,
            batch_spans=settings.drain_batch_spans,
            interval_s=settings.drain_interval_s,
        )
        alerts = AlertEngine(settings, store) if settings.alerts_enabled else None
        classifier = (
            ClassifierStage(settings, store, sink=alerts, bias=_bias_classifier(settings))
            if settings.classifiers_enabled
            else None
        )
        if alerts is not None:
            alerts.start()
            pipeline.add_listener(_alert_listener(alerts))
        if classifier is not None:
            classifier.start()
            pipeline.add_listener(classifier.on_stored)
        app.state.settings = settings
        app.state.store = store
        app.state.spool = spool
        app.state.pipeline = pipeline
        app.state.scrubber = scrubber
        app.state.preparer = preparer
        app.state.alert_engine = alerts
        app.state.classifier = classifier
        # The guard service shares the classifier stage's model (one copy in memory); without the stage,
        # POST /v1/guard builds its own on first use (api/routes/guard.py).
        app.state.guard = (
            GuardService.from_settings(settings, toxicity=classifier.toxicity, decisions=DecisionLog(store))
            if classifier is not None
            else None
        )
        pipeline.start()
        tune_gc()  # after start-up: the models, patterns and tables loaded above stay out of GC passes
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
                DEFAULT_PROJECT_ID,
            )
        try:
            yield
        finally:
            # Stop in data-flow order: commit what the spool has queued, finish the batch being stored,
            # let the stages finish what they were handed. Anything not stored replays at next start.
            preparer.close()
            spool.close()
            pipeline.stop()
            if classifier is not None:
                classifier.shutdown()
            if alerts is not None:
                alerts.stop()
            guard_service = getattr(app.state, "guard", None)  # may have been built by the first request
            if guard_service is not None:
                guard_service.close()  # flushes buffered guard decisions
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
    for module in (query, evaluations, guard, alerts_routes):
        app.include_router(module.router)
    return app
