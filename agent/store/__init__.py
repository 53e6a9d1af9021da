"""The SQLite store: one database file (``db.Database``), viewed as the observation store
(``sqlite.Store``: observations, backfill checkpoints) and the proposal ledger
(``ledger.ProposalLedger``: outbox, spends, live sends)."""

from agent.store.db import SCHEMA_VERSION, Database
from agent.store.ledger import LiveSend, ProposalLedger
from agent.store.sqlite import Checkpoint, Store

__all__ = ["SCHEMA_VERSION", "Checkpoint", "Database", "LiveSend", "ProposalLedger", "Store"]
