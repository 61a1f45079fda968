"""A realistic, seeded mix of project transactions on a devnet, for the indexer's tests and bench.

Every action is one transaction (so one block under automine) and keeps a small model of the
chain's state, so random sequences only make valid calls. The model is plain data: tests that
rewind the chain (evm_revert, anvil_reorg) restore the copy taken at the block they rewound to.
Settlement uses the project's own aggregation rule (provenant.settlement.epoch.compute_epoch),
signatures its own EIP-712 helpers.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from provenant.attribution.aggregate import PPM, ContributionMeta
from provenant.chain.deploy import DEFAULT_SPLIT_BPS, Contracts
from provenant.chain.keys import dev_accounts
from provenant.chain.typed_data import settlement_domain, sign_typed
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.settlement.epoch import CallAttribution, EpochInputs, Split, compute_epoch
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload.sender import Sender

WEI = 10**18
FAR = 2**40  # deadline for vouchers and attestations: never expires on a devnet
FUNDS = 1_000_000 * WEI


@dataclass
class State:
    datanets: dict[int, dict] = field(default_factory=dict)  # id -> {owner, stake, curators: set}
    contributions: dict[int, dict] = field(default_factory=dict)  # id -> {datanet, who, status}
    models: dict[int, dict] = field(default_factory=dict)  # id -> {owner, server, price, contributions, ...}
    allocations: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)
    claimed: set[tuple[int, int, str]] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"datanet": 0, "contribution": 0, "model": 0})


class World:
    def __init__(self, rpc: JsonRpc, contracts: Contracts, seed: int = 0) -> None:
        self.rpc = rpc
        self.c = contracts
        self.chain_id = rpc.chain_id()
        self.sender = Sender(rpc, self.chain_id)
        self.rng = random.Random(seed)
        keys = list(dev_accounts(20))
        self.admin, self.owners, self.contributors = keys[0], keys[2:5], keys[5:13]
        self.builder, self.server, self.attributor, self.consumers = keys[13], keys[14], keys[15], keys[16:20]
        self.by_address = {k.address: k for k in keys}
        self.state = State()
        self.wait = True  # check each receipt as it is mined (False: bench bursts, checked by flush())
        # A content store (anything with put(bytes) -> CID): when set, each settled epoch's public
        # results document is stored and its real CID signed, as the attributor does.
        self.store: Any = None

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, account: LocalAccount, fn) -> None:  # type: ignore[no-untyped-def]
        self.sender.send(account, fn, wait=self.wait)

    def snapshot(self) -> State:
        return copy.deepcopy(self.state)

    def restore(self, state: State) -> None:
        self.state = copy.deepcopy(state)
        self.sender.forget_nonces()

    def setup(self) -> None:
        """Fund and approve every actor, register the attributor (several blocks)."""
        t, role = self.c.token.functions, self.c.settlement.functions.ATTRIBUTOR_ROLE().call()
        self._send(self.admin, self.c.settlement.functions.grantRole(role, self.attributor.address))
        for account in [*self.contributors, *self.consumers]:
            self._send(self.admin, t.transfer(account.address, FUNDS))
        for account in self.contributors:
            self._send(account, t.approve(self.c.datanets.address, 2**256 - 1))
        for account in self.consumers:
            self._send(account, t.approve(self.c.escrow.address, 2**256 - 1))
        self.sender.flush()

    # -- actions: each is one transaction, or returns False when it has nothing valid to do -------
    def create_datanet(self) -> bool:
        owner = self.rng.choice(self.owners)
        stake = self.rng.choice([0, 0, 5 * WEI])
        curators = [owner.address] + ([self.rng.choice(self.owners).address] if self.rng.random() < 0.3 else [])
        curators = sorted(set(curators))
        fn = self.c.datanets.functions.createDatanet(
            f"bafkreidatanet{self.state.counts['datanet'] + 1}", "CC-BY-4.0", curators,
            "0x0000000000000000000000000000000000000000", stake, False, self.rng.random() < 0.5)
        self._send(owner, fn)
        self.state.counts["datanet"] += 1
        self.state.datanets[self.state.counts["datanet"]] = {"owner": owner.address, "curators": set(curators)}
        return True

    def contribute(self) -> bool:
        if not self.state.datanets:
            return False
        datanet = self.rng.choice(sorted(self.state.datanets))
        who = self.rng.choice(self.contributors)
        n = self.state.counts["contribution"] + 1
        content = n.to_bytes(32, "big")
        fn = self.c.datanets.functions.contribute(datanet, content, f"bafkreicontribution{n}",
                                                  self.rng.randint(1, 10**6), self.rng.randint(1, 500))
        self._send(who, fn)
        self.state.counts["contribution"] = n
        self.state.contributions[n] = {"datanet": datanet, "who": who.address, "status": "pending"}
        return True

    def _pending(self, datanet: int | None = None) -> list[int]:
        return [i for i, c in sorted(self.state.contributions.items())
                if c["status"] == "pending" and (datanet is None or c["datanet"] == datanet)]

    def _curator(self, datanet: int) -> LocalAccount:
        return self.by_address[sorted(self.state.datanets[datanet]["curators"])[0]]

    def approve(self) -> bool:
        pending = self._pending()
        if not pending:
            return False
        datanet = self.state.contributions[self.rng.choice(pending)]["datanet"]
        if not self.state.datanets[datanet]["curators"]:
            return False
        ids = self._pending(datanet)
        ids = self.rng.sample(ids, self.rng.randint(1, len(ids)))
        self._send(self._curator(datanet), self.c.datanets.functions.approve(datanet, ids))
        for i in ids:
            self.state.contributions[i]["status"] = "approved"
        return True

    def reject(self) -> bool:
        candidates = [i for i in self._pending() if self.state.datanets[self.state.contributions[i]["datanet"]]["curators"]]
        if not candidates:
            return False
        i = self.rng.choice(candidates)
        curator = self._curator(self.state.contributions[i]["datanet"])
        self._send(curator, self.c.datanets.functions.reject(i, self.rng.randint(1, 4)))
        self.state.contributions[i]["status"] = "rejected"
        return True

    def withdraw(self) -> bool:
        pending = self._pending()
        if not pending:
            return False
        i = self.rng.choice(pending)
        self._send(self.by_address[self.state.contributions[i]["who"]], self.c.datanets.functions.withdraw(i))
        self.state.contributions[i]["status"] = "withdrawn"
        return True

    def set_curator(self) -> bool:
        if not self.state.datanets:
            return False
        datanet = self.rng.choice(sorted(self.state.datanets))
        d = self.state.datanets[datanet]
        account = self.rng.choice(self.owners).address
        enabled = account not in d["curators"] or len(d["curators"]) > 1 and self.rng.random() < 0.5
        self._send(self.by_address[d["owner"]], self.c.datanets.functions.setCurator(datanet, account, enabled))
        (d["curators"].add if enabled else d["curators"].discard)(account)
        return True

    def register_model(self) -> bool:
        approved = [i for i, c in sorted(self.state.contributions.items()) if c["status"] == "approved"]
        if not approved:
            return False
        ids = sorted(self.rng.sample(approved, self.rng.randint(1, min(8, len(approved)))))
        datanets = sorted({self.state.contributions[i]["datanet"] for i in ids})
        n = self.state.counts["model"] + 1
        parent = n - 1 if n > 1 and self.state.models[n - 1]["owner"] == self.builder.address and self.rng.random() < 0.3 else 0
        price = self.rng.randint(1, 10**18)
        spec = (f"model-{n}", "minilm-l6", datanets, ids, self.rng.randbytes(32), self.rng.randbytes(32),
                f"bafkreiadapter{n}", self.rng.randbytes(32), f"bafkreimanifest{n}", parent, price, self.server.address)
        self._send(self.builder, self.c.models.functions.registerModel(spec))
        self.state.counts["model"] = n
        self.state.models[n] = {"owner": self.builder.address, "price": price, "contributions": ids, "seq": 0,
                                "cum": [0], "settled": 0, "epoch": 0, "dust": 0, "spent": {}, "deposit": {}}
        return True

    def _model(self) -> int | None:
        return self.rng.choice(sorted(self.state.models)) if self.state.models else None

    def deposit(self) -> bool:
        m = self._model()
        if m is None:
            return False
        consumer = self.rng.choice(self.consumers)
        amount = self.rng.randint(1, 50) * WEI
        self._send(consumer, self.c.escrow.functions.deposit(m, amount))
        dep = self.state.models[m]["deposit"]
        dep[consumer.address] = dep.get(consumer.address, 0) + amount
        return True

    def charge(self) -> bool:
        m = self._model()
        if m is None:
            return False
        model = self.state.models[m]
        payers = [a for a, d in sorted(model["deposit"].items()) if d >= model["price"]]
        if not payers:
            return False
        vouchers, signatures, total = [], [], 0
        for address in self.rng.sample(payers, self.rng.randint(1, len(payers))):
            calls = self.rng.randint(1, max(1, min(5, model["deposit"][address] // model["price"])))
            delta = calls * model["price"]
            cumulative = model["spent"].get(address, 0) + delta
            voucher = Voucher(address, m, cumulative, FAR)
            vouchers.append(voucher.as_tuple())
            signatures.append(sign_voucher(self.by_address[address], self.chain_id, self.c.escrow.address, voucher))
            model["spent"][address], model["deposit"][address] = cumulative, model["deposit"][address] - delta
            total += delta
        self._send(self.server, self.c.escrow.functions.charge(m, vouchers, signatures))
        model["seq"] += 1
        model["cum"].append(model["cum"][-1] + total)
        return True

    def pay_fees(self) -> bool:
        m = self._model()
        if m is None:
            return False
        amount = self.rng.randint(1, 10**18)
        self._send(self.rng.choice(self.consumers), self.c.escrow.functions.payFees(m, amount))
        model = self.state.models[m]
        model["seq"] += 1
        model["cum"].append(model["cum"][-1] + amount)
        return True

    def set_terms(self) -> bool:
        m = self._model()
        if m is None:
            return False
        price = self.rng.randint(1, 10**18)
        self._send(self.builder, self.c.models.functions.setTerms(m, price, self.server.address))
        self.state.models[m]["price"] = price
        return True

    def settle(self) -> bool:
        ready = [m for m, model in sorted(self.state.models.items()) if model["seq"] > model["settled"]]
        if not ready:
            return False
        m = self.rng.choice(ready)
        model = self.state.models[m]
        upto = self.rng.randint(model["settled"] + 1, model["seq"])
        fee_total = model["cum"][upto] - model["cum"][model["settled"]] + model["dust"]
        ids = model["contributions"]
        ppm = {i: self.rng.randint(1, PPM) for i in self.rng.sample(ids, self.rng.randint(1, len(ids)))}
        meta = {i: ContributionMeta(self.state.contributions[i]["who"], self.state.contributions[i]["datanet"])
                for i in ids}
        curators = {d: sorted(self.state.datanets[d]["curators"]) for d in {x.datanet_id for x in meta.values()}}
        split = Split(*(DEFAULT_SPLIT_BPS[k] for k in ("protocol", "owner", "curators", "contributors")))
        inputs = EpochInputs(m, model["epoch"] + 1, upto, fee_total, split,
                             [CallAttribution("call", fee_total, ppm)], meta, curators)
        r = compute_epoch(inputs)
        attestation = {"modelId": m, "epoch": r.epoch, "uptoSeq": upto, "feeTotal": r.fee_total,
                       "protocolAmount": r.protocol_amount, "ownerAmount": r.owner_amount,
                       "curatorsTotal": r.curators_total, "contributorsTotal": r.contributors_total,
                       "payoutRoot": bytes.fromhex(r.payout_root[2:]), "resultsCid": self._results_cid(r, inputs),
                       "deadline": FAR}
        domain = settlement_domain(self.chain_id, self.c.settlement.address)
        signature = sign_typed(self.attributor, domain, "Attestation", attestation)
        self._send(self.attributor, self.c.settlement.functions.settle(tuple(attestation.values()), [signature]))
        model.update(settled=upto, epoch=r.epoch, dust=r.carried_dust)
        self.state.allocations[(m, r.epoch)] = {a: v for a, v in r.allocations.items() if v > 0}
        return True

    def _results_cid(self, r: Any, inputs: EpochInputs) -> str:
        if self.store is None:
            return f"bafkreiresults{r.model_id}x{r.epoch}"
        document = r.to_json(inputs)
        document["inputs"] = {"curators": {str(d): list(v) for d, v in sorted(inputs.curators.items())}}
        return str(self.store.put(json.dumps(document, sort_keys=True).encode()))

    def claim(self) -> bool:
        from provenant.settlement import epoch as rule

        open_ = [(m, e, a) for (m, e), alloc in sorted(self.state.allocations.items()) for a in sorted(alloc)
                 if (m, e, a) not in self.state.claimed]
        if not open_:
            return False
        account = self.rng.choice(open_)[2]
        mine = [(m, e, a) for (m, e, a) in open_ if a == account][: self.rng.randint(1, 4)]
        claims = []
        for m, e, a in mine:
            alloc = self.state.allocations[(m, e)]
            tree = rule.payout_tree(alloc)
            if hasattr(rule, "payout_leaf_of"):  # leaves (index, account, amount): claims by leaf index
                leaf = rule.payout_leaf_of(alloc, a)
                proof = [bytes.fromhex(p[2:]) for p in tree.get_proof(leaf.value())]
                claims.append((m, e, leaf.index, a, leaf.amount, proof))
            else:
                proof = [bytes.fromhex(p[2:]) for p in tree.get_proof([a, alloc[a]])]
                claims.append((m, e, a, alloc[a], proof))
        self._send(self.by_address[account], self.c.settlement.functions.claimMany(claims))
        self.state.claimed.update(mine)
        return True

    ACTIONS = ("create_datanet", "contribute", "approve", "reject", "withdraw", "set_curator", "register_model",
               "deposit", "charge", "pay_fees", "set_terms", "settle", "claim")
    WEIGHTS = (2, 14, 6, 2, 1, 1, 2, 4, 8, 2, 1, 3, 3)

    def random_action(self) -> str:
        """Perform one valid action chosen by weight (falling back to contributing)."""
        for _ in range(20):
            name = self.rng.choices(self.ACTIONS, weights=self.WEIGHTS)[0]
            if getattr(self, name)():
                return name
        if not self.state.datanets:
            self.create_datanet()
            return "create_datanet"
        self.contribute()
        return "contribute"
