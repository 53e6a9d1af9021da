"""Observation store (SQLite, WAL) and session-spend ledger."""

from agent.store.sqlite import SCHEMA_VERSION, Checkpoint, Store

__all__ = ["SCHEMA_VERSION", "Checkpoint", "Store"]
