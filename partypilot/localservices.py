"""Start and stop the local Redis and MongoDB wire server (nx-27017) on private loopback ports.

Stops exactly the processes it started, by the pids it recorded, after checking that each pid
still runs the program we started (a pid can be reused after a crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be installed or started."""


class PortInUseError(ServiceError):
    """The port the app should listen on is held by another process."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is already in use by another process (another `make run`?): "
                         f"stop it, or choose a free port with PORT={port + 1} (make run PORT={port + 1})")


@dataclass
class LocalServices:
    """What `start` launched: where to reach it and which pids to stop."""

    root: Path
    redis_port: int
    mongo_port: int
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mongodb_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortInUseError when the app could not listen on `host:port`, before anything is started."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # an unknown host is the server's to report
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            # As aiohttp's server does: a port left in TIME_WAIT can be taken again, a listening one cannot.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(host, port) from None
                return  # another refusal (a privileged port, a foreign address) is the server's to report


def ensure_redis_server() -> str:
    """Path to redis-server, installing Debian's package when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError("redis-server is not installed; run: sudo apt-get install -y redis-server")
    logger.info("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("redis-server is still missing after apt-get install")
    return found


def nx_27017_command() -> list[str]:
    script = Path(sys.executable).with_name("nx-27017")
    if script.exists():
        return [str(script)]
    found = shutil.which("nx-27017")
    if not found:
        raise ServiceError("nx-27017 is not installed in this environment; run: make install")
    return [found]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _mongo_ping(port: int) -> bool:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=500
    )
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _wait(check: object, port: int, name: str, proc: subprocess.Popen[bytes], log: Path,
          timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode}; see {log}")
        if check(port):  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise ServiceError(f"{name} did not answer on port {port} within {timeout:.0f} s; see {log}")


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn after which the child gets SIGTERM when the process that started it dies,
    even by SIGKILL (Linux PR_SET_PDEATHSIG), so a killed test run leaves no server behind.

    The library is loaded here, in the parent: between fork and exec the child may only call
    what is ready (another thread may have held the import lock at fork time)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return set_death_signal


def start_redis(root: Path, port: int, persist: bool = True, tied: bool = False) -> subprocess.Popen[bytes]:
    binary = ensure_redis_server()
    data = root / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log = root / "logs" / "redis.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "no",
            "--protected-mode", "yes", "--save", "", "--logfile", str(log)]
    args += ["--appendonly", "yes" if persist else "no"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent() if tied else None)
    _wait(_redis_ping, port, "redis-server", proc, log)
    return proc


def start_mongo(root: Path, port: int, tied: bool = False) -> subprocess.Popen[bytes]:
    data = root / "mongo"
    data.mkdir(parents=True, exist_ok=True)
    log = root / "logs" / "mongo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [*nx_27017_command(), "--data-dir", str(data), "--host", "127.0.0.1", "-p", str(port),
            "--log-file", str(log), "--pid-file", str(root / "run" / "nx-27017.internal.pid")]
    (root / "run").mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent() if tied else None)
    _wait(_mongo_ping, port, "nx-27017", proc, log)
    return proc


def start(root: Path, redis_port: int, mongo_port: int, persist: bool = True,
          only: frozenset[str] = frozenset({"redis", "mongo"}), tied: bool = False) -> LocalServices:
    """Start the services named in `only` (refusing ports already taken) and record their pids
    under root/run. `tied` services also end when this process dies (tests, make run)."""
    root = root.resolve()
    ports = {"redis": redis_port, "mongo": mongo_port}
    for name in sorted(only):
        if _port_open(ports[name]):
            raise ServiceError(f"port {ports[name]} for {name} is already in use; is another `make run` active? "
                               f"Try: python -m partypilot services stop")
    services = LocalServices(root=root, redis_port=redis_port, mongo_port=mongo_port)
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    try:
        if "redis" in only:
            redis = start_redis(root, redis_port, persist=persist, tied=tied)
            services.pids["redis"] = redis.pid
            (run / "redis.pid").write_text(f"{redis.pid} {redis_port}\n")
        if "mongo" in only:
            mongo = start_mongo(root, mongo_port, tied=tied)
            services.pids["mongo"] = mongo.pid
            (run / "mongo.pid").write_text(f"{mongo.pid} {mongo_port}\n")
    except BaseException:
        stop(services)
        raise
    return services


_EXPECTED = {"redis": "redis-server", "mongo": "nx"}


def _is_ours(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return _EXPECTED[name] in cmdline


def _terminate(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.split(") ", 1)[1].startswith("Z"):
                    return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_one(root: Path, name: str, pid: int) -> None:
    if _is_ours(pid, name):
        _terminate(pid)
    with contextlib.suppress(FileNotFoundError):
        (root / "run" / f"{name}.pid").unlink()


def stop(services: LocalServices) -> None:
    """Stop what `start` launched, Mongo first (it may flush), then Redis."""
    for name in ("mongo", "redis"):
        pid = services.pids.pop(name, None)
        if pid is not None:
            stop_one(services.root, name, pid)


def recorded(root: Path) -> LocalServices | None:
    """The services a detached `services start` recorded under root/run, if any."""
    root = root.resolve()
    pids: dict[str, int] = {}
    ports: dict[str, int] = {}
    for name in ("redis", "mongo"):
        path = root / "run" / f"{name}.pid"
        if path.exists():
            pid_text, _, port_text = path.read_text().strip().partition(" ")
            pids[name], ports[name] = int(pid_text), int(port_text or 0)
    if not pids:
        return None
    return LocalServices(root=root, redis_port=ports.get("redis", 0), mongo_port=ports.get("mongo", 0),
                         pids=pids)
