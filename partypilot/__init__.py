"""PartyPilot's composition root: settings from the environment, app assembly, CLI, local services."""

__version__ = "0.1.0"
