"""Simulator: executes proposals on a managed Anvil fork exactly as they will be signed."""
