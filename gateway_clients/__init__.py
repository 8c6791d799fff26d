"""gateway_clients package."""
