"""Who calls a native route: the key that owns what the request makes, and the links to give back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from reangle.api.auth import bearer_token
from reangle.api.deps import links_for, state_of
from reangle.api.render import Links
from reangle.api.state import AppState


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who asks and through what: the server's state, the key id that owns what the request makes, and the
    links to give back. One dependency rather than three: each costs a pass of FastAPI's solver."""

    app: AppState
    owner: str
    links: Links


def caller_of(request: Request, authorization: str | None) -> Caller:
    app = state_of(request)
    return Caller(app=app, owner=app.keys.owner(bearer_token(authorization)), links=links_for(request, app))


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return caller_of(request, authorization)


async def owner(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    return state_of(request).keys.owner(bearer_token(authorization))


CallerDep = Annotated[Caller, Depends(caller)]
Owner = Annotated[str, Depends(owner)]

#: The Authorization header as the `caller` dependency documents it, for a route that reads it itself.
AUTHORIZATION_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "authorization",
            "in": "header",
            "required": False,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Authorization"},
        }
    ]
}
