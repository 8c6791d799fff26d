"""A lean Socket.IO client for the bench's pinging partners: the wire protocol on a bare asyncio Protocol.

The bench's generators share the machine's two cores with the server under test, so every
microsecond a generator spends on a ping is taken from the server. `socketio.AsyncClient` spent
about as much CPU per ping as the server did (a task and an `asyncio.wait_for` per call, packet
objects, its own queues); a client on aiohttp's websockets still spent 105-115 µs per ping
(1,000 partners at one fix a second, acked in 20 ms batches as the app does), in aiohttp's reader,
message objects and queue, a reader task woken for every frame and a random mask applied to every
frame sent. `LeanSocket` is its own `asyncio.Protocol`, at 80-90 µs per ping in the same test
(the ping loop included): it does the websocket upgrade by hand,
parses the server's frames in `data_received` and handles each whole message there and then, and
sends every frame with one `transport.write`, no awaits. Most of what remains is the kernel's:
the process wakes up for each fix and each ack, and each wake-up costs more than the Python does.
It speaks Engine.IO v4 + Socket.IO v5 directly, for the websocket transport and text frames only:

    server -> 0{"sid", "pingInterval", ...}     Engine.IO OPEN
    client -> 40{"token": ...}                  CONNECT to "/" with auth
    server -> 40{"sid": ...} | 44{"message", "data": {"code", ...}}
    server -> 2        client -> 3              heartbeat (the server drops sockets that miss it)
    client -> 42<id>["event", data]             event with an ack id
    server -> 43<id>[ack]                       the ack
    server -> 42["event", data]                 a push

Per call it encodes once, writes one frame, parks on a future that `data_received` resolves, and
arms one timer for the timeout. The same client drives the app and the ack-only baseline in the
same run, so the ratios between them stay fair. Plain ws:// only (the bench runs on loopback).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

Handler = Callable[[Any], None]

ENGINEIO_PATH = "/socket.io/?EIO=4&transport=websocket"
CONNECT_CONCURRENCY = 64
CLOSE_TIMEOUT_S = 5.0
MAX_RESPONSE_HEAD = 16384
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 6455 makes a client mask every frame it sends, with a key the server just XORs back out. An
# all-zero key is valid on the wire and turns masking into a no-op, which saves the generator a
# pass over every payload. Masking exists to stop a hostile page from steering what proxies see;
# a load generator on loopback has no such page and no such proxy, a real client must not do this.
_ZERO_MASK = b"\x00\x00\x00\x00"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA
_FIN = 0x80
_CLOSE_NORMAL = b"\x03\xe8"  # status 1000


class Refused(Exception):
    """The server refused the Socket.IO connect (CONNECT_ERROR); `code` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _frame(payload: bytes, first_byte: int = _FIN | _TEXT) -> bytes:
    """One whole client frame (FIN + opcode in `first_byte`), masked with the zero key."""
    size = len(payload)
    if size < 126:
        head = bytes((first_byte, 0x80 | size))
    elif size < 65536:
        head = bytes((first_byte, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first_byte, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


def _expire(future: asyncio.Future[Any], ack_id: int) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no ack for call {ack_id}"))


class LeanSocket(asyncio.Protocol):
    """One Socket.IO connection to the default namespace, with calls, emits and push handlers."""

    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport  # both set in connect(), before any call can use them

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handlers: dict[str, Handler] = {}
        self._last_id = 0
        self._connected = False
        self._auth: dict[str, Any] = {}
        self._accept = b""
        self._waiter: asyncio.Future[None] | None = None  # the connect, until 40 or a refusal
        self._lost: asyncio.Future[None] | None = None  # resolved by connection_lost
        self._upgraded = False
        self._opened = False
        self._close_sent = False
        self._partial = bytearray()  # received bytes not yet making a whole frame (or response head)
        self._wanted = 0  # ... and how many bytes they must reach before parsing again is any use
        self._fragments: list[bytes] = []
        self._fragmented_text = False

    @property
    def connected(self) -> bool:
        return self._connected

    def on(self, event: str, callback: Handler) -> None:
        """Call `callback(data)` for every `event` the server pushes (inside data_received: keep it short)."""
        self._handlers[event] = callback

    async def connect(self, server_url: str, auth: dict[str, Any]) -> None:
        """Open the websocket to http://host:port and connect to "/" with `auth`.

        `Refused` carries the server's code; a failed upgrade or a connection closed on the way is
        a ConnectionError. Bound it with `asyncio.timeout`: a half-open socket is closed on the way out.
        """
        url = urlsplit(server_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"LeanSocket speaks plain ws:// only, to an http://host:port URL, not {server_url!r}")
        self._loop = loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._auth = auth
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + _WS_GUID, usedforsecurity=False).digest())
        request = (f"GET {ENGINEIO_PATH} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        transport, _ = await loop.create_connection(lambda: self, url.hostname, url.port or 80)
        transport.write(request.encode())
        try:
            await self._waiter
        except BaseException:
            self._end()
            self._send_close()
            transport.close()
            raise

    async def call(self, event: str, data: Any = None, timeout: float = 15.0) -> Any:  # noqa: ASYNC109
        """Send `event` with an ack id and return the ack's first value.

        Raises TimeoutError when no ack comes within `timeout`, ConnectionError when not connected
        or when the connection ends first. The timeout is one plain timer that fails the future,
        cheaper per call than `asyncio.timeout`'s task cancellation (and the same signature as
        `socketio.AsyncClient.call`).
        """
        if not self._connected:
            raise ConnectionError("not connected")
        self._last_id += 1
        ack_id = self._last_id
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[ack_id] = future
        self._transport.write(_frame(b"42%d" % ack_id + orjson.dumps((event, data))))
        timer = loop.call_later(timeout, _expire, future, ack_id)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(ack_id, None)

    async def emit(self, event: str, data: Any = None) -> None:
        """Send `event` without asking for an ack."""
        if not self._connected:
            raise ConnectionError("not connected")
        self._transport.write(_frame(b"42" + orjson.dumps((event, data))))

    async def close(self) -> None:
        """Disconnect from the namespace and close the websocket (safe to call twice).

        Waits up to CLOSE_TIMEOUT_S for the server to answer the close frame, then drops the socket.
        """
        lost = self._lost
        if lost is None or lost.done():
            return
        transport = self._transport
        if self._connected:
            transport.write(_frame(b"41"))
        self._end()
        self._send_close()
        timer = self._loop.call_later(CLOSE_TIMEOUT_S, transport.abort)
        try:
            await lost
        except BaseException:
            transport.abort()
            raise
        finally:
            timer.cancel()

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection gives a stream transport (uvloop's does not subclass asyncio.Transport)
        self._transport = cast(asyncio.Transport, transport)
        self._lost = self._loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self._fail_connect("the connection closed during the Socket.IO connect")
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Split the stream into frames and handle each whole one at once; keep a partial one."""
        if self._partial:
            self._partial += data
            if len(self._partial) < self._wanted:
                return
            data = bytes(self._partial)
            self._partial.clear()
        if not self._upgraded:
            data = self._read_upgrade(data)
        end = len(data)
        pos = 0
        while pos < end:
            if end - pos < 2:
                wanted = 2
                break
            first, second = data[pos], data[pos + 1]
            start = pos + 2
            size = second & 0x7F
            if size >= 126:
                start += 2 if size == 126 else 8
                if start > end:
                    wanted = start - pos
                    break
                size = int.from_bytes(data[pos + 2:start], "big")
            stop = start + size
            if stop > end:
                wanted = stop - pos
                break
            if second & 0x80:
                self._protocol_error("the server sent a masked frame")
                return
            pos = stop
            if first == _FIN | _TEXT:
                self._message(data[start:stop])
            else:
                self._other_frame(first, data[start:stop])
        if pos < end:
            self._partial += data[pos:]
            self._wanted = wanted  # a whole frame, or at least its header

    # --- websocket frames ------------------------------------------------------------------------

    def _read_upgrade(self, data: bytes) -> bytes:
        """Check the server's answer to the upgrade; return the bytes after it (b"" until it is whole)."""
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                self._protocol_error("the server's answer to the websocket upgrade has no end")
            else:
                self._partial += data
                self._wanted = len(data) + 1
            return b""
        status, *lines = data[:head_end].decode("latin-1").split("\r\n")
        if status.split(" ", 2)[1:2] != ["101"]:
            self._protocol_error(f"the server refused the websocket upgrade: {status}")
            return b""
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        if headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._protocol_error("the server's Sec-WebSocket-Accept does not match the key")
            return b""
        self._upgraded = True
        return data[head_end + 4:]

    def _other_frame(self, first: int, payload: bytes) -> None:
        """Control frames, and message fragments (never seen from python-engineio, handled anyway)."""
        opcode = first & 0x0F
        if opcode == _CLOSE:
            self._end()
            if not self._close_sent:
                self._close_sent = True
                self._transport.write(_frame(payload[:2], _FIN | _CLOSE))
            self._transport.close()
        elif opcode == _PING:
            self._transport.write(_frame(payload, _FIN | _PONG))
        elif opcode == _PONG:
            return
        elif opcode > 2 or (opcode == 0) != bool(self._fragments):  # or a continuation out of place
            self._protocol_error(f"the server sent an unexpected frame (opcode {opcode})")
        else:
            if opcode != 0:
                self._fragmented_text = opcode == _TEXT
            self._fragments.append(payload)
            if first & _FIN:
                message, self._fragments = b"".join(self._fragments), []
                if self._fragmented_text:
                    self._message(message)  # binary messages: nothing the bench sends or expects

    def _send_close(self) -> None:
        """Start the closing handshake (once), if the websocket is up and the transport still open."""
        if self._upgraded and not self._close_sent and not self._transport.is_closing():
            self._close_sent = True
            self._transport.write(_frame(_CLOSE_NORMAL, _FIN | _CLOSE))

    def _protocol_error(self, reason: str) -> None:
        self._fail_connect(reason)
        self._transport.abort()

    # --- Engine.IO / Socket.IO -------------------------------------------------------------------

    def _message(self, data: bytes) -> None:
        """One text message: resolve an ack, answer a heartbeat, hand a push to its handler, ..."""
        if data.startswith(b"43"):
            start = data.index(b"[")
            future = self._pending.pop(int(data[2:start]), None)
            if future is not None and not future.done():
                args = orjson.loads(data[start:])
                future.set_result(args[0] if args else None)
        elif data == b"2":
            self._transport.write(_frame(b"3"))
        elif data.startswith(b"42"):
            if self._handlers:
                self._dispatch(data)
        elif not self._connected:
            self._handshake(data)
        elif data.startswith((b"41", b"1")):
            self._end()  # the server disconnected the namespace or closed the session
            self._send_close()

    def _handshake(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # after the connect failed or the session ended: nothing more to do
        if not self._opened:
            if not data.startswith(b"0"):
                waiter.set_exception(ConnectionError(f"expected an Engine.IO OPEN, got {data!r:.80}"))
                return
            self._opened = True
            self._transport.write(_frame(b"40" + orjson.dumps(self._auth)))
        elif data.startswith(b"40"):
            self._connected = True
            waiter.set_result(None)
        elif data.startswith(b"44"):
            waiter.set_exception(_refusal(data[2:]))
        elif data.startswith((b"41", b"1")):
            waiter.set_exception(ConnectionError("the server closed the session during the Socket.IO connect"))

    def _dispatch(self, data: bytes) -> None:
        start = data.index(b"[")  # skips an ack id, which the bench never answers
        args = orjson.loads(data[start:])
        handler = self._handlers.get(args[0]) if args else None
        if handler is not None:
            handler(args[1] if len(args) > 1 else None)

    def _fail_connect(self, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(reason))

    def _end(self) -> None:
        """No more calls: fail the pending ones at once rather than at their timeouts."""
        self._connected = False
        pending = self._pending
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the connection closed before the ack"))
        pending.clear()


def _refusal(payload: bytes) -> Refused:
    """A CONNECT_ERROR's {"message", "data": {"code", "message"}} as a Refused."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Refused("refused", payload.decode(errors="replace"))
    if not isinstance(body, dict):
        return Refused("refused", str(body))
    detail = body.get("data")
    code = detail.get("code") if isinstance(detail, dict) else None
    return Refused(str(code or "refused"), str(body.get("message", "")))


class LeanSockets:
    """Many LeanSockets, connected with a concurrency gate; `close()` closes them all."""

    def __init__(self) -> None:
        self.sockets: list[LeanSocket | None] = []
        self.failures: Counter[str] = Counter()

    async def connect(self, server_url: str, tokens: list[str], concurrency: int = CONNECT_CONCURRENCY,
                      connect_timeout: float = 20.0) -> None:
        """Connect one socket per token (None in `sockets` where it failed, counted in `failures`)."""
        gate = asyncio.Semaphore(concurrency)
        self.sockets = [None] * len(tokens)

        async def one(index: int, token: str) -> None:
            sock = LeanSocket()
            async with gate:
                try:
                    async with asyncio.timeout(connect_timeout):
                        await sock.connect(server_url, {"token": token})
                except Exception as exc:
                    self.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    return
            self.sockets[index] = sock

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))

    @property
    def connected(self) -> int:
        return sum(1 for s in self.sockets if s is not None and s.connected)

    async def close(self) -> None:
        gate = asyncio.Semaphore(256)

        async def one(sock: LeanSocket) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await sock.close()

        await asyncio.gather(*(one(s) for s in self.sockets if s is not None))
