"""The money tables: escrow movements, charges, fee payments and releases, epochs, claims.
Append-only facts keyed by the log that produced them (see schema.py)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Text

from provenant_indexer.columns import Uint256, _fact

escrow_movements = _fact(  # deposits into and withdrawals from a consumer's escrow for a model
    "escrow_movements",
    Column("model_id", BigInteger, nullable=False),
    Column("consumer", String(42), nullable=False),
    Column("kind", String(12), nullable=False),  # deposit | withdrawal
    Column("amount", Uint256, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, escrow_movements.c.model_id)
Index(None, escrow_movements.c.consumer)

charges = _fact(
    "charges",
    Column("model_id", BigInteger, nullable=False),
    Column("consumer", String(42), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("cumulative_amount", Uint256, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, charges.c.model_id, charges.c.seq)
Index(None, charges.c.consumer)

fee_payments = _fact(
    "fee_payments",
    Column("model_id", BigInteger, nullable=False),
    Column("payer", String(42), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, fee_payments.c.model_id, fee_payments.c.seq)

fee_releases = _fact(
    "fee_releases",
    Column("model_id", BigInteger, nullable=False),
    Column("from_seq", BigInteger, nullable=False),
    Column("to_seq", BigInteger, nullable=False),
    Column("amount", Uint256, nullable=False),
)
Index(None, fee_releases.c.model_id)

epochs = _fact(
    "epochs",
    Column("model_id", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("upto_seq", BigInteger, nullable=False),
    Column("payout_root", String(66), nullable=False),
    Column("claim_cap", Uint256, nullable=False),
    Column("results_cid", Text, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, epochs.c.model_id, epochs.c.epoch, unique=True)

epoch_splits = _fact(
    "epoch_splits",
    Column("model_id", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("fee_total", Uint256, nullable=False),
    Column("protocol_amount", Uint256, nullable=False),
    Column("owner_amount", Uint256, nullable=False),
    Column("curators_total", Uint256, nullable=False),
    Column("contributors_total", Uint256, nullable=False),
    Column("carried_dust", Uint256, nullable=False),
)
Index(None, epoch_splits.c.model_id, epoch_splits.c.epoch, unique=True)

claims = _fact(
    "claims",
    Column("model_id", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("account", String(42), nullable=False),
    Column("amount", Uint256, nullable=False),
    Column("tx_hash", String(66), nullable=False),
)
Index(None, claims.c.model_id, claims.c.epoch, claims.c.account, unique=True)
Index(None, claims.c.account)
