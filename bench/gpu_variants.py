"""The engine variants `gpu_edit.py` sweeps, how outputs are compared, and the Markdown tables of a sweep.

A variant is named option sets and `key=value` engine options joined by `+` (`fp8+compile`,
`attention_backend=_native_cudnn+compile`); its overrides are `QwenConfig` fields. Only numpy and PIL here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

BASELINE = "baseline"

#: Named sets of engine options (QwenConfig field -> value).
OPTION_SETS: dict[str, dict[str, Any]] = {
    BASELINE: {},
    "cudnn": {"attention_backend": "_native_cudnn"},
    "flash": {"attention_backend": "_native_flash"},
    "efficient": {"attention_backend": "_native_efficient"},
    "math": {"attention_backend": "_native_math"},
    "compile": {"compile": "blocks"},
    "fp8": {"quantize": "fp8"},
    "fused": {"fuse_loras": "default"},
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class VariantError(ValueError):
    """A --variants value that names no known option set or engine option."""


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]

    def settings_text(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.overrides.items()) or "no speed options"


def parse_variants(text: str, options: Mapping[str, Any]) -> list[Variant]:
    """Comma-separated variants, baseline first (it is the reference of the others' PSNR).

    `options` maps each engine option a variant may set to its default, whose type converts `key=value` text.
    """
    variants = [_parse_variant(name.strip(), options) for name in text.split(",")]
    names = [variant.name for variant in variants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise VariantError(f"variant {repeated[0]!r} is listed twice")
    return sorted(variants, key=lambda variant: variant.name != BASELINE)


def _parse_variant(name: str, options: Mapping[str, Any]) -> Variant:
    if not name:
        raise VariantError("an empty variant name in --variants (two commas, or one at an end?)")
    overrides: dict[str, Any] = {}
    for token in name.split("+"):
        for key, value in _token_overrides(token.strip(), options).items():
            if key in overrides and overrides[key] != value:
                raise VariantError(f"variant {name!r} sets {key} twice: {overrides[key]!r} and {value!r}")
            overrides[key] = value
    return Variant(name=name, overrides=overrides)


def _token_overrides(token: str, options: Mapping[str, Any]) -> dict[str, Any]:
    if "=" in token:
        key, raw = (part.strip() for part in token.split("=", 1))
        key = key.replace("-", "_")
        if key not in options:
            raise VariantError(
                f"{token!r}: {key!r} is not an engine option a variant can set; "
                f"choose from {', '.join(sorted(options))}"
            )
        return {key: convert(raw, options[key], key)}
    if token not in OPTION_SETS:
        raise VariantError(
            f"unknown variant {token!r}; choose from {', '.join(OPTION_SETS)} joined by '+', "
            "or engine options as key=value"
        )
    missing = [key for key in OPTION_SETS[token] if key not in options]
    if missing:
        raise VariantError(
            f"variant {token!r} sets {', '.join(missing)}, which this reangle's QwenConfig does not have"
        )
    return dict(OPTION_SETS[token])


def convert(raw: str, default: Any, key: str) -> Any:
    """`raw` as the type of the option's default."""
    if isinstance(default, bool):
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise VariantError(f"{key} takes true or false, not {raw!r}")
    if isinstance(default, int | float):
        try:
            return type(default)(raw)
        except ValueError:
            raise VariantError(f"{key} takes a number, not {raw!r}") from None
    return raw


# Comparing outputs ----------------------------------------------------------------------------------------


def rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def psnr_db(reference: Image.Image, output: Image.Image) -> float:
    """Peak signal-to-noise ratio of two 8-bit RGB pictures of one size; inf when they are identical."""
    ref, out = rgb_array(reference), rgb_array(output)
    if ref.shape != out.shape:
        raise ValueError(f"cannot compare pictures of sizes {reference.size} and {output.size}")
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def compare(reference: Image.Image, output: Image.Image) -> dict[str, Any]:
    """PSNR ("inf" when identical), the largest channel difference, the share of pixels that differ."""
    difference = np.abs(rgb_array(reference).astype(np.int16) - rgb_array(output).astype(np.int16))
    return {
        "psnr_db": json_number(psnr_db(reference, output)),
        "max_abs_diff": int(difference.max()),
        "differing_pixels": float(np.mean(difference.max(axis=-1) > 0)),
    }


def image_stats(image: Image.Image) -> dict[str, float]:
    """Enough to see a degenerate output (all black, one flat colour) that would make every PSNR inf."""
    pixels = rgb_array(image).astype(np.float64)
    return {
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
        "black_fraction": float(np.mean(pixels.max(axis=-1) == 0)),
    }


def json_number(value: float) -> float | str:
    """JSON has no infinity: an infinite PSNR is written as the string "inf"."""
    return "inf" if math.isinf(value) else value


# Markdown tables ------------------------------------------------------------------------------------------

VARIANT_COLUMNS = (
    "variant",
    "settings",
    "end to end s",
    "timed e2e s, new / same picture",
    "denoise s",
    "step ms",
    "text enc ms",
    "VAE enc / dec ms",
    "edits/min",
    "peak GiB",
    "load s (warm-up s)",
    "PSNR vs baseline dB",
)
ORBIT_COLUMNS = (
    "variant",
    "8 views, edit_views s",
    "8 views, 8 x edit s",
    "speed-up",
    "min PSNR views vs loop dB",
)


def variants_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """One row per variant of a sweep report's `variants`; medians of warm runs."""
    rows = []
    for report in reports:
        head = [f"`{report['name']}`", report["settings_text"]]
        problem = report.get("error") or report.get("skipped")
        if problem:
            rows.append([*head, f"not measured: {_cell(problem)}", *[""] * (len(VARIANT_COLUMNS) - 3)])
            continue
        medians = report["medians_s"]
        vae = f"{_ms(medians.get('vae_encode'))} / {_ms(medians.get('vae_decode'))}"
        same_picture = report.get("same_picture_phases_s", {}).get("end_to_end", {}).get("median")
        timed = f"{_num(medians.get('end_to_end'), 3)} / {_num(same_picture, 3)}"
        load = f"{_num(report['setup_s'].get('load_s'), 1)} ({_num(report.get('warmup_s'), 1)})"
        rows.append(
            [
                *head,
                _num(medians.get("end_to_end_clean"), 3),
                timed,
                _num(medians.get("denoise"), 3),
                _ms(report.get("step_median_s")),
                _ms(medians.get("text_encode")),
                vae,
                _num(report["throughput"].get("edits_per_minute"), 1),
                _num(report["memory"].get("peak_edit_gib"), 1),
                load,
                _psnr(report["quality"].get("vs_baseline")),
            ]
        )
    return _table(VARIANT_COLUMNS, rows)


def orbit_table(reports: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for report in reports:
        orbit = report.get("orbit")
        if not orbit:
            continue
        views_s = orbit["edit_views"]["end_to_end"]["median"]
        loop_s = orbit["loop"]["end_to_end"]["median"]
        rows.append(
            [
                f"`{report['name']}`",
                _num(views_s, 2),
                _num(loop_s, 2),
                f"{loop_s / views_s:.2f}x",
                _psnr(orbit["views_vs_loop_min"]),
            ]
        )
    return _table(ORBIT_COLUMNS, rows) if rows else ""


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """The first line of `text`, short and without the table's separator."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.replace("|", "/")[:160]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _psnr(comparison: Mapping[str, Any] | None) -> str:
    if not comparison:
        return "-"
    value = comparison["psnr_db"]
    return "inf (identical)" if value == "inf" else f"{value:.1f}"
