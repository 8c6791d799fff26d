"""Location ingest: validation with stable codes, identity from the socket, Redis index and
MongoDB persistence, batches, duty status, and the REST fallback's code path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core import keys
from core.contracts import FLEET_GEO, FLEET_ONLINE, FLEET_SEEN, PARTNER_STATE, LocationPoint
from core.jsonutil import now_ms
from tests.dispatch_helpers import Env, make_customer, make_partner, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


async def test_invalid_pings_are_refused_with_stable_codes(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await env.sock(env.token(pid, "partner"))
    t0 = now_ms() - 60_000

    async def code(**fix: object) -> str:
        ack = await sock.call("location", fix)
        assert ack["ok"] is False, ack
        return str(ack["error"]["code"])

    assert await code(lat=12.97, lng=77.59) == "invalid_payload"                       # no ts
    assert await code(lat="x", lng=77.59, ts=t0) == "invalid_payload"
    assert await code(lat=91.0, lng=77.59, ts=t0) == "out_of_range"
    assert await code(lat=12.97, lng=181.0, ts=t0) == "out_of_range"
    assert await code(lat=12.97, lng=77.59, ts=now_ms() + 60_000) == "future_ts"
    assert await code(lat=12.97, lng=77.59, ts=t0, accuracy=5000) == "inaccurate"
    assert (await ping(sock, 12.97, 77.59, ts=t0))["ok"]
    assert await code(lat=12.97, lng=77.59, ts=t0) == "stale_ts"                        # same ts again
    assert await code(lat=12.97, lng=77.59, ts=t0 - 5_000) == "stale_ts"                # older
    assert await code(lat=12.9701, lng=77.59, ts=t0 + 400) == "too_frequent"
    assert await code(lat=13.97, lng=77.59, ts=t0 + 10_000) == "impossible_speed"       # 111 km in 10 s
    assert (await ping(sock, 12.9710, 77.59, ts=t0 + 10_000, accuracy=12.5, heading=90.0))["ok"]  # 111 m in 10 s
    assert await env.redis.geopos(FLEET_GEO, pid) != [None]
    state = await env.redis.hgetall(PARTNER_STATE.format(partner_id=pid))
    assert state["ts"] == str(t0 + 10_000) and state["accuracy"] == "12.5" and state["heading"] == "90.0"
    assert (await ping(sock, 12.9711, 77.59, ts=t0 + 20_000))["ok"]
    state = await env.redis.hgetall(PARTNER_STATE.format(partner_id=pid))
    assert "heading" not in state and "accuracy" not in state  # not carried over from the older fix


async def test_a_partner_cannot_send_pings_for_another_partner(start_env: StartEnv) -> None:
    env = await start_env()
    me = await make_partner(env.db)
    victim = await make_partner(env.db)
    sock = await env.sock(env.token(me, "partner"))
    ack = await sock.call("location", {"lat": 12.97, "lng": 77.59, "ts": now_ms(), "partner_id": victim})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    assert (await ping(sock, 12.97, 77.59))["ok"]
    assert await env.redis.zscore(FLEET_SEEN, victim) is None
    assert await env.redis.zscore(FLEET_SEEN, me) is not None
    customer = await make_customer(env.db)
    csock = await env.sock(env.token(customer, "customer"))
    assert (await ping(csock, 12.97, 77.59))["error"]["code"] == "forbidden"


async def test_a_buffered_batch_is_ordered_and_deduplicated(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await env.sock(env.token(pid, "partner"))
    t0 = now_ms() - 300_000
    points = [{"lat": 12.9700 + i * 0.0005, "lng": 77.59, "ts": t0 + i * 30_000} for i in (3, 0, 1, 2)]
    points.append(dict(points[1]))  # a duplicate of the first fix
    ack = await sock.call("location_batch", {"points": points})
    assert ack["ok"] and ack["accepted"] == 4
    state = await env.redis.hgetall(PARTNER_STATE.format(partner_id=pid))
    assert int(state["ts"]) == t0 + 90_000 and abs(float(state["lat"]) - 12.9715) < 1e-9
    # A batch that is entirely old is refused with the first reason.
    ack = await sock.call("location_batch", {"points": points[:2]})
    assert ack["ok"] is False and ack["error"]["code"] == "stale_ts"
    too_many = [{"lat": 12.97, "lng": 77.59, "ts": now_ms() - i} for i in range(501)]
    assert (await sock.call("location_batch", {"points": too_many}))["error"]["code"] == "invalid_payload"


async def test_positions_and_duty_are_persisted_to_mongo_in_batches(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await env.sock(env.token(pid, "partner"))
    assert (await sock.call("availability", {"online": True}))["ok"]
    assert await env.redis.sismember(FLEET_ONLINE, pid)
    assert (await ping(sock, 12.9716, 77.5946))["ok"]
    async with asyncio.timeout(5):
        while (doc := await env.db.partner_positions.find_one({"_id": pid})) is None or "lat" not in doc:
            await asyncio.sleep(0.1)
    assert doc["online"] == 1 and abs(doc["lat"] - 12.9716) < 1e-9
    # The track is written by the same flush, right after the positions: wait for it too.
    async with asyncio.timeout(5):
        while await env.db.partner_tracks.count_documents({"partner_id": pid}) < 1:
            await asyncio.sleep(0.1)
    assert (await sock.call("availability", {"online": False}))["ok"]
    assert not await env.redis.sismember(FLEET_ONLINE, pid)
    assert (await sock.call("availability", {"online": "yes"}))["error"]["code"] == "invalid_payload"


async def test_the_rest_fallback_uses_the_same_validation(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sink = env.app[keys.LOCATION_SINK]
    t0 = now_ms() - 10_000
    result = await sink.ingest(pid, [LocationPoint(lat=12.97, lng=77.59, ts=t0),
                                     LocationPoint(lat=12.97, lng=77.59, ts=t0 + 200),
                                     LocationPoint(lat=14.0, lng=77.59, ts=t0 + 5_000)])
    assert result.accepted == 1
    assert [r["code"] for r in result.rejected] == ["too_frequent", "impossible_speed"]
    assert await env.redis.zscore(FLEET_SEEN, pid) is not None


async def test_states_are_read_in_order_across_script_chunks(start_env: StartEnv, monkeypatch: Any) -> None:
    from dispatch import fleet as fleet_module
    from dispatch.server import ENGINE

    env = await start_env()
    index = env.app[ENGINE].fleet
    monkeypatch.setattr(fleet_module, "STATES_PER_SCRIPT", 3)  # 8 partners: chunks of 3, 3 and 2
    ids = [f"chunk-{i}" for i in range(8)]
    for i, pid in enumerate(ids):
        await env.redis.hset(fleet_module.state_key(pid), mapping={"lat": 12.9 + i / 100, "lng": 77.6, "ts": i})
    states = await index.states([*ids, "nobody"])
    assert [s.id for s in states] == [*ids, "nobody"]
    assert [s.ts for s in states[:-1]] == list(range(8)) and states[-1].lat is None
    assert [round(s.lat or 0, 2) for s in states[:-1]] == [round(12.9 + i / 100, 2) for i in range(8)]
