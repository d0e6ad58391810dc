"""Golden tests of the RunPod dialect's translation, pure (no server).

Request files: a RunPod body -> the exact native input(s) and whether they go in as a batch.
Response files: canned core Jobs -> the exact RunPod body. Ids in them are placeholders (`{job:0}`,
`{batch:0}`, `{asset:0}`) filled with fresh ids, and times are seconds after a fresh base time, so nothing
passes by matching a value the code happens to hold.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from reangle.core.assets import new_id
from reangle.core.jobs import Job, JobError, JobKind, JobStatus, OutputAsset
from reangle.core.models import CAMERA_EDIT
from reangle.core.service import model_spec
from reangle.dialects import runpod_schemas as rp
from reangle.errors import InvalidInput

GOLDEN = Path(__file__).parent / "golden" / "runpod"
REQUESTS = sorted(p for p in GOLDEN.glob("request_*.json") if p.name != "request_errors.json")
RESPONSES = sorted(GOLDEN.glob("response_*.json"))
ERRORS = json.loads((GOLDEN / "request_errors.json").read_text())["cases"]
TIME_FIELDS = ("created_at", "started_at", "finished_at")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fill(value: Any, ids: dict[str, str]) -> Any:
    """Replace every `{kind:n}` placeholder with a fresh id of that kind (the same one for the same name)."""
    if isinstance(value, str):

        def fresh(match: re.Match[str]) -> str:
            return ids.setdefault(match[0], new_id(match[1]))

        return re.sub(r"\{(job|batch|asset):\d+\}", fresh, value)
    if isinstance(value, list):
        return [fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    return value


def canned_job(data: dict[str, Any], base: float) -> Job:
    fields = dict(data)
    for name in TIME_FIELDS:
        if fields.get(name) is not None:
            fields[name] = base + fields[name]
    return Job(
        id=fields["id"],
        owner="env_canned",
        model=fields.get("model", CAMERA_EDIT),
        kind=JobKind.EDIT,
        input={},
        status=JobStatus(fields["status"]),
        progress=fields.get("progress", 0.0),
        attempt=fields.get("attempt", 1),
        created_at=fields["created_at"],
        started_at=fields.get("started_at"),
        finished_at=fields.get("finished_at"),
        outputs=tuple(OutputAsset(**output) for output in fields.get("outputs", [])),
        error=JobError(**fields["error"]) if fields.get("error") else None,
        batch_id=fields.get("batch_id"),
    )


def fake_base64(asset_id: str) -> str:
    """Stands in for the asset reader: names the asset it was asked for."""
    return f"b64({asset_id})"


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_request_translates_to_native_inputs(path: Path) -> None:
    case = load(path)
    translated = rp.translate(case["request"], case["endpoint_model"])
    assert {"model": translated.model, "batch": translated.batch, "inputs": translated.inputs} == case[
        "native"
    ]
    spec = model_spec(translated.model)
    for native in translated.inputs:  # the core's own model accepts what the dialect produces
        spec.validate(JobKind.EDIT, native)


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c["name"])
def test_bad_request_names_its_field(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        rp.translate(case["request"], case.get("endpoint_model", CAMERA_EDIT))
    assert caught.value.field == case["field"]
    assert case["contains"] in caught.value.message


def test_null_input_values_are_as_if_not_given() -> None:
    given = {"image": "aGk=", "prompt": None, "rewrite_prompt": None, "seed": None, "azimuth": None}
    translated = rp.translate({"input": given}, CAMERA_EDIT)
    assert translated.inputs == [
        {"images": ["aGk="], "prompt": "", "seed": 42, "num_inference_steps": 4, "guidance_scale": 1.0}
    ]


def test_non_object_body_is_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        rp.translate(["input"], CAMERA_EDIT)


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_canned_jobs_render_as_runpod(path: Path) -> None:
    ids: dict[str, str] = {}
    case = fill(load(path), ids)
    base = time.time()
    jobs = [canned_job(job, base) for job in case["jobs"]]
    assert rp.status_body(case["runpod_id"], jobs, fake_base64) == case["response"]
    assert all(placeholder not in json.dumps(case["response"]) for placeholder in ("{job:", "{batch:"))


def test_completed_output_needs_the_reader() -> None:
    """Without an image reader (as /stream renders its envelope) a completed job has no output key."""
    case = fill(load(GOLDEN / "response_completed.json"), {})
    jobs = [canned_job(job, time.time()) for job in case["jobs"]]
    body = rp.status_body(case["runpod_id"], jobs)
    assert body["status"] == "COMPLETED"
    assert "output" not in body


def test_orbit_extras_are_not_images() -> None:
    """Only scene pictures go into output.images: an orbit's turntable and contact sheet stay out."""
    outputs = [
        {"asset_id": "asset_v", "role": "view", "width": 8, "height": 8, "mime_type": "image/png"},
        {"asset_id": "asset_t", "role": "turntable", "width": 8, "height": 8, "mime_type": "image/webp"},
        {"asset_id": "asset_c", "role": "contact_sheet", "width": 8, "height": 8, "mime_type": "image/png"},
    ]
    job = canned_job(
        {
            "id": "job_o",
            "status": "succeeded",
            "created_at": 0,
            "started_at": 1,
            "finished_at": 2,
            "outputs": outputs,
        },
        0.0,
    )
    assert rp.status_body("job_o", [job], fake_base64)["output"] == {"images": ["b64(asset_v)"]}


def test_health_counts() -> None:
    case = fill(load(GOLDEN / "health.json"), {})
    jobs = [canned_job(job, time.time()) for job in case["jobs"]]
    assert rp.health_body(jobs, running=case["running"]) == case["response"]
    assert rp.health_body([], running=False) == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {"idle": 1, "running": 0},
    }
