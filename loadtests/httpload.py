"""A lean HTTP/1.1 keep-alive load generator on asyncio protocols (uvloop), for throughput figures.

aiohttp's client spends more CPU per request than a small server does, so on a 2-core machine it
would measure itself. This client writes a prepared request and reads exactly one response per
round trip (Content-Length or chunked), nothing more; the app and the baseline server are driven
by the same code, so their ratio is fair.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit


def build_request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: keep-alive"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _ResponseReader(asyncio.Protocol):
    """Parses one response at a time off a keep-alive connection."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.transport: Any = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    def _check(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = -1
        chunked = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        start = end + 4
        if chunked:
            stop = self.buffer.find(b"\r\n0\r\n\r\n", start - 2)
            if stop < 0:
                return
            total = stop + 7
        else:
            total = start + max(length, 0)
            if len(self.buffer) < total:
                return
        del self.buffer[:total]
        self.waiter.set_result((status, total))

    async def roundtrip(self, request: bytes) -> tuple[int, int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        self._check()
        return await self.waiter


async def closed_loop(url: str, connections: int, duration: float, request: bytes | None = None,
                      warmup: float = 1.0) -> dict[str, Any]:
    """Each connection sends its next request as soon as the last answer arrived.

    Returns counts over `duration` seconds after `warmup` (connections established, caches warm).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = request if request is not None else build_request(url)
    loop = asyncio.get_running_loop()
    readers: list[_ResponseReader] = []
    for _ in range(connections):
        _, reader = await loop.create_connection(_ResponseReader, host, port)
        readers.append(reader)
    counts = {"ok": 0, "errors": 0, "bytes": 0}
    statuses: dict[int, int] = {}
    measuring = False
    stop_at = time.monotonic() + warmup + duration

    async def drive(reader: _ResponseReader) -> None:
        while time.monotonic() < stop_at and not reader.closed:
            try:
                status, size = await reader.roundtrip(payload)
            except ConnectionError:
                counts["errors"] += 1
                return
            if measuring:
                statuses[status] = statuses.get(status, 0) + 1
                counts["ok" if status < 400 else "errors"] += 1
                counts["bytes"] += size

    tasks = [asyncio.create_task(drive(r)) for r in readers]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    return {"ok": counts["ok"], "errors": counts["errors"], "bytes": counts["bytes"], "seconds": elapsed,
            "statuses": {str(k): v for k, v in statuses.items()}}


# --- generator-process entry points (run by harness.WorkerPool) ----------------------------------

async def closed_loop_worker(params: dict[str, Any], ctl: Any) -> dict[str, Any]:
    """Throughput: `connections` keep-alive connections hammering one URL for `duration` s."""
    ctl.ready()
    await ctl.wait_go()
    request = build_request(params["url"], headers=params.get("headers"))
    return await closed_loop(params["url"], params["connections"], params["duration"], request,
                             warmup=params.get("warmup", 1.0))


async def orders_worker(params: dict[str, Any], ctl: Any) -> dict[str, Any]:
    """Latency at a fixed rate: POST /api/orders every 1/rate s, each with its own Idempotency-Key.

    Latency is measured from each request's scheduled start, so a stall that delays later
    requests counts against them too (no coordinated omission).
    """
    import random
    import uuid

    import aiohttp
    import orjson

    rng = random.Random(ctl.index)
    customers: list[str] = params["tokens"]
    packages: list[dict[str, Any]] = params["packages"]
    points: list[list[float]] = params["points"]
    rate: float = params["rate"]
    count = int(rate * params["duration"])
    url = params["url"] + "/api/orders"
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sample: list[str] = []
    created: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        ctl.ready()
        await ctl.wait_go()
        start = time.perf_counter() + 0.05

        async def one(n: int) -> None:
            scheduled = start + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            package = packages[n % len(packages)]
            lat, lng = points[n % len(points)]
            body = {"package_id": package["id"], "event_date": params["event_date"],
                    "address": {"line1": f"{n + 1} Bench Road", "city": "Bengaluru", "postal_code": "560001",
                                "lat": lat, "lng": lng},
                    "guests": max(1, min(int(package.get("capacity") or 10), rng.randint(5, 40))),
                    "notes": "bench", "payment_option": "cash"}
            headers = {"Authorization": f"Bearer {customers[n % len(customers)]}",
                       "Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    data = await resp.read()
                    done = time.perf_counter()
                    statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
                    if resp.status == 201:
                        order = orjson.loads(data)
                        created.append({"id": order.get("id") or order.get("_id"),
                                        "created_at": order.get("created_at"), "sent_s": time.time()})
                    elif not sample:
                        sample.append(f"{resp.status}: {data[:300].decode(errors='replace')}")
            except aiohttp.ClientError as exc:
                done = time.perf_counter()
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            latencies.append((done - scheduled) * 1000)

        await asyncio.gather(*(one(n) for n in range(count)))
    return {"latencies_ms": latencies, "statuses": statuses, "error_sample": sample, "created": created}
