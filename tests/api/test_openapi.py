"""The OpenAPI document shows the Authorization header on every native route that needs a key, including
the status read, which reads its caller without the dependency that documents the header elsewhere."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import httpx

from reangle.api.app import create_app
from reangle.settings import Settings
from tests.api.conftest import ServerProcess

KEYLESS = {"/v1/files/{asset_id}", "/healthz", "/metrics"}


def native_operations(tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    app = create_app(Settings(engine="fake", data_dir=tmp_path))
    paths = app.openapi()["paths"]
    return {
        (method, path): operation
        for path, operations in paths.items()
        if path.startswith("/v1/") or path in KEYLESS
        for method, operation in operations.items()
    }


def header_parameters(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [parameter for parameter in operation.get("parameters", []) if parameter["in"] == "header"]


def test_every_keyed_route_documents_the_authorization_header_the_same_way(tmp_path: Path) -> None:
    operations = native_operations(tmp_path)
    assert ("get", "/v1/jobs/{job_id}") in operations
    documented = {
        key: [p for p in header_parameters(op) if p["name"] == "authorization"]
        for key, op in operations.items()
        if key[1] not in KEYLESS
    }
    assert all(len(found) == 1 for found in documented.values()), documented
    assert documented[("get", "/v1/jobs/{job_id}")] == documented[("get", "/v1/assets/{asset_id}")]
    assert all(not header_parameters(operations[("get", path)]) for path in KEYLESS)


def test_every_operation_of_every_dialect_has_its_own_id(tmp_path: Path) -> None:
    app = create_app(Settings(engine="fake", data_dir=tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # FastAPI warns of a duplicate operation id
        paths = app.openapi()["paths"]
    ids = [operation["operationId"] for operations in paths.values() for operation in operations.values()]
    assert len(ids) == len(set(ids))
    assert {"get", "post"} <= set(paths["/runpod/v2/{endpoint_id}/status/{job_id}"])


#: The error shape each route family answers with, by path prefix.
ERROR_SHAPES = {
    "/scenario/": "ScenarioError",
    "/segmind/": "MessageError",
    "/runpod/": "MessageError",
    "/openai/": "OpenAIError",
    "/": "NativeError",
}


def test_every_operation_documents_the_error_shape_it_answers_with(tmp_path: Path) -> None:
    schema = create_app(Settings(engine="fake", data_dir=tmp_path)).openapi()
    assert "HTTPValidationError" not in str(schema)  # FastAPI's own 422, which no route answers with
    for path, operations in schema["paths"].items():
        shape = next(shape for prefix, shape in ERROR_SHAPES.items() if path.startswith(prefix))
        for method, operation in operations.items():
            for status in ("4XX", "5XX"):
                documented = operation["responses"][status]["content"]["application/json"]["schema"]
                assert documented == {"$ref": f"#/components/schemas/{shape}"}, (method, path, status)


def test_the_documented_error_shapes_are_the_ones_answered(shared_server: ServerProcess) -> None:
    schemas = httpx.get(f"{shared_server.url}/openapi.json").json()["components"]["schemas"]
    answers = {
        "NativeError": httpx.get(f"{shared_server.url}/v1/jobs/job_x"),
        "ScenarioError": httpx.get(f"{shared_server.url}/scenario/v1/jobs/job_x"),
        "MessageError": httpx.get(f"{shared_server.url}/runpod/v2/e/status/job_x"),
        "OpenAIError": httpx.post(f"{shared_server.url}/openai/v1/images/generations", json={}),
    }
    for shape, answer in answers.items():
        assert 400 <= answer.status_code < 500, answer.text
        assert_conforms(answer.json(), schemas[shape], schemas)


def assert_conforms(value: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """`value` has the keys `schema` requires and no others it does not name; nested objects likewise."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    if "properties" not in schema:
        return
    assert isinstance(value, dict), value
    assert set(schema.get("required", [])) <= set(value) <= set(schema["properties"]), (value, schema)
    for key, item in value.items():
        assert_conforms(item, schema["properties"][key], schemas)


def test_the_docs_page_loads_swagger_ui_from_this_server_not_a_cdn(shared_server: ServerProcess) -> None:
    page = httpx.get(f"{shared_server.url}/docs")
    assert page.status_code == 200
    assert "http://" not in page.text
    assert "https://" not in page.text  # nothing from elsewhere: the page works offline
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        fetched = httpx.get(shared_server.url + asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100, asset
    assert '"/static/swagger-ui/swagger-ui-bundle.js"' in page.text


def test_the_bodies_and_answers_routes_read_and_give_themselves_are_documented(tmp_path: Path) -> None:
    operations = native_operations(tmp_path)
    upload = operations[("post", "/v1/assets")]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "application/json"}
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    assert set(upload["application/json"]["schema"]["properties"]) == {"data", "url", "name"}
    assert {"200", "202"} <= set(operations[("post", "/v1/jobs")]["responses"])
    assert {"200", "206", "416"} <= set(operations[("get", "/v1/files/{asset_id}")]["responses"])
    events = operations[("get", "/v1/jobs/{job_id}/events")]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"}
