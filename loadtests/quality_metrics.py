"""The simulator's figures: pure functions over what a run observed (no I/O, no clocks).

A run is described by plain records (`OrderOutcome`, `JobRecord`, `PartnerRecord`); `summarize`
turns one strategy's records into `StrategyMetrics`, which the report prints side by side.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# "Clearly better" in the issue's goals, made checkable: at least this much lower than broadcast.
CLEARLY_BETTER = 0.20


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between ranks; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def gini(values: Sequence[float]) -> float:
    """Gini coefficient: 0 when everyone has the same, (n-1)/n when one has everything.

    Zero for an empty list or when nobody has anything (nothing is unequally shared).
    """
    n = len(values)
    total = sum(values)
    if n == 0 or total <= 0:
        return 0.0
    ordered = sorted(values)
    # sum_i sum_j |x_i - x_j| / (2 n^2 mean), from the sorted values in O(n log n)
    weighted = sum((2 * (i + 1) - n - 1) * x for i, x in enumerate(ordered))
    return weighted / (n * total)


def grouped_gini(groups: Mapping[str, Sequence[float]]) -> float | None:
    """Gini within each group of equally available partners, averaged weighted by group size."""
    sized = [(len(v), gini(v)) for v in groups.values() if len(v) > 1]
    people = sum(n for n, _ in sized)
    if people == 0:
        return None
    return sum(n * g for n, g in sized) / people


def share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the share of values at or below each (for a step plot)."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


@dataclass
class OrderOutcome:
    """One order as the run saw it, in simulated seconds since the day's start."""

    order_id: str
    placed_sim: float
    assigned_sim: float | None = None  # None: nobody had it by the end
    assigned_by: str | None = None  # the role in the order's history: dispatch, partner, admin
    partner_id: str | None = None
    offers_sent: int = 0  # partner-offers the phones received (a top-k round to 3 counts 3)
    travel_sim_s: float | None = None  # accepting partner's simulated trip to the pickup
    first_offer_sim: float | None = None  # when the first offer reached a phone
    alerted: bool = False  # a dispatch pass ended with nobody: the order waited for a partner

    @property
    def by_admin(self) -> bool:
        return self.assigned_by == "admin"

    @property
    def arrival_sim(self) -> float | None:
        if self.assigned_sim is None or self.travel_sim_s is None:
            return None
        return self.assigned_sim + self.travel_sim_s


@dataclass
class JobRecord:
    order_id: str
    partner_id: str
    accepted_sim: float
    idle_to_job_m: float  # partner's simulated position at acceptance -> pickup, straight line
    travel_sim_s: float


@dataclass
class PartnerRecord:
    partner_id: str
    shift: str  # partners of one shift are equally available: fairness compares within a shift
    jobs: int = 0
    disconnects: int = 0
    on_duty_sim_s: float = 0.0


def on_time(order: OrderOutcome, window_s: float) -> bool:
    """Arrived within [placed, placed + window]: as-soon-as-possible orders are never early."""
    arrival = order.arrival_sim
    return arrival is not None and arrival - order.placed_sim <= window_s


def on_time_share(orders: Sequence[OrderOutcome], window_s: float) -> float | None:
    """Share of all orders (unassigned ones count as late) whose partner arrived within the window."""
    return share(sum(1 for o in orders if on_time(o, window_s)), len(orders))


def jobs_by_shift(partners: Iterable[PartnerRecord]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for p in partners:
        groups[p.shift].append(float(p.jobs))
    return dict(groups)


@dataclass
class StrategyMetrics:
    """One strategy's figures; None where there was nothing to measure."""

    strategy: str
    available: bool = True
    note: str = ""
    orders: int = 0
    place_failures: int = 0
    assigned: int = 0
    assigned_by_admin: int = 0
    unassigned: int = 0
    assigned_share: float | None = None  # assigned without an admin / placed
    assign_p50_s: float | None = None  # simulated seconds
    assign_p95_s: float | None = None
    assign_max_s: float | None = None
    assign_p50_timeouts: float | None = None
    assign_p95_timeouts: float | None = None
    first_offer_p50_s: float | None = None  # placed -> first offer: mostly the server's own latency x scale
    first_offer_p95_s: float | None = None
    offers_sent: int = 0
    offers_per_assignment: float | None = None
    replies: dict[str, int] = field(default_factory=dict)  # outcome -> count, from the phones
    idle_to_job_p50_m: float | None = None
    idle_to_job_p95_m: float | None = None
    idle_to_job_mean_m: float | None = None
    gini_within_shift: float | None = None
    gini_all: float | None = None
    jobs_per_partner_mean: float | None = None
    partners_without_job: int = 0
    on_time_share: float | None = None
    on_time_share_assigned: float | None = None
    disconnects: int = 0
    alerted: int = 0  # orders that waited for a partner (a pass within the maximum radius found nobody)
    offers_to_offline: int = 0  # partner-offers sent while that partner had no socket (audit sample)
    audit_sample: int = 0  # orders whose audit trail was read back
    audit_offers_sent: int = 0  # partner-offers in those trails
    audit_offers_seen: int = 0  # ... and the offers the phones received for the same orders
    refused_accepts: dict[str, int] = field(default_factory=dict)  # reply_refused codes in the sample
    ping_rejects: dict[str, int] = field(default_factory=dict)  # refused fixes by code
    real_seconds: float = 0.0
    scale: float = 1.0  # simulated seconds per real second in this run
    assign_times_s: list[float] = field(default_factory=list)
    jobs_per_partner: list[int] = field(default_factory=list)
    chaos_at: str | None = None  # simulated clock time of the flush
    chaos_open: int | None = None  # orders without a partner when Redis was flushed
    chaos_reassigned: int | None = None  # ... of which dispatch assigned later, without an admin


def summarize(strategy: str, orders: Sequence[OrderOutcome], jobs: Sequence[JobRecord],
              partners: Sequence[PartnerRecord], *, window_s: float, offer_timeout_s: float,
              replies: Mapping[str, int] | None = None, place_failures: int = 0,
              real_seconds: float = 0.0) -> StrategyMetrics:
    """Figures of one strategy's run. `offer_timeout_s` is simulated, like every time here."""
    m = StrategyMetrics(strategy=strategy, orders=len(orders), place_failures=place_failures,
                        real_seconds=real_seconds, replies=dict(replies or {}))
    assigned = [o for o in orders if o.assigned_sim is not None]
    m.assigned_by_admin = sum(1 for o in assigned if o.by_admin)
    m.assigned = len(assigned) - m.assigned_by_admin
    m.unassigned = len(orders) - len(assigned)
    m.assigned_share = share(m.assigned, len(orders))
    times = [max(0.0, o.assigned_sim - o.placed_sim) for o in assigned
             if not o.by_admin and o.assigned_sim is not None]
    m.assign_times_s = sorted(times)
    m.assign_p50_s, m.assign_p95_s = percentile(times, 50), percentile(times, 95)
    m.assign_max_s = max(times) if times else None
    if offer_timeout_s > 0:
        m.assign_p50_timeouts = None if m.assign_p50_s is None else m.assign_p50_s / offer_timeout_s
        m.assign_p95_timeouts = None if m.assign_p95_s is None else m.assign_p95_s / offer_timeout_s
    first = [max(0.0, o.first_offer_sim - o.placed_sim) for o in orders if o.first_offer_sim is not None]
    m.first_offer_p50_s, m.first_offer_p95_s = percentile(first, 50), percentile(first, 95)
    m.offers_sent = sum(o.offers_sent for o in orders)
    m.offers_per_assignment = m.offers_sent / m.assigned if m.assigned else None
    distances = [j.idle_to_job_m for j in jobs]
    m.idle_to_job_p50_m, m.idle_to_job_p95_m = percentile(distances, 50), percentile(distances, 95)
    m.idle_to_job_mean_m = mean(distances)
    m.gini_within_shift = grouped_gini(jobs_by_shift(partners))
    m.gini_all = gini([float(p.jobs) for p in partners]) if partners else None
    m.jobs_per_partner = sorted(p.jobs for p in partners)
    m.jobs_per_partner_mean = mean([float(p.jobs) for p in partners])
    m.partners_without_job = sum(1 for p in partners if p.jobs == 0)
    m.on_time_share = on_time_share(orders, window_s)
    m.on_time_share_assigned = on_time_share(assigned, window_s)
    m.disconnects = sum(p.disconnects for p in partners)
    m.alerted = sum(1 for o in orders if o.alerted)
    return m


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: str
    met: bool | None  # None: not measured (a strategy missing, nothing assigned)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def goals(m: StrategyMetrics, broadcast: StrategyMetrics | None) -> list[Goal]:
    """The issue's goals for one strategy (broadcast is the baseline the others are measured against)."""
    out = [
        Goal("orders assigned without an admin", ">= 99.5 %", _fmt(None if m.assigned_share is None
                                                                  else 100 * m.assigned_share, ".2f") + " %",
             None if m.assigned_share is None else m.assigned_share >= 0.995),
        Goal("order -> assignment p50", "<= 1 offer timeout", _fmt(m.assign_p50_timeouts, ".2f"),
             None if m.assign_p50_timeouts is None else m.assign_p50_timeouts <= 1),
        Goal("order -> assignment p95", "<= 4 offer timeouts", _fmt(m.assign_p95_timeouts, ".2f"),
             None if m.assign_p95_timeouts is None else m.assign_p95_timeouts <= 4),
        Goal("fairness (Gini of jobs within a shift)", "<= 0.2", _fmt(m.gini_within_shift, ".3f"),
             None if m.gini_within_shift is None else m.gini_within_shift <= 0.2),
        Goal("on-time arrival", ">= 97 %", _fmt(None if m.on_time_share is None else 100 * m.on_time_share, ".2f")
             + " %", None if m.on_time_share is None else m.on_time_share >= 0.97),
    ]
    if m.strategy == "broadcast":
        return out
    if broadcast is None or not broadcast.available:
        for name in ("assignment time vs broadcast", "fairness vs broadcast", "offers per assignment vs broadcast"):
            out.append(Goal(name, "broadcast run needed", "n/a", None))
        return out

    def no_worse(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a <= b

    def clearly_lower(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a <= b * (1 - CLEARLY_BETTER)

    p50_ok, p95_ok = no_worse(m.assign_p50_s, broadcast.assign_p50_s), no_worse(m.assign_p95_s, broadcast.assign_p95_s)
    out.append(Goal("assignment time vs broadcast", "p50 and p95 <= broadcast's",
                    f"p50 {_fmt(m.assign_p50_s, '.0f')} vs {_fmt(broadcast.assign_p50_s, '.0f')} s, "
                    f"p95 {_fmt(m.assign_p95_s, '.0f')} vs {_fmt(broadcast.assign_p95_s, '.0f')} s",
                    None if p50_ok is None or p95_ok is None else p50_ok and p95_ok))
    out.append(Goal("fairness vs broadcast", f">= {CLEARLY_BETTER:.0%} lower Gini",
                    f"{_fmt(m.gini_within_shift, '.3f')} vs {_fmt(broadcast.gini_within_shift, '.3f')}",
                    clearly_lower(m.gini_within_shift, broadcast.gini_within_shift)))
    out.append(Goal("offers per assignment vs broadcast", f">= {CLEARLY_BETTER:.0%} fewer",
                    f"{_fmt(m.offers_per_assignment, '.2f')} vs {_fmt(broadcast.offers_per_assignment, '.2f')}",
                    clearly_lower(m.offers_per_assignment, broadcast.offers_per_assignment)))
    return out
