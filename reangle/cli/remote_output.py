"""What the remote commands write: output paths and formats, the files of an orbit, the report and the job
table. Problems are `CommandFailure`s: one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reangle.client import Job, OutputAsset

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_FORMAT_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP"}
_MIME_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
_ROLE_STEMS = {"turntable": "turntable", "contact_sheet": "contact-sheet"}


class CommandFailure(Exception):
    """Ends a command with one line on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def format_for(output: Path | None, explicit: str | None, *, required: bool) -> str:
    if output is None:
        if required:
            raise CommandFailure("give the output file with -o/--output")
        return explicit or "png"
    problem = output_file_problem(output)
    if problem is not None:
        raise CommandFailure(problem)
    if explicit:
        clash = format_clash(output, explicit)
        if clash is not None:
            raise CommandFailure(clash)
        return explicit
    if output.suffix.lower() not in _SUFFIX_FORMATS:
        raise CommandFailure(
            f"cannot tell the image format from {output.name!r}; use a .png, .jpg or .webp name or --format"
        )
    return _SUFFIX_FORMATS[output.suffix.lower()]


def format_clash(output: Path, explicit: str) -> str | None:
    """Why -o `output` and --format `explicit` contradict each other (a .png, .jpg, .jpeg or .webp name for
    another format's bytes); None when they agree or the name tells no format."""
    named = _SUFFIX_FORMATS.get(output.suffix.lower())
    if named is None or named == explicit:
        return None
    fitting = output.with_suffix(_FORMAT_SUFFIXES[explicit])
    return (
        f"-o {output} is a {_FORMAT_NAMES[named]} name but --format {explicit} writes "
        f"{_FORMAT_NAMES[explicit]}: name it {fitting} or leave out --format"
    )


def output_file_problem(output: Path) -> str | None:
    """Why the outputs cannot be written to -o `output` (checked before anything runs): it is a folder, or
    its folder is missing or not writable; None when it looks writable."""
    if output.is_dir():
        return f"-o {output} is a folder; give a file name in it, such as {output / 'out.png'}"
    if output.parent.exists() and not output.parent.is_dir():
        return f"-o {output}: {output.parent} is a file, not a folder"
    if not output.parent.is_dir():
        return f"output folder does not exist: {output.parent}"
    if not os.access(output.parent, os.W_OK | os.X_OK):
        return f"cannot write to the output folder {output.parent}"
    return None


def input_file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input image (checked before anything runs): it is missing, a folder,
    not a regular file (a named pipe would block the read, a device is no image) or unreadable; None when
    it can be read."""
    try:
        if path.is_dir():
            return f"{path} is a folder, not an image file"
        if not stat.S_ISREG(path.stat().st_mode):
            return f"{path} is not a regular file (a pipe or a device); give an image file"
        with path.open("rb") as file:
            file.read(1)
    except FileNotFoundError:
        return f"input file not found: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def note_unused_negative(negative: str | None, plans: Sequence[Mapping[str, Any] | None]) -> None:
    """Say on stderr when a --negative the user gave was left out of what the model ran: a local model's
    plans (those with a true CFG scale) carry no negative prompt without true CFG."""
    local = [plan for plan in plans if plan is not None and "true_cfg_scale" in plan]
    if negative and local and all(plan.get("negative_prompt") is None for plan in local):
        print(
            "reangle: note: --negative was left out: it is used only with true CFG (--guidance above 1, "
            "or --acceleration none)",
            file=sys.stderr,
        )


def check_quality(quality: int | None) -> None:
    if quality is not None and not 1 <= quality <= 100:
        raise CommandFailure(f"--quality must be between 1 and 100, got {quality}")


def make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise CommandFailure(f"-o must be a folder for orbit, and {folder} is a file")
    blocking = next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise CommandFailure(f"-o {folder}: {blocking} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandFailure(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandFailure(f"cannot write to the output folder {folder}")


def numbered_paths(output: Path, count: int) -> list[Path]:
    """`out.png` for one output; `out-0.png`, `out-1.png`, ... for several (as the local edit writes them)."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(count)]


def orbit_file_names(assets: list[OutputAsset]) -> list[tuple[str, OutputAsset]]:
    """`view-000.png`, `view-045.png`, ... by azimuth, then `turntable.webp` and `contact-sheet.png`."""
    names: list[tuple[str, OutputAsset]] = []
    taken: set[str] = set()
    for k, asset in enumerate(assets):
        if asset.role == "view":
            stem = f"view-{azimuth_label(asset.pose.azimuth_deg)}" if asset.pose else f"view-{k}"
        else:
            stem = _ROLE_STEMS.get(asset.role, asset.role.replace("_", "-"))
        suffix = _MIME_SUFFIXES.get(asset.mime_type, ".bin")
        name, n = f"{stem}{suffix}", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name)
        names.append((name, asset))
    return names


def note_older_views(folder: Path, written: Sequence[Path]) -> None:
    """Say on stderr which view files in `folder` an earlier orbit left there (this run wrote `written`):
    they are not removed, but they are not this orbit's."""
    ours = {path.name for path in written}
    older = sorted(path.name for path in folder.glob("view-*") if path.is_file() and path.name not in ours)
    if older:
        shown = ", ".join(older[:4]) + (", ..." if len(older) > 4 else "")
        print(
            f"reangle: note: {len(older)} view files in {folder} are from an earlier orbit, not this one "
            f"({shown})",
            file=sys.stderr,
        )


def azimuth_label(degrees: float) -> str:
    degrees %= 360
    return f"{int(degrees):03d}" if degrees == int(degrees) else f"{degrees:05.1f}"


def report(args: argparse.Namespace, job: Job, files: list[tuple[Path, OutputAsset]]) -> None:
    if not args.json:
        print("\n".join(str(path) for path, _ in files))
        return
    outputs = [
        {
            "path": str(path),
            "role": asset.role,
            "width": asset.width,
            "height": asset.height,
            "seed": asset.seed,
        }
        | ({"pose": asset.pose.model_dump()} if asset.pose else {})
        | ({"plan": asset.plan} if asset.plan else {})
        for path, asset in files
    ]
    summary = {
        "job": job.id,
        "model": job.model,
        "outputs": outputs,
        "timings": job.timings,
        "demo": job.demo,
    }
    print(json.dumps(summary))


def job_table(jobs: list[Job]) -> str:
    rows = [("ID", "STATUS", "MODEL", "PROGRESS", "CREATED")]
    rows += [
        (
            job.id,
            job.status,
            job.model,
            f"{round(job.progress * 100)}%",
            job.created_at.isoformat(timespec="seconds"),
        )
        for job in jobs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def rewrite_note(rewrite: Mapping[str, Any]) -> str:
    """One stderr line on what the rewriter made of the prompt (a job's record of it)."""
    if rewrite.get("rewritten"):
        return f"reangle: prompt rewritten: {rewrite.get('prompt')}"
    reason = rewrite.get("fallback_reason") or "not rewritten"
    detail = f": {rewrite['detail']}" if rewrite.get("detail") else ""
    return f"reangle: prompt kept as given ({reason}{detail})"
