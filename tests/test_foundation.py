"""The foundation: health, the error envelope, request ids and production safety."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings, SettingsError


async def test_health_reports_both_stores_with_versions(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["redis"]["status"] == "ok" and body["redis"]["version"].count(".") >= 1
    assert body["mongo"]["status"] == "ok" and body["mongo"]["version"]
    assert body["version"]


async def test_unknown_api_path_is_a_json_404_envelope(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/no/such/thing")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == "not_found"
    assert set(body["error"]) == {"code", "message", "details"}


async def test_wrong_method_is_a_json_405_envelope(client: TestClient[Any, Any]) -> None:
    resp = await client.delete("/api/health")
    assert resp.status == 405
    body = await resp.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert "GET" in body["error"]["details"]["allowed"]


async def test_every_response_carries_a_request_id(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/api/nothing", headers={"X-Request-ID": "<script>"})
    assert resp.headers["X-Request-ID"] != "<script>" and len(resp.headers["X-Request-ID"]) == 16


async def test_landing_page_is_served_at_root(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert "PartyPilot" in await resp.text()


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({"PARTYPILOT_ENV": "production",
                           "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example"})


def test_production_refuses_a_short_secret_and_local_origins() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({"PARTYPILOT_ENV": "production", "JWT_SECRET": "short"})
    with pytest.raises(SettingsError, match="PARTYPILOT_ALLOWED_ORIGINS"):
        Settings.from_env({"PARTYPILOT_ENV": "production", "JWT_SECRET": "x" * 40})


# What production needs besides secrets and origins (tests/test_security_transport.py covers it).
CODE_DELIVERY = {"PARTYPILOT_PUBLIC_URL": "https://partypilot.example", "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
                 "TWILIO_AUTH_TOKEN": "t" * 32, "TWILIO_FROM_NUMBER": "+15005550006", "SMTP_HOST": "smtp.example"}


def test_production_accepts_a_real_secret_and_origin() -> None:
    settings = Settings.from_env({"PARTYPILOT_ENV": "production", "JWT_SECRET": "x" * 40,
                                  "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example",
                                  "STRIPE_SECRET_KEY": "sk_live_" + "y" * 24, **CODE_DELIVERY})
    assert settings.is_production
    assert "x" * 40 not in repr(settings) and "y" * 24 not in repr(settings)


def test_production_refuses_simulated_payments_unless_asked_for() -> None:
    base = {"PARTYPILOT_ENV": "production", "JWT_SECRET": "x" * 40,
            "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example", **CODE_DELIVERY}
    with pytest.raises(SettingsError, match="PARTYPILOT_PAYMENTS_SIMULATOR"):
        Settings.from_env(base)
    with pytest.raises(SettingsError, match="STRIPE_SECRET_KEY"):
        Settings.from_env({**base, "PARTYPILOT_PAYMENTS_SIMULATOR": "false"})
    demo = Settings.from_env({**base, "PARTYPILOT_PAYMENTS_SIMULATOR": "true"})
    assert demo.payments_simulator is True
    razorpay = Settings.from_env({**base, "RAZORPAY_KEY_ID": "rzp_live_x", "RAZORPAY_KEY_SECRET": "s" * 24})
    assert razorpay.razorpay_key_id == "rzp_live_x"


def test_wildcard_origins_are_refused() -> None:
    with pytest.raises(SettingsError, match="PARTYPILOT_ALLOWED_ORIGINS"):
        Settings.from_env({"PARTYPILOT_ALLOWED_ORIGINS": "*"})


def test_cli_refuses_to_start_in_production_with_default_secret() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "partypilot", "serve", "--port", "1"],
        env={"PARTYPILOT_ENV": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "JWT_SECRET" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_file_is_read_and_environment_wins(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9090\nPARTYPILOT_DISPATCH_RADIUS_M=7000\n# comment\n")
    settings = Settings.from_env({"PORT": "9191"}, env_file)
    assert settings.port == 9191
    assert settings.dispatch_radius_m == 7000
