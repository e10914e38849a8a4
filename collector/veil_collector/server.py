"""Run the collector under uvicorn: ``serve(settings)`` (the ``veil collector`` command calls it), or
``python -m veil_collector.server`` with ``VEIL_*`` environment settings."""

from __future__ import annotations

import logging

import uvicorn

from veil_collector.app import create_app
from veil_collector.config import Settings


def serve(settings: Settings) -> None:
    """Serve the collector on ``settings.host:settings.port`` until interrupted."""
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        # OTLP bodies can be large; uvicorn's own limits stay off, the route enforces max_request_bytes.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Settings())
