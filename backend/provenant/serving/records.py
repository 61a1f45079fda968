"""A model's on-chain record, and the error for artefacts that disagree with it.

Kept apart from `provenant.serving.models` (which loads weights and attribution indexes) so
that readers of the chain, such as settlement's claims API, do not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from provenant.chain.bindings import ModelView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts


class ModelIntegrityError(RuntimeError):
    """A model's stored artefacts disagree with its on-chain record."""


@dataclass(frozen=True)
class ModelRecord:
    """A model's on-chain record (ModelRegistry.getModel)."""

    model_id: int
    owner: str
    server: str
    parent_id: int
    price_per_call: int
    lineage_root: str
    config_hash: str
    adapter_hash: str
    name: str
    base_model: str
    adapter_cid: str
    manifest_cid: str

    @classmethod
    def fetch(cls, client: ChainClient, contracts: Contracts, model_id: int) -> "ModelRecord":
        m = decode(ModelView, client.call(contracts.models.functions.getModel(model_id)))
        return cls(
            model_id=model_id,
            owner=m.owner,
            server=m.server,
            parent_id=m.parent_id,
            price_per_call=m.price_per_call,
            lineage_root=m.lineage_root,
            config_hash=m.config_hash,
            adapter_hash=m.adapter_hash,
            name=m.name,
            base_model=m.base_model,
            adapter_cid=m.adapter_cid,
            manifest_cid=m.manifest_cid,
        )
