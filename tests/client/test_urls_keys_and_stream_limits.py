"""A second SDK audit: server URLs httpx cannot use or that name a provider's API, API keys with a stray
character, and events() for a key that holds as many event streams as the server allows."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reangle.client import (
    APIConnectionError,
    AsyncClient,
    BadRequestError,
    Client,
    InvalidAPIKeyError,
    InvalidServerURLError,
    Job,
    JobEvent,
    ProgressEvent,
    ReangleClientError,
)
from reangle.client._base import PROVIDER_PATHS
from reangle.dialects import dialect_routers
from tests.client.fakes import API, API_KEY, FakeServer

SECRET = "rk_Zm9vYmFyYmF6cXV4LXNlY3JldC1rZXktMTIz"


def refused_url(url: str) -> str:
    """The message both clients refuse `url` with (they must agree)."""
    with pytest.raises(InvalidServerURLError) as caught:
        Client(url)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ReangleClientError)
    with pytest.raises(InvalidServerURLError) as caught_async:
        AsyncClient(url)
    assert str(caught_async.value) == str(caught.value)
    return str(caught.value)


# 1. a server URL httpx cannot use


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://host:abc", "its port 'abc' is not a number"),
        ("http://host:8000:9", "its port '8000:9' is not a number"),
        ("http://host:99999", "its port 99999 is past 65535"),
        ("http://[::1", "its IPv6 address has no closing ']'"),
        ("http://[::1]8000", "'8000' follows its IPv6 address (expected ':' and a port)"),
        ("http://[::1]:x/v1", "its port 'x' is not a number"),
        ("http://user@", "it has no host"),
        ("https://:8000", "it has no host"),
        ("http://gpu box:8000", "its host holds whitespace"),
        ("http://[zz]", "invalid IPv6 address"),
    ],
)
def test_a_server_url_that_is_not_valid_says_what_is_wrong(url: str, problem: str) -> None:
    assert refused_url(url).startswith(f"server URL {url!r} is not valid: {problem}")


def test_a_password_in_a_refused_url_is_not_shown() -> None:
    message = refused_url("http://admin:hunter2@host:abc")
    assert message.startswith("server URL 'http://admin:***@host:abc' is not valid")
    assert "hunter2" not in message


@pytest.mark.parametrize("key", ["retry\n1", " padded", "ключ"])
def test_an_idempotency_key_a_header_cannot_carry_is_refused_before_sending(key: str) -> None:
    fake = FakeServer()
    with Client(API, API_KEY, transport=fake.transport()) as client:
        with pytest.raises(ValueError, match="idempotency_key must be printable ASCII"):
            client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]}, idempotency_key=key)
        assert fake.requests_to("POST", "/v1/jobs") == []
        client.submit("qwen-edit-multiangle-2511", {"images": ["asset_x"]}, idempotency_key="retry 1")
    (sent,) = fake.requests_to("POST", "/v1/jobs")
    assert sent.headers["idempotency-key"] == "retry 1"


@pytest.mark.parametrize(
    "url",
    ["http://[::1]:8000", "http://[::1]:8000/v1/", "http://host:8000", "http://h:", "http://h/my-openai/v1"],
)
def test_valid_addresses_still_pass(url: str) -> None:
    with Client(url) as client:
        assert client.base_url == url.rstrip("/").removesuffix("/v1")


# 4. a provider's API given as the server URL


@pytest.mark.parametrize(
    ("url", "provider", "root"),
    [
        ("http://127.0.0.1:8611/openai/v1", "OpenAI", "http://127.0.0.1:8611"),
        ("http://127.0.0.1:8611/scenario/v1/", "Scenario", "http://127.0.0.1:8611"),
        ("https://gpu.example/segmind/v1", "Segmind", "https://gpu.example"),
        ("https://gpu.example/segmind/v2/requests", "Segmind", "https://gpu.example"),
        ("http://host/runpod/v2", "RunPod", "http://host"),
        ("http://host/runpod/v2/my-endpoint/runsync", "RunPod", "http://host"),
        ("http://host/reangle/OpenAI/v1", "OpenAI", "http://host/reangle"),
        ("http://host/openai", "OpenAI", "http://host"),  # the SDK's /v1/... would land on /openai/v1/...
    ],
)
def test_a_providers_api_is_refused_naming_the_root_to_give(url: str, provider: str, root: str) -> None:
    expected = (
        f"server URL {url!r} is the path of the server's {provider}-compatible API; give its root URL "
        f"instead ({root})"
    )
    assert refused_url(url) == expected


def test_the_sdk_knows_every_path_the_dialects_serve() -> None:
    served = set()
    for router in dialect_routers():
        for route in router.routes:
            path = getattr(route, "path", "")
            if path.count("/") >= 2 and not path.endswith("{path:path}"):  # not the fallbacks
                served.add("/".join(path.split("/")[1:3]))
    assert served == set(PROVIDER_PATHS)


# 2. API keys with a stray character


@pytest.mark.parametrize("given", [f"{API_KEY}\n", f"  {API_KEY}\r\n", f"\t{API_KEY} "])
def test_blanks_around_a_key_are_dropped(given: str) -> None:
    fake = FakeServer()  # answers 401 unless the header is exactly "Bearer sk-test"
    with Client(API, given, transport=fake.transport()) as client:
        assert client.health().status == "ok"
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("ключ", "a non-ASCII character at position 1"),
        (f"{SECRET}é", f"a non-ASCII character at position {len(SECRET) + 1}"),
        (f"{SECRET[:9]} {SECRET[9:]}", "whitespace at position 10"),
        (f" {SECRET[:5]}\n{SECRET[5:]}\n", "whitespace at position 7"),
        (f"{SECRET}\x00x", f"a control character at position {len(SECRET) + 1}"),
    ],
)
def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(key: str, problem: str) -> None:
    with pytest.raises(InvalidAPIKeyError) as caught:
        Client(API, key)
    message = str(caught.value)
    assert message == f"api_key holds {problem}, which an HTTP header cannot carry; check the key"
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ReangleClientError)
    assert SECRET[:8] not in message
    assert "ключ" not in message
    with pytest.raises(InvalidAPIKeyError, match="api_key holds"):
        AsyncClient(API, key)


def test_a_blank_key_is_no_key() -> None:
    fake = FakeServer(api_key=None)
    with Client(API, " \n", transport=fake.transport()) as client:
        client.health()
    assert "authorization" not in fake.requests[0].headers


def test_a_connection_error_that_quotes_the_header_does_not_show_the_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        value = request.headers["authorization"].encode()
        raise httpx.LocalProtocolError(f"Illegal header value {value!r}", request=request)

    with (
        Client(API, SECRET, transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(APIConnectionError) as caught,
    ):
        client.get("job_1")
    assert SECRET not in str(caught.value)
    assert (
        str(caught.value) == "cannot reach the server http://reangle.test: Illegal header value b'Bearer ***'"
    )


def test_an_error_body_that_echoes_the_header_does_not_show_the_key() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=f"bad request; headers: {dict(request.headers)}")

    with (
        Client(API, SECRET, transport=httpx.MockTransport(echo)) as client,
        pytest.raises(BadRequestError) as caught,
    ):
        client.get("job_1")
    assert SECRET not in str(caught.value)
    assert "'authorization': 'Bearer ***'" in str(caught.value)


# 3. events() and wait() past the key's event streams


def described(events: list[JobEvent]) -> list[str]:
    return [e.status if isinstance(e, Job) else f"{e.progress:g}" for e in events]


def test_events_poll_when_the_key_holds_its_most_streams() -> None:
    fake = FakeServer()
    fake.stream_mode, fake.advance_on_get = "too_many", True
    job = fake.add_job("qwen-edit-multiangle-2511", {"images": ["asset_1"]})
    fake.failing_gets = 1  # a restart while it polls is sat out, as the stream's would be
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        events = list(client.events(job["id"]))
    assert described(events) == ["processing", "0.5", "0.75", "succeeded"]
    assert [type(event) for event in events] == [Job, ProgressEvent, ProgressEvent, Job]
    assert len(fake.requests_to("GET", f"/v1/jobs/{job['id']}/events")) == 1  # no second try at a stream
    assert len(fake.requests_to("GET", f"/v1/jobs/{job['id']}")) == 5


def test_the_async_client_polls_past_the_streams_too() -> None:
    fake = FakeServer()
    fake.stream_mode, fake.advance_on_get = "too_many", True
    job = fake.add_job("qwen-edit-multiangle-2511", {"images": ["asset_1"]})

    async def main() -> list[JobEvent]:
        async with AsyncClient(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
            return [event async for event in client.events(job["id"])]

    assert described(asyncio.run(main())) == ["processing", "0.5", "0.75", "succeeded"]


def test_wait_polls_after_one_stream_refused_for_the_keys_most_streams() -> None:
    fake = FakeServer()
    fake.stream_mode, fake.advance_on_get = "too_many", True
    job = fake.add_job("qwen-edit-multiangle-2511", {"images": ["asset_1"]})
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        assert client.wait(job["id"]).status == "succeeded"
    assert len(fake.requests_to("GET", f"/v1/jobs/{job['id']}/events")) == 1


def test_the_async_wait_polls_after_one_stream_refused_too() -> None:
    fake = FakeServer()
    fake.stream_mode, fake.advance_on_get = "too_many", True
    job = fake.add_job("qwen-edit-multiangle-2511", {"images": ["asset_1"]})

    async def main() -> str:
        async with AsyncClient(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
            return (await client.wait(job["id"])).status

    assert asyncio.run(main()) == "succeeded"
    assert len(fake.requests_to("GET", f"/v1/jobs/{job['id']}/events")) == 1


def test_polled_events_of_a_job_already_ended_are_the_job_alone() -> None:
    fake = FakeServer()
    fake.stream_mode = "too_many"
    job = fake.add_job("qwen-edit-multiangle-2511", {"images": ["asset_1"]})
    job["status"] = "canceled"
    with Client(API, API_KEY, transport=fake.transport(), poll_interval=0.01) as client:
        assert described(list(client.events(job["id"]))) == ["canceled"]
