"""Socket authentication: refusals with a reason, re-authentication in place, and sockets ended
at once when a partner is suspended or a session is revoked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from core.contracts import PARTNER_EVENTS, REVOKED_SESSION_KEY, SESSION_EVENTS, PartnerEvent, SessionEvent
from core.jsonutil import iso
from core.tokens import issue_tracking_token
from dispatch.expiry import Deadlines
from tests.dispatch_helpers import Env, Sock, disconnected, make_customer, make_partner, ping, refusal, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


async def watched(env: Env, token: str | None, auth: dict[str, str] | None = None) -> Sock:
    """A connected socket that also records the events the server sends before it ends a socket."""
    sock = Sock()
    for name in ("auth_expired", "session_ended"):
        sock.client.on(name, sock._recorder(name))
    env.socks.append(sock)
    return await sock.connect(env.url, token, auth)


async def test_connections_without_a_valid_token_are_refused_with_a_reason(start_env: StartEnv) -> None:
    env = await start_env()
    cid = await make_customer(env.db)
    assert (await refusal(env, None))["code"] == "unauthorized"
    assert (await refusal(env, "not-a-jwt"))["code"] == "invalid_token"
    assert (await refusal(env, env.token(cid, "customer", ttl_s=-5)))["code"] == "token_expired"
    await env.redis.set(REVOKED_SESSION_KEY.format(sid="gone"), "1")
    assert (await refusal(env, env.token(cid, "customer", session_id="gone")))["code"] == "session_revoked"


async def test_a_logged_out_token_cannot_open_a_socket_after_redis_lost_its_data(start_env: StartEnv) -> None:
    env = await start_env()
    # The watcher that restores the Redis copy of revocations is stopped: the connect itself must
    # ask MongoDB (before, it read Redis only and let the token in until the watcher caught up).
    for task in asyncio.all_tasks():
        if task.get_name() == "core:revocations:watch":
            task.cancel()
    cid = await make_customer(env.db)
    await env.db.sessions.insert_one({"_id": "ended", "user_id": cid, "role": "customer", "revoked": 1,
                                      "revoked_at": iso(), "revoked_ms": int(time.time() * 1000),
                                      "revoke_reason": "logout"})
    await env.redis.flushall()
    assert (await refusal(env, env.token(cid, "customer", session_id="ended")))["code"] == "session_revoked"
    live = await env.sock(env.token(cid, "customer", session_id="still-on"))
    assert live.client.connected


async def test_partners_must_be_approved_and_not_suspended(start_env: StartEnv) -> None:
    env = await start_env()
    suspended = await make_partner(env.db, status="suspended")
    pending = await make_partner(env.db, status="pending")
    assert (await refusal(env, env.token(suspended, "partner")))["code"] == "partner_suspended"
    assert (await refusal(env, env.token(pending, "partner")))["code"] == "partner_not_approved"
    approved = await make_partner(env.db)
    sock = await env.sock(env.token(approved, "partner"))
    assert sock.client.connected


async def test_a_suspended_partner_is_disconnected_at_once(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await watched(env, env.token(pid, "partner"))
    await env.db.partners.update_one({"_id": pid}, {"$set": {"status": "suspended"}})
    event = PartnerEvent(partner_id=pid, status="suspended", at=iso())
    await env.redis.publish(PARTNER_EVENTS, event.model_dump_json())
    assert (await sock.wait_for("session_ended"))["code"] == "partner_suspended"
    await disconnected(sock)
    # And it cannot come back.
    assert (await refusal(env, env.token(pid, "partner")))["code"] == "partner_suspended"


async def test_a_revoked_session_is_disconnected_and_other_sessions_stay(start_env: StartEnv) -> None:
    env = await start_env()
    cid = await make_customer(env.db)
    ended = await watched(env, env.token(cid, "customer", session_id="a"))
    kept = await env.sock(env.token(cid, "customer", session_id="b"))
    await env.redis.publish(SESSION_EVENTS, SessionEvent(user_id=cid, session_id="a").model_dump_json())
    assert (await ended.wait_for("session_ended"))["code"] == "session_revoked"
    await disconnected(ended)
    assert kept.client.connected


async def test_a_socket_whose_token_expires_is_told_and_disconnected_without_sending_anything(
        start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await watched(env, env.token(pid, "partner", ttl_s=1))
    told = await sock.wait_for("auth_expired", timeout=5)
    assert told["code"] == "token_expired" and told["expires_at"] > 0
    await disconnected(sock)


async def test_auth_in_place_with_a_fresh_token_keeps_the_socket_past_the_old_expiry(start_env: StartEnv) -> None:
    env = await start_env()
    pid = await make_partner(env.db)
    sock = await watched(env, env.token(pid, "partner", ttl_s=2))
    other = await make_partner(env.db)
    assert (await sock.call("auth", {"token": env.token(other, "partner")}))["error"]["code"] == "forbidden"
    assert (await sock.call("auth", {"token": env.token(pid, "partner", ttl_s=60)}))["ok"]
    await asyncio.sleep(2.5)
    assert sock.client.connected and not sock.events["auth_expired"]
    assert (await ping(sock, 12.97, 77.59))["ok"]


async def test_a_tracking_link_socket_ends_when_the_link_expires(start_env: StartEnv) -> None:
    env = await start_env()
    _, order_id = await env.order(12.97, 77.59)
    token, _ = issue_tracking_token(env.settings, order_id, ttl_s=2)
    sock = await watched(env, None, {"tracking_token": token})
    assert (await sock.call("track", {"order_id": order_id}))["ok"]
    assert (await sock.wait_for("auth_expired"))["code"] == "token_expired"
    await disconnected(sock)


async def test_a_flood_of_events_is_rate_limited(start_env: StartEnv) -> None:
    env = await start_env()
    cid = await make_customer(env.db)
    sock = await env.sock(env.token(cid, "customer"))
    acks = await asyncio.gather(*(sock.call("track", {"order_id": "nope"}) for _ in range(60)))
    codes = {ack["error"]["code"] for ack in acks}
    assert codes == {"not_found", "rate_limited"}


async def test_a_session_ended_while_its_event_was_lost_is_disconnected_by_the_sweeper(
        start_env: StartEnv) -> None:
    env = await start_env()
    cid = await make_customer(env.db)
    ended = await env.sock(env.token(cid, "customer", session_id="a"))
    kept = await env.sock(env.token(cid, "customer", session_id="b"))
    # The API marks the session revoked, but the SESSION_EVENTS message never arrives.
    await env.redis.set(REVOKED_SESSION_KEY.format(sid="a"), "logout", ex=60)
    async with asyncio.timeout(5):
        while ended.client.connected:
            await asyncio.sleep(0.05)
    assert kept.client.connected


async def test_socket_deadlines_fire_once_each_in_order_and_follow_moves() -> None:
    due: list[str] = []

    async def record(key: str) -> None:
        due.append(key)

    deadlines = Deadlines(record)
    runner = asyncio.create_task(deadlines.run())
    now = time.time()
    deadlines.set("late", now + 0.3)
    deadlines.set("moved", now + 5)
    deadlines.set("gone", now + 0.1)
    deadlines.set("moved", now + 0.2)  # re-authenticated... to an earlier expiry, say
    deadlines.discard("gone")  # disconnected
    for n in range(500):  # re-auth churn leaves stale entries behind; the heap stays bounded
        deadlines.set("churn", now + 10 + n)
    assert len(deadlines._heap) <= 2 * len(deadlines) + 64
    await asyncio.sleep(0.5)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert due == ["moved", "late"]
    assert len(deadlines) == 1  # churn, not yet due
