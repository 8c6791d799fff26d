"""The load-test tooling: the locustfile loads with well-formed users, the bench parses its
arguments and reports figures truthfully, its HTTP generator reads responses correctly, and its
lean Socket.IO client speaks the protocol to the real app and to python-socketio, and copes with
frames cut anywhere, fragmented, or sent to close the connection."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.contracts import FLEET_ONLINE, PARTNER_STATE
from core.jsonutil import now_ms
from loadtests import bench
from loadtests.baselines import catalog_app
from loadtests.harness import WorkerControl
from loadtests.httpload import build_request, closed_loop
from loadtests.report import Figure, ScenarioResult, format_table, percentile, write_json
from loadtests.sockets import LIVE_INTERVAL_S, ping_worker
from loadtests.wsclient import ENGINEIO_PATH, LeanSocket, Refused
from tests.dispatch_helpers import CENTER, Env, make_partner, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]

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


# --- the lean Socket.IO client (loadtests.wsclient) and the pinging partners ----------------------

async def test_lean_socket_sends_fixes_to_the_app_and_reads_its_acks(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = LeanSocket()
    await sock.connect(env.url, {"token": env.token(pid, "partner")})
    try:
        assert sock.connected
        ts = now_ms() - 60_000
        fix = {"lat": CENTER[0], "lng": CENTER[1], "ts": ts}
        ack = await sock.call("location", fix)
        assert ack["ok"] is True, ack
        state = await env.redis.hgetall(PARTNER_STATE.format(partner_id=pid))
        assert state["ts"] == str(ts)
        again = await sock.call("location", fix)
        assert again["ok"] is False and again["error"]["code"] == "stale_ts"
        assert (await sock.call("availability", {"online": True}))["ok"]
        assert await env.redis.sismember(FLEET_ONLINE, pid)
    finally:
        await sock.close()
    assert not sock.connected


async def test_lean_socket_is_refused_with_the_apps_code(start_env: StartEnv) -> None:
    env = await start_env()
    pending = await make_partner(env.db, status="pending")
    cases = [({}, "unauthorized"), ({"token": "not-a-jwt"}, "invalid_token"),
             ({"token": env.token(pending, "partner")}, "partner_not_approved")]
    for auth, code in cases:
        with pytest.raises(Refused) as refused:
            await LeanSocket().connect(env.url, auth)
        assert refused.value.code == code, auth
        assert str(refused.value).startswith(f"{code}: ")


class Control(WorkerControl):
    """WorkerControl for a worker run in the test's own loop: each phase waits for `go()`."""

    def __init__(self) -> None:
        self.index = 0
        self.info: dict[str, Any] = {}
        self.phases: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
        self.waited = 0

    def ready(self, **info: Any) -> None:
        self.info = info

    async def wait_go(self) -> None:
        self.waited += 1
        await self.phases[self.waited - 1].wait()

    def go(self) -> None:
        next(e for e in self.phases if not e.is_set()).set()


async def test_ping_worker_reports_acks_refusals_and_failed_connects(start_env: StartEnv) -> None:
    env = await start_env()
    pids = [await make_partner(env.db) for _ in range(2)]
    partners = [[pid, env.token(pid, "partner"), CENTER[0], CENTER[1]] for pid in pids]
    partners.append([pids[0] + "-bad", "not-a-jwt", CENTER[0], CENTER[1]])
    ctl = Control()
    ctl.go()
    out = await ping_worker({"url": env.url, "partners": partners, "mode": "paced", "rate": 5.0, "duration": 1.0,
                             "online": True, "log_sent": True, "log_ids": [pids[0]]}, ctl)
    assert ctl.info["connected"] == 2
    assert ctl.info["failures"] == {"Refused: invalid_token: the access token is invalid": 1}
    assert set(await env.redis.smembers(FLEET_ONLINE)) == set(pids)
    assert out["errors"] == {} and out["interval"] == pytest.approx(0.2)
    assert 4 <= out["ok"] <= 12 and len(out["latencies_ms"]) == len(out["ok_times"]) == out["ok"]
    assert set(out["last_ts"]) == set(pids)
    for pid, ts in out["last_ts"].items():
        assert (await env.redis.hget(PARTNER_STATE.format(partner_id=pid), "ts")) == str(ts)
    # Paced fixes replay a track 1 s apart in ts; only the listed partner's fixes are logged.
    logged = out["sent_log"]
    assert {row[0] for row in logged} == {pids[0]} and logged[-1][1] == out["last_ts"][pids[0]]
    assert all(later[1] - earlier[1] == 1000 for earlier, later in itertools.pairwise(logged))


async def test_ping_worker_stops_as_soon_as_it_is_released(start_env: StartEnv) -> None:
    env = await start_env()
    pids = [await make_partner(env.db) for _ in range(8)]
    partners = [[pid, env.token(pid, "partner"), CENTER[0], CENTER[1]] for pid in pids]
    ctl = Control()
    ctl.go()
    worker = asyncio.create_task(ping_worker({"url": env.url, "partners": partners, "mode": "live",
                                              "duration": 3600.0, "until_released": True}, ctl))
    await asyncio.sleep(LIVE_INTERVAL_S + 0.3)  # every partner has sent and is pausing
    released_at = time.monotonic()
    ctl.go()
    out = await asyncio.wait_for(worker, 5)
    # Pauses between live fixes are 1.02 s long: the release cuts them short.
    assert time.monotonic() - released_at < 0.5
    assert out["seconds"] < LIVE_INTERVAL_S + 0.8
    assert out["errors"] == {} and set(out["last_ts"]) == set(pids)


def _echo_server(**options: Any) -> tuple[web.Application, list[Any]]:
    """python-socketio answering `echo` after data["delay"] s (pushing `news` first), recording
    `note` emits, and disconnecting on `leave`."""
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False, **options)
    app = web.Application()
    sio.attach(app)
    notes: list[Any] = []

    async def echo(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(data["delay"])
        await sio.emit("news", data, to=sid)
        return data

    async def note(sid: str, data: Any) -> None:
        notes.append(data)

    async def leave(sid: str, data: Any) -> None:
        await sio.disconnect(sid)

    sio.on("echo", echo)
    sio.on("note", note)
    sio.on("leave", leave)
    return app, notes


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app)
    await server.start_server()
    return server


async def test_lean_socket_matches_acks_by_id_and_hands_pushes_to_handlers() -> None:
    app, notes = _echo_server()
    server = await _serve(app)
    sock = LeanSocket()
    news: list[Any] = []
    sock.on("news", news.append)
    try:
        await sock.connect(f"http://127.0.0.1:{server.port}", {"token": "t"})
        # The server answers these in the opposite order: each call still gets its own ack.
        calls = [{"n": n, "delay": delay} for n, delay in enumerate((0.3, 0.15, 0.0))]
        assert await asyncio.gather(*(sock.call("echo", c) for c in calls)) == calls
        assert news == calls[::-1]
        await sock.emit("note", {"hello": 1})
        with pytest.raises(TimeoutError):
            await sock.call("echo", {"n": 9, "delay": 0.5}, timeout=0.1)
        assert await sock.call("echo", {"n": 10, "delay": 0.0}) == {"n": 10, "delay": 0.0}
        assert notes == [{"hello": 1}]
        # A server-side disconnect fails the pending call at once, not after its timeout.
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await sock.call("leave", {}, timeout=3)
        assert time.monotonic() - started < 2 and not sock.connected
        with pytest.raises(ConnectionError):
            await sock.call("echo", {"n": 11, "delay": 0.0})
    finally:
        await sock.close()
        await server.close()


async def test_lean_socket_answers_the_servers_heartbeat() -> None:
    # A client that stays silent for ping interval + ping timeout (0.4 s here) is dropped.
    app, _ = _echo_server(ping_interval=0.2, ping_timeout=0.2)
    server = await _serve(app)
    url = f"http://127.0.0.1:{server.port}"
    sock = LeanSocket()
    try:
        # The premise: no pong, no socket.
        async with aiohttp.ClientSession() as session, session.ws_connect(url + ENGINEIO_PATH) as mute:
            assert (await mute.receive_str()).startswith("0")
            await mute.send_str("40{}")
            assert (await mute.receive_str()).startswith("40")
            assert await mute.receive_str() == "2"
            assert (await asyncio.wait_for(mute.receive(), 2)).type is aiohttp.WSMsgType.CLOSE
        await sock.connect(url, {})
        await asyncio.sleep(1.5)  # several heartbeats, nothing else sent
        assert sock.connected
        assert await sock.call("echo", {"delay": 0.0}) == {"delay": 0.0}
    finally:
        await sock.close()
        await server.close()


_EIO_OPEN = '0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
Script = Callable[[web.WebSocketResponse], Awaitable[None]]


async def _engineio_stub(script: Script) -> TestServer:
    """A bare websocket endpoint that opens an Engine.IO session, accepts the Socket.IO connect and
    then runs `script`, for frames python-socketio would never send."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_str(_EIO_OPEN)
        assert (await ws.receive_str()).startswith("40")
        await ws.send_str('40{"sid":"n"}')
        await script(ws)
        return ws

    app = web.Application()
    app.router.add_get("/socket.io/", handler)
    return await _serve(app)


def _server_frame(payload: bytes, first_byte: int = 0x81) -> bytes:
    """An unmasked frame as a server sends it (0x81: a whole text frame)."""
    size = len(payload)
    if size < 126:
        return bytes((first_byte, size)) + payload
    if size < 65536:
        return bytes((first_byte, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first_byte, 127)) + size.to_bytes(8, "big") + payload


async def _until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_lean_socket_reads_frames_cut_anywhere_long_or_fragmented() -> None:
    received: list[aiohttp.WSMessage] = []
    close_codes: list[int | None] = []

    async def record(ws: web.WebSocketResponse) -> None:
        async for msg in ws:  # pongs included (autoping is off); ends at the client's close frame
            received.append(msg)
        close_codes.append(ws.close_code)

    server = await _engineio_stub(record)
    sock = LeanSocket()
    news: list[Any] = []
    sock.on("news", news.append)
    try:
        await sock.connect(f"http://127.0.0.1:{server.port}", {})
        call = asyncio.ensure_future(sock.call("echo", {}))
        await _until(lambda: bool(received))  # the call went out, with ack id 1
        medium, long = "m" * 300, "l" * 70_000  # 16-bit and 64-bit extended lengths
        stream = b"".join([
            _server_frame(b'431[{"n":1}]'),
            _server_frame(b'42["news","%s"]' % medium.encode()),
            _server_frame(b'42["news","%s"]' % long.encode()),
            _server_frame(b'42["ne', 0x01),  # a text message in two fragments, a ping between them
            _server_frame(b"hb", 0x89),
            _server_frame(b'ws",3]', 0x80),
            _server_frame(b"\x00\x01", 0x82),  # a binary message: ignored
        ])
        for i in range(len(stream)):  # one byte per read: every header and payload is cut
            sock.data_received(stream[i:i + 1])
        assert await call == {"n": 1}
        assert news == [medium, long, 3]
        assert sock.connected
        await _until(lambda: len(received) == 2)
        assert received[0].data.startswith("421[")
        assert received[1].type is aiohttp.WSMsgType.PONG and received[1].data == b"hb"
    finally:
        await sock.close()
        await server.close()
    # close() leaves the namespace, then closes the websocket normally.
    assert [m.data for m in received[2:]] == ["41"] and close_codes == [1000]


async def test_lean_socket_answers_pings_and_the_servers_close_frame() -> None:
    seen: list[Any] = []

    async def ping_then_close(ws: web.WebSocketResponse) -> None:
        seen.append(await ws.receive())  # the call, left unanswered
        await ws.ping(b"hb")
        seen.append(await ws.receive())
        started = time.monotonic()
        await ws.close(code=4001, message=b"bye")  # waits for the client's close frame (10 s at most)
        seen.append(time.monotonic() - started)

    server = await _engineio_stub(ping_then_close)
    sock = LeanSocket()
    try:
        await sock.connect(f"http://127.0.0.1:{server.port}", {})
        started = time.monotonic()
        with pytest.raises(ConnectionError):  # the close fails the pending call at once
            await sock.call("echo", {}, timeout=5)
        assert time.monotonic() - started < 2 and not sock.connected
        await _until(lambda: len(seen) == 3)
        call, pong, close_wait = seen
        assert call.data.startswith("421[")
        assert pong.type is aiohttp.WSMsgType.PONG and pong.data == b"hb"
        assert close_wait < 2  # the client answered the close frame
        with pytest.raises(ConnectionError):
            await sock.call("echo", {})
    finally:
        await sock.close()  # already closed: returns at once
        await server.close()


async def test_lean_socket_reports_a_refused_websocket_upgrade() -> None:
    server = await _serve(web.Application())  # no Engine.IO endpoint: 404
    try:
        with pytest.raises(ConnectionError, match=r"refused the websocket upgrade: HTTP/1\.1 404"):
            await LeanSocket().connect(f"http://127.0.0.1:{server.port}", {})
    finally:
        await server.close()


async def test_lean_socket_drops_a_connection_that_breaks_the_protocol() -> None:
    async def wait(ws: web.WebSocketResponse) -> None:
        await ws.receive()

    server = await _engineio_stub(wait)
    sock = LeanSocket()
    try:
        await sock.connect(f"http://127.0.0.1:{server.port}", {})
        call = asyncio.ensure_future(sock.call("echo", {}, timeout=5))
        await asyncio.sleep(0)
        sock.data_received(_server_frame(b"?", 0x83))  # a reserved opcode
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(call, 2)
        assert not sock.connected
    finally:
        await sock.close()
        await server.close()


async def test_pacer_shares_one_timer_per_tick_never_wakes_early_and_releases_everyone() -> None:
    from loadtests.sockets import Pacer

    pacer = Pacer()
    tick = Pacer.TICK_S
    boundary = (math.ceil(time.monotonic() / tick) + 5) * tick
    deadlines = [boundary + tick * part for part in (0.1, 0.5, 0.9)]  # all end on the tick after `boundary`
    woke: list[float] = []

    async def pause(deadline: float) -> None:
        await pacer.pause_until(deadline)
        woke.append(time.monotonic())

    pauses = asyncio.gather(*(pause(d) for d in deadlines))
    await asyncio.sleep(0)
    assert len(pacer._ticks) == 1  # one timer for the three pauses
    await pauses
    assert min(woke) >= deadlines[-1] - 0.002  # none before its deadline (the loop's ms timer resolution)
    pending = asyncio.ensure_future(pacer.pause_until(time.monotonic() + 60))
    await asyncio.sleep(0)
    pacer.set()
    await asyncio.wait_for(pending, 5)
    await asyncio.wait_for(pacer.pause_until(time.monotonic() + 60), 5)  # after the release: at once
