"""FastAPI dependencies every HTTP surface shares: the app state, and links built for this request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from reangle.api.render import Links
from reangle.api.state import AppState

# NOTE: dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a worker thread, a thread
# round trip per dependency per request (it halved status reads per second). Each dependency also costs a
# pass of FastAPI's dependency solver per request, so these read the app state from the request themselves
# rather than depending on `State`.


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.reangle
    return state


def links_for(request: Request, app: AppState) -> Links:
    """Absolute, signed download links: on REANGLE_PUBLIC_BASE_URL if set, else on this request's own base."""
    base = app.settings.public_base_url or str(request.base_url)
    return Links(
        signer=app.signer,
        base_url=base.rstrip("/"),
        ttl_s=app.settings.url_ttl_s,
        store=app.store,
        blobs=app.service.assets.blobs,
        demo=app.engine.info.demo,
    )


async def app_state(request: Request) -> AppState:
    return state_of(request)


State = Annotated[AppState, Depends(app_state)]


async def request_links(request: Request) -> Links:
    return links_for(request, state_of(request))


LinkMaker = Annotated[Links, Depends(request_links)]
