"""The remote commands (`reangle jobs`, `reangle orbit`, `reangle edit --server`) against the FakeServer."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reangle.cli import remote
from reangle.cli.main import build_parser as main_parser
from reangle.client import Client, _base
from reangle.errors import InvalidInput
from reangle.settings import Settings
from tests.client.fakes import API, API_KEY, FakeServer
from tests.conftest import image_bytes, make_image

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels"


@dataclass(frozen=True)
class SettingsStub:
    """Stands in for Settings' REANGLE_SERVER / REANGLE_API_KEY fields (what the remote commands read)."""

    server: str | None = None
    api_key: str | None = None


def build_parser() -> argparse.ArgumentParser:
    """The real CLI parser, as `reangle` builds it."""
    return main_parser()


def reangle(*argv: str, settings: SettingsStub | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = remote.run_remote_edit if argv[0] == "edit" else args.run
    return int(run(args, settings or SettingsStub(server=API, api_key=API_KEY)))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()

    def factory(base_url: str, api_key: str | None) -> Client:
        return Client(base_url, api_key, transport=fake.transport(), poll_interval=0.01)

    monkeypatch.setattr(remote, "client_factory", factory)
    return fake


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("reangle:")]


def test_jobs_list_prints_a_table(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})
    fake.add_job("qwen-image-edit-2511", {"images": ["b"]})["progress"] = 0.5
    assert reangle("jobs", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "MODEL", "PROGRESS", "CREATED"]
    assert lines[1].split() == ["job_2", "queued", "qwen-image-edit-2511", "50%", "2026-01-01T00:00:01+00:00"]
    assert lines[2].split()[:4] == ["job_1", "queued", "qwen-edit-multiangle-2511", "0%"]
    assert lines[1].index("queued") == lines[0].index("STATUS")


def test_jobs_list_json_with_status_and_limit(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})
    fake.jobs["job_2"]["status"] = "failed"
    assert reangle("jobs", "list", "--status", "queued", "--limit", "1", "--json") == 0
    jobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [job["id"] for job in jobs] == ["job_3"]
    (request,) = fake.requests_to("GET", "/v1/jobs")
    assert dict(request.url.params) == {"status": "queued", "limit": "1"}


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_a_jobs_list_limit_out_of_range_names_the_option(
    limit: str, fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        reangle("jobs", "list", "--limit", limit)
    assert exited.value.code == 2
    assert "argument --limit: " in capsys.readouterr().err
    assert fake.requests_to("GET", "/v1/jobs") == []


def test_jobs_show_prints_the_job_json(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})
    assert reangle("jobs", "show", "job_1") == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["id"], job["status"], job["input"]) == ("job_1", "queued", {"images": ["a"]})
    assert job["created_at"] == "2026-01-01T00:00:00Z"


def test_jobs_cancel(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})
    assert reangle("jobs", "cancel", "job_1") == 0
    assert capsys.readouterr().out == "job_1 canceled\n"
    assert fake.jobs["job_1"]["status"] == "canceled"


def test_an_unknown_job_exits_2_with_one_line(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("jobs", "show", "job_9") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "reangle: error: no job job_9\n"


def test_no_server_configured_exits_2(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("jobs", "list", settings=SettingsStub()) == 2
    assert capsys.readouterr().err == "reangle: error: no server: give --server URL or set REANGLE_SERVER\n"
    assert fake.requests == []


def test_a_server_url_without_a_scheme_exits_2(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("jobs", "list", settings=SettingsStub(server="127.0.0.1:8000")) == 2
    assert capsys.readouterr().err == (
        "reangle: error: server URL must start with http:// or https:// (got '127.0.0.1:8000') "
        "(check --server or REANGLE_SERVER)\n"
    )
    assert fake.requests == []


def test_flags_win_over_settings(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str | None]] = []

    def factory(base_url: str, api_key: str | None) -> Client:
        made.append((base_url, api_key))
        return Client(base_url, api_key, transport=fake.transport())

    monkeypatch.setattr(remote, "client_factory", factory)
    settings = SettingsStub(server="http://from-env.test", api_key="sk-env")
    reangle("jobs", "list", settings=settings)
    reangle("jobs", "list", "--server", API, "--api-key", API_KEY, settings=settings)
    assert made == [("http://from-env.test", "sk-env"), (API, API_KEY)]


def test_a_wrong_key_exits_2(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("jobs", "list", "--api-key", "sk-wrong") == 2
    assert capsys.readouterr().err == (
        "reangle: error: missing or unknown API key (check --api-key or REANGLE_API_KEY)\n"
    )


def test_no_key_says_how_to_give_one(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The server's hint is for HTTP callers (send Authorization: Bearer <key>); the CLI names its flag."""
    assert reangle("jobs", "list", settings=SettingsStub(server=API)) == 2
    assert capsys.readouterr().err == (
        "reangle: error: the server wants an API key: give --api-key or set REANGLE_API_KEY\n"
    )


def test_no_connection_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        remote, "client_factory", lambda url, key: Client(url, key, transport=httpx.MockTransport(refuse))
    )
    assert reangle("jobs", "list") == 1
    err = capsys.readouterr().err
    assert err.startswith("reangle: error: cannot reach the server http://reangle.test")
    assert err.count("\n") == 1


def test_a_server_error_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    broken = httpx.MockTransport(lambda _request: httpx.Response(503, text="down for maintenance\nback soon"))
    monkeypatch.setattr(remote, "client_factory", lambda url, key: Client(url, key, transport=broken))
    assert reangle("jobs", "cancel", "job_1") == 1
    err = capsys.readouterr().err
    assert err == (
        "reangle: error: HTTP 503 Service Unavailable from http://reangle.test/v1/jobs/job_1/cancel: "
        "down for maintenance back soon\n"
    )


def test_remote_edit_uploads_submits_shows_progress_and_downloads(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "side.png"
    code = reangle(
        "edit",
        str(photo),
        "--horizontal-angle",
        "90",
        "--zoom",
        "8",
        "--prompt",
        "at dusk",
        "--seed",
        "5",
        "-o",
        str(out),
    )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"
    assert "100%" in captured.err
    assert "step 4/4" in captured.err  # the fake server's job takes 4 steps
    assert out.read_bytes() == b"job_2 image 0"
    assert PNG in fake.requests_to("POST", "/v1/assets")[0].content
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["model"] == "qwen-edit-multiangle-2511"
    assert submitted["input"] == {
        "images": ["asset_1"],
        "prompt": "at dusk",
        "azimuth": 90,
        "distance": 0.6,
        "seed": 5,
        "output_format": "png",
    }


def test_remote_edit_without_pose_flags_sends_no_camera_fields(
    fake: FakeServer, photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.jpg"
    assert (
        reangle("edit", str(photo), "--model", "qwen-image-edit-2511", "--prompt", "add snow", "-o", str(out))
        == 0
    )
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["model"] == "qwen-image-edit-2511"
    # only what was typed (-o x.jpg sets the format): the model's own defaults stay in force
    assert submitted["input"] == {"images": ["asset_1"], "prompt": "add snow", "output_format": "jpeg"}


def test_remote_edit_numbers_several_outputs_and_prints_json(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.webp"
    assert (
        reangle(
            "edit", str(photo), "--num-outputs", "2", "--text", "bird's-eye view", "-o", str(out), "--json"
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    paths = [tmp_path / "out-0.webp", tmp_path / "out-1.webp"]
    assert [output["path"] for output in report["outputs"]] == [str(path) for path in paths]
    assert [path.read_bytes() for path in paths] == [b"job_2 image 0", b"job_2 image 1"]
    assert [output["seed"] for output in report["outputs"]] == [7, 8]
    assert [output["plan"]["steps"] for output in report["outputs"]] == [4, 4]  # what the model was given
    assert report["job"] == "job_2"
    assert json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)["input"]["elevation"] == 60


def test_a_failed_remote_edit_exits_1_with_one_line(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.outcome = "failed"
    assert reangle("edit", str(photo), "-o", str(tmp_path / "o.png")) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines == [
        "reangle: error: job job_2 failed: engine_error: CUDA out of memory (try a smaller size)"
    ]
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--horizontal-angle", "90", "--azimuth", "90"], "--horizontal-angle"),
        (["--quality", "0"], "--quality must be between 1 and 100, got 0"),
        (["-o", "out.gif"], "cannot tell the image format from 'out.gif'"),
        (["-o", "/no/such/folder/out.png"], "output folder does not exist: /no/such/folder"),
    ],
)
def test_bad_edit_flags_exit_2_before_contacting_the_server(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = [str(photo), *extra] if "-o" in extra else [str(photo), "-o", "out.png", *extra]
    assert reangle("edit", *argv) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("reangle: error: ")
    assert message in line
    assert fake.requests == []


def test_a_missing_input_exits_2(
    fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("edit", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")) == 2
    assert capsys.readouterr().err == f"reangle: error: input file not found: {tmp_path / 'nope.png'}\n"
    assert fake.requests == []


def test_a_rejected_request_exits_2(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("edit", str(photo), "--model", "no-such-model", "-o", str(tmp_path / "o.png")) == 2
    assert error_lines(capsys.readouterr().err) == ["reangle: error: unknown model 'no-such-model'"]


def test_remote_edit_dry_run_prints_the_request(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("edit", str(photo), "--azimuth", "45", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["input"]["images"] == [str(photo)]
    assert plan["input"]["azimuth"] == 45
    assert fake.requests == []


def test_orbit_writes_views_by_azimuth_a_turntable_and_a_contact_sheet(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "views"
    assert reangle("orbit", str(photo), "--elevation", "30", "-o", str(folder)) == 0
    names = sorted(path.name for path in folder.iterdir())
    expected = [f"view-{a:03d}.png" for a in range(0, 360, 45)] + ["contact-sheet.png", "turntable.webp"]
    assert names == sorted(expected)
    assert (folder / "view-090.png").read_bytes() == b"job_2 view 2"
    assert (folder / "turntable.webp").read_bytes() == b"job_2 turntable 0"
    assert capsys.readouterr().out.splitlines()[0] == str(folder / "view-000.png")
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["kind"] == "orbit"
    assert submitted["input"] == {
        "image": "asset_1",
        "elevation": 30.0,
    }


def test_orbit_with_chosen_azimuths_and_json(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = reangle(
        "orbit", str(photo), "--azimuths", "0,22.5,180", "--format", "jpeg", "--json", "-o", str(tmp_path)
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    names = [Path(output["path"]).name for output in report["outputs"]]
    assert names == ["view-000.jpg", "view-022.5.jpg", "view-180.jpg", "turntable.webp", "contact-sheet.png"]
    assert report["outputs"][1]["pose"] == {"azimuth_deg": 22.5, "elevation_deg": 0.0, "distance": 1.0}
    assert json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)["input"]["azimuths"] == [0, 22.5, 180]


def test_a_second_orbit_into_a_folder_names_the_views_an_earlier_one_left(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("orbit", str(photo), "-o", str(tmp_path)) == 0
    assert "earlier orbit" not in capsys.readouterr().err
    assert reangle("orbit", str(photo), "--azimuths", "0,90", "-o", str(tmp_path)) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "earlier orbit" in line]
    assert notes == [
        f"reangle: note: 6 view files in {tmp_path} are from an earlier orbit, not this one "
        "(view-045.png, view-135.png, view-180.png, view-225.png, ...)"
    ]
    assert (tmp_path / "view-315.png").is_file()  # left as it was


def test_orbit_into_a_file_exits_2(fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("orbit", str(photo), "-o", str(photo)) == 2
    assert "must be a folder" in capsys.readouterr().err
    assert fake.requests == []


def test_ctrl_c_while_waiting_cancels_the_job_and_exits_130(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.stream_mode = "interrupt"
    assert reangle("edit", str(photo), "-o", str(tmp_path / "o.png")) == 130
    assert fake.jobs["job_2"]["status"] == "canceled"
    assert len(fake.requests_to("POST", "/v1/jobs/job_2/cancel")) == 1
    assert error_lines(capsys.readouterr().err) == [
        "reangle: job job_2 canceled on the server",
        "reangle: canceled",
    ]


def test_edit_runs_on_the_server_named_by_the_settings_without_the_flag(
    fake: FakeServer, photo: Path, tmp_path: Path
) -> None:
    """REANGLE_SERVER alone sends `reangle edit` to the server (it used to load the model in process)."""
    args = build_parser().parse_args(["edit", str(photo), "-o", str(tmp_path / "out.png")])
    assert args.run(args, SettingsStub(server=API, api_key=API_KEY)) == 0
    assert len(fake.jobs) == 1
    assert (tmp_path / "out.png").read_bytes().endswith(b"image 0")  # what the fake server serves


def test_local_edits_in_process_even_with_a_server_set(fake: FakeServer, tmp_path: Path) -> None:
    photo = tmp_path / "real.png"
    photo.write_bytes(image_bytes(make_image(64, 48)))
    args = build_parser().parse_args(["edit", str(photo), "--local", "--engine", "fake", "--dry-run"])
    assert args.run(args, Settings(server=API)) == 0
    assert fake.jobs == {}


def test_real_settings_read_the_server_and_key_from_the_environment(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REANGLE_SERVER", API)
    monkeypatch.setenv("REANGLE_API_KEY", API_KEY)
    fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})
    args = build_parser().parse_args(["jobs", "cancel", "job_1"])
    assert args.run(args, Settings()) == 0
    assert fake.jobs["job_1"]["status"] == "canceled"


def test_remote_edit_sends_the_flags_typed_even_at_their_usual_values(
    fake: FakeServer, photo: Path, tmp_path: Path
) -> None:
    """A model's catalog defaults are overridden only by what the user typed, --lora-scale 1.0 included."""
    out = str(tmp_path / "o.jpg")
    typed = ["--num-outputs", "1", "--acceleration", "high", "--lora-scale", "1.0", "--quality", "90"]
    assert reangle("edit", str(photo), *typed, "-o", out) == 0
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)["input"]
    assert {name: submitted[name] for name in ("num_outputs", "acceleration", "lora_scale", "quality")} == {
        "num_outputs": 1,
        "acceleration": "high",
        "lora_scale": 1.0,
        "quality": 90,
    }


@pytest.mark.parametrize("command", ["edit", "generate"])
def test_an_output_that_is_a_folder_exits_2_before_anything_is_sent(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    first = str(photo) if command == "edit" else "a cat"
    args = build_parser().parse_args([command, first, "-o", str(tmp_path)])
    assert args.run(args, SettingsStub(server=API, api_key=API_KEY)) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: -o {tmp_path} is a folder; give a file name in it, such as {tmp_path / 'out.png'}"
    ]
    assert fake.requests == []


def test_an_output_that_cannot_be_written_names_the_job(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "o-1.png").mkdir()  # the second of two outputs cannot be written
    assert reangle("edit", str(photo), "--num-outputs", "2", "-o", str(tmp_path / "o.png")) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"reangle: error: cannot write {tmp_path / 'o-1.png'}: Is a directory; ")
    assert line.endswith(
        "job job_2 succeeded, its outputs stay on the server (see `reangle jobs show job_2`)"
    )


def test_an_orbit_view_that_cannot_be_written_names_the_job(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "view-000.png").mkdir()
    assert reangle("orbit", str(photo), "-o", str(tmp_path)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"reangle: error: cannot write {tmp_path / 'view-000.png'}: Is a directory")
    assert "job job_2 succeeded" in line


@pytest.mark.parametrize("command", ["edit", "generate"])
def test_an_explicit_engine_runs_in_process_even_with_a_server_set(
    fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    photo = tmp_path / "real.png"
    photo.write_bytes(image_bytes(make_image(64, 48)))
    first = str(photo) if command == "edit" else "a cat"
    args = build_parser().parse_args([command, first, "--engine", "fake", "--dry-run", "--json"])
    assert args.run(args, Settings(server=API, api_key=API_KEY)) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "fake"
    assert fake.requests == []


def test_engine_and_server_flags_together_are_refused(fake: FakeServer, photo: Path) -> None:
    args = build_parser().parse_args(["edit", str(photo), "--engine", "fake", "--server", API, "--dry-run"])
    with pytest.raises(InvalidInput, match="--engine fake runs in this process, --server on a server"):
        args.run(args, SettingsStub())
    assert fake.requests == []


def test_a_refused_upload_names_the_file(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.check_uploads = True
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    assert reangle("edit", str(photo), str(bad), "-o", str(tmp_path / "o.png")) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: {bad} is not an image (expected PNG, JPEG or WebP)"
    ]
    assert fake.requests_to("POST", "/v1/jobs") == []
    assert reangle("orbit", str(bad), "-o", str(tmp_path / "views")) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"reangle: error: {bad} is not an image (expected PNG, JPEG or WebP)"
    ]


def test_remote_edit_takes_urls_and_asset_ids(fake: FakeServer, tmp_path: Path) -> None:
    url = "https://example.com/a.png"
    assert reangle("edit", url, "asset_7", "-o", str(tmp_path / "o.png")) == 0
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert submitted["input"]["images"] == [url, "asset_7"]
    assert fake.requests_to("POST", "/v1/assets") == []


def test_a_local_edit_of_a_url_says_it_needs_a_server(tmp_path: Path) -> None:
    args = build_parser().parse_args(["edit", "https://example.com/a.png", "--engine", "fake", "--dry-run"])
    with pytest.raises(InvalidInput, match=r"^https://example.com/a.png: a URL input needs a server"):
        args.run(args, Settings())


def test_cancel_of_a_running_job_says_it_was_requested(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.cancel_at_next_step = True
    fake.add_job("qwen-edit-multiangle-2511", {"images": ["a"]})["status"] = "processing"
    assert reangle("jobs", "cancel", "job_1") == 0
    assert capsys.readouterr().out == "job_1: cancel requested; the job stops at its next step\n"


def test_a_full_queue_exits_1_and_says_when_to_retry(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.queue_full = 7
    assert reangle("edit", str(photo), "-o", str(tmp_path / "o.png")) == 1
    assert error_lines(capsys.readouterr().err) == ["reangle: error: the queue is full (retry in 7 s)"]


def test_an_invalid_input_keeps_its_hint(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    def command(_client: Client) -> int:
        raise InvalidInput("--set: model m makes no image sets", field="image_set", hint="try --model x")

    args = build_parser().parse_args(["jobs", "list"])
    assert remote._with_client(args, SettingsStub(server=API, api_key=API_KEY), command) == 2
    assert capsys.readouterr().err == "reangle: error: --set: model m makes no image sets (try --model x)\n"


def test_an_empty_job_list_says_so(fake: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert reangle("jobs", "list") == 0
    assert reangle("jobs", "list", "--status", "failed") == 0
    assert capsys.readouterr().out == "no jobs\nno failed jobs\n"


@pytest.mark.parametrize("action", ["show", "cancel"])
def test_an_empty_job_id_is_refused(
    fake: FakeServer, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert reangle("jobs", action, "") == 2
    assert (
        capsys.readouterr().err
        == "reangle: error: give a job id (job_...), as `reangle jobs list` shows them\n"
    )
    assert fake.requests == []


def test_a_connection_lost_while_waiting_names_the_job(
    fake: FakeServer,
    photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/jobs/"):
            raise httpx.ConnectError("connection refused", request=request)
        return fake.handle(request)

    monkeypatch.setattr(
        remote,
        "client_factory",
        lambda url, key: Client(url, key, transport=httpx.MockTransport(handle), poll_interval=0.001),
    )
    monkeypatch.setattr(_base, "SERVER_AWAY_S", 0.2)  # not the minutes a restarting server gets
    monkeypatch.setattr(_base, "AWAY_POLL_MAX_S", 0.01)
    assert reangle("edit", str(photo), "-o", str(tmp_path / "o.png")) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("reangle: error: cannot reach the server")
    assert line.endswith("job job_2 may still be running: check it later with `reangle jobs show job_2`")


# webhooks and time limits

HOOK = "https://example.com/hooks/reangle"
SUBMISSION_FLAGS = (
    "--webhook-url",
    HOOK,
    "--webhook-event",
    "progress",
    "--webhook-event",
    "completed",
    "--run-timeout",
    "90",
    "--total-timeout",
    "1.5e3",
)
SENT = {
    "webhook_url": HOOK,
    "webhook_events": ["progress", "completed"],
    "time_limits": {"run_s": 90.0, "total_s": 1500.0},
}


@pytest.mark.parametrize(
    "command",
    [
        ["edit", "--azimuth", "90", "-o", "out.png"],
        ["orbit", "-o", "views"],
        ["generate", "a fox", "-o", "fox.png"],
    ],
    ids=["edit", "orbit", "generate"],
)
def test_the_submitting_commands_send_the_webhook_and_time_limits(
    fake: FakeServer, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    name, *rest = command
    inputs = [] if name == "generate" else [str(photo)]
    assert reangle(name, *inputs, *rest, *SUBMISSION_FLAGS) == 0
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert {field: submitted.get(field) for field in SENT} == SENT


def test_only_the_submission_flags_given_are_sent(fake: FakeServer, photo: Path, tmp_path: Path) -> None:
    assert reangle("edit", str(photo), "--run-timeout", "30", "-o", str(tmp_path / "o.png")) == 0
    submitted = json.loads(fake.requests_to("POST", "/v1/jobs")[0].content)
    assert set(submitted) == {"model", "input", "kind", "time_limits"}
    assert submitted["time_limits"] == {"run_s": 30.0}


def test_a_dry_run_shows_the_webhook_and_time_limits(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("edit", str(photo), "--dry-run", "--webhook-url", HOOK, "--total-timeout", "60") == 0
    request = json.loads(capsys.readouterr().out)
    assert (request["webhook_url"], request["time_limits"]) == (HOOK, {"total_s": 60.0})
    assert "webhook_events" not in request
    assert fake.requests == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--run-timeout", "0"],
            "argument --run-timeout: 0 is out of range: give more than 0 and at most 604800",
        ),
        (["--total-timeout", "-3"], "argument --total-timeout: -3 is out of range"),
        (["--run-timeout", "nan"], "argument --run-timeout: nan is out of range"),
        (["--run-timeout", "604801"], "argument --run-timeout: 604801 is out of range"),
        (["--run-timeout", "10s"], "argument --run-timeout: not a number of seconds: '10s'"),
        (["--webhook-event", "done"], "argument --webhook-event: invalid choice: 'done'"),
        (["--webhook-url", "ftp://example.com/x"], "argument --webhook-url: not an http:// or https:// URL"),
    ],
)
def test_bad_webhook_and_timeout_values_are_usage_errors(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        reangle("edit", str(photo), "-o", "out.png", *flags)
    assert exited.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert line.startswith("reangle edit: error: ")
    assert message in line
    assert fake.requests == []


def test_a_webhook_event_without_the_url_exits_2_before_anything_is_sent(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reangle("orbit", str(photo), "--webhook-event", "progress", "-o", "views") == 2
    assert capsys.readouterr().err == (
        "reangle: error: --webhook-event needs --webhook-url: the URL to send the events to\n"
    )
    assert fake.requests == []


def test_a_refused_webhook_url_names_the_option(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.refusal = "webhook_url: refusing to call http://10.0.0.5/hook: 10.0.0.5 is a private address"
    code = reangle("edit", str(photo), "--webhook-url", "http://10.0.0.5/hook", "-o", str(tmp_path / "o.png"))
    assert code == 2
    assert error_lines(capsys.readouterr().err) == [
        "reangle: error: --webhook-url: refusing to call http://10.0.0.5/hook: 10.0.0.5 is a private address"
    ]


def test_the_job_commands_take_no_webhook_flags(fake: FakeServer) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["jobs", "list", "--webhook-url", HOOK])
