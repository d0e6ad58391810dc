"""Each kind of mistake in an entry is one line naming the file, the entry and the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from reangle.catalog import CatalogError, load_catalog
from tests.catalog.conftest import PRODUCT_PHOTO, WriteCatalog

LORA = PRODUCT_PHOTO["loras"][0]
NEEDS = "missing (a model needs id, description, task, engine, base)"
ENTRY = 'model "product-photo"'
BRACES = "(write a literal brace as {{ or }})"
OUTSIDE = "is outside the folder of local LoRAs"
IN_LORA_DIR = "give a .safetensors file of REANGLE_LORA_DIR, relative to it"
ID_RULE = (
    "is not a model id: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, "
    "at most 64 characters"
)


def changed(drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    return {key: value for key, value in {**PRODUCT_PHOTO, **fields}.items() if key not in drop}


CASES: list[tuple[dict[str, Any], str]] = [
    # keys
    (changed(lora=[LORA]), f"{ENTRY}: lora: unknown key; did you mean loras?"),
    (
        changed(colour="red"),
        f"{ENTRY}: colour: unknown key; known keys: id, description, task, engine, base, name, loras, "
        "defaults, prompt_template, limits, dialects, requires, enabled",
    ),
    (changed(drop=("id",)), f"model[0]: id: {NEEDS}"),
    (changed(drop=("description",)), f"{ENTRY}: description: {NEEDS}"),
    (changed(drop=("base",)), f"{ENTRY}: base: {NEEDS}"),
    # id
    (changed(id="My Style"), f'model[0]: id: "My Style" {ID_RULE}'),
    (changed(id="-style"), f'model[0]: id: "-style" {ID_RULE}'),
    (changed(id=3), f"model[0]: id: 3 {ID_RULE}"),
    (changed(id="a" * 65), f'model[0]: id: "{"a" * 65}" {ID_RULE}'),
    # task and engine
    (
        changed(task="edit"),
        f'{ENTRY}: task: "edit" is not one of camera_edit, instruction_edit, text_to_image, '
        "image_edit_or_generate",
    ),
    (changed(engine="qwen"), f'{ENTRY}: engine: "qwen" is not one of qwen-edit, qwen-image, dashscope'),
    (
        changed(task="text_to_image"),
        f"{ENTRY}: engine: qwen-edit does not run task text_to_image; it runs camera_edit, instruction_edit",
    ),
    (
        changed(task="image_edit_or_generate", engine="dashscope", base="wan 2.7", loras=[]),
        f'{ENTRY}: base: "wan 2.7" is not a vendor model name (like wan2.7-image)',
    ),
    (changed(base=""), f"{ENTRY}: base: must be a non-empty string"),
    (changed(name="two\nlines"), f"{ENTRY}: name: must be one line of text"),
    (changed(enabled="no"), f"{ENTRY}: enabled: must be true or false"),
    # loras
    (changed(loras=LORA), f'{ENTRY}: loras: must be a list of tables like {{ url = "...", scale = 1.0 }}'),
    (
        changed(loras=["a.safetensors"]),
        f'{ENTRY}: loras[0]: must be a table like {{ url = "...", scale = 1.0 }}',
    ),
    (
        changed(loras=[{"url": LORA["url"], "id": "x"}]),
        f"{ENTRY}: loras[0]: must have exactly one of url, path or id",
    ),
    (changed(loras=[{"scale": 1.0}]), f"{ENTRY}: loras[0]: must have exactly one of url, path or id"),
    (changed(loras=[{"uri": LORA["url"]}]), f"{ENTRY}: loras[0].uri: unknown key; did you mean url?"),
    (
        changed(loras=[{"url": "ftp://x/a.safetensors"}]),
        f'{ENTRY}: loras[0].url: "ftp://x/a.safetensors" is not an http(s) URL',
    ),
    (changed(loras=[{"id": " "}]), f"{ENTRY}: loras[0].id: must be a non-empty string"),
    (
        changed(loras=[LORA, {"path": "a.safetensors", "scale": 5}]),
        f"{ENTRY}: loras[1].scale: must be a number between -4 and 4, not 5",
    ),
    (
        changed(loras=[{"path": "a.safetensors", "scale": -4.5}]),
        f"{ENTRY}: loras[0].scale: must be a number between -4 and 4, not -4.5",
    ),
    (
        changed(loras=[{"path": "a.safetensors", "scale": "0.8"}]),
        f"{ENTRY}: loras[0].scale: must be a number between -4 and 4",
    ),
    (
        changed(loras=[{"path": "a.safetensors", "scale": True}]),
        f"{ENTRY}: loras[0].scale: must be a number between -4 and 4",
    ),
    (
        changed(loras=[{"path": "a.safetensors", "scale": math.nan}]),
        f"{ENTRY}: loras[0].scale: must be a number between -4 and 4",
    ),
    (changed(loras=[LORA] * 5), f"{ENTRY}: loras: has 5 LoRAs; a model takes at most 4"),
    # a path a request could not give (outside REANGLE_LORA_DIR, no .safetensors) would fail every job
    (
        changed(loras=[{"path": "../site/good.safetensors"}]),
        f'{ENTRY}: loras[0].path: "../site/good.safetensors" {OUTSIDE}: {IN_LORA_DIR}',
    ),
    (
        changed(loras=[LORA, {"path": "/srv/loras/good.safetensors"}]),
        f'{ENTRY}: loras[1].path: "/srv/loras/good.safetensors" {OUTSIDE}: {IN_LORA_DIR}',
    ),
    (
        changed(loras=[{"path": "styles/../../good.safetensors"}]),
        f'{ENTRY}: loras[0].path: "styles/../../good.safetensors" {OUTSIDE}: {IN_LORA_DIR}',
    ),
    (
        changed(loras=[{"path": "styles/poster.bin"}]),
        f'{ENTRY}: loras[0].path: "styles/poster.bin" is not a .safetensors file: {IN_LORA_DIR}',
    ),
    # the same LoRA twice (whatever its strength) would fail every job
    (
        changed(loras=[LORA, {"id": "house"}, {**LORA, "scale": 0.5}]),
        f"{ENTRY}: loras[2].url: the same LoRA as loras[0]; give it once",
    ),
    (
        changed(loras=[{"path": "good.safetensors"}, {"path": "./sub/../good.safetensors"}]),
        f"{ENTRY}: loras[1].path: the same LoRA as loras[0]; give it once",
    ),
    (
        changed(task="image_edit_or_generate", engine="dashscope", base="wan2.7-image"),
        f"{ENTRY}: loras: engine dashscope takes no LoRAs",
    ),
    # limits and defaults
    (
        changed(limits={"max_output": 2}),
        f"{ENTRY}: limits.max_output: unknown key; did you mean max_outputs?",
    ),
    (
        changed(limits={"max_outputs": 0}),
        f"{ENTRY}: limits.max_outputs: must be a whole number of at least 1",
    ),
    (
        changed(limits={"max_images": 1.5}),
        f"{ENTRY}: limits.max_images: must be a whole number of at least 0",
    ),
    (changed(limits=[2]), f"{ENTRY}: limits: must be a table like {{ max_outputs = 2 }}"),
    (
        changed(task="text_to_image", engine="qwen-image", loras=[], limits={"max_images": 1}),
        f"{ENTRY}: limits.max_images: a text_to_image model takes no input images",
    ),
    (changed(defaults=["num_outputs"]), f"{ENTRY}: defaults: must be a table of input field = default value"),
    (
        changed(limits={"max_outputs": 2}, defaults={"num_outputs": 3}),
        f"{ENTRY}: defaults.num_outputs: 3 is above limits.max_outputs (2)",
    ),
    # prompt template
    (
        changed(prompt_template="studio packshot"),
        f"{ENTRY}: prompt_template: must contain {{prompt}} exactly once, not 0 times",
    ),
    (
        changed(prompt_template="{prompt}, {prompt}"),
        f"{ENTRY}: prompt_template: must contain {{prompt}} exactly once, not 2 times",
    ),
    (
        changed(prompt_template="{prompt} in {style}"),
        f"{ENTRY}: prompt_template: {{style}} is not a placeholder; use {{prompt}} {BRACES}",
    ),
    (
        changed(prompt_template="{prompt!r}"),
        f"{ENTRY}: prompt_template: {{prompt}} is not a placeholder; use {{prompt}} {BRACES}",
    ),
    (
        changed(prompt_template="{prompt} {"),
        f"{ENTRY}: prompt_template: Single '{{' encountered in format string {BRACES}",
    ),
    # a template whose own text passes the prompt limit refuses every request
    (
        changed(prompt_template="{prompt} " + "y" * 2100),
        f"{ENTRY}: prompt_template: its own text, without the prompt, is 2,100 characters: more than the "
        "2,000 a prompt of task instruction_edit may have, so no request could fit",
    ),
    # dialects and requires
    (
        changed(dialects={"scenaro": "model_x"}),
        f"{ENTRY}: dialects.scenaro: unknown key; did you mean scenario?",
    ),
    (
        changed(dialects={"scenario": "product-photo"}),
        f'{ENTRY}: dialects.scenario: "product-photo": Scenario model ids start with model_',
    ),
    (
        changed(dialects={"segmind": "my slug"}),
        f'{ENTRY}: dialects.segmind: "my slug" is not an id: letters, digits and . _ / : -',
    ),
    (changed(dialects={"runpod": 7}), f"{ENTRY}: dialects.runpod: must be a non-empty string"),
    (
        changed(dialects={"segmind": "product-slug"}),
        f"{ENTRY}: dialects.segmind: the segmind dialect serves only camera_edit models",
    ),
    (
        changed(task="text_to_image", engine="qwen-image", dialects={"runpod": "poster"}),
        f"{ENTRY}: dialects.runpod: the runpod dialect serves only camera_edit and instruction_edit models",
    ),
    (
        changed(requires=["dashscope_key"]),
        f'{ENTRY}: requires[0]: "dashscope_key" is not a setting; did you mean dashscope_api_key?',
    ),
    (
        changed(requires=["REANGLE_LORA_DIR"]),
        f'{ENTRY}: requires[0]: "REANGLE_LORA_DIR" is not a setting; did you mean lora_dir?',
    ),
    (
        changed(requires="lora_dir"),
        f'{ENTRY}: requires: must be a list of setting names like ["dashscope_api_key"]',
    ),
]


@pytest.mark.parametrize(
    ("entry", "problem"),
    CASES,
    ids=[f"{problem.split(': ')[1]}-{n}" for n, (_e, problem) in enumerate(CASES)],
)
def test_each_mistake_is_one_line_naming_the_file_entry_and_field(
    write_catalog: WriteCatalog, entry: dict[str, Any], problem: str
) -> None:
    path = write_catalog(entry)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == f"catalog {path}: {problem}"


def test_an_entry_is_named_by_its_place_until_its_id_is_known(write_catalog: WriteCatalog) -> None:
    path = write_catalog({"id": "wan-2.7-image", "enabled": False}, changed(id="Bad"))
    with pytest.raises(CatalogError, match=r": model\[1\]: id: "):
        load_catalog(path)


def test_the_error_keeps_its_parts_for_callers(write_catalog: WriteCatalog) -> None:
    path = write_catalog(changed(loras=[{"url": LORA["url"], "scale": 5}]))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    error = caught.value
    assert (error.source, error.entry, error.field) == (str(path), ENTRY, "loras[0].scale")
    assert error.code == "catalog_error"
    assert (
        error.message == f"catalog {path}: {ENTRY}: loras[0].scale: must be a number between -4 and 4, not 5"
    )


def test_a_value_with_a_line_break_stays_on_one_line(write_catalog: WriteCatalog) -> None:
    path = write_catalog(changed(task="edit\nnow"))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message.endswith(
        'task: "edit\\nnow" is not one of camera_edit, instruction_edit, text_to_image, '
        "image_edit_or_generate"
    )


@pytest.mark.parametrize("number", ["nan", "inf", "-inf", "+nan"])
def test_a_default_that_is_not_a_finite_number_is_refused_naming_the_model_and_field(
    write_catalog: WriteCatalog, number: str
) -> None:
    from tests.catalog.conftest import toml_models

    text = toml_models([changed(drop=("defaults",))]) + f"defaults = {{ guidance_scale = {number} }}\n"
    path = write_catalog(text=text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    shown = repr(float(number))
    assert caught.value.message == (
        f"catalog {path}: {ENTRY}: defaults.guidance_scale: {shown} is not a finite number "
        "(nan and inf are refused)"
    )


def test_a_catalog_lora_is_shown_by_its_name_or_place_never_its_url(write_catalog: WriteCatalog) -> None:
    named = {
        "url": "https://example.com/loras/product-photo-v2.safetensors",
        "scale": 0.8,
        "name": "Product photo",
    }
    catalog = load_catalog(write_catalog(changed(loras=[LORA, named, {"id": "house", "scale": 0.5}])))
    entry = catalog.get("product-photo")
    assert entry is not None
    assert [lora.ref.shown for lora in entry.loras] == [
        "the model's LoRA 'loras[0] of product-photo'",
        "the model's LoRA 'Product photo'",
        "the LoRA id 'house'",
    ]
    assert [lora.public() for lora in entry.loras] == [
        {"name": "loras[0] of product-photo", "id": None, "scale": 0.8},
        {"name": "Product photo", "id": None, "scale": 0.8},
        {"name": "house", "id": "house", "scale": 0.5},
    ]


def test_a_prompt_template_may_be_as_long_as_its_task_s_prompt_limit(write_catalog: WriteCatalog) -> None:
    """2,000 characters of its own for an edit; Wan's prompts take 5,000."""
    edit = changed(loras=[], prompt_template="{prompt}, " + "y" * 2000)
    wan = changed(
        id="wan-styled",
        task="image_edit_or_generate",
        engine="dashscope",
        base="wan2.7-image",
        loras=[],
        prompt_template="{prompt} " + "y" * 4000,
    )
    catalog = load_catalog(write_catalog(edit, wan))
    assert [catalog.get(model_id) is not None for model_id in ("product-photo", "wan-styled")] == [True, True]


def test_a_catalog_path_inside_the_folder_of_local_loras_loads(write_catalog: WriteCatalog) -> None:
    catalog = load_catalog(write_catalog(changed(loras=[{"path": "styles/../poster.safetensors"}])))
    entry = catalog.get("product-photo")
    assert entry is not None
    assert [(ref.kind, ref.value, ref.from_catalog) for ref in entry.lora_refs] == [
        ("path", "styles/../poster.safetensors", True)
    ]
