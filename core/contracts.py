"""The contract between `api` and `dispatch`: Redis channels, their JSON messages, and the
location-ingest interface. Documented for humans in docs/events.md; checked by tests.

Pub/sub is at-most-once, so every message is a hint carrying a monotonic `version`; the truth
is always the document in MongoDB.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

# Channel names (Redis pub/sub).
ORDER_EVENTS = "pp:events:orders"
PARTNER_EVENTS = "pp:events:partners"
SESSION_EVENTS = "pp:events:sessions"


class LatLng(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float
    lng: float


class OrderEvent(BaseModel):
    """Published on ORDER_EVENTS after every committed order state change."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["order_status"] = "order_status"
    order_id: str
    status: str
    prev_status: str | None
    version: int
    at: str
    by_role: str
    customer_id: str
    partner_id: str | None = None
    pickup: LatLng | None = None
    reason: str | None = None


PAYMENT_EVENTS = "pp:events:payments"


class PaymentEvent(BaseModel):
    """Published on PAYMENT_EVENTS after an order's money changed (a capture, a refund); the
    dispatch engine relays it to the order's room and the admins as `payment_status`."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["payment_status"] = "payment_status"
    order_id: str
    customer_id: str
    status: str  # the order's status after the change
    version: int  # the order's version: the same counter as order_status
    payment_status: Literal["unpaid", "deposit_paid", "paid", "partially_refunded", "refunded"]
    amount_due: int
    amount_paid: int
    amount_refunded: int
    currency: str
    at: str


class PartnerEvent(BaseModel):
    """Published on PARTNER_EVENTS when an admin changes a partner's standing."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["partner_status"] = "partner_status"
    partner_id: str
    status: Literal["pending", "approved", "rejected", "suspended"]
    at: str


class SessionEvent(BaseModel):
    """Published on SESSION_EVENTS when a session ends (logout, refresh-token reuse, account deleted)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["session_revoked"] = "session_revoked"
    user_id: str
    session_id: str | None = None  # None: every session of the user


class LocationPoint(BaseModel):
    """One GPS fix from a partner's phone, as received on the socket or REST."""

    model_config = ConfigDict(extra="forbid")
    lat: float
    lng: float
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    ts: int  # ms since epoch, the phone's clock


class IngestResult(BaseModel):
    accepted: int
    rejected: list[dict[str, Any]]


class LocationSink(Protocol):
    """What the REST fallback hands locations to; implemented by the dispatch engine."""

    async def ingest(self, partner_id: str, points: list[LocationPoint]) -> IngestResult: ...


# A partner's reply to an offer that arrived over REST (api publishes; dispatch moves the cascade on).
OFFER_EVENTS = "pp:events:offers"


class OfferReplyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["offer_reply"] = "offer_reply"
    order_id: str
    partner_id: str
    accept: bool


# Redis keys owned by the dispatch engine that the REST side may read (never write).
FLEET_GEO = "pp:fleet:geo"            # GEO set: partner_id -> last accepted position
FLEET_SEEN = "pp:fleet:seen"          # ZSET: partner_id -> last accepted ping, ms since epoch
FLEET_ONLINE = "pp:fleet:online"      # SET: partner ids that are on duty (availability online)
PARTNER_STATE = "pp:partner:{partner_id}"  # HASH: lat, lng, ts, accuracy, speed, heading, seen, online, order_id
# A partner whose last fix is older than this many ping intervals is stale (skipped by matching,
# grey on the map); the fix's age is now - min(ts, seen). dispatch.engine.STALE_INTERVALS agrees.
STALE_AFTER_INTERVALS = 3

# MongoDB collection written by the dispatch engine, read by admins through the API:
# {_id, order_id, at (ISO), event: candidates|offer|reply|reply_refused|timeout|revoked|widen|alert|waiting|
#  lease_released|assigned, data: {...}}
DISPATCH_AUDIT = "dispatch_audit"


# --- Added by the dispatch engine -------------------------------------------------------------

# A revoked session (logout, refresh reuse): written by api, read by dispatch at socket connect.
REVOKED_SESSION_KEY = "pp:session:revoked:{sid}"
# ZSET: partner_id -> ms of the partner's last change of any kind (ping, availability, job), which
# the admin fleet ticks read to build deltas.
FLEET_CHANGED = "pp:fleet:changed"
# ZSET: order_id -> ms when the order's current offer round expires. Any process claims due
# members atomically, so a dead process does not strand an offer.
OFFER_TIMERS = "pp:offers:timers"
# STRING "<order_id>:<fence>" with a TTL: the one pending offer a partner holds.
PARTNER_OFFER = "pp:partner:{partner_id}:offer"
# SET: partner ids currently holding the offer of an order (popped atomically when it closes).
OFFER_HOLDERS = "pp:offer:{order_id}:holders"
# SET: partners busy with an assigned order (mirrors PARTNER_STATE.order_id; reconciled with MongoDB).
FLEET_BUSY = "pp:fleet:busy"
# STRING: present while the fleet index matches MongoDB; missing after Redis lost its data.
FLEET_EPOCH = "pp:fleet:epoch"
# HASH per UTC day ("2026-12-03"): partner_id -> jobs assigned that day (counted once per
# assignment). Ranking puts the partner with the fewest first among those about as close, so a day's
# jobs spread evenly; it expires two days later.
FLEET_JOBS_DAY = "pp:fleet:jobs:{day}"
JOBS_DAY_TTL_S = 2 * 24 * 3600


def jobs_day_key(at_ms: int) -> str:
    """The FLEET_JOBS_DAY hash for the UTC day of `at_ms`."""
    return FLEET_JOBS_DAY.format(day=datetime.fromtimestamp(at_ms / 1000, UTC).date().isoformat())

# GEO: the index matching searches: only partners on duty with a fresh, known fix (going off duty,
# suspension and staleness remove them; their next ping re-adds them). FLEET_GEO keeps everyone
# with a position for the admin map.
FLEET_SEARCH = "pp:fleet:search"
# ZSET per partner: "<node>/<sid>" of each connected Socket.IO socket -> ms until which it counts as
# live (refreshed by the process that holds it, removed on disconnect; a dead process's lapse).
PARTNER_SOCKETS = "pp:partner:{partner_id}:sockets"
# STRING with a TTL: written by api when a partner polls over REST (open offers, location); a
# partner without a live socket is reachable while it exists.
PARTNER_POLLED = "pp:partner:{partner_id}:polled"
# The field of a `partners` document naming the partner's one active job ("" or missing: free);
# claimed with a conditional update before the order's own (core.orderflow.OrderFlow.assign).
PARTNER_JOB_FIELD = "current_order_id"
# MongoDB collections written by the dispatch engine.
PARTNER_POSITIONS = "partner_positions"            # _id partner id: last known position, online 0/1
PARTNER_TRACKS = "partner_tracks"                  # bounded, down-sampled position history

# Socket.IO messages (server -> client). Every order and fleet message carries a `version`.


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferPackage(_Message):
    """The package of an offered order: its name only."""

    name: str


class OfferMessage(_Message):
    """`offer` to room partner:{id}."""

    order_id: str
    pickup: LatLng
    distance_m: int
    eta_s: int
    payout: int
    currency: str
    expires_at: int  # ms since epoch
    fence: int
    version: int
    # What the partner decides on, as the REST offer view shows it (never the exact venue).
    # Optional: orders written before these were sent, or by tests, may lack them.
    package: OfferPackage | None = None
    event_date: str | None = None
    arrive_after: str | None = None   # the arrival slot, ISO UTC
    arrive_before: str | None = None
    timezone: str | None = None       # the venue's, to show the slot in local time
    asap: bool | None = None
    area: str | None = None           # the service area's name
    city: str | None = None
    guests: int | None = None


class OfferRevokedMessage(_Message):
    """`offer_revoked` to room partner:{id}."""

    order_id: str
    reason: Literal["taken", "expired", "cancelled"]
    version: int


class OrderStatusMessage(_Message):
    """`order_status` to rooms order:{id} and admins."""

    order_id: str
    status: str
    at: str
    version: int
    partner_id: str | None = None
    reason: str | None = None


class PartnerLocationMessage(_Message):
    """`partner_location` to room order:{id}, from assignment until completion."""

    order_id: str
    lat: float
    lng: float
    ts: int
    eta_s: int
    heading: float | None = None
    speed: float | None = None


class FleetPartner(_Message):
    id: str
    lat: float
    lng: float
    status: Literal["idle", "offered", "busy", "offline", "stale", "unknown"]
    last_seen: int  # ms since epoch of the last fix (its ts, capped by receipt); 0 when unknown


class FleetMessage(_Message):
    """`fleet` to one subscribed admin socket: a snapshot, then deltas on a tick."""

    type: Literal["snapshot", "delta"]
    partners: list[FleetPartner]
    removed: list[str]
    version: int


class DispatchAlertMessage(_Message):
    """`dispatch_alert` to room admins, once per order: nobody took it within the maximum radius; it
    waits for a partner (retried on a backoff and when one comes free nearby) or an admin."""

    order_id: str
    reason: str
    radius_m: int
    candidates_tried: int
    at: str


class AckError(_Message):
    code: str
    message: str
