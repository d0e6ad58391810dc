"""Asset bytes in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, R2...), content-addressed under
`<prefix>/<sha[:2]>/<sha>`; clients download them by presigned URL, never through the API.

Every failure to reach the store surfaces as `Unavailable` (the API answers 503) within seconds: botocore's
timeouts and retries are bounded here, not left at their defaults of a minute and more. So does a store set up
wrong (no such bucket, credentials refused): the server's configuration, not the request, is at fault, and the
message says which, naming the bucket but never the endpoint (its URL might carry secrets).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as EndpointUnreachable

from reangle.core.ports import BlobPage
from reangle.errors import AssetGone, Unavailable
from reangle.settings import Settings

#: SigV4 presigned URLs live at most 7 days.
MAX_URL_TTL_S = 7 * 24 * 3600
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
#: Tries per request, the first included (botocore's "standard" mode backs off between them).
MAX_ATTEMPTS = 3
#: S3's bucket naming rules, loosely: what a path or a host name can carry.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
#: The key of a blob under the store's prefix: `<sha[:2]>/<sha>`.
BLOB_NAME = re.compile(r"([0-9a-f]{2})/(\1[0-9a-f]{62})")
#: refused or timed-out connections, and timeouts or resets while a response streams in
UNREACHABLE = (EndpointUnreachable, HTTPClientError)


class S3Client(Protocol):
    """The part of a boto3 S3 client this store uses (boto3 ships no types: keyword arguments as boto3's)."""

    def put_object(self, **params: Any) -> Any: ...
    def get_object(self, **params: Any) -> Any: ...
    def delete_object(self, **params: Any) -> Any: ...
    def list_objects_v2(self, **params: Any) -> Any: ...
    def head_bucket(self, **params: Any) -> Any: ...
    def generate_presigned_url(self, operation: str, *, Params: dict[str, str], ExpiresIn: int) -> str: ...


class S3BlobStore:
    """The BlobStore of scale-out: every API replica and worker sees the same bytes."""

    def __init__(
        self, client: S3Client, bucket: str, prefix: str = "", *, public_client: S3Client | None = None
    ) -> None:
        self.client = client
        #: Signs download links: its endpoint is the one clients reach (the host is part of the signature).
        self.public_client = public_client or client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._where = f"s3://{bucket}/{self.prefix}"

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> S3BlobStore:
        """`s3://bucket/prefix` on the endpoints, region and addressing style of the settings; credentials
        from boto3's standard chain (AWS_ACCESS_KEY_ID..., a profile, an instance role)."""
        bucket, prefix = parse_storage_url(url)
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
        )
        session = boto3.session.Session()

        def client_for(endpoint: str | None) -> S3Client:
            made: S3Client = session.client(
                "s3", endpoint_url=endpoint, region_name=settings.s3_region, config=config
            )
            return made

        client = client_for(settings.s3_endpoint_url)
        public_endpoint = settings.s3_public_endpoint_url
        public = (
            client_for(public_endpoint) if public_endpoint not in (None, settings.s3_endpoint_url) else None
        )
        return cls(client, bucket, prefix, public_client=public)

    def key(self, digest: str) -> str:
        name = f"{digest[:2]}/{digest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, data: bytes) -> str:
        # A plain PUT, no HEAD first: nearly every blob is new (a fresh output or upload), so a HEAD would add
        # a round trip to almost every put to save an upload only for rare repeats. Rewriting the same bytes
        # under their own hash is harmless, and even restores an object another process swept meanwhile. It
        # also makes the object's LastModified now: the orphan sweep leaves it be (see `AssetService.sweep`).
        digest = hashlib.sha256(data).hexdigest()
        with self._reaching():
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(digest), Body=data, ContentType="application/octet-stream"
            )
        return digest

    def read(self, digest: str) -> bytes:
        try:
            with self._reaching():
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))
                data: bytes = response["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in MISSING:
                raise AssetGone("the stored file of this asset is gone") from None
            raise
        return data

    def delete(self, digest: str) -> None:
        with self._reaching():  # S3 answers a delete of a missing key with success
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def list_page(self, after: str | None, limit: int) -> BlobPage:
        """At most `limit` objects under the prefix (one request; S3 lists at most 1000), in key order after
        the key `after`; keys not shaped `<sha[:2]>/<sha>` (nested prefixes, foreign objects) are skipped."""
        start = f"{self.prefix}/" if self.prefix else ""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start, "MaxKeys": limit}
        if after is not None:
            params["StartAfter"] = after
        with self._reaching():
            listed = self.client.list_objects_v2(**params)
        contents = listed.get("Contents", [])
        put_at = {
            name[2]: item["LastModified"].timestamp()
            for item in contents
            if (name := BLOB_NAME.fullmatch(item["Key"][len(start) :]))
        }
        resume_after = contents[-1]["Key"] if contents and listed.get("IsTruncated") else None
        return BlobPage(put_at=put_at, resume_after=resume_after)

    def local_path(self, digest: str) -> Path | None:
        return None

    def public_url(self, digest: str, *, expires_at: float, mime_type: str) -> str | None:
        """A presigned GET on the public endpoint, valid until `expires_at` (at least 1 s, at most 7 days),
        served with `mime_type` as its Content-Type. Signing is local: no request reaches the store."""
        expires_in = min(max(math.floor(expires_at - time.time()), 1), MAX_URL_TTL_S)
        return self.public_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(digest), "ResponseContentType": mime_type},
            ExpiresIn=expires_in,
        )

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Unreachable store, missing bucket, refused credentials, or a store that keeps failing (5xx after
        the retries): Unavailable, saying which."""
        try:
            yield
        except UNREACHABLE as error:
            raise Unavailable(
                f"the object store of {self._where} cannot be reached ({type(error).__name__}): is it "
                "running, and is REANGLE_S3_ENDPOINT_URL its address?"
            ) from None
        except NoCredentialsError:
            raise Unavailable(
                f"no credentials for the object store of {self._where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or an AWS profile) for the server"
            ) from None
        except ClientError as error:
            status, code = _status_and_code(error)
            if code == "NoSuchBucket":
                raise self._no_bucket() from None
            if status in (401, 403):  # the server's configuration, not the request: say so, as a 503
                if self._bucket_is_missing():
                    raise self._no_bucket() from None
                raise Unavailable(
                    f"the object store of {self._where} refused this server's credentials ({code}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions"
                ) from None
            if status >= 500:
                raise Unavailable(f"the object store of {self._where} failed ({code})") from None
            raise

    def _no_bucket(self) -> Unavailable:
        return Unavailable(
            f"the bucket {self.bucket!r} of REANGLE_STORAGE_URL={self._where} does not exist on the object "
            "store; create it, or name an existing bucket"
        )

    def _bucket_is_missing(self) -> bool:
        """Whether the store says the bucket does not exist. Asked after a refusal: some stores (SeaweedFS)
        answer a write to a missing bucket with AccessDenied, not NoSuchBucket."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            return _status_and_code(error)[0] == 404
        except BotoCoreError:  # unreachable by now: the refusal stands
            return False
        return False


def _status_and_code(error: ClientError) -> tuple[int, str]:
    """The HTTP status of an S3 error answer and its code ("NoSuchBucket"; the status when it has none)."""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return status, str(error.response.get("Error", {}).get("Code", status))


def _shown(parts: SplitResult) -> str:
    """A storage URL as messages may show it: what could be a credential (user info or a key:secret pair
    where the bucket goes, a path holding user info, a query, a fragment) as ***."""
    bucket = "***" if ":" in parts.netloc or "@" in parts.netloc else parts.netloc
    path = "/***" if "@" in parts.path else parts.path
    hidden = ["***" if part else "" for part in (parts.query, parts.fragment)]
    return urlunsplit((parts.scheme, bucket, path, *hidden))


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at either end); ValueError when malformed."""
    parts = urlsplit(url)
    bucket = parts.netloc
    url = _shown(parts)
    if parts.scheme.lower() != "s3":
        raise ValueError(f"REANGLE_STORAGE_URL={url!r} must start with s3://")
    if not bucket:
        raise ValueError(f"REANGLE_STORAGE_URL={url!r} names no bucket: use s3://bucket/prefix")
    if not BUCKET_NAME.fullmatch(bucket):
        raise ValueError(
            f"REANGLE_STORAGE_URL={url!r}: what follows s3:// is not a bucket name (3-63 lowercase letters, "
            "digits, dots and hyphens; no credentials or port: those go in the AWS_ and REANGLE_S3_ settings)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"REANGLE_STORAGE_URL={url!r} must not have a query or fragment")
    return bucket, parts.path.strip("/")
