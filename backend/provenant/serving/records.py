"""A model's on-chain record, and the error for artefacts that disagree with it.

Kept apart from `provenant.serving.models` (which loads weights and attribution indexes) so
that readers of the chain, such as settlement's claims API, do not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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
        view = decode(ModelView, client.call(contracts.models.functions.getModel(model_id)))
        # every field but the id comes from the view, by name: one list of fields to keep in step
        return cls(model_id=model_id, **{f.name: getattr(view, f.name) for f in fields(cls) if f.name != "model_id"})
