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

from reangle.cli.option_names import edit_options
from reangle.cli.pose_args import add_pose_flags, pose_from_args
from reangle.cli.prompt_args import add_prompt_flags
from reangle.cli.remote import add_connection_flags
from reangle.cli.remote_output import rewrite_note
from reangle.core.edit import ACCELERATIONS, ASPECT_RATIOS, MATCH_INPUT, Acceleration, EditPlan, EditRequest
from reangle.core.images import OUTPUT_FORMATS, OutputFormat, encode_image, read_image_file
from reangle.engine.base import ENGINE_NAMES, Engine, create_engine, plan_for
from reangle.errors import InvalidInput
from reangle.settings import Settings

_SUFFIX_FORMATS: dict[str, OutputFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_edit_command(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "edit", help="edit images, in process or on a server (--server, REANGLE_SERVER)", description=__doc__
    )
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="1 to 3 images; the last sets the aspect"
    )
    add_pose_flags(parser)
    parser.add_argument("--prompt", default="", help="your own instruction, after the camera phrase")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="qwen", help="default: qwen")
    parser.add_argument(
        "--model", metavar="PATH_OR_ID", help="base pipeline (default: REANGLE_MODEL or the hub)"
    )
    parser.add_argument("--seed", type=int, help="random when not given; output k uses seed + k")
    parser.add_argument("--num-outputs", type=int, default=1, metavar="N", help="1..4")
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps (default from --acceleration)"
    )
    parser.add_argument(
        "--guidance", type=float, metavar="F", help="true CFG scale; above 1 doubles the cost"
    )
    parser.add_argument("--lora-scale", type=float, default=1.0, metavar="F", help="angle LoRA weight (0..4)")
    parser.add_argument(
        "--acceleration", choices=ACCELERATIONS, default="high", help="none | regular (8) | high (4)"
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--aspect-ratio", choices=[*ASPECT_RATIOS, MATCH_INPUT])
    parser.add_argument("--format", choices=OUTPUT_FORMATS, help="default: from the -o suffix")
    parser.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality 1..100")
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
    if (args.server or settings.server) and not args.local:
        from reangle.cli.remote import run_remote_edit

        return run_remote_edit(args, settings)
    from reangle.cli.local_extras import local_extras, request_lora_refs, shown_extras

    request = _request_from_args(args)
    refs = request_lora_refs(args.loras)
    # a dry run checks -o too when given, so it fails exactly where the real run would
    fmt = output_format(args.output, args.format) if args.output or not args.dry_run else "png"
    images = [read_image_file(path).image for path in args.inputs]
    if args.model:
        settings = settings.model_copy(update={"model": args.model})
    engine = create_engine(args.engine, settings)
    plan = _planned(args, engine, request, images)
    if args.dry_run:
        shown = {"engine": engine.info.name, **plan.to_dict(), **shown_extras(bool(args.rewrite), refs)}
        print(json.dumps(shown, indent=None if args.json else 2))
        return 0
    if engine.info.demo:
        print(
            f"reangle: {engine.info.name} engine: images come from a random-weight demo model",
            file=sys.stderr,
        )
    print(f"reangle: loading the {engine.info.name} engine ...", file=sys.stderr)
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
        path.write_bytes(encode_image(image, fmt, args.quality))
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
    check_local_quality(args.quality)
    return EditRequest(
        prompt=" ".join(part for part in (instruction, args.prompt.strip()) if part),
        pose=pose,
        lora_scale=args.lora_scale,
        num_outputs=args.num_outputs,
        steps=args.steps,
        guidance_scale=args.guidance,
        acceleration=cast(Acceleration, args.acceleration),
        seed=args.seed,
        width=args.width,
        height=args.height,
        aspect_ratio=args.aspect_ratio,
    )


def check_local_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise InvalidInput(f"--quality must be between 1 and 100, got {quality}", field="quality")


def output_format(output: Path | None, explicit: str | None) -> OutputFormat:
    if output is None:
        raise InvalidInput("give the output file with -o/--output", field="output")
    if not output.parent.is_dir():
        raise InvalidInput(f"output folder does not exist: {output.parent}", field="output")
    if explicit:
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
