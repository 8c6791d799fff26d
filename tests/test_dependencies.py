"""pyproject.toml is honest and uv.lock holds it to its word.

The runtime declares what the product imports, and nothing for tools: the Docker image installs
exactly `[project] dependencies` (requirements/runtime.txt, exported from uv.lock), so a package the
product imports but only an extra declares would fail in production, and a test or load tool
declared at runtime would ship in the image. Every install (scripts/install.sh, the image) takes
versions and hashes from the lock, and `make run` installs the runtime and the `local` extra only.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("partypilot", "core", "api", "dispatch", "geo", "gateway_clients")
# Declared but never imported by name: used by another package, or data.
IMPLICIT = {"hiredis": "redis-py's C parser", "tzdata": "zoneinfo's data where the OS has none"}
DEV_TOOLS = {"nx-27017", "locust", "playwright", "pytest", "ruff", "mypy", "psutil", "matplotlib", "pyyaml",
             "hypothesis", "schemathesis", "aiosmtpd", "import-linter"}
# What only a developer's machine may hold: the local services, load tools and test tools.
LOAD_AND_DEV = {"locust", "playwright", "pytest", "ruff", "mypy", "hypothesis", "schemathesis", "aiosmtpd",
                "import-linter", "psutil", "matplotlib"}


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
    commands = [line.strip() for line in installs]
    assert "pip install --require-hashes --no-deps -r requirements/runtime.txt" in commands
    assert "pip install --no-deps ." in commands  # the project alone: its dependencies came from the lock


def test_socketio_and_engineio_are_pinned_to_the_minors_transport_was_written_against() -> None:
    pins = {_name(req): req for req in _project()["dependencies"]}  # type: ignore[attr-defined]
    for name in ("python-socketio", "python-engineio"):
        assert re.fullmatch(rf"{name}>=(\d+)\.(\d+),<\1\.(\d+)", pins[name]), pins[name]
    doc = (REPO / "dispatch" / "transport.py").read_text()
    assert "re-read" in doc and "python-engineio" in doc


# uv.lock: versions and hashes for every install, and the sets each target installs.


def _lock() -> dict[str, list[dict[str, Any]]]:
    """uv.lock's packages by normalised name (a universal lock may hold two versions of one)."""
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]:
        packages.setdefault(_name(package["name"]), []).append(package)
    return packages


def _closure(lock: dict[str, list[dict[str, Any]]], roots: list[dict[str, Any]]) -> set[str]:
    """Every package that the lock's dependency entries `roots` pull in, through extras too."""
    seen: set[tuple[str, str]] = set()
    todo = list(roots)
    while todo:
        entry = todo.pop()
        name = _name(entry["name"])
        for extra in ("", *entry.get("extra", ())):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for package in lock[name]:
                todo += package.get("optional-dependencies", {}).get(extra, []) if extra else \
                    package.get("dependencies", [])
    return {name for name, _ in seen}


def _pinned(path: Path) -> dict[str, str]:
    """A requirements file by normalised name, each requirement's lines joined into one."""
    lines = path.read_text().replace("\\\n", " ").splitlines()
    return {_name(line): line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")}


def _project_in_lock(lock: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (project,) = lock["partypilot"]
    assert project["source"] == {"editable": "."}
    return project


def test_the_lock_pins_every_declared_dependency_with_hashes() -> None:
    lock = _lock()
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    for text in [*project["dependencies"], *(req for reqs in extras.values() for req in reqs)]:  # type: ignore[misc]
        requirement = Requirement(text)
        name = _name(requirement.name)
        if name == "partypilot":
            continue  # dev names the other extras
        assert name in lock, f"{name} is declared but not locked: run make lock"
        versions = [package["version"] for package in lock[name]]
        assert any(requirement.specifier.contains(Version(v), prereleases=True) for v in versions), \
            f"uv.lock has {name} {versions}, pyproject.toml asks {requirement.specifier}: run make lock"
    for name, packages in lock.items():
        for package in packages:
            if name == "partypilot":
                continue  # the project itself, installed from the working tree
            files = [*([package["sdist"]] if "sdist" in package else []), *package.get("wheels", [])]
            assert files and all(re.fullmatch(r"sha256:[0-9a-f]{64}", file.get("hash", "")) for file in files), name


def test_the_lock_agrees_with_pyproject() -> None:
    """What `uv sync --locked` checks before every install, here without the network."""
    uv = Path(sys.executable).with_name("uv")
    proc = subprocess.run([str(uv), "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_runtime_install_holds_no_local_load_or_dev_tools() -> None:
    lock = _lock()
    project = _project_in_lock(lock)
    runtime = _closure(lock, project["dependencies"])
    assert {"aiohttp", "python-socketio", "pymongo", "rich"} <= runtime
    assert not runtime & (LOAD_AND_DEV | {"nx-27017"}), sorted(runtime & (LOAD_AND_DEV | {"nx-27017"}))
    # `make run`: the runtime and the embedded MongoDB wire server, no load or test tools.
    local = _closure(lock, [*project["dependencies"], *project["optional-dependencies"]["local"]])
    assert "nx-27017" in local
    assert not local & LOAD_AND_DEV, sorted(local & LOAD_AND_DEV)
    # The image installs requirements/runtime.txt: the same set, exported from the lock, all hashed.
    pinned = _pinned(REPO / "requirements" / "runtime.txt")
    assert set(pinned) == runtime, "requirements/runtime.txt is not the lock's runtime set: run make lock"
    for name, line in pinned.items():
        version = next(package["version"] for package in lock[name])
        assert f"{name}=={version}" in line.replace("_", "-").lower() and "--hash=sha256:" in line, line


def test_uv_itself_is_pinned_with_hashes() -> None:
    pinned = _pinned(REPO / "requirements" / "bootstrap.txt")
    assert list(pinned) == ["uv"]
    assert re.match(r"uv==\d+\.\d+\.\d+ ", pinned["uv"]) and "--hash=sha256:" in pinned["uv"]
    assert pinned["uv"].split()[0] in (REPO / "requirements" / "bootstrap.in").read_text()


def _install_commands(target: str) -> list[str]:
    proc = subprocess.run(["make", "--dry-run", target], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    return [line.strip() for line in proc.stdout.splitlines() if "scripts/install.sh" in line]


def test_each_make_target_installs_only_the_extras_it_needs() -> None:
    assert _install_commands("run") == ["scripts/install.sh local"]
    assert _install_commands("test") == ["scripts/install.sh dev"]
    assert _install_commands("bench") == ["scripts/install.sh local load"]
    assert _install_commands("serve") == ["scripts/install.sh"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "exec make test"


@pytest.fixture
def fake_venv(tmp_path: Path) -> Path:
    """A venv whose uv only records how it was called: scripts/install.sh's decisions, without a network."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    match = re.search(r"^uv==(\S+)", (REPO / "requirements" / "bootstrap.txt").read_text(), re.M)
    assert match
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv / "bin" / "uv").write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "uv {match.group(1)}"; exit 0; }}\n'
                                     f'echo "$*" >> "{venv}/uv.log"\n')
    for program in ("python", "uv"):
        (venv / "bin" / program).chmod(0o755)
    return venv


def _install(venv: Path, *sets: str) -> list[str]:
    """The uv commands one scripts/install.sh run made."""
    log = venv / "uv.log"
    before = log.read_text().splitlines() if log.exists() else []
    proc = subprocess.run([str(REPO / "scripts" / "install.sh"), *sets], env={**os.environ, "VENV": str(venv)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = log.read_text().splitlines() if log.exists() else []
    if after != before:
        assert f"==> Python packages: {' + '.join(('runtime', *sets))} from uv.lock" in proc.stdout
        assert re.search(r"^==> Python packages: done in \d+ s$", proc.stdout, re.M)
    return after[len(before):]


def test_make_run_then_make_test_installs_the_dev_tools_and_nothing_twice(fake_venv: Path) -> None:
    assert _install(fake_venv, "local") == ["sync --locked --inexact --compile-bytecode --extra local"]
    assert _install(fake_venv, "local") == []  # the second run: a stamp says it is done
    assert _install(fake_venv) == []  # serve's runtime is part of every set
    assert _install(fake_venv, "dev") == ["sync --locked --inexact --compile-bytecode --extra dev"]
    assert _install(fake_venv, "local") == []
    assert _install(fake_venv, "local", "load") == []  # dev includes both


def test_make_test_then_make_run_installs_nothing(fake_venv: Path) -> None:
    assert _install(fake_venv, "dev") == ["sync --locked --inexact --compile-bytecode --extra dev"]
    assert _install(fake_venv, "local") == []


def test_a_new_lock_installs_again(fake_venv: Path) -> None:
    stale = fake_venv / ".installed" / "000000000000"
    stale.mkdir(parents=True)
    (stale / "dev").touch()
    assert _install(fake_venv, "local") == ["sync --locked --inexact --compile-bytecode --extra local"]
    assert not stale.exists()


def test_apt_without_root_is_one_sentence_with_the_command() -> None:
    """scripts/system-deps.sh as an ordinary user on a machine without redis-server."""
    # Not pytest's tmp_path: the ordinary user must be able to reach it.
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        _run_system_deps_without_root(Path(tmp))


def _run_system_deps_without_root(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with the shell's helpers and no redis-server
    bin_dir.mkdir()
    for program in ("bash", "id", "dirname"):
        found = subprocess.run(["bash", "-c", f"command -v {program}"], capture_output=True, text=True,
                               check=True).stdout.strip()
        (bin_dir / program).symlink_to(found)
    venv = tmp_path / "venv"  # an existing venv: python3.11-venv is not wanted
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    proc = subprocess.run([*as_user, "env", f"PATH={bin_dir}", f"VENV={venv}", "bash",
                           str(REPO / "scripts" / "system-deps.sh"), "run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == ("Debian's redis-server is missing and installing it needs root: run 'sudo apt-get install "
                           "-y redis-server' (or this make command with sudo), then run make again.\n")
