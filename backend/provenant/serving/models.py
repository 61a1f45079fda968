"""Loading a registered model for serving or attribution, checked against its on-chain record.

Everything is fetched by CID from the content store (which verifies bytes against CIDs) and
then compared with the chain: the manifest's lineage root and the adapter's sha2-256 must be
the ones registered, so a server can never answer under a model id with other weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from provenant.attribution.aggregate import Attribution, ContributionMeta, aggregate
from provenant.attribution.gradients import set_projection_cache
from provenant.attribution.index import AttributionIndex, attribute
from provenant.chain.bindings import ModelView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.factory.lineage import Manifest, sha256_0x
from provenant.serving.engine import Classifier, Prediction
from provenant.serving.lora import CAUSAL_TASK
from provenant.store.blockstore import ContentStore


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


@dataclass
class ServedModel:
    """A registered model checked against the chain. Classifiers are loaded here with their
    attribution index; causal-LM adapters are loaded just in time by the serving AdapterCache."""

    record: ModelRecord
    manifest: Manifest
    classifier: Classifier | None
    index: AttributionIndex | None
    meta: dict[int, ContributionMeta]

    @property
    def model_id(self) -> int:
        return self.record.model_id

    @property
    def task(self) -> str:
        return self.manifest.task

    def lineage_prior(self) -> Attribution:
        """Per-answer attribution for models without an influence index (causal LMs today): every
        contribution of the lineage weighs the same. Receipts say so (method "lineage-prior")."""
        ids = np.array(sorted(self.meta), dtype=np.int64)
        return aggregate(np.ones(len(ids)), ids, self.meta)

    def answer(self, text: str) -> tuple[Prediction, Attribution]:
        """Predict, then attribute this answer to the training data."""
        if self.classifier is None:
            raise TypeError(f"model {self.model_id} is a {self.task} model, not a classifier")
        prediction = self.classifier.predict([text])[0]
        return prediction, self.attribute(text, prediction.label)

    def attribute(self, text: str, label: str) -> Attribution:
        assert self.classifier is not None and self.index is not None
        scores = attribute(self.classifier, self.index, text, label)
        return aggregate(scores, self.index.contribution_ids, self.meta)


# Attributing every call regenerates the random projection unless its blocks are cached;
# ~300 MB covers every adapter that shares one layout (base, rank, targets, seed, dim).
PROJECTION_CACHE_BYTES = 320 * 1024 * 1024


def fetch_adapter(store: ContentStore, record: ModelRecord) -> bytes:
    """The adapter's bytes by CID (the store checks them against the CID), checked against the
    sha2-256 registered on chain."""
    adapter = store.get(record.adapter_cid)
    if sha256_0x(adapter) != record.adapter_hash:
        raise ModelIntegrityError(f"model {record.model_id}: adapter bytes do not match the registered adapter hash")
    return adapter


def load_served_model(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int) -> ServedModel:
    """Fetch, check against the chain, and load a model with its attribution index."""
    set_projection_cache(PROJECTION_CACHE_BYTES)
    record = ModelRecord.fetch(client, contracts, model_id)
    manifest = Manifest.from_bytes(store.get(record.manifest_cid))
    if manifest.lineage_root != record.lineage_root:
        raise ModelIntegrityError(f"model {model_id}: manifest lineage root differs from the registered one")
    if manifest.config_hash != record.config_hash:
        raise ModelIntegrityError(f"model {model_id}: manifest config hash differs from the registered one")
    meta = {
        e.contribution_id: ContributionMeta(contributor=e.contributor, datanet_id=e.datanet_id)
        for e in manifest.contributions
    }
    if manifest.task == CAUSAL_TASK:
        if manifest.adapter_cid != record.adapter_cid:
            raise ModelIntegrityError(f"model {model_id}: manifest adapter CID differs from the registered one")
        return ServedModel(record=record, manifest=manifest, classifier=None, index=None, meta=meta)
    adapter = fetch_adapter(store, record)
    classifier = Classifier.load(adapter, manifest.adapter_config)
    index = AttributionIndex.from_bytes(store.get(manifest.index_cid))
    return ServedModel(record=record, manifest=manifest, classifier=classifier, index=index, meta=meta)
