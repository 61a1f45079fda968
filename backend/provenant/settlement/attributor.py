"""An attributor: proposes an epoch, or recomputes another attributor's proposal and co-signs it.

Both roles run the same code on their own inputs: the public context (chain + content store,
context.py), their own copy of the call log (membership.py ties each call to its charge), and
their own scores (scores.py). A co-signer adopts the proposer's scores only where they agree
with its own within the stated tolerance; everything else must come out byte-identical, and the
first differing call and account are logged and returned when it does not.

It refuses to start with a key the settlement contract has not registered, and never credits a
contribution outside the model's registered lineage.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import Domain, settlement_domain
from provenant.serving.calllog import CallLog
from provenant.serving.models import ServedModel, load_served_model
from provenant.serving.receipts import salted_hash
from provenant.settlement.attestation import Attestation, Cosignature, Refusal, SignedProposal
from provenant.settlement.context import ChainReader, EpochContext, NothingToSettle
from provenant.settlement.epoch import EpochInputs, EpochResult
from provenant.settlement.membership import assign
from provenant.settlement.results import EpochCall, calls_of, first_difference, parse, render
from provenant.settlement.roles import AttributorNotRegistered, is_registered, require_registered
from provenant.settlement.rpc import RpcUnavailable
from provenant.settlement.scores import compare_scores, score_calls
from provenant.store.blockstore import ContentStore

__all__ = ["Attributor", "AttributorNotRegistered", "NothingToSettle", "Proposal", "settled_results"]

log = logging.getLogger("provenant.settlement")
MAX_VALIDITY_S = 86_400  # a co-signer signs nothing that stays postable for longer


@dataclass(frozen=True)
class Proposal:
    inputs: EpochInputs
    result: EpochResult
    results_cid: str
    deadline: int
    signed: SignedProposal
    document: dict[str, Any]

    def attestation(self) -> dict[str, object]:
        return self.signed.attestation.message()

    def attestation_tuple(self) -> tuple:
        return self.signed.attestation.as_tuple()


def settled_results(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int | None = None
                    ) -> list[dict]:
    """The public results of every settled epoch (of one model), read by CID from the chain's events."""
    reader = ChainReader(client, contracts, store)
    args = {"modelId": model_id} if model_id is not None else {}
    logs = reader.logs(contracts.settlement.events.EpochSettled, "reading EpochSettled events", **args)
    return [json.loads(store.get(log["args"]["resultsCid"])) for log in logs]


class Attributor:
    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore, key: LocalAccount,
                 call_log: CallLog) -> None:
        client.check_signer(key)
        self.reader = ChainReader(client, contracts, store)
        require_registered(client, contracts, key.address)
        self.client, self.contracts, self.store, self.key, self.call_log = client, contracts, store, key, call_log
        self._models: dict[int, ServedModel] = {}

    @property
    def address(self) -> str:
        return self.key.address

    @property
    def domain(self) -> Domain:
        return settlement_domain(self.client.chain_id, self.contracts.settlement.address)

    def is_registered(self, address: str) -> bool:
        return is_registered(self.client, self.contracts, address)

    def _model(self, model_id: int) -> ServedModel:
        if model_id not in self._models:
            self._models[model_id] = load_served_model(self.client, self.contracts, self.store, model_id)
        return self._models[model_id]

    # -- the epoch from this attributor's own inputs ------------------------------------
    def epoch_calls(self, ctx: EpochContext) -> list[EpochCall]:
        """The calls the epoch's charges paid for, from this attributor's call log, scored here."""
        members = assign(self.call_log.read_in_order(ctx.model_id), ctx.charges).members
        if not members:
            return []
        records = [m.record for m in members]
        scores = score_calls(self._model(ctx.model_id), [r.prompt for r in records], [r.output for r in records])
        out = []
        for paid, call_scores in zip(members, scores):
            r, salt = paid.record, bytes.fromhex(paid.record.salt.removeprefix("0x"))
            out.append(EpochCall(call_id=r.call_id, consumer=paid.consumer, fee=r.fee, charge_seq=paid.charge_seq,
                                 cumulative=paid.cumulative, prompt_hash=salted_hash(salt, r.prompt),
                                 output_hash=salted_hash(salt, r.output), scores=call_scores))
        return out

    def propose(self, model_id: int, *, upto_seq: int | None = None, valid_for: int = 3600) -> Proposal:
        """Compute the next epoch (up to `upto_seq`, default everything charged), store the results
        by CID and sign the attestation."""
        ctx = self.reader.open_context(model_id, upto_seq)
        rendered = render(ctx, self.epoch_calls(ctx))
        results_cid = self.store.put(rendered.data)
        deadline = self.reader.fetch("reading the latest block", self.client.latest_timestamp) + valid_for
        attestation = Attestation.from_document(rendered.document, results_cid, deadline)
        signed = SignedProposal(attestation, self.address, attestation.sign(self.key, self.domain))
        log.info("proposed model %s epoch %s up to charge %s: %s calls, root %s, results %s", model_id, ctx.epoch,
                 ctx.upto_seq, len(rendered.inputs.calls), attestation.payout_root, results_cid)
        return Proposal(inputs=rendered.inputs, result=rendered.result, results_cid=results_cid, deadline=deadline,
                        signed=signed, document=rendered.document)

    def sign(self, proposal: Proposal | SignedProposal) -> bytes:
        signed = proposal.signed if isinstance(proposal, Proposal) else proposal
        return signed.attestation.sign(self.key, self.domain)

    # -- co-signing ----------------------------------------------------------------------
    def cosign(self, proposal: SignedProposal) -> Cosignature | Refusal:
        """Recompute the proposed epoch; sign only if it comes out the same (see module doc)."""
        refusal = self._check(proposal)
        if refusal is not None:
            log.warning("attributor %s refuses model %s epoch %s proposed by %s: %s%s%s", self.address,
                        proposal.attestation.model_id, proposal.attestation.epoch, proposal.signer, refusal.reason,
                        f"; first differing call {refusal.call_id}" if refusal.call_id else "",
                        f"; first differing account {refusal.account}" if refusal.account else "")
            return refusal
        return Cosignature(self.address, self.sign(proposal))

    def _check(self, proposal: SignedProposal) -> Refusal | None:
        a = proposal.attestation
        no = lambda reason, call=None, account=None: Refusal(self.address, reason, call, account)  # noqa: E731
        try:
            signer = a.recover(self.domain, proposal.signature)
        except Exception:  # noqa: BLE001 - a malformed signature is simply not a proposal
            signer = ""
        if signer != proposal.signer or not self.is_registered(signer):
            return no(f"proposal is not signed by a registered attributor (recovered {signer or 'nobody'})")
        now = self.reader.fetch("reading the latest block", self.client.latest_timestamp)
        if not now < a.deadline <= now + MAX_VALIDITY_S:
            return no(f"deadline {a.deadline} is not within the next {MAX_VALIDITY_S} s")
        try:
            ctx = self.reader.open_context(a.model_id, a.upto_seq)
            if ctx.epoch != a.epoch:
                return no(f"epoch {a.epoch} is not the model's next epoch {ctx.epoch}")
            theirs_data = self.store.get(a.results_cid)
            theirs = parse(theirs_data)
            their_calls = {c.call_id: c for c in calls_of(theirs)}
        except RpcUnavailable:
            raise  # the node is down: an error for the caller, not a verdict on the proposal
        except (ValueError, KeyError, TypeError, LookupError, RuntimeError) as exc:  # content errors are RuntimeErrors
            return no(f"cannot recompute: {exc}")
        mine = self.epoch_calls(ctx)
        # Adopt the proposer's scores call by call (checked against mine below), so that the
        # integers and bytes are compared on the same quantised shares.
        adopted = [replace(c, scores=their_calls[c.call_id].scores) if c.call_id in their_calls else c for c in mine]
        try:
            rendered = render(ctx, adopted)
        except ValueError as exc:
            return no(str(exc))
        if rendered.data != theirs_data:
            diff = first_difference(theirs, rendered.document)
            account = diff.account if diff else None
            if account is None:  # same shares, other calls: name the first account my own scores pay otherwise
                own = first_difference(theirs, render(ctx, mine).document)
                account = own.account if own else None
            return no("results differ: " + (diff.describe() if diff else "bytes differ"),
                      diff.call_id if diff else None, account)
        for own in mine:
            difference = compare_scores(their_calls[own.call_id].scores, own.scores)
            if difference is not None:
                meta = ctx.contributions.get(difference.contribution_id)
                return no("scores differ beyond the tolerance: " + difference.describe(), own.call_id,
                          meta.contributor if meta else None)
        expected = Attestation.from_document(rendered.document, a.results_cid, a.deadline)
        mismatch = a.first_mismatch(expected)
        if mismatch is not None:
            return no("attestation differs from the results: " + mismatch)
        return None

    # -- posting ---------------------------------------------------------------------------
    def post(self, sender: LocalAccount, proposal: Proposal | SignedProposal, signatures: dict[str, bytes]
             ) -> TxResult:
        """Submit the settlement with signatures ordered by ascending signer address."""
        signed = proposal.signed if isinstance(proposal, Proposal) else proposal
        ordered = [signatures[a] for a in sorted(signatures, key=lambda a: int(a, 16))]
        fn = self.contracts.settlement.functions.settle(signed.attestation.as_tuple(), ordered)
        return self.client.transact(sender, fn)
