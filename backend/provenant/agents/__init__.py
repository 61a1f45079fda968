"""Agents: ERC-8004 identities, signed action receipts with data ancestry, verification, PROV export."""
