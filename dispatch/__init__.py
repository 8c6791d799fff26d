"""The real-time engine: Socket.IO, location ingest, fleet index, matching and live maps."""

from dispatch.server import setup

__all__ = ["setup"]
