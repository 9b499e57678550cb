"""``GET /metrics``: the Prometheus text format of this process (or, in multi-process mode, of every worker).

Served only by the metrics listener (``VOXGATE_METRICS_HOST``:``VOXGATE_METRICS_PORT``, see
:func:`voxgate.api.app.create_metrics_app`), never on the API port, and without a token: a scraper cannot
log in, and the port is guarded by where it listens. Why a port and not a token: docs/monitoring.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from voxgate.api.deps import RuntimeDep
from voxgate.service import metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    description="Streams, inference engine, enroll/verify outcomes and latency, HTTP requests, webhooks, "
    "SIP, store and process metrics in the Prometheus text format (docs/monitoring.md lists them).",
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    return Response(metrics.render(runtime), media_type=metrics.CONTENT_TYPE)
