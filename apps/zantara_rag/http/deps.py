"""What a route reads from the app: the services and the admission built by the lifespan, as dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..services import Services
from .admission import Admission


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


ServicesDep = Annotated[Services, Depends(get_services)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
