"""What the caller hands the SDK, turned into what the API takes: uploads, image references, job inputs."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from reangle.client._models import Asset, OutputAsset

#: The Multiple-Angles camera model, and the plain instruction editor.
CAMERA_MODEL = "qwen-edit-multiangle-2511"
INSTRUCTION_MODEL = "qwen-image-edit-2511"

#: Something to upload: a local path, or the file's bytes.
FileInput: TypeAlias = str | os.PathLike[str] | bytes
#: An input image: a local path or bytes (uploaded first), an Asset, or a string the server reads as it is
#: (an asset id, a data URL, raw base64, or an http(s) URL).
ImageInput: TypeAlias = str | os.PathLike[str] | bytes | Asset | OutputAsset

_PASS_THROUGH_PREFIXES = ("http://", "https://", "data:")
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"GIF87a", "image/gif", ".gif"),
    (b"GIF89a", "image/gif", ".gif"),
)


def upload_file(file: FileInput) -> tuple[str, bytes, str]:
    """(file name, content, MIME type) for a multipart upload; a path is read here (OSError if it cannot)."""
    if isinstance(file, bytes):
        mime, suffix = sniff_image_type(file)
        return f"image{suffix}", file, mime
    path = Path(file)
    content = path.read_bytes()
    sniffed, _ = sniff_image_type(content)
    guessed = mimetypes.guess_type(path.name)[0]
    mime = sniffed if sniffed != "application/octet-stream" else guessed or sniffed
    return path.name, content, mime


def sniff_image_type(content: bytes) -> tuple[str, str]:
    """(MIME type, file suffix) from the first bytes; application/octet-stream when not a known image."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp", ".webp"
    for signature, mime, suffix in _SIGNATURES:
        if content.startswith(signature):
            return mime, suffix
    return "application/octet-stream", ""


def file_to_upload(image: ImageInput) -> FileInput | None:
    """The file to upload for bytes, paths, and strings naming an existing local file; None for an image
    the server reads as it is (an Asset, or a string that is not a local file: id, URL, data URL, base64)."""
    if isinstance(image, bytes | os.PathLike):
        return image
    if isinstance(image, Asset | OutputAsset) or image.startswith(_PASS_THROUGH_PREFIXES):
        return None
    try:
        return image if Path(image).is_file() else None
    except (OSError, ValueError):  # raw base64 makes a name too long for the file system, or holds a NUL
        return None


def reference(image: ImageInput) -> str:
    """The string the API takes for an image that needs no upload."""
    if isinstance(image, Asset | OutputAsset):
        return image.id
    if isinstance(image, str):
        return image
    raise TypeError(f"upload {type(image).__name__} images first")


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, str | bytes | os.PathLike | Asset | OutputAsset):
        return [images]
    return list(images)


def compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that were given: None means "the server's default" and is left out."""
    return {name: value for name, value in fields.items() if value is not None}


def edit_input(
    images: list[str], *, prompt: str, camera: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    return {"images": images} | compact({"prompt": prompt or None, **camera, **options})


def orbit_input(
    image: str,
    *,
    azimuths: Sequence[float] | None,
    elevation: float | None,
    distance: float | None,
    poses: Sequence[Mapping[str, float]] | None,
    prompt: str,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """An orbit's input: the views as `poses` (any path), or as azimuths at one elevation and distance
    (0 and 1.0 unless given). Fields given beside `poses` are sent as given, for the server to refuse."""
    if poses is None:
        elevation = 0 if elevation is None else elevation
        distance = 1.0 if distance is None else distance
    fields = {
        "poses": None if poses is None else [dict(pose) for pose in poses],
        "azimuths": None if azimuths is None else list(azimuths),
        "elevation": elevation,
        "distance": distance,
        "prompt": prompt or None,
        **options,
    }
    return {"image": image} | compact(fields)
