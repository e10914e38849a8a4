"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from veil_collector.api.deps import PipelineDep, SpoolDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: ClickHouse reachable, spool under its cap, drain healthy")
async def readyz(store: StoreDep, spool: SpoolDep, pipeline: PipelineDep) -> JSONResponse:
    reasons: list[str] = []
    if not await run_in_threadpool(store.ping):
        reasons.append("ClickHouse is unreachable")
    if pipeline.last_error is not None:
        reasons.append(pipeline.last_error)
    if spool.failed is not None:
        reasons.append(f"spool failed: {spool.failed}")
    elif spool.full:
        reasons.append(
            f"spool is full ({spool.depth_bytes} of {spool.max_bytes} bytes; "
            f"{spool.free_disk_bytes()} bytes free on disk, floor {spool.min_free_bytes})"
        )
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "spool": {"records": spool.depth_records, "bytes": spool.depth_bytes, "max_bytes": spool.max_bytes},
    }
    return JSONResponse(body, status_code=503 if reasons else 200)


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
