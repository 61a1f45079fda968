"""An attributor: recompute an epoch from the chain, the content store and the call log,
sign it (EIP-712) and post it to the settlement contract.

It refuses to start with a key the settlement contract has not registered, and it never
credits a contribution outside the model's registered lineage (the lineage holds only
contributions the registry accepted as approved).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import settlement_domain, sign_typed
from provenant.datanets.service import canonical_json
from provenant.serving.calllog import CallLog
from provenant.serving.models import ServedModel, load_served_model
from provenant.settlement.epoch import CallAttribution, EpochInputs, EpochResult, Split, compute_epoch
from provenant.store.blockstore import ContentStore


class AttributorNotRegistered(RuntimeError):
    pass


class NothingToSettle(RuntimeError):
    pass


@dataclass(frozen=True)
class Proposal:
    inputs: EpochInputs
    result: EpochResult
    results_cid: str
    deadline: int

    def attestation(self) -> dict[str, object]:
        r = self.result
        return {
            "modelId": r.model_id,
            "epoch": r.epoch,
            "uptoSeq": r.upto_seq,
            "feeTotal": r.fee_total,
            "protocolAmount": r.protocol_amount,
            "ownerAmount": r.owner_amount,
            "curatorsTotal": r.curators_total,
            "contributorsTotal": r.contributors_total,
            "payoutRoot": bytes.fromhex(r.payout_root[2:]),
            "resultsCid": self.results_cid,
            "deadline": self.deadline,
        }

    def attestation_tuple(self) -> tuple:
        return tuple(self.attestation().values())


def settled_results(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int | None = None
                    ) -> list[dict]:
    """The public results of every settled epoch (of one model), read by CID from the chain's events."""
    args = {"modelId": model_id} if model_id is not None else {}
    logs = contracts.settlement.events.EpochSettled.get_logs(
        from_block=contracts.manifest.block_number, argument_filters=args
    )
    return [json.loads(store.get(log["args"]["resultsCid"])) for log in logs]


class Attributor:
    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore, key: LocalAccount,
                 call_log: CallLog) -> None:
        client.check_signer(key)
        role = client.call(contracts.settlement.functions.ATTRIBUTOR_ROLE())
        if not client.call(contracts.settlement.functions.hasRole(role, key.address)):
            raise AttributorNotRegistered(
                f"attributor {key.address} is not registered in AttributionSettlement "
                f"{contracts.settlement.address}: an admin must grant it ATTRIBUTOR_ROLE"
            )
        self.client, self.contracts, self.store, self.key, self.call_log = client, contracts, store, key, call_log
        self._models: dict[int, ServedModel] = {}

    def _model(self, model_id: int) -> ServedModel:
        if model_id not in self._models:
            self._models[model_id] = load_served_model(self.client, self.contracts, self.store, model_id)
        return self._models[model_id]

    def _curators(self, datanet_ids: tuple[int, ...]) -> dict[int, list[str]]:
        curators: dict[int, set[str]] = {d: set() for d in datanet_ids}
        for log in self.contracts.datanets.events.CuratorSet.get_logs(from_block=self.contracts.manifest.block_number):
            d = int(log["args"]["datanetId"])
            if d in curators:
                (curators[d].add if log["args"]["enabled"] else curators[d].discard)(log["args"]["account"])
        return {d: sorted(v) for d, v in curators.items()}

    def gather(self, model_id: int) -> EpochInputs:
        """The epoch's inputs: on-chain fees and split, and every not yet settled call, re-attributed."""
        escrow, settlement = self.contracts.escrow.functions, self.contracts.settlement.functions
        upto = int(self.client.call(escrow.chargeSeq(model_id)))
        settled = int(self.client.call(escrow.settledSeq(model_id)))
        if upto == settled:
            raise NothingToSettle(f"model {model_id} has no charged fees since charge {settled}")
        fee_total = (
            int(self.client.call(escrow.cumulativeFeesAt(model_id, upto)))
            - int(self.client.call(escrow.cumulativeFeesAt(model_id, settled)))
            + int(self.client.call(settlement.carriedDust(model_id)))
        )
        epoch = int(self.client.call(settlement.lastEpoch(model_id))) + 1
        split = Split(*[int(x) for x in self.client.call(settlement.split())])
        done = {c["call_id"] for r in settled_results(self.client, self.contracts, self.store, model_id)
                for c in r["calls"]}
        model = self._model(model_id)
        calls = [
            CallAttribution(call_id=c.call_id, fee=c.fee,
                            contribution_ppm=model.attribute(c.prompt, c.output).contribution_ppm())
            for c in self.call_log.read(model_id)
            if c.call_id not in done
        ]
        return EpochInputs(model_id=model_id, epoch=epoch, upto_seq=upto, fee_total=fee_total, split=split,
                           calls=calls, contributions=model.meta,
                           curators=self._curators(model.manifest.datanet_ids))

    def propose(self, model_id: int, *, valid_for: int = 3600) -> Proposal:
        inputs = self.gather(model_id)
        result = compute_epoch(inputs)
        results_cid = self.store.put(canonical_json(result.to_json(inputs)))
        return Proposal(inputs=inputs, result=result, results_cid=results_cid,
                        deadline=self.client.latest_timestamp() + valid_for)

    def sign(self, proposal: Proposal) -> bytes:
        domain = settlement_domain(self.client.chain_id, self.contracts.settlement.address)
        return sign_typed(self.key, domain, "Attestation", proposal.attestation())

    def post(self, sender: LocalAccount, proposal: Proposal, signatures: dict[str, bytes]) -> TxResult:
        """Submit the settlement with signatures ordered by ascending signer address."""
        ordered = [signatures[a] for a in sorted(signatures, key=lambda a: int(a, 16))]
        fn = self.contracts.settlement.functions.settle(proposal.attestation_tuple(), ordered)
        return self.client.transact(sender, fn)
