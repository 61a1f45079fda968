"""Register causal-LM LoRA models on chain (for the serving tests, benchmarks and the load test).

Builds the same artefacts a trained model has: the adapter stored by CID, a manifest with the
lineage over approved contributions (the demo's sample files), registration with the adapter's hash.
The adapters themselves are seeded random LoRA weights (A and B non-zero), since the Model Factory
trains classifiers only; serving treats them exactly like trained ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.datanets.service import DatanetService, Status
from provenant.datanets.validation import rows_hash
from provenant.factory.base_models import TINY_LLAMA, load_causal_base_model
from provenant.factory.builder import ModelFactory, ModelRequest
from provenant.factory.lineage import LineageEntry, Manifest, config_hash, lineage_root, sha256_0x
from provenant.serving.lora import CAUSAL_TASK, adapter_config, random_adapter
from provenant.store.blockstore import ContentStore


@dataclass(frozen=True)
class LmModel:
    model_id: int
    name: str
    adapter_bytes: bytes
    config: dict


def lineage_datanet(client: ChainClient, contracts: Contracts, store: ContentStore, curator: LocalAccount,
                    contributor: LocalAccount) -> tuple[int, tuple[LineageEntry, ...]]:
    """A Datanet with one approved contribution (a demo sample file); its lineage entries."""
    from provenant.demo.thread import samples_dir

    spec = json.loads((samples_dir() / "datanets.json").read_text(encoding="utf-8"))["datanets"][0]
    datanets = DatanetService(client, contracts, store)
    metadata = {k: v for k, v in spec.items() if k not in ("contributors", "curator_rejects", "used_by_demo_model")}
    datanet_id = datanets.create(curator, metadata)
    record = datanets.contribute(contributor, datanet_id, samples_dir() / "alice_1.jsonl")
    datanets.approve(curator, datanet_id, [record.contribution_id])
    record = datanets.contribution(record.contribution_id)
    assert record.status == Status.APPROVED
    entry = LineageEntry(contribution_id=record.contribution_id, datanet_id=datanet_id,
                         contributor=record.contributor, cid=record.cid, content_hash=record.content_hash,
                         rows_hash=rows_hash(datanets.load_rows(record)), row_indices=None)
    return datanet_id, (entry,)


def register_lm_models(client: ChainClient, contracts: Contracts, store: ContentStore, builder: LocalAccount,
                       curator: LocalAccount, contributor: LocalAccount, server: str, count: int, price: int,
                       prefix: str = "lm", rank: int = 8, base_model: str = TINY_LLAMA,
                       first_seed: int = 0) -> list[LmModel]:
    base = load_causal_base_model(base_model)
    datanet_id, entries = lineage_datanet(client, contracts, store, curator, contributor)
    factory = ModelFactory(client, contracts, store, DatanetService(client, contracts, store))
    models = []
    for i in range(count):
        config = adapter_config(base_model, rank=rank, alpha=2 * rank)
        adapter = random_adapter(base.model, config, seed=first_seed + i)
        training = {"base_model": base_model, "task": CAUSAL_TASK, "lora": config["lora"], "seed": first_seed + i,
                    "datanet_ids": [datanet_id]}
        manifest = Manifest(model_name=f"{prefix}-{i}", base_model=base_model, task=CAUSAL_TASK, labels=(),
                            datanet_ids=(datanet_id,), training_config=training, config_hash=config_hash(training),
                            contributions=entries, lineage_root=lineage_root(entries),
                            adapter_cid=store.put(adapter), adapter_hash=sha256_0x(adapter), adapter_config=config,
                            index_cid="", metrics={})
        request = ModelRequest(name=manifest.model_name, datanet_ids=(datanet_id,), server=server,
                               price_per_call=price, base_model=base_model)
        model_id = factory.register(builder, request, manifest, store.put(manifest.to_bytes()))
        models.append(LmModel(model_id=model_id, name=manifest.model_name, adapter_bytes=adapter, config=config))
    return models
