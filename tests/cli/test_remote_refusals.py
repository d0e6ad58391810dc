"""What the CLI refuses before it sends anything to a server, and how it words what a server refuses: exit 2,
one line that names the option (or the file) the user gave, nothing created on disk first. On a server (the
FakeServer of the SDK tests) unless said otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from reangle.cli.main import main
from tests.cli.conftest import answer_with
from tests.client.fakes import API, API_KEY, FakeServer

SERVER = ("--server", API, "--api-key", API_KEY)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REANGLE_SERVER", raising=False)
    monkeypatch.setenv("REANGLE_FAKE_STEP_SECONDS", "0")


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        return int(exc.code or 0)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert "Error" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (["edit", "{photo}", "-o", "{dir}/x.png"], "--guidance", "nan"),
        (["edit", "{photo}", "-o", "{dir}/x.png"], "--lora-scale", "1e400"),
        (["edit", "{photo}", "-o", "{dir}/x.png"], "--azimuth", "inf"),
        (["generate", "a cat", "-o", "{dir}/x.png"], "--guidance", "inf"),
        (["orbit", "{photo}", "-o", "{dir}/views"], "--distance", "inf"),
        (["orbit", "{photo}", "-o", "{dir}/views"], "--elevation", "nan"),
        (["orbit", "{photo}", "-o", "{dir}/views"], "--guidance", "-inf"),
    ],
)
def test_a_float_option_that_is_not_finite_is_refused_naming_it(
    fake: FakeServer,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    option: str,
    value: str,
) -> None:
    argv = [part.format(photo=photo, dir=tmp_path) for part in command]
    assert run([*argv, *SERVER, f"{option}={value}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"argument {option}: {value} is not a finite number" in line
    assert fake.requests == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photo.png"]  # no -o folder left behind


# input and output paths


@pytest.fixture
def paths(tmp_path: Path, photo: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    return {"photo": str(photo), "fifo": str(fifo), "dir": str(tmp_path)}


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["edit", "/proc/self/mem"], "cannot read /proc/self/mem: Input/output error"),
        (["edit", "{dir}/folder"], "{dir}/folder is a folder, not an image file"),
        (["edit", "/dev/null"], "/dev/null is not a regular file (a pipe or a device); give an image file"),
        (["edit", "{fifo}"], "{fifo} is not a regular file (a pipe or a device); give an image file"),
        (["edit", "{photo}", "{dir}/gone.png"], "input file not found: {dir}/gone.png"),
        (["generate", "a cat", "--image", "{dir}/folder"], "{dir}/folder is a folder, not an image file"),
    ],
)
def test_an_input_that_is_no_readable_file_exits_2_naming_it(
    fake: FakeServer,
    paths: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    message: str,
) -> None:
    argv = [part.format(**paths) for part in command]
    assert run([*argv, "-o", f"{paths['dir']}/x.png", *SERVER]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message.format(**paths)}"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["/proc/self/mem"], "cannot read /proc/self/mem: Input/output error"),
        (["/dev/null"], "/dev/null is not a regular file (a pipe or a device); give an image file"),
        (["{dir}/folder"], "{dir}/folder is a folder, not an image file"),
    ],
)
@pytest.mark.usefixtures("no_server")
def test_an_input_that_is_no_readable_file_exits_2_naming_it_in_process(
    paths: dict[str, str], capsys: pytest.CaptureFixture[str], inputs: list[str], message: str
) -> None:
    argv = ["edit", *(part.format(**paths) for part in inputs), "--engine", "fake"]
    assert run([*argv, "-o", f"{paths['dir']}/x.png"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message.format(**paths)}"


@pytest.mark.parametrize("where", [list(SERVER), ["--engine", "fake"]], ids=["server", "in-process"])
@pytest.mark.usefixtures("no_server")
def test_an_output_under_a_file_says_it_is_no_folder(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str], where: list[str]
) -> None:
    output = photo / "x.png"
    assert run(["edit", str(photo), "-o", str(output), *where]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"reangle: error: -o {output}: {photo} is a file, not a folder"
    assert fake.requests == []


def test_an_orbit_folder_under_a_file_says_which_is_the_file(
    fake: FakeServer, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    views = photo / "views" / "left"
    assert run(["orbit", str(photo), "-o", str(views), *SERVER]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"reangle: error: -o {views}: {photo} is a file, not a folder"
    assert fake.requests == []


# a server's refusal, in the options' words


@pytest.mark.parametrize(
    ("command", "refusal", "shown"),
    [
        (
            ["edit", "{photo}", "--azimuth", "90"],
            "input.azimuth: unknown field",
            "--azimuth: this model has no azimuth input",
        ),
        (
            ["edit", "{photo}", "--text", "left side view"],
            "input.azimuth: unknown field",
            "--text: this model has no azimuth input",
        ),
        (
            ["edit", "{photo}", "--zoom", "8"],
            "input.distance: unknown field",
            "--zoom: this model has no distance input",
        ),
        (
            ["edit", "{photo}", "{photo}", "{photo}", "{photo}"],
            "input.images: List should have at most 3 items after validation, not 4",
            "INPUT: at most 3 images, got 4",
        ),
        (
            ["edit", "{photo}", "--aspect-ratio", "16:9", "--width", "512"],
            "give either width/height or aspect_ratio, not both",
            "give either --width/--height or --aspect-ratio, not both",
        ),
        (
            ["generate", "a cat", "--size", "1K", "--width", "512"],
            "give either size or width/height, not both",
            "give either --size or --width/--height, not both",
        ),
        (
            ["generate", "a cat", "--size", "1328x1328", "--aspect-ratio", "16:9"],
            "give either a WxH size or aspect_ratio, not both",
            "give either a WxH --size or --aspect-ratio, not both",
        ),
    ],
)
def test_a_refusal_names_the_options_in_plain_words(
    fake: FakeServer,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    refusal: str,
    shown: str,
) -> None:
    fake.refusal = refusal
    argv = [part.format(photo=photo) for part in command]
    assert run([*argv, "-o", str(tmp_path / "x.png"), *SERVER]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {shown}"


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--size", "1K", "--width", "512"], "give either --size or --width/--height, not both"),
        (
            ["--size", "1328x1328", "--aspect-ratio", "16:9"],
            "give either a WxH --size or --aspect-ratio, not both",
        ),
    ],
)
@pytest.mark.usefixtures("no_server")
def test_a_size_clash_names_the_options_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], shown: str
) -> None:
    argv = ["generate", "a cat", *flags, "--engine", "fake", "-o", str(tmp_path / "x.png")]
    assert run(argv) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {shown}"


# a model that the other command runs


@pytest.fixture
def tasks(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The FakeServer, describing each model of `tasks` with its task, as the real server's /v1/models/ID."""
    tasks: dict[str, str] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        model_id = request.url.path.removeprefix("/v1/models/")
        if request.method == "GET" and model_id in tasks:
            fake.requests.append(request)
            return httpx.Response(200, json={"id": model_id, "task": tasks[model_id], "input_schema": {}})
        return fake.handle(request)

    answer_with(monkeypatch, handle)
    return tasks


@pytest.mark.parametrize(
    ("command", "task", "refusal", "shown"),
    [
        (
            ["edit", "{photo}", "--model", "qwen-image-2512"],
            "text_to_image",
            "input.prompt: field required",
            "--model: qwen-image-2512 makes images from a prompt (text_to_image); use `reangle generate` for "
            "it",
        ),
        (
            ["generate", "a cat", "--model", "qwen-edit-multiangle-2511"],
            "camera_edit",
            "input.images: field required",
            "--model: qwen-edit-multiangle-2511 edits images (camera_edit); use `reangle edit` for it",
        ),
        # a model that does both, or one the server does not describe so: the server's answer stands
        (
            ["generate", "a cat", "--model", "wan-2.7-image"],
            "image_edit_or_generate",
            "input.size: too small",
            "--size: too small",
        ),
        (
            ["edit", "{photo}", "--model", "qwen-image-edit-2511"],
            None,
            "input.prompt: field required",
            "--prompt: field required",
        ),
    ],
)
def test_a_model_of_the_other_command_is_refused_naming_that_command(
    fake: FakeServer,
    tasks: dict[str, str],
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    task: str | None,
    refusal: str,
    shown: str,
) -> None:
    if task is not None:
        tasks[command[3]] = task
    fake.refusal = refusal
    argv = [part.format(photo=photo) for part in command]
    assert run([*argv, "-o", str(tmp_path / "x.png"), *SERVER]) == 2
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {shown}"


def test_an_accepted_job_asks_nothing_about_its_model(fake: FakeServer, photo: Path, tmp_path: Path) -> None:
    assert run(["edit", str(photo), "-o", str(tmp_path / "x.png"), *SERVER]) == 0
    assert not [request for request in fake.requests if request.url.path.startswith("/v1/models")]


# --lora


@pytest.mark.parametrize(
    ("command", "lora", "loras", "message"),
    [
        (
            ["edit", "{photo}"],
            "id:x",
            None,
            "--lora: unknown LoRA id 'x' (none are registered; see REANGLE_LORAS)",
        ),
        (
            ["generate", "a cat"],
            "id:x",
            '{"style": "/loras/style.safetensors"}',
            "--lora: unknown LoRA id 'x' (registered: style; see REANGLE_LORAS)",
        ),
        (["edit", "{photo}"], "{dir}/style.bin", None, "--lora: {dir}/style.bin is not a .safetensors file"),
        (
            ["generate", "a cat"],
            "{dir}/cut.safetensors",
            None,
            "--lora: {dir}/cut.safetensors is not a safetensors file: it has only 2 bytes",
        ),
        (
            ["edit", "{photo}"],
            "{dir}/empty.safetensors",
            None,
            "--lora: {dir}/empty.safetensors is not a LoRA reangle can load: it holds no tensors",
        ),
    ],
)
@pytest.mark.usefixtures("no_server")
def test_a_lora_that_cannot_be_used_is_refused_before_the_model_loads(
    monkeypatch: pytest.MonkeyPatch,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    lora: str,
    loras: str | None,
    message: str,
) -> None:
    if loras is not None:
        monkeypatch.setenv("REANGLE_LORAS", loras)
    (tmp_path / "style.bin").write_bytes(b"not a LoRA")
    (tmp_path / "cut.safetensors").write_bytes(b"ab")
    (tmp_path / "empty.safetensors").write_bytes(len(b"{}").to_bytes(8, "little") + b"{}")
    argv = [part.format(photo=photo, dir=tmp_path) for part in [*command, "--lora", lora]]
    assert run([*argv, "--engine", "fake", "-o", str(tmp_path / "x.png")]) == 2
    # one line: no "loading the fake engine" before it
    assert one_error_line(capsys.readouterr().err) == f"reangle: error: {message.format(dir=tmp_path)}"


@pytest.mark.parametrize("lora", ["ftp://host/x.safetensors", "s3://bucket/x.safetensors:0.5"])
def test_a_lora_url_of_another_scheme_is_not_taken_for_a_path(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], lora: str
) -> None:
    assert run(["edit", str(photo), "--lora", lora, "-o", str(tmp_path / "x.png"), *SERVER]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"argument --lora: {lora!r}: only http:// and https:// URLs are taken" in line
    assert fake.requests == []


def test_a_refused_orbit_leaves_no_empty_folder(
    fake: FakeServer, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.refusal = "input.azimuths: too many"
    (tmp_path / "kept").mkdir()
    for folder in ("views", "kept"):
        assert run(["orbit", str(photo), "-o", str(tmp_path / folder), *SERVER]) == 2
        assert one_error_line(capsys.readouterr().err) == "reangle: error: --azimuths: too many"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept", "photo.png"]


@pytest.mark.parametrize(("key", "words"), [("ключ", "a non-ASCII character"), ("rk_a b", "whitespace")])
def test_an_api_key_a_header_cannot_carry_is_one_line_that_never_shows_it(
    capsys: pytest.CaptureFixture[str], key: str, words: str
) -> None:
    assert run(["jobs", "list", "--server", API, "--api-key", key]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line
    assert line.endswith("(check --api-key or REANGLE_API_KEY)")
    assert key not in line
