"""The OpenAPI document shows the Authorization header on every native route that needs a key, including
the status read, which reads its caller without the dependency that documents the header elsewhere."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from reangle.api.app import create_app
from reangle.settings import Settings

KEYLESS = {"/v1/files/{asset_id}", "/healthz", "/metrics"}


def native_operations(tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    app = create_app(Settings(engine="fake", data_dir=tmp_path))
    with warnings.catch_warnings():  # the provider dialects repeat operation ids; not this test's subject
        warnings.simplefilter("ignore", UserWarning)
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
