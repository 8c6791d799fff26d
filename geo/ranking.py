"""How dispatch orders the free partners near a pickup: best ETA first, then fairness (fewest jobs
today, then longest idle).

Pure: the dispatch engine ranks its search results with it, and the admin console ranks the
partners it offers for a manual assignment the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

# Beyond the fair window, ETAs within the same 60-second band count as equal, and the longest
# idle goes first among them.
ETA_BAND_S = 60


@dataclass(frozen=True, slots=True)
class Candidate:
    partner_id: str
    distance_m: int
    eta_s: int
    idle_since: int
    jobs_today: int = 0  # jobs assigned since 00:00 UTC
    rank: int = 0

    def audit(self) -> dict[str, int | str]:
        return {"partner_id": self.partner_id, "distance_m": self.distance_m, "eta_s": self.eta_s,
                "idle_since": self.idle_since, "jobs_today": self.jobs_today, "rank": self.rank}


def rank(candidates: list[Candidate], fair_eta_s: int) -> list[Candidate]:
    """Order candidates for offering: those within `fair_eta_s` of the best ETA first, the one with
    the fewest jobs today first among them and then the one idle longest (so the day's jobs spread
    over the partners nearby instead of going to whoever stands closest, or answers fastest, every
    time); then the rest by 60-second ETA band, the same order within a band.

    Idle time alone evens out who goes next, not how many jobs each got: a partner who took four
    short jobs is idle as long after the fourth as one who took one long job is after theirs.
    """
    if not candidates:
        return []
    best = min(c.eta_s for c in candidates)
    close = sorted((c for c in candidates if c.eta_s <= best + fair_eta_s),
                   key=lambda c: (c.jobs_today, c.idle_since, c.eta_s, c.partner_id))
    rest = sorted((c for c in candidates if c.eta_s > best + fair_eta_s),
                  key=lambda c: (c.eta_s // ETA_BAND_S, c.jobs_today, c.idle_since, c.eta_s, c.partner_id))
    return [Candidate(c.partner_id, c.distance_m, c.eta_s, c.idle_since, c.jobs_today, rank=i + 1)
            for i, c in enumerate(close + rest)]
