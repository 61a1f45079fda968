"""Loading a registered model for serving or attribution, checked against its on-chain record.

Everything is fetched by CID from the content store (which verifies bytes against CIDs) and
then compared with the chain: the manifest's lineage root and the adapter's sha2-256 must be
the ones registered, so a server can never answer under a model id with other weights.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from provenant.attribution.aggregate import Attribution, ContributionMeta, aggregate
from provenant.attribution.projection import set_projection_cache
from provenant.attribution.index import AttributionIndex, attribute
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.factory.lineage import Manifest, sha256_0x
from provenant.serving.engine import Classifier, Prediction
from provenant.serving.lora import CAUSAL_TASK
from provenant.serving.records import ModelIntegrityError, ModelRecord
from provenant.store.blockstore import ContentStore

if TYPE_CHECKING:  # torch-heavy; imported when an LM is first attributed
    from provenant.attribution.lm import LmAttributor

LINEAGE_PRIOR = "lineage-prior"


@dataclass
class ServedModel:
    """A registered model checked against the chain. Classifiers are loaded here with their
    attribution index; causal-LM adapters are loaded just in time by the serving AdapterCache, and
    (for LMs whose manifest records indexes) their attribution model and indexes on first use."""

    record: ModelRecord
    manifest: Manifest
    classifier: Classifier | None
    index: AttributionIndex | None
    meta: dict[int, ContributionMeta]
    store: ContentStore | None = field(default=None, repr=False)  # where an LM's attribution artefacts live
    _lm: "LmAttributor | None" = field(default=None, repr=False)
    _lm_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_id(self) -> int:
        return self.record.model_id

    @property
    def task(self) -> str:
        return self.manifest.task

    def lineage_prior(self) -> Attribution:
        """Per-answer attribution for models without an influence index (causal LMs registered before
        LM indexing): every contribution of the lineage weighs the same. Receipts say so (method "lineage-prior")."""
        ids = np.array(sorted(self.meta), dtype=np.int64)
        return aggregate(np.ones(len(ids)), ids, self.meta)

    @property
    def has_lm_index(self) -> bool:
        """A causal LM whose manifest records a gradient index (Factory-trained since indexing)."""
        return self.task == CAUSAL_TASK and bool(self.manifest.index_cid)

    def lm_attributor(self) -> "LmAttributor":
        """The LM's attribution model and indexes, fetched, checked and loaded once, then cached."""
        if not self.has_lm_index:
            raise TypeError(f"model {self.model_id} has no causal-LM attribution index")
        with self._lm_lock:
            if self._lm is None:
                if self.store is None:
                    raise ModelIntegrityError(f"model {self.model_id}: no content store to load its indexes from")
                self._lm = load_lm_attributor(self.store, self.record, self.manifest, self.meta)
            return self._lm

    def attribute_completions(self, prompts: list[str], outputs: list[str]) -> list[tuple[Attribution, str]]:
        """Each causal-LM call's attribution and its method name: gradient influence combined with
        span credit ("influence+spans/1") when the manifest has indexes, else the lineage prior.
        Serving receipts and settlement scores both come from here, so they agree."""
        if self.task != CAUSAL_TASK:
            raise TypeError(f"model {self.model_id} is a {self.task} model, not a causal LM")
        if len(prompts) != len(outputs):
            raise ValueError("prompts and outputs differ in length")
        if not self.has_lm_index:
            prior = self.lineage_prior()
            return [(prior, LINEAGE_PRIOR) for _ in prompts]
        attributor = self.lm_attributor()
        return [(a, attributor.method) for a in attributor.attribute_many(list(prompts), list(outputs))]

    def attribute_completion(self, prompt: str, output: str) -> tuple[Attribution, str]:
        """One completion's attribution and method name (see `attribute_completions`)."""
        return self.attribute_completions([prompt], [output])[0]

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


# Indexes before format /4 project with a Gaussian map, regenerated on every call unless its blocks
# are cached; ~300 MB covers every adapter that shares one layout (base, rank, targets, seed, dim).
# Newer indexes use the sparse map, which is always kept (a few MB) and never touches this cache.
PROJECTION_CACHE_BYTES = 320 * 1024 * 1024


def fetch_adapter(store: ContentStore, record: ModelRecord) -> bytes:
    """The adapter's bytes by CID (the store checks them against the CID), checked against the
    sha2-256 registered on chain."""
    adapter = store.get(record.adapter_cid)
    if sha256_0x(adapter) != record.adapter_hash:
        raise ModelIntegrityError(f"model {record.model_id}: adapter bytes do not match the registered adapter hash")
    return adapter


def load_lm_attributor(store: ContentStore, record: ModelRecord, manifest: Manifest,
                       meta: dict[int, ContributionMeta]) -> "LmAttributor":
    """The trained LoRA module rebuilt from the registered adapter bytes, its gradient index (which
    must fit that adapter) and its span index (checked against the manifest's sha256)."""
    from provenant.attribution.index import AttributionIndexError
    from provenant.attribution.lm import LmAttributor, adapter_fingerprint, span_min_length
    from provenant.attribution.spans import SpanIndex, SpanIndexError
    from provenant.factory.train_lm import load_lm_module

    model, base = load_lm_module(fetch_adapter(store, record), manifest.adapter_config)
    try:
        index = AttributionIndex.from_bytes(store.get(manifest.index_cid))
    except AttributionIndexError as exc:
        raise ModelIntegrityError(f"model {record.model_id}: attribution index {manifest.index_cid}: {exc}") from exc
    if index.adapter_sha256 != adapter_fingerprint(model):
        raise ModelIntegrityError(f"model {record.model_id}: attribution index was built for another adapter")
    spans = None
    if manifest.span_index_cid:
        try:
            spans = SpanIndex.from_bytes(store.get(manifest.span_index_cid), manifest.span_index_sha256)
        except SpanIndexError as exc:
            raise ModelIntegrityError(f"model {record.model_id}: span index {manifest.span_index_cid}: {exc}") from exc
    return LmAttributor(model=model, base=base, index=index, spans=spans,
                        max_length=int(manifest.adapter_config["lora"]["max_length"]),
                        min_length=span_min_length(base), meta=meta)


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
        return ServedModel(record=record, manifest=manifest, classifier=None, index=None, meta=meta, store=store)
    adapter = fetch_adapter(store, record)
    classifier = Classifier.load(adapter, manifest.adapter_config)
    index = AttributionIndex.from_bytes(store.get(manifest.index_cid))
    index.snapshot_classifiers(classifier)  # the earlier epochs' adapters: loaded now, not on the first answer
    return ServedModel(record=record, manifest=manifest, classifier=classifier, index=index, meta=meta)
