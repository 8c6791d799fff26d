"""PartyPilot's composition root: settings from the environment, app assembly, CLI, local services."""

from core import __version__

__all__ = ["__version__"]
