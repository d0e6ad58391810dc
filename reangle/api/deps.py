"""FastAPI dependencies every HTTP surface shares: the app state, and links built for this request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from reangle.api.render import Links
from reangle.api.state import AppState

# NOTE: dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a worker thread, a thread
# round trip per dependency per request (it halved status reads per second).


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.reangle
    return state


State = Annotated[AppState, Depends(app_state)]


async def request_links(request: Request, app: State) -> Links:
    """Absolute, signed download links: on REANGLE_PUBLIC_BASE_URL if set, else on this request's own base."""
    base = app.settings.public_base_url or str(request.base_url)
    return Links(signer=app.signer, base_url=base.rstrip("/"), ttl_s=app.settings.url_ttl_s, store=app.store)


LinkMaker = Annotated[Links, Depends(request_links)]
