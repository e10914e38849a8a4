"""Run the collector under uvicorn: ``serve(settings)`` (the ``veil collector`` command calls it), or
``python -m veil_collector.server`` with ``VEIL_*`` environment settings."""

from __future__ import annotations

import logging
import os
import signal

import uvicorn

from veil_collector.app import create_app
from veil_collector.config import Settings

logger = logging.getLogger(__name__)


def _stop_process(exc: BaseException) -> None:
    # Never acknowledge after a failed sync: stop, and let the supervisor restart on a recovered spool.
    logger.critical("spool failed (%s): stopping the collector", exc)
    os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings) -> None:
    """Serve the collector on ``settings.host:settings.port`` until interrupted or the spool fails."""
    app = create_app(settings)
    app.state.on_spool_failure = _stop_process
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # OTLP bodies can be large; uvicorn's own limits stay off, the route enforces max_request_bytes.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Settings())
