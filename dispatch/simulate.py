"""Simulated partners driven through the real Socket.IO API (filled in by the dispatch engine)."""

from __future__ import annotations

from core.settings import Settings


async def run_simulation(settings: Settings, *, base_url: str, partners: int, accept_probability: float,
                         reply_delay_s: float, duration_s: float) -> int:
    raise NotImplementedError
