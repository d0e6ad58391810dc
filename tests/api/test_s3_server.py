"""A `reangle serve` keeping its assets in S3 (the session's SeaweedFS): clients download straight from the
object store by presigned link, old API links redirect there, and the retention sweep deletes the objects."""

from __future__ import annotations

import hashlib
import io
import secrets
import time

import httpx
import pytest
from PIL import Image

from reangle.api.signing import UrlSigner
from tests.api.conftest import (
    KEY_A,
    ServerFactory,
    download,
    edit_input,
    png,
    poll,
    submit,
    succeeded,
    upload,
)
from tests.s3_server import S3Server

SIGNING_SECRET = "s3-test-signing-secret-of-32-chars"


def test_assets_live_in_s3_and_are_downloaded_from_it_until_swept(
    serve: ServerFactory, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():  # boto3's standard credentials, inherited by the server
        monkeypatch.setenv(name, value)
    prefix = f"e2e-{secrets.token_hex(4)}"
    public = f"http://localhost:{s3_server.port}"  # clients' name for it; the server uses 127.0.0.1
    server = serve(
        storage_url=f"s3://{s3_server.bucket}/{prefix}",
        s3_endpoint_url=s3_server.endpoint,
        s3_public_endpoint_url=public,
        s3_path_style="true",
        signing_secret=SIGNING_SECRET,
        upload_ttl_s=4,
        result_ttl_s=6,
        sweep_interval_s=0.2,
    )

    def key(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        return f"{prefix}/{digest[:2]}/{digest}"

    with server.client(KEY_A) as api:
        source = png(color=(20, 160, 90))
        uploaded = upload(api, source)
        assert uploaded["url"].startswith(f"{public}/{s3_server.bucket}/{key(source)}?")
        job = succeeded(api, submit(api, edit_input(uploaded["id"]))["id"])

        output = job["output"]["assets"][0]
        assert output["url"].startswith(f"{public}/{s3_server.bucket}/{prefix}/")
        assert "X-Amz-Signature=" in output["url"]
        fetched = download(output["url"])  # no key, no credentials
        assert fetched.status_code == 200, fetched.text
        assert fetched.headers["content-type"] == output["mime_type"] == "image/png"
        with Image.open(io.BytesIO(fetched.content)) as image:
            assert image.format == "PNG"
            assert image.size == (output["width"], output["height"])
        assert output["url"].startswith(f"{public}/{s3_server.bucket}/{key(fetched.content)}?")
        assert s3_server.keys(prefix) == {key(source), key(fetched.content)}
        assert not (server.data_dir / "assets").exists() or not any((server.data_dir / "assets").iterdir())

        # an API link (as given out before the server moved to S3) redirects to a fresh presigned link
        expires = int(time.time()) + 60
        signature = UrlSigner(SIGNING_SECRET.encode()).signature(output["id"], expires)
        api_link = f"{server.url}/v1/files/{output['id']}?expires={expires}&sig={signature}"
        redirect = httpx.get(api_link, timeout=10)
        assert redirect.status_code == 307, redirect.text
        assert redirect.headers["location"].startswith(f"{public}/{s3_server.bucket}/{key(fetched.content)}?")
        assert download(redirect.headers["location"]).content == fetched.content
        assert httpx.get(api_link.replace("sig=", "sig=0"), timeout=10).status_code == 403

        # retention: the job, its records and then its objects go
        poll(
            lambda: True if api.get(f"/v1/jobs/{job['id']}").status_code == 404 else None,
            timeout=20,
            what="the finished job to be swept",
        )
        poll(
            lambda: True if not s3_server.keys(prefix) else None,
            timeout=20,
            what="its objects to be deleted from the bucket",
        )
        assert download(output["url"]).status_code == 403  # a link never outlives its asset
        assert httpx.get(api_link, timeout=10).status_code == 404
