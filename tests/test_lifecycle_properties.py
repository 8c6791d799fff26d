"""Property tests: random interleavings of the order, offer and payment lifecycles against the real
stores (Redis and the Mongo wire server), with the lifecycle invariants checked after every step.

The machine drives the real objects the processes run (OrderFlow, the dispatch Engine's Offers and
event handlers, PaymentFlow with the simulated provider and its signed webhooks) from one event loop
per run. The engine's loops are not started: the machine is their scheduler. After each step it
feeds every Redis event published meanwhile to the engine's own handlers, runs what they spawned and
the partners they woke, until nothing is left, and only then checks the invariants: a state the
system can be left in. Racing steps run two actions concurrently on that loop.

Time is the one thing faked: a timeout sets the offer's expiry in the past (MongoDB) and runs the
due timers, as the timer loop would once the clock got there.

Profiles (HYPOTHESIS_PROFILE): `default` is bounded for `make test`; `long` for a deeper search.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from api import orders as api_orders
from api import payments as api_payments
from api.orders import CUSTOMER_CANCELLABLE
from api.paymentflow import CAPTURED, PaymentFlow, required_to_place
from core.contracts import (
    OFFER_EVENTS,
    OFFER_HOLDERS,
    OFFER_TIMERS,
    ORDER_EVENTS,
    PARTNER_JOB_FIELD,
    PAYMENT_EVENTS,
    LocationPoint,
    OfferReplyEvent,
)
from core.errors import AppError
from core.jsonutil import iso, now_ms
from core.orderflow import ACTIVE, ASSIGNABLE, PARTNER_NEXT, TRACKABLE, TRANSITIONS, OrderFlow
from core.settings import Settings
from core.stores import make_mongo_client, make_redis
from core.tasks import TaskOwner
from dispatch.engine import Engine, Tuning
from dispatch.fleet import offer_key, state_key
from gateway_clients.simulated_payments import SimulatedPayments

settings.register_profile("default", max_examples=25, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("long", max_examples=200, stateful_step_count=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")

CENTER = (12.9716, 77.5946)
PARTNERS = 3
MAX_ORDERS = 4
PRICE = 1_000_000
# The machine's own channel: a marker published after a step arrives after every event of the step.
MARK = "pp:test:lifecycle:mark"
# Real time must never expire an offer during a run (only the timeout step does): a long timeout.
OFFER_TIMEOUT_S = 600.0
SETTLE_ROUNDS = 40
ACTIONS = ("accept", "accept_rest", "decline", "decline_rest", "timeout", "cancel", "assign", "pay", "progress")


class Emitted:
    """The engine's emitter: records pushes (the sockets are not what this test is about)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    async def emit(self, event: str, data: dict[str, Any], room: str, *, local: bool = False) -> None:
        self.sent.append((event, data, room))


class Tasks(TaskOwner):
    """The engine's task owner, whose spawned tasks the machine waits for before each check."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = super().spawn(coro, name)
        self.spawned.add(task)
        return task

    async def drain(self) -> int:
        """Wait for every spawned task; a task that failed fails the step."""
        tasks, self.spawned = list(self.spawned), set()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        return len(tasks)


class World:
    """One run's stores and objects, on one database and a flushed Redis."""

    def __init__(self, settings_: Settings) -> None:
        self.settings = settings_
        self.redis: Redis = make_redis(settings_.redis_url)
        self.client = make_mongo_client(settings_.mongodb_uri)
        self.db: AsyncDatabase[dict[str, Any]] = self.client[settings_.mongodb_db]
        self.emitted = Emitted()
        self.tasks = Tasks()
        self.engine = Engine(settings_, self.db, self.redis, self.emitted, Tuning())
        self.engine.tasks = self.tasks
        self.flow = OrderFlow(self.db, self.redis)
        self.simulator = SimulatedPayments(self.db, settings_.payments_simulator_secret.get_secret_value(),
                                           webhook_url="http://127.0.0.1:9/unused")
        self.payments = PaymentFlow(self.db, self.redis, settings_, {"simulated": self.simulator})
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.partners: list[str] = []
        self.customer = uuid.uuid4().hex
        self.admin = uuid.uuid4().hex
        self.histories: dict[str, list[dict[str, Any]]] = {}

    async def start(self) -> None:
        await self.redis.flushdb()
        await api_orders.ensure_indexes(self.db)
        await api_payments.ensure_indexes(self.db)
        await self.pubsub.subscribe(ORDER_EVENTS, OFFER_EVENTS, PAYMENT_EVENTS, MARK)
        await self.db.users.insert_one({"_id": self.customer, "role": "customer", "email": "c@example.test",
                                        "created_at": iso(), "deleted": 0})
        for i in range(PARTNERS):
            pid = uuid.uuid4().hex
            now = iso()
            await self.db.partners.insert_one({"_id": pid, "first_name": "Pat", "status": "approved",
                                               "vehicle_type": "bike", "created_at": now, "status_at": now})
            lat, lng = CENTER[0] + 0.004 * (i + 1), CENTER[1]
            await self.engine.fleet.write_positions({pid: (LocationPoint(lat=lat, lng=lng, ts=now_ms()), now_ms())})
            await self.engine.fleet.mark_connected(pid, f"sock-{pid}")
            await self.engine.fleet.set_online(pid, True)
            self.partners.append(pid)

    async def stop(self) -> None:
        await self.tasks.aclose()
        await self.pubsub.aclose()
        await self.simulator.aclose()
        await self.engine.stop()
        try:
            await self.client.drop_database(self.settings.mongodb_db)
        finally:
            await self.client.close()
            await self.redis.aclose()

    # --- letting the system come to rest ---------------------------------------------------------

    async def settle(self) -> None:
        """Deliver every event published so far to the engine's handlers, run what they spawned and
        the wake-ups they queued, until a pass finds nothing to do."""
        handlers = self.engine.events.handlers
        for _ in range(SETTLE_ROUNDS):
            marker = uuid.uuid4().hex
            await self.redis.publish(MARK, marker)
            handled = 0
            deadline = asyncio.get_running_loop().time() + 5.0
            while True:
                # None also stands for a skipped subscribe confirmation: only the deadline says lost.
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    assert asyncio.get_running_loop().time() < deadline, "the step's events never arrived"
                    continue
                if message["channel"] == MARK:
                    if message["data"] == marker:
                        break
                    continue
                await handlers[message["channel"]](message["data"])
                handled += 1
            handled += await self.tasks.drain()
            # The engine's wake loop, one batch (its queue is what `Engine.wake` fills).
            woken, self.engine._wake_ids = self.engine._wake_ids, set()
            if woken:
                await self.engine.offers.wake(woken)
                handled += 1
            if not handled:
                return
        raise AssertionError("the system never came to rest")

    # --- the actions (each as its real caller makes it) --------------------------------------------

    async def create(self, option: str) -> str:
        """What POST /api/orders stores and announces (ASAP: dispatch may start at once)."""
        oid = uuid.uuid4().hex
        now = iso()
        deposit = PRICE * self.settings.deposit_rate_bp // 10_000
        status = "placed" if option == "cash" else "pending_payment"
        order: dict[str, Any] = {
            "_id": oid, "customer_id": self.customer, "package_id": "pkg1",
            "package": {"name": "Birthday Bash", "price": PRICE, "currency": "INR", "category": "Kids",
                        "duration_min": 120},
            "event_date": "2026-12-24",
            "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001",
                        "lat": CENTER[0], "lng": CENTER[1]},
            "guests": 20, "notes": "", "payment_option": option, "price": PRICE, "currency": "INR",
            "status": status, "version": 1,
            "history": [{"status": status, "at": now, "by_role": "customer", "by": self.customer, "reason": None}],
            "payment_status": "unpaid", "amount_due": PRICE, "amount_paid": 0, "amount_refunded": 0,
            "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0, "declined_partner_ids": [],
            "dispatch_at_ms": 0, "arrive_before_ms": now_ms() + 86_400_000,
            "created_at": now, "updated_at": now, "notify_pending": 1, "notified_upto": 0, "reviewed": 0,
        }
        if option == "deposit":
            order["deposit_amount"] = deposit
        await self.db.orders.insert_one(order)
        await self.flow.announce(order, prev_status=None, by_role="customer")
        return oid

    async def pay(self, oid: str, outcome: str, confirm: bool) -> None:
        """The customer pays what is due through the simulator, then (maybe) the page confirms;
        otherwise only the webhook tells us."""
        try:
            doc = await self.payments.checkout("simulated", oid, self.customer)
        except AppError:
            return  # cash, closed, paid in full, or already paid and being applied
        await self.simulator.complete(str(doc["provider_payment_id"]), "succeeded" if outcome == "ok" else "failed")
        if confirm:
            await self.payments.confirm(doc, by_role="customer", by_id=self.customer)

    async def deliver_webhooks(self, twice: bool) -> None:
        """The simulator's queued webhooks, verified and handled as the webhook route does (twice:
        a provider's retry)."""
        async for doc in self.db.simulator_webhooks.find({"status": "pending"}):
            body, headers = self.simulator.signed_request(str(doc["body"]))
            event = self.simulator.verify_webhook(body, headers)
            for _ in range(2 if twice else 1):
                await self.payments.handle_event("simulated", event)
            await self.db.simulator_webhooks.update_one({"_id": doc["_id"]}, {"$set": {"status": "delivered"}})

    async def accept(self, oid: str, pid: str) -> dict[str, Any]:
        """The socket `offer_reply` accept."""
        return await self.engine.offers.reply(oid, pid, True, via="socket")

    async def accept_rest(self, oid: str, pid: str) -> None:
        """PUT /api/partner/orders/{id}/accept."""
        try:
            await self.flow.accept_offer(oid, pid)
        except AppError:
            pass

    async def decline(self, oid: str, pid: str) -> None:
        await self.engine.offers.reply(oid, pid, False, via="socket")

    async def decline_rest(self, oid: str, pid: str) -> None:
        """PUT /api/partner/orders/{id}/decline: the durable record, then the event."""
        after = await self.db.orders.find_one_and_update(
            {"_id": oid, "status": "offered", "offer_partner_ids": {"$in": [pid]}},
            {"$addToSet": {"declined_partner_ids": pid}, "$set": {"updated_at": iso()}})
        if after is not None:
            event = OfferReplyEvent(order_id=oid, partner_id=pid, accept=False)
            await self.redis.publish(OFFER_EVENTS, event.model_dump_json())

    async def timeout(self, oid: str) -> None:
        """The clock passes the offer's expiry; the timer loop claims the due timers."""
        order = await self.db.orders.find_one({"_id": oid}, {"status": 1, "offer_fence": 1})
        if order is not None and order["status"] == "offered":
            expired = now_ms() - 1
            await self.db.orders.update_one({"_id": oid, "status": "offered", "offer_fence": order["offer_fence"]},
                                            {"$set": {"offer_expires_ms": expired}})
            await self.redis.zadd(OFFER_TIMERS, {oid: expired}, xx=True)
        await self.run_timers()

    async def run_timers(self) -> None:
        for due in await self.engine.offers.claim_due(16):
            await self.engine.offers.expire(due)

    async def cancel(self, oid: str, pid: str) -> None:
        """POST /api/orders/{id}/cancel by the customer (even partner index) or an admin (odd)."""
        admin = self.partners.index(pid) % 2 == 1
        try:
            after = await self.flow.transition(
                oid, "cancelled", by_role="admin" if admin else "customer",
                by_id=self.admin if admin else self.customer, reason="changed plans",
                allowed_from=ACTIVE if admin else CUSTOMER_CANCELLABLE,
                set_fields={"offer_partner_ids": [], "offer_expires_ms": 0, "cancelled_at": iso(), "amount_due": 0})
        except AppError:
            return
        if int(after.get("amount_paid") or 0) > 0 or after.get("payment_option") != "cash":
            try:
                await self.payments.settle_order(oid)
            except AppError:
                pass

    async def assign(self, oid: str, pid: str) -> None:
        """PUT /api/admin/orders/{id}/assign (assign or reassign)."""
        before = await self.db.orders.find_one({"_id": oid}, {"partner_id": 1})
        assert before is not None
        try:
            await self.flow.assign(oid, pid, by_role="admin", by_id=self.admin, reason="manual assignment",
                                   allowed_from=ASSIGNABLE, conflict_message="this order cannot be assigned now",
                                   record_same=before.get("partner_id") != pid)
        except AppError:
            pass

    async def progress(self, oid: str, pid: str) -> None:
        """PUT /api/partner/orders/{id}/status: the assigned partner's next step."""
        order = await self.db.orders.find_one({"_id": oid}, {"partner_id": 1, "status": 1})
        if order is None or not order.get("partner_id"):
            return
        partner = str(order["partner_id"])
        current = str(order["status"])
        nxt = PARTNER_NEXT.get(current)
        if nxt is None:
            return
        try:
            await self.flow.transition(oid, nxt, by_role="partner", by_id=partner, allowed_from=frozenset({current}),
                                       expect={"partner_id": partner}, set_fields={f"{nxt}_at": iso()})
        except AppError:
            pass

    async def refund(self, oid: str, share: int) -> tuple[int, bool]:
        """POST /api/admin/payments/{id}/refund for `share`% of the payment (0: all that is left).
        Returns (what was left before, whether it was refunded)."""
        payment = await self.db.payments.find_one({"order_id": oid, "status": {"$in": sorted(CAPTURED)}})
        if payment is None:
            return 0, False
        reserved = sum(int(r["amount"]) for r in payment.get("refunds") or []
                       if r.get("status") in ("pending", "succeeded"))
        left = int(payment["amount"]) - reserved
        amount = None if share == 0 else int(payment["amount"]) * share // 100
        try:
            await self.payments.refund(str(payment["_id"]), amount=amount, reason="goodwill", key=uuid.uuid4().hex,
                                       by_role="admin", by_id=self.admin)
        except AppError as exc:
            assert exc.code in ("refund_exceeds_captured", "not_refundable"), exc.code
            assert (amount is not None and amount > left) or left <= 0, (amount, left)
            return left, False
        assert amount is None or amount <= left, (amount, left)
        return left, True

    async def off_duty(self, pid: str) -> None:
        """The socket `availability {online: false}` (it declines a held offer), then back on duty."""
        await self.engine.fleet.set_online(pid, False)
        await self.engine.offers.release_held_offer(pid, via="off_duty")
        await self.settle()
        if await self.engine.fleet.set_online(pid, True):
            self.engine.wake([pid])

    async def act(self, action: str, oid: str, pid: str) -> None:
        methods: Mapping[str, Callable[[str, str], Awaitable[Any]]] = {
            "accept": self.accept, "accept_rest": self.accept_rest, "decline": self.decline,
            "decline_rest": self.decline_rest, "timeout": lambda o, _p: self.timeout(o),
            "cancel": self.cancel, "assign": self.assign,
            "pay": lambda o, _p: self.pay(o, "ok", True), "progress": self.progress,
        }
        await methods[action](oid, pid)

    # --- the invariants ---------------------------------------------------------------------------

    async def check(self) -> set[str]:
        """Assert every invariant; returns the order and payment states present (for statistics)."""
        orders = await self.db.orders.find({}).to_list(None)
        partners = {str(p["_id"]): p for p in await self.db.partners.find({}).to_list(None)}
        payments = await self.db.payments.find({}).to_list(None)
        by_order: dict[str, list[dict[str, Any]]] = {}
        for payment in payments:
            by_order.setdefault(str(payment["order_id"]), []).append(payment)
        jobs: dict[str, list[str]] = {}
        for order in orders:
            oid = str(order["_id"])
            status = order["status"]
            self._check_history(order)
            if status in TRACKABLE or status == "completed":
                assert isinstance(order.get("partner_id"), str) and order["partner_id"], (oid, status)
            if status in TRACKABLE:
                jobs.setdefault(str(order["partner_id"]), []).append(oid)
            if status == "offered":
                await self._check_offer(order)
            self._check_money(order, by_order.get(oid, []))
        for pid, partner in partners.items():
            active = jobs.get(pid, [])
            assert len(active) <= 1, f"partner {pid} has {len(active)} active jobs: {active}"
            claim = str(partner.get(PARTNER_JOB_FIELD) or "")
            assert claim == (active[0] if active else ""), (pid, claim, active)
            mirrored = await self.redis.hget(state_key(pid), "order_id")
            assert (mirrored or "") == claim, f"fleet says partner {pid} is on {mirrored!r}, MongoDB {claim!r}"
        # Every lease names an open offer round that the partner holds, at its fence.
        offered = {str(o["_id"]): o for o in orders if o["status"] == "offered"}
        for pid in partners:
            lease = await self.redis.get(offer_key(pid))
            if lease is None:
                continue
            oid, fence = str(lease).rsplit(":", 1)
            held = offered.get(oid)
            assert held is not None, f"partner {pid} holds a lease on {oid}, which is not offered"
            assert int(fence) == int(held["offer_fence"]), (pid, lease, held["offer_fence"])
            assert pid in held["offer_partner_ids"], (pid, lease, held["offer_partner_ids"])
        return {str(o["status"]) for o in orders} | {f"payment {p['status']}" for p in payments}

    def _check_history(self, order: Mapping[str, Any]) -> None:
        oid = str(order["_id"])
        history = [dict(h) for h in order.get("history") or []]
        steps = [str(h["status"]) for h in history]
        assert steps and steps[0] in ("pending_payment", "placed"), steps
        for before, after in itertools.pairwise(steps):
            assert after in TRANSITIONS[before], f"order {oid}: illegal step {before} -> {after} in {steps}"
        assert steps[-1] == order["status"], (oid, steps, order["status"])
        previous = self.histories.get(oid, [])
        assert history[:len(previous)] == previous, f"order {oid}: history rewritten"
        self.histories[oid] = history

    async def _check_offer(self, order: Mapping[str, Any]) -> None:
        oid = str(order["_id"])
        fence = int(order["offer_fence"])
        holders = [str(p) for p in order.get("offer_partner_ids") or []]
        assert holders, f"order {oid} is offered to nobody"
        in_redis = await self.redis.smembers(OFFER_HOLDERS.format(order_id=oid))
        for pid in holders:
            assert await self.redis.get(offer_key(pid)) == f"{oid}:{fence}", (oid, pid, fence)
            assert pid in in_redis, (oid, pid, in_redis)
            assert pid not in (order.get("declined_partner_ids") or []), (oid, pid)
        assert await self.redis.zscore(OFFER_TIMERS, oid) is not None, f"offered order {oid} has no timer"

    def _check_money(self, order: Mapping[str, Any], payments: list[dict[str, Any]]) -> None:
        oid = str(order["_id"])
        captured = 0
        refunded = 0
        for payment in payments:
            amount = int(payment["amount"])
            refunds = payment.get("refunds") or []
            reserved = sum(int(r["amount"]) for r in refunds if r.get("status") in ("pending", "succeeded"))
            done = sum(int(r["amount"]) for r in refunds if r.get("status") == "succeeded")
            assert reserved <= amount, f"payment {payment['_id']}: {reserved} reserved of {amount}"
            assert int(payment.get("amount_refunded") or 0) == done <= amount, (payment["_id"], done, amount)
            if done:
                assert payment["status"] in ("partially_refunded", "refunded"), (payment["_id"], payment["status"])
            if payment["status"] in CAPTURED:
                captured += amount
            refunded += done
        assert refunded <= captured, f"order {oid}: {refunded} refunded of {captured} captured"
        assert int(order.get("amount_paid") or 0) == captured, (oid, order.get("amount_paid"), captured)
        assert int(order.get("amount_refunded") or 0) == refunded, (oid, order.get("amount_refunded"), refunded)
        assert int(order.get("amount_refunded") or 0) <= int(order.get("amount_paid") or 0), oid
        assert captured <= int(order["price"]), f"order {oid}: {captured} captured for a price of {order['price']}"
        if order["status"] == "refunded":
            assert refunded > 0, oid
        statuses = [str(h["status"]) for h in order.get("history") or []]
        if order["payment_option"] != "cash" and "placed" in statuses:
            # Dispatch starts only once what is required up front was captured.
            assert captured >= required_to_place(order), (oid, captured, statuses)


class LifecycleMachine(RuleBasedStateMachine):
    """Random interleavings of the order, offer and payment lifecycles."""

    orders = Bundle("orders")

    # Set by the test on a subclass: the suite's settings factory (its stores, a database per call).
    make_settings: Callable[..., Settings]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world: World | None = None
        self.created = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    async def _step(self, action: Awaitable[Any]) -> Any:
        result = await action
        await self.w.settle()
        return result

    def step(self, action: Coroutine[Any, Any, Any]) -> Any:
        return self.run(self._step(action))

    def partner(self, index: int) -> str:
        return self.w.partners[index % PARTNERS]

    @initialize(strategy=st.sampled_from(["sequential", "top_k", "broadcast"]))
    def start(self, strategy: str) -> None:
        self.world = World(self.make_settings(
            mongodb_db=f"t_{uuid.uuid4().hex[:12]}", dispatch_strategy=strategy, dispatch_top_k=2,
            offer_timeout_s=OFFER_TIMEOUT_S, orders_per_customer_per_hour=10_000))
        self.run(self.world.start())

    # A few orders per run, so that runs go deep into each order's life rather than wide.
    @precondition(lambda self: self.created < MAX_ORDERS)
    @rule(target=orders, option=st.sampled_from(["cash", "deposit", "full"]))
    def create(self, option: str) -> str:
        self.created += 1
        return str(self.step(self.w.create(option)))

    @rule(order=orders, outcome=st.sampled_from(["ok", "ok", "declined"]), confirm=st.booleans())
    def pay(self, order: str, outcome: str, confirm: bool) -> None:
        self.step(self.w.pay(order, outcome, confirm))

    @rule(twice=st.booleans())
    def deliver_webhooks(self, twice: bool) -> None:
        self.step(self.w.deliver_webhooks(twice))

    @rule(order=orders, p=st.integers(0, PARTNERS - 1))
    def accept(self, order: str, p: int) -> None:
        pid = self.partner(p)

        async def accept_and_judge() -> None:
            before = await self.w.db.orders.find_one({"_id": order})
            claim = (await self.w.db.partners.find_one({"_id": pid}) or {}).get(PARTNER_JOB_FIELD)
            ack = await self.w.accept(order, pid)
            assert before is not None
            live = before["status"] == "offered" and pid in before["offer_partner_ids"] \
                and int(before["offer_expires_ms"]) > now_ms() and pid not in before["declined_partner_ids"]
            if live and not claim:
                assert ack.get("ok"), f"a live holder's accept was refused: {ack}"
            if ack.get("ok"):
                assert live, f"an accept of a closed offer won: {before['status']}"

        self.step(accept_and_judge())

    @rule(order=orders, p=st.integers(0, PARTNERS - 1))
    def accept_rest(self, order: str, p: int) -> None:
        self.step(self.w.accept_rest(order, self.partner(p)))

    @rule(order=orders, p=st.integers(0, PARTNERS - 1), rest=st.booleans())
    def decline(self, order: str, p: int, rest: bool) -> None:
        pid = self.partner(p)
        self.step(self.w.decline_rest(order, pid) if rest else self.w.decline(order, pid))

    @rule(order=orders)
    def timeout(self, order: str) -> None:
        self.step(self.w.timeout(order))

    @rule(order=orders, p=st.integers(0, PARTNERS - 1))
    def cancel(self, order: str, p: int) -> None:
        self.step(self.w.cancel(order, self.partner(p)))

    @rule(order=orders, p=st.integers(0, PARTNERS - 1))
    def assign(self, order: str, p: int) -> None:
        self.step(self.w.assign(order, self.partner(p)))

    @rule(order=orders, steps=st.integers(1, 4))
    def progress(self, order: str, steps: int) -> None:
        async def advance() -> None:
            for _ in range(steps):
                await self.w.progress(order, "")

        self.step(advance())

    @rule(order=orders, share=st.sampled_from([0, 10, 50, 100, 120]))
    def refund(self, order: str, share: int) -> None:
        self.step(self.w.refund(order, share))

    @rule(p=st.integers(0, PARTNERS - 1))
    def off_duty(self, p: int) -> None:
        self.step(self.w.off_duty(self.partner(p)))

    @rule()
    def sweep(self) -> None:
        async def sweeps() -> None:
            await self.w.engine.offers.sweep()
            await self.w.payments.sweep()
            await self.w.run_timers()

        self.step(sweeps())

    @rule(order=orders, first=st.sampled_from(ACTIONS), second=st.sampled_from(ACTIONS),
          p=st.integers(0, PARTNERS - 1), q=st.integers(0, PARTNERS - 1))
    def race(self, order: str, first: str, second: str, p: int, q: int) -> None:
        """Two actions on one order at once (two processes, or two requests)."""
        async def both() -> None:
            results = await asyncio.gather(self.w.act(first, order, self.partner(p)),
                                           self.w.act(second, order, self.partner(q)), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        self.step(both())

    @precondition(lambda self: self.world is not None)
    @invariant()
    def lifecycle_invariants(self) -> None:
        for status in sorted(self.run(self.w.check())):
            event(f"reached {status}")  # coverage, shown by --hypothesis-show-statistics

    def teardown(self) -> None:
        try:
            if self.world is not None:
                self.run(self.world.stop())
        finally:
            self.loop.close()


@pytest.mark.timeout(900)
def test_order_offer_and_payment_lifecycles_keep_their_invariants(make_settings: Callable[..., Settings]) -> None:
    machine = type("LifecycleRun", (LifecycleMachine,), {"make_settings": staticmethod(make_settings)})
    run_state_machine_as_test(machine, settings=settings.get_profile(PROFILE))


async def test_a_quick_reassignment_leaves_the_first_partner_free_in_the_fleet(
        make_settings: Callable[..., Settings]) -> None:
    """Found by the machine: an assignment's busy mark ran in a spawned task, after the next event's
    reassignment had already cleared it, so the first partner stayed busy (unmatchable) until the sweep."""
    world = World(make_settings(mongodb_db=f"t_{uuid.uuid4().hex[:12]}", offer_timeout_s=OFFER_TIMEOUT_S))
    await world.start()
    try:
        first, second = world.partners[:2]
        oid = await world.create("cash")
        await world.settle()
        await world.assign(oid, first)
        await world.assign(oid, second)  # both events are handled before any spawned task runs
        await world.settle()
        assert await world.redis.hget(state_key(first), "order_id") is None
        assert await world.redis.hget(state_key(second), "order_id") == oid
        await world.check()
    finally:
        await world.stop()


async def test_a_losing_accept_does_not_free_a_partner_the_admin_just_assigned_to_the_same_order(
        make_settings: Callable[..., Settings]) -> None:
    """Found by the machine: the partner's accept claimed them first, the admin's assignment of the
    same partner to the same order shared that claim and committed, then the accept lost and gave
    "its" claim back, so the partner looked free (offerable) while on the job."""
    world = World(make_settings(mongodb_db=f"t_{uuid.uuid4().hex[:12]}", offer_timeout_s=OFFER_TIMEOUT_S))
    await world.start()
    try:
        partner = world.partners[0]
        oid = await world.create("cash")
        await world.settle()
        assert await world.flow.claim_partner(partner, oid)  # the accept's claim, its commit still to come
        await world.flow.assign(oid, partner, by_role="admin", by_id=world.admin, reason="manual assignment",
                                allowed_from=ASSIGNABLE)
        await world.flow.release_partner(partner, oid)  # the accept lost: it gives back what it took
        await world.settle()
        claim = await world.db.partners.find_one({"_id": partner}, {PARTNER_JOB_FIELD: 1})
        assert claim is not None and claim[PARTNER_JOB_FIELD] == oid
        await world.check()
    finally:
        await world.stop()
