"""S3BlobStore against a real S3-compatible server (SeaweedFS, shared by the session): content-addressed
objects, presigned download links the server itself checks, and a store that is down or set up wrong (no such
bucket, credentials refused) failing fast with a message naming the cause, which the API answers with 503."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from PIL import Image

from reangle.api.app import create_app
from reangle.compose import open_blob_store
from reangle.errors import AssetGone, Unavailable
from reangle.settings import Settings
from reangle.store.s3 import MAX_URL_TTL_S, S3BlobStore
from tests.conftest import image_bytes
from tests.s3_server import APP_SECRET_KEY, SECRET_KEY, S3Server, free_ports

API_KEY = "rk_s3-test-key-0123456789"
DATA = b"\x89PNG not really, but bytes " + secrets.token_bytes(64)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials the way an operator gives them: boto3's standard environment variables."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)


def make_store(
    s3_server: S3Server,
    *,
    endpoint: str | None = None,
    public_endpoint: str | None = None,
    bucket: str | None = None,
) -> tuple[S3BlobStore, str]:
    """A store on its own prefix of the session's bucket, so no other test's objects show up."""
    prefix = f"test-{secrets.token_hex(4)}"
    settings = Settings(
        storage_url=f"s3://{bucket or s3_server.bucket}/{prefix}/",
        s3_endpoint_url=endpoint or s3_server.endpoint,
        s3_public_endpoint_url=public_endpoint,
        s3_path_style=True,
    )
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    return store, prefix


@pytest.mark.usefixtures("s3_env")
def test_put_read_delete_round_trip_under_content_addressed_keys(s3_server: S3Server) -> None:
    store, prefix = make_store(s3_server)
    digest = store.put(DATA)
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert s3_server.keys(prefix) == {f"{prefix}/{digest[:2]}/{digest}"}
    assert store.read(digest) == DATA
    assert store.local_path(digest) is None  # never a local file: clients go to the object store

    store.delete(digest)
    assert s3_server.keys(prefix) == set()
    with pytest.raises(AssetGone):
        store.read(digest)
    store.delete(digest)  # deleting what is gone is no error (a sweep may repeat)


@pytest.mark.usefixtures("s3_env")
def test_the_same_bytes_twice_are_one_object(s3_server: S3Server) -> None:
    store, prefix = make_store(s3_server)
    other = DATA + b"!"
    assert store.put(DATA) == store.put(DATA) != store.put(other)
    assert len(s3_server.keys(prefix)) == 2


@pytest.mark.usefixtures("s3_env")
def test_the_listing_pages_through_blob_keys_only_with_their_last_put(s3_server: S3Server) -> None:
    store, prefix = make_store(s3_server)
    stored = {store.put(DATA + b"%d" % n): DATA + b"%d" % n for n in range(3)}
    digests = sorted(stored)
    for foreign in ("notes.txt", f"nested/{digests[0][:2]}/{digests[0]}", f"{digests[1][:2]}/{digests[0]}"):
        store.client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/{foreign}", Body=b"not a blob")

    walked: dict[str, float] = {}
    after, pages = None, 0
    while True:
        page = store.list_page(after, 2)
        walked |= page.put_at
        pages += 1
        if page.resume_after is None:
            break
        after = page.resume_after
    assert sorted(walked) == digests
    assert pages == 3  # six keys, two a page
    assert all(abs(put_at - time.time()) < 120 for put_at in walked.values())

    time.sleep(1.1)  # LastModified counts whole seconds
    store.put(stored[digests[0]])  # bytes already stored: written again, new again
    again = store.list_page(None, 10).put_at
    assert again[digests[0]] > walked[digests[0]]
    assert again[digests[1]] == walked[digests[1]]


@pytest.mark.usefixtures("s3_env")
def test_missing_bytes_are_asset_gone(s3_server: S3Server) -> None:
    store, _ = make_store(s3_server)
    with pytest.raises(AssetGone):
        store.read(hashlib.sha256(b"never stored").hexdigest())


@pytest.mark.usefixtures("s3_env")
def test_a_presigned_url_downloads_without_credentials_with_the_content_type(s3_server: S3Server) -> None:
    store, _ = make_store(s3_server)
    digest = store.put(DATA)
    url = store.public_url(digest, expires_at=time.time() + 600, mime_type="image/webp")
    assert url is not None
    assert url.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/")
    assert 590 <= int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) <= 600
    assert SECRET_KEY not in url

    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == DATA
    assert response.headers["content-type"] == "image/webp"

    # without the signature the bucket is closed
    assert httpx.get(url.split("?")[0], timeout=10).status_code == 403


@pytest.mark.usefixtures("s3_env")
def test_a_tampered_signature_is_refused(s3_server: S3Server) -> None:
    store, _ = make_store(s3_server)
    url = store.public_url(store.put(DATA), expires_at=time.time() + 600, mime_type="image/png")
    assert url is not None
    head, signature = url.split("X-Amz-Signature=")
    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert httpx.get(f"{head}X-Amz-Signature={tampered}", timeout=10).status_code == 403
    # nor may the content type it was signed for be changed
    assert httpx.get(url.replace("image%2Fpng", "text%2Fhtml"), timeout=10).status_code == 403
    assert httpx.get(url, timeout=10).status_code == 200


@pytest.mark.usefixtures("s3_env")
def test_an_expired_url_is_refused(s3_server: S3Server) -> None:
    store, _ = make_store(s3_server)
    url = store.public_url(store.put(DATA), expires_at=time.time() + 1, mime_type="image/png")
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["1"]
    time.sleep(2.2)
    assert httpx.get(url, timeout=10).status_code == 403


@pytest.mark.usefixtures("s3_env")
def test_url_lifetimes_are_clamped_to_what_sigv4_allows(s3_server: S3Server) -> None:
    store, _ = make_store(s3_server)

    def lifetime(expires_at: float) -> int:
        url = store.public_url("ab" * 32, expires_at=expires_at, mime_type="image/png")
        assert url is not None
        return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])

    assert lifetime(time.time() + 30 * 24 * 3600) == MAX_URL_TTL_S
    assert lifetime(time.time() - 5) == 1


@pytest.mark.usefixtures("s3_env")
def test_links_are_signed_for_the_public_endpoint_while_the_store_talks_to_the_internal_one(
    s3_server: S3Server,
) -> None:
    public = f"http://localhost:{s3_server.port}"
    store, _ = make_store(s3_server, endpoint=s3_server.endpoint, public_endpoint=public)
    digest = store.put(DATA)  # through 127.0.0.1
    url = store.public_url(digest, expires_at=time.time() + 600, mime_type="image/png")
    assert url is not None
    assert url.startswith(f"{public}/")
    assert httpx.get(url, timeout=10).content == DATA
    # the host is part of the signature: the same link on the other name of the same server is refused
    moved = url.replace(public, s3_server.endpoint)
    assert httpx.get(moved, timeout=10).status_code == 403


@pytest.mark.usefixtures("s3_env")
def test_an_unreachable_store_is_unavailable_within_seconds(s3_server: S3Server) -> None:
    (closed,) = free_ports(1)
    store, _ = make_store(s3_server, endpoint=f"http://127.0.0.1:{closed}")
    digest = hashlib.sha256(DATA).hexdigest()
    for operation in (lambda: store.put(DATA), lambda: store.read(digest), lambda: store.delete(digest)):
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            operation()
        assert time.monotonic() - started < 8
        assert "cannot be reached" in caught.value.message
        assert "REANGLE_S3_ENDPOINT_URL" in caught.value.message
        assert SECRET_KEY not in caught.value.message
        assert str(closed) not in caught.value.message  # the endpoint is not shown: it may carry secrets


def test_a_missing_bucket_is_unavailable_naming_it(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.app_env.items():
        monkeypatch.setenv(name, value)
    store, _ = make_store(s3_server)
    assert store.read(store.put(DATA)) == DATA  # the key may use the bucket that exists

    missing, _ = make_store(s3_server, bucket="reangle-no-such-bucket")
    digest = hashlib.sha256(DATA).hexdigest()
    # S3 and MinIO answer NoSuchBucket to all three; SeaweedFS answers a write with AccessDenied
    for operation in (
        lambda: missing.put(DATA),
        lambda: missing.read(digest),
        lambda: missing.delete(digest),
    ):
        with pytest.raises(
            Unavailable, match=r"the bucket 'reangle-no-such-bucket' .* does not exist"
        ) as caught:
            operation()
        assert APP_SECRET_KEY not in caught.value.message


def test_wrong_or_missing_credentials_are_unavailable_saying_so(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store, _ = make_store(s3_server)
    with pytest.raises(Unavailable, match="refused this server's credentials") as caught:
        store.put(DATA)
    assert "not-the-secret" not in caught.value.message
    # refused keys learn nothing about buckets: a wrong bucket name too is a refusal of the credentials
    missing, _ = make_store(s3_server, bucket="reangle-no-such-bucket")
    with pytest.raises(Unavailable, match="refused this server's credentials"):
        missing.put(DATA)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store, _ = make_store(s3_server)
    with pytest.raises(Unavailable, match="no credentials"):
        store.read(hashlib.sha256(DATA).hexdigest())


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bad_Bucket/x", "not a bucket name"),
        ("s3://key:secret@bucket/x", "not a bucket name"),
        ("s3://AKIAKEY:secret/with/slash@bucket/x", "not a bucket name"),
        ("s3://bucket:9000/x", "not a bucket name"),
        ("s3://bucket/x?region=eu", "query"),
        ("s3://bucket/x?X-Amz-Security-Token=secret", "query"),
    ],
)
def test_malformed_storage_urls_are_refused_clearly(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        S3BlobStore.from_settings(url, Settings(s3_path_style=True))
    assert "secret" not in str(caught.value)
    assert "AKIAKEY" not in str(caught.value)


def test_the_prefix_is_optional_and_its_slashes_are_trimmed() -> None:
    digest = "ab" * 32
    nested = S3BlobStore.from_settings("s3://bucket/a/b/", Settings(s3_region="us-east-1"))
    assert (nested.bucket, nested.key(digest)) == ("bucket", f"a/b/ab/{digest}")
    bare = S3BlobStore.from_settings("s3://bucket", Settings(s3_region="us-east-1"))
    assert bare.key(digest) == f"ab/{digest}"


class FailingClient:
    """Answers every call with one S3 error, as a store does that is overloaded or refuses the key."""

    def __init__(self, status: int, code: str) -> None:
        answer = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        self.error = ClientError(answer, "Op")

    def put_object(self, **params: Any) -> Any:
        raise self.error

    get_object = delete_object = head_bucket = list_objects_v2 = put_object

    def generate_presigned_url(self, operation: str, *, Params: dict[str, str], ExpiresIn: int) -> str:
        raise AssertionError("not called")


def test_a_failing_store_and_a_refusal_of_the_credentials_are_unavailable_saying_which() -> None:
    overloaded = S3BlobStore(FailingClient(503, "SlowDown"), "bucket")
    for operation in (
        lambda: overloaded.put(DATA),
        lambda: overloaded.read("ab" * 32),
        lambda: overloaded.list_page(None, 10),
    ):
        with pytest.raises(Unavailable, match="SlowDown"):
            operation()
    refused = S3BlobStore(FailingClient(403, "AccessDenied"), "bucket")
    with pytest.raises(Unavailable, match=r"refused this server's credentials \(AccessDenied\)"):
        refused.read("ab" * 32)
    other = S3BlobStore(FailingClient(400, "InvalidRequest"), "bucket")
    with pytest.raises(ClientError, match="InvalidRequest"):  # a bug of ours, not the store's state
        other.read("ab" * 32)


@pytest.mark.parametrize(
    ("misconfiguration", "says"),
    [
        ("no such bucket", "the bucket 'reangle-no-such-bucket' of REANGLE_STORAGE_URL="),
        ("wrong secret", "refused this server's credentials"),
        ("store down", "cannot be reached"),
    ],
)
def test_the_api_answers_a_misconfigured_store_with_503_naming_the_cause(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, misconfiguration: str, says: str
) -> None:
    """In process: an upload needs the store, and the client is told what is wrong with it, as a 503."""
    for name, value in s3_server.app_env.items():
        monkeypatch.setenv(name, value)
    bucket, endpoint = s3_server.bucket, s3_server.endpoint
    if misconfiguration == "no such bucket":
        bucket = "reangle-no-such-bucket"
    elif misconfiguration == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    settings = Settings(
        engine="fake",
        data_dir=tmp_path,
        cache_dir=tmp_path,
        api_keys=API_KEY,
        storage_url=f"s3://{bucket}/api-{secrets.token_hex(4)}",
        s3_endpoint_url=endpoint,
        s3_path_style=True,
    )
    with TestClient(create_app(settings)) as http:
        response = http.post(
            "/v1/assets",
            files={"file": ("input.png", image_bytes(Image.new("RGB", (8, 8))), "image/png")},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert says in error["message"]
    assert response.headers["Retry-After"].isdigit()
    for secret in (APP_SECRET_KEY, "not-the-secret", endpoint):
        assert secret not in response.text
