"""The contract between `api` and `dispatch`: Redis channels, their JSON messages, and the
location-ingest interface. Documented for humans in docs/events.md; checked by tests.

Pub/sub is at-most-once, so every message is a hint carrying a monotonic `version`; the truth
is always the document in MongoDB.
"""

from __future__ import annotations

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
PARTNER_STATE = "pp:partner:{partner_id}"  # HASH: lat, lng, ts, accuracy, speed, heading, online, order_id

# MongoDB collection written by the dispatch engine, read by admins through the API:
# {_id, order_id, at (ISO), event: candidates|offer|reply|timeout|revoked|widen|alert|assigned, data: {...}}
DISPATCH_AUDIT = "dispatch_audit"
