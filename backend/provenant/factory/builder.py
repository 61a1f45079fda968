"""The Model Factory's pipeline: select -> freeze lineage -> train -> index -> store -> register.

Only contributions that are approved on chain when the selection is made are used; the
registry re-checks that at registration, so a contribution rejected in between makes the
registration fail rather than slip into a lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from eth_account.signers.local import LocalAccount

from provenant.attribution.index import IndexSettings, build_index
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.events import first_event
from provenant.datanets.service import ContributionRecord, DatanetService, Status
from provenant.datanets.validation import rows_hash
from provenant.factory.lineage import LineageEntry, Manifest, config_hash, lineage_root, sha256_0x
from provenant.factory.train import Checkpoints, Example, LoraSettings, train_classifier
from provenant.serving.engine import Classifier
from provenant.store.blockstore import ContentStore

BASE_MODEL_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class ModelRequest:
    name: str
    datanet_ids: tuple[int, ...]
    server: str  # the serving key allowed to charge vouchers and sign receipts
    price_per_call: int
    base_model: str = "minilm"
    settings: LoraSettings = field(default_factory=LoraSettings)
    index_settings: IndexSettings = field(default_factory=IndexSettings)


@dataclass(frozen=True)
class RegisteredModel:
    model_id: int
    manifest_cid: str
    manifest: Manifest


@dataclass(frozen=True)
class Selection:
    records: tuple[ContributionRecord, ...]
    rows: dict[int, tuple[dict[str, Any], ...]]  # contribution id -> rows used

    def examples(self) -> list[Example]:
        return [
            Example(text=row["text"], label=row["label"], contribution_id=record.contribution_id, row_index=i)
            for record in self.records
            for i, row in enumerate(self.rows[record.contribution_id])
        ]

    def lineage(self) -> tuple[LineageEntry, ...]:
        return tuple(
            LineageEntry(
                contribution_id=r.contribution_id,
                datanet_id=r.datanet_id,
                contributor=r.contributor,
                cid=r.cid,
                content_hash=r.content_hash,
                rows_hash=rows_hash(self.rows[r.contribution_id]),
                row_indices=None,
            )
            for r in self.records
        )


class ModelFactory:
    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore, datanets: DatanetService):
        self.client = client
        self.contracts = contracts
        self.store = store
        self.datanets = datanets

    def select(self, datanet_ids: tuple[int, ...], only: tuple[int, ...] | None = None) -> Selection:
        """Every approved contribution of the chosen Datanets (or exactly `only`, a selection frozen
        earlier, each still approved), rows fetched and verified."""
        records = tuple(
            sorted(
                (r for d in datanet_ids for r in self.datanets.contributions(d) if r.status == Status.APPROVED),
                key=lambda r: r.contribution_id,
            )
        )
        if only is not None:
            missing = sorted(set(only) - {r.contribution_id for r in records})
            if missing:
                raise ValueError(f"contributions {missing} of the frozen selection are no longer approved")
            records = tuple(r for r in records if r.contribution_id in set(only))
        if not records:
            raise ValueError(f"Datanets {list(datanet_ids)} have no approved contributions to train on")
        return Selection(records=records, rows={r.contribution_id: self.datanets.load_rows(r) for r in records})

    def build(
        self, builder: LocalAccount, request: ModelRequest, progress: Callable[[dict], None] | None = None
    ) -> RegisteredModel:
        manifest, manifest_cid = self.make(request, self.select(request.datanet_ids), progress=progress)
        model_id = self.register(builder, request, manifest, manifest_cid)
        return RegisteredModel(model_id=model_id, manifest_cid=manifest_cid, manifest=manifest)

    def make(self, request: ModelRequest, selection: Selection, progress: Callable[[dict], None] | None = None,
             checkpoints: Checkpoints | None = None) -> tuple[Manifest, str]:
        """Train on a selection, build the attribution index, store everything; (manifest, its CID)."""
        examples = selection.examples()
        entries = selection.lineage()
        root = lineage_root(entries)

        trained = train_classifier(examples, request.settings, base_model=request.base_model, progress=progress,
                                   checkpoints=checkpoints)
        classifier = Classifier.load(trained.adapter_bytes, trained.config)
        index = build_index(classifier, examples, request.index_settings)

        adapter_cid = self.store.put(trained.adapter_bytes)
        index_cid = self.store.put(index.to_bytes())
        training_config = {
            "base_model": BASE_MODEL_IDS.get(request.base_model, request.base_model),
            "task": "classification",
            "labels": list(trained.config["labels"]),
            "lora": request.settings.to_dict(),
            "index": asdict(request.index_settings),
            "datanet_ids": list(request.datanet_ids),
            "selection": "all approved contributions",
        }
        manifest = Manifest(
            model_name=request.name,
            base_model=training_config["base_model"],
            task="classification",
            labels=tuple(trained.config["labels"]),
            datanet_ids=tuple(request.datanet_ids),
            training_config=training_config,
            config_hash=config_hash(training_config),
            contributions=entries,
            lineage_root=root,
            adapter_cid=adapter_cid,
            adapter_hash=sha256_0x(trained.adapter_bytes),
            adapter_config=trained.config,
            index_cid=index_cid,
            metrics=trained.metrics,
        )
        return manifest, self.store.put(manifest.to_bytes())

    def registration(self, request: ModelRequest, manifest: Manifest, manifest_cid: str) -> dict[str, Any]:
        """The `registerModel` ModelSpec as JSON (0x-hex bytes), for a wallet to send."""
        names = ("name", "baseModel", "datanetIds", "contributionIds", "lineageRoot", "configHash", "adapterCid",
                 "adapterHash", "manifestCid", "parentId", "pricePerCall", "server")
        values = self._spec(request, manifest, manifest_cid)
        return {k: ("0x" + v.hex() if isinstance(v, bytes) else str(v) if k == "pricePerCall" else v)
                for k, v in zip(names, values)}

    def register(self, builder: LocalAccount, request: ModelRequest, manifest: Manifest, manifest_cid: str) -> int:
        spec = self._spec(request, manifest, manifest_cid)
        result = self.client.transact(builder, self.contracts.models.functions.registerModel(spec))
        return int(first_event(self.contracts.models, "ModelRegistered", result.logs)["modelId"])

    def _spec(self, request: ModelRequest, manifest: Manifest, manifest_cid: str) -> tuple[Any, ...]:
        return (
            request.name,
            manifest.base_model,
            list(manifest.datanet_ids),
            [e.contribution_id for e in manifest.contributions],
            bytes.fromhex(manifest.lineage_root[2:]),
            bytes.fromhex(manifest.config_hash[2:]),
            manifest.adapter_cid,
            bytes.fromhex(manifest.adapter_hash[2:]),
            manifest_cid,
            0,
            request.price_per_call,
            request.server,
        )
