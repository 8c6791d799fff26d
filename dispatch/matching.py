"""Candidate search and ranking: nearby, approved, on duty, fresh, idle partners, best ETA first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from core.jsonutil import now_ms
from dispatch.fleet import FleetIndex
from dispatch.partners import PartnerDirectory
from gateway_clients.maps import TravelTimes

# GEOSEARCH returns the nearest N; beyond that many, the best ETA is almost surely among them.
SEARCH_COUNT = 200
# ETAs within the same 60-second band count as equal; fairness (longest idle) decides among them.
ETA_BAND_S = 60


@dataclass(frozen=True, slots=True)
class Candidate:
    partner_id: str
    distance_m: int
    eta_s: int
    idle_since: int
    rank: int = 0

    def audit(self) -> dict[str, int | str]:
        return {"partner_id": self.partner_id, "distance_m": self.distance_m, "eta_s": self.eta_s,
                "idle_since": self.idle_since, "rank": self.rank}


@dataclass(frozen=True, slots=True)
class Search:
    """What a search found: the ranked candidates and how many were skipped, by reason."""

    candidates: list[Candidate]
    skipped: dict[str, int]


class Matcher:
    """Finds and ranks candidates for a pickup point."""

    def __init__(self, fleet: FleetIndex, partners: PartnerDirectory, travel: TravelTimes) -> None:
        self.fleet = fleet
        self.partners = partners
        self.travel = travel

    async def search(self, lat: float, lng: float, radius_m: int, exclude: Collection[str]) -> Search:
        near = [(pid, dist) for pid, dist in await self.fleet.near(lat, lng, radius_m, SEARCH_COUNT)
                if pid not in exclude]
        skipped = {"excluded": 0, "not_approved": 0, "offline": 0, "stale": 0, "busy": 0, "offered": 0}
        if not near:
            return Search([], skipped)
        ids = [pid for pid, _ in near]
        states = await self.fleet.states(ids)
        held = await self.fleet.offers_held(ids)
        now = now_ms()
        # Redis filters first (cheap); partner standing (MongoDB, cached) only for the survivors.
        live: list[tuple[str, float, int, tuple[float, float]]] = []
        for (pid, dist), state, has_offer in zip(near, states, held, strict=True):
            if not state.online:
                skipped["offline"] += 1
            elif not state.fresh(now, self.fleet.stale_ms) or state.lat is None or state.lng is None:
                skipped["stale"] += 1
            elif state.order_id:
                skipped["busy"] += 1
            elif has_offer:
                skipped["offered"] += 1
            else:
                live.append((pid, dist, state.idle_since, (state.lat, state.lng)))
        standings = await self.partners.standings([pid for pid, *_ in live])
        keep: list[tuple[str, float, int, str | None, tuple[float, float]]] = []
        for pid, dist, idle_since, position in live:
            standing = standings.get(pid)
            if standing is None or standing.status != "approved":
                skipped["not_approved"] += 1
            else:
                keep.append((pid, dist, idle_since, standing.vehicle_type, position))
        if not keep:
            return Search([], skipped)
        etas = await self.travel.etas([k[4] for k in keep], (lat, lng), [k[3] for k in keep])
        ranked = sorted(
            (Candidate(pid, round(dist), eta, idle) for (pid, dist, idle, _, _), eta in zip(keep, etas, strict=True)),
            key=lambda c: (c.eta_s // ETA_BAND_S, c.idle_since, c.eta_s, c.partner_id),
        )
        return Search([Candidate(c.partner_id, c.distance_m, c.eta_s, c.idle_since, rank=i + 1)
                       for i, c in enumerate(ranked)], skipped)
