"""/api/docs: the vendored Swagger UI in headless Chromium, under nginx's content-security policy,
signed in with a real session's bearer token, running a call with "Try it out"."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Route
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Chromium, browse, chromium, is_loopback
from tests.test_pages import Site, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

ROOT = Path(__file__).resolve().parents[1]
# Where the walk-through leaves its picture, for a person to look at (unset: none is taken).
SCREENSHOT = os.environ.get("PP_APIDOCS_SCREENSHOT")


def nginx_csp() -> str:
    """The policy nginx.conf sends with every page (its `default` branch): the docs must work under it."""
    match = re.search(r'default\s+"(default-src[^"]+)"', (ROOT / "nginx.conf").read_text())
    assert match, "nginx.conf has no default Content-Security-Policy"
    return match.group(1)


async def sign_in(site: Site, email: str) -> dict[str, Any]:
    """A real session: a one-time code by email, answered in development with `dev_code`."""
    async with aiohttp.ClientSession() as http:
        async with http.post(site.url + "/api/auth/send-otp", json={"email": email}) as res:
            assert res.status == 200, await res.text()
            code = (await res.json())["dev_code"]
        async with http.post(site.url + "/api/auth/verify-otp", json={"email": email, "code": code}) as res:
            assert res.status == 200, await res.text()
            grant: dict[str, Any] = await res.json()
            return grant


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def test_docs_page_authorizes_with_a_bearer_token_and_tries_a_call(site: Site, chromium: Chromium) -> None:
    grant = await sign_in(site, "docs-reader@example.com")
    csp = nginx_csp()

    async def with_csp(route: Route) -> None:
        if not is_loopback(route.request.url):
            await route.abort("blockedbyclient")
            return
        response = await route.fetch()
        await route.fulfill(response=response, headers={**response.headers, "content-security-policy": csp})

    async with browse(chromium, viewport={"width": 1280, "height": 1400}) as b:
        page = b.page
        await page.route("**/*", with_csp)
        await page.goto(site.url + "/api/docs")
        operations = page.locator("#swagger-ui .opblock")
        await operations.first.wait_for()
        assert await operations.count() > 50
        assert await page.locator("#operations-orders-create_order").count() == 1

        # Without a token the guarded call is refused: what follows proves "Authorize" is what signs in.
        profile = page.locator("#operations-users-get_profile")
        await profile.locator(".opblock-summary").click()
        await profile.get_by_role("button", name="Try it out").click()
        await profile.get_by_role("button", name="Execute").click()
        status = profile.locator(".live-responses-table .response .response-col_status")
        await status.first.wait_for()
        assert (await status.first.inner_text()).strip() == "401"

        await page.locator(".auth-wrapper button.authorize").click()
        bearer = page.locator(".dialog-ux .auth-container").filter(has_text="bearer (http, Bearer)")
        await bearer.locator("input").fill(grant["access_token"])
        await bearer.locator("button.modal-btn.authorize").click()
        await bearer.locator("button.modal-btn.auth").filter(has_text="Logout").wait_for()  # now authorized
        await page.locator(".dialog-ux button.close-modal").click()

        await profile.get_by_role("button", name="Execute").click()
        await status.filter(has_text="200").first.wait_for()
        body = await profile.locator(".live-responses-table .response-col_description pre").first.inner_text()
        assert "docs-reader@example.com" in body and grant["user"]["id"] in body
        if SCREENSHOT:
            await profile.scroll_into_view_if_needed()
            await page.screenshot(path=SCREENSHOT, full_page=False)
        # The anonymous attempt above is the one error the console may show; no CSP refusal, no other.
        b.errors = [e for e in b.errors if not re.match(r"Failed to load resource: .* 401 .*/api/users/profile", e)]
        b.assert_no_errors()


async def test_signing_in_with_try_it_out_authorizes_the_following_calls(site: Site, chromium: Chromium) -> None:
    async with aiohttp.ClientSession() as http, http.post(site.url + "/api/auth/send-otp",
                                                          json={"email": "try-it@example.com"}) as res:
        code = (await res.json())["dev_code"]
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/api/docs")
        verify = page.locator("#operations-auth-verify_otp")
        await verify.wait_for()
        await verify.locator(".opblock-summary").click()
        await verify.get_by_role("button", name="Try it out").click()
        await verify.locator("textarea.body-param__text").fill(f'{{"email": "try-it@example.com", "code": "{code}"}}')
        await verify.get_by_role("button", name="Execute").click()
        await verify.locator(".live-responses-table .response-col_status").filter(has_text="200").first.wait_for()
        # The answer's access token went into "Authorize": the lock shows it, and a guarded call passes.
        await page.locator(".auth-wrapper button.authorize.locked").wait_for()
        profile = page.locator("#operations-users-get_profile")
        await profile.locator(".opblock-summary").click()
        await profile.get_by_role("button", name="Try it out").click()
        await profile.get_by_role("button", name="Execute").click()
        await profile.locator(".live-responses-table .response-col_status").filter(has_text="200").first.wait_for()
        b.assert_no_errors()
