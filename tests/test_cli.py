"""Command-line conveniences: `--version` from the package metadata, `codes` reading the latest
development sign-in codes from the local outbox (and refusing in production), and a busy port said
in one sentence before anything starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from api.auth import SIGN_IN_CODE_PHRASE
from partypilot import cli
from tests.test_foundation import CODE_DELIVERY


def test_version_comes_from_the_package_metadata() -> None:
    proc = subprocess.run([sys.executable, "-m", "partypilot", "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"partypilot {version('partypilot')}"


def _write(outbox: Path, channel: str, *messages: dict[str, str]) -> None:
    outbox.mkdir(parents=True, exist_ok=True)
    with (outbox / f"{channel}.jsonl").open("a", encoding="utf-8") as handle:
        for message in messages:
            handle.write(json.dumps(message) + "\n")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (no .env) whose data dir the CLI uses."""
    monkeypatch.chdir(tmp_path)
    for name in ("PARTYPILOT_ENV", "PARTYPILOT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARTYPILOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_codes_prints_the_latest_sign_in_codes_newest_last(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outbox = workdir / "data" / "outbox"
    _write(outbox, "email",
           {"at": "2026-12-03T10:00:00+00:00", "to": "old@example.test",
            "body": f"111111 {SIGN_IN_CODE_PHRASE}. It expires in 10 min."},
           {"at": "2026-12-03T10:02:00+00:00", "to": "ann@example.test", "body": "Your order is placed"},
           {"at": "2026-12-03T10:03:00+00:00", "to": "ann@example.test",
            "body": f"333333 {SIGN_IN_CODE_PHRASE}. It expires in 10 min."})
    _write(outbox, "sms", {"at": "2026-12-03T10:01:00+00:00", "to": "+15005550006",
                           "body": f"222222 {SIGN_IN_CODE_PHRASE}. It expires in 10 min."})
    assert cli.main(["codes", "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "222222" in lines[0] and "sms" in lines[0] and "+15005550006" in lines[0]
    assert "333333" in lines[1] and "ann@example.test" in lines[1]
    assert cli.main(["codes"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["111111", "222222", "333333"]


def test_codes_says_when_there_are_none(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["codes"]) == 0
    assert "no sign-in codes" in capsys.readouterr().out


def test_codes_is_refused_in_production(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _write(workdir / "data" / "outbox", "email", {"at": "2026-12-03T10:00:00+00:00", "to": "a@example.test",
                                                  "body": f"123456 {SIGN_IN_CODE_PHRASE}."})
    for name, value in {"PARTYPILOT_ENV": "production", "JWT_SECRET": "x" * 40, "PARTYPILOT_PAYMENTS_SIMULATOR": "true",
                        "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example", **CODE_DELIVERY}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["codes"]) == 2
    out = capsys.readouterr()
    assert "123456" not in out.out + out.err
    assert "development" in out.err


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_busy_port_is_one_sentence_with_the_fix(command: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PARTYPILOT_")}
        env.update(HOST="127.0.0.1", PARTYPILOT_DATA_DIR=str(tmp_path / "data"))
        # `run` would start Redis and nx-27017, seed and start a fleet simulation first: it must not get there.
        proc = subprocess.run([sys.executable, "-m", "partypilot", command, "--port", str(port)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"partypilot: port {port} on 127.0.0.1 is already in use")
    assert f"PORT={port + 1}" in proc.stderr  # the fix
    assert not (tmp_path / "data" / "run").exists()  # no local service was started
