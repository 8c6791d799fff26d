"""Arrival windows: when the partner should arrive, and from that, when dispatch should start.

A customer may name the window (`arrive_after`, `arrive_before`: ISO-8601 with an offset, on the
event date in the service area's time zone). Without one, an order for today means "as soon as
possible" (a window from now of `asap_window_min`), and an order for a later day gets the default
slot (`default_arrival_window`, local time). Dispatch starts `dispatch_lead_min` before the window
opens, plus a setup buffer (`setup_buffer_bp` of the package's duration: bigger set-ups take longer
to load), and never before the order is placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.errors import ValidationFailed
from core.settings import Settings

MIN_WINDOW = timedelta(minutes=30)
MAX_WINDOW = timedelta(hours=12)


@dataclass(frozen=True)
class ArrivalWindow:
    after: datetime  # aware, UTC
    before: datetime  # aware, UTC
    asap: bool
    dispatch_at: datetime  # aware, UTC
    timezone: str


def _error(field: str, message: str, kind: str) -> ValidationFailed:
    return ValidationFailed("the request is invalid", details=[{"field": field, "message": message, "type": kind}])


def parse_slot(slot: str) -> tuple[time, time]:
    """"10:00-13:00" -> (10:00, 13:00)."""
    start, _, end = slot.partition("-")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def local_today(timezone: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(timezone)).date()


def arrival_window(event_date: date, timezone: str, after: datetime | None, before: datetime | None, *,
                   now: datetime, duration_min: int, settings: Settings) -> ArrivalWindow:
    """The order's window and dispatch time; raises a 422 naming the field when the window is unusable."""
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    if event_date < today:
        raise _error("event_date", "the event date has passed", "date_not_future")
    asap = False
    if (after is None) != (before is None):
        raise _error("arrive_after" if after is None else "arrive_before",
                     "send both ends of the arrival window, or neither", "window_incomplete")
    if after is not None and before is not None:
        local_after, local_before = after.astimezone(zone), before.astimezone(zone)
        if local_after.date() != event_date:
            raise _error("arrive_after", f"the window must start on the event date ({event_date}, {timezone})",
                         "window_not_on_event_date")
        if before <= after or before - after < MIN_WINDOW:
            raise _error("arrive_before", "the window must be at least 30 minutes long", "window_too_short")
        if before - after > MAX_WINDOW or local_before.date() > event_date + timedelta(days=1):
            raise _error("arrive_before", "the window may be at most 12 hours long", "window_too_long")
        if before <= now + MIN_WINDOW:
            raise _error("arrive_before", "the window has passed or closes too soon to be met", "window_past")
        start, end = after, before
    elif event_date == today:
        asap = True
        start, end = now, now + timedelta(minutes=settings.asap_window_min)
    else:
        slot_start, slot_end = parse_slot(settings.default_arrival_window)
        start = datetime.combine(event_date, slot_start, zone)
        end = datetime.combine(event_date, slot_end, zone)
    buffer = timedelta(minutes=settings.dispatch_lead_min + duration_min * settings.setup_buffer_bp / 10_000)
    dispatch_at = max(now, start - buffer)
    return ArrivalWindow(after=start.astimezone(ZoneInfo("UTC")), before=end.astimezone(ZoneInfo("UTC")), asap=asap,
                         dispatch_at=dispatch_at.astimezone(ZoneInfo("UTC")), timezone=timezone)


@dataclass(frozen=True)
class Slot:
    after: datetime  # aware, in the area's time zone
    before: datetime

    @property
    def label(self) -> str:
        return f"{self.after:%H:%M}-{self.before:%H:%M}"


def slots_for(event_date: date, timezone: str, *, now: datetime, settings: Settings) -> list[Slot]:
    """The arrival slots a customer can pick for `event_date` (`arrival_slots`, local time), the
    ones that can still be met: closing more than 30 minutes from now."""
    zone = ZoneInfo(timezone)
    out: list[Slot] = []
    for text in settings.arrival_slots.split(","):
        start, end = parse_slot(text)
        after = datetime.combine(event_date, start, zone)
        before = datetime.combine(event_date + timedelta(days=1) if end <= start else event_date, end, zone)
        if before > now + MIN_WINDOW:
            out.append(Slot(after, before))
    return out
