"""`verify`: recheck a model's lineage from public data (chain + content store), yes/no with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.datanets.service import DatanetService, Status
from provenant.datanets.validation import rows_hash
from provenant.factory.lineage import Manifest, config_hash, lineage_root, sha256_hex
from provenant.serving.models import ModelRecord
from provenant.store.blockstore import ContentStore


@dataclass
class Verdict:
    subject: str
    reasons: list[str] = field(default_factory=list)  # problems; empty means verified
    checks: list[str] = field(default_factory=list)  # what was checked and held

    @property
    def ok(self) -> bool:
        return not self.reasons


def verify_model(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int) -> Verdict:
    verdict = Verdict(subject=f"model {model_id}")
    record = ModelRecord.fetch(client, contracts, model_id)
    try:
        manifest = Manifest.from_bytes(store.get(record.manifest_cid))
    except Exception as exc:  # noqa: BLE001 - any failure to read the manifest is the verdict
        verdict.reasons.append(f"manifest {record.manifest_cid} unreadable: {exc}")
        return verdict
    verdict.checks.append(f"manifest {record.manifest_cid} matches its CID")

    if config_hash(manifest.training_config) != record.config_hash or manifest.config_hash != record.config_hash:
        verdict.reasons.append("training configuration hash differs from the registered one")
    else:
        verdict.checks.append("training configuration hash matches")

    try:
        adapter = store.get(record.adapter_cid)
        if sha256_hex(adapter) != record.adapter_hash:
            verdict.reasons.append("adapter bytes do not match the registered adapter hash")
        else:
            verdict.checks.append(f"adapter {record.adapter_cid} matches the registered hash")
    except Exception as exc:  # noqa: BLE001
        verdict.reasons.append(f"adapter {record.adapter_cid} unreadable: {exc}")

    datanets = DatanetService(client, contracts, store)
    registered_ids = _registered_contribution_ids(contracts, model_id)
    if registered_ids != [e.contribution_id for e in manifest.contributions]:
        verdict.reasons.append("manifest contributions differ from the ids registered on chain")
    for entry in manifest.contributions:
        on_chain = datanets.contribution(entry.contribution_id)
        if on_chain.status != Status.APPROVED:
            verdict.reasons.append(f"contribution {entry.contribution_id} is {on_chain.status.name.lower()}, not approved")
        if (on_chain.content_hash, on_chain.cid, on_chain.contributor) != (entry.content_hash, entry.cid,
                                                                           entry.contributor):
            verdict.reasons.append(f"contribution {entry.contribution_id}: manifest entry differs from the chain")
            continue
        try:
            rows = datanets.load_rows(on_chain)
        except Exception as exc:  # noqa: BLE001
            verdict.reasons.append(f"contribution {entry.contribution_id}: content unreadable: {exc}")
            continue
        used = rows if entry.row_indices is None else tuple(rows[i] for i in entry.row_indices)
        digest = rows_hash(used)
        if (digest if digest.startswith("0x") else "0x" + digest) != entry.rows_hash:
            verdict.reasons.append(f"contribution {entry.contribution_id}: rows hash differs")
    if lineage_root(manifest.contributions) != record.lineage_root:
        verdict.reasons.append("lineage root recomputed from the manifest differs from the registered root")
    else:
        verdict.checks.append(
            f"lineage root {record.lineage_root} recomputed over {len(manifest.contributions)} contributions"
        )
    return verdict


def _registered_contribution_ids(contracts: Contracts, model_id: int) -> list[int]:
    logs = contracts.models.events.ModelLineage.get_logs(
        from_block=contracts.manifest.block_number, argument_filters={"modelId": model_id}
    )
    return [int(i) for i in logs[0]["args"]["contributionIds"]] if logs else []
