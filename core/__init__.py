"""Shared building blocks of PartyPilot: settings, errors, HTTP plumbing, stores and contracts.

`core` imports nothing else of ours; `api`, `dispatch` and the composition root build on it.
"""
