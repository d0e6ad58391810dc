from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from reangle.client import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ReangleAPIError,
    ReangleClientError,
    ServerError,
    UnsupportedMediaTypeError,
)
from tests.client.fakes import error


def client_answering(response: httpx.Response) -> Client:
    """A client whose every request gets `response` (a fixed answer, not a server)."""
    return Client("http://reangle.test", "sk-test", transport=httpx.MockTransport(lambda _request: response))


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (415, UnsupportedMediaTypeError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_each_error_status_raises_its_own_exception_with_the_body_fields(
    status: int, error_type: type[ReangleAPIError]
) -> None:
    answer = error(status, "some_code", "what went wrong", hint="what to do", **{"x-request-id": "req_9"})
    with client_answering(answer) as client, pytest.raises(error_type) as caught:
        client.get("job_1")
    exc = caught.value
    assert (exc.status_code, exc.code, exc.message, exc.hint) == (
        status,
        "some_code",
        "what went wrong",
        "what to do",
    )
    assert exc.response is not None
    assert exc.response.status_code == status
    assert exc.request_id == "req_9"
    assert str(exc) == f"{status} some_code: what went wrong (what to do)"


def test_an_unlisted_4xx_is_the_base_error() -> None:
    with (
        client_answering(error(418, "teapot", "short and stout")) as client,
        pytest.raises(ReangleAPIError) as caught,
    ):
        client.health()
    assert type(caught.value) is ReangleAPIError
    assert caught.value.status_code == 418


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None)])
def test_rate_limit_carries_retry_after_in_seconds(header: str | None, expected: float | None) -> None:
    headers = {"retry-after": header} if header is not None else {}
    with (
        client_answering(error(429, "rate_limited", "slow down", **headers)) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.submit("qwen-edit-multiangle-2511", {"images": ["asset_1"]})
    assert caught.value.retry_after == expected


def test_retry_after_may_be_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    with (
        client_answering(error(429, "rate_limited", "slow down", **{"retry-after": later})) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.get("job_1")
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


def test_a_non_json_502_from_a_proxy_still_gives_a_useful_message() -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>\n<p>upstream went away</p></body></html>"
    with client_answering(httpx.Response(502, text=page)) as client, pytest.raises(ServerError) as caught:
        client.get("job_1")
    exc = caught.value
    assert exc.code == "http_502"
    assert exc.message == (
        "HTTP 502 Bad Gateway from http://reangle.test/v1/jobs/job_1: 502 Bad Gateway upstream went away"
    )


def test_a_failed_download_names_the_link_without_its_signature() -> None:
    answer = httpx.Response(404, text="gone")
    with client_answering(answer) as client, pytest.raises(NotFoundError) as caught:
        client.download("http://files.test/v1/files/asset_1?expires=1&sig=SECRET123")
    assert caught.value.message == "HTTP 404 Not Found from http://files.test/v1/files/asset_1: gone"


def test_a_framework_detail_body_is_read_too() -> None:
    body = {"detail": [{"loc": ["body", "model"], "msg": "field required"}]}
    with client_answering(httpx.Response(422, json=body)) as client, pytest.raises(BadRequestError) as caught:
        client.get("job_1")
    assert "field required" in caught.value.message


def test_network_failures_are_connection_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        Client("http://reangle.test", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(APIConnectionError, match=r"cannot reach the server http://reangle.test"),
    ):
        client.health()


def test_timeouts_are_connection_errors_that_say_so() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with (
        Client("http://reangle.test", transport=httpx.MockTransport(stall)) as client,
        pytest.raises(APIConnectionError, match="timed out"),
    ):
        client.get("job_1")


def test_a_success_that_is_not_the_documented_json_is_an_invalid_response() -> None:
    with (
        client_answering(httpx.Response(200, text="a login page")) as client,
        pytest.raises(InvalidResponseError, match="not a valid Job"),
    ):
        client.get("job_1")
    with (
        client_answering(httpx.Response(200, json={"id": "job_1"})) as client,
        pytest.raises(InvalidResponseError) as caught,
    ):
        client.get("job_1")
    message = str(caught.value)
    assert message.startswith(
        "the server's answer to GET /v1/jobs/job_1 is not a valid Job (model: Field required);"
    )
    assert message.endswith("a reangle server's root URL (not a provider's path such as /scenario/v1)?")
    assert "pydantic.dev" not in message


def test_every_sdk_error_shares_one_base() -> None:
    for error_type in (APIConnectionError, InvalidResponseError, ServerError, RateLimitError):
        assert issubclass(error_type, ReangleClientError)
