"""The bench's stack: private Redis + nx-27017, app processes, baseline servers, generator workers.

Everything started here is stopped by `Stack.close()` (called from a `finally`), and every child
also gets SIGTERM from the kernel if the bench itself dies (PR_SET_PDEATHSIG), so a Ctrl-C or a
crash leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from queue import Empty
from typing import Any

from partypilot import localservices

logger = logging.getLogger(__name__)

BENCH_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # noqa: S105 - a throwaway test secret
BENCH_DB = "bench"
_PR_SET_PDEATHSIG = 1


def raise_nofile_limit() -> int:
    """Raise this process's open-files limit to its hard limit (thousands of sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:
    """preexec_fn for servers: more file descriptors, and die with the bench."""
    raise_nofile_limit()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by `pids`, from /proc/PID/stat (fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 2xx/4xx (the server is up) or fail with the reason."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - our own loopback URL
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s ({last})")


def _wait_own_listener(proc: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    """Wait until `proc` itself listens on `port` (not some other process that grabbed it)."""
    import psutil  # type: ignore[import-untyped]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} (port {port} taken?)")
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"server process did not listen on port {port} within {timeout:.0f} s")


@dataclass
class Server:
    """One server process we started, with where to reach it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Stack:
    """What one bench run started. Use as a context manager, or call close() in a finally."""

    root: Path
    log_dir: Path | None = None
    services: localservices.LocalServices | None = None
    servers: list[Server] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def create(cls, log_dir: Path | None = None) -> Stack:
        """Start the stores; server logs go to `log_dir` (kept after the run) or the temp dir."""
        tmp = tempfile.TemporaryDirectory(prefix="pp-bench-")
        stack = cls(root=Path(tmp.name), log_dir=log_dir, _tmp=tmp)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            for old in log_dir.glob("*.log"):
                old.unlink()
        try:
            stack.services = localservices.start(stack.root / "services", localservices.free_port(),
                                                 localservices.free_port(), persist=False, tied=True)
        except BaseException:
            stack.close()
            raise
        return stack

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mongodb_uri(self) -> str:
        assert self.services is not None
        return self.services.mongodb_uri

    @property
    def redis_url(self) -> str:
        assert self.services is not None
        return self.services.redis_url

    def app_env(self, port: int, **extra: str) -> dict[str, str]:
        """The environment of an app process: our stores, a throwaway secret, quiet logs."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("PARTYPILOT_") and key not in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET")}
        env.update({
            "MONGODB_URI": self.mongodb_uri, "REDIS_URL": self.redis_url, "PARTYPILOT_MONGODB_DB": BENCH_DB,
            "JWT_SECRET": BENCH_SECRET, "PORT": str(port), "PARTYPILOT_ENV": "test",
            "PARTYPILOT_LOG_LEVEL": "WARNING", "PARTYPILOT_DATA_DIR": str(self.root / "data"),
            "PARTYPILOT_SIMULATE_PARTNERS": "0",
            # A few synthetic customers place thousands of orders: lift the per-customer
            # anti-automation limits, which would otherwise turn the load into 429s.
            "PARTYPILOT_ORDERS_PER_CUSTOMER_PER_HOUR": "1000000000",
            "PARTYPILOT_TRACKING_LINKS_PER_CUSTOMER_PER_HOUR": "1000000000",
        })
        env.update(extra)
        return env

    def start_app(self, name: str = "app", **extra_env: str) -> Server:
        """`python -m partypilot serve` on a free port, waiting until /api/health answers."""
        return self._start(name, lambda port: [sys.executable, "-m", "partypilot", "serve", "--port", str(port)],
                           lambda port: self.app_env(port, **extra_env), "/api/health")

    def start_baseline(self, name: str, kind: str, *args: str) -> Server:
        """A trivial reference server (loadtests.baselines) on a free port."""
        return self._start(name, lambda port: [sys.executable, "-m", "loadtests.baselines", kind, "--port", str(port),
                                               *args], lambda port: dict(os.environ), "/ready")

    def _start(self, name: str, cmd: Callable[[int], list[str]], env: Callable[[int], dict[str, str]],
               probe: str, attempts: int = 3) -> Server:
        # A free port can be taken by someone else between our probe and the server's bind (other
        # test runs share the machine): retry on another port, and only trust an answer that comes
        # from the process we started.
        for attempt in range(attempts):
            port = localservices.free_port()
            log = (self.log_dir or self.root / "logs") / f"{name}-{port}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                proc = subprocess.Popen(cmd(port), env=env(port), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
                                        preexec_fn=_child_setup)
            server = Server(name, proc, port, log)
            self.servers.append(server)
            try:
                _wait_own_listener(proc, port)
                wait_http(server.url + probe, proc=proc)
                return server
            except RuntimeError as exc:
                self.stop_server(server)
                if attempt + 1 == attempts:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} did not start: {exc}\n--- {log} ---\n{tail}") from None
        raise AssertionError("unreachable")

    def stop_server(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        _terminate(server.proc)

    def close(self) -> None:
        for server in reversed(self.servers):
            _terminate(server.proc)
        self.servers.clear()
        if self.services is not None:
            localservices.stop(self.services)
            self.services = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 8.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- generator workers --------------------------------------------------------------------------

WorkerFn = Callable[[dict[str, Any], "WorkerControl"], Coroutine[Any, Any, dict[str, Any]]]


class WorkerControl:
    """A worker's side of the handshake: report ready, wait for go (and later phases)."""

    def __init__(self, index: int, queue: mp.Queue[Any], events: list[MpEvent]) -> None:
        self.index = index
        self._queue = queue
        self._events = events
        self._phase = 0

    def ready(self, **info: Any) -> None:
        self._queue.put(("ready", self.index, info))

    async def wait_go(self) -> None:
        """Wait for the next phase signal from the bench (without blocking the event loop)."""
        event = self._events[self._phase]
        self._phase += 1
        await asyncio.to_thread(event.wait)


def _worker_main(fn_path: str, params: dict[str, Any], index: int, queue: mp.Queue[Any],
                 events: list[MpEvent]) -> None:
    import importlib

    import uvloop

    raise_nofile_limit()
    logging.basicConfig(level=logging.WARNING)
    # python-engineio's client logs every closed socket at ERROR ("packet queue is empty"); a
    # generator closing thousands of sockets on purpose would drown the bench's own output.
    for name in ("engineio.client", "socketio.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    module_name, _, attr = fn_path.partition(":")
    fn: WorkerFn = getattr(importlib.import_module(module_name), attr)
    control = WorkerControl(index, queue, events)
    try:
        result = uvloop.run(fn(params, control))
        queue.put(("result", index, result))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        queue.put(("error", index, f"{type(exc).__name__}: {exc}"))


class WorkerPool:
    """N generator processes (spawned, so they share nothing with our event loop) run one function.

    Protocol: each worker sets up (e.g. connects its sockets) and reports ready; the bench then
    sets phase events in order (go, release, ...); each worker finally returns a dict.
    """

    def __init__(self, fn_path: str, params: list[dict[str, Any]], phases: int = 1) -> None:
        self._ctx = mp.get_context("spawn")
        self._queue: mp.Queue[Any] = self._ctx.Queue()
        self._events = [self._ctx.Event() for _ in range(phases)]
        self._phase = 0
        self.procs: list[SpawnProcess] = [
            self._ctx.Process(target=_worker_main, args=(fn_path, p, i, self._queue, self._events), daemon=True)
            for i, p in enumerate(params)
        ]
        self.ready_info: dict[int, dict[str, Any]] = {}
        self.results: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> WorkerPool:
        for proc in self.procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pump(self, timeout: float) -> None:
        kind, index, payload = self._queue.get(timeout=timeout)
        if kind == "ready":
            self.ready_info[index] = payload
        elif kind == "result":
            self.results[index] = payload
        else:
            raise RuntimeError(f"generator worker {index} failed: {payload}")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"generator workers: {what} timed out after {timeout:.0f} s")
            try:
                self._pump(min(left, 0.5))
            except Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"generator worker exited with code {dead[0].exitcode}") from None

    def wait_ready(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        self._wait(lambda: len(self.ready_info) == len(self.procs), timeout, "setup")
        return [self.ready_info[i] for i in range(len(self.procs))]

    def next_phase(self) -> None:
        self._events[self._phase].set()
        self._phase += 1

    def collect(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        self._wait(lambda: len(self.results) == len(self.procs), timeout, "run")
        return [self.results[i] for i in range(len(self.procs))]

    def close(self) -> None:
        for event in self._events:
            event.set()
        for proc in self.procs:
            proc.join(timeout=3)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=3)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._queue.close()
        self._queue.join_thread()


def split(total: int, parts: int) -> list[int]:
    """`total` spread as evenly as possible over `parts` (e.g. clients per worker)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
