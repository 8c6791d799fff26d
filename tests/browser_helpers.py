"""Driving the pages in Debian's Chromium through Playwright, with the network sealed off.

One Chromium process per test module (started here with a DevTools port); each test connects to
it over CDP with Playwright's async API in its own event loop, so the app under test and the
browser driver share that loop. Every request that is not for a loopback address is aborted.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import ConsoleMessage, Page, Route, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = (parts.hostname or "").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass
class Chromium:
    process: subprocess.Popen[bytes]
    cdp_url: str


def start_chromium(profile: Path, timeout_s: float = 20.0) -> Chromium:
    """Start headless Chromium with a DevTools port chosen by the browser itself."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/system-deps.sh test")
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Chromium writes the port it picked to DevToolsActivePort in the profile directory.
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            port = int(port_file.read_text().splitlines()[0])
            return Chromium(process, f"http://127.0.0.1:{port}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("chromium did not open its DevTools port")


def stop_chromium(chromium: Chromium, profile: Path) -> None:
    chromium.process.terminate()
    try:
        chromium.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        chromium.process.kill()
        chromium.process.wait()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    profile = tmp_path_factory.mktemp("chromium")
    browser = start_chromium(profile)
    try:
        yield browser
    finally:
        stop_chromium(browser, profile)


@dataclass
class Browsing:
    """A page plus what it logged: console errors, uncaught exceptions, blocked requests."""

    page: Page
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def assert_no_errors(self) -> None:
        assert self.errors == [], f"the page logged errors: {self.errors}"


async def _seal(route: Route) -> None:
    if is_loopback(route.request.url):
        await route.continue_()
    else:
        await route.abort("blockedbyclient")


@contextlib.asynccontextmanager
async def browse(chromium: Chromium, **context_options: Any) -> AsyncIterator[Browsing]:
    """A fresh browser context and page on the module's Chromium; non-loopback traffic aborted."""
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(chromium.cdp_url)
        context = await browser.new_context(**context_options)
        try:
            await context.route("**/*", _seal)
            page = await context.new_page()
            page.set_default_timeout(10_000)
            state = Browsing(page)

            def on_console(message: ConsoleMessage) -> None:
                if message.type != "error":
                    return
                source = message.location.get("url", "") if message.location else ""
                # Blocked outside requests (map tiles) are expected; everything else is a bug.
                if "Failed to load resource" in message.text and source and not is_loopback(source):
                    return
                state.errors.append(f"{message.text} ({source})")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: state.errors.append(f"uncaught: {exc}"))
            page.on("requestfailed", lambda req: None if is_loopback(req.url) else state.blocked.append(req.url))
            yield state
        finally:
            await context.close()
            await browser.close()
