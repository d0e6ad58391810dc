"""Input images given as this server's own download links (`.../v1/files/{id}?expires=&sig=`, as its answers
hand them out): read from the store instead of fetched, so that one result feeds the next edit on a server
whose address is private (a laptop, a LAN), where fetching it is refused. A link another server signed (its
signature does not check out here) is fetched as any URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from reangle.api.signing import UrlSigner
from reangle.core.assets import AssetService
from reangle.core.inputs import UrlFetcher
from reangle.errors import Forbidden, InvalidInput
from reangle.store.url_fetch import PrivateAddress

#: Where a refused private address leaves a caller whose image is on this server or their own network.
PRIVATE_ADDRESS_HINT = (
    "give the image as an asset id (asset_...) or its bytes (base64, a data URL) instead; on a private "
    "network the operator can set REANGLE_ALLOW_PRIVATE_URLS=true"
)


def own_links_first(
    fetch: UrlFetcher, signer: UrlSigner, assets: AssetService, *, clock: Callable[[], float] = time.time
) -> UrlFetcher:
    """`fetch`, except for a link this server signed: that asset's stored bytes."""

    async def fetch_or_read(url: str, field: str) -> bytes:
        link = _signed_link(url)
        if link is None or not signer.signed(*link):
            try:
                return await fetch(url, field)
            except PrivateAddress as exc:
                exc.hint = PRIVATE_ADDRESS_HINT
                raise
        asset_id, expires, signature = link
        try:
            signer.verify(asset_id, expires, signature, clock())
        except Forbidden as exc:
            raise InvalidInput(f"{field}: {exc.message}", field=field, hint=exc.hint) from None
        stored = await asyncio.to_thread(assets.read_bytes, asset_id)
        if stored is None:
            raise InvalidInput(f"{field}: the asset {asset_id} of this link is gone (expired)", field=field)
        return stored[0]

    return fetch_or_read


def _signed_link(url: str) -> tuple[str, int, str] | None:
    """(asset id, expires, signature) of a URL shaped as this server's download links, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    head, _, asset_id = parts.path.rpartition("/")
    if not (head.endswith("/v1/files") and asset_id.startswith("asset_")):
        return None
    query = parse_qs(parts.query)
    expires, signature = query.get("expires", []), query.get("sig", [])
    if len(expires) != 1 or len(signature) != 1 or not expires[0].isdigit() or len(expires[0]) > 12:
        return None
    return asset_id, int(expires[0]), signature[0]
