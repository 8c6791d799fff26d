"""The dispatch engine's parts wired together, and the background loops they need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
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
from dispatch.fleet import FleetIndex, Written
from dispatch.ingest import Ingest
from dispatch.live import Live
from dispatch.matching import Matcher
from dispatch.offers import TIMERS_AT_ONCE, Offers
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
    # Wake-ups (partners on duty or freed up) are gathered this long, then handled together: one
    # MongoDB read of the waiting orders for a whole burst (say, everyone's first ping after a
    # Redis rebuild) rather than one per partner.
    wake_batch_s: float = 0.1


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
        self.matcher = Matcher(self.fleet, self.partners, travel_times(key, settings.google_maps_api_base),
                               fair_eta_s=settings.dispatch_fair_eta_s)
        self.offers = Offers(settings, redis, db, self.fleet, self.matcher, self.audit, OrderFlow(db, redis), emitter)
        self.offers.on_index_lost = self.resync
        self.offers.on_partner_free = self.wake
        self.live = Live(db, self.fleet, emitter)
        self.ingest.listeners.append(self.live.on_ping)
        self.ingest.watchers.append(self._on_written)
        self.tasks: TaskOwner | None = None
        self._wake_ids: set[str] = set()
        self._wake_event = asyncio.Event()
        self._resyncing = False
        self._pruned_upto = 0
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
            await self.fleet.index_on_duty()
            await self.offers.flow.claim_active_jobs()
        except Exception as exc:  # Redis or Mongo down at start: the sweeper retries
            logger.warning("dispatch start-up sync failed: %s", type(exc).__name__)
        tasks.spawn(self.events.run(), name="dispatch:events")
        tasks.spawn(self.ingest.flush_loop(), name="dispatch:ingest-flush")
        tasks.spawn(self.ingest.load_loop(), name="dispatch:ingest-load")
        tasks.spawn(self.ingest.persist_loop(), name="dispatch:ingest-persist")
        tasks.spawn(self._timer_loop(), name="dispatch:offer-timers")
        tasks.spawn(self._sweep_loop(), name="dispatch:sweeper")
        tasks.spawn(self._wake_loop(), name="dispatch:wake")
        tasks.spawn(self.live.tick_loop(self.settings.fleet_tick_s), name="dispatch:fleet-tick")

    async def stop(self) -> None:
        """Persist what is buffered (the loops are cancelled by the task owner)."""
        await self.ingest.persist_now(limit=100_000)
        self.matcher.travel.close()

    async def resync(self) -> None:
        """Re-read the truth: fleet index and open offers after data loss, who is on which job."""
        if await self.fleet.rebuild_if_lost():
            await self.offers.restore_after_loss()
        self.live.load_jobs(await self.fleet.sync_jobs())
        for callback in self.on_resync:
            await callback()

    def _on_written(self, written: Written) -> None:
        """After each ingest write: a missing epoch means Redis lost its data, so rebuild now (not at
        the next sweep); partners who just became available may unblock waiting orders."""
        if not written.epoch and not self._resyncing:
            self._resyncing = True
            self._spawn(self._resync_now(), name="dispatch:resync")
        if written.available:
            self.wake(written.available)

    async def _resync_now(self) -> None:
        try:
            await self.resync()
        except Exception as exc:
            stop_if_cancelled()
            logger.warning("dispatch resync after data loss failed: %s", type(exc).__name__)
        finally:
            self._resyncing = False

    def wake(self, partner_ids: Iterable[str]) -> None:
        """Queue partners who came on duty or freed up; waiting orders near them are retried."""
        self._wake_ids.update(partner_ids)
        self._wake_event.set()

    async def _wake_loop(self) -> None:
        while True:
            await self._wake_event.wait()
            await asyncio.sleep(self.tuning.wake_batch_s)
            self._wake_event.clear()
            ids, self._wake_ids = self._wake_ids, set()
            try:
                await self.offers.wake(ids)
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("waking waiting orders failed: %s", type(exc).__name__)
            stop_if_cancelled()  # a cancel swallowed inside a store call must still end the loop

    def partner_disconnected(self, partner_id: str) -> None:
        """A partner's socket closed here: after the grace period, if it has no live connection
        anywhere, its held offer is released and the cascade moves on."""
        self._spawn(self._release_if_gone(partner_id), name=f"dispatch:gone:{partner_id}")

    async def _release_if_gone(self, partner_id: str) -> None:
        await asyncio.sleep(self.settings.offer_disconnect_grace_s)
        try:
            if not await self.fleet.reachable(partner_id):
                await self.offers.release_held_offer(partner_id, via="disconnect")
        except Exception as exc:  # the offer then times out as usual
            stop_if_cancelled()
            logger.warning("releasing a disconnected partner's offer failed: %s", type(exc).__name__)

    def _spawn(self, coro: Any, name: str) -> None:
        if self.tasks is None:
            coro.close()
            return
        try:
            self.tasks.spawn(coro, name=name)
        except RuntimeError:  # shutting down
            pass

    async def _order_event(self, event: OrderEvent) -> None:
        replaced = await self.live.on_order_event(event)
        if event.status == "assigned" and event.partner_id:
            # Here, in event order, not in the task spawned below: a reassignment handled with the
            # next event must find this mark to clear it, or the first partner stays busy.
            await self.fleet.set_job(event.partner_id, event.order_id)
            # Every process hears the event; one counts the job (fairness in ranking).
            if await self.offers.claim_once(f"counted:{event.order_id}:{event.version}"):
                await self.fleet.count_job(event.partner_id)
        for pid in replaced:
            await self.fleet.clear_job_if(pid, event.order_id)
        if replaced and await self.offers.claim_once(f"replaced:{event.order_id}:{event.version}"):
            self.wake(replaced)
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
            # Every process hears this; the first release wins and the others find nothing held.
            await self.offers.release_held_offer(event.partner_id, via=event.status)

    async def _session_event(self, event: SessionEvent) -> None:
        for callback in self.on_session_revoked:
            await callback(event.user_id, event.session_id)

    async def _timer_loop(self) -> None:
        """Claim due offer timers as fast as they can be handled, each in its own task, at most
        TIMERS_AT_ONCE at a time; polling goes on while they run."""
        running: set[asyncio.Task[Any]] = set()
        while True:
            try:
                room = TIMERS_AT_ONCE - len(running)
                for order_id in await self.offers.claim_due(room) if room > 0 else []:
                    assert self.tasks is not None  # started
                    task = self.tasks.spawn(self.offers.expire(order_id), name=f"dispatch:timeout:{order_id}")
                    running.add(task)
                    task.add_done_callback(running.discard)
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
                self._pruned_upto = await self.fleet.prune_stale(self._pruned_upto)
                await self.offers.sweep()
                if sweeps % self.tuning.trim_every_sweeps == 0:
                    await self.fleet.trim_changed()
                    await self.ingest.trim_tracks()
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("dispatch sweep failed: %s", type(exc).__name__)
            stop_if_cancelled()
