"""The studio: the web page at `/` (static files in static/studio, plain ES modules, three.js vendored), a
client of the native /v1 API like any other. Everything it loads comes from this package: its content
security policy forbids scripts, styles and connections to any other host."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

FILES = Path(__file__).parent / "static" / "studio"
FILES_PATH = "/studio"
#: Files under a versioned folder never change: vendor/three-0.180.0/...
IMMUTABLE_PREFIX = "vendor/"

#: Images may come from the object store's own host (presigned links), so img-src allows http(s); nothing
#: else may leave the server's origin, and no script runs that this package did not ship.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data: http: https:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The page and its own modules change with reangle: always revalidated (ETag / Last-Modified, then 304).
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


class StudioFiles(StaticFiles):
    """The studio's files with their caching and security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            immutable = path.replace("\\", "/").startswith(IMMUTABLE_PREFIX)
            response.headers["Cache-Control"] = IMMUTABLE if immutable else REVALIDATE
        response.headers.update(SECURITY_HEADERS)
        return response


def install_studio(app: FastAPI) -> None:
    """Serve the page at `/` and its files under /studio."""
    files = StudioFiles(directory=FILES)
    app.mount(FILES_PATH, files, name="studio")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def studio_page(request: Request) -> Response:
        # through the same files app as the modules: ETag and Last-Modified, and 304 to a revalidation
        return await files.get_response("index.html", request.scope)
