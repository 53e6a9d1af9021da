"""Sinks: where proposals go (structured log, append-only journal, readable rendering)."""
