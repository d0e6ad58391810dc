"""An input image given as this server's own download link is read from the store, not fetched: one result
feeds the next edit on a server whose address is private (here 127.0.0.1, which fetching refuses). A link
signed elsewhere is fetched as any URL; a refused private address says what to give instead."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from reangle.api.own_links import PRIVATE_ADDRESS_HINT, own_links_first
from reangle.api.signing import UrlSigner
from reangle.errors import InvalidInput
from tests.api.conftest import assert_error, download, edit_input, submit, succeeded, upload

NOW = 1_800_000_000


def test_a_result_link_feeds_the_next_edit_and_an_upload(api: httpx.Client) -> None:
    first = succeeded(api, submit(api, edit_input(upload(api)["url"]))["id"])
    output = first["output"]["assets"][0]
    second = succeeded(api, submit(api, edit_input(output["url"]))["id"])
    assert second["status"] == "succeeded"
    stored = api.post("/v1/assets", json={"url": output["url"]})
    assert stored.status_code == 201, stored.text
    assert download(stored.json()["url"]).content == download(output["url"]).content


def test_a_link_whose_signature_is_not_this_servers_is_fetched_and_refused_with_what_to_give(
    api: httpx.Client,
) -> None:
    link = upload(api)["url"]
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    body = assert_error(
        api.post("/v1/jobs", json={"model": "qwen-edit-multiangle-2511", "input": edit_input(forged)}),
        422,
        "invalid_input",
        "input.images.0",
        "loopback",
    )
    assert body["hint"] == PRIVATE_ADDRESS_HINT


class FakeAssets:
    """Stands in for AssetService.read_bytes (tested against the real store above)."""

    def __init__(self, stored: dict[str, bytes]) -> None:
        self.stored = stored

    def read_bytes(self, asset_id: str) -> tuple[bytes, str] | None:
        data = self.stored.get(asset_id)
        return None if data is None else (data, "image/png")


def reader(stored: dict[str, bytes], fetched: list[str]) -> Any:
    async def fetch(url: str, field: str) -> bytes:
        fetched.append(url)
        return b"fetched"

    assets: Any = FakeAssets(stored)
    return own_links_first(fetch, SIGNER, assets, clock=lambda: NOW)


SIGNER = UrlSigner(b"k" * 32)


def link(asset_id: str, expires: int, signer: UrlSigner = SIGNER) -> str:
    signature = signer.signature(asset_id, expires)
    return f"http://10.0.0.5:8000/v1/files/{asset_id}?expires={expires}&sig={signature}"


def read(fetch_or_read: Any, url: str) -> bytes:
    data: bytes = asyncio.run(fetch_or_read(url, "images.0"))
    return data


def test_a_link_signed_here_is_read_from_the_store_whatever_its_host() -> None:
    fetched: list[str] = []
    fetch_or_read = reader({"asset_1": b"stored"}, fetched)
    assert read(fetch_or_read, link("asset_1", NOW + 60)) == b"stored"
    assert (
        read(fetch_or_read, link("asset_1", NOW + 60).replace("10.0.0.5:8000", "example.com/proxy"))
        == b"stored"
    )
    assert fetched == []


@pytest.mark.parametrize(
    "url",
    [
        link("asset_1", NOW + 60, UrlSigner(b"another server's key")),
        "https://example.com/v1/files/asset_1",
        "https://example.com/v1/files/asset_1?expires=soon&sig=x",
        "https://example.com/photo.png?expires=1&sig=x",
    ],
    ids=["another-servers-link", "no-signature", "bad-expiry", "another-path"],
)
def test_other_urls_are_fetched(url: str) -> None:
    fetched: list[str] = []
    assert read(reader({"asset_1": b"stored"}, fetched), url) == b"fetched"
    assert fetched == [url]


def test_an_expired_link_or_one_whose_asset_is_gone_is_refused_naming_the_field() -> None:
    fetch_or_read = reader({"asset_1": b"stored"}, [])
    with pytest.raises(InvalidInput, match=r"^images.0: this link has expired$") as expired:
        read(fetch_or_read, link("asset_1", NOW - 1))
    assert expired.value.hint == "ask the API for a fresh asset URL"
    with pytest.raises(InvalidInput, match=r"^images.0: the asset asset_2 of this link is gone \(expired\)$"):
        read(fetch_or_read, link("asset_2", NOW + 60))
