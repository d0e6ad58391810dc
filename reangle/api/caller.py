"""Who calls a native route: the key that owns what the request makes, and the links to give back."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute

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


class KeyFirstRoute(APIRoute):
    """A route that checks the caller's key before FastAPI reads and parses the JSON body (it does that before
    any dependency): a request without a valid key is refused at once, not after its body was taken in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_checked(request: Request) -> Response:
            state_of(request).keys.owner(bearer_token(request.headers.get("authorization")))
            return await handler(request)

        return key_checked
