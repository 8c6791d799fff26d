"""pyproject.toml is honest: the runtime declares what the product imports, and nothing for tools.

The Docker image installs exactly `[project] dependencies` (see the Dockerfile), so a package the
product imports but only an extra declares would fail in production, and a test or load tool
declared at runtime would ship in the image.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("partypilot", "core", "api", "dispatch", "geo", "gateway_clients")
# Declared but never imported by name: used by another package, or data.
IMPLICIT = {"hiredis": "redis-py's C parser", "tzdata": "zoneinfo's data where the OS has none"}
DEV_TOOLS = {"nx-27017", "locust", "playwright", "pytest", "ruff", "mypy", "psutil", "matplotlib", "pyyaml",
             "hypothesis", "schemathesis", "aiosmtpd", "import-linter"}


def _project() -> dict[str, object]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    assert isinstance(project, dict)
    return project


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _imports(packages: tuple[str, ...]) -> set[str]:
    """Top-level modules imported anywhere in `packages` (lazy imports inside functions too)."""
    found: set[str] = set()
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(RUNTIME_PACKAGES) - {"loadtests", "tests"}


def _distributions(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    missing = {module for module in modules if module not in owners}
    assert not missing, f"imported but not installed: {sorted(missing)}"
    return {_name(dist) for module in modules for dist in owners[module]}


def test_the_runtime_declares_exactly_what_the_product_imports() -> None:
    declared = {_name(req) for req in _project()["dependencies"]}  # type: ignore[attr-defined]
    imported = _distributions(_imports(RUNTIME_PACKAGES))
    assert not imported - declared, f"imported by the product but not declared: {sorted(imported - declared)}"
    unused = declared - imported - set(IMPLICIT)
    assert not unused, f"declared but imported by nothing: {sorted(unused)}"


def test_tools_and_local_services_stay_out_of_the_runtime() -> None:
    project = _project()
    declared = {_name(req) for req in project["dependencies"]}  # type: ignore[attr-defined]
    assert not declared & DEV_TOOLS
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "nx-27017" in {_name(req) for req in extras["local"]}  # `make run` starts it
    # `make test` (scripts/install.sh) installs dev, which brings local and load along.
    assert "partypilot[local,load]" in extras["dev"]
    assert '-e ".[dev]"' in (REPO / "scripts" / "install.sh").read_text()


def test_loadtests_import_only_what_the_load_and_dev_extras_declare() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    declared = {_name(req) for req in [*_project()["dependencies"], *extras["load"]]}  # type: ignore[misc]
    imported = _distributions(_imports(("loadtests",)))
    assert not imported - declared, f"loadtests imports undeclared: {sorted(imported - declared)}"


def test_loadtests_are_not_shipped_in_the_wheel_or_the_image() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = data["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [pattern for pattern in include if pattern.startswith("loadtests")]
    assert {pattern.rstrip("*") for pattern in include} == set(RUNTIME_PACKAGES)
    assert "loadtests" in (REPO / ".dockerignore").read_text().split()


def test_the_image_installs_no_extras() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n\\]*", dockerfile)
    assert installs and not [line for line in installs if "[" in line], installs


def test_socketio_and_engineio_are_pinned_to_the_minors_transport_was_written_against() -> None:
    pins = {_name(req): req for req in _project()["dependencies"]}  # type: ignore[attr-defined]
    for name in ("python-socketio", "python-engineio"):
        assert re.fullmatch(rf"{name}>=(\d+)\.(\d+),<\1\.(\d+)", pins[name]), pins[name]
    doc = (REPO / "dispatch" / "transport.py").read_text()
    assert "re-read" in doc and "python-engineio" in doc
