"""`GET /metrics`: Prometheus exposition, behind a bearer token when `METRICS_TOKEN` is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response

from ..events import error_body
from .auth import bearer_token
from .deps import ServicesDep

router = APIRouter()


def authorized(authorization: str | None, token: str) -> bool:
    presented = bearer_token(authorization or "")
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


@router.get("/metrics", include_in_schema=False)
async def metrics(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    secret = services.settings.metrics_token
    token = secret.get_secret_value() if secret is not None else ""
    if token and not authorized(authorization, token):
        return JSONResponse(
            error_body("unauthorized", "This endpoint needs the metrics token."),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    body, content_type = services.metrics.render(accept)
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})
