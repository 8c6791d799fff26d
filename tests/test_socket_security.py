"""Socket.IO at the edge: foreign origins, oversized messages, floods, and pushes after expiry.

Timed targets (a flooder cut within 1 s, other sockets' p99 under 250 ms) are measured, not
asserted (house rule): the flood test asserts the flooder is cut by how many of its messages the
server handled, and that the other socket was answered throughout; it records the latency it saw
as the `other_socket_p99_ms` property (visible in a JUnit report, and logged).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import socketio

from core.orderflow import OrderFlow
from dispatch.server import FLOOD_BURST
from tests.dispatch_helpers import Env, Sock, disconnected, make_customer, make_order, make_partner, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]
logger = logging.getLogger(__name__)
CITY = (12.97, 77.59)


async def watched(env: Env, token: str) -> Sock:
    sock = Sock()
    for name in ("auth_expired", "session_ended"):
        sock.client.on(name, sock._recorder(name))
    env.socks.append(sock)
    return await sock.connect(env.url, token)


async def test_a_socket_from_a_foreign_origin_is_refused(start_env: StartEnv) -> None:
    env = await start_env()
    token = env.token(await make_customer(env.db), "customer")
    foreign = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await foreign.connect(env.url, auth={"token": token}, headers={"Origin": "https://evil.example"},
                              transports=["websocket"], wait_timeout=5)
    assert not foreign.connected
    # The same token from an allowed origin connects: the origin alone decided.
    allowed = socketio.AsyncClient(reconnection=False)
    await allowed.connect(env.url, auth={"token": token}, headers={"Origin": env.settings.allowed_origins[0]},
                          transports=["websocket"], wait_timeout=5)
    assert allowed.connected
    await allowed.disconnect()


async def test_a_message_over_64_kib_ends_the_socket(start_env: StartEnv) -> None:
    env = await start_env()
    token = env.token(await make_customer(env.db), "customer")
    sock = await env.sock(token)
    # Just under the cap is an ordinary (refused) event.
    ack = await sock.call("track", {"order_id": "x" * (60 * 1024)})
    assert ack["ok"] is False and sock.client.connected
    await sock.client.emit("track", {"order_id": "x" * (65 * 1024)})
    await disconnected(sock)
    # The server is fine: a new socket connects and is answered.
    again = await env.sock(token)
    assert (await again.call("track", {"order_id": "nope"}))["error"]["code"] == "not_found"


async def flood(sock: Sock, event: str, per_second: int = 1000, seconds: float = 1.0) -> tuple[int, list[Any]]:
    """Send `event` at `per_second` (in bursts of 10 every 10 ms) until done or cut off.
    Returns (messages sent, acks received)."""
    acks: list[Any] = []
    sent = 0
    start = time.monotonic()
    while sent < per_second * seconds and sock.client.connected:
        for _ in range(10):
            try:
                await sock.client.emit(event, {"order_id": "nope"}, callback=lambda *a: acks.append(a))
            except socketio.exceptions.BadNamespaceError:  # disconnected meanwhile
                return sent, acks
            sent += 1
        # Pace to the target rate, whatever each emit cost.
        await asyncio.sleep(max(0.0, start + sent / per_second - time.monotonic()))
    return sent, acks


async def test_a_flooding_socket_is_cut_while_another_socket_keeps_its_service(
        start_env: StartEnv, record_property: Callable[[str, object], None]) -> None:
    env = await start_env()
    flooder = await watched(env, env.token(await make_customer(env.db), "customer"))
    pid = await make_partner(env.db)
    other = await env.sock(env.token(pid, "partner"))
    assert (await other.call("availability", {"online": True}))["ok"]

    latencies: list[float] = []

    async def keep_pinging(stop: asyncio.Event) -> None:
        """One ping every 50 ms (within the per-socket limit), round trip timed through its ack."""
        while not stop.is_set():
            started = time.perf_counter()
            ack = await other.call("location", {"lat": CITY[0], "lng": CITY[1], "ts": int(time.time() * 1000)})
            latencies.append(time.perf_counter() - started)
            assert "ok" in ack
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    pinger = asyncio.create_task(keep_pinging(stop))
    await asyncio.sleep(0.2)  # a few samples before the flood
    sent, acks = await flood(flooder, "track")
    await disconnected(flooder)
    await asyncio.sleep(0.5)  # and a few after
    stop.set()
    await pinger

    # Cut long before its second of flooding was over: the server answered at most the guard's
    # burst (plus what it earned meanwhile, 20/s), and most of the answers said "slow down".
    # (How many the client had sent by the time it noticed depends on its own loop, not asserted.)
    assert len(acks) <= FLOOD_BURST + 40
    codes = [a[0]["error"]["code"] for a in acks if a and isinstance(a[0], dict) and not a[0].get("ok")]
    assert codes.count("rate_limited") > len(acks) / 2
    # The other socket was answered every time, and still is.
    assert len(latencies) >= 10
    assert other.client.connected
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    record_property("other_socket_p99_ms", round(p99, 1))
    logger.info("flood: %d sent before the cut, %d answered; other socket p99 %.1f ms over %d pings",
                sent, len(acks), p99, len(latencies))


async def test_a_flood_of_unknown_events_is_cut_too(start_env: StartEnv) -> None:
    env = await start_env()
    sock = await env.sock(env.token(await make_customer(env.db), "customer"))
    await flood(sock, "no_such_event")
    await disconnected(sock)  # no handler, no `rate_limited` answer: the packet count alone cuts it


async def test_pushes_stop_when_the_access_token_expires(start_env: StartEnv) -> None:
    env = await start_env()
    cid = await make_customer(env.db)
    order_id = await make_order(env.db, env.redis, cid, *CITY, announce=False)
    expiring = await watched(env, env.token(cid, "customer", ttl_s=2))
    lasting = await env.sock(env.token(cid, "customer"))
    for sock in (expiring, lasting):
        assert (await sock.call("track", {"order_id": order_id}))["ok"]

    assert (await expiring.wait_for("auth_expired"))["code"] == "token_expired"
    await disconnected(expiring)
    await OrderFlow(env.db, env.redis).transition(order_id, "cancelled", by_role="admin", by_id="a1")
    await lasting.wait_for("order_status", lambda m: m["status"] == "cancelled")
    assert expiring.events["order_status"] == []
