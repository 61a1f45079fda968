"""The index's tables: one SQLAlchemy metadata for SQLite and PostgreSQL alike.

Every row that comes from the chain carries the block it came from (`block_number`), so a
reorganisation is undone by deleting every row above the common ancestor. The few columns that
change after their row was written (a contribution's status, a model's terms, a Datanet's
version, curators, reputation counters) are caches of an append-only history table and carry
`updated_block`; after a rollback they are recomputed from what is left of their history
(see caches.py), so "tables == a fresh index of the chain" holds by construction.

Column types (Uint256 for token amounts) live in columns.py, the money tables in schema_money.py.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from provenant_indexer.columns import Uint256, _fact, _located, metadata  # noqa: F401 - Uint256: migrations
from provenant_indexer.schema_money import (  # noqa: F401 - part of this module's tables
    charges, claims, epoch_splits, epochs, escrow_movements, fee_payments, fee_releases,
)
from provenant_indexer.schema_agents import (  # noqa: F401 - part of this module's tables
    AGENT_CHAIN_TABLES, agent_metadata, agent_operators, agent_transfers, agent_uris, agents, royalty_routings,
    vault_sweeps, x402_charges, x402_vaults,
)

# -- bookkeeping ---------------------------------------------------------------------------
checkpoint = Table(
    "checkpoint",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1: one indexed chain per database
    Column("chain_id", BigInteger, nullable=False),
    Column("start_block", BigInteger, nullable=False),
    Column("head_block", BigInteger, nullable=False),  # every block <= head is fully indexed
    Column("head_hash", String(66)),
    # The indexed contracts' addresses (sorted, lowercase, comma-separated): a database indexed for
    # other contracts (say, before the agent contracts were indexed) misses their past events, so
    # the indexer refuses it. Null in databases made before revision 0002.
    Column("contracts", Text),
)

block_hashes = Table(
    "block_hashes",
    metadata,
    Column("block_number", BigInteger, primary_key=True),
    Column("block_hash", String(66), nullable=False),
    Column("parent_hash", String(66), nullable=False),
)

# What happened, not what is: excluded from "equals a fresh index" comparisons.
reorgs = Table(
    "reorgs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("detected_at", BigInteger, nullable=False),  # unix seconds
    Column("old_head", BigInteger, nullable=False),
    Column("old_head_hash", String(66)),
    Column("ancestor", BigInteger, nullable=False),
    Column("depth", Integer, nullable=False),
)

# -- the raw mirror --------------------------------------------------------------------------
events = _fact(
    "events",
    Column("block_hash", String(66), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("tx_index", Integer, nullable=False),
    Column("address", String(42), nullable=False),
    Column("contract", String(40), nullable=False),
    Column("event", String(64), nullable=False),
    Column("args", JSON, nullable=False),
)
Index(None, events.c.contract, events.c.event)
Index(None, events.c.tx_hash)

# -- Datanets ----------------------------------------------------------------------------------
datanets = Table(
    "datanets",
    metadata,
    Column("datanet_id", BigInteger, primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("metadata_cid", Text, nullable=False),
    Column("license", Text, nullable=False),
    Column("treasury", String(42), nullable=False),
    Column("stake", Uint256, nullable=False),
    Column("allowlisted", Boolean, nullable=False),
    Column("slash_on_reject", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),  # cache of datanet_versions
    *_located(),
    Column("tx_hash", String(66), nullable=False),
    Column("updated_block", BigInteger, nullable=False),
)
Index(None, datanets.c.owner)

datanet_versions = _fact(
    "datanet_versions",
    Column("datanet_id", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)
Index(None, datanet_versions.c.datanet_id)

curator_changes = _fact(
    "curator_changes",
    Column("datanet_id", BigInteger, nullable=False),
    Column("account", String(42), nullable=False),
    Column("enabled", Boolean, nullable=False),
)
Index(None, curator_changes.c.datanet_id, curator_changes.c.account)

curators = Table(  # cache: the latest curator_changes row per (Datanet, account)
    "curators",
    metadata,
    Column("datanet_id", BigInteger, nullable=False),
    Column("account", String(42), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("updated_block", BigInteger, nullable=False),
    PrimaryKeyConstraint("datanet_id", "account"),
)
Index(None, curators.c.account)

allowlist_changes = _fact(
    "allowlist_changes",
    Column("datanet_id", BigInteger, nullable=False),
    Column("account", String(42), nullable=False),
    Column("allowed", Boolean, nullable=False),
)
Index(None, allowlist_changes.c.datanet_id, allowlist_changes.c.account)

allowlist = Table(  # cache: the latest allowlist_changes row per (Datanet, account)
    "allowlist",
    metadata,
    Column("datanet_id", BigInteger, nullable=False),
    Column("account", String(42), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("updated_block", BigInteger, nullable=False),
    PrimaryKeyConstraint("datanet_id", "account"),
)

# -- contributions -----------------------------------------------------------------------------
contributions = Table(
    "contributions",
    metadata,
    Column("contribution_id", BigInteger, primary_key=True),
    Column("datanet_id", BigInteger, nullable=False),
    Column("contributor", String(42), nullable=False),
    Column("content_hash", String(66), nullable=False),
    Column("cid", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("stake", Uint256, nullable=False),
    # cache of the latest contribution_status row:
    Column("status", String(16), nullable=False),
    Column("status_actor", String(42)),
    Column("reject_reason", Integer),
    Column("slashed", Boolean),
    *_located(),
    Column("tx_hash", String(66), nullable=False),
    Column("updated_block", BigInteger, nullable=False),
)
Index(None, contributions.c.datanet_id, contributions.c.status)
Index(None, contributions.c.contributor)

contribution_status = _fact(
    "contribution_status",
    Column("contribution_id", BigInteger, nullable=False),
    Column("datanet_id", BigInteger, nullable=False),
    Column("contributor", String(42), nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | rejected | withdrawn
    Column("actor", String(42)),
    Column("reason", Integer),
    Column("slashed", Boolean),
)
Index(None, contribution_status.c.contribution_id)
Index(None, contribution_status.c.contributor)

reputation = Table(  # cache: counts of contribution_status rows per contributor
    "reputation",
    metadata,
    Column("account", String(42), primary_key=True),
    Column("submitted", Integer, nullable=False),
    Column("approved", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("withdrawn", Integer, nullable=False),
    Column("updated_block", BigInteger, nullable=False),
)

# -- models ----------------------------------------------------------------------------------
models = Table(
    "models",
    metadata,
    Column("model_id", BigInteger, primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("parent_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("lineage_root", String(66), nullable=False),
    Column("adapter_hash", String(66), nullable=False),
    Column("base_model", Text),
    Column("config_hash", String(66)),
    Column("adapter_cid", Text),
    Column("manifest_cid", Text),
    # cache of the latest model_terms row:
    Column("price_per_call", Uint256),
    Column("server", String(42)),
    *_located(),
    Column("tx_hash", String(66), nullable=False),
    Column("updated_block", BigInteger, nullable=False),
)
Index(None, models.c.owner)
Index(None, models.c.name)

model_terms = _fact(
    "model_terms",
    Column("model_id", BigInteger, nullable=False),
    Column("price_per_call", Uint256, nullable=False),
    Column("server", String(42), nullable=False),
)
Index(None, model_terms.c.model_id)

model_datanets = Table(
    "model_datanets",
    metadata,
    Column("model_id", BigInteger, nullable=False),
    Column("datanet_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    PrimaryKeyConstraint("model_id", "position"),
)
Index(None, model_datanets.c.datanet_id)
Index(None, model_datanets.c.block_number)

model_contributions = Table(
    "model_contributions",
    metadata,
    Column("model_id", BigInteger, nullable=False),
    Column("contribution_id", BigInteger, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    PrimaryKeyConstraint("model_id", "contribution_id"),
)
Index(None, model_contributions.c.contribution_id)
Index(None, model_contributions.c.block_number)

# Tables whose rows all come from logs: rolled back by block number. (model_datanets and
# model_contributions have no log index but a block number; the caches are handled apart.)
CHAIN_TABLES: tuple[Table, ...] = (
    events, datanets, datanet_versions, curator_changes, allowlist_changes, contributions,
    contribution_status, models, model_terms, model_datanets, model_contributions,
    escrow_movements, charges, fee_payments, fee_releases, epochs, epoch_splits, claims,
    *AGENT_CHAIN_TABLES,
)
CACHE_TABLES: tuple[Table, ...] = (curators, allowlist, reputation)
# History, not state: differs between an index that lived through reorgs and a fresh one.
HISTORY_TABLES: tuple[Table, ...] = (reorgs,)

# Rollbacks delete by block number: every chain table needs it first in an index.
for _table in (datanets, contributions, models):
    Index(None, _table.c.block_number)
