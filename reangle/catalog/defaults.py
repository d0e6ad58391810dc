"""A catalog entry's `defaults` applied to its task's input classes, so that their JSON Schema shows them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from reangle.catalog.errors import CatalogError, entry_label
from reangle.catalog.model import ModelEntry

M = TypeVar("M", bound=BaseModel)
K = TypeVar("K")


class InvalidDefault(ValueError):
    """A default names no field of the input class, or is not a valid value for its field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def with_defaults(base: type[M], defaults: Mapping[str, object], *, name: str) -> type[M]:
    """A subclass of `base` whose fields named in `defaults` default to the given values.

    Each value is validated strictly against its field's type and constraints (so `2` is no default for a
    text, and `"2"` none for a number); checks across fields run when a request is validated, as before.
    The subclass keeps `base`'s schema title, description, validators and config: its JSON Schema differs
    from `base`'s only in those defaults (a field that was required and got a default becomes optional).
    """
    fields = base.model_fields
    overrides: dict[str, FieldInfo] = {}
    for key, value in defaults.items():
        info = fields.get(key)
        if info is None:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise InvalidDefault(key, f"{base.__name__} has no such field{hint}")
        checked = _checked_value(info, key, value)
        overrides[key] = FieldInfo.merge_field_infos(info, default=checked, default_factory=None)
    namespace: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": name,
        "__doc__": base.__doc__,
        "__annotations__": {key: fields[key].annotation for key in overrides},
        "model_config": ConfigDict(title=base.model_config.get("title") or base.__name__),
        **overrides,
    }
    # the metaclass call is what `class name(base): ...` runs, with the fields built above
    metaclass: Any = type(base)
    return cast("type[M]", metaclass(name, (base,), namespace))


def _checked_value(info: FieldInfo, key: str, value: object) -> object:
    annotation: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        return TypeAdapter(annotation).validate_python(value, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in (key, *first["loc"]))
        message = first["msg"]
        raise InvalidDefault(where, message[:1].lower() + message[1:]) from None


def entry_inputs(entry: ModelEntry, bases: Mapping[K, type[M]]) -> dict[K, type[M]]:
    """The input classes of `entry`'s task (`{JobKind.EDIT: CameraEditInput, ...}`) with its defaults.

    A default goes to each class that has its field, and must name a field of at least one. A class that
    gets none is returned as it is. Build these once per catalog: each call makes new classes.
    """
    label = entry_label(entry.id, 0)
    known = sorted({name for base in bases.values() for name in base.model_fields})
    for key in entry.defaults:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise CatalogError(
                entry.source,
                f"no input of task {entry.task} has this field{hint}",
                entry=label,
                field=f"defaults.{key}",
            )
    out: dict[K, type[M]] = {}
    for kind, base in bases.items():
        own = {key: value for key, value in entry.defaults.items() if key in base.model_fields}
        if not own:
            out[kind] = base
            continue
        try:
            out[kind] = with_defaults(base, own, name=f"{base.__name__}[{entry.id}]")
        except InvalidDefault as exc:
            raise CatalogError(entry.source, exc.reason, entry=label, field=f"defaults.{exc.field}") from None
    return out
