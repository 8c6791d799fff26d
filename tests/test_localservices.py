"""Local services: health follows Redis down and up; the launcher leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from partypilot import localservices
from partypilot.app import create_app


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.split(") ", 1)[1].startswith("Z")


async def test_health_degrades_while_redis_is_down_and_recovers(
    aiohttp_client: Any, make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    port = localservices.free_port()
    redis_proc = localservices.start_redis(tmp_path, port, persist=False)
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    client = await aiohttp_client(create_app(settings))
    try:
        assert (await client.get("/api/health")).status == 200

        localservices._terminate(redis_proc.pid)
        resp = await client.get("/api/health")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "degraded"
        assert body["down"] == ["redis"]
        assert body["mongo"]["status"] == "ok"

        redis_proc = localservices.start_redis(tmp_path, port, persist=False)
        resp = await client.get("/api/health")
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    finally:
        await client.close()
        localservices._terminate(redis_proc.pid)


def test_services_script_stops_exactly_what_it_started(tmp_path: Path) -> None:
    redis_port, mongo_port = localservices.free_port(), localservices.free_port()
    cli = [sys.executable, "-m", "partypilot", "services"]
    args = ["--dir", str(tmp_path), "--redis-port", str(redis_port), "--mongo-port", str(mongo_port)]
    out = subprocess.run([*cli, "start", *args, "--ephemeral"], capture_output=True, text=True, timeout=90,
                         check=True, env=os.environ.copy())
    assert f"REDIS_URL=redis://127.0.0.1:{redis_port}/0" in out.stdout
    recorded = localservices.recorded(tmp_path)
    assert recorded is not None
    pids = dict(recorded.pids)
    assert set(pids) == {"redis", "mongo"}
    assert all(_alive(pid) for pid in pids.values())

    subprocess.run([*cli, "stop", *args], check=True, timeout=60)
    assert not any(_alive(pid) for pid in pids.values())
    assert localservices.recorded(tmp_path) is None
    assert not localservices._port_open(redis_port) and not localservices._port_open(mongo_port)


def test_services_refuse_a_port_already_in_use(tmp_path: Path) -> None:
    import socket

    import pytest

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(localservices.ServiceError, match="already in use"):
            localservices.start(tmp_path, taken, localservices.free_port())


def test_services_tied_to_a_killed_process_stop_with_it(tmp_path: Path) -> None:
    import signal
    import time

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from partypilot import localservices\n"
        "s = localservices.start(Path(sys.argv[1]), localservices.free_port(), localservices.free_port(),"
        " persist=False, tied=True)\n"
        "print(s.pids['redis'], s.pids['mongo'], flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    owner.send_signal(signal.SIGKILL)  # no cleanup runs in the owner
    owner.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
