"""Shared building blocks of PartyPilot: settings, errors, HTTP plumbing, stores and contracts.

`core` imports nothing else of ours; `api`, `dispatch` and the composition root build on it.
"""

from importlib import metadata as _metadata

try:
    # One version, from pyproject.toml: the health check and the OpenAPI document both report it.
    __version__ = _metadata.version("partypilot")
except _metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
