"""Travel times from candidate positions to a pickup: Google's distance matrix, or the local speed model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from geo.eta import eta_between

logger = logging.getLogger(__name__)

Point = tuple[float, float]  # (lat, lng)
# The distance matrix accepts at most 25 origins per request.
MAX_ORIGINS = 25


class TravelTimes(Protocol):
    async def etas(self, origins: Sequence[Point], destination: Point,
                   vehicle_types: Sequence[str | None]) -> list[int]:
        """Seconds from each origin to `destination`, in order."""
        ...

    def close(self) -> None:
        """Release connections (at shutdown)."""
        ...


class LocalTravelTimes:
    """Haversine distance, a detour factor and a speed per vehicle type: works offline."""

    async def etas(self, origins: Sequence[Point], destination: Point,
                   vehicle_types: Sequence[str | None]) -> list[int]:
        return [eta_between(o[0], o[1], destination[0], destination[1], v)
                for o, v in zip(origins, vehicle_types, strict=True)]

    def close(self) -> None:
        """Nothing to release."""


class GoogleTravelTimes:
    """Google's distance matrix through the googlemaps SDK; the local model fills any gap."""

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 2.0) -> None:
        import googlemaps

        kwargs: dict[str, Any] = {"key": api_key, "timeout": timeout_s, "retry_timeout": timeout_s}
        if base_url:
            kwargs["base_url"] = base_url.rstrip("/")
        self.client = googlemaps.Client(**kwargs)
        self.local = LocalTravelTimes()

    async def etas(self, origins: Sequence[Point], destination: Point,
                   vehicle_types: Sequence[str | None]) -> list[int]:
        fallback = await self.local.etas(origins, destination, vehicle_types)
        if not origins:
            return fallback
        head = list(origins[:MAX_ORIGINS])
        try:
            # The SDK is synchronous (requests): keep it off the event loop.
            matrix = await asyncio.to_thread(self.client.distance_matrix, head, [destination], mode="driving")
        except Exception as exc:
            logger.warning("distance matrix failed, using the speed model: %s", type(exc).__name__)
            return fallback
        out = list(fallback)
        for i, row in enumerate(matrix.get("rows", [])[: len(head)]):
            element = (row.get("elements") or [{}])[0]
            if element.get("status") == "OK" and "duration" in element:
                out[i] = int(element["duration"]["value"])
        return out

    def close(self) -> None:
        """Close the SDK's HTTP session (its keep-alive connections)."""
        self.client.session.close()


def travel_times(google_api_key: str | None, base_url: str | None = None) -> TravelTimes:
    """The configured implementation: Google when a key is set, the local model otherwise."""
    if google_api_key:
        return GoogleTravelTimes(google_api_key, base_url)
    return LocalTravelTimes()
