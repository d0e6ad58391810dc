"""The Scenario dialect over an operator's catalog: an entry's `defaults` (acceleration among them) and
`limits` apply to Scenario requests as they do to the native API's.

The pure translations run against the catalog installed in this process; one test runs the real
scenario-sdk client against a fake-engine server started with the same catalog file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scenario_sdk
from scenario_sdk import Scenario

from reangle.core.jobs import JobKind
from reangle.core.service import model_spec
from reangle.dialects.scenario_schemas import scenario_model, translate_request
from reangle.errors import InvalidInput
from tests.dialects.conftest import (
    API_KEY,
    RunningServer,
    png_base64,
    served_catalog,
    start_server,
    stop_server,
)

CATALOG = """
[[model]]
id = "fast-edit"
description = "Instruction edits on Lightning 4 steps unless asked otherwise"
task = "instruction_edit"
engine = "qwen-edit"
base = "Qwen/Qwen-Image-Edit-2511"
defaults = { acceleration = "high" }
limits = { max_outputs = 2 }

[[model]]
id = "small-sets"
description = "Text-to-image sets of at most 6"
task = "text_to_image"
engine = "qwen-image"
base = "Qwen/Qwen-Image-2512"
limits = { max_outputs = 6 }
"""
FAST_EDIT = "model_fast-edit"
SMALL_SETS = "model_small-sets"


@pytest.fixture
def catalog_file(tmp_path: Path) -> Iterator[Path]:
    """The catalog file, served by this process while the test runs."""
    with served_catalog(CATALOG, tmp_path) as path:
        yield path


@pytest.mark.usefixtures("catalog_file")
def test_the_catalog_acceleration_applies_when_the_request_gives_none() -> None:
    model, native = translate_request(FAST_EDIT, {"images": ["asset_x"], "prompt": "add a hat"})
    assert native["acceleration"] == "high"
    # the Lightning preset picks its own steps and guidance: Scenario's base-model defaults are not sent
    assert "num_inference_steps" not in native
    assert "guidance_scale" not in native
    validated = model_spec(model).validate(JobKind.EDIT, native)
    assert validated.model_dump()["acceleration"] == "high"


@pytest.mark.usefixtures("catalog_file")
def test_a_request_s_own_acceleration_wins_over_the_catalog_s() -> None:
    body = {"images": ["asset_x"], "prompt": "add a hat", "acceleration": "none"}
    _, native = translate_request(FAST_EDIT, body)
    assert (native["acceleration"], native["num_inference_steps"], native["guidance_scale"]) == (
        "none",
        40,
        4.0,
    )
    _, native = translate_request(FAST_EDIT, {**body, "acceleration": None})  # null: the model's default
    assert native["acceleration"] == "high"


@pytest.mark.usefixtures("catalog_file")
def test_the_model_lists_the_catalog_acceleration_and_output_limit() -> None:
    inputs = {spec["name"]: spec for spec in scenario_model(FAST_EDIT).to_json()["inputs"]}
    assert inputs["acceleration"]["default"] == "high"
    assert inputs["numOutputs"]["max"] == 2
    sets = {spec["name"]: spec for spec in scenario_model(SMALL_SETS).to_json()["inputs"]}
    assert sets["numOutputs"]["max"] == 6


@pytest.mark.usefixtures("catalog_file")
@pytest.mark.parametrize(
    ("model", "body", "words"),
    [
        (FAST_EDIT, {"images": ["asset_x"], "prompt": "p", "numOutputs": 3}, "between 1 and 2, got 3"),
        (
            SMALL_SETS,
            {"prompt": "p", "numOutputs": 5},
            "between 1 and 4 without imageSetMode (up to 6 with it)",
        ),
        (
            SMALL_SETS,
            {"prompt": "p", "numOutputs": 7, "imageSetMode": True},
            "between 1 and 6 in image set mode",
        ),
    ],
)
def test_catalog_output_limits_are_scenario_errors_naming_num_outputs(
    model: str, body: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate_request(model, body)
    assert caught.value.field == "numOutputs"
    assert caught.value.message.startswith("numOutputs must be ")
    assert words in caught.value.message


@pytest.mark.usefixtures("catalog_file")
def test_a_set_up_to_the_catalog_limit_is_accepted() -> None:
    model, native = translate_request(SMALL_SETS, {"prompt": "p", "numOutputs": 6, "imageSetMode": True})
    assert native["num_outputs"] == 6
    model_spec(model).validate(JobKind.EDIT, native)


# the real client ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("scenario-catalog-server")
    (root / "models.toml").write_text(CATALOG)
    running = start_server(root, env={"REANGLE_CATALOG_FILE": str(root / "models.toml")})
    yield running
    stop_server(running)


def test_the_real_client_gets_the_catalog_defaults_and_limits(catalog_server: RunningServer) -> None:
    client = Scenario(
        base_url=f"{catalog_server.url}/scenario/v1",
        api_key="any-label",
        api_secret=API_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )
    image = "data:image/png;base64," + png_base64()
    job = client.generate.run_model(FAST_EDIT, body={"images": [image], "prompt": "add a hat"}).job
    assert job.metadata.input is not None
    assert job.metadata.input["acceleration"] == "high"
    assert "numInferenceSteps" not in job.metadata.input

    with pytest.raises(scenario_sdk.BadRequestError) as caught:
        client.generate.run_model(FAST_EDIT, body={"images": [image], "prompt": "p", "numOutputs": 3})
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "error": "numOutputs must be between 1 and 2, got 3",
        "code": "invalid_input",
    }
