"""Candidate search and ranking: nearby, approved, on duty, fresh, idle, reachable partners, best ETA first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from dispatch.fleet import SKIP_REASONS, FleetIndex, Lease
from dispatch.partners import PartnerDirectory
from gateway_clients.maps import TravelTimes
from geo.ranking import Candidate, rank

__all__ = ["Candidate", "Matcher", "Search", "rank"]

# The first search reads the nearest N; beyond that many, the best ETA is almost surely among them.
SEARCH_COUNT = 200
# When fewer than the needed candidates survive the filters and the search hit its COUNT, the
# next search reads this many times more (the nearest ones are not filtered twice). 200, 800,
# 3,200, 12,800: four searches cover a crowded city centre; the last bound keeps one search
# (a few ms of Redis time per thousand members) from holding Redis for long.
SEARCH_GROWTH = 4
SEARCH_COUNT_MAX = 12_800


@dataclass(frozen=True, slots=True)
class Search:
    """What a search found: the ranked candidates, how many were skipped (by reason), the other
    offers skipped partners hold, and whether the index was found missing (Redis lost its data)."""

    candidates: list[Candidate]
    skipped: dict[str, int]
    leases: list[Lease] = field(default_factory=list)
    index_lost: bool = False


class Matcher:
    """Finds and ranks candidates for a pickup point."""

    def __init__(self, fleet: FleetIndex, partners: PartnerDirectory, travel: TravelTimes, *,
                 fair_eta_s: int = 0) -> None:
        self.fleet = fleet
        self.partners = partners
        self.travel = travel
        self.fair_eta_s = fair_eta_s

    async def search(self, lat: float, lng: float, radius_m: int, exclude: Collection[str], need: int = 1) -> Search:
        """Rank at least `need` candidates when that many exist within the radius.

        Redis filters first (one script per search: on duty, known, fresh, idle, reachable, not
        holding another offer); partner standing (MongoDB, cached) only for the survivors. When
        too few survive and the search read its whole COUNT, a larger search reads further out,
        so a crowded area whose nearest partners are all busy never reads as empty.
        """
        skipped = dict.fromkeys((*SKIP_REASONS, "not_approved"), 0)
        leases: list[Lease] = []
        keep: list[tuple[str, float, int, str | None, tuple[float, float]]] = []
        count, offset = SEARCH_COUNT, 0
        excluded = sorted(exclude)
        while True:
            found = await self.fleet.nearby(lat, lng, radius_m, count, offset, excluded)
            if not found.epoch:
                return Search([], skipped, index_lost=True)
            for reason, n in found.skipped.items():
                skipped[reason] += n
            leases.extend(found.leases)
            standings = await self.partners.standings([s[0] for s in found.survivors])
            for pid, dist, plat, plng, idle_since in found.survivors:
                standing = standings.get(pid)
                if standing is None or standing.status != "approved":
                    skipped["not_approved"] += 1
                else:
                    keep.append((pid, dist, idle_since, standing.vehicle_type, (plat, plng)))
            if len(keep) >= need or not found.full or count >= SEARCH_COUNT_MAX:
                break
            offset, count = count, min(count * SEARCH_GROWTH, SEARCH_COUNT_MAX)
        if not keep:
            return Search([], skipped, leases)
        etas = await self.travel.etas([k[4] for k in keep], (lat, lng), [k[3] for k in keep])
        jobs = await self.fleet.jobs_today([k[0] for k in keep])
        ranked = rank([Candidate(pid, round(dist), eta, idle, done)
                       for (pid, dist, idle, _, _), eta, done in zip(keep, etas, jobs, strict=True)], self.fair_eta_s)
        return Search(ranked, skipped, leases)
