"""Helpers for scripts/bench.py: the latency-injecting, request-counting JSON-RPC proxy."""
