"""Turn the image references a request carries (asset id, data URL, raw base64, http(s) URL) into assets."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping

from reangle.core.assets import AssetService
from reangle.core.ports import AssetRecord
from reangle.errors import InvalidInput, NotFound

#: Fetches a URL's bytes, raising InvalidInput for refused or failed fetches.
UrlFetcher = Callable[[str, str], Awaitable[bytes]]
#: Checks a URL (and the field that holds it) as fetching it would at its first hop, sending nothing: raises
#: InvalidInput naming the field for a URL that fetching would refuse (scheme, host, a private address).
UrlCheck = Callable[[str, str], Awaitable[None]]

#: No text a request gives may hold it: PostgreSQL cannot store it, and no URL, path or prompt needs it.
NUL = "\x00"
NUL_MESSAGE = "must not contain a NUL character"
#: Nor half a UTF-16 surrogate pair (JSON's "\ud800" escape alone): it is no character, and no text holding
#: one can be written as UTF-8 (to the database, a log, an answer).
SURROGATE_MESSAGE = (
    "must not contain half a UTF-16 surrogate pair (such as \\ud800 alone): it is no character"
)

#: A data URL up to its comma (the data itself, megabytes, is never run through a regex).
_DATA_URL_HEADER = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?"
)
#: Inline images longer than this are decoded in a worker thread: 30 MiB of base64 takes a fifth of a second.
THREAD_DECODE_CHARS = 1 << 20


def refuse_bad_text(value: object, field: str) -> None:
    """InvalidInput naming the place (`input.loras.2.url`) of the first text in `value` (a JSON value: text,
    numbers, lists and objects, keys included) that holds a NUL character or a lone surrogate."""
    if isinstance(value, str):
        if NUL in value:
            raise InvalidInput(f"{field}: {NUL_MESSAGE}", field=field)
        if not value.isascii() and not _encodable(value):  # isascii is free: images' base64 is ASCII
            raise InvalidInput(f"{field}: {SURROGATE_MESSAGE}", field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            refuse_bad_text(key, field)
            refuse_bad_text(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_bad_text(item, f"{field}.{index}")


def refuse_bad_text_in_body(body: object) -> None:
    """`refuse_bad_text` over a whole JSON body, its fields named as the client sent them (`lora_3_url`,
    `input.prompt`); a key of its own is the body's."""
    if not isinstance(body, Mapping):
        refuse_bad_text(body, "body")
        return
    for key, item in body.items():
        refuse_bad_text(key, "body")
        refuse_bad_text(item, str(key))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def resolve_image(
    ref: str, owner: str, assets: AssetService, fetch: UrlFetcher, *, field: str, name: str | None = None
) -> AssetRecord:
    """The asset `ref` names (an asset id of `owner`'s), or a new one of its bytes (fetched from an http(s)
    URL, or decoded from a data URL or base64), stored with the file `name` given."""
    refuse_bad_text(ref, field)
    if ref.startswith("asset_"):
        try:
            return assets.get(owner, ref)
        except NotFound:
            raise InvalidInput(
                f"{field}: no asset {ref} (unknown, expired, or another key's)", field=field
            ) from None
    if is_http_url(ref):
        try:
            data = await fetch(ref, field)
        except InvalidInput as exc:  # the fetcher's messages are about the URL; say which field held it
            raise exc.about(field) from None
        return await assets.ingest_async(owner, data, field=field, name=name)
    return await assets.ingest_async(owner, await decoded_inline(ref, field=field), field=field, name=name)


def is_http_url(ref: str) -> bool:
    """Whether an image reference is an http(s) URL (to fetch), not an asset id or inline bytes."""
    return ref[:8].lower().startswith(("http://", "https://"))  # URL schemes are case-insensitive


#: What an input image may be, as a refusal of something else says.
IMAGE_REFS = "an asset id, an http(s) URL, a data URL or base64 image data"
#: What a field that takes the bytes themselves may be.
INLINE_IMAGE = "base64 image data or a data URL"


async def decoded_inline(ref: str, *, field: str, expected: str = IMAGE_REFS) -> bytes:
    """`decode_inline`, in a worker thread for a large image (the event loop answers nothing meanwhile)."""
    if len(ref) < THREAD_DECODE_CHARS:
        return decode_inline(ref, field=field, expected=expected)
    return await asyncio.to_thread(decode_inline, ref, field=field, expected=expected)


def decode_inline(ref: str, *, field: str, expected: str = IMAGE_REFS) -> bytes:
    """Bytes of a `data:` URL (base64 only) or of a raw base64 string, line breaks and spaces allowed; a
    refusal says the field takes `expected`."""
    refuse_bad_text(ref, field)
    payload = ref.strip()
    if payload.startswith("data:"):
        header, comma, payload = payload.partition(",")
        match = _DATA_URL_HEADER.fullmatch(header)
        if not comma or match is None or not match["b64"]:
            raise InvalidInput(
                f"{field}: a data URL must be base64-encoded (data:image/png;base64,...)", field=field
            )
    try:
        return _base64(payload)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field}: not {expected}", field=field) from None


def _base64(text: str) -> bytes:
    """Base64 with or without its padding; whitespace (wrapped lines) is taken out only when it is there."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        compact = "".join(text.split())
        if compact == text:
            raise
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
