"""The agent and payment-path tables: ERC-8004 agents (AgentRegistry), x402 charges and vault
sweeps (X402Vaults), royalty routings (RoyaltyRouter).

Like every chain table they carry `block_number` and are rolled back by it. `agents` holds three
cache columns (owner, operator, agent URI) of the append-only histories below it, recomputed
after a rollback (caches.py), exactly like a contribution's status.

Money: an x402 charge, a sweep and a royalty routing each credit the model's fees through
`UsageEscrow.payFees` in the same call, so each is ALSO a `FeesPaid` row (fee_payments) with the
same (model_id, seq), paid by the X402Vaults or RoyaltyRouter contract. These tables say where a
FeesPaid came from; they are never added to fees_in a second time (queries.model_fees).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, Text

from provenant_indexer.columns import Uint256, _fact, _located, metadata

# -- ERC-8004 agents -------------------------------------------------------------------------
agents = Table(
    "agents",
    metadata,
    Column("agent_id", BigInteger, primary_key=True),
    Column("registered_by", String(42), nullable=False),  # the minter (Registered.owner)
    # caches: the latest agent_transfers.to_address, agent_operators.new_operator, agent_uris.uri
    Column("owner", String(42), nullable=False),
    Column("operator", String(42), nullable=False),  # the zero address when none
    Column("agent_uri", Text, nullable=False),
    Column("registration_cid", Text),  # the CID of an ipfs:// URI, else null
    *_located(),
    Column("tx_hash", String(66), nullable=False),
    Column("updated_block", BigInteger, nullable=False),
)
Index(None, agents.c.owner)
Index(None, agents.c.operator)
Index(None, agents.c.block_number)

agent_transfers = _fact(  # ERC-721 Transfer of the agent token (the mint included: from 0x0)
    "agent_transfers",
    Column("agent_id", BigInteger, nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, agent_transfers.c.agent_id)

agent_operators = _fact(  # OperatorSet: the operator history (zero: none)
    "agent_operators",
    Column("agent_id", BigInteger, nullable=False),
    Column("previous_operator", String(42), nullable=False),
    Column("new_operator", String(42), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, agent_operators.c.agent_id)

agent_uris = _fact(  # the registration URI: Registered's, then every URIUpdated
    "agent_uris",
    Column("agent_id", BigInteger, nullable=False),
    Column("uri", Text, nullable=False),
    Column("cid", Text),
    Column("updated_by", String(42), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, agent_uris.c.agent_id)

agent_metadata = _fact(  # MetadataSet: on-chain metadata entries (agentWallet and operator included)
    "agent_metadata",
    Column("agent_id", BigInteger, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),  # 0x-hex of the bytes
    Column("tx_hash", String(66), nullable=False),
)
Index(None, agent_metadata.c.agent_id)

# -- x402 -----------------------------------------------------------------------------------------
x402_vaults = _fact(  # VaultCreated: a model's CREATE2 vault was deployed
    "x402_vaults",
    Column("model_id", BigInteger, nullable=False),
    Column("vault", String(42), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, x402_vaults.c.model_id)

x402_charges = _fact(
    "x402_charges",
    Column("model_id", BigInteger, nullable=False),
    Column("payer", String(42), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("nonce", String(66), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, x402_charges.c.model_id, x402_charges.c.seq)
Index(None, x402_charges.c.payer)

vault_sweeps = _fact(
    "vault_sweeps",
    Column("model_id", BigInteger, nullable=False),
    Column("vault", String(42), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, vault_sweeps.c.model_id, vault_sweeps.c.seq)

# -- royalties --------------------------------------------------------------------------------
royalty_routings = _fact(
    "royalty_routings",
    Column("agent_id", BigInteger, nullable=False),
    Column("model_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("action_hash", String(66), nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, royalty_routings.c.agent_id)
Index(None, royalty_routings.c.model_id, royalty_routings.c.seq)
Index(None, royalty_routings.c.action_hash)

AGENT_CHAIN_TABLES: tuple[Table, ...] = (
    agents, agent_transfers, agent_operators, agent_uris, agent_metadata,
    x402_vaults, x402_charges, vault_sweeps, royalty_routings,
)
