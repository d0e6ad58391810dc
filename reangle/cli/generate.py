"""`reangle generate PROMPT -o out.png`: images from a prompt (text-to-image, Qwen-Image), in process or on a
server when one is given (--server or REANGLE_SERVER), with a progress bar. On a server, `--model
wan-2.7-image` runs Wan 2.7 through the server's DashScope key, with up to 9 reference images (--image)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reangle.cli.arg_types import finite_number
from reangle.cli.edit import (
    announce_load,
    check_local_quality,
    output_format,
    output_paths,
    runs_on_server,
    write_output,
)
from reangle.cli.model_switches import check_model_switches, check_set_flags, switch_fields
from reangle.cli.option_names import generate_options
from reangle.cli.prompt_args import add_prompt_flags
from reangle.cli.remote import add_connection_flags, refuse_submission_flags
from reangle.cli.remote_output import note_unused_negative, rewrite_note
from reangle.client import TEXT_TO_IMAGE_MODEL
from reangle.core.edit import ACCELERATIONS, ASPECT_RATIOS
from reangle.core.images import OUTPUT_FORMATS, OutputFormat, encode_image
from reangle.engine.base import ENGINE_NAMES
from reangle.errors import EngineError, InvalidInput
from reangle.settings import Settings

if TYPE_CHECKING:
    from reangle.core.models import ModelSpec, TextToImageInput


def add_generate_command(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "generate",
        help="images from a prompt, in process or on a server (--server, REANGLE_SERVER)",
        description=__doc__,
    )
    parser.add_argument("prompt", metavar="PROMPT", help="what to generate")
    parser.add_argument(
        "--model",
        default=TEXT_TO_IMAGE_MODEL,
        metavar="ID",
        help=f"model id (default: {TEXT_TO_IMAGE_MODEL}; on a server also wan-2.7-image)",
    )
    parser.add_argument("--size", metavar="SIZE", help="1K, 2K or WxH (default: 1 MP at --aspect-ratio)")
    parser.add_argument(
        "-n",
        "--num-outputs",
        type=int,
        metavar="N",
        help="1..4 (default 1); with --set, the set's size (with --set-prompt: their count, or leave it out)",
    )
    parser.add_argument("--seed", type=int, help="random when not given; output k uses seed + k")
    parser.add_argument(
        "--negative", metavar="TEXT", help="what to avoid (only with true CFG: --guidance above 1)"
    )
    parser.add_argument(
        "--set",
        "--image-set",
        dest="image_set",
        action=argparse.BooleanOptionalAction,
        help="a coherent set of one subject (one seed, a shot each) instead of independent images "
        "(default: the model's; --no-set turns a default set off)",
    )
    parser.add_argument(
        "--set-prompt",
        dest="set_prompts",
        action="append",
        default=[],
        metavar="TEXT",
        help="what one image of the set adds to the prompt (repeatable, one image each; implies --set)",
    )
    parser.add_argument(
        "--image",
        dest="images",
        action="append",
        default=[],
        metavar="FILE_OR_URL",
        help="a reference image, for models that take them (wan-2.7-image, up to 9; on a server)",
    )
    parser.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        help="for models with a thinking input (wan-2.7-image): plan the image first, or not (default: "
        "the model's)",
    )
    parser.add_argument(
        "--steps", type=int, metavar="N", help="denoising steps (default from --acceleration)"
    )
    parser.add_argument(
        "--guidance", type=finite_number, metavar="F", help="true CFG scale; above 1 doubles the cost"
    )
    parser.add_argument(
        "--acceleration", choices=ACCELERATIONS, help="none | regular (8) | high (4, default)"
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--aspect-ratio", choices=ASPECT_RATIOS)
    parser.add_argument("--format", choices=OUTPUT_FORMATS, help="default: from the -o suffix")
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality 1..100 (default 90)")
    parser.add_argument("-o", "--output", type=Path, help="out.png; several outputs: out-0.png ...")
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        help="in process (default: qwen); giving it generates in process even when REANGLE_SERVER is set",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plans; load no model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_prompt_flags(parser)
    add_connection_flags(parser)
    parser.add_argument(
        "--local", action="store_true", help="generate in this process even when REANGLE_SERVER is set"
    )
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    check_set_flags(args)
    if runs_on_server(args, settings):
        from reangle.cli.remote import run_remote_generate

        return run_remote_generate(args, settings)
    refuse_submission_flags(args)
    return _run_local(args, settings)


def _run_local(args: argparse.Namespace, settings: Settings) -> int:
    from reangle.cli.local_extras import (
        check_lora_fit,
        local_extras,
        model_lora_refs,
        request_lora_refs,
        shown_extras,
    )
    from reangle.core.models import rendered as rendered_prompt
    from reangle.engine.base import create_engine, plan_generation_for, random_seed
    from reangle.runtime.job_prep import fitting

    if args.images:
        raise InvalidInput(
            "--image: models that take reference images (wan-2.7-image) run on a server; give --server URL",
            field="images",
        )
    quality = 90 if args.quality is None else args.quality
    check_local_quality(quality)
    spec = _local_model(args.model, settings)
    validated = _validated_input(spec, args)
    refs = [*model_lora_refs(spec.entry, settings), *request_lora_refs(args.loras, settings.loras)]
    fmt: OutputFormat = output_format(args.output, args.format) if args.output or not args.dry_run else "png"
    engine = create_engine(args.engine or "qwen", settings)
    if not engine.info.can_generate:
        raise EngineError(
            f"the {engine.info.name} engine runs no text-to-image model",
            hint="set REANGLE_TEXT_TO_IMAGE_MODEL to a Qwen-Image hub id or folder",
        )
    rendered = validated.model_copy(update={"prompt": rendered_prompt(spec, validated)})
    # checked before anything loads; a dry run shows the seed as given (None: each run draws one)
    try:
        planned = [
            plan_generation_for(engine, replace(request, seed=validated.seed))
            for request in rendered.generate_requests(0)
        ]
    except InvalidInput as exc:
        raise InvalidInput(generate_options(args).rewrite(exc.message), field=exc.field) from None
    note_unused_negative(args.negative, [plan.to_dict() for plan in planned])
    check_lora_fit(engine, refs, text_to_image=True, strict=settings.lora_strict)
    if args.dry_run:
        shown = {"engine": engine.info.name, "model": spec.id, "plans": [plan.to_dict() for plan in planned]}
        print(
            json.dumps(shown | shown_extras(validated.rewrite_prompt, refs), indent=None if args.json else 2)
        )
        return 0
    announce_load(engine, settings)
    engine.load()
    from tqdm import tqdm

    extras = local_extras(
        settings,
        engine,
        words=validated.prompt,
        images=[],
        rewrite=validated.rewrite_prompt,
        refs=refs,
        text_to_image=True,
    )
    with extras as extra:
        words = validated.prompt
        rewrite = None if extra.rewrite is None else fitting(extra.rewrite, spec, validated)
        if rewrite is not None:
            print(rewrite_note(rewrite.to_dict()), file=sys.stderr)
            words = rewrite.prompt
        final = validated.model_copy(update={"prompt": rendered_prompt(spec, validated, words)})
        requests = [
            replace(request, extra_loras=extra.loras) for request in final.generate_requests(random_seed())
        ]
        plans = [plan_generation_for(engine, request) for request in requests]
        total = sum(plan.steps * plan.num_outputs for plan in plans)
        with tqdm(total=total, unit="step", desc="generating", file=sys.stderr) as bar:
            results = engine.generate(plans, on_step=lambda done, _total: bar.update(done - bar.n))
    made = [
        (plan, result.seed + k, image)
        for plan, result in zip(plans, results, strict=True)
        for k, image in enumerate(result.images)
    ]
    paths = output_paths(args.output, len(made))
    for path, (_plan, _seed, image) in zip(paths, made, strict=True):
        write_output(path, encode_image(image, fmt, quality))
    if args.json:
        outputs = [
            {
                "path": str(path),
                "width": image.width,
                "height": image.height,
                "seed": seed,
                "prompt": plan.prompt,
            }
            for path, (plan, seed, image) in zip(paths, made, strict=True)
        ]
        report: dict[str, Any] = {"engine": engine.info.name, "model": spec.id, "steps": plans[0].steps}
        report |= {"loras": plans[0].to_dict()["loras"]} if refs else {}
        report |= {"rewrite": rewrite.to_dict()} if rewrite is not None else {}
        timings = [result.timings for result in results]
        print(json.dumps(report | {"outputs": outputs, "timings": timings}))
    else:
        print("\n".join(map(str, paths)))
    return 0


def _local_model(model_id: str, settings: Settings) -> ModelSpec:
    """The catalog's text-to-image model `model_id` (the shipped catalog and REANGLE_CATALOG_FILE), which
    must run on a local engine."""
    from reangle.catalog import availability, entry_inputs, load_catalog
    from reangle.core.models import TASK_INPUTS, ModelSpec

    catalog = load_catalog(settings.catalog_file, inputs=TASK_INPUTS)
    entry = catalog.get(model_id)
    if entry is None:
        known = ", ".join(e.id for e in catalog if e.task == "text_to_image")
        raise InvalidInput(
            f"--model: unknown model {model_id!r}; text-to-image models: {known}", field="model"
        )
    if entry.remote:
        raise InvalidInput(
            f"--model: {model_id} runs through a vendor's API on a reangle server; give --server URL "
            "(or set REANGLE_SERVER)",
            field="model",
        )
    if entry.task != "text_to_image":
        raise InvalidInput(
            f"--model: {model_id} edits images ({entry.task}); use `reangle edit` for it", field="model"
        )
    unavailable = availability(entry, settings.model_dump())
    if unavailable:
        raise InvalidInput(f"--model: {model_id} cannot run here: {unavailable}", field="model")
    return ModelSpec(entry=entry, inputs=entry_inputs(entry, TASK_INPUTS[entry.task]))


def _validated_input(spec: ModelSpec, args: argparse.Namespace) -> TextToImageInput:
    """The flags as the model's input, checked as a server checks it (with the catalog entry's defaults)."""
    from reangle.core.jobs import JobKind
    from reangle.core.models import TextToImageInput

    given = {
        "prompt": args.prompt,
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
        "rewrite_prompt": args.rewrite,
        "loras": [lora.to_json() for lora in args.loras] or None,
    }
    schema = spec.input_schema(JobKind.EDIT)
    check_model_switches(args, spec.id, schema)
    given |= switch_fields(args, spec.id, schema)
    try:
        validated = spec.validate(JobKind.EDIT, {k: v for k, v in given.items() if v is not None})
    except InvalidInput as exc:
        raise InvalidInput(generate_options(args).rewrite(exc.message), field=exc.field) from None
    assert isinstance(validated, TextToImageInput)
    return validated
