"""A leaner Engine.IO socket for python-engineio's websocket transport, same wire protocol.

Profiling ingest showed the stock `engineio.async_socket.AsyncSocket` spending more of the
server's CPU on its own bookkeeping than on our handlers. For every message it reads it creates
a task (`ensure_future(websocket_wait())`) and wraps it in `asyncio.wait_for`, and for every
message it sends the writer wraps `queue.get()` in another `wait_for`, another task. On Python
3.11 each of those is a task creation plus an extra trip through the event loop.

`LeanSocket` keeps the protocol, the queue and the close semantics, and changes only how it waits:

- reading: the idle limit (ping interval + ping timeout without a message, as in the stock
  socket) is enforced by one lazily re-armed timer per socket instead of a timeout per message;
- writing: packets already queued are taken without waiting, and an empty queue is awaited under
  `asyncio.timeout`, not a new task;
- sending: `put_nowait` on the unbounded queue, with the same ping-timeout check first;
- receiving a MESSAGE with inline handlers: python-socketio's handler is awaited directly,
  without the per-message closure and coroutine check of `AsyncServer._trigger_event`.

engineio builds its sockets inside `AsyncServer._handle_connect` with no factory hook, so
`LeanEngineServer` upgrades the instance's class when the `connect` event fires. That happens
before any transport loop starts; `LeanSocket` adds methods and one attribute, its flood guard,
set in the same place. A test checks the server's sockets are LeanSockets, so an engineio
upgrade that changes this flow shows up.

The flood guard counts every packet a client sends, before Socket.IO decodes it, so no event
name (known or not) and no malformed packet escapes it. A socket that overdraws it is closed: a
client that keeps sending after Socket.IO's own per-event limit answered `rate_limited` is not a
phone with a backlog (that is one `location_batch`) but a flood, and cutting it is cheaper than
answering it.

Pinned to python-engineio 4.15.x and python-socketio 5.18.x (pyproject.toml), because this module
overrides engineio internals. Before widening the pin, re-read in the new engineio:
`async_socket.AsyncSocket` (`poll`, `send`, `receive`, `check_ping_timeout`, `close`,
`handle_get_request`, `_upgrade_websocket`, `_websocket_handler`: the queue, its `None` close
marker and the probe/upgrade exchange), the attributes `base_socket.BaseSocket.__init__` sets
(`connected`, `upgrading`, `upgraded`, `closing`, `closed`), and `AsyncServer._handle_connect` /
`_trigger_event` (the socket must exist, with no transport loop started, when `connect` fires);
in python-socketio: `AsyncServer._engineio_server_class`, `packet.Packet.uses_binary_events`, and
that its engineio `message` handler is still a coroutine function of (sid, data). Then run
tests/test_dispatch_transport.py (websocket, long-polling only, the polling-to-websocket upgrade,
heartbeats, size limit) and the ingest and fan-out benches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import engineio
import socketio
from engineio import async_socket, exceptions, packet

from dispatch.ratelimit import TokenBucket

logger = logging.getLogger(__name__)


class LeanSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """engineio's AsyncSocket without a task per message."""

    # Set by engineio's BaseSocket.__init__; declared for the type checker.
    connected: bool
    upgrading: bool
    upgraded: bool
    # Set by LeanEngineServer at connect when flood limits are configured.
    flood: TokenBucket | None = None

    async def poll(self) -> list[Any]:
        """Wait for packets to send (the stock contract: [] once closed, QueueEmpty on timeout)."""
        queue: asyncio.Queue[Any] = self.queue
        try:
            if queue.empty():
                async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                    first = await queue.get()
            else:
                first = queue.get_nowait()
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)  # leave the close marker for the next poll
                break
            packets.append(pkt)
        return packets

    async def send(self, pkt: Any) -> None:
        if await self.check_ping_timeout():
            self.queue.put_nowait(pkt)

    async def receive(self, pkt: Any) -> None:
        """MESSAGE packets go straight to python-socketio's handler (a coroutine function) when
        handlers run inline; everything else, and async handlers, take the stock path. A socket
        that overdraws its flood guard is closed instead (SocketIsClosedError ends its read loop)."""
        flood = self.flood
        if flood is not None and not flood.take():
            if not self.closing and not self.closed:
                logger.warning("closing a socket that flooded the server with messages")
                await self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT)
            raise exceptions.SocketIsClosedError()
        if pkt.packet_type == packet.MESSAGE and not self.server.async_handlers:
            handler = self.server.handlers.get("message")
            if handler is not None:
                try:
                    await handler(self.sid, pkt.data)
                except Exception:
                    logger.exception("engine.io message handler error")
            return
        await super().receive(pkt)

    async def _websocket_handler(self, ws: Any) -> None:
        limit = self.server.max_http_buffer_size

        async def wait() -> Any:
            data = await ws.wait()  # raises OSError when the peer closes
            if data and len(data) > limit:
                raise ValueError("packet is too large")
            return data

        if self.connected:
            if not await self._complete_upgrade(ws, wait):
                return
        else:
            self.connected = True
            self.upgraded = True
        writer = asyncio.ensure_future(self._write_loop(ws))
        try:
            await self._read_loop(wait)
        finally:
            self.queue.put_nowait(None)  # unlock the writer so it can exit
            await writer
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _complete_upgrade(self, ws: Any, wait: Any) -> bool:
        """A polling socket moving to websocket: PING "probe" -> PONG "probe", then UPGRADE."""
        self.upgrading = True  # hold packet sends during the upgrade
        try:
            probe = packet.Packet(encoded_packet=await wait())
        except OSError:
            self.upgrading = False
            return False
        if probe.packet_type != packet.PING or probe.data != "probe":
            self.upgrading = False
            return False
        await ws.send(packet.Packet(packet.PONG, data="probe").encode())
        self.queue.put_nowait(packet.Packet(packet.NOOP))  # end the pending poll
        try:
            upgrade = packet.Packet(encoded_packet=await wait())
        except OSError:
            self.upgrading = False
            return False
        self.upgrading = False
        if upgrade.packet_type != packet.UPGRADE:
            self.upgraded = False
            return False
        self.upgraded = True
        return True

    async def _write_loop(self, ws: Any) -> None:
        while True:
            try:
                packets = await self.poll()
            except exceptions.QueueEmpty:
                break
            if not packets:
                break
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except Exception:
                break
        await ws.close()

    async def _read_loop(self, wait: Any) -> None:
        """Receive until the peer closes, errs or stays silent past the idle limit."""
        reader = asyncio.current_task()
        assert reader is not None
        idle = _IdleWatch(reader, float(self.server.ping_interval + self.server.ping_timeout))
        try:
            while True:
                idle.waiting = True
                try:
                    data = await wait()
                except asyncio.CancelledError:
                    if idle.fired:
                        reader.uncancel()
                    break  # the stock socket also ends its loop on cancellation
                except Exception:
                    break
                finally:
                    idle.waiting = False
                if data is None:
                    break
                idle.seen()
                try:
                    await self.receive(packet.Packet(encoded_packet=data))
                except exceptions.UnknownPacketError:
                    pass
                except exceptions.SocketIsClosedError:
                    break
                except Exception:
                    logger.exception("engine.io receive error")
        finally:
            idle.stop()


class _IdleWatch:
    """Cancels `reader` once it has been waiting `limit` seconds since the last message.

    One timer per socket, re-armed only when it fires (at most every `limit` seconds while
    messages flow), instead of a timeout armed and cancelled around every receive.
    """

    __slots__ = ("_handle", "_loop", "fired", "last", "limit", "reader", "waiting")

    def __init__(self, reader: asyncio.Task[Any], limit: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.reader = reader
        self.limit = limit
        self.last = self._loop.time()
        self.waiting = False
        self.fired = False
        self._handle = self._loop.call_at(self.last + limit, self._check)

    def seen(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if self.waiting and now - self.last >= self.limit:
            self.fired = True
            self.reader.cancel()
            return
        self._handle = self._loop.call_at(max(self.last + self.limit, now + 1.0), self._check)

    def stop(self) -> None:
        self._handle.cancel()


class LeanEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """engineio.AsyncServer whose sockets are LeanSockets."""

    # Packets per second and burst a socket may send before it is closed; 0 turns the guard off.
    # Set after construction (python-socketio builds this server from its own arguments).
    flood_rate: float = 0.0
    flood_burst: float = 0.0

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":
            sock = self.sockets.get(args[0])
            if type(sock) is async_socket.AsyncSocket:
                sock.__class__ = LeanSocket
            if isinstance(sock, LeanSocket) and self.flood_rate > 0:
                sock.flood = TokenBucket(self.flood_rate, self.flood_burst)
        return await super()._trigger_event(event, *args, **kwargs)


class JsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    """Socket.IO packets without the binary scan: PartyPilot's events are JSON only.

    The stock packet walks every value of an outgoing payload, recursively and in Python, to
    decide whether it holds bytes that must travel as binary attachments. For a fleet delta of
    5,000 partners that walk cost more than encoding the message, once per admin per tick
    (about an eighth of a process's CPU in the fan-out bench). Nothing here sends bytes, so the
    scan is switched off (python-socketio's MsgPack packet does the same); binary packets a
    client sends are still decoded by their wire type.
    """

    uses_binary_events = False


class LeanServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer on LeanEngineServer; everything above Engine.IO is stock."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return LeanEngineServer
