"""geo package."""
