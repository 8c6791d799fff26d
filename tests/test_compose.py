"""docker-compose.yml, nginx.conf, the Dockerfile and the app's settings agree with each other.

No Docker engine runs here, so these read the files: a service renamed in one place, a setting
misspelt, a store address pointing nowhere or a port published by mistake fails here, not in a
deploy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from core.settings import Settings, SettingsError, env_name

REPO = Path(__file__).resolve().parent.parent
APPS = ("app1", "app2")
REQUIRED = ("JWT_SECRET", "PARTYPILOT_ALLOWED_ORIGINS", "PARTYPILOT_PUBLIC_URL")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def upstream_servers() -> list[tuple[str, int]]:
    """(host, port) of each server in nginx.conf's app upstream, as deployed (not the test rendering)."""
    conf = (REPO / "nginx.conf").read_text()
    block = re.search(r"upstream\s+partypilot_app\s*\{(?P<body>.*?)\n\s*\}", conf, re.S)
    assert block, "nginx.conf has no upstream partypilot_app"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)\b", block["body"], re.M)
    return [(host, int(port)) for host, port in servers]


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's variable substitution, enough for this file; a missing required variable raises."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = environ.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def app_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service["environment"]
    assert isinstance(env, dict), "write the app environment as a mapping"
    return {str(key): str(value) for key, value in env.items()}


def test_app_services_match_the_nginx_upstream(services: dict[str, dict[str, Any]]) -> None:
    servers = upstream_servers()
    assert [host for host, _ in servers] == list(APPS)
    for host, port in servers:
        assert host in services
        assert app_environment(services[host])["PORT"] == str(port)
        healthcheck = " ".join(services[host]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/api/health" in healthcheck


def test_app_processes_are_identical_replicas(services: dict[str, dict[str, Any]]) -> None:
    first, *others = (services[name] for name in APPS)
    assert all(other == first for other in others)
    assert first["build"] == "."
    assert first["environment"]["PARTYPILOT_ENV"] == "production"


def test_app_environment_names_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    unknown = set(app_environment(services["app1"])) - known
    assert not unknown, f"not settings of the app (see core.settings.env_name): {sorted(unknown)}"


def test_env_example_names_are_settings_or_compose_variables() -> None:
    known = {env_name(field) for field in Settings.model_fields}
    used_by_compose = {match["name"] for match in _VARIABLE.finditer((REPO / "docker-compose.yml").read_text())}
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    assert set(REQUIRED) <= names
    assert not names - known - used_by_compose, sorted(names - known - used_by_compose)


def test_store_addresses_point_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    env = app_environment(services["app1"])
    mongo = urlsplit(env["MONGODB_URI"])
    assert mongo.scheme == "mongodb" and mongo.hostname == "mongo" and mongo.hostname in services
    command = services["mongo"]["command"]
    replica_set = command[command.index("--replSet") + 1]
    assert parse_qs(mongo.query)["replicaSet"] == [replica_set]
    # The member name the set is initiated with must be the address the apps connect to.
    assert f"host: '{mongo.hostname}:{mongo.port or 27017}'" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert f"_id: '{replica_set}'" in " ".join(services["mongo"]["healthcheck"]["test"])

    redis = urlsplit(env["REDIS_URL"])
    assert redis.scheme == "redis" and redis.hostname == "redis" and redis.hostname in services


def test_store_images_are_the_supported_major_versions(services: dict[str, dict[str, Any]]) -> None:
    assert re.fullmatch(r"mongo:7(\.[\w.-]+)?", services["mongo"]["image"])
    assert re.fullmatch(r"redis:7([\w.-]*)", services["redis"]["image"])


def test_secrets_and_origins_are_required_variables(services: dict[str, dict[str, Any]]) -> None:
    env = app_environment(services["app1"])
    for name in REQUIRED:
        assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", env[name]), f"{name} must be written ${{{name}:?why}}"
    with pytest.raises(KeyError, match="JWT_SECRET"):
        interpolate(env["JWT_SECRET"], {})
    with pytest.raises(KeyError, match="JWT_SECRET"):
        interpolate(env["JWT_SECRET"], {"JWT_SECRET": ""})


def test_the_app_accepts_the_compose_environment_in_production(services: dict[str, dict[str, Any]]) -> None:
    given = {"JWT_SECRET": "s" * 48, "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example.com",
             "PARTYPILOT_PUBLIC_URL": "https://partypilot.example.com", "STRIPE_SECRET_KEY": "sk_live_" + "k" * 24,
             "STRIPE_WEBHOOK_SECRET": "whsec_" + "w" * 24, "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
             "TWILIO_AUTH_TOKEN": "t" * 32, "TWILIO_FROM_NUMBER": "+15005550006", "SMTP_HOST": "smtp.example.com"}
    environ = {name: interpolate(value, given) for name, value in app_environment(services["app1"]).items()}
    settings = Settings.from_env(environ)
    assert settings.is_production
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.trust_proxy
    assert settings.stripe_secret_key is not None and settings.stripe_webhook_secret is not None
    assert settings.razorpay_key_id is None  # empty means not configured

    # Without a payment provider, production refuses to start unless the simulator is asked for.
    unpaid = {name: interpolate(value, {**given, "STRIPE_SECRET_KEY": ""})
              for name, value in app_environment(services["app1"]).items()}
    with pytest.raises(SettingsError, match="PARTYPILOT_PAYMENTS_SIMULATOR"):
        Settings.from_env(unpaid)
    demo = {name: interpolate(value, {**given, "STRIPE_SECRET_KEY": "", "PARTYPILOT_PAYMENTS_SIMULATOR": "true"})
            for name, value in app_environment(services["app1"]).items()}
    assert Settings.from_env(demo).payments_simulator is True

    # Without Twilio and SMTP, sign-in codes would land in a file: refused unless asked for by name.
    for missing, setting in ((("TWILIO_ACCOUNT_SID",), "PARTYPILOT_ALLOW_LOCAL_SMS"),
                             (("SMTP_HOST",), "PARTYPILOT_ALLOW_LOCAL_EMAIL")):
        unsent = {name: interpolate(value, {**given, **dict.fromkeys(missing, "")})
                  for name, value in app_environment(services["app1"]).items()}
        with pytest.raises(SettingsError, match=setting):
            Settings.from_env(unsent)
        allowed = {name: interpolate(value, {**given, **dict.fromkeys(missing, ""), setting: "true"})
                   for name, value in app_environment(services["app1"]).items()}
        assert Settings.from_env(allowed).is_production

    # The production check still bites: a short secret is refused, naming the variable.
    weak = {**environ, "JWT_SECRET": "short"}
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env(weak)


def test_every_service_has_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name


def test_start_order_follows_health(services: dict[str, dict[str, Any]]) -> None:
    for app in APPS:
        assert services[app]["depends_on"] == {"mongo": {"condition": "service_healthy"},
                                               "redis": {"condition": "service_healthy"}}
        assert services["nginx"]["depends_on"][app]["condition"] == "service_healthy"


def test_only_nginx_publishes_a_port(services: dict[str, dict[str, Any]]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}
    assert all(str(port).endswith(":80") for port in services["nginx"]["ports"])


def test_data_stores_are_unreachable_from_outside(compose: dict[str, Any],
                                                  services: dict[str, dict[str, Any]]) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("mongo", "redis"):
        assert services[name]["networks"] == ["backend"]
    assert "backend" not in services["nginx"]["networks"]


def test_nginx_runs_the_repository_config(services: dict[str, dict[str, Any]]) -> None:
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    # The app processes listen where the upstream expects them.
    ports = {port for _, port in upstream_servers()}
    assert ports == {int(app_environment(services[app])["PORT"]) for app in APPS}


def test_uploaded_media_are_shared_by_every_app_process(services: dict[str, dict[str, Any]]) -> None:
    data_dir = app_environment(services["app1"])["PARTYPILOT_DATA_DIR"]
    mounts = [set(services[app]["volumes"]) for app in APPS]
    assert all(f"media:{data_dir}" in mount for mount in mounts)


def test_the_image_runs_the_app_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    # Exactly the locked runtime set, every wheel checked against its hash; then the project alone.
    assert "pip install --require-hashes --no-deps -r requirements/runtime.txt" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/api/health", dockerfile, re.M)
    assert re.search(r'^CMD \["python", "-m", "partypilot", "serve"\]', dockerfile, re.M)


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", ".data", ".git"} <= ignored
    # pyproject.toml names README.md as the long description: the build needs it.
    assert "README.md" not in ignored and "*.md" not in ignored
