"""The notification outbox and its workers: real SMTP (aiosmtpd) and the real Twilio SDK against a
fake, retries with backoff, exactly-once delivery, and order history turned into messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from api import notifications
from core import keys
from core.jsonutil import iso, now_ms
from core.orderflow import OrderFlow
from core.settings import Settings
from core.stores import make_mongo_client
from gateway_clients.messaging import Messengers
from partypilot.app import create_app
from partypilot.localservices import free_port
from tests.fakes import SmtpSink, app_of, local_messages, wait_for_message
from tests.fakes.twilio import FakeTwilio

Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    """The test database with the outbox indexes, and no app (so no background worker) running."""
    client = make_mongo_client(settings.mongodb_uri)
    database = client[settings.mongodb_db]
    await notifications.ensure_indexes(database)
    yield database
    await client.close()


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def smtp(smtp_port: int) -> Iterator[SmtpSink]:
    sink = SmtpSink(smtp_port).start()
    yield sink
    sink.stop()


@pytest.fixture
def real_settings(make_settings: Callable[..., Settings], twilio: FakeTwilio, smtp_port: int) -> Settings:
    """Settings that select the real gateways: SMTP on loopback and Twilio at the fake."""
    return make_settings(smtp_host="127.0.0.1", smtp_port=smtp_port, twilio_account_sid=twilio.account_sid,
                         twilio_auth_token=twilio.auth_token, twilio_from_number="+15005550006",
                         twilio_api_base=twilio.base_url)


@pytest.fixture
async def messengers(real_settings: Settings) -> AsyncIterator[Messengers]:
    pair = Messengers.from_settings(real_settings)
    yield pair
    await pair.aclose()


async def queue_email(db: Db, key: str = "k1", to: str = "asha@example.com") -> None:
    await notifications.enqueue(db, channel="email", to=to, subject="Order received", body="Hello", dedupe_key=key)


async def test_the_outbox_delivers_email_by_smtp_and_sms_by_twilio(db: Db, smtp: SmtpSink, twilio: FakeTwilio,
                                                                   messengers: Messengers) -> None:
    await queue_email(db)
    await notifications.enqueue(db, channel="sms", to="+919876543210", subject="", body="On the way",
                                dedupe_key="k2")
    assert await notifications.deliver_due(db, messengers) == 2
    assert [m["Subject"] for m in smtp.messages] == ["Order received"]
    assert [(m["to"], m["body"]) for m in twilio.messages] == [("+919876543210", "On the way")]
    statuses = {doc["dedupe_key"]: doc["status"] async for doc in db.outbox.find({})}
    assert statuses == {"k1": "sent", "k2": "sent"}
    assert await notifications.deliver_due(db, messengers) == 0  # nothing is sent twice


async def test_enqueueing_the_same_key_twice_stores_one_message(db: Db) -> None:
    await queue_email(db, "same")
    await queue_email(db, "same")
    assert await db.outbox.count_documents({"dedupe_key": "same"}) == 1


async def test_mail_queued_while_smtp_is_down_is_delivered_once_it_is_back(
        db: Db, smtp_port: int, messengers: Messengers) -> None:
    await queue_email(db)
    assert await notifications.deliver_due(db, messengers) == 1  # tried, failed
    doc = await db.outbox.find_one({"dedupe_key": "k1"})
    assert doc is not None and doc["status"] == "pending" and doc["attempts"] == 1 and doc["last_error"]
    assert doc["next_attempt_ms"] > now_ms()  # backing off, not spinning

    sink = SmtpSink(smtp_port).start()
    try:
        assert await notifications.deliver_due(db, messengers) == 0  # still waiting out the backoff
        # Let the backoff pass (instead of sleeping through it).
        await db.outbox.update_one({"dedupe_key": "k1"}, {"$set": {"next_attempt_ms": now_ms()}})
        assert await notifications.deliver_due(db, messengers) == 1
        assert await notifications.deliver_due(db, messengers) == 0
        assert len(sink.messages) == 1
    finally:
        sink.stop()
    doc = await db.outbox.find_one({"dedupe_key": "k1"})
    assert doc is not None and doc["status"] == "sent" and doc["attempts"] == 2


async def test_a_twilio_outage_is_retried_and_a_bad_number_is_not(
        db: Db, twilio: FakeTwilio, messengers: Messengers) -> None:
    twilio.fail_next = 1
    twilio.invalid_numbers.add("+919999999999")
    await notifications.enqueue(db, channel="sms", to="+919876543210", subject="", body="hi", dedupe_key="ok")
    await notifications.enqueue(db, channel="sms", to="+919999999999", subject="", body="hi", dedupe_key="bad")
    await notifications.deliver_due(db, messengers)
    await db.outbox.update_many({"status": "pending"}, {"$set": {"next_attempt_ms": 0}})
    await notifications.deliver_due(db, messengers)
    await db.outbox.update_many({"status": "pending"}, {"$set": {"next_attempt_ms": 0}})
    assert await notifications.deliver_due(db, messengers) == 0
    assert [m["to"] for m in twilio.messages] == ["+919876543210"]
    bad = await db.outbox.find_one({"dedupe_key": "bad"})
    assert bad is not None and bad["status"] == "failed" and bad["attempts"] == 1


def test_backoff_grows_exponentially_with_a_cap() -> None:
    delays = [notifications.backoff_ms(n) for n in range(1, 15)]
    assert 1600 <= delays[0] <= 2400 and 3200 <= delays[1] <= 4800
    assert all(d <= notifications.BACKOFF_CAP_S * 1200 for d in delays)
    assert delays[-1] >= notifications.BACKOFF_CAP_S * 800


async def test_parallel_workers_deliver_each_message_exactly_once(db: Db, smtp: SmtpSink,
                                                                  messengers: Messengers) -> None:
    for n in range(12):
        await queue_email(db, f"m{n}", to=f"user{n}@example.com")
    handled = await asyncio.gather(*[notifications.deliver_due(db, messengers) for _ in range(3)])
    assert sum(handled) == 12
    assert sorted(m["To"] for m in smtp.messages) == sorted(f"user{n}@example.com" for n in range(12))


async def test_a_message_left_sending_by_a_dead_worker_is_taken_over(db: Db, smtp: SmtpSink,
                                                                     messengers: Messengers) -> None:
    await queue_email(db)
    await db.outbox.update_one({}, {"$set": {"status": "sending", "lease": "dead-worker",
                                             "lease_until_ms": now_ms() + 60_000}})
    assert await notifications.deliver_due(db, messengers) == 0  # the lease still holds
    await db.outbox.update_one({}, {"$set": {"lease_until_ms": now_ms() - 1}})
    assert await notifications.deliver_due(db, messengers) == 1
    assert len(smtp.messages) == 1


async def test_an_expired_sign_in_code_is_not_sent_and_its_body_is_blanked(db: Db, messengers: Messengers,
                                                                           twilio: FakeTwilio) -> None:
    await notifications.enqueue(db, channel="sms", to="+919876543210", subject="", body="123456 is your code",
                                dedupe_key="otp:1", expires_ms=now_ms() - 1, sensitive=True)
    await notifications.deliver_due(db, messengers)
    doc = await db.outbox.find_one({"dedupe_key": "otp:1"})
    assert doc is not None and doc["status"] == "expired" and doc["body"] == ""
    assert twilio.messages == []


async def test_the_app_runs_the_outbox_worker_in_the_background(aiohttp_client: Any, real_settings: Settings,
                                                                smtp: SmtpSink, redis: Redis) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(real_settings))
    await queue_email(app_of(client)[keys.DB])
    deadline = time.monotonic() + 5
    while not smtp.messages and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(smtp.messages) == 1


# --- order notifications ----------------------------------------------------------------------

async def make_order(db: Db, customer_id: str) -> str:
    order_id = uuid.uuid4().hex
    at = iso()
    await db.orders.insert_one({
        "_id": order_id, "customer_id": customer_id, "package_id": "p1", "status": "placed", "version": 1,
        "package": {"name": "Jungle Birthday", "price": 1_500_000, "currency": "INR", "category": "Kids",
                    "duration_min": 180},
        "event_date": "2030-01-15", "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001",
                                                 "lat": 12.97, "lng": 77.6},
        "price": 1_500_000, "currency": "INR", "created_at": at, "updated_at": at,
        "history": [{"status": "placed", "at": at, "by_role": "customer", "by": customer_id, "reason": None}],
        "notify_pending": 1, "notified_upto": 0, "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0,
    })
    return order_id


async def make_customer(db: Db) -> str:
    user_id = uuid.uuid4().hex
    await db.users.insert_one({"_id": user_id, "role": "customer", "email": "asha@example.com",
                               "phone": "+919876543210", "name": "Asha", "created_at": iso(), "deleted": 0})
    return user_id


async def test_order_history_becomes_messages_exactly_once(db: Db, settings: Settings, redis: Redis) -> None:
    customer = await make_customer(db)
    await db.partners.insert_one({"_id": "p-1", "first_name": "Ravi", "status": "approved"})
    order_id = await make_order(db, customer)
    flow = OrderFlow(db, redis)

    assert await notifications.notify_orders_once(db, settings) == 1
    assert await notifications.notify_orders_once(db, settings) == 0  # nothing new: nothing queued
    await flow.transition(order_id, "offered", by_role="system", by_id=None)
    await flow.transition(order_id, "assigned", by_role="partner", by_id="p-1", set_fields={"partner_id": "p-1"})
    await notifications.notify_orders_once(db, settings)
    await notifications.notify_orders_once(db, settings)
    await flow.transition(order_id, "cancelled", by_role="admin", by_id="a-1", reason="venue closed")
    await notifications.notify_orders_once(db, settings)

    keys_queued = sorted([doc["dedupe_key"] async for doc in db.outbox.find({})])
    assert keys_queued == sorted(f"{order_id}:{i}:{c}" for i in (0, 2, 3) for c in ("email", "sms"))
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["notify_pending"] == 0 and order["notified_upto"] == 4

    local = Messengers.from_settings(settings)
    assert await notifications.deliver_due(db, local) == 6
    assert await notifications.deliver_due(db, local) == 0
    emails, sms = local_messages(settings, "email"), local_messages(settings, "sms")
    subjects = [m["subject"] for m in emails]
    assert len(subjects) == 3
    assert subjects[0].endswith("received") and subjects[1].endswith("partner assigned")
    assert subjects[2].endswith("cancelled")
    assert "Ravi" in emails[1]["body"] and "venue closed" in emails[2]["body"]
    assert len(sms) == 3 and all(m["to"] == "+919876543210" for m in sms)


async def test_an_order_changed_meanwhile_stays_pending(db: Db, settings: Settings, redis: Redis) -> None:
    customer = await make_customer(db)
    order_id = await make_order(db, customer)
    stale = await db.orders.find_one({"_id": order_id})
    assert stale is not None
    await OrderFlow(db, redis).transition(order_id, "cancelled", by_role="customer", by_id=customer)
    await notifications.notify_order(db, settings, stale)  # the worker's view is one version old
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["notify_pending"] == 1 and order.get("notified_upto") == 0
    await notifications.notify_orders_once(db, settings)
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["notify_pending"] == 0 and order["notified_upto"] == 2
    assert await db.outbox.count_documents({}) == 4  # placed + cancelled, email + sms, none twice


async def test_customers_without_contact_details_get_nothing(db: Db, settings: Settings) -> None:
    await db.users.insert_one({"_id": "gone", "role": "customer", "name": "Deleted user", "deleted": 1})
    order_id = await make_order(db, "gone")
    await notifications.notify_orders_once(db, settings)
    assert await db.outbox.count_documents({}) == 0
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["notify_pending"] == 0


async def test_the_app_runs_the_order_notifier_in_the_background(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    customer = await make_customer(app[keys.DB])
    order_id = await make_order(app[keys.DB], customer)
    message = await wait_for_message(app, "email", "asha@example.com")  # queued by the app's own worker
    assert message["subject"].endswith("received") and order_id[-6:].upper() in message["subject"]


# --- the code lane ----------------------------------------------------------------------------

class SlowSmtpSink(SmtpSink):
    """The loopback SMTP server, taking `delay_s` over each message (to `slow` recipients only, when
    given) and recording how many it was receiving at once."""

    def __init__(self, port: int, delay_s: float, slow: set[str] | None = None) -> None:
        super().__init__(port)
        self.delay_s = delay_s
        self.slow = slow
        self.in_flight = 0
        self.most_at_once = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        delayed = self.slow is None or bool(self.slow & set(envelope.rcpt_tos))
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            if delayed:
                await asyncio.sleep(self.delay_s)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.in_flight -= 1


async def queue_code(db: Db, key: str, to: str = "asha@example.com", *, expires_in_ms: int = 300_000) -> None:
    await notifications.enqueue(db, channel="email", to=to, subject="Your PartyPilot sign-in code",
                                body="123456 is your PartyPilot sign-in code.", dedupe_key=key,
                                expires_ms=now_ms() + expires_in_ms, sensitive=True)


async def test_a_sign_in_code_goes_out_before_an_older_backlog_of_bulk_mail(
        db: Db, smtp: SmtpSink, messengers: Messengers) -> None:
    # What an SMTP outage leaves behind: a backlog of order mail older than the code.
    for n in range(notifications.BATCH + 10):
        await queue_email(db, f"bulk{n}", to=f"user{n}@example.com")
    await queue_code(db, "otp:1", to="signing-in@example.com")
    await notifications.deliver_due(db, messengers)
    assert smtp.messages[0]["To"] == "signing-in@example.com"
    doc = await db.outbox.find_one({"dedupe_key": "otp:1"})
    assert doc is not None and doc["status"] == "sent" and doc["lane"] == "code" and doc["body"] == ""


async def test_codes_are_sent_several_at_once_and_each_exactly_once(db: Db, smtp_port: int,
                                                                   messengers: Messengers) -> None:
    sink = SlowSmtpSink(smtp_port, delay_s=0.3).start()
    try:
        for n in range(6):
            await queue_code(db, f"otp:{n}", to=f"user{n}@example.com")
        handled = await asyncio.gather(*[notifications.deliver_lane(db, messengers, "code") for _ in range(2)])
        assert sum(handled) == 6
        assert sorted(m["To"] for m in sink.messages) == sorted(f"user{n}@example.com" for n in range(6))
        assert sink.most_at_once > 1
    finally:
        sink.stop()


async def test_codes_that_expired_in_the_queue_are_dropped_not_sent(db: Db, smtp: SmtpSink,
                                                                   messengers: Messengers) -> None:
    for n in range(3):
        await queue_code(db, f"old{n}", expires_in_ms=-1000)
    await queue_code(db, "fresh", to="fresh@example.com")
    assert await notifications.deliver_lane(db, messengers, "code") == 1
    assert [m["To"] for m in smtp.messages] == ["fresh@example.com"]
    expired = await db.outbox.find({"dedupe_key": {"$in": ["old0", "old1", "old2"]}}).to_list()
    assert [(d["status"], d["body"], d["attempts"]) for d in expired] == [("expired", "", 0)] * 3


async def test_the_background_worker_sends_a_code_while_bulk_mail_is_still_going_out(
        aiohttp_client: Any, real_settings: Settings, smtp_port: int, redis: Redis) -> None:
    bulk = {f"user{n}@example.com" for n in range(5)}
    sink = SlowSmtpSink(smtp_port, delay_s=0.5, slow=bulk).start()
    try:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(real_settings))
        db = app_of(client)[keys.DB]
        for n in range(5):
            await queue_email(db, f"bulk{n}", to=f"user{n}@example.com")
        await queue_code(db, "otp:bg", to="signing-in@example.com")
        deadline = time.monotonic() + 10
        while not any(m["To"] == "signing-in@example.com" for m in sink.messages) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        delivered = [str(m["To"]) for m in sink.messages]
        assert "signing-in@example.com" in delivered
        assert len(bulk & set(delivered)) < len(bulk)  # the code did not wait for the bulk mail
    finally:
        sink.stop()


class _Commands(monitoring.CommandListener):
    """The commands a client sends to MongoDB, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_an_empty_lane_costs_the_store_one_claim_between_housekeeping_passes(
        settings: Settings, messengers: Messengers) -> None:
    # The lanes are polled several times a second in every app process; the embedded MongoDB
    # server runs one command at a time, so idle polls once took half its time (docs/quality.md).
    commands = _Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, event_listeners=[commands])
    try:
        watched = client[settings.mongodb_db]
        await watched.command("ping")
        commands.names.clear()
        assert await notifications.deliver_lane(watched, messengers, "code", housekeeping=False) == 0
        assert commands.names == ["findAndModify"]
        commands.names.clear()
        # With housekeeping: expired codes are dropped and dead senders' leases looked for too.
        assert await notifications.deliver_lane(watched, messengers, "code") == 0
        assert commands.names == ["update", "findAndModify", "findAndModify"]
    finally:
        await client.close()
