"""The Model Factory's pipeline: select -> freeze the selection -> train -> index -> store -> register.

Only contributions that are approved on chain when the selection is made are used; the
registry re-checks that at registration, so a contribution rejected in between makes the
registration fail rather than slip into a lineage. The selection (which rows of which
contribution train, which are held out) is planned by `provenant.factory.selection`, stored by
CID before training starts (`freeze`), and a resumed job trains on exactly that document.

The task comes from the chosen Datanets' rules: "classification" Datanets train a LoRA classifier
(with an attribution index); "text" and "prompt_completion" Datanets, which may be mixed, train a
LoRA adapter on a causal LM in the serving format (`provenant.factory.train_lm`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from eth_account.signers.local import LocalAccount

from provenant.attribution.index import IndexSettings, build_index
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.events import first_event
from provenant.datanets.service import ContributionRecord, DatanetService, Status, canonical_json
from provenant.datanets.validation import rows_hash
from provenant.factory.evaluation import per_datanet_metrics
from provenant.factory.lineage import LineageEntry, Manifest, config_hash, lineage_root, sha256_0x
from provenant.factory.selection import (Candidate, ContributionPlan, SelectionError, SelectionFilters,
                                         plan_selection, row_key, row_texts, summarize)
from provenant.factory.replicas import ReplicaFinished
from provenant.factory.train import Checkpoints, Example, LoraSettings, fit_classifier
from provenant.serving.lora import CAUSAL_TASK
from provenant.store.blockstore import ContentStore

BASE_MODEL_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}
CLASSIFICATION = "classification"
SELECTION_FORMAT = "provenant.selection/1"
# A Datanet's row format -> the model task it trains.
TASK_OF_ROWS = {"classification": CLASSIFICATION, "text": CAUSAL_TASK, "prompt_completion": CAUSAL_TASK}


@dataclass(frozen=True)
class ModelRequest:
    name: str
    datanet_ids: tuple[int, ...]
    server: str  # the serving key allowed to charge vouchers and sign receipts
    price_per_call: int
    base_model: str = "minilm"
    settings: LoraSettings = field(default_factory=LoraSettings)
    index_settings: IndexSettings = field(default_factory=IndexSettings)
    filters: SelectionFilters = field(default_factory=SelectionFilters)
    parent_id: int = 0  # the model this is a new version of (0: none); must be the builder's own
    device: str | None = None  # auto (CUDA when present) | cpu | cuda[:N]; where it ran is in the metrics


class ParentError(ValueError):
    """A parent model that does not exist, or that the builder does not own."""


@dataclass(frozen=True)
class RegisteredModel:
    model_id: int
    manifest_cid: str
    manifest: Manifest


@dataclass(frozen=True)
class Selection:
    records: tuple[ContributionRecord, ...]
    rows: dict[int, tuple[dict[str, Any], ...]]  # contribution id -> every row of its file
    plans: dict[int, ContributionPlan] = field(default_factory=dict)  # empty: every row trains, none held out
    task: str = CLASSIFICATION
    filters: SelectionFilters = field(default_factory=SelectionFilters)
    seed: int = 0

    def _train_indices(self, record: ContributionRecord) -> tuple[int, ...]:
        plan = self.plans.get(record.contribution_id)
        return tuple(range(len(self.rows[record.contribution_id]))) if plan is None else plan.train

    def _held_indices(self, record: ContributionRecord) -> tuple[int, ...]:
        plan = self.plans.get(record.contribution_id)
        return () if plan is None else plan.held_out

    def _repeated_indices(self, record: ContributionRecord) -> tuple[int, ...]:
        plan = self.plans.get(record.contribution_id)
        return () if plan is None else plan.repeats

    def _rows(self, held_out: bool) -> list[tuple[ContributionRecord, int, dict[str, Any]]]:
        out = []
        for record in self.records:
            indices = self._held_indices(record) if held_out else self._train_indices(record)
            out += [(record, i, self.rows[record.contribution_id][i]) for i in indices]
        return out

    def examples(self, held_out: bool = False) -> list[Example]:
        """Classification rows that train (or, with `held_out`, that evaluate)."""
        return [Example(text=row["text"], label=row["label"], contribution_id=r.contribution_id, row_index=i,
                        datanet_id=r.datanet_id) for r, i, row in self._rows(held_out)]

    def lm_examples(self, held_out: bool = False) -> list[Any]:
        """Causal-LM rows (text, or prompt + completion) that train (or evaluate)."""
        from provenant.factory.train_lm import LmExample

        return [LmExample.from_row(row, r.contribution_id, i, r.datanet_id) for r, i, row in self._rows(held_out)]

    def lineage(self) -> tuple[LineageEntry, ...]:
        """One leaf per contribution with training rows: the hash of exactly those rows, in order."""
        entries = []
        for r in self.records:
            indices = self._train_indices(r)
            if not indices:
                continue  # only held out: it trained nothing, so it is no part of the lineage
            rows = self.rows[r.contribution_id]
            every = indices == tuple(range(len(rows)))
            entries.append(LineageEntry(contribution_id=r.contribution_id, datanet_id=r.datanet_id,
                                        contributor=r.contributor, cid=r.cid, content_hash=r.content_hash,
                                        rows_hash=rows_hash([rows[i] for i in indices]),
                                        row_indices=None if every else indices))
        return tuple(entries)

    def held_out(self) -> dict[str, list[int]]:
        """Contribution id (string) -> its held-out row indices, for those that have any."""
        return {str(r.contribution_id): list(self._held_indices(r)) for r in self.records if self._held_indices(r)}

    def summary(self) -> dict[str, dict[str, int]]:
        plans = [self.plans.get(r.contribution_id) or ContributionPlan(
            r.contribution_id, r.datanet_id, self._train_indices(r), (), len(self.rows[r.contribution_id]))
            for r in self.records]
        return summarize(plans)

    def document(self) -> dict[str, Any]:
        """The frozen selection: stored by CID before training, recorded in the manifest."""
        return {"format": SELECTION_FORMAT, "task": self.task, "seed": self.seed, "filters": self.filters.to_dict(),
                "contributions": [{"contribution_id": r.contribution_id, "datanet_id": r.datanet_id,
                                   "contributor": r.contributor, "cid": r.cid, "content_hash": r.content_hash,
                                   "rows": len(self.rows[r.contribution_id]),
                                   "train": list(self._train_indices(r)), "held_out": list(self._held_indices(r)),
                                   "repeats": list(self._repeated_indices(r))}
                                  for r in self.records]}


class ModelFactory:
    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore, datanets: DatanetService):
        self.client = client
        self.contracts = contracts
        self.store = store
        self.datanets = datanets

    def check_parent(self, owner: str, parent_id: int) -> None:
        """Refuse, before any training, a parent the registry would refuse at registration: the
        registry lets only a model's owner register versions of it."""
        if parent_id == 0:
            return
        if parent_id < 0 or not self.client.call(self.contracts.models.functions.exists(parent_id)):
            raise ParentError(f"parent model {parent_id} does not exist")
        parent_owner = str(self.client.call(self.contracts.models.functions.ownerOf(parent_id)))
        if parent_owner.lower() != owner.lower():
            raise ParentError(f"parent model {parent_id} belongs to {parent_owner}, not {owner}: only a model's "
                              "owner may register new versions of it")

    def preflight(self, datanet_ids: tuple[int, ...], filters: SelectionFilters, seed: int) -> None:
        """Raise the SelectionError that selecting would raise, from on-chain data only (row counts,
        submission blocks; no contribution is fetched): for refusing a job before it is queued.
        Datanets that do not exist, or hold no approved contribution, are left to `select`."""
        count = self.datanets.count()
        known = tuple(d for d in datanet_ids if 0 < d <= count)
        unknown = sorted((set(filters.max_rows) | set(filters.weights)) - set(datanet_ids))
        if unknown:
            raise SelectionError(f"row caps or weights name Datanets {unknown}, which are not being trained on")
        if len(known) < len(datanet_ids):
            return
        self.task_of(known)
        records = [r for r in self.datanets.contributions() if r.datanet_id in known and r.status == Status.APPROVED]
        if not records or filters.is_default:
            return
        blocks = self._submission_blocks(tuple(records), need_time=filters.from_time is not None
                                         or filters.to_time is not None)
        plan_selection([Candidate(r.contribution_id, r.datanet_id, r.contributor, r.row_count,
                                  *blocks[r.contribution_id]) for r in records], filters, seed)

    def task_of(self, datanet_ids: tuple[int, ...]) -> str:
        """The model task the Datanets' row formats train; mixing classification with text refuses."""
        formats = {d: self.datanets.get(d).rules.task for d in datanet_ids}
        tasks = {TASK_OF_ROWS[f] for f in formats.values()}
        if len(tasks) > 1:
            raise SelectionError("cannot train one model on classification and causal-LM Datanets together: "
                                 + ", ".join(f"Datanet {d} holds {f} rows" for d, f in sorted(formats.items())))
        return tasks.pop() if tasks else CLASSIFICATION

    def select(self, datanet_ids: tuple[int, ...], only: tuple[int, ...] | None = None,
               filters: SelectionFilters | None = None, seed: int = 0) -> Selection:
        """The approved contributions of the chosen Datanets (or exactly `only`, a selection frozen
        earlier, each still approved), rows fetched and verified, filtered and split by `filters`."""
        filters = filters or SelectionFilters()
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
        task = self.task_of(tuple(datanet_ids))
        rows = {r.contribution_id: self.datanets.load_rows(r) for r in records}
        keys = {cid: tuple(row_key(row) for row in file_rows) for cid, file_rows in rows.items()}
        texts = {cid: row_texts(file_rows) if filters.near_repeats else () for cid, file_rows in rows.items()}
        dated = any(v is not None for v in (filters.from_block, filters.to_block, filters.from_time, filters.to_time))
        # Blocks matter only to the date filters (the plan never records them).
        blocks = (self._submission_blocks(records, need_time=filters.from_time is not None or filters.to_time is not None)
                  if dated else {r.contribution_id: (0, 0) for r in records})
        candidates = [Candidate(r.contribution_id, r.datanet_id, r.contributor, len(rows[r.contribution_id]),
                                *blocks[r.contribution_id], row_keys=keys[r.contribution_id],
                                row_texts=texts[r.contribution_id]) for r in records]
        plans = {p.contribution_id: p for p in plan_selection(candidates, filters, seed)}
        if filters.is_default and not any(p.repeats for p in plans.values()):  # every row trains, once
            return Selection(records=records, rows=rows, task=task, filters=filters, seed=seed)
        kept = tuple(r for r in records if r.contribution_id in plans)
        return Selection(records=kept, rows={r.contribution_id: rows[r.contribution_id] for r in kept}, plans=plans,
                         task=task, filters=filters, seed=seed)

    def _submission_blocks(self, records: tuple[ContributionRecord, ...], need_time: bool) -> dict[int, tuple[int, int]]:
        """Contribution id -> (block number, block timestamp) of its ContributionSubmitted event."""
        found: dict[int, tuple[int, int]] = {}
        timestamps: dict[int, int] = {}
        for datanet_id in sorted({r.datanet_id for r in records}):
            logs = self.contracts.datanets.events.ContributionSubmitted.get_logs(
                from_block=self.contracts.manifest.block_number, argument_filters={"datanetId": datanet_id})
            for log in logs:
                block = int(log["blockNumber"])
                if need_time and block not in timestamps:
                    timestamps[block] = int(self.client.w3.eth.get_block(block)["timestamp"])
                found[int(log["args"]["contributionId"])] = (block, timestamps.get(block, 0))
        missing = [r.contribution_id for r in records if r.contribution_id not in found]
        if missing:
            raise SelectionError(f"no ContributionSubmitted event found for contributions {missing}")
        return found

    def freeze(self, selection: Selection) -> str:
        """Store the selection document by CID (before training); returns the CID."""
        return self.store.put(canonical_json(selection.document()))

    def load_frozen(self, selection_cid: str) -> Selection:
        """A frozen selection back from the store: each contribution still approved and unchanged."""
        doc = json.loads(self.store.get(selection_cid))
        if doc.get("format") != SELECTION_FORMAT:
            raise ValueError(f"{selection_cid} is not a frozen selection (format {doc.get('format')!r})")
        records, rows, plans = [], {}, {}
        for c in doc["contributions"]:
            record = self.datanets.contribution(c["contribution_id"])
            if record.status != Status.APPROVED:
                raise ValueError(f"contribution {record.contribution_id} of the frozen selection is "
                                 f"{record.status.name.lower()}, no longer approved")
            if (record.cid, record.content_hash) != (c["cid"], c["content_hash"]):
                raise ValueError(f"contribution {record.contribution_id} differs from the frozen selection")
            records.append(record)
            rows[record.contribution_id] = self.datanets.load_rows(record)
            plans[record.contribution_id] = ContributionPlan(record.contribution_id, record.datanet_id,
                                                             tuple(c["train"]), tuple(c["held_out"]), c["rows"],
                                                             tuple(c.get("repeats", ())))
        filters = SelectionFilters.from_dict(doc["filters"])
        return Selection(records=tuple(records), rows=rows, plans=plans, task=doc["task"], filters=filters,
                         seed=int(doc["seed"]))

    def build(
        self, builder: LocalAccount, request: ModelRequest, progress: Callable[[dict], None] | None = None
    ) -> RegisteredModel:
        self.check_parent(builder.address, request.parent_id)
        selection = self.select(request.datanet_ids, filters=request.filters, seed=request.settings.seed)
        manifest, manifest_cid = self.make(request, selection, progress=progress)
        model_id = self.register(builder, request, manifest, manifest_cid)
        return RegisteredModel(model_id=model_id, manifest_cid=manifest_cid, manifest=manifest)

    def make(self, request: ModelRequest, selection: Selection, progress: Callable[[dict], None] | None = None,
             checkpoints: Checkpoints | None = None, selection_cid: str | None = None) -> tuple[Manifest, str]:
        """Train on a selection (and for classifiers build the attribution index), store everything;
        (manifest, its CID). The selection is frozen by CID first unless the caller did."""
        entries = selection.lineage()
        root = lineage_root(entries)
        selection_cid = selection_cid or self.freeze(selection)
        span_cid, span_sha256 = "", ""
        if selection.task == CAUSAL_TASK:
            trained, per_datanet, index_cid, labels, (span_cid, span_sha256) = self._train_lm(
                request, selection, progress, checkpoints)
        else:
            trained, per_datanet, index_cid, labels = self._train_classifier(request, selection, progress,
                                                                             checkpoints)
        summary = selection.summary()
        for d, counts in summary.items():
            per_datanet[d] = {**counts, **per_datanet.get(d, {})}
        metrics = {**trained.metrics, "per_datanet": per_datanet}
        adapter_cid = self.store.put(trained.adapter_bytes)
        base_id = BASE_MODEL_IDS.get(request.base_model, request.base_model)
        training_config = {
            "base_model": base_id,
            "task": selection.task,
            "labels": list(labels),
            "lora": request.settings.to_dict(),
            "datanet_ids": list(request.datanet_ids),
            "selection": "all approved contributions" if selection.filters.is_default else
            {"filters": selection.filters.to_dict(), "seed": selection.seed},
        }
        training_config["index"] = asdict(request.index_settings)  # both tasks are indexed at training time
        manifest = Manifest(
            model_name=request.name,
            base_model=base_id,
            task=selection.task,
            labels=tuple(labels),
            datanet_ids=tuple(request.datanet_ids),
            training_config=training_config,
            config_hash=config_hash(training_config),
            contributions=entries,
            lineage_root=root,
            adapter_cid=adapter_cid,
            adapter_hash=sha256_0x(trained.adapter_bytes),
            adapter_config=trained.config,
            index_cid=index_cid,
            metrics=metrics,
            selection={"cid": selection_cid, "held_out": selection.held_out(), "per_datanet": summary},
            span_index_cid=span_cid,
            span_index_sha256=span_sha256,
            parent_id=request.parent_id,
        )
        return manifest, self.store.put(manifest.to_bytes())

    def _train_classifier(self, request: ModelRequest, selection: Selection, progress: Callable[[dict], None] | None,
                          checkpoints: Checkpoints | None) -> tuple[Any, dict, str, list[str]]:
        from provenant.serving.engine import Classifier

        examples = selection.examples()
        labels = {ex.label for ex in examples}
        held = [ex for ex in selection.examples(held_out=True) if ex.label in labels]  # unseen labels cannot score
        trained, model = fit_classifier(examples, request.settings, base_model=request.base_model,
                                        eval_examples=held, progress=progress, checkpoints=checkpoints,
                                        device=request.device)
        ReplicaFinished.raise_unless_main()
        per_datanet = per_datanet_metrics(CLASSIFICATION, model, request.base_model, held, trained.config,
                                          request.settings)
        classifier = Classifier.load(trained.adapter_bytes, trained.config)
        index = build_index(classifier, examples, request.index_settings, trained.epoch_adapters)
        return trained, per_datanet, self.store.put(index.to_bytes()), list(trained.config["labels"])

    def _train_lm(self, request: ModelRequest, selection: Selection, progress: Callable[[dict], None] | None,
                  checkpoints: Checkpoints | None) -> tuple[Any, dict, str, list[str], tuple[str, str]]:
        """Train, then index the rows it trained on: the gradient index (index_cid) and the span index
        over their token streams ((CID, sha256)), both at the final weights and stored by CID."""
        from provenant.attribution.lm import build_lm_index, build_lm_span_index
        from provenant.factory.base_models import BaseModelError, is_causal_base, load_causal_base_model
        from provenant.factory.train_lm import fit_causal_lm

        if not is_causal_base(request.base_model):
            raise BaseModelError(f"Datanets {list(request.datanet_ids)} hold causal-LM rows, and base model "
                                 f"{request.base_model!r} is not a causal LM: choose one (e.g. tiny-llama, or a "
                                 f"Hugging Face causal model id or local folder)")
        held = selection.lm_examples(held_out=True)
        examples = selection.lm_examples()
        trained, model = fit_causal_lm(examples, request.settings, request.base_model,
                                       eval_examples=held, progress=progress, checkpoints=checkpoints,
                                       device=request.device)
        ReplicaFinished.raise_unless_main()
        per_datanet = per_datanet_metrics(CAUSAL_TASK, model, request.base_model, held, trained.config,
                                          request.settings)
        base = load_causal_base_model(request.base_model)
        if progress is not None:
            progress({"stage": "index", "examples": len(examples)})
        index = build_lm_index(model, base, examples, request.settings.max_length, request.index_settings,
                               trained.epoch_adapters)
        spans = build_lm_span_index(base, examples, request.settings.max_length)
        span_bytes = spans.to_bytes()
        return (trained, per_datanet, self.store.put(index.to_bytes()), [],
                (self.store.put(span_bytes), sha256_0x(span_bytes)[2:]))

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
            manifest.parent_id,  # the manifest's, so that chain and manifest cannot disagree
            request.price_per_call,
            request.server,
        )
