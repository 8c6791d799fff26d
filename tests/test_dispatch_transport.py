"""dispatch.transport.LeanSocket: the same Engine.IO behaviour as the stock socket, fewer tasks.

These run a bare LeanServer on aiohttp (no stores needed) with short heartbeat settings, and
talk to it with python-socketio's client and with a raw websocket that speaks Engine.IO itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer

from dispatch.server import create_sio
from dispatch.transport import JsonPacket, LeanServer, LeanSocket

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.3


@pytest.fixture
async def lean() -> AsyncIterator[tuple[LeanServer, str]]:
    sio = LeanServer(async_mode="aiohttp", ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                     logger=False, engineio_logger=False, async_handlers=False)

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, data: Any) -> Any:
        await asyncio.sleep(0)
        return {"sid": sid, "data": data}

    @sio.on("shout")  # type: ignore[untyped-decorator]
    async def shout(sid: str, data: Any) -> None:
        for n in range(int(data)):
            await sio.emit("n", n, to=sid)

    app = web.Application()
    sio.attach(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield sio, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def test_the_product_server_uses_lean_sockets_and_json_packets(settings: Any) -> None:
    sio = create_sio(settings)
    assert isinstance(sio, LeanServer) and sio.packet_class is JsonPacket
    # A fleet-sized payload is an ordinary EVENT, encoded as JSON, with no binary scan.
    partners = [{"id": f"p{i}", "lat": 12.9, "lng": 77.6, "status": "idle", "last_seen": i} for i in range(5000)]
    pkt = sio.packet_class(socketio.packet.EVENT, data=["fleet", {"type": "delta", "partners": partners}])
    assert pkt.packet_type == socketio.packet.EVENT
    encoded = pkt.encode()
    assert encoded.startswith('2["fleet",') and orjson.loads(encoded[1:])[1]["partners"] == partners


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
async def test_acks_and_pushes_arrive_in_order_on_both_transports(lean: tuple[LeanServer, str],
                                                                  transports: list[str]) -> None:
    sio, url = lean
    client = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    done = asyncio.Event()

    @client.on("n")  # type: ignore[untyped-decorator]
    async def on_n(n: int) -> None:
        got.append(n)
        if n == 199:
            done.set()

    await client.connect(url, transports=transports, wait_timeout=5)
    try:
        if transports[0] == "polling":  # wait for the upgrade, then check it happened
            for _ in range(50):
                if client.transport() == "websocket":
                    break
                await asyncio.sleep(0.05)
        assert client.transport() == "websocket"
        assert all(isinstance(s, LeanSocket) for s in sio.eio.sockets.values())
        replies = await asyncio.gather(*(client.call("echo", i, timeout=5) for i in range(100)))
        assert [r["data"] for r in replies] == list(range(100))
        await client.emit("shout", 200)
        await asyncio.wait_for(done.wait(), 5)
        assert got == list(range(200))
    finally:
        await client.disconnect()


async def test_a_long_polling_only_session_works(lean: tuple[LeanServer, str]) -> None:
    """Clients behind proxies that refuse websockets stay on polling: LeanSocket.poll feeds them."""
    sio, url = lean
    client = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    done = asyncio.Event()

    @client.on("n")  # type: ignore[untyped-decorator]
    async def on_n(n: int) -> None:
        got.append(n)
        if n == 49:
            done.set()

    await client.connect(url, transports=["polling"], wait_timeout=5)
    try:
        assert client.transport() == "polling"
        assert all(isinstance(s, LeanSocket) for s in sio.eio.sockets.values())
        # Concurrent calls share a POST; engineio refuses a payload of more than 16 packets.
        for start in (0, 10):
            replies = await asyncio.gather(*(client.call("echo", i, timeout=5) for i in range(start, start + 10)))
            assert [r["data"] for r in replies] == list(range(start, start + 10))
        await client.emit("shout", 50)
        await asyncio.wait_for(done.wait(), 5)
        assert got == list(range(50))
        # Idle past several heartbeats: pings travel over the polls and the session survives.
        await asyncio.sleep(4 * (PING_INTERVAL + PING_TIMEOUT))
        assert client.connected and len(sio.eio.sockets) == 1 and client.transport() == "polling"
        assert (await client.call("echo", "still here", timeout=5))["data"] == "still here"
    finally:
        await client.disconnect()
    for _ in range(50):  # the server lets go of the socket too
        if not sio.eio.sockets:
            break
        await asyncio.sleep(0.05)
    assert not sio.eio.sockets


async def _raw_connect(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    opening = await ws.receive_str()
    assert opening.startswith("0")
    await ws.send_str("40")
    assert (await ws.receive_str()).startswith("40")
    return ws


async def test_a_silent_peer_is_dropped_and_a_live_one_kept(lean: tuple[LeanServer, str]) -> None:
    sio, url = lean
    async with aiohttp.ClientSession() as session:
        silent = await _raw_connect(session, url)
        live = await _raw_connect(session, url)

        async def answer_pings() -> None:
            async for msg in live:
                if msg.data == "2":
                    await live.send_str("3")

        answering = asyncio.create_task(answer_pings())
        started = time.monotonic()
        # The silent one never answers a PING: gone within the heartbeat limits (plus slack).
        while not silent.closed:
            msg = await asyncio.wait_for(silent.receive(), 5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
        dropped_after = time.monotonic() - started
        assert dropped_after < 3 * (PING_INTERVAL + PING_TIMEOUT) + 1
        await asyncio.sleep(4 * (PING_INTERVAL + PING_TIMEOUT))
        assert not live.closed and len(sio.eio.sockets) == 1
        await live.send_str('42["echo","still here"]')  # no ack id: nothing comes back, no error
        await live.close()
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)


async def test_an_oversized_message_closes_the_socket(lean: tuple[LeanServer, str]) -> None:
    sio, url = lean
    sio.eio.max_http_buffer_size = 1024
    async with aiohttp.ClientSession() as session:
        ws = await _raw_connect(session, url)
        await ws.send_str("42" + orjson.dumps(["echo", "x" * 5000]).decode())
        msg = await asyncio.wait_for(ws.receive(), 5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    for _ in range(50):
        if not sio.eio.sockets:
            break
        await asyncio.sleep(0.05)
    assert not sio.eio.sockets
