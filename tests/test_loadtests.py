"""The load-test tooling: the locustfile loads with well-formed users, the bench parses its
arguments and reports figures truthfully, and its HTTP generator reads responses correctly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from loadtests import bench
from loadtests.baselines import catalog_app
from loadtests.httpload import build_request, closed_loop
from loadtests.report import Figure, ScenarioResult, format_table, percentile, write_json

ROOT = Path(__file__).resolve().parent.parent

# Locust monkey-patches the standard library with gevent on import, which would break every
# asyncio test after it: the locustfile is inspected in a child interpreter.
_INSPECT = """
import json, locust
from locust import User
from locust.contrib.socketio import SocketIOUser
import loadtests.locustfile as lf
out = []
for cls in lf.USER_CLASSES:
    out.append({
        "name": cls.__name__, "abstract": cls.abstract, "weight": cls.weight,
        "is_user": issubclass(cls, User), "socketio": issubclass(cls, SocketIOUser),
        "tasks": [getattr(t, "__name__", str(t)) for t in cls.tasks],
        "wait": cls.wait_time(cls.__new__(cls)) if hasattr(cls, "wait_time") else None,
        "options": getattr(cls, "options", None),
    })
print(json.dumps(out))
"""


def test_locustfile_defines_partner_customer_admin_and_tracking_users() -> None:
    done = subprocess.run([sys.executable, "-c", _INSPECT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PP_TOKENS_FILE": "/nonexistent/tokens.json", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    users = {u["name"]: u for u in json.loads(done.stdout.strip().splitlines()[-1])}
    assert set(users) == {"PartnerUser", "CustomerUser", "AdminUser", "TrackingCustomerUser"}
    for user in users.values():
        assert user["is_user"] and not user["abstract"] and user["weight"] >= 1 and user["tasks"]
        assert user["wait"] is not None and user["wait"] >= 0
    # Sockets: partners, admins and trackers speak Socket.IO over websocket without reconnect storms.
    for name in ("PartnerUser", "AdminUser", "TrackingCustomerUser"):
        assert users[name]["socketio"]
        assert users[name]["options"]["reconnection"] is False
    assert not users["CustomerUser"]["socketio"]
    assert "ping" in users["PartnerUser"]["tasks"]
    assert {"browse", "order"} <= set(users["CustomerUser"]["tasks"])
    # Partners ping about once a second, never faster than the server's one-fix-per-second rule.
    assert 1.0 <= users["PartnerUser"]["wait"] <= 1.5


def test_bench_arguments_select_scenarios() -> None:
    args = bench.build_parser().parse_args(["--only", "ingest", "--only", "matching", "--quick"])
    assert args.quick is True
    assert [s.name for s in bench.selected(args.only)] == ["ingest", "matching"]
    everything = bench.build_parser().parse_args([])
    assert [s.name for s in bench.selected(everything.only)] == list(bench.SCENARIO_NAMES)
    assert everything.output == Path(".data/bench/results.json")


def test_bench_refuses_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--only", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_figures_judge_targets_and_same_run_ratios() -> None:
    fast = Figure("pings", 6000, "pings/s", ">=", 5000, baseline=10000, ratio_target=0.5)
    slow_ratio = Figure("pings", 6000, "pings/s", ">=", 5000, baseline=20000, ratio_target=0.5)
    latency = Figure("p99", 120, "ms", "<=", 100)
    missing = Figure("p99", None, "ms", "<=", 100)
    info = Figure("p50", 4.2, "ms")
    assert fast.status == "pass" and fast.ratio == pytest.approx(0.6)
    assert slow_ratio.status == "FAIL"  # the absolute target is met but not the ratio
    assert latency.status == "FAIL"
    assert missing.status == "n/a"
    assert info.status == "info"


def test_result_table_shows_value_target_baseline_ratio_and_status(tmp_path: Path) -> None:
    ok = ScenarioResult("catalog", "catalog")
    ok.add(Figure("GET /api/packages", 13145.2, "req/s", ">=", 1500, baseline=27153.0, note="34 packages"))
    failed = ScenarioResult("fanout", "fanout")
    failed.add(Figure("ping -> admin map p99", 3380, "ms", "<=", 1500))
    broken = ScenarioResult("matching", "matching", error="RuntimeError: no offers")
    skipped = ScenarioResult("orders", "orders", skipped="POST /api/orders is not in /api/openapi.json yet")
    table = format_table([ok, failed, broken, skipped])
    lines = table.splitlines()
    assert lines[0].split() == ["scenario", "figure", "value", "target", "baseline", "ratio", "(target)", "status"]
    row = next(line for line in lines if line.startswith("catalog"))
    assert "13,145 req/s" in row and ">= 1,500 req/s" in row and "27,153 req/s" in row and "0.48" in row
    assert row.rstrip().endswith("pass")
    assert next(line for line in lines if line.startswith("fanout")).rstrip().endswith("FAIL")
    assert "ERROR: RuntimeError: no offers" in table and "SKIPPED: POST /api/orders" in table
    assert "[catalog] GET /api/packages: 34 packages" in table

    out = tmp_path / "bench" / "results.json"
    write_json(out, [ok, failed, broken, skipped], {"quick": True})
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] is True
    statuses = {s["name"]: s["status"] for s in data["scenarios"]}
    assert statuses == {"catalog": "pass", "fanout": "FAIL", "matching": "error", "orders": "skipped"}
    first = data["scenarios"][0]["figures"][0]
    assert first["ratio"] == pytest.approx(13145.2 / 27153.0) and first["status"] == "pass"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) is None


async def test_http_generator_reads_whole_responses_on_keep_alive() -> None:
    body = json.dumps({"items": [{"id": n} for n in range(50)]}).encode()
    server = TestServer(catalog_app(body))
    await server.start_server()
    try:
        url = str(server.make_url("/api/packages"))
        result: dict[str, Any] = await closed_loop(url, connections=2, duration=0.3, request=build_request(url),
                                                   warmup=0.05)
        missing = await closed_loop(str(server.make_url("/nope")), connections=1, duration=0.1, warmup=0.0)
    finally:
        await server.close()
    assert result["ok"] > 0 and result["errors"] == 0
    assert set(result["statuses"]) == {"200"}
    # Every counted response was read to its end: bytes per response = headers + the whole body.
    per_response = result["bytes"] / result["ok"]
    assert len(body) < per_response < len(body) + 400
    assert missing["ok"] == 0 and missing["errors"] > 0 and set(missing["statuses"]) == {"404"}
