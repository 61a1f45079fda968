"""Drives the deployed contracts with realistic, seeded transactions (tests and benchmarks only)."""

from provenant_indexer.workload.sender import Sender, TxFailed
from provenant_indexer.workload.world import State, World

__all__ = ["Sender", "State", "TxFailed", "World"]
