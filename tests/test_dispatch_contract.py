"""The real-time contract is written down in one place (docs/events.md) and matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import core.contracts as contracts
from dispatch import acks

DOC = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text(encoding="utf-8")
CLIENT_EVENTS = ("auth", "location", "location_batch", "availability", "offer_reply", "track", "fleet_subscribe",
                 "fleet_unsubscribe")
SERVER_EVENTS = ("offer", "offer_revoked", "order_status", "partner_location", "fleet", "dispatch_alert",
                 "payment_status", "auth_expired", "session_ended")
MODELS = ("OrderEvent", "PaymentEvent", "PartnerEvent", "SessionEvent", "OfferReplyEvent", "LocationPoint",
          "OfferMessage",
          "OfferRevokedMessage", "OrderStatusMessage", "PartnerLocationMessage", "FleetMessage",
          "DispatchAlertMessage")


def test_every_channel_and_key_is_documented_with_its_value() -> None:
    names = [n for n in dir(contracts) if re.fullmatch(r"[A-Z][A-Z_]+", n) and isinstance(getattr(contracts, n), str)]
    assert len(names) >= 15
    for name in names:
        assert f"`{name}`" in DOC, f"{name} is not in docs/events.md"
        value = getattr(contracts, name)
        if value.startswith("pp:"):
            assert f"`{value}`" in DOC, f"{name} = {value} is documented with another value"


def test_every_event_model_and_error_code_is_documented() -> None:
    for event in CLIENT_EVENTS + SERVER_EVENTS:
        assert f"| `{event}` |" in DOC, f"event {event} is not in the tables"
    for model in MODELS:
        assert hasattr(contracts, model)
        assert model in DOC, f"model {model} is not named in docs/events.md"
    codes = {v for k, v in vars(acks).items() if k.isupper() and isinstance(v, str)}
    for code in codes:
        assert f"`{code}`" in DOC, f"error code {code} is not documented"


def test_socket_messages_are_strict_about_their_fields() -> None:
    message = {"order_id": "o1", "status": "assigned", "at": "2026-01-01T00:00:00.000Z", "version": 3}
    assert contracts.OrderStatusMessage.model_validate(message).version == 3
    with pytest.raises(ValidationError):
        contracts.OrderStatusMessage.model_validate({**message, "surprise": 1})
