"""`reangle edit`: run one edit in process, or on a server when one is given (--server or REANGLE_SERVER),
with a progress bar."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from PIL import Image

from reangle.cli.arg_types import finite_number
from reangle.cli.option_names import edit_options
from reangle.cli.pose_args import add_pose_flags, pose_from_args
from reangle.cli.prompt_args import add_prompt_flags
from reangle.cli.remote import add_connection_flags, refuse_submission_flags
from reangle.cli.remote_output import format_clash, input_file_problem, output_file_problem, rewrite_note
from reangle.client import CAMERA_MODEL
from reangle.core.edit import ACCELERATIONS, ASPECT_RATIOS, MATCH_INPUT, Acceleration, EditPlan, EditRequest
from reangle.core.images import OUTPUT_FORMATS, OutputFormat, encode_image, read_image_file
from reangle.engine.base import ENGINE_NAMES, Engine, create_engine, cuda_available, plan_for
from reangle.errors import EngineError, InvalidInput
from reangle.settings import Settings

_SUFFIX_FORMATS: dict[str, OutputFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_edit_command(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "edit", help="edit images, in process or on a server (--server, REANGLE_SERVER)", description=__doc__
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="1 to 3 images (files; with a server also http(s) URLs and asset ids); the last sets the aspect",
    )
    add_pose_flags(parser)
    parser.add_argument("--prompt", default="", help="your own instruction, after the camera phrase")
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        help="in process (default: qwen); giving it edits in process even when REANGLE_SERVER is set",
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        help="in process: the base pipeline, a hub id or folder (default: REANGLE_MODEL or the hub); on a "
        f"server: a model id of its catalog (default: {CAMERA_MODEL})",
    )
    parser.add_argument("--seed", type=int, help="random when not given; output k uses seed + k")
    parser.add_argument("--num-outputs", type=int, metavar="N", help="1..4 (default: 1, or the model's)")
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps (default from --acceleration)"
    )
    parser.add_argument(
        "--guidance", type=finite_number, metavar="F", help="true CFG scale; above 1 doubles the cost"
    )
    parser.add_argument(
        "--lora-scale",
        type=finite_number,
        metavar="F",
        help="angle LoRA weight (0..4; default: 1.0, or the model's)",
    )
    parser.add_argument(
        "--acceleration",
        choices=ACCELERATIONS,
        help="none | regular (8) | high (4; the default, or the model's)",
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--aspect-ratio", choices=[*ASPECT_RATIOS, MATCH_INPUT])
    parser.add_argument("--format", choices=OUTPUT_FORMATS, help="default: from the -o suffix")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality 1..100 (default: 90)")
    parser.add_argument("-o", "--output", type=Path, help="out.png; several outputs: out-0.png ...")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan; load no model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_prompt_flags(parser)
    add_connection_flags(parser)
    parser.add_argument(
        "--local", action="store_true", help="edit in this process even when REANGLE_SERVER is set"
    )
    parser.set_defaults(run=run_edit)


def run_edit(args: argparse.Namespace, settings: Settings) -> int:
    if runs_on_server(args, settings):
        from reangle.cli.remote import run_remote_edit

        return run_remote_edit(args, settings)
    refuse_submission_flags(args)
    from reangle.cli.local_extras import check_lora_fit, local_extras, request_lora_refs, shown_extras

    quality = 90 if args.quality is None else args.quality
    check_local_quality(quality)
    request = _request_from_args(args)
    refs = request_lora_refs(args.loras, settings.loras)
    # a dry run checks -o too when given, so it fails exactly where the real run would
    fmt = output_format(args.output, args.format) if args.output or not args.dry_run else "png"
    images = [read_image_file(_local_input(value)).image for value in args.inputs]
    if args.model:
        settings = settings.model_copy(update={"model": args.model})
    engine = create_engine(args.engine or "qwen", settings)
    plan = _planned(args, engine, request, images)
    check_lora_fit(engine, refs, text_to_image=False, strict=settings.lora_strict)
    if args.dry_run:
        shown = {"engine": engine.info.name, **plan.to_dict(), **shown_extras(bool(args.rewrite), refs)}
        print(json.dumps(shown, indent=None if args.json else 2))
        return 0
    announce_load(engine, settings)
    engine.load()
    from tqdm import tqdm

    extras = local_extras(
        settings,
        engine,
        words=request.prompt,
        images=images,
        rewrite=bool(args.rewrite),
        refs=refs,
        text_to_image=False,
    )
    with extras as extra:
        if extra.rewrite is not None:
            print(rewrite_note(extra.rewrite.to_dict()), file=sys.stderr)
            request = replace(request, prompt=extra.rewrite.prompt)
        plan = _planned(args, engine, replace(request, extra_loras=extra.loras), images)
        with tqdm(total=plan.steps, unit="step", desc="editing", file=sys.stderr) as bar:
            result = engine.edit(images, plan, on_step=lambda done, _total: bar.update(done - bar.n))
    paths = output_paths(args.output, len(result.images))
    for path, image in zip(paths, result.images, strict=True):
        write_output(path, encode_image(image, fmt, quality))
    if args.json:
        outputs = [
            {"path": str(path), "width": image.width, "height": image.height, "seed": result.seed + k}
            for k, (path, image) in enumerate(zip(paths, result.images, strict=True))
        ]
        report = {"engine": engine.info.name, "prompt": plan.prompt, "seed": result.seed, "steps": plan.steps}
        report |= {"loras": plan.to_dict()["loras"]} if refs else {}
        report |= {"rewrite": extra.rewrite.to_dict()} if extra.rewrite is not None else {}
        print(json.dumps(report | {"outputs": outputs, "timings": result.timings}))
    else:
        print("\n".join(map(str, paths)))
    return 0


def _planned(
    args: argparse.Namespace, engine: Engine, request: EditRequest, images: list[Image.Image]
) -> EditPlan:
    """The engine's plan; a refusal names the option that set the field (`--num-outputs`)."""
    try:
        return plan_for(engine, request, images)
    except InvalidInput as exc:
        raise exc.reworded(edit_options(args).rewrite(exc.message)) from None


def _request_from_args(args: argparse.Namespace) -> EditRequest:
    pose, instruction = pose_from_args(args)
    return EditRequest(
        prompt=" ".join(part for part in (instruction, args.prompt.strip()) if part),
        pose=pose,
        lora_scale=1.0 if args.lora_scale is None else args.lora_scale,
        num_outputs=1 if args.num_outputs is None else args.num_outputs,
        steps=args.steps,
        guidance_scale=args.guidance,
        acceleration=cast(Acceleration, args.acceleration or "high"),
        seed=args.seed,
        width=args.width,
        height=args.height,
        aspect_ratio=args.aspect_ratio,
    )


def check_local_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise InvalidInput(f"--quality must be between 1 and 100, got {quality}", field="quality")


def runs_on_server(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether the command goes to a server: one is given (--server, REANGLE_SERVER) and neither --local
    nor --engine asks for this process. --server and --engine together contradict each other."""
    if args.server and args.engine is not None and not args.local:
        raise InvalidInput(
            f"--engine {args.engine} runs in this process, --server on a server: give one of them",
            field="engine",
        )
    return bool(args.server or settings.server) and not args.local and args.engine is None


def announce_load(engine: Engine, settings: Settings) -> None:
    """Say on stderr which engine is loading (and what a demo engine's images are); refuse the real model on
    a machine without a CUDA GPU unless REANGLE_DEVICE asks for that: it would fetch about 58 GB of weights
    to run for hours."""
    if engine.info.name == "qwen" and settings.device == "auto" and not cuda_available():
        raise InvalidInput(
            "the qwen engine needs a CUDA GPU, and this machine has none",
            field="engine",
            hint="give --server URL to run it on a reangle server, --engine tiny to try the CLI with a demo "
            "model, or set REANGLE_DEVICE=cpu to run the real model on the CPU (very slow)",
        )
    if engine.info.demo:
        print(_demo_notice(engine.info.name), file=sys.stderr)
    print(f"reangle: loading the {engine.info.name} engine ...", file=sys.stderr)


def _demo_notice(engine: str) -> str:
    """What a demo engine's images are, said before it runs."""
    what = (
        "test pictures that show the requested pose and prompt (no model runs)"
        if engine == "fake"
        else "a random-weight demo model"
    )
    return f"reangle: {engine} engine: images come from {what}"


def _local_input(value: str) -> Path:
    if value.startswith(("http://", "https://")):
        raise InvalidInput(
            f"{value}: a URL input needs a server (give --server URL); in process give a file",
            field="images",
        )
    problem = input_file_problem(Path(value))
    if problem is not None:
        raise InvalidInput(problem, field="images")
    return Path(value)


def write_output(path: Path, content: bytes) -> None:
    """Write one output file; a failure is one line (an EngineError: the run itself went well)."""
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise EngineError(f"cannot write {path}: {exc.strerror or exc}") from None


def output_format(output: Path | None, explicit: str | None) -> OutputFormat:
    if output is None:
        raise InvalidInput("give the output file with -o/--output", field="output")
    problem = output_file_problem(output)  # before anything runs
    if problem is not None:
        raise InvalidInput(problem, field="output")
    if explicit:
        clash = format_clash(output, explicit)
        if clash is not None:
            raise InvalidInput(clash, field="output")
        return cast(OutputFormat, explicit)
    suffix = output.suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise InvalidInput(
            f"cannot tell the image format from {output.name!r}; use a .png, .jpg or .webp name or --format",
            field="output",
        )
    return _SUFFIX_FORMATS[suffix]


def output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(count)]
