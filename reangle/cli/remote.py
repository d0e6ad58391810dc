"""The commands that talk to a reangle server: `reangle orbit`, `reangle jobs list|show|cancel`, and
`reangle edit --server URL`, `reangle generate --server URL`. They use only the SDK (reangle.client): no
torch, no engine.

The commands that submit a job (edit, generate, orbit) also take its webhook (--webhook-url, --webhook-event)
and time limits (--run-timeout, --total-timeout).

Exit codes: 2 for bad input and any 4xx answer but 429, 1 for a failed or canceled job, a full queue (429),
a server error or no connection, 130 when interrupted by Ctrl-C (SIGINT) and 143 by SIGTERM (a CI timeout,
`timeout(1)`): either way the job is canceled on the server first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from reangle.cli.arg_types import finite_number, whole_number
from reangle.cli.model_switches import (
    check_model_switches,
    needs_schema,
    set_switches,
    switch_fields,
    thinking_fields,
)
from reangle.cli.option_names import OptionNames, edit_options, generate_options, orbit_options
from reangle.cli.pose_args import given_axes, pose_from_args
from reangle.cli.prompt_args import add_prompt_flags, prompt_fields
from reangle.cli.remote_output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    CommandFailure,
    check_quality,
    format_for,
    input_file_problem,
    job_table,
    make_folder,
    note_older_views,
    note_unused_negative,
    numbered_paths,
    orbit_file_names,
    report,
    rewrite_note,
)
from reangle.client import (
    CAMERA_MODEL,
    APIConnectionError,
    Asset,
    AuthenticationError,
    Client,
    InvalidAPIKeyError,
    InvalidResponseError,
    InvalidServerURLError,
    Job,
    JobEvent,
    JobFailed,
    RateLimitError,
    ReangleAPIError,
    ReangleClientError,
    ServerError,
    TimeLimits,
    WaitTimeout,
)
from reangle.client._inputs import WEBHOOK_EVENTS, generate_input, submission_fields
from reangle.client._models import MAX_TIME_LIMIT_S
from reangle.core.camera import snap_azimuth, views_given_twice
from reangle.errors import InvalidInput

EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, as a shell reports a command that SIGTERM ended.
EXIT_TERMINATED = 143

#: How the commands get their client; tests swap in one over a fake transport.
client_factory: Callable[[str, str | None], Client] = Client

_ACCELERATIONS = ("none", "regular", "high")
_FORMATS = ("png", "jpeg", "webp")
_STATUSES = ("queued", "processing", "succeeded", "failed", "canceled")


class RemoteSettings(Protocol):
    """The part of Settings these commands read: REANGLE_SERVER and REANGLE_API_KEY."""

    @property
    def server(self) -> str | None: ...

    @property
    def api_key(self) -> str | None: ...


def add_remote_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register `reangle orbit` and `reangle jobs list|show|cancel`."""
    _add_orbit_command(commands)
    jobs = commands.add_parser("jobs", help="list, show or cancel jobs on a reangle server")
    actions = jobs.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="this key's jobs, newest first")
    listing.add_argument("--status", choices=_STATUSES)
    listing.add_argument(
        "--limit",
        type=whole_number(1, 100),
        metavar="N",
        help="at most N jobs, 1 to 100 (default: the server's page)",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.set_defaults(run=run_jobs_list)

    show = actions.add_parser("show", help="print a job as JSON")
    show.add_argument("job_id", metavar="ID")
    show.set_defaults(run=run_jobs_show)

    cancel = actions.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")
    cancel.set_defaults(run=run_jobs_cancel)
    for parser in (listing, show, cancel):
        add_connection_flags(parser, submits_jobs=False)


def add_connection_flags(parser: argparse.ArgumentParser, *, submits_jobs: bool = True) -> None:
    """--server and --api-key; for a command that submits a job (edit, generate, orbit), also the job's
    webhook and time limits, which only a server takes."""
    parser.add_argument("--server", metavar="URL", help="the reangle server (default: REANGLE_SERVER)")
    parser.add_argument("--api-key", metavar="KEY", help="its API key (default: REANGLE_API_KEY)")
    if submits_jobs:
        _add_submission_flags(parser)


def _add_submission_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--webhook-url",
        type=webhook_url,
        metavar="URL",
        help="on a server: POST the job to this http(s) URL when it ends (signed; see docs/webhooks.md)",
    )
    parser.add_argument(
        "--webhook-event",
        dest="webhook_events",
        action="append",
        choices=WEBHOOK_EVENTS,
        metavar="EVENT",
        help="what calls --webhook-url: completed (the default) or progress (every status change and "
        "progress); repeatable",
    )
    parser.add_argument(
        "--run-timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help="on a server: fail the job (timed_out) if a run of it takes longer",
    )
    parser.add_argument(
        "--total-timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help="on a server: fail the job (timed_out) if it is not done this long after its submission, "
        "queue included",
    )


def _add_orbit_command(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "orbit",
        help="views of an image from several azimuths, a turntable and a contact sheet (on a server)",
        description="Re-photograph one image from several azimuths on a reangle server. -o DIR gets one "
        "view-<azimuth> file per view, turntable.webp and contact-sheet.png.",
    )
    parser.add_argument(
        "input", metavar="INPUT", help="an image file, an http(s) URL the server can read, or an asset id"
    )
    parser.add_argument(
        "--azimuths",
        type=_degrees_list,
        metavar="A,B,...",
        help="degrees, each snapped to the nearest 45 (0, 45, ..., 315; 22.5 goes to 45), a view each "
        "(default: 0,45,...,315)",
    )
    parser.add_argument(
        "--elevation",
        type=finite_number,
        metavar="E",
        help="degrees, snapped to -30, 0, 30, 60 (default: the model's, 0)",
    )
    parser.add_argument(
        "--distance",
        type=finite_number,
        metavar="D",
        help="factor, snapped to 0.6, 1.0, 1.8 (default: the model's, 1.0)",
    )
    parser.add_argument("--prompt", default="", help="your own instruction, after the camera phrase")
    parser.add_argument("--model", default=CAMERA_MODEL, help=f"server model id (default: {CAMERA_MODEL})")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps (default from --acceleration)"
    )
    parser.add_argument("--guidance", type=finite_number, metavar="F", help="true CFG scale")
    parser.add_argument("--lora-scale", type=finite_number, metavar="F", help="angle LoRA weight (0..4)")
    parser.add_argument("--acceleration", choices=_ACCELERATIONS, help="default: the server's (high)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--aspect-ratio", metavar="R", help="e.g. 1:1, 16:9, match_input")
    parser.add_argument("--format", choices=_FORMATS, help="format of the views (default: the model's, png)")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality 1..100")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="folder for the files"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_prompt_flags(parser)
    add_connection_flags(parser)
    parser.set_defaults(run=run_orbit)


# the commands


def run_remote_edit(args: argparse.Namespace, settings: RemoteSettings) -> int:
    """`reangle edit ... --server URL`: the local edit's flags, run on a server."""
    try:
        fields = _remote_edit_fields(args)
        submission = _submission_args(args)
        inputs = [_image_arg(value) for value in args.inputs]
    except (CommandFailure, InvalidInput) as exc:
        return _fail(_with_hint(exc))
    model = args.model or CAMERA_MODEL
    if args.dry_run:
        images = [str(value) for value in args.inputs]
        body = {"model": model, "kind": "edit", "input": {"images": images, **fields}}
        print(json.dumps(body | submission_fields(**submission)))
        return 0

    def edit(client: Client) -> int:
        images = [_uploaded(client, image) for image in inputs]
        with _refusal_checked(client, model, "edit"):
            job = client.edit(images, model=model, wait=False, **fields, **submission)
        job = _wait(client, job, "editing")
        _save_numbered(client, args, job)
        return 0

    return _with_client(args, settings, edit, edit_options(args))


def run_remote_generate(args: argparse.Namespace, settings: RemoteSettings) -> int:
    """`reangle generate PROMPT ... --server URL`: images from a prompt (or, with `--image`, from reference
    images for a model that takes them) on a server."""
    try:
        fields = _remote_generate_fields(args)
        submission = _submission_args(args)
        images = [_image_arg(value) for value in args.images]
    except (CommandFailure, InvalidInput) as exc:
        return _fail(_with_hint(exc))

    def generate(client: Client) -> int:
        # only flags whose field name depends on the model ask the server for its schema
        schema = client.input_schema(args.model) if needs_schema(args) else {}
        check_model_switches(args, args.model, schema)
        if args.dry_run:
            options = {name: value for name, value in fields.items() if name not in _GENERATE_KEYWORDS}
            body = generate_input(
                args.prompt,
                images=[str(image) for image in images] or None,
                size=fields.get("size"),
                num_outputs=fields.get("num_outputs"),
                seed=fields.get("seed"),
                negative_prompt=fields.get("negative_prompt"),
                set_fields=switch_fields(args, args.model, schema),
                options=options,
            )
            request = {"model": args.model, "kind": "edit", "input": body}
            print(json.dumps(request | submission_fields(**submission)))
            return 0
        options = fields | set_switches(args) | thinking_fields(args, schema)
        refs = [_uploaded(client, image) for image in images]
        with _refusal_checked(client, args.model, "generate"):
            job = client.generate(
                args.prompt, model=args.model, images=refs or None, wait=False, **options, **submission
            )
        job = _wait(client, job, "generating")
        note_unused_negative(args.negative, [asset.plan for asset in job.assets])
        _save_numbered(client, args, job)
        return 0

    return _with_client(args, settings, generate, generate_options(args))


def run_orbit(args: argparse.Namespace, settings: RemoteSettings) -> int:
    try:
        image = _image_arg(args.input)
        submission = _submission_args(args)
        check_quality(args.quality)
        created = not args.output.exists()
        make_folder(args.output)
    except CommandFailure as exc:
        return _fail(exc.message)
    options = {
        "seed": args.seed,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "lora_scale": args.lora_scale,
        "acceleration": args.acceleration,
        "width": args.width,
        "height": args.height,
        "aspect_ratio": args.aspect_ratio,
        "output_format": args.format,
        "quality": args.quality,
        **prompt_fields(args),
    }

    def orbit(client: Client) -> int:
        job = client.orbit(
            _uploaded(client, image),
            azimuths=args.azimuths,
            elevation=args.elevation,
            distance=args.distance,
            prompt=args.prompt,
            model=args.model,
            wait=False,
            **options,
            **submission,
        )
        job = _wait(client, job, "orbit")
        files = [(args.output / name, asset) for name, asset in orbit_file_names(job.assets)]
        for path, asset in files:
            _download(client, job, asset, path)
        note_older_views(args.output, [path for path, _asset in files])
        _note_rewrite(job)
        report(args, job, files)
        return 0

    code = _with_client(args, settings, orbit, orbit_options(args))
    if code != 0 and created:  # a refused or failed orbit leaves no empty folder behind
        with contextlib.suppress(OSError):
            args.output.rmdir()
    return code


def refuse_submission_flags(args: argparse.Namespace) -> None:
    """In process there is no job to call back or to time out: the webhook and time-limit flags are refused
    rather than ignored."""
    given = {
        "--webhook-url": args.webhook_url,
        "--webhook-event": args.webhook_events,
        "--run-timeout": args.run_timeout,
        "--total-timeout": args.total_timeout,
    }
    for flag, value in given.items():
        if value is not None:
            raise InvalidInput(f"{flag} is for a job on a server: give --server URL (or drop {flag})")


def webhook_url(text: str) -> str:
    """--webhook-url: an http(s) URL (the server checks the rest: that it is public, not too long)."""
    if not text.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def timeout_seconds(text: str) -> float:
    """--run-timeout, --total-timeout: seconds, more than 0 and at most a week (what the server takes)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIME_LIMIT_S):
        raise argparse.ArgumentTypeError(
            f"{text} is out of range: give more than 0 and at most {MAX_TIME_LIMIT_S}"
        )
    return seconds


def run_jobs_list(args: argparse.Namespace, settings: RemoteSettings) -> int:
    def listing(client: Client) -> int:
        jobs = client.list(status=args.status, limit=args.limit).data
        if args.json:  # one object per line, as `reangle admin jobs` and `reangle keys list` print theirs
            for job in jobs:
                print(json.dumps(job.model_dump(mode="json")))
        elif not jobs:
            print(f"no {args.status} jobs" if args.status else "no jobs")
        else:
            print(job_table(jobs))
        return 0

    return _with_client(args, settings, listing)


def run_jobs_show(args: argparse.Namespace, settings: RemoteSettings) -> int:
    if not args.job_id.strip():
        return _fail("give a job id (job_...), as `reangle jobs list` shows them")

    def show(client: Client) -> int:
        print(json.dumps(client.get(args.job_id).model_dump(mode="json"), indent=2))
        return 0

    return _with_client(args, settings, show)


def run_jobs_cancel(args: argparse.Namespace, settings: RemoteSettings) -> int:
    if not args.job_id.strip():
        return _fail("give a job id (job_...), as `reangle jobs list` shows them")

    def cancel(client: Client) -> int:
        job = client.cancel(args.job_id)
        print(json.dumps(job.model_dump(mode="json")) if args.json else _cancel_line(job))
        return 0

    return _with_client(args, settings, cancel)


def _save_numbered(client: Client, args: argparse.Namespace, job: Job) -> None:
    """Download the outputs to -o (numbered when several), say what the rewriter did, report."""
    paths = numbered_paths(args.output, len(job.assets))
    for path, asset in zip(paths, job.assets, strict=True):
        _download(client, job, asset, path)
    _note_rewrite(job)
    report(args, job, list(zip(paths, job.assets, strict=True)))


def _cancel_line(job: Job) -> str:
    if job.status == "canceled":
        return f"{job.id} canceled"
    if job.status in ("queued", "processing"):
        return f"{job.id}: cancel requested; the job stops at its next step"
    return f"{job.id} had already {job.status}: nothing to cancel"


def _download(client: Client, job: Job, asset: Any, path: Path) -> None:
    """One output to `path`; a file that cannot be written ends the command naming the job, whose outputs
    stay on the server."""
    try:
        client.download(asset, path)
    except OSError as exc:
        raise CommandFailure(
            f"cannot write {path}: {exc.strerror or exc}; job {job.id} succeeded, its outputs stay on the "
            f"server (see `reangle jobs show {job.id}`)",
            EXIT_FAILED,
        ) from None


def _note_rewrite(job: Job) -> None:
    rewrite = job.rewrite
    if rewrite is not None:
        print(rewrite_note(rewrite.model_dump()), file=sys.stderr)


# talking to the server


def _with_client(
    args: argparse.Namespace,
    settings: RemoteSettings,
    command: Callable[[Client], int],
    names: OptionNames | None = None,
) -> int:
    """Run `command` with a client for the configured server; every SDK error becomes one line + exit code.
    With `names`, the input fields a refusal or a failed job names are given as the options that set them."""
    server = args.server or settings.server
    if not server:
        return _fail("no server: give --server URL or set REANGLE_SERVER")
    as_options = names.rewrite if names is not None else str
    api_key = args.api_key or settings.api_key
    try:
        with client_factory(server, api_key) as client:
            return command(client)
    except CommandFailure as exc:
        return _fail(exc.message, exc.exit_code)
    except InvalidInput as exc:
        return _fail(_with_hint(exc))
    except RateLimitError as exc:
        wait = "a moment" if exc.retry_after is None else f"{math.ceil(exc.retry_after)} s"
        return _fail(f"{exc.message} (retry in {wait})", EXIT_FAILED)
    except AuthenticationError as exc:
        if api_key:
            return _fail(f"{exc.message} (check --api-key or REANGLE_API_KEY)")
        return _fail("the server wants an API key: give --api-key or set REANGLE_API_KEY")
    except ReangleAPIError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        message = as_options(exc.message) if exc.status_code < 500 else exc.message
        return _fail(f"{message}{hint}", EXIT_BAD_INPUT if exc.status_code < 500 else EXIT_FAILED)
    except JobFailed as exc:
        return _fail(as_options(str(exc)), EXIT_FAILED)
    except InvalidServerURLError as exc:
        return _fail(f"{exc} (check --server or REANGLE_SERVER)")
    except InvalidAPIKeyError as exc:
        return _fail(f"{exc} (check --api-key or REANGLE_API_KEY)")
    except ReangleClientError as exc:  # a failed or canceled job, no connection, a broken answer
        return _fail(str(exc), EXIT_FAILED)
    except BrokenPipeError:  # stdout's reader stopped early: the CLI's main ends quietly
        raise
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_FAILED)
    except _Terminated:
        print("reangle: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("reangle: canceled", file=sys.stderr)
        return EXIT_INTERRUPTED


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that it cancels the job on the server too."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises `_Terminated` (which `_with_client` answers with exit 143) instead
    of ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminated(_signum: int, _frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _wait(client: Client, job: Job, desc: str) -> Job:
    """Wait for the job with a progress bar on stderr; Ctrl-C (or SIGTERM) cancels it on the server. Raises
    JobFailed or JobCanceled when it ended so."""
    from tqdm import tqdm

    # only while a job of ours runs: before and after, SIGTERM ends the process as usual (exit 143)
    with (
        _sigterm_as_interrupt(),
        tqdm(total=100, unit="%", desc=desc, file=sys.stderr, bar_format=_BAR) as bar,
    ):

        def on_progress(event: JobEvent) -> None:
            if isinstance(event, Job):
                bar.set_description_str(f"{desc} ({event.status})")
            elif event.step is not None and event.steps:
                bar.set_postfix_str(f"step {event.step}/{event.steps}", refresh=False)
            done = round(100 * min(max(event.progress, 0.0), 1.0))
            if done > bar.n:
                bar.update(done - bar.n)

        try:
            job = client.wait(job.id, on_progress=on_progress)
        except KeyboardInterrupt:
            bar.close()
            _cancel_after_interrupt(client, job.id)
            raise
        except (APIConnectionError, ServerError, InvalidResponseError, WaitTimeout) as exc:
            # the connection dropped, the server broke down: the job may go on
            bar.close()
            raise CommandFailure(
                f"{exc}; job {job.id} may still be running: check it later with `reangle jobs show {job.id}`",
                EXIT_FAILED,
            ) from None
    return job.raise_for_status()


_BAR = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"  # tqdm puts ", " before a postfix


def _cancel_after_interrupt(client: Client, job_id: str) -> None:
    still_running = (
        f"job {job_id} may still be running on the server: cancel it with `reangle jobs cancel {job_id}`"
    )
    try:
        with _interrupts_held(job_id):
            client.cancel(job_id)
    except KeyboardInterrupt:  # Ctrl-C pressed twice more, or SIGTERM, while the cancel was sent
        print(f"reangle: stopped waiting for the cancel; {still_running}", file=sys.stderr)
    except ReangleClientError as exc:
        print(
            f"reangle: could not cancel job {job_id} on the server: {exc}; {still_running}", file=sys.stderr
        )
    else:
        print(f"reangle: job {job_id} canceled on the server", file=sys.stderr)


@contextlib.contextmanager
def _interrupts_held(job_id: str) -> Iterator[None]:
    """While the block sends the cancel, one more Ctrl-C (a double press) does not abort it: it only gets a
    note; the one after stops waiting, for a server that does not answer."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    pressed = 0

    def interrupted(_signum: int, _frame: object) -> None:
        nonlocal pressed
        pressed += 1
        if pressed > 1:
            raise KeyboardInterrupt
        print(
            f"reangle: canceling job {job_id} on the server; press Ctrl-C again to stop waiting for that",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


# inputs and outputs


def _remote_edit_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The edit flags as SDK `edit` arguments; raises CommandFailure or InvalidInput for bad flags."""
    pose, instruction = pose_from_args(args)
    check_quality(args.quality)
    fmt = format_for(args.output, args.format, required=not args.dry_run)
    fields: dict[str, Any] = {
        "prompt": " ".join(part for part in (instruction, args.prompt.strip()) if part),
        "seed": args.seed,
        "num_outputs": args.num_outputs,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "lora_scale": args.lora_scale,
        "acceleration": args.acceleration,
        "width": args.width,
        "height": args.height,
        "aspect_ratio": args.aspect_ratio,
        "output_format": fmt,
        "quality": None if fmt == "png" else args.quality,
        **prompt_fields(args),
        **given_axes(args, pose),
    }
    return {name: value for name, value in fields.items() if value is not None and value != ""}


#: The keywords of `Client.generate` that are not input fields passed through as they are.
_GENERATE_KEYWORDS = ("size", "num_outputs", "seed", "negative_prompt")


def _remote_generate_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The generate flags as SDK `generate` keywords (beside the prompt, model and images), but for those
    whose field the model's schema names (`model_switches`)."""
    check_quality(args.quality)
    fmt = format_for(args.output, args.format, required=not args.dry_run)
    fields: dict[str, Any] = {
        "size": args.size,
        "num_outputs": args.num_outputs,
        "seed": args.seed,
        "negative_prompt": args.negative,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "acceleration": args.acceleration,
        "width": args.width,
        "height": args.height,
        "aspect_ratio": args.aspect_ratio,
        "output_format": fmt,
        "quality": None if fmt == "png" else args.quality,
        **prompt_fields(args),
    }
    return {name: value for name, value in fields.items() if value is not None}


def _submission_args(args: argparse.Namespace) -> dict[str, Any]:
    """The webhook and time-limit flags as SDK keywords (`webhook_url`, `webhook_events`, `time_limits`; None
    when not given); CommandFailure for --webhook-event without --webhook-url."""
    if args.webhook_events and args.webhook_url is None:
        raise CommandFailure("--webhook-event needs --webhook-url: the URL to send the events to")
    return {
        "webhook_url": args.webhook_url,
        "webhook_events": args.webhook_events,
        "time_limits": TimeLimits(run_s=args.run_timeout, total_s=args.total_timeout),
    }


def _image_arg(value: str) -> str | Path:
    """An input image as given: an http(s) URL or an asset id the server reads, else a local file."""
    if value.startswith(("http://", "https://")):
        return value
    path = Path(value)
    if value.startswith("asset_") and "/" not in value and not path.exists():
        return value
    problem = input_file_problem(path)
    if problem is not None:
        raise CommandFailure(problem)
    return path


#: The tasks of the models that only the other command runs: `reangle generate` makes images from a prompt,
#: `reangle edit` edits images (a model that does both takes either command).
_OTHER_COMMAND_TASKS = {
    "edit": ("generate", ("text_to_image",), "makes images from a prompt"),
    "generate": ("edit", ("camera_edit", "instruction_edit"), "edits images"),
}


@contextlib.contextmanager
def _refusal_checked(client: Client, model: str, command: str) -> Iterator[None]:
    """When the server refuses the job, and its model is one the other command runs (by the task the server
    gives it), say which command to use rather than which field the model missed (`--prompt: field
    required`). Asked only after a refusal: a model the server does not describe keeps the server's answer."""
    try:
        yield
    except ReangleAPIError as exc:
        if exc.status_code not in (400, 422):
            raise
        try:
            task = (client.get_model(model).model_extra or {}).get("task")
        except ReangleClientError:
            raise exc from None
        other, tasks, what = _OTHER_COMMAND_TASKS[command]
        if task not in tasks:
            raise
        raise CommandFailure(f"--model: {model} {what} ({task}); use `reangle {other}` for it") from None


def _uploaded(client: Client, image: str | Path) -> Asset | str:
    """A local file uploaded (a refusal names the file, as a local edit does); URLs and ids as they are."""
    if isinstance(image, str):
        return image
    try:
        return client.upload(image)
    except OSError as exc:  # it changed since it was checked
        raise CommandFailure(f"cannot read {image}: {exc.strerror or exc}") from None
    except ReangleAPIError as exc:
        if exc.status_code not in (400, 413, 415, 422):
            raise
        message = exc.message
        named = f"{image} {message[5:]}" if message.startswith("file ") else f"{image}: {message}"
        raise CommandFailure(named + (f" ({exc.hint})" if exc.hint else "")) from None


def _with_hint(exc: CommandFailure | InvalidInput) -> str:
    return exc.with_hint() if isinstance(exc, InvalidInput) else exc.message


def _degrees_list(value: str) -> list[float]:
    """--azimuths: degrees, each a view of its own once snapped to the nearest 45 degrees."""
    parts = [part.strip() for part in value.split(",")]
    if "" in parts:
        raise argparse.ArgumentTypeError(
            f"an empty entry in {value!r}: give degrees between commas, e.g. 0,90"
        )
    degrees = []
    for part in parts:
        try:
            snap_azimuth(float(part))
        except (ValueError, InvalidInput):
            raise argparse.ArgumentTypeError(
                f"{part!r} in {value!r} is not a finite number of degrees"
            ) from None
        degrees.append(float(part))
    same = views_given_twice(degrees)
    if same:
        raise argparse.ArgumentTypeError(f"{'; '.join(same)} (azimuths snap to the nearest 45 degrees)")
    return degrees


def _fail(message: str, exit_code: int = EXIT_BAD_INPUT) -> int:
    print(f"reangle: error: {' '.join(message.split())}", file=sys.stderr)
    return exit_code
