"""The dispatch engine's parts wired together, and the background loops they need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import (
    OFFER_EVENTS,
    ORDER_EVENTS,
    PARTNER_EVENTS,
    PAYMENT_EVENTS,
    SESSION_EVENTS,
    OfferReplyEvent,
    OrderEvent,
    PartnerEvent,
    PaymentEvent,
    SessionEvent,
)
from core.orderflow import OrderFlow
from core.settings import Settings
from core.tasks import TaskOwner, stop_if_cancelled
from dispatch.audit import AuditTrail
from dispatch.emitter import Emitter
from dispatch.events import EventListener, Handler
from dispatch.fleet import FleetIndex
from dispatch.ingest import Ingest
from dispatch.live import Live
from dispatch.matching import Matcher
from dispatch.offers import Offers
from dispatch.partners import PartnerDirectory
from gateway_clients.maps import travel_times

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
STALE_INTERVALS = 3  # a partner not heard from for 3 ping intervals is stale


def _parsed(model: type[M], handler: Callable[[M], Awaitable[None]]) -> Handler:
    """A channel handler that validates the message into `model` first; a malformed one is skipped."""
    async def handle(raw: str) -> None:
        try:
            event = model.model_validate_json(raw)
        except ValidationError:
            logger.warning("ignored a malformed %s", model.__name__)
            return
        await handler(event)

    return handle


@dataclass(frozen=True)
class Tuning:
    """Loop periods. Defaults suit production; tests shorten them."""

    sweep_s: float = 5.0
    timer_poll_s: float = 0.1
    trim_every_sweeps: int = 60


class Engine:
    """Owns the fleet index, ingest, matching, offers and live streams of one process."""

    def __init__(self, settings: Settings, db: AsyncDatabase[dict[str, Any]], redis: Redis, emitter: Emitter,
                 tuning: Tuning | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.tuning = tuning or Tuning()
        stale_ms = int(settings.ping_interval_s * STALE_INTERVALS * 1000)
        self.fleet = FleetIndex(redis, db, stale_ms)
        self.partners = PartnerDirectory(db)
        self.ingest = Ingest(self.fleet, db)
        self.audit = AuditTrail(db)
        key = settings.google_maps_api_key.get_secret_value() if settings.google_maps_api_key else None
        self.matcher = Matcher(self.fleet, self.partners, travel_times(key, settings.google_maps_api_base))
        self.offers = Offers(settings, redis, db, self.fleet, self.matcher, self.audit, OrderFlow(db, redis), emitter)
        self.live = Live(db, self.fleet, emitter)
        self.ingest.listeners.append(self.live.on_ping)
        self.tasks: TaskOwner | None = None
        # Set by the socket server: end the local sockets of a partner or a session.
        self.on_partner_standing: list[Any] = []
        self.on_session_revoked: list[Any] = []
        # Set by the socket server: re-check its sockets against revocations and standing, in
        # case the events that would have ended them were lost.
        self.on_resync: list[Callable[[], Awaitable[None]]] = []
        self.events = EventListener(redis, {
            ORDER_EVENTS: _parsed(OrderEvent, self._order_event),
            OFFER_EVENTS: _parsed(OfferReplyEvent, self._offer_event),
            PARTNER_EVENTS: _parsed(PartnerEvent, self._partner_event),
            SESSION_EVENTS: _parsed(SessionEvent, self._session_event),
            PAYMENT_EVENTS: _parsed(PaymentEvent, self.live.on_payment_event),
        }, on_resubscribe=self.resync)

    async def start(self, tasks: TaskOwner) -> None:
        """Create indexes, rebuild the fleet index if Redis lost it, and start the loops."""
        self.tasks = tasks
        try:
            await self.audit.ensure_indexes()
            await self.ingest.ensure_indexes()
        except Exception as exc:  # an equivalent index made elsewhere under another name is fine
            logger.warning("dispatch indexes not created: %s", type(exc).__name__)
        try:
            await self.resync()
        except Exception as exc:  # Redis or Mongo down at start: the sweeper retries
            logger.warning("dispatch start-up sync failed: %s", type(exc).__name__)
        tasks.spawn(self.events.run(), name="dispatch:events")
        tasks.spawn(self.ingest.flush_loop(), name="dispatch:ingest-flush")
        tasks.spawn(self.ingest.load_loop(), name="dispatch:ingest-load")
        tasks.spawn(self.ingest.persist_loop(), name="dispatch:ingest-persist")
        tasks.spawn(self._timer_loop(), name="dispatch:offer-timers")
        tasks.spawn(self._sweep_loop(), name="dispatch:sweeper")
        tasks.spawn(self.live.tick_loop(self.settings.fleet_tick_s), name="dispatch:fleet-tick")

    async def stop(self) -> None:
        """Persist what is buffered (the loops are cancelled by the task owner)."""
        await self.ingest.persist_now(limit=100_000)
        self.matcher.travel.close()

    async def resync(self) -> None:
        """Re-read the truth: fleet index after data loss, who is on which job."""
        await self.fleet.rebuild_if_lost()
        self.live.load_jobs(await self.fleet.sync_jobs())
        for callback in self.on_resync:
            await callback()

    def _spawn(self, coro: Any, name: str) -> None:
        if self.tasks is None:
            coro.close()
            return
        try:
            self.tasks.spawn(coro, name=name)
        except RuntimeError:  # shutting down
            pass

    async def _order_event(self, event: OrderEvent) -> None:
        for pid in await self.live.on_order_event(event):
            await self.fleet.clear_job_if(pid, event.order_id)
        # Matching may take a few round trips: do not hold up the next event.
        self._spawn(self.offers.on_order_event(event), name=f"dispatch:order:{event.order_id}")

    async def _offer_event(self, event: OfferReplyEvent) -> None:
        if not await self.offers.claim_reply(event.order_id, event.partner_id):
            return  # another process handles it: a second would audit and cascade it again
        self._spawn(self.offers.reply(event.order_id, event.partner_id, event.accept, via="rest"),
                    name=f"dispatch:reply:{event.order_id}")

    async def _partner_event(self, event: PartnerEvent) -> None:
        self.partners.forget(event.partner_id)
        if event.status != "approved":
            for callback in self.on_partner_standing:
                await callback(event.partner_id, event.status)
            await self.fleet.set_online(event.partner_id, False)

    async def _session_event(self, event: SessionEvent) -> None:
        for callback in self.on_session_revoked:
            await callback(event.user_id, event.session_id)

    async def _timer_loop(self) -> None:
        while True:
            try:
                await self.offers.expire_due()
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("offer timer poll failed: %s", type(exc).__name__)
            stop_if_cancelled()
            await asyncio.sleep(self.tuning.timer_poll_s)

    async def _sweep_loop(self) -> None:
        sweeps = 0
        while True:
            await asyncio.sleep(self.tuning.sweep_s)
            sweeps += 1
            try:
                await self.resync()
                await self.offers.sweep()
                if sweeps % self.tuning.trim_every_sweeps == 0:
                    await self.fleet.trim_changed()
                    await self.ingest.trim_tracks()
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("dispatch sweep failed: %s", type(exc).__name__)
            stop_if_cancelled()
