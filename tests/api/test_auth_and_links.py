"""API keys (a key sees only its own work), auth off, `reangle keys create`, and signed download links."""

from __future__ import annotations

import base64
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from reangle.core.models import CAMERA_EDIT, INSTRUCTION_EDIT
from tests.api.conftest import (
    KEY_A,
    KEY_B,
    REPO,
    ServerFactory,
    ServerProcess,
    assert_error,
    download,
    edit_input,
    free_port,
    server_env,
    submit,
    succeeded,
    upload,
)


def test_another_key_sees_nothing_of_key_a(shared_server: ServerProcess) -> None:
    with shared_server.client(KEY_A) as a, shared_server.client(KEY_B) as b:
        asset = upload(a)
        job = succeeded(a, submit(a, edit_input(asset["id"]))["id"])
        batch_body = {
            "model": INSTRUCTION_EDIT,
            "items": [{"input": {"images": [asset["id"]], "prompt": "x"}}],
        }
        batch = a.post("/v1/batches", json=batch_body).json()

        for path in (
            f"/v1/jobs/{job['id']}",
            f"/v1/jobs/{job['id']}/events",
            f"/v1/assets/{asset['id']}",
            f"/v1/assets/{job['output']['assets'][0]['id']}",
            f"/v1/batches/{batch['id']}",
        ):
            assert_error(b.get(path), 404, "not_found")
            assert a.get(path).status_code == 200, path
        assert_error(b.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
        assert job["id"] not in {j["id"] for j in b.get("/v1/jobs", params={"limit": 100}).json()["data"]}
        # nor can it run an edit on key a's upload
        refused = b.post("/v1/jobs", json={"model": CAMERA_EDIT, "input": edit_input(asset["id"])})
        assert_error(refused, 422, "invalid_input", "input.images.0", asset["id"])


@pytest.mark.parametrize(
    ("headers", "mention"),
    [
        ({}, "required"),
        ({"Authorization": "Bearer nope"}, "not valid"),
        ({"Authorization": "nope"}, "not valid"),
    ],
)
def test_without_a_valid_key_every_api_route_is_401(
    shared_server: ServerProcess, headers: dict[str, str], mention: str
) -> None:
    with httpx.Client(base_url=shared_server.url, headers=headers) as anonymous:
        for method, path in (
            ("GET", "/v1/models"),
            ("GET", "/v1/poses"),
            ("GET", "/v1/jobs"),
            ("GET", "/v1/jobs/job_x"),
            ("POST", "/v1/jobs"),
            ("POST", "/v1/assets"),
        ):
            response = anonymous.request(method, path)
            assert_error(response, 401, "unauthorized", mention)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
def test_a_submission_without_a_key_is_refused_before_its_body_is_read(
    shared_server: ServerProcess, path: str
) -> None:
    """The 401 comes while the (announced 50 MB) body has not even been sent: nothing of it is taken in."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n"
            f"Content-Type: application/json\r\nContent-Length: {50 << 20}\r\n\r\n"
        )
        conn.sendall(head.encode() + b'{"model": "')
        answer = b""
        while chunk := conn.recv(65536):  # the server closes the connection after its answer
            answer += chunk
    answer_text = answer.decode("latin-1")
    assert answer_text.startswith("HTTP/1.1 401"), answer_text[:200]
    assert '"unauthorized"' in answer_text


def test_a_bare_key_in_authorization_is_accepted(shared_server: ServerProcess) -> None:
    response = httpx.get(f"{shared_server.url}/v1/models", headers={"Authorization": KEY_B})
    assert response.status_code == 200


def test_auth_off_needs_no_key(serve: ServerFactory) -> None:
    server = serve(auth="off")
    with server.client(None) as api:
        job = succeeded(api, submit(api, edit_input(upload(api)["id"]))["id"])
        assert download(job["output"]["assets"][0]["url"]).status_code == 200
        # the studio's own requests: its origin is the server's
        same_site = {"Origin": server.url}
        assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=same_site).status_code == 409
        assert api.get("/v1/models", headers={"Host": f"localhost:{server.port}"}).status_code == 200


#: Requests a server without auth refuses, and what its 403 says.
NOT_ITS_OWN = [
    ({"Origin": "https://evil.example"}, "refuses requests from other sites' pages (https://evil.example)"),
    ({"Origin": "null"}, "other sites' pages (null)"),
    ({"Origin": "http://[::1"}, "other sites' pages (http://[::1)"),
    ({"Host": "rebound.example:8000"}, "not 'rebound.example:8000'"),
    ({"Host": "[::1"}, "not '[::1'"),
]


def test_auth_off_refuses_other_sites_and_names_that_are_not_its_own(serve: ServerFactory) -> None:
    """A page in a browser on the machine could otherwise queue jobs (a form or fetch from its own site) or,
    with a DNS name of its own pointed at 127.0.0.1, read the results too."""
    server = serve(auth="off")
    with server.client(None) as api:
        for headers, words in NOT_ITS_OWN:
            for method, path in (("POST", "/runpod/v2/ep/run"), ("GET", "/v1/jobs"), ("POST", "/v1/assets")):
                refused = api.request(method, path, headers=headers, content=b'{"input": {}}')
                assert_error(refused, 403, "forbidden", words)
        assert api.get("/v1/jobs").status_code == 200


def test_auth_off_answers_the_name_of_its_public_base_url(serve: ServerFactory) -> None:
    server = serve(auth="off", public_base_url="http://gpu-box.lan:8000")
    with server.client(None) as api:
        headers = {"Host": "gpu-box.lan:8000", "Origin": "http://gpu-box.lan:8000"}
        assert api.get("/v1/jobs", headers=headers).status_code == 200
        refused = api.get("/v1/jobs", headers={"Host": "other-box.lan:8000"})
        assert_error(refused, 403, "forbidden", "REANGLE_PUBLIC_BASE_URL")


def test_a_key_from_keys_create_is_accepted_by_the_running_server(shared_server: ServerProcess) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "reangle", "keys", "create", "--data-dir", str(shared_server.data_dir)],
        cwd=REPO,
        env=shared_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("rk_")
    assert "\n" not in key
    assert "only time" in made.stderr
    with shared_server.client(key) as api:
        job = succeeded(api, submit(api, edit_input(upload(api)["id"]))["id"])
    with shared_server.client(KEY_A) as other:
        assert other.get(f"/v1/jobs/{job['id']}").status_code == 404


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def test_the_data_folder_and_its_secrets_are_readable_by_their_owner_only(
    shared_server: ServerProcess, api: httpx.Client, backend: str
) -> None:
    """The signing key, and the database (webhook signing secrets, key hashes, job inputs) with its WAL; on
    PostgreSQL the folder holds only the asset files (and the test servers set the signing secret)."""
    upload(api)  # something written: the WAL exists
    assert stat.S_IMODE(shared_server.data_dir.stat().st_mode) == 0o700
    if backend == "sqlite":
        files = [
            shared_server.data_dir / name
            for name in ("signing.key", "reangle.sqlite3", "reangle.sqlite3-wal")
        ]
        assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {
            path.name: 0o600 for path in files
        }


def test_a_tampered_link_is_403(api: httpx.Client) -> None:
    url = upload(api)["url"]
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    later = str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 3600)
    for bad in (with_query(url, sig=flipped), with_query(url, expires=later)):
        assert_error(download(bad), 403, "forbidden", "signature")
    for unsigned in (with_query(url, sig=""), url.split("?")[0]):
        assert_error(download(unsigned), 403, "forbidden", "this link is not signed")
    other = upload(api, None)["id"]
    moved = url.replace(urlsplit(url).path, f"/v1/files/{other}")  # a valid signature for another asset
    assert_error(download(moved), 403, "forbidden", "signature")
    assert download(url).status_code == 200


def test_an_expired_link_is_403_and_the_api_gives_a_fresh_one(serve: ServerFactory) -> None:
    server = serve(url_ttl_s=2)  # long enough for the fresh link to be fetched on a loaded machine
    with server.client(KEY_A) as api:
        asset = upload(api)
        expires = int(parse_qs(urlsplit(asset["url"]).query)["expires"][0])
        assert expires <= time.time() + 2
        # wait for the clock, not for the server: nothing on the server side changes when a link expires
        time.sleep(max(0.0, expires + 1 - time.time()))
        error = assert_error(download(asset["url"]), 403, "forbidden", "expired")
        assert error["hint"]
        fresh = api.get(f"/v1/assets/{asset['id']}").json()["url"]
        assert fresh != asset["url"]
        downloaded = download(fresh)
        assert downloaded.status_code == 200
        # a cache keeps it no longer than its link is valid (2 s here), not the hour a long-lived link gets
        assert downloaded.headers["cache-control"] in {f"private, max-age={age}" for age in range(3)}


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/v1/jobs", "Authorization"),
        ("/scenario/v1/jobs", "Authorization"),
        ("/segmind/v2/requests/r_000/status", "x-api-key"),
        ("/runpod/v2/ep/health", "Authorization"),
        ("/openai/v1/models", "Authorization"),
    ],
)
@pytest.mark.parametrize(
    "value", [b"Bearer \xe9\xff", b"\xe9\xff", b"Basic \xe9\xff"], ids=["bearer", "bare", "basic"]
)
def test_a_key_with_bytes_outside_ascii_is_401_on_every_dialect(
    shared_server: ServerProcess, path: str, header: str, value: bytes
) -> None:
    response = httpx.get(shared_server.url + path, headers={header: value})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize("path", ["/v1/jobs", "/runpod/v2/ep/health", "/openai/v1/models"])
def test_a_valid_key_sent_as_basic_auth_says_which_scheme_to_use(
    shared_server: ServerProcess, path: str
) -> None:
    basic = "Basic " + base64.b64encode(f"label:{KEY_A}".encode()).decode()
    response = httpx.get(shared_server.url + path, headers={"Authorization": basic})
    assert response.status_code == 401
    assert "the Basic authorization scheme is not taken here" in response.text
    assert "Bearer" in response.text


def test_keys_create_and_serve_share_the_default_data_dir_from_any_directory(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Without --data-dir both use ~/.local/share/reangle, not ./data of wherever each was started."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = server_env(cache_dir) | {"HOME": str(home)}
    env.pop("REANGLE_API_KEYS")
    made = subprocess.run(
        [sys.executable, "-m", "reangle", "keys", "create"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    data_dir = home / ".local" / "share" / "reangle"
    assert str(data_dir) in made.stderr  # says where the key went
    port = free_port()
    command = [sys.executable, "-m", "reangle", "serve", "--engine", "fake", "--port", str(port)]
    with subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) as server:
        try:
            deadline, answer = time.monotonic() + 60, None
            while answer is None and time.monotonic() < deadline:
                try:
                    answer = httpx.get(
                        f"http://127.0.0.1:{port}/v1/jobs",
                        headers={"Authorization": f"Bearer {made.stdout.strip()}"},
                    )
                except httpx.TransportError:
                    time.sleep(0.1)
            assert answer is not None, "the server did not start"
            assert answer.status_code == 200, answer.text
        finally:
            server.terminate()
            _, log = server.communicate(timeout=30)
    assert f"data in {data_dir}" in log
    assert not (elsewhere / "data").exists()


@pytest.mark.parametrize(
    "ignored", ["items=0-1", "bytes=", "bytes=abc", "bytes=10-5", "bytes=-", "bytes 0-1"]
)
def test_a_range_header_the_server_does_not_understand_is_ignored(api: httpx.Client, ignored: str) -> None:
    """RFC 9110 14.2: another unit, or a range set that is not valid, gets the whole file."""
    url = upload(api)["url"]
    whole = download(url).content
    response = httpx.get(url, headers={"Range": ignored})
    assert response.status_code == 200, response.text
    assert response.content == whole


@pytest.mark.parametrize("unsatisfiable", ["bytes=99999999-", "bytes=-0", "bytes=99999999-99999999999"])
def test_a_range_outside_the_file_is_416_with_its_size(api: httpx.Client, unsatisfiable: str) -> None:
    url = upload(api)["url"]
    size = len(download(url).content)
    response = httpx.get(url, headers={"Range": unsatisfiable})
    error = assert_error(response, 416, "range_not_satisfiable", str(size))
    assert error["hint"]
    assert response.headers["content-range"] == f"bytes */{size}"


def test_byte_ranges_get_those_bytes(api: httpx.Client) -> None:
    url = upload(api)["url"]
    whole = download(url).content
    size = len(whole)
    for asked, first, last in [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", size - 5, size - 1),
        ("bytes=3-", 3, size - 1),
    ]:
        response = httpx.get(url, headers={"Range": asked})
        assert response.status_code == 206, (asked, response.text)
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert response.content == whole[first : last + 1]
    # one range inside the file is enough; the ones past its end are left out
    response = httpx.get(url, headers={"Range": "bytes=0-1,99999999-"})
    assert (response.status_code, response.content) == (206, whole[:2])


def test_head_answers_as_get_without_the_body(api: httpx.Client, shared_server: ServerProcess) -> None:
    """Link checkers and uptime probes ask with HEAD."""
    url = upload(api)["url"]
    got, head = download(url), httpx.head(url)
    assert head.status_code == 200, head.text
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "accept-ranges"):
        assert head.headers[name] == got.headers[name], name
    # the max-age counts down to the link's expiry: the two answers may be a second apart
    ages = [int(r.headers["cache-control"].removeprefix("private, max-age=")) for r in (head, got)]
    head_age, got_age = ages
    assert 0 <= got_age - head_age <= 1
    health = httpx.head(f"{shared_server.url}/healthz")
    assert health.status_code == 200
    assert health.headers["content-type"] == "application/json"
