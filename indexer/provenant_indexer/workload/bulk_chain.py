"""A large chain fast: rounds of real project activity, many events per transaction.

One round: 8 contributor drivers submit 16 contributions each; curators approve ~80%, reject
~10% (a driver that curates every Datanet), contributors withdraw ~5%; a builder registers a
model over approved contributions and four consumers deposit for it; the model's server (a
driver) charges three models 100 signed vouchers each, and fees are paid directly 40 times; the
attributor settles three models' epochs with the project's aggregation rule (compute_epoch) and
signs the attestation with the project's EIP-712 helpers. Usage charges are the bulk, as on a
live system (many calls per contribution).

A round is one block (~670 events; anvil runs with `--order fifo`, so transactions execute in
the order sent). anvil 1.7 recomputes its state root over the whole state for every block: an
empty block took 0.2-0.5 s once the chain held ~13,000 contributions, so a chain of ~10 events
per block (20,000 blocks) would take hours to make here; the bench reads it with ranges sized in
events instead (see bench/run.py). Claims come last, in
a phase of their own, built by provenant.settlement's payout tree (its leaf format is the one
part of the contracts still moving).

Every transaction is checked by its receipt; the events are emitted by the project's contracts.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from eth_account.signers.local import LocalAccount

from provenant.attribution.aggregate import PPM, ContributionMeta
from provenant.chain.client import ChainClient
from provenant.chain.deploy import DEFAULT_SPLIT_BPS, Contracts
from provenant.chain.keys import dev_accounts
from provenant.chain.typed_data import settlement_domain, sign_typed
from provenant.payments.vouchers import Voucher
from provenant.settlement.epoch import CallAttribution, EpochInputs, Split, compute_epoch
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload.driver import VoucherSigner, compile_driver
from provenant_indexer.workload.sender import Sender

log = logging.getLogger("provenant_indexer.bulk_chain")

WEI = 10**18
FAR = 2**40
CONTRIBUTORS = 8
PER_DRIVER = 16  # contributions per driver transaction (~3M gas)
VOUCHERS = 100  # vouchers per charge
BIG_GAS = 15_000_000  # under the 2^24 per-transaction cap of recent hardforks


@dataclass
class ModelState:
    model_id: int
    price: int
    contributions: list[int]
    consumers: list[LocalAccount]
    seq: int = 0
    cum: list[int] = field(default_factory=lambda: [0])
    settled: int = 0
    epoch: int = 0
    dust: int = 0
    spent: dict[str, int] = field(default_factory=dict)
    deposit: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    events: int
    rounds: int
    transactions: int
    claims: int
    claims_skipped: str | None
    seconds: float
    mix: dict[str, int]


class BulkChain:
    def __init__(self, rpc: JsonRpc, client: ChainClient, contracts: Contracts, seed: int = 7) -> None:
        self.rpc, self.c = rpc, contracts
        self.client = client
        self.chain_id = rpc.chain_id()
        self.sender = Sender(rpc, self.chain_id)
        self.rng = random.Random(seed)
        keys = list(dev_accounts(20))
        self.admin, self.treasury, self.owners = keys[0], keys[1], keys[2:5]
        self.builders, self.consumers, self.attributor = keys[5:7], keys[7:15], keys[15]
        self.drivers: list[str] = []
        self.ops = ""
        self.datanets: dict[int, LocalAccount] = {}  # id -> owner (curators: owner and the ops driver)
        self.contributions: dict[int, tuple[int, str]] = {}  # id -> (datanet, contributor driver)
        self.approved: dict[int, list[int]] = {}  # datanet -> approved contribution ids
        self.models: dict[int, ModelState] = {}
        self.settled: list[tuple[int, int, dict[str, int]]] = []  # (model, epoch, allocations)
        self.next_contribution = 1
        self.mix: dict[str, int] = {}
        self.transactions = 0

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, account: LocalAccount, fn: Any, what: str) -> None:
        self.sender.send(account, fn, wait=False)
        self.mix[what] = self.mix.get(what, 0) + 1
        self.transactions += 1

    def _drive(self, driver: str, fn_data: Any, what: str, calls: int) -> None:
        """A driver transaction (sent by the admin key; the driver is msg.sender downstream)."""
        self.sender.send_data(self.admin, driver, fn_data, gas=BIG_GAS, wait=False, what=what)
        self.mix[what] = self.mix.get(what, 0) + calls
        self.transactions += 1

    def _forward(self, driver: str, target: str, calls: list[str], what: str) -> None:
        for i in range(0, len(calls), 60):
            chunk = [bytes.fromhex(c[2:]) for c in calls[i : i + 60]]
            self._drive(driver, self._driver.encode_abi("forward", [target, chunk]), what, len(chunk))

    @staticmethod
    def _data(fn: Any) -> str:
        return str(fn._encode_transaction_data())

    # -- setup --------------------------------------------------------------------------------------
    def setup(self, datanets: int = 12) -> None:
        artifact = compile_driver()
        self._driver = self.client.w3.eth.contract(abi=artifact.abi)
        for _ in range(CONTRIBUTORS + 1):
            self.sender.send_data(self.admin, None, artifact.bytecode, gas=BIG_GAS, wait=True, what="deploy driver")
            receipt = self.sender.last_receipt
            assert receipt is not None
            self.drivers.append(self.client.w3.to_checksum_address(receipt["contractAddress"]))
        self.ops, self.drivers = self.drivers[-1], self.drivers[:-1]
        t = self.c.token.functions
        self._send(self.admin, self.c.settlement.functions.grantRole(
            self.c.settlement.functions.ATTRIBUTOR_ROLE().call(), self.attributor.address), "grant role")
        for driver in [*self.drivers, self.ops]:
            self._send(self.admin, t.transfer(driver, 1_000_000 * WEI), "fund")
            self._drive(driver, self._driver.encode_abi("approveToken", [self.c.token.address, self.c.datanets.address]),
                        "approve token", 1)
        self._drive(self.ops, self._driver.encode_abi("approveToken", [self.c.token.address, self.c.escrow.address]),
                    "approve token", 1)
        for consumer in self.consumers:
            self._send(self.admin, t.transfer(consumer.address, 10_000_000 * WEI), "fund")
            self._send(consumer, t.approve(self.c.escrow.address, 2**256 - 1), "approve token")
        for n in range(1, datanets + 1):
            owner = self.owners[n % len(self.owners)]
            stake = WEI // 1000 if n % 3 == 0 else 0  # a third of the Datanets take a stake: token transfers too
            self._send(owner, self.c.datanets.functions.createDatanet(
                f"bafkreidatanetmetadata{n:04d}", "CC-BY-4.0", sorted([owner.address, self.ops]),
                "0x0000000000000000000000000000000000000000", stake, False, n % 2 == 0), "create datanet")
            self.datanets[n] = owner
            self.approved[n] = []
        self.sender.flush()
        escrow_domain = self.c.escrow.functions.domainSeparator().call()
        self.vouchers = VoucherSigner(bytes(escrow_domain))
        self.vouchers.check(self.consumers[0], self.chain_id, self.c.escrow.address, Voucher(self.consumers[0].address, 1, 5, FAR))

    # -- one round ----------------------------------------------------------------------------------
    def round(self) -> None:
        rng, reg = self.rng, self.c.datanets
        fresh: list[int] = []
        for driver in self.drivers:
            datanet = rng.choice(sorted(self.datanets))
            first = self.next_contribution
            self._drive(driver, self._driver.encode_abi("contributeMany", [reg.address, datanet, first, PER_DRIVER,
                                                                           "bafkrei"]), "contribute", PER_DRIVER)
            for i in range(first, first + PER_DRIVER):
                self.contributions[i] = (datanet, driver)
            fresh.extend(range(first, first + PER_DRIVER))
            self.next_contribution += PER_DRIVER
        rng.shuffle(fresh)
        cut_a, cut_r, cut_w = int(len(fresh) * 0.80), int(len(fresh) * 0.90), int(len(fresh) * 0.95)
        by_datanet: dict[int, list[int]] = {}
        for i in sorted(fresh[:cut_a]):
            by_datanet.setdefault(self.contributions[i][0], []).append(i)
        for datanet, ids in sorted(by_datanet.items()):
            self._send(self.datanets[datanet], reg.functions.approve(datanet, ids), "approve")
            self.approved[datanet].extend(ids)
        self._forward(self.ops, reg.address, [self._data(reg.functions.reject(i, rng.randint(1, 4)))
                                              for i in sorted(fresh[cut_a:cut_r])], "reject")
        withdrawals: dict[str, list[str]] = {}
        for i in sorted(fresh[cut_r:cut_w]):
            withdrawals.setdefault(self.contributions[i][1], []).append(self._data(reg.functions.withdraw(i)))
        for driver, calls in withdrawals.items():
            self._forward(driver, reg.address, calls, "withdraw")
        self._register_model()
        self._charge(3)
        self._pay_fees(40)
        self._settle(3)
        self.mine()

    def mine(self) -> None:
        """One block with everything sent since the last; every receipt checked."""
        self.rpc.call("evm_mine")
        self.sender.flush()

    def _register_model(self) -> None:
        rng = self.rng
        pool = [d for d in sorted(self.approved) if self.approved[d]]
        datanets = sorted(rng.sample(pool, min(len(pool), rng.randint(1, 3))))
        ids = sorted({i for d in datanets for i in rng.sample(self.approved[d], min(len(self.approved[d]), 6))})
        n = len(self.models) + 1
        builder = self.builders[n % 2]
        price = rng.randint(10**12, 10**15)
        spec = (f"bench-model-{n}", "minilm-l6", datanets, ids, rng.randbytes(32), rng.randbytes(32),
                f"bafkreiadapter{n:06d}", rng.randbytes(32), f"bafkreimanifest{n:06d}", 0, price, self.ops)
        self._send(builder, self.c.models.functions.registerModel(spec), "register model")
        consumers = rng.sample(self.consumers, 4)
        model = ModelState(n, price, ids, consumers)
        for consumer in consumers:
            self._send(consumer, self.c.escrow.functions.deposit(n, 10 * WEI), "deposit")
            model.deposit[consumer.address] = 10 * WEI
        self.models[n] = model

    def _charge(self, models: int) -> None:
        for m in self.rng.sample(sorted(self.models), min(models, len(self.models))):
            model, vouchers, signatures, total = self.models[m], [], [], 0
            for k in range(VOUCHERS):
                consumer = model.consumers[k % len(model.consumers)]
                delta = self.rng.randint(1, 5) * model.price
                if model.deposit[consumer.address] < delta:
                    continue
                cumulative = model.spent.get(consumer.address, 0) + delta
                voucher = Voucher(consumer.address, m, cumulative, FAR)
                vouchers.append(voucher.as_tuple())
                signatures.append(self.vouchers.sign(consumer, voucher))
                model.spent[consumer.address] = cumulative
                model.deposit[consumer.address] -= delta
                total += delta
            if not vouchers:
                continue
            call = self._data(self.c.escrow.functions.charge(m, vouchers, signatures))
            self._forward(self.ops, self.c.escrow.address, [call], "charge tx")
            self.mix["charge"] = self.mix.get("charge", 0) + len(vouchers)
            model.seq += 1
            model.cum.append(model.cum[-1] + total)

    def _pay_fees(self, count: int) -> None:
        calls = []
        for _ in range(count):
            m = self.rng.choice(sorted(self.models))
            amount = self.rng.randint(10**12, 10**16)
            calls.append(self._data(self.c.escrow.functions.payFees(m, amount)))
            model = self.models[m]
            model.seq += 1
            model.cum.append(model.cum[-1] + amount)
        self._forward(self.ops, self.c.escrow.address, calls, "pay fees")

    def _settle(self, count: int) -> None:
        ready = [m for m, model in sorted(self.models.items()) if model.seq > model.settled]
        split = Split(*(DEFAULT_SPLIT_BPS[k] for k in ("protocol", "owner", "curators", "contributors")))
        domain = settlement_domain(self.chain_id, self.c.settlement.address)
        for m in self.rng.sample(ready, min(count, len(ready))):
            model = self.models[m]
            upto = model.seq
            fee_total = model.cum[upto] - model.cum[model.settled] + model.dust
            ids = model.contributions
            ppm = {i: self.rng.randint(1, PPM) for i in self.rng.sample(ids, self.rng.randint(1, len(ids)))}
            meta = {i: ContributionMeta(self.contributions[i][1], self.contributions[i][0]) for i in ids}
            curators = {d: sorted([self.datanets[d].address, self.ops]) for d in {x.datanet_id for x in meta.values()}}
            r = compute_epoch(EpochInputs(m, model.epoch + 1, upto, fee_total, split,
                                          [CallAttribution("call", fee_total, ppm)], meta, curators))
            attestation = {"modelId": m, "epoch": r.epoch, "uptoSeq": upto, "feeTotal": r.fee_total,
                           "protocolAmount": r.protocol_amount, "ownerAmount": r.owner_amount,
                           "curatorsTotal": r.curators_total, "contributorsTotal": r.contributors_total,
                           "payoutRoot": bytes.fromhex(r.payout_root[2:]),
                           "resultsCid": f"bafkreiresults{m:05d}e{r.epoch:05d}", "deadline": FAR}
            signature = sign_typed(self.attributor, domain, "Attestation", attestation)
            self._send(self.attributor, self.c.settlement.functions.settle(tuple(attestation.values()), [signature]),
                       "settle")
            model.settled, model.epoch, model.dust = upto, r.epoch, r.carried_dust
            self.settled.append((m, r.epoch, {a: v for a, v in r.allocations.items() if v > 0}))

    # -- claims, last ---------------------------------------------------------------------------------
    def claim_calls(self, model: int, epoch: int, allocations: dict[str, int]) -> list[str]:
        """`claim` calldata for every allocation of one epoch, leaves and proofs from the project's
        payout tree (provenant.settlement.epoch), in whichever leaf format the contract takes."""
        from provenant.settlement import epoch as rule

        fields = [i["name"] for i in next(x for x in self.c.settlement.abi if x.get("name") == "claim")
                  ["inputs"][0]["components"]]
        tree = rule.payout_tree(allocations)
        out = []
        if fields == ["modelId", "epoch", "index", "account", "amount", "proof"] and hasattr(rule, "payout_leaves"):
            for leaf in rule.payout_leaves(allocations):
                proof = [bytes.fromhex(p[2:]) for p in tree.get_proof(leaf.value())]
                out.append(self._data(self.c.settlement.functions.claim(
                    (model, epoch, leaf.index, leaf.account, leaf.amount, proof))))
        elif fields == ["modelId", "epoch", "account", "amount", "proof"] and not hasattr(rule, "payout_leaves"):
            for account, amount in sorted(allocations.items()):
                proof = [bytes.fromhex(p[2:]) for p in tree.get_proof([account, amount])]
                out.append(self._data(self.c.settlement.functions.claim((model, epoch, account, amount, proof))))
        else:
            raise ClaimsUnsupported(f"AttributionSettlement.claim takes {fields}, which provenant.settlement.epoch's "
                                    "payout tree does not build: the contract and the Python side are out of step")
        return out

    def claims(self, budget: int) -> int:
        """Claim allocations of the settled epochs (oldest first) until `budget` events are made."""
        made = 0
        batch: list[str] = []
        for model, epoch, allocations in self.settled:
            if made >= budget:
                break
            calls = self.claim_calls(model, epoch, allocations)
            batch.extend(calls)
            made += 2 * len(calls)  # Claimed + the token's Transfer
            if len(batch) >= 300:
                self._forward(self.ops, self.c.settlement.address, batch, "claim")
                batch = []
                self.mine()
        if batch:
            self._forward(self.ops, self.c.settlement.address, batch, "claim")
        self.mine()
        return made


class ClaimsUnsupported(RuntimeError):
    """The deployed claim function and the Python payout tree disagree on the leaf format."""


def make_bulk_chain(rpc: JsonRpc, client: ChainClient, contracts: Contracts, events: int,
                    progress: Callable[[str], None] = log.info) -> Summary:
    began = time.perf_counter()
    chain = BulkChain(rpc, client, contracts)
    chain.setup()
    rpc.call("evm_setAutomine", [False])
    claim_share = 0.05  # of the events: Claimed + Transfer pairs, made in the last phase
    rounds = 0
    while chain.sender.logs_seen < events * (1 - claim_share):
        chain.round()
        rounds += 1
        if rounds % 20 == 0:
            progress(f"round {rounds}: {chain.sender.logs_seen} events, {chain.transactions} transactions, "
                     f"{time.perf_counter() - began:.0f} s")
    skipped = None
    claims = 0
    try:
        claims = chain.claims(max(events - chain.sender.logs_seen, int(events * claim_share)))
    except ClaimsUnsupported as exc:
        skipped = str(exc)
        progress(f"claims skipped: {exc}")
    chain.mix["claim"] = claims // 2
    while chain.sender.logs_seen < events:  # the claims fell short of their share: top up
        chain.round()
        rounds += 1
    rpc.call("evm_setAutomine", [True])
    return Summary(chain.sender.logs_seen, rounds, chain.transactions, claims // 2, skipped,
                   round(time.perf_counter() - began, 1), dict(sorted(chain.mix.items())))
