"""nginx.conf in front of two app processes: REST, static assets, Socket.IO and the auth rate limit.

Runs Debian's nginx (`make test` installs it through scripts/system-deps.sh) with a rendering of the
repository's nginx.conf: only the lines marked for tests change (see the file's header).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from core.settings import env_name
from core.tokens import Role
from partypilot import localservices
from tests.conftest import TEST_SECRET, _uris

REPO = Path(__file__).resolve().parent.parent
NGINX = Path("/usr/sbin/nginx")
TEST_MARK = "# test:"
STARTUP_TIMEOUT_S = 40.0
# Larger than gzip_min_length, compressible like real source.
ASSET = "export const greeting = 'hello from a static module';\n" * 80

TokenFor = Callable[[str, Role], str]


def render(template: str, values: Mapping[str, object]) -> str:
    """The test copy of nginx.conf: each marked line becomes the text after its marker."""
    lines = []
    for line in template.splitlines():
        head, marked, replacement = line.partition(TEST_MARK)
        if marked:
            indent = head[: len(head) - len(head.lstrip())]
            text = string.Template(replacement.strip()).substitute(values)
            if not text:
                continue
            line = indent + text
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    """nginx on `url`, proxying to the app processes listening on `app_ports`."""

    url: str
    app_ports: tuple[int, int]
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _wait_for_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode} before answering:\n{_log_tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    pytest.fail(f"127.0.0.1:{port}{path} did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _start_app(root: Path, name: str, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "partypilot", "serve"],
            env={**env, env_name("port"): str(port)},
            cwd=root,  # no stray .env is read from the checkout
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, log


@pytest.fixture(scope="module")
def stack(services: localservices.LocalServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two `python -m partypilot serve` processes behind nginx, all on loopback; all stopped after."""
    if not NGINX.exists():
        pytest.fail(f"{NGINX} is missing; install it with: scripts/system-deps.sh test (make test does)")
    root = tmp_path_factory.mktemp("nginx")
    frontend = root / "frontend"
    (frontend / "js").mkdir(parents=True)
    (frontend / "js" / "app.js").write_text(ASSET)
    (frontend / "index.html").write_text("<!doctype html><title>PartyPilot</title><h1>PartyPilot</h1>\n")

    mongo_uri, redis_url = _uris(services)
    settings = {
        "env": "test", "host": "127.0.0.1", "mongodb_uri": mongo_uri, "redis_url": redis_url,
        "mongodb_db": f"t_nginx_{uuid.uuid4().hex[:10]}", "jwt_secret": TEST_SECRET, "trust_proxy": "true",
        "data_dir": str(root / "data"), "frontend_dir": str(frontend), "log_level": "WARNING",
    }
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8",
           **{env_name(key): value for key, value in settings.items()}}

    result = Stack(url="", app_ports=(localservices.free_port(), localservices.free_port()), root=root)
    nginx_log = root / "nginx-stderr.log"
    nginx_pids: list[int] = []
    try:
        logs = []
        for index, port in enumerate(result.app_ports, start=1):
            proc, log = _start_app(root, f"app{index}", port, env)
            result.procs.append(proc)
            logs.append(log)
        for proc, log, port in zip(result.procs, logs, result.app_ports, strict=True):
            _wait_for_http(port, "/api/health", proc, log)

        nginx_port = localservices.free_port()
        prefix = root / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        rendered = render((REPO / "nginx.conf").read_text(), {
            "PREFIX": prefix, "NGINX_PORT": nginx_port,
            "APP1_PORT": result.app_ports[0], "APP2_PORT": result.app_ports[1],
        })
        # A path or host added to nginx.conf without a test marker would escape the sandbox.
        assert "/var/" not in rendered and "app1:" not in rendered and "listen 80" not in rendered
        conf.write_text(rendered)
        command = [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        if os.geteuid() == 0:
            # Workers would otherwise run as nobody, who cannot enter pytest's private temp dirs.
            command += ["-g", "user root;"]
        with nginx_log.open("wb") as out:
            nginx = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        result.procs.append(nginx)
        result.url = f"http://127.0.0.1:{nginx_port}"
        _wait_for_http(nginx_port, "/nginx-health", nginx, nginx_log)
        nginx_pids = [nginx.pid, *_children(nginx.pid)]
        yield result
    finally:
        for proc in reversed(result.procs):
            _stop(proc)
    leftovers = [pid for pid in [*nginx_pids, *(p.pid for p in result.procs)] if _alive(pid)]
    assert not leftovers, f"processes left running: {leftovers}"


def _security_headers_present(headers: Mapping[str, str]) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "object-src 'none'" in csp
    # HSTS belongs to TLS only; this listener is plain HTTP.
    assert "Strict-Transport-Security" not in headers


async def test_health_through_proxy_is_json_with_request_id_and_security_headers(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/api/health") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["status"] == "ok"
        assert body["mongo"]["status"] == "ok" and body["redis"]["status"] == "ok"
        # nginx made the id ($request_id, 32 hex digits) and the app echoed it: one id end to end.
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
        assert len(resp.headers.getall("X-Request-ID")) == 1
        assert resp.headers["Cache-Control"] == "no-store"
        _security_headers_present(resp.headers)


async def test_callers_request_id_reaches_the_app_and_comes_back(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/api/health", headers={"X-Request-ID": "trace-42.a_b"}) as resp:
            assert resp.headers.getall("X-Request-ID") == ["trace-42.a_b"]
        # An id the app would refuse is replaced at the edge, so logs on both sides agree.
        async with session.get(f"{stack.url}/api/health", headers={"X-Request-ID": "bad id!"}) as resp:
            assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


async def test_unknown_api_path_keeps_the_json_envelope_through_proxy(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.url}/api/no-such-thing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
        _security_headers_present(resp.headers)


async def test_static_assets_are_gzipped_and_cached_while_pages_are_not(stack: Stack) -> None:
    gzip = {"Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/js/app.js", headers=gzip) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert "Accept-Encoding" in resp.headers["Vary"]
            assert await resp.text() == ASSET
            assert resp.headers["Cache-Control"] == "public, max-age=3600"
            _security_headers_present(resp.headers)
        async with session.get(f"{stack.url}/js/app.js?v=0.1.0", headers=gzip) as resp:
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        async with session.get(f"{stack.url}/js/app.js", headers={"Accept-Encoding": "identity"}) as resp:
            assert "Content-Encoding" not in resp.headers
        async with session.get(f"{stack.url}/", headers=gzip) as resp:
            assert resp.status == 200
            assert resp.headers.getall("Cache-Control") == ["no-cache"]
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "https://tile.openstreetmap.org" in csp


async def test_socketio_websocket_connects_through_proxy_with_a_token(stack: Stack, token_for: TokenFor) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(stack.url, transports=["websocket"], auth={"token": token_for("cust-1", "customer")},
                          wait_timeout=10)
        assert sio.connected
        assert sio.transport() == "websocket"
        assert sio.get_sid()
    finally:
        await sio.disconnect()


async def test_socketio_refuses_a_bad_token_through_proxy(stack: Stack) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []
    sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(stack.url, transports=["websocket"], auth={"token": "not-a-token"}, wait_timeout=10)
    # The app's connect handler answered (not nginx): its refusal names the reason.
    assert refusals and "invalid_token" in str(refusals[0])


async def test_socketio_polling_then_upgrade_stays_on_one_process(stack: Stack, token_for: TokenFor) -> None:
    # A browser's default: open over long-polling, then upgrade to a websocket carrying the session
    # id. Without upstream affinity the upgrade would reach the other process, which does not know
    # the session and refuses it.
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(stack.url, transports=["polling", "websocket"],
                          auth={"token": token_for("cust-2", "customer")}, wait_timeout=10)
        assert sio.connected
        assert sio.transport() == "websocket"
    finally:
        await sio.disconnect()


async def test_otp_burst_is_rate_limited_at_the_proxy_with_the_json_envelope(stack: Stack) -> None:
    url = f"{stack.url}/api/auth/send-otp"
    async with aiohttp.ClientSession() as session:

        async def attempt() -> tuple[int, dict[str, str], Any]:
            async with session.post(url, json={}) as resp:
                body = await resp.json(content_type=None)
                return resp.status, dict(resp.headers), body

        results = await asyncio.gather(*(attempt() for _ in range(40)))
        limited = [(headers, body) for status, headers, body in results if status == 429
                   and body["error"].get("details", {}).get("source") == "proxy"]
        assert 0 < len(limited) < len(results)
        headers, body = limited[0]
        assert body["error"]["code"] == "rate_limited"
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Retry-After"] == "5"
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        assert headers["X-Content-Type-Options"] == "nosniff"

        # The limit is scoped to sign-in: the rest of the API still answers.
        async with session.get(f"{stack.url}/api/health") as resp:
            assert resp.status == 200


async def test_oversized_body_is_refused_at_the_proxy_with_the_json_envelope(stack: Stack) -> None:
    too_large = b"x" * (11 * 1024 * 1024)  # client_max_body_size is 10m
    async with aiohttp.ClientSession() as session, session.post(
        f"{stack.url}/api/orders", data=too_large, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        body = await resp.json(content_type=None)
        assert body["error"]["code"] == "payload_too_large"
        assert body["error"]["details"]["source"] == "proxy"
