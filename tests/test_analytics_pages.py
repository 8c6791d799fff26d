"""The console's Analytics tab in headless Chromium: charts for a date range, and the CSV."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from core.jsonutil import iso
from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Chromium, browse, chromium
from tests.test_console_pages import DESKTOP, add_order
from tests.test_pages import Site, add_partner, sign_in, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]

DAY1 = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)  # 1 December, 00:00 in Bengaluru


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def test_charts_render_for_a_date_range_and_the_figures_download_as_csv(site: Site, chromium: Chromium) -> None:
    ravi = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    for day, status in ((0, "completed"), (0, "completed"), (1, "cancelled"), (2, "completed")):
        created = DAY1 + timedelta(days=day, hours=3)
        await add_order(site, status=status, partner_id=ravi, created_at=iso(created), history=[
            {"status": "placed", "at": iso(created), "by_role": "customer"},
            {"status": "assigned", "at": iso(created + timedelta(seconds=45)), "by_role": "partner", "by": ravi}])
    async with browse(chromium, **DESKTOP, accept_downloads=True) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.get_by_role("tab", name="Analytics").click()
        await page.locator("#chart-orders canvas").wait_for()  # the default range draws at once
        panel = page.locator("#panel-analytics")
        await panel.get_by_label("From", exact=True).fill("2026-12-01")
        await panel.get_by_label("To", exact=True).fill("2026-12-03")
        await panel.get_by_label("Service area", exact=True).select_option("Bengaluru Central")
        await panel.get_by_role("button", name="Show").click()
        totals = page.locator("#series-totals")
        await totals.get_by_text("4", exact=True).wait_for()
        text = await totals.inner_text()
        assert "₹45,000.00" in text and "45 s" in text and "Cancellations" in text, text
        for chart in ("orders", "revenue", "assign", "ontime", "partners"):
            assert await page.locator(f"#chart-{chart} canvas").is_visible(), chart
        orders_chart = page.get_by_role("img", name="Orders and cancellations by day, 2026-12-01 to 2026-12-03")
        assert await orders_chart.is_visible()
        assert "Asia/Kolkata" in await page.locator("#series-note").inner_text()

        async with page.expect_download() as waiting:
            await page.get_by_role("button", name="Download CSV").click()
        download = await waiting.value
        assert download.suggested_filename == "stats-day-2026-12-01-2026-12-03.csv"
        lines = Path(await download.path()).read_text(encoding="utf-8").splitlines()
        assert lines[1].startswith("2026-12-01,") and ",30000.00,INR," in lines[1]
        assert lines[-1].startswith("total,,4,45000.00,INR,1,")

        # By hour, a range longer than a week is cut to the last 7 days rather than refused.
        await panel.get_by_label("From", exact=True).fill("2026-11-01")
        await panel.get_by_label("By", exact=True).select_option("hour")
        assert await panel.get_by_label("From", exact=True).input_value() == "2026-11-27"
        b.assert_no_errors()
