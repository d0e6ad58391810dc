"""The SDK audit's findings: local files that are missing, bad server URLs, PIL images and NaN, answers from a
server that is not reangle, a 401 without a key, and a download link that expired."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from pathlib import Path

import httpx
import pytest
from PIL import Image

from reangle.client import (
    APIConnectionError,
    Asset,
    AsyncClient,
    AuthenticationError,
    Client,
    InvalidResponseError,
    InvalidServerURLError,
    NotFoundError,
    PermissionDeniedError,
    ReangleClientError,
)
from tests.client.fakes import API, API_KEY, FakeServer, error

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels"


def client_for(fake: FakeServer) -> Client:
    return Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01)


def answering(response: httpx.Response, api_key: str | None = "sk-test", base_url: str = API) -> Client:
    return Client(base_url, api_key, transport=httpx.MockTransport(lambda _request: response))


# 1. a local file that is not there


@pytest.mark.parametrize(
    "missing", ["missing.png", "photos/cat.jpeg", "./holiday", "C:\\pics\\a.png", "photos/cat", "cat"]
)
def test_a_missing_file_is_named_before_any_request(missing: str, tmp_path: Path) -> None:
    fake = FakeServer()
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    with client_for(fake) as client, pytest.raises(FileNotFoundError) as caught:
        client.edit([photo, missing], horizontal_angle=90)
    assert caught.value.filename == missing
    assert repr(missing) in str(caught.value)
    assert fake.requests == []  # not even the first, existing image was uploaded


def test_a_missing_path_object_is_named_before_any_request(tmp_path: Path) -> None:
    fake = FakeServer()
    with client_for(fake) as client, pytest.raises(FileNotFoundError) as caught:
        client.orbit(tmp_path / "gone.png")
    assert caught.value.filename == str(tmp_path / "gone.png")
    assert fake.requests == []


def test_the_async_client_names_a_missing_file_too() -> None:
    fake = FakeServer()

    async def main() -> None:
        async with AsyncClient(API, API_KEY, transport=fake.transport()) as client:
            await client.generate("a fox", model="wan-2.7-image", images=["asset_1", "fox.png"])

    with pytest.raises(FileNotFoundError, match=r"fox\.png"):
        asyncio.run(main())
    assert fake.requests == []


def test_references_that_are_not_files_still_pass_through() -> None:
    fake = FakeServer()
    b64 = base64.b64encode(PNG).decode()
    images = ["HTTPS://example.com/a.png", "asset_9", b64, f"{b64[:12]}\n{b64[12:]}"]
    with client_for(fake) as client:
        client.edit(images, wait=False)
    (request,) = fake.requests_to("POST", "/v1/jobs")
    assert json.loads(request.content)["input"]["images"] == images
    assert fake.requests_to("POST", "/v1/assets") == []


# 2. a server URL without its scheme


@pytest.mark.parametrize("url", ["127.0.0.1:18731", "localhost", "ftp://host", "http://", " "])
def test_a_server_url_without_http_is_refused_when_the_client_is_made(url: str) -> None:
    expected = f"server URL must start with http:// or https:// (got {url!r})"
    with pytest.raises(InvalidServerURLError) as caught:
        Client(url)
    assert str(caught.value) == expected
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ReangleClientError)
    with pytest.raises(ValueError, match="must start with http"):
        AsyncClient(url)


def test_the_scheme_may_be_any_case() -> None:
    with Client("HTTPS://reangle.test") as client:
        assert client.base_url == "HTTPS://reangle.test"


# 3. PIL images, other types, and numbers JSON cannot carry


def test_a_pil_image_is_uploaded_as_png() -> None:
    fake = FakeServer()
    fake.check_uploads = True
    image = Image.new("RGB", (3, 2), (200, 10, 10))
    cmyk = Image.new("CMYK", (2, 2))  # PNG cannot hold CMYK: sent as RGB
    with client_for(fake) as client:
        client.edit(image, wait=False)
        client.orbit(cmyk, wait=False)
    uploads = list(fake.blobs.values())
    assert len(uploads) == 2
    first, second = (Image.open(io.BytesIO(blob)) for blob in uploads)
    assert (first.format, first.size, first.getpixel((0, 0))) == ("PNG", (3, 2), (200, 10, 10))
    assert (second.format, second.mode) == ("PNG", "RGB")
    assert json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)["input"]["images"] == [
        next(iter(fake.blobs))
    ]


@pytest.mark.parametrize("bad", [42, 1.5, None, [PNG, 7]])
def test_an_image_of_another_type_is_a_type_error_naming_what_is_accepted(bad: object) -> None:
    fake = FakeServer()
    with client_for(fake) as client, pytest.raises(TypeError, match="a file path, bytes, a PIL image"):
        client.edit(bad, wait=False)  # type: ignore[arg-type]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        # the images are bytes, uploaded once the job's numbers were checked: no upload is left behind
        (lambda c: c.edit(PNG, horizontal_angle=math.nan), "input.horizontal_angle is nan"),
        (lambda c: c.orbit(PNG, azimuths=[0, math.inf]), "input.azimuths.1 is inf"),
        (lambda c: c.orbit(PNG, poses=[{"azimuth": -math.inf}]), "input.poses.0.azimuth is -inf"),
        (lambda c: c.generate("a fox", images=[PNG], guidance_scale=math.nan), "input.guidance_scale is nan"),
        (lambda c: c.batch("m", [{"zoom": 1.0}, {"zoom": math.nan}]), "items.1.input.zoom is nan"),
    ],
)
def test_a_number_json_cannot_carry_is_named_before_any_request(call: object, field: str) -> None:
    fake = FakeServer()
    with client_for(fake) as client, pytest.raises(ValueError, match=f"^{field}: numbers sent"):
        call(client)  # type: ignore[operator]
    assert fake.requests == []


def test_the_async_client_names_a_nan_field_too() -> None:
    fake = FakeServer()

    async def main() -> None:
        async with AsyncClient(API, API_KEY, transport=fake.transport()) as client:
            await client.edit(PNG, zoom=math.nan)

    with pytest.raises(ValueError, match=r"^input\.zoom is nan"):
        asyncio.run(main())
    assert fake.requests == []


# 4. a server that is not reangle


def test_an_html_404_says_it_may_not_be_a_reangle_server() -> None:
    page = "<!DOCTYPE html><html><head><title>Error</title></head><body>" + "x" * 500 + "</body></html>"
    response = httpx.Response(404, text=page, headers={"content-type": "text/html"})
    with answering(response) as client, pytest.raises(NotFoundError) as caught:
        client.get("job_1")
    assert str(caught.value) == (
        "the server at http://reangle.test answered 404 Not Found with an HTML page, not the API's JSON; "
        "is this a reangle server?"
    )


def test_an_html_501_from_a_plain_web_server_asks_too() -> None:
    response = httpx.Response(501, text="<html><body>Unsupported method</body></html>")
    with answering(response) as client, pytest.raises(ReangleClientError, match="is this a reangle server"):
        client.submit("m", {})


def test_an_html_success_says_it_may_not_be_a_reangle_server() -> None:
    with (
        answering(httpx.Response(200, text="<html><body>welcome</body></html>")) as client,
        pytest.raises(
            InvalidResponseError, match=r"^the server at http://reangle.test answered GET /v1/jobs"
        ),
    ):
        client.list()


def test_https_to_a_plain_http_server_asks_whether_it_is_http() -> None:
    def tls_fails(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)")

    transport = httpx.MockTransport(tls_fails)
    with (
        Client("https://reangle.test", transport=transport) as client,
        pytest.raises(APIConnectionError) as caught,
    ):
        client.health()
    assert str(caught.value).endswith("wrong version number (_ssl.c:1000) (is the server http://?)")
    with (
        Client("http://reangle.test", transport=transport) as client,
        pytest.raises(APIConnectionError) as caught,
    ):
        client.health()
    assert "is the server http://" not in str(caught.value)


# 5. a 401 without a key


def test_a_401_without_a_key_says_how_to_give_one() -> None:
    fake = FakeServer()
    with Client(API, transport=fake.transport()) as client, pytest.raises(AuthenticationError) as caught:
        client.list()
    assert caught.value.hint == "pass api_key=... to the client"
    assert (
        str(caught.value) == "401 unauthorized: missing or unknown API key (pass api_key=... to the client)"
    )


def test_a_401_with_a_key_keeps_the_servers_hint() -> None:
    response = error(401, "unauthorized", "unknown API key", hint="check the key")
    with answering(response, api_key="sk-wrong") as client, pytest.raises(AuthenticationError) as caught:
        client.list()
    assert caught.value.hint == "check the key"


def test_the_async_client_says_how_to_give_a_key_too() -> None:
    async def main() -> None:
        async with AsyncClient(API, transport=FakeServer().transport()) as client:
            await client.models()

    with pytest.raises(AuthenticationError, match=r"pass api_key=\.\.\. to the client"):
        asyncio.run(main())


# 6. a download link that expired


class ExpiringLinks:
    """An API whose first signed link for asset_1 has expired; `get_asset` signs a fresh one."""

    def __init__(self, *, fresh_works: bool = True) -> None:
        self.fresh_works = fresh_works
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        if request.url.path == "/v1/assets/asset_1":
            return httpx.Response(200, json=asset_json("sig=fresh"))
        if request.url.path == "/files/asset_1" and request.url.params["sig"] == "fresh" and self.fresh_works:
            return httpx.Response(200, content=PNG)
        return error(403, "forbidden", "this link has expired", hint="ask the API for a fresh asset URL")

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        return self.handle(request)


def asset_json(query: str) -> dict[str, object]:
    return {
        "id": "asset_1",
        "url": f"{API}/files/asset_1?{query}",
        "mime_type": "image/png",
        "width": 1,
        "height": 1,
        "bytes": len(PNG),
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-02T00:00:00Z",
    }


def test_an_expired_link_of_an_asset_is_signed_afresh_once(tmp_path: Path) -> None:
    server = ExpiringLinks()
    asset = Asset.model_validate(asset_json("sig=old"))
    with Client(API, API_KEY, transport=httpx.MockTransport(server.handle)) as client:
        assert client.download(asset, tmp_path / "a.png") == PNG
    assert (tmp_path / "a.png").read_bytes() == PNG
    assert server.requests == [
        "GET /files/asset_1?sig=old",
        "GET /v1/assets/asset_1?",
        "GET /files/asset_1?sig=fresh",
    ]


def test_a_fresh_link_that_is_refused_too_is_not_retried_again() -> None:
    server = ExpiringLinks(fresh_works=False)
    asset = Asset.model_validate(asset_json("sig=old"))
    with (
        Client(API, API_KEY, transport=httpx.MockTransport(server.handle)) as client,
        pytest.raises(PermissionDeniedError, match="expired"),
    ):
        client.download(asset)
    assert len(server.requests) == 3


def test_an_expired_link_given_as_a_string_is_not_retried() -> None:
    server = ExpiringLinks()
    with (
        Client(API, API_KEY, transport=httpx.MockTransport(server.handle)) as client,
        pytest.raises(PermissionDeniedError),
    ):
        client.download(f"{API}/files/asset_1?sig=old")
    assert server.requests == ["GET /files/asset_1?sig=old"]


def test_the_async_client_signs_an_expired_link_afresh_too() -> None:
    server = ExpiringLinks()
    asset = Asset.model_validate(asset_json("sig=old"))

    async def main() -> bytes:
        async with AsyncClient(API, API_KEY, transport=httpx.MockTransport(server.handle_async)) as client:
            return await client.download(asset)

    assert asyncio.run(main()) == PNG
    assert len(server.requests) == 3


def test_the_event_stream_says_how_to_give_a_key_too() -> None:
    with (
        Client(API, transport=FakeServer().transport()) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        next(client.events("job_1"))
    assert caught.value.hint == "pass api_key=... to the client"
