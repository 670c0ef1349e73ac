"""What a route reads from the app: the services and the admission built by the lifespan, as dependencies;
and `AdminDep`, the principal of a request that may manage the knowledge base."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ..errors import Forbidden, NotFound, Unauthorized
from ..services import Services
from .admission import Admission
from .auth import ADMIN_SCOPE, Principal, bearer_token, verify_token


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


ServicesDep = Annotated[Services, Depends(get_services)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]


def require_admin(
    services: ServicesDep,
    authorization: Annotated[str | None, Header(description="`Bearer <token>` with the admin scope.")] = None,
) -> Principal:
    """404 without `AUTH_SECRET` (there is no admin then), 401 without a valid token (by header only: an
    admin token never rides in a URL), 403 for a token without the admin scope."""
    settings = services.settings
    if settings.auth_secret is None:
        raise NotFound()
    token = bearer_token(authorization) if authorization is not None else None
    if not token:
        raise Unauthorized()
    principal = verify_token(settings, token)
    if ADMIN_SCOPE not in principal.scopes:
        raise Forbidden()
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
