"""The foundation: health, the error envelope, request ids and production safety."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from core.logs import make_handler, request_id_var
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


def test_env_file_reads_quotes_and_comments_as_docker_compose_does(tmp_path: Any) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment line\n"
        "export SMTP_HOST=smtp.example  # an inline comment after a space\n"
        "PARTYPILOT_MONGODB_DB=pp#1\n"  # no space before '#': part of the value
        'PARTYPILOT_PUBLIC_URL="http://127.0.0.1:8080/#home"\n'  # quoted: '#' kept
        "EMAIL_FROM='Party Pilot <hi@example.com> $NOT_EXPANDED'\n"  # single quotes: literal
        "PARTYPILOT_ALLOWED_ORIGINS=http://127.0.0.1:8080, http://localhost:9000\n"  # comma form, not JSON
        "TWILIO_FROM_NUMBER=\n"  # empty: not configured
        "COMPOSE_PROJECT_NAME=partypilot\n"  # docker compose's own variable: ignored, not refused
    )
    settings = Settings.from_env({}, env_file)
    assert settings.smtp_host == "smtp.example"
    assert settings.mongodb_db == "pp#1"
    assert settings.public_url == "http://127.0.0.1:8080/#home"
    assert settings.email_from == "Party Pilot <hi@example.com> $NOT_EXPANDED"
    assert settings.allowed_origins == ("http://127.0.0.1:8080", "http://localhost:9000")
    assert settings.twilio_from_number is None


def test_secret_files_are_read_and_the_environment_and_env_file_win(tmp_path: Any) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "JWT_SECRET").write_text("f" * 40 + "\n")  # a trailing newline is not part of it
    (secrets / "STRIPE_SECRET_KEY").write_text("sk_test_from_file")
    (secrets / "SMTP_PASSWORD").write_text("from-file")
    env_file = tmp_path / ".env"
    env_file.write_text("STRIPE_SECRET_KEY=sk_test_from_env_file\nSMTP_PASSWORD=from-env-file\n")
    settings = Settings.from_env({"SMTP_PASSWORD": "from-environment"}, env_file, secrets)
    assert settings.jwt_secret.get_secret_value() == "f" * 40
    assert settings.stripe_secret_key is not None
    assert settings.stripe_secret_key.get_secret_value() == "sk_test_from_env_file"
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "from-environment"
    # A missing directory (no orchestrator) is no error; overrides beat everything.
    assert Settings.from_env({}, None, tmp_path / "none", port=7070).port == 7070


def test_production_is_satisfied_by_secret_files(tmp_path: Any) -> None:
    (tmp_path / "JWT_SECRET").write_text("s" * 48)
    environ = {"PARTYPILOT_ENV": "production", "PARTYPILOT_ALLOWED_ORIGINS": "https://a.example,https://b.example",
               "STRIPE_SECRET_KEY": "sk_live_" + "y" * 24, **CODE_DELIVERY}
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env(environ)
    settings = Settings.from_env(environ, None, tmp_path)
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


def test_settings_built_directly_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4444")
    monkeypatch.setenv("PARTYPILOT_DISPATCH_RADIUS_M", "1")
    assert Settings().port == 8080 and Settings.model_validate({}).dispatch_radius_m == 5000
    assert Settings.from_env({}).port == 8080  # only the mapping it is given


def test_invalid_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"PARTYPILOT_DISPATCH_RADIUS_M: .*integer"):
        Settings.from_env({"PARTYPILOT_DISPATCH_RADIUS_M": "far"})
    with pytest.raises(SettingsError, match="PARTYPILOT_LOG_FORMAT"):
        Settings.from_env({"PARTYPILOT_LOG_FORMAT": "xml"})


def test_log_format_defaults_to_json_in_production_only() -> None:
    assert not Settings.from_env({}).log_json
    assert Settings.from_env({"PARTYPILOT_LOG_FORMAT": "json"}).log_json
    prod = {"PARTYPILOT_ENV": "production", "JWT_SECRET": "x" * 40, "PARTYPILOT_ALLOWED_ORIGINS": "https://p.example",
            "STRIPE_SECRET_KEY": "sk_live_" + "y" * 24, **CODE_DELIVERY}
    assert Settings.from_env(prod).log_json
    assert not Settings.from_env({**prod, "PARTYPILOT_LOG_FORMAT": "text"}).log_json


def _log_lines(json_lines: bool, secrets: list[str], emit: Any) -> list[str]:
    stream = io.StringIO()
    log = logging.getLogger(f"partypilot.test.{uuid.uuid4().hex}")
    log.propagate = False
    log.addHandler(make_handler(json_lines=json_lines, secrets=secrets, stream=stream))
    log.setLevel(logging.INFO)
    emit(log)
    return stream.getvalue().splitlines()


def test_json_logs_are_one_object_a_line_with_request_id_and_context() -> None:
    token = request_id_var.set("req-42")

    def emit(log: logging.Logger) -> None:
        log.info("order %s placed\nsecond line", "o1", extra={"route": "/api/orders", "status": 201,
                                                            "latency_ms": 12.5, "user_id": "u1"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    try:
        lines = _log_lines(True, [], emit)
    finally:
        request_id_var.reset(token)
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["message"] == "order o1 placed\nsecond line"
    assert first["level"] == "INFO" and first["logger"].startswith("partypilot.test.")
    assert first["request_id"] == "req-42"
    assert (first["route"], first["status"], first["latency_ms"], first["user_id"]) == ("/api/orders", 201, 12.5, "u1")
    assert datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]
    # Outside a request there is no id, rather than a placeholder.
    assert orjson.loads(_log_lines(True, [], lambda log: log.warning("idle"))[0])["request_id"] is None


@pytest.mark.parametrize("json_lines", [True, False])
def test_logs_never_carry_secrets_or_tokens(json_lines: bool) -> None:
    secret = "sk_live_" + "z" * 24
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"

    def emit(log: logging.Logger) -> None:
        log.warning("stripe said no for key %s", secret)
        log.info("header Authorization: Bearer abc.def-ghi and link %s", jwt_like,
                 extra={"token": jwt_like})

    text = "\n".join(_log_lines(json_lines, [secret, "short"], emit))
    assert secret not in text and jwt_like not in text and "abc.def-ghi" not in text
    assert text.count("[redacted]") >= 3


def test_settings_list_their_secret_values_for_the_redactor() -> None:
    settings = Settings.from_env({"STRIPE_SECRET_KEY": "sk_test_" + "k" * 24, "RAZORPAY_KEY_ID": "rzp_id"})
    assert "sk_test_" + "k" * 24 in settings.secret_values()
    assert "rzp_id" not in settings.secret_values()  # an id, not a secret
