"""Long CLI steps show progress: a bar on a terminal, one plain line per step in logs and CI, and
every step ends with what it did and how long it took."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.seed import seed_demo_data, seed_record_count
from core.settings import Settings
from loadtests import fixtures
from partypilot import progress
from tests.helpers import db_of

SUMMARY = re.compile(r"==> (?P<title>[^:]+): (?P<what>.+) in \d+\.\d s")


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as rich asks before drawing a live bar."""

    def isatty(self) -> bool:
        return True


def test_a_plain_stream_gets_one_line_per_step() -> None:
    out = io.StringIO()
    with progress.step("seeding demo data", total=3, unit="records", stream=out) as advance:
        for _ in range(3):
            advance(1)
    with progress.step("starting Redis on loopback", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    first, second = (SUMMARY.fullmatch(line) for line in lines)
    assert first and first["title"] == "seeding demo data" and first["what"] == "3 records"
    assert second and second["what"] == "done"


def test_a_terminal_gets_a_live_bar_that_gives_way_to_the_same_line() -> None:
    out = Terminal()
    with progress.step("creating load-test partner accounts", total=2000, unit="documents", stream=out) as advance:
        advance(1000)
        advance(1000)
    text = out.getvalue()
    assert "creating load-test partner accounts" in text and "2000/2000" in text  # the bar, drawn
    # ...then erased (cursor up, clear the line), and the summary written in its place.
    summary = text.rsplit("\x1b[1A\x1b[2K", 1)[1]
    match = SUMMARY.fullmatch(summary.rstrip("\n"))
    assert match and match["what"] == "2000 documents"


def test_a_failed_step_writes_no_summary() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress.step("seeding demo data", total=3, stream=out) as advance:
        advance(1)
        raise RuntimeError("the store went away")
    assert out.getvalue() == ""


async def test_seeding_reports_every_record_so_the_bar_ends_full(client: TestClient[Any, Any],
                                                                 settings: Settings) -> None:
    db = db_of(client.app)
    dev = settings.model_copy(update={"env": "development"})
    for _ in range(2):  # a second seeding writes nothing, and still counts what it checked
        counted: list[int] = []
        await seed_demo_data(db, dev, counted.append)
        assert sum(counted) == seed_record_count(dev) > 40


async def test_creating_load_test_identities_says_how_many_and_how_long(
        client: TestClient[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ids = await fixtures.create_partners(db_of(client.app), 1500, "progress")
    assert len(ids) == 1500
    lines = capsys.readouterr().err.splitlines()
    summaries = [match.groupdict() for match in map(SUMMARY.fullmatch, lines) if match]
    assert summaries == [{"title": "creating load-test partner accounts", "what": "1500 documents"},
                         {"title": "creating load-test partner profiles", "what": "1500 documents"}]
