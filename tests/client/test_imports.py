"""The SDK's boundary: it runs with only httpx and pydantic, and the remote CLI pulls in no engine."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import reangle.client
from reangle.client import _errors, _models

CLIENT_DIR = Path(reangle.client.__file__).parent


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_the_sdk_imports_only_the_standard_library_httpx_pydantic_and_itself() -> None:
    files = sorted(CLIENT_DIR.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for module in imported_modules(path):
            top = module.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in ("httpx", "pydantic")
            assert allowed or module.startswith("reangle.client"), f"{path.name} imports {module}"


def test_importing_the_sdk_and_the_remote_cli_loads_no_torch_pil_or_engine() -> None:
    code = (
        "import sys, reangle.client, reangle.cli.remote\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PIL', 'diffusers', 'tqdm')"
        " or m.startswith('reangle.engine'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_everything_public_is_exported_in_a_sorted_all() -> None:
    exported = set(reangle.client.__all__)
    for module in (_errors, _models):
        public = {
            name
            for name, value in vars(module).items()
            if inspect.isclass(value) and value.__module__ == module.__name__ and not name.startswith("_")
        }
        assert public <= exported
    assert all(hasattr(reangle.client, name) for name in exported)
    assert reangle.client.__all__ == sorted(reangle.client.__all__, key=lambda n: (not n.isupper(), n))


def test_the_package_is_marked_typed_for_a_user_s_type_checker() -> None:
    package = CLIENT_DIR.parent
    assert (package / "py.typed").is_file()
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["reangle"]  # shipped in the wheel
