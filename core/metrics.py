"""Prometheus metrics: the process's counters and histograms, and the scrape that renders them.

One Prometheus target is one process: each process counts what it handled and serves it at its
own /api/metrics (scrape every port; there is no multiprocess mode). The counters below are
therefore process-wide objects in their own registry, as prometheus-client intends; several
apps built in one process (tests) add to the same counters, so tests compare before and after.

Values that describe one app's live state rather than events (its sockets by role, the outbox's
depth) are not kept in gauges at all: each app registers `Sampler`s (core.keys.METRIC_SAMPLERS)
that read them at scrape time from where they already live, so they cannot drift and cost
nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "CONTENT_TYPE", "FIXES", "HTTP_LATENCY", "HTTP_REQUESTS", "OFFERS", "OFFER_OUTCOMES", "REGISTRY", "TICK_SECONDS",
    "Metric", "Sampler", "gauge", "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # CPU, memory and open files: the limits docs/deploy.md talks about
PlatformCollector(registry=REGISTRY)

# Route is the matched route's template (`/api/orders/{id}`), never the raw path: bounded labels,
# and no ids or tokens (tracking links carry theirs in ?t=) reach the metrics.
HTTP_REQUESTS = Counter("partypilot_http_requests", "HTTP requests answered, by method, route and status",
                        ["method", "route", "status"], registry=REGISTRY)
# Buckets from a cached read (~1 ms) to a slow store (seconds); Socket.IO's long polls and
# websockets land in +Inf by design.
HTTP_LATENCY = Histogram("partypilot_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["method", "route", "status"], registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# outcome: accepted, or the refusal code of dispatch.acks (stale_ts, too_frequent, ...).
FIXES = Counter("partypilot_location_fixes", "Location fixes received, by outcome (accepted or the refusal code)",
                ["outcome"], registry=REGISTRY)
# offered counts partners offered to; expired counts holders whose offer timed out.
OFFERS = Counter("partypilot_offers", "Order offers, by outcome: offered, accepted, declined, expired, refused",
                 ["outcome"], registry=REGISTRY)
OFFER_OUTCOMES = ("offered", "accepted", "declined", "expired", "refused")
# The admin map's tick is due every second: its duration is the headroom left.
TICK_SECONDS = Histogram("partypilot_fleet_tick_duration_seconds", "Time one fleet-map tick took (read and emit)",
                         registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))

for _outcome in OFFER_OUTCOMES:  # every outcome present from the start, so rate() sees the first one
    OFFERS.labels(_outcome)
FIXES.labels("accepted")

# Read at scrape time: returns the metric families describing this app's live state.
Sampler = Callable[[], Awaitable[Iterable[Metric]]]


class _Sampled:
    """A collector over families already read (the registry's collect() is synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def render(samplers: Iterable[Sampler]) -> bytes:
    """The Prometheus text exposition: the process's counters, then each sampler's families."""
    families: list[Metric] = []
    for sample in samplers:
        families.extend(await sample())
    live = CollectorRegistry(auto_describe=False)
    live.register(_Sampled(families))
    return generate_latest(REGISTRY) + generate_latest(live)


def gauge(name: str, documentation: str, label: str, values: Mapping[str, float]) -> Metric:
    """One gauge family with a sample per label value, for a Sampler to return."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value_label, value in values.items():
        family.add_metric([value_label], value)
    return family
