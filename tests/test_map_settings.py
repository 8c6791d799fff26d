"""The map's tile server and credit are settings (PARTYPILOT_MAP_TILE_URL, PARTYPILOT_MAP_ATTRIBUTION)
handed to the pages by GET /config.json, and the proxy's Content-Security-Policy admits the default host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings, SettingsError

NGINX_CONF = Path(__file__).resolve().parent.parent / "nginx.conf"
ENV = {"JWT_SECRET": "s" * 48}


async def test_config_json_names_the_tile_server_and_its_credit(client: TestClient[Any, Any]) -> None:
    config = await (await client.get("/config.json")).json()
    assert config["map_tile_url"] == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert config["map_attribution"] == "© OpenStreetMap contributors"


def test_the_tile_server_is_read_from_the_environment_and_checked() -> None:
    settings = Settings.from_env({**ENV, "PARTYPILOT_MAP_TILE_URL": "https://tiles.example.com/v1/{z}/{x}/{y}@2x.png",
                                  "PARTYPILOT_MAP_ATTRIBUTION": "© Example Maps, © OpenStreetMap contributors"})
    assert settings.map_tile_url == "https://tiles.example.com/v1/{z}/{x}/{y}@2x.png"
    assert settings.map_attribution.startswith("© Example Maps")
    # Not a tile template: refused at start-up, naming the variable.
    for bad in ("tiles.example.com/{z}/{x}/{y}.png", "https://tiles.example.com/{x}/{y}.png", "javascript:alert(1)"):
        with pytest.raises(SettingsError, match="PARTYPILOT_MAP_TILE_URL"):
            Settings.from_env({**ENV, "PARTYPILOT_MAP_TILE_URL": bad})


def test_the_proxys_img_src_admits_the_default_tile_host() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    policy = re.search(r'default\s+"(default-src[^"]+)"', conf)
    assert policy, "nginx.conf has no default Content-Security-Policy"
    directives = {d.split()[0]: d.split()[1:] for d in policy.group(1).split(";") if d.strip()}
    parts = urlsplit(Settings.model_fields["map_tile_url"].default)
    assert f"{parts.scheme}://{parts.hostname}" in directives["img-src"]
