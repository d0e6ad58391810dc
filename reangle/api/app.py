"""create_app: wires settings, engine and routes into one FastAPI app. No import-time side effects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reangle import __version__
from reangle.api.body_limit import UPLOAD_OVERHEAD_BYTES, BodyLimit
from reangle.api.client_waits import ClientWaits
from reangle.api.docs_page import install_docs_page
from reangle.api.errors import Failures, install_error_handlers
from reangle.api.native import router as native_router
from reangle.api.no_auth_guard import NoAuthGuard
from reangle.api.request_id import RequestIds
from reangle.api.state import AppState
from reangle.api.studio import install_studio
from reangle.api.webhooks import router as webhooks_router
from reangle.core.edit import MAX_INPUT_IMAGES
from reangle.dialects import dialect_routers
from reangle.dialects.openai_images import PREFIX as OPENAI_PREFIX
from reangle.engine.base import Engine, create_engine
from reangle.settings import Settings


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    app_state = AppState.build(settings, engine or create_engine(settings.engine, settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with app_state.running():
            yield

    app = FastAPI(
        title="reangle",
        version=__version__,
        description="Re-photograph images from another camera angle: an asynchronous job API.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs_page from local files, not a CDN
        redoc_url=None,
    )
    app.state.reangle = app_state
    app.add_middleware(Failures)  # the innermost: around the routes
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        upload_limits=upload_limits(settings),
        body_timeout_s=settings.body_timeout_s,
    )
    if app_state.engine.info.demo:
        app.add_middleware(DemoHeader)
    if settings.auth == "off":  # outside the body limit: it refuses before any body is read
        public_host = urlsplit(settings.public_base_url).hostname if settings.public_base_url else None
        app.add_middleware(NoAuthGuard, public_host=public_host)
    app.add_middleware(ClientWaits)
    app.add_middleware(RequestIds)  # the outermost: every answer of the app names its request
    install_error_handlers(app)
    install_docs_page(app)
    install_studio(app)
    app.include_router(native_router)
    app.include_router(webhooks_router)
    for router in dialect_routers():
        app.include_router(router)
    return app


def upload_limits(settings: Settings) -> dict[str, int]:
    """The upload routes and the most their bodies may hold: each image at the upload cap, base64-encoded
    (4/3 of its bytes) as JSON and urlencoded forms carry it, plus the rest of the body."""
    per_image = settings.max_upload_bytes * 4 // 3
    return {
        "/v1/assets": per_image + UPLOAD_OVERHEAD_BYTES,
        f"{OPENAI_PREFIX}/images/edits": per_image * MAX_INPUT_IMAGES + UPLOAD_OVERHEAD_BYTES,
    }


class DemoHeader:
    """`Reangle-Demo: true` on every response of a server whose engine makes meaningless demo images, so that
    a provider's client (whose response shape has no room for it) can still tell."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"reangle-demo", b"true")]
            await send(message)

        await self.app(scope, receive, marked if scope["type"] == "http" else send)
