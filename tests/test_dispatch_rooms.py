"""The indexed Socket.IO manager keeps exactly the room bookkeeping of python-socketio's own."""

from __future__ import annotations

import random
from typing import Any

import socketio

from dispatch.rooms import IndexedRedisManager


def _snapshot(manager: Any) -> dict[Any, dict[Any, dict[str, str]]]:
    return {ns: {room: dict(members) for room, members in rooms.items()} for ns, rooms in manager.rooms.items()}


def test_room_bookkeeping_matches_the_stock_manager_through_enter_leave_and_disconnect() -> None:
    indexed = IndexedRedisManager("redis://127.0.0.1:1/0")  # never connects: bookkeeping only
    stock = socketio.base_manager.BaseManager()
    rng = random.Random(7)
    connected: list[str] = []
    for step in range(2000):
        action = rng.random()
        if action < 0.3 or not connected:
            sid = f"s{step}"
            for manager in (indexed, stock):
                manager.basic_enter_room(sid, "/", None, eio_sid=f"e{step}")
                manager.basic_enter_room(sid, "/", sid, eio_sid=f"e{step}")
                manager.pending_connect.setdefault("/", []).append(sid)
            connected.append(sid)
        elif action < 0.6:
            sid, room = rng.choice(connected), f"partner:{rng.randrange(20)}"
            for manager in (indexed, stock):
                manager.basic_enter_room(sid, "/", room)
        elif action < 0.75:
            sid, room = rng.choice(connected), f"partner:{rng.randrange(20)}"
            for manager in (indexed, stock):
                manager.basic_leave_room(sid, "/", room)
        else:
            sid = connected.pop(rng.randrange(len(connected)))
            for manager in (indexed, stock):
                manager.basic_disconnect(sid, "/")
        assert _snapshot(indexed) == _snapshot(stock), f"diverged at step {step}"
        assert indexed.pending_connect == stock.pending_connect
    probe = connected[0]
    assert sorted(indexed.get_rooms(probe, "/"), key=str) == sorted(stock.get_rooms(probe, "/"), key=str)
    for sid in list(connected):
        indexed.basic_disconnect(sid, "/")
    assert indexed._rooms_of == {}
