"""An entry's defaults become its input classes' defaults, visible in their JSON Schema; a default that names
no field or is no valid value for it stops the catalog with one line."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reangle.catalog import CatalogError, InvalidDefault, entry_inputs, load_catalog, with_defaults
from reangle.core.models import MODELS, TASK_INPUTS, install_catalog
from tests.catalog.conftest import INPUTS, PRODUCT_PHOTO, CameraIn, EditIn, OrbitIn, WriteCatalog

ENTRY = 'model "product-photo"'


def test_with_defaults_changes_only_the_named_defaults() -> None:
    styled = with_defaults(EditIn, {"prompt": "make it a studio packshot", "num_outputs": 2}, name="Styled")
    assert issubclass(styled, EditIn)
    assert styled.__name__ == "Styled"
    edited = styled.model_validate({"images": ["asset_a"]})
    assert (edited.prompt, edited.num_outputs, edited.output_format) == (
        "make it a studio packshot",
        2,
        "png",
    )
    schema, base = styled.model_json_schema(), EditIn.model_json_schema()
    assert schema["properties"]["prompt"] == {
        **base["properties"]["prompt"],
        "default": "make it a studio packshot",
    }
    assert schema["properties"]["num_outputs"] == {**base["properties"]["num_outputs"], "default": 2}
    assert schema["required"] == ["images"]  # prompt was required; now it has a default
    assert {key: value for key, value in schema.items() if key not in ("properties", "required")} == {
        key: value for key, value in base.items() if key not in ("properties", "required")
    }  # the same title, description and extra="forbid"
    assert EditIn.model_json_schema() == base  # the base is left as it was


def test_the_subclass_keeps_the_bases_constraints_validators_and_config() -> None:
    styled = with_defaults(CameraIn, {"lora_scale": 1.5}, name="Styled")
    assert styled(images=["a"]).lora_scale == 1.5
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        styled(images=["a"], lora_scale=5)
    with pytest.raises(ValidationError, match="at most 4 outputs"):
        styled(images=["a"], num_outputs=5)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        styled.model_validate({"images": ["a"], "colour": "red"})
    with pytest.raises(ValidationError, match="frozen"):
        styled(images=["a"]).lora_scale = 2


def test_a_number_default_is_taken_as_the_fields_type() -> None:
    styled = with_defaults(CameraIn, {"lora_scale": 2, "zoom": 7}, name="Styled")
    assert styled.model_json_schema()["properties"]["lora_scale"]["default"] == 2.0
    assert styled(images=["a"]).zoom == 7.0


def test_a_list_default_replaces_a_default_factory() -> None:
    styled = with_defaults(OrbitIn, {"azimuths": [0, 180]}, name="Styled")
    assert styled(image="a").azimuths == [0.0, 180.0]
    assert styled.model_json_schema()["properties"]["azimuths"]["default"] == [0.0, 180.0]


@pytest.mark.parametrize(
    ("defaults", "field", "reason"),
    [
        ({"num_output": 2}, "num_output", "EditIn has no such field; did you mean num_outputs?"),
        ({"colour": "red"}, "colour", "EditIn has no such field"),
        ({"num_outputs": "2"}, "num_outputs", "input should be a valid integer"),
        ({"num_outputs": 2.5}, "num_outputs", "input should be a valid integer"),
        ({"prompt": 3}, "prompt", "input should be a valid string"),
        ({"prompt": ""}, "prompt", "string should have at least 1 character"),
        ({"output_format": "gif"}, "output_format", "input should be 'png', 'jpeg' or 'webp'"),
        ({"images": ["a", 2]}, "images.1", "input should be a valid string"),
    ],
)
def test_an_invalid_default_names_its_field(defaults: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidDefault) as caught:
        with_defaults(EditIn, defaults, name="Styled")
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert str(caught.value) == f"{field}: {reason}"


def test_entry_inputs_give_each_class_the_defaults_it_has(write_catalog: WriteCatalog) -> None:
    camera = {
        "id": "close-ups",
        "description": "the camera edit, closer and stronger by default",
        "task": "camera_edit",
        "engine": "qwen-edit",
        "base": "Qwen/Qwen-Image-Edit-2511",
        "defaults": {"zoom": 8, "lora_scale": 1.2},
    }
    entry = load_catalog(write_catalog(camera), inputs=INPUTS).get("close-ups")
    assert entry is not None
    classes = entry_inputs(entry, INPUTS["camera_edit"])
    assert list(classes) == ["edit", "orbit"]
    assert classes["edit"].model_validate({"images": ["a"]}).model_dump()["zoom"] == 8.0
    assert classes["orbit"].model_validate({"image": "a"}).model_dump()["lora_scale"] == 1.2
    assert classes["edit"].model_json_schema()["title"] == "CameraIn"
    assert classes["edit"].__name__ == "CameraIn[close-ups]"


def test_entry_inputs_return_the_bases_when_there_are_no_defaults() -> None:
    entry = load_catalog().get("qwen-image-edit-2511")
    assert entry is not None
    assert entry_inputs(entry, INPUTS["instruction_edit"]) == {"edit": EditIn}


@pytest.mark.parametrize(
    ("defaults", "problem"),
    [
        (
            {"num_output": 2},
            "defaults.num_output: no input of task instruction_edit has this field; "
            "did you mean num_outputs?",
        ),
        ({"zoom": 8}, "defaults.zoom: no input of task instruction_edit has this field"),
        ({"num_outputs": "two"}, "defaults.num_outputs: input should be a valid integer"),
        ({"prompt": ["studio"]}, "defaults.prompt: input should be a valid string"),
    ],
)
def test_a_bad_default_stops_the_catalog_with_one_line(
    write_catalog: WriteCatalog, defaults: dict[str, Any], problem: str
) -> None:
    path = write_catalog({**PRODUCT_PHOTO, "defaults": defaults})
    assert load_catalog(path).get("product-photo") is not None  # without the inputs, defaults are not checked
    with pytest.raises(CatalogError) as caught:
        load_catalog(path, inputs=INPUTS)
    assert caught.value.message == f"catalog {path}: {ENTRY}: {problem}"
    assert caught.value.field == problem.split(": ")[0]


@pytest.mark.parametrize(
    ("defaults", "problem"),
    [
        ({"num_outputs": 9}, "defaults.num_outputs: num_outputs must be between 1 and 4, got 9"),
        ({"lora_scale": 9.0}, "defaults.lora_scale: lora_scale must be between 0 and 4.0, got 9.0"),
        (
            {"vertical_angle": 300.0},
            "defaults.vertical_angle: vertical_angle must be between -90 and 90, got 300",
        ),
    ],
)
def test_a_default_no_request_could_use_stops_the_start_and_serves_nothing_new(
    write_catalog: WriteCatalog, defaults: dict[str, Any], problem: str
) -> None:
    """Each is a valid value of its field's type, so the catalog loads; a request keeping it would fail."""
    entry = {**PRODUCT_PHOTO, "id": "angles", "task": "camera_edit", "loras": [], "defaults": defaults}
    catalog = load_catalog(write_catalog(entry), inputs=TASK_INPUTS)
    served = dict(MODELS)
    with pytest.raises(CatalogError) as caught:
        install_catalog(catalog, {})
    assert caught.value.message.endswith(f': model "angles": {problem}')
    assert served == MODELS
