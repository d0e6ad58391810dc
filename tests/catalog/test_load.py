"""The shipped catalog, and an operator's file on top of it: added, replaced and turned-off models."""

from __future__ import annotations

from pathlib import Path

import pytest

from reangle.catalog import CatalogError, load_catalog
from reangle.catalog.load import shipped_text
from reangle.core.lora_refs import LoraRef
from tests.catalog.conftest import INPUTS, PRODUCT_PHOTO, WriteCatalog

SHIPPED_IDS = ("qwen-edit-multiangle-2511", "qwen-image-edit-2511", "qwen-image-2512", "wan-2.7-image")


def test_the_shipped_catalog_serves_the_four_models_in_order() -> None:
    catalog = load_catalog(inputs=INPUTS)
    assert catalog.ids == SHIPPED_IDS
    assert catalog.disabled == ()
    camera, instruction, text, wan = catalog.models
    assert (camera.task, camera.engine, camera.base) == (
        "camera_edit",
        "qwen-edit",
        "Qwen/Qwen-Image-Edit-2511",
    )
    assert (instruction.task, instruction.engine) == ("instruction_edit", "qwen-edit")
    assert (text.task, text.engine, text.base) == ("text_to_image", "qwen-image", "Qwen/Qwen-Image-2512")
    assert (wan.task, wan.engine, wan.base) == ("image_edit_or_generate", "dashscope", "wan2.7-image")
    assert wan.requires == ("dashscope_api_key",)
    assert wan.remote
    assert not camera.remote
    assert all(entry.source.endswith("reangle/catalog/models.toml") for entry in catalog)


def test_the_shipped_models_keep_the_ids_the_dialects_already_use() -> None:
    catalog = load_catalog()
    camera = catalog.get("qwen-edit-multiangle-2511")
    assert camera is not None
    assert dict(camera.dialects) == {
        "scenario": "model_qwen-edit-multiangle-2511",
        "segmind": "qwen-image-edit-plus-multiple-angle",
        "fal": "qwen-image-edit-2511-multiple-angles",
        "openai": "qwen-edit-multiangle-2511",
    }
    assert catalog.by_dialect("scenario", "model_wan-2-7-image") is catalog.get("wan-2.7-image")
    assert catalog.by_dialect("scenario", "model_qwen-image-edit-2511") is catalog.get("qwen-image-edit-2511")
    assert catalog.by_dialect("segmind", "qwen-image-edit-plus-multiple-angle") is camera
    assert catalog.by_dialect("fal", "qwen-image-edit-2511-multiple-angles") is camera
    assert catalog.by_dialect("openai", "qwen-image-2512") is catalog.get("qwen-image-2512")
    assert catalog.by_dialect("scenario", "model_wan-2.7-image") is None  # Scenario's id is its own
    assert catalog.by_dialect("segmind", "qwen-image-edit-2511") is None
    assert catalog.by_dialect("nope", "qwen-image-2512") is None


def test_the_shipped_file_is_package_data() -> None:
    text, source = shipped_text()
    assert "[[model]]" in text
    assert source.endswith("models.toml")


def test_an_operator_model_is_added_after_the_shipped_ones(write_catalog: WriteCatalog) -> None:
    catalog = load_catalog(write_catalog(PRODUCT_PHOTO), inputs=INPUTS)
    assert catalog.ids == (*SHIPPED_IDS, "product-photo")
    entry = catalog.get("product-photo")
    assert entry is not None
    assert entry.name == "product-photo"
    assert entry.lora_refs == (
        LoraRef(
            kind="url",
            value="https://example.com/loras/product-photo.safetensors",
            scale=0.8,
            field="catalog.product-photo.loras.0.url",
            label="loras[0] of product-photo",  # how users see it: never by its URL
            from_catalog=True,  # the operator's: its failures are the server's fault
        ),
    )
    assert dict(entry.dialects) == {"scenario": "model_product-photo", "openai": "product-photo"}
    assert catalog.by_dialect("scenario", "model_product-photo") is entry
    assert entry.source == str(write_catalog(PRODUCT_PHOTO))


def test_an_operator_entry_with_a_shipped_id_replaces_it_in_place(write_catalog: WriteCatalog) -> None:
    local = {
        "id": "qwen-image-edit-2511",
        "description": "the edit model from a local folder",
        "task": "instruction_edit",
        "engine": "qwen-edit",
        "base": "/models/qwen-image-edit-2511",
    }
    catalog = load_catalog(write_catalog(PRODUCT_PHOTO, local))
    assert catalog.ids == (*SHIPPED_IDS, "product-photo")
    replaced = catalog.get("qwen-image-edit-2511")
    assert replaced is not None
    assert (replaced.base, replaced.description) == ("/models/qwen-image-edit-2511", local["description"])


def test_an_operator_turns_a_shipped_model_off(write_catalog: WriteCatalog) -> None:
    catalog = load_catalog(write_catalog({"id": "wan-2.7-image", "enabled": False}))
    assert catalog.ids == SHIPPED_IDS[:3]
    assert catalog.disabled == ("wan-2.7-image",)
    assert "wan-2.7-image" not in catalog
    assert catalog.by_dialect("scenario", "model_wan-2-7-image") is None


def test_a_whole_entry_with_enabled_false_is_checked_then_left_out(write_catalog: WriteCatalog) -> None:
    catalog = load_catalog(write_catalog({**PRODUCT_PHOTO, "enabled": False}))
    assert catalog.ids == SHIPPED_IDS
    with pytest.raises(CatalogError, match=r"model \"product-photo\": loras\[0\]\.scale"):
        load_catalog(write_catalog({**PRODUCT_PHOTO, "enabled": False, "loras": [{"id": "x", "scale": 9}]}))


def test_an_empty_operator_file_changes_nothing(write_catalog: WriteCatalog) -> None:
    assert load_catalog(write_catalog(text="# nothing yet\n")).ids == SHIPPED_IDS


def test_subtables_after_a_model_belong_to_it(write_catalog: WriteCatalog) -> None:
    text = """
[[model]]
id = "product-photo"
description = "a product-photo LoRA"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"

[[model.loras]]
id = "product-photo"
scale = 0.9
name = "Product photo v2"

[model.defaults]
num_outputs = 2

[model.dialects]
scenario = "model_product-photo-v2"
"""
    catalog = load_catalog(write_catalog(text=text), inputs=INPUTS)
    entry = catalog.get("product-photo")
    assert entry is not None
    assert entry.loras[0].name == "Product photo v2"
    assert entry.lora_refs[0].kind == "id"
    assert dict(entry.defaults) == {"num_outputs": 2}
    assert catalog.by_dialect("scenario", "model_product-photo-v2") is entry


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[[model]]\nid = "a"\ndescription = \n', "line 3, column 15: invalid TOML: Invalid value"),
        ('[[model]]\nid = "a"\nid = "b"\n', "line 3, column 9: invalid TOML: Cannot overwrite a value"),
        ('[[model]]\nid = "a', "end of file: invalid TOML: Unterminated string"),
    ],
)
def test_a_toml_syntax_error_is_one_line_with_its_position(
    write_catalog: WriteCatalog, text: str, line: str
) -> None:
    path = write_catalog(text=text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == f"catalog {path}: {line}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[models]\nid = "a"\n', "models: unknown key; a catalog holds only [[model]] tables"),
        ('[model.my-style]\nid = "a"\n', "model: must be an array of tables: write [[model]], not [model]"),
        ('model = ["a"]\n', "model[0]: must be a table: write each model as a [[model]] table"),
    ],
)
def test_a_file_that_is_not_a_list_of_models_says_so(
    write_catalog: WriteCatalog, text: str, problem: str
) -> None:
    path = write_catalog(text=text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == f"catalog {path}: {problem}"


def test_a_missing_operator_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == f"catalog {path}: no such file (REANGLE_CATALOG_FILE)"


def test_an_operator_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(CatalogError, match=r"not UTF-8 text \(byte 5\)$"):
        load_catalog(path)


def test_the_same_id_twice_in_one_file_is_an_error(write_catalog: WriteCatalog) -> None:
    path = write_catalog(PRODUCT_PHOTO, {"id": "wan-2.7-image", "enabled": False}, PRODUCT_PHOTO)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == (
        f'catalog {path}: model[2]: id: "product-photo" is already the id of model[0] in this file'
    )


def test_turning_off_a_model_that_is_not_shipped_is_an_error(write_catalog: WriteCatalog) -> None:
    path = write_catalog({"id": "wan-2-7-image", "enabled": False})
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == (
        f'catalog {path}: model "wan-2-7-image": enabled: there is no shipped model "wan-2-7-image" to turn '
        "off (shipped: qwen-edit-multiangle-2511, qwen-image-edit-2511, qwen-image-2512, wan-2.7-image)"
    )


def test_two_models_may_not_share_a_dialect_id(write_catalog: WriteCatalog) -> None:
    path = write_catalog({**PRODUCT_PHOTO, "dialects": {"scenario": "model_wan-2-7-image"}})
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == (
        f'catalog {path}: model "product-photo": dialects.scenario: "model_wan-2-7-image" already names '
        'model "wan-2.7-image" in that dialect'
    )


def test_fal_ids_share_the_openai_dialects_names(write_catalog: WriteCatalog) -> None:
    path = write_catalog({**PRODUCT_PHOTO, "dialects": {"fal": "qwen-image-edit-2511"}})
    with pytest.raises(CatalogError, match=r'dialects\.fal: "qwen-image-edit-2511" already names model'):
        load_catalog(path)


def test_replacing_a_model_frees_its_dialect_ids(write_catalog: WriteCatalog) -> None:
    moved = {
        "id": "wan-2.7-image",
        "description": "Wan 2.7 image, Scenario id moved",
        "task": "image_edit_or_generate",
        "engine": "dashscope",
        "base": "wan2.7-image",
        "dialects": {"scenario": "model_wan-old"},
    }
    custom = {**PRODUCT_PHOTO, "dialects": {"scenario": "model_wan-2-7-image"}}
    catalog = load_catalog(write_catalog(moved, custom))
    assert catalog.by_dialect("scenario", "model_wan-2-7-image") is catalog.get("product-photo")


def _doc_toml(after: str) -> str:
    doc = (Path(__file__).parents[2] / "docs" / "catalog.md").read_text(encoding="utf-8")
    return doc.split(after, 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("section", ["## Example", "### Replacing and turning off shipped models"])
def test_the_docs_examples_load(write_catalog: WriteCatalog, section: str) -> None:
    catalog = load_catalog(write_catalog(text=_doc_toml(section)), inputs=INPUTS)
    assert catalog.ids[:2] == SHIPPED_IDS[:2]


def test_the_docs_product_photo_model(write_catalog: WriteCatalog) -> None:
    catalog = load_catalog(write_catalog(text=_doc_toml("## Example")), inputs=INPUTS)
    entry = catalog.get("product-photo")
    assert entry is not None
    assert entry.render_prompt("the product alone") == (
        "the product alone, professional studio product photo, seamless white background, soft shadow"
    )
    assert catalog.by_dialect("scenario", "model_product-photo") is entry


def test_a_clash_with_a_later_shipped_model_blames_the_operators_entry(write_catalog: WriteCatalog) -> None:
    camera = {
        "id": "qwen-edit-multiangle-2511",
        "description": "the camera edit under Wan's Scenario id, by mistake",
        "task": "camera_edit",
        "engine": "qwen-edit",
        "base": "Qwen/Qwen-Image-Edit-2511",
        "dialects": {"scenario": "model_wan-2-7-image"},
    }
    path = write_catalog(camera)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == (
        f'catalog {path}: model "qwen-edit-multiangle-2511": dialects.scenario: "model_wan-2-7-image" '
        'already names model "wan-2.7-image" in that dialect'
    )
