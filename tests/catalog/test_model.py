"""A loaded entry's prompt template, and the catalog's lookups."""

from __future__ import annotations

import pytest

from reangle.catalog import Catalog, ModelEntry, load_catalog
from reangle.catalog.model import template_problem


def entry(model_id: str = "styled", template: str | None = None, **dialects: str) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        name=model_id,
        description="test",
        task="instruction_edit",
        engine="qwen-edit",
        base="Qwen/Qwen-Image-Edit-2511",
        prompt_template=template,
        dialects=dialects,
    )


@pytest.mark.parametrize(
    ("template", "prompt", "rendered"),
    [
        (None, "  keep my spaces ", "  keep my spaces "),
        ("{prompt}, studio packshot on white", "a red shoe", "a red shoe, studio packshot on white"),
        ("{prompt}, studio packshot on white", "  a red shoe ", "a red shoe, studio packshot on white"),
        ("{prompt}, studio packshot on white", "", "studio packshot on white"),
        ("in my style; {prompt}", " ", "in my style"),
        ("a {{literal}} brace: {prompt}", "x", "a {literal} brace: x"),
        ("{prompt}", "{not a field}", "{not a field}"),
    ],
)
def test_the_prompt_template_places_the_users_words(template: str | None, prompt: str, rendered: str) -> None:
    assert entry(template=template).render_prompt(prompt) == rendered


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{prompt} in my style", None),
        ("{{braces}} {prompt}", None),
        ("my style", "must contain {prompt} exactly once, not 0 times"),
        ("{}", "{} is not a placeholder; use {prompt} (write a literal brace as {{ or }})"),
        ("{prompt:>20}", "{prompt} is not a placeholder; use {prompt} (write a literal brace as {{ or }})"),
    ],
)
def test_template_problem(template: str, problem: str | None) -> None:
    assert template_problem(template) == problem


def test_a_catalog_finds_models_by_id_and_by_dialect_id() -> None:
    first, second = entry("a", scenario="model_a"), entry("b", scenario="model_b", fal="b-fal")
    catalog = Catalog((first, second))
    assert catalog.ids == ("a", "b")
    assert list(catalog) == [first, second]
    assert len(catalog) == 2
    assert "a" in catalog
    assert "c" not in catalog
    assert catalog.get("b") is second
    assert catalog.get("c") is None
    assert catalog.by_dialect("scenario", "model_b") is second
    assert catalog.by_dialect("fal", "b-fal") is second
    assert catalog.by_dialect("fal", "model_b") is None
    assert second.dialect_id("fal") == "b-fal"
    assert second.dialect_id("segmind") is None


def test_a_catalog_refuses_an_id_twice() -> None:
    with pytest.raises(ValueError, match="unique"):
        Catalog((entry("a"), entry("a")))


def test_the_engine_decides_what_a_model_needs() -> None:
    wan = load_catalog().get("wan-2.7-image")
    assert wan is not None
    assert wan.required_settings == ("dashscope_api_key",)  # named once though both name it
