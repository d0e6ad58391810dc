"""Whether the server's settings let a catalog model run; a model that cannot is listed with the reason."""

from __future__ import annotations

from collections.abc import Mapping

from reangle.catalog.model import ENGINE_LABELS, ENGINE_SWITCHES, ModelEntry


def availability(entry: ModelEntry, settings_values: Mapping[str, object]) -> str | None:
    """None when `entry` can run with these settings (`Settings.model_dump()`), else what to set and why."""
    through = f" through {ENGINE_LABELS[entry.engine]}" if entry.engine in ENGINE_LABELS else ""
    missing = [name for name in entry.required_settings if not _is_set(settings_values.get(name))]
    if missing:
        names = " and ".join(f"REANGLE_{name.upper()}" for name in missing)
        return f"set {names} to run {entry.name}{through}"
    switch = ENGINE_SWITCHES.get(entry.engine)
    if switch is not None and switch in settings_values and not _is_set(settings_values[switch]):
        return f"REANGLE_{switch.upper()} is empty, which turns {entry.name} off on this server"
    registered = settings_values.get("loras")
    for lora in entry.loras:
        ref = lora.ref
        if ref.kind == "path" and not _is_set(settings_values.get("lora_dir")):
            # not the path itself: this reason is listed to users
            return f"set REANGLE_LORA_DIR to the folder of its LoRAs to run {entry.name}"
        if ref.kind == "id" and not (isinstance(registered, Mapping) and ref.value in registered):
            return f"register its LoRA id {ref.value!r} in REANGLE_LORAS to run {entry.name}"
    return None


def _is_set(value: object) -> bool:
    secret = getattr(value, "get_secret_value", None)  # a pydantic SecretStr
    if callable(secret):
        value = secret()
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return bool(value)
    return value is not None and value is not False
