"""A bounded schemathesis run (its coverage and fuzzing phases) against a running server's /openapi.json:
no generated request may get a 5xx, and every documented response must match its schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.conftest import KEY_A, ServerFactory

ST = Path(sys.executable).with_name("st")


def test_generated_requests_get_no_server_error_and_match_the_schema(serve: ServerFactory) -> None:
    server = serve()
    command = [
        str(ST),
        "run",
        f"{server.url}/openapi.json",
        "--phases=coverage,fuzzing",
        "--checks=not_a_server_error,response_schema_conformance",
        "--max-examples=10",
        "--generation-deterministic",  # the same requests every run: a failure here is repeatable
        "--request-timeout=30",
        f"--header=Authorization: Bearer {KEY_A}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=480, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
