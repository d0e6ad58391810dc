"""A catalog entry's limits within its task's own bounds: above them (shown in the schema, never allowed) or
no images for a task that needs one (every request refused) stop the start in one line."""

from __future__ import annotations

from typing import Any

import pytest

from reangle.catalog import CatalogError, load_catalog
from reangle.core.models import MODELS, TASK_INPUTS, install_catalog
from tests.catalog.conftest import PRODUCT_PHOTO, WriteCatalog


@pytest.mark.parametrize(
    ("task", "limits", "problem"),
    [
        (
            "instruction_edit",
            {"max_outputs": 9},
            "limits.max_outputs: 9 is more than a job of task instruction_edit makes: at most 4",
        ),
        (
            "camera_edit",
            {"max_images": 7},
            "limits.max_images: 7 is not what a job of task camera_edit takes: 1 to 3 images",
        ),
        (
            "instruction_edit",
            {"max_images": 0},
            "limits.max_images: 0 is not what a job of task instruction_edit takes: 1 to 3 images",
        ),
    ],
)
def test_a_limit_outside_the_tasks_bounds_stops_the_start(
    write_catalog: WriteCatalog, task: str, limits: dict[str, Any], problem: str
) -> None:
    entry = {**PRODUCT_PHOTO, "id": "limited", "task": task, "loras": [], "limits": limits}
    catalog = load_catalog(write_catalog(entry), inputs=TASK_INPUTS)
    served = dict(MODELS)
    with pytest.raises(CatalogError) as caught:
        install_catalog(catalog, {})
    assert f': model "limited": {problem}' in caught.value.message
    assert served == MODELS


def test_limits_within_the_bounds_are_served_as_the_schema_shows_them(write_catalog: WriteCatalog) -> None:
    entry = {**PRODUCT_PHOTO, "id": "limited", "loras": [], "limits": {"max_outputs": 4, "max_images": 1}}
    served = dict(MODELS)
    try:
        install_catalog(load_catalog(write_catalog(entry), inputs=TASK_INPUTS), {})
        schema = MODELS["limited"].input_schema()["properties"]
        assert (schema["num_outputs"]["maximum"], schema["images"]["maxItems"]) == (4, 1)
    finally:
        MODELS.clear()
        MODELS.update(served)
