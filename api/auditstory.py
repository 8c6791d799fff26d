"""The dispatch audit as an operator reads it: one plain sentence per search round, with names and
the service area's local times, the candidate table of each search, and why partners were left out.

Pure: the route (api.admin.order_audit) reads the audit, the partners' and admins' names and the
order's time zone, and hands them here. Only what dispatch recorded is told: a search records how
many partners it skipped for each reason, and names only the partners the order excluded (those who
declined or missed it), so only those are named among the skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from api.schemas import closed
from core.jsonutil import parse_iso

# Why a search passed a partner over (dispatch.fleet.SKIP_REASONS, plus standing), as a count
# reads in a sentence: "skipped 1 busy, 2 holding other offers".
SKIP_WORDS: dict[str, str] = {
    "excluded": "already passed on it",
    "offline": "off duty",
    "unknown": "with no position since a restart",
    "stale": "with stale GPS",
    "busy": "busy",
    "unreachable": "with the app closed",
    "offered": "holding other offers",
    "not_approved": "not approved",
}
REVOKE_WORDS = {"taken": "someone else took it", "expired": "it expired", "cancelled": "the order was cancelled"}
# The reply "via" values that are not the partner's own answer (dispatch.offers: off duty,
# suspension and disconnects release an offer on the partner's behalf).
RELEASE_WORDS = {"off_duty": "went off duty", "suspended": "was suspended", "disconnect": "lost connection"}

StepKind = Literal["search", "widen", "waiting", "alert", "manual", "note"]


class StoryCandidate(BaseModel):
    model_config = closed()
    partner_id: str
    name: str
    rank: int = Field(description="the engine's order (1 is offered first)")
    distance_m: int
    eta_s: int
    idle_s: int | None = Field(description="how long the partner had been free at the search; null when unknown")
    offered: bool = Field(description="this round offered the order to them")


class StoryExcluded(BaseModel):
    model_config = closed()
    partner_id: str
    name: str
    why: str = Field(description="e.g. declined, did not answer")


class StorySearch(BaseModel):
    model_config = closed()
    radius_m: int
    seen: int = Field(description="partners the search looked at: free ones plus skipped ones")
    skipped: dict[str, int] = Field(description="non-zero skip counts by reason")
    candidates: list[StoryCandidate] = Field(description="the free partners, ranked (at most the 10 best)")
    excluded: list[StoryExcluded] = Field(description="partners the order itself left out, and why")


class StoryStep(BaseModel):
    model_config = closed()
    at: str = Field(description="when it began (ISO-8601, UTC)")
    time: str = Field(description="the same moment as HH:MM:SS in the service area's time zone")
    kind: StepKind
    text: str = Field(description="one or more plain sentences")
    search: StorySearch | None = None


class AuditStory(BaseModel):
    model_config = closed({"timezone": "Asia/Kolkata", "steps": [{
        "at": "2026-12-03T13:12:55.000Z", "time": "18:42:55", "kind": "search",
        "text": "Searched 5 km: 8 partners; skipped 1 busy, 2 holding other offers. Offered to Ravi Kumar "
                "(430 m, ~2 min, idle 14 min) at 18:42:55; accepted after 11 s.",
        "search": {"radius_m": 5000, "seen": 8, "skipped": {"busy": 1, "offered": 2}, "excluded": [],
                   "candidates": [{"partner_id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "name": "Ravi Kumar",
                                   "rank": 1, "distance_m": 430, "eta_s": 95, "idle_s": 840, "offered": True}]}}]})
    timezone: str = Field(description="the IANA zone of `time` (the service area's)")
    steps: list[StoryStep] = Field(description="oldest first")


def distance_words(metres: int) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{round(metres / 10) * 10} m"


def radius_words(metres: int) -> str:
    km = metres / 1000
    return f"{km:g} km" if metres >= 1000 else f"{metres} m"


def duration_words(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s and m < 10 else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def eta_words(seconds: int) -> str:
    return f"~{max(1, round(seconds / 60))} min"


def _ms(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Round:
    step: StoryStep
    at: datetime
    fence: int | None = None
    offered: list[str] = field(default_factory=list)
    offer_at: datetime | None = None
    clauses: list[str] = field(default_factory=list)
    head: str = ""
    accepted: bool = False


class _Teller:
    def __init__(self, names: Mapping[str, str], admins: Mapping[str, str], zone: ZoneInfo) -> None:
        self.names = names
        self.admins = admins
        self.zone = zone
        self.steps: list[StoryStep] = []
        self.round: _Round | None = None
        # Why the order left a partner out, learnt from their replies as the story goes.
        self.why: dict[str, str] = {}

    def name(self, partner_id: Any) -> str:
        pid = str(partner_id or "")
        return self.names.get(pid) or (f"partner {pid[:6]}" if pid else "a partner")

    def clock(self, at: datetime) -> str:
        return at.astimezone(self.zone).strftime("%H:%M:%S")

    def step(self, at: datetime, kind: StepKind, text: str, search: StorySearch | None = None) -> StoryStep:
        made = StoryStep(at=_iso(at), time=self.clock(at), kind=kind, text=text, search=search)
        self.steps.append(made)
        return made

    def close_round(self) -> None:
        if self.round is not None:
            rnd = self.round
            text = rnd.head
            if rnd.clauses:
                text += "; " + "; ".join(rnd.clauses)
            rnd.step.text = text.rstrip(".") + "."
            self.round = None

    # --- events ---------------------------------------------------------------------------------

    def candidates(self, at: datetime, data: Mapping[str, Any]) -> None:
        self.close_round()
        skipped = {str(k): int(v) for k, v in (data.get("skipped") or {}).items() if _ms(v) > 0}
        found = int(data.get("found") or 0)
        seen = found + sum(skipped.values())
        rows = [c for c in data.get("candidates") or [] if isinstance(c, Mapping)]
        at_ms = int(at.timestamp() * 1000)
        table = [StoryCandidate(partner_id=str(c.get("partner_id")), name=self.name(c.get("partner_id")),
                                rank=int(c.get("rank") or i + 1), distance_m=int(c.get("distance_m") or 0),
                                eta_s=int(c.get("eta_s") or 0),
                                idle_s=max(0, (at_ms - _ms(c.get("idle_since"))) // 1000)
                                if _ms(c.get("idle_since")) > 0 else None, offered=False)
                 for i, c in enumerate(rows)]
        excluded = [StoryExcluded(partner_id=str(p), name=self.name(p), why=self.why.get(str(p), "passed on it"))
                    for p in data.get("excluded") or []]
        radius = int(data.get("radius_m") or 0)
        head = f"Searched {radius_words(radius)}: {seen} partner{'' if seen == 1 else 's'}"
        if data.get("pass"):
            head = f"Retry {int(data['pass'])}: " + head[0].lower() + head[1:]
        if skipped:
            head += "; skipped " + ", ".join(f"{n} {SKIP_WORDS.get(k, k.replace('_', ' '))}"
                                             for k, n in skipped.items())
        if excluded:
            head += " (" + ", ".join(f"{e.name} {e.why}" for e in excluded) + ")"
        head += "."
        if not found:
            head += " Nobody free"
        search = StorySearch(radius_m=radius, seen=seen, skipped=skipped, candidates=table, excluded=excluded)
        step = self.step(at, "search", head, search)
        self.round = _Round(step=step, at=at, head=head)
        if data.get("outcome") == "round_lost":
            self.round.clauses.append("the offer was not sent: the order changed meanwhile (a cancel or an "
                                      "assignment)")
            self.close_round()
        elif not found:
            self.close_round()

    def offer(self, at: datetime, data: Mapping[str, Any]) -> None:
        rnd = self.round
        if rnd is None:
            rnd = self.round = _Round(step=self.step(at, "search", ""), at=at)
        offers = {str(o.get("partner_id")): o for o in data.get("offers") or [] if isinstance(o, Mapping)}
        pids = [str(p) for p in data.get("partner_ids") or offers]
        at_ms = int(at.timestamp() * 1000)
        parts = []
        for pid in pids:
            o = offers.get(pid) or {}
            facts = []
            if "distance_m" in o:
                facts.append(distance_words(int(o["distance_m"])))
            if "eta_s" in o:
                facts.append(eta_words(int(o["eta_s"])))
            if _ms(o.get("idle_since")) > 0:
                facts.append(f"idle {duration_words((at_ms - _ms(o['idle_since'])) / 1000)}")
            parts.append(f"{self.name(pid)} ({', '.join(facts)})" if facts else self.name(pid))
        rnd.head = (rnd.head + " " if rnd.head else "") + f"Offered to {', '.join(parts)} at {self.clock(at)}"
        rnd.fence = int(data["fence"]) if data.get("fence") is not None else None
        rnd.offered = pids
        rnd.offer_at = at
        if rnd.step.search is not None:
            rnd.step.search.candidates = [c.model_copy(update={"offered": c.partner_id in pids})
                                          for c in rnd.step.search.candidates]

    def _current(self, fence: Any, partner_id: str | None = None) -> _Round | None:
        rnd = self.round
        if rnd is None or rnd.offer_at is None:
            return None
        if fence is not None and rnd.fence is not None and int(fence) != rnd.fence:
            return None
        if partner_id is not None and partner_id not in rnd.offered:
            return None
        return rnd

    def who(self, rnd: _Round, partner_id: str) -> str:
        # One partner offered: "accepted after 11 s" reads clearly without the name.
        return "" if len(rnd.offered) == 1 else f"{self.name(partner_id)} "

    def reply(self, at: datetime, data: Mapping[str, Any]) -> None:
        pid = str(data.get("partner_id") or "")
        accept = bool(data.get("accept"))
        via = str(data.get("via") or "")
        if not accept:
            self.why[pid] = f"{RELEASE_WORDS[via]} while offered" if via in RELEASE_WORDS else "declined"
        rnd = self._current(data.get("fence"), pid)
        if rnd is None or data.get("outcome") == "closed":
            verb = "accepted" if accept else "declined"
            self.step(at, "note", f"{self.name(pid)} {verb} after the offer had closed; nothing changed.")
            return
        after = duration_words((at - (rnd.offer_at or at)).total_seconds())
        if accept:
            rnd.accepted = True
            rnd.clauses.append(f"{self.who(rnd, pid)}accepted after {after}")
        elif via in RELEASE_WORDS:
            rnd.clauses.append(f"{self.name(pid)} {RELEASE_WORDS[via]} after {after}, which released the offer")
        else:
            rnd.clauses.append(f"{self.who(rnd, pid)}declined after {after}")

    def timeout(self, at: datetime, data: Mapping[str, Any]) -> None:
        holders = [str(p) for p in data.get("partner_ids") or []]
        for pid in holders:
            self.why.setdefault(pid, "did not answer")
        rnd = self._current(data.get("fence"))
        if rnd is None:
            if holders:
                self.step(at, "note", f"No answer from {', '.join(self.name(p) for p in holders)}.")
            return
        waited = duration_words((at - (rnd.offer_at or at)).total_seconds())
        if holders and len(rnd.offered) > 1:
            rnd.clauses.append(f"no answer from {', '.join(self.name(p) for p in holders)} within {waited}")
        else:
            rnd.clauses.append(f"no answer within {waited}")
        self.close_round()

    def assigned(self, at: datetime, data: Mapping[str, Any]) -> None:
        pid = str(data.get("partner_id") or "")
        rnd = self._current(data.get("fence"), pid)
        if rnd is None:
            self.step(at, "note", f"{self.name(pid)} has the order.")
            return
        if not rnd.accepted:
            rnd.clauses.append(f"{self.who(rnd, pid)}accepted after "
                               f"{duration_words((at - (rnd.offer_at or at)).total_seconds())}")
        elif len(rnd.offered) > 1:
            rnd.clauses.append(f"{self.name(pid)} has the order")
        self.close_round()

    def refused(self, at: datetime, data: Mapping[str, Any]) -> None:
        pid = str(data.get("partner_id") or "")
        code = str(data.get("code") or "")
        why = "they are on another job" if code == "partner_busy" else "the offer had moved on"
        rnd = self._current(data.get("fence"), pid)
        text = f"{self.name(pid)}'s accept was refused: {why}"
        if rnd is not None:
            rnd.accepted = False
            rnd.clauses.append(text)
        else:
            self.step(at, "note", text + ".")

    def revoked(self, at: datetime, data: Mapping[str, Any]) -> None:
        reason = str(data.get("reason") or "")
        # "taken" and "expired" repeat what the round already says (an accept, a timeout).
        if reason in ("taken", "expired", ""):
            return
        text = f"offer withdrawn from {self.name(data.get('partner_id'))}: {REVOKE_WORDS.get(reason, reason)}"
        rnd = self.round
        if rnd is not None:
            rnd.clauses.append(text)
        else:
            self.step(at, "note", text[0].upper() + text[1:] + ".")

    def widen(self, at: datetime, data: Mapping[str, Any]) -> None:
        self.close_round()
        self.step(at, "widen", f"Nobody free within {radius_words(int(data.get('from_m') or 0))}: widened the "
                               f"search to {radius_words(int(data.get('to_m') or 0))}.")

    def gave_up(self, at: datetime, data: Mapping[str, Any], alert: bool) -> None:
        self.close_round()
        if data.get("reason") == "window_at_risk":
            self.step(at, "alert", "The arrival window closes soon and nobody is on the way: admins alerted.")
            return
        radius = int(data.get("radius_m") or 0)
        text = f"Nobody took it within {radius_words(radius)}" if radius else "Nobody took it"
        tried = int(data.get("candidates_tried") or 0)
        if tried:
            text += f" ({tried} partner{'' if tried == 1 else 's'} passed on it)"
        text += "."
        retry = _ms(data.get("retry_ms"))
        if retry:
            text += f" Dispatch tries again at {self.clock(datetime.fromtimestamp(retry / 1000, at.tzinfo))}."
        if data.get("reason") and data.get("reason") != "no partner accepted":
            text += f" ({data['reason']})"
        if alert:
            text += " Admins alerted."
        self.step(at, "alert" if alert else "waiting", text)

    def manual(self, at: datetime, data: Mapping[str, Any]) -> None:
        self.close_round()
        pid = str(data.get("partner_id") or "")
        before = str(data.get("previous_partner_id") or "")
        by = self.admins.get(str(data.get("by") or ""), "an admin")
        text = (f"Reassigned by hand from {self.name(before)} to {self.name(pid)} by {by}" if before and before != pid
                else f"Assigned by hand to {self.name(pid)} by {by}")
        reason = str(data.get("reason") or "").strip()
        self.step(at, "manual", f"{text}{f': “{reason}”' if reason else ''}.")

    def released(self, at: datetime, data: Mapping[str, Any]) -> None:
        self.step(at, "note", f"Cleared a hold left on {self.name(data.get('partner_id'))} by an offer round "
                              "that never finished.")


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def zone_of(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def tell(entries: Sequence[Mapping[str, Any]], names: Mapping[str, str], admins: Mapping[str, str],
         timezone: str | None) -> dict[str, Any]:
    """The story of an order's dispatch audit (oldest first), as an AuditStory payload."""
    zone = zone_of(timezone)
    teller = _Teller(names, admins, zone)
    for entry in entries:
        try:
            at = parse_iso(str(entry.get("at")))
        except ValueError:
            continue
        data = entry.get("data") if isinstance(entry.get("data"), Mapping) else {}
        assert isinstance(data, Mapping)
        match entry.get("event"):
            case "candidates":
                teller.candidates(at, data)
            case "offer":
                teller.offer(at, data)
            case "reply":
                teller.reply(at, data)
            case "timeout":
                teller.timeout(at, data)
            case "assigned":
                teller.assigned(at, data)
            case "reply_refused":
                teller.refused(at, data)
            case "revoked":
                teller.revoked(at, data)
            case "widen":
                teller.widen(at, data)
            case "waiting":
                teller.gave_up(at, data, alert=False)
            case "alert":
                teller.gave_up(at, data, alert=True)
            case "manual_assign":
                teller.manual(at, data)
            case "lease_released":
                teller.released(at, data)
    teller.close_round()
    return {"timezone": zone.key, "steps": [s.model_dump() for s in teller.steps]}


def partner_ids_in(entries: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every partner an audit names, so the route can look their names up in one query."""
    out: set[str] = set()
    for entry in entries:
        data = entry.get("data")
        if not isinstance(data, Mapping):
            continue
        for key in ("partner_id", "previous_partner_id"):
            if data.get(key):
                out.add(str(data[key]))
        for key in ("partner_ids", "excluded"):
            out.update(str(p) for p in data.get(key) or [])
        for key in ("candidates", "offers"):
            out.update(str(c.get("partner_id")) for c in data.get(key) or [] if isinstance(c, Mapping))
    return out
