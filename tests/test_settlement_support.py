"""The world the settlement tests run in (imported by tests/test_settlement_quorum.py).

One anvil of its own, two Datanets (one with two curators), four contributors, two tiny models
trained for real (LoRA epochs=1 on 30-row slices of the bundled samples; model B on one Datanet
only), a serving key answering calls in this process, and three attributor *processes*
(`provenant attributor-worker`), each with its own key and its own copy of the call log.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import Devnet, start_anvil
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.demo.thread import samples_dir
from provenant.factory.builder import ModelFactory, ModelRequest
from provenant.factory.train import LoraSettings
from provenant.payments.deposits import deposit_with_permit
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.calllog import CallLog
from provenant.serving.receipts import Receipt
from provenant.serving.service import ServingService
from provenant.settlement.attributor import Attributor, settled_results
from provenant.settlement.quorum import Settled, settle_with_quorum
from provenant.settlement.worker import ProcessPeer
from provenant.store import open_store

WEI = 10**18
PRICES = {"router-a": 1_234_567_890_123_456_789, "router-b": 987_654_321_987_654_321}  # odd: dust must appear
DEPOSIT = 200 * WEI
ROWS_PER_FILE = 30


@dataclass
class Cast:
    admin: LocalAccount
    treasury: LocalAccount
    curators: list[LocalAccount]
    contributors: list[LocalAccount]
    builder: LocalAccount  # the models' owner
    server: LocalAccount
    consumers: list[LocalAccount]
    attributors: list[LocalAccount]
    outsider: LocalAccount  # never registered

    @classmethod
    def make(cls) -> "Cast":
        k = list(dev_accounts(20))
        return cls(admin=k[0], treasury=k[1], curators=k[2:5], contributors=k[5:9], builder=k[9], server=k[10],
                   consumers=k[11:13], attributors=k[13:16], outsider=k[16])


@dataclass
class World:
    devnet: Devnet
    client: ChainClient
    contracts: Contracts
    root: Path
    cast: Cast
    models: dict[str, int]
    service: ServingService
    peers: list[ProcessPeer] = field(default_factory=list)
    cumulative: dict[tuple[str, int], int] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    spawned: list[ProcessPeer] = field(default_factory=list)  # every process started, to stop at the end

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.service.store

    @property
    def server_log(self) -> Path:
        return self.root / "server-calls"

    def worker_calls(self, i: int) -> Path:
        return self.root / f"attributor-{i}" / "calls"

    # -- usage ----------------------------------------------------------------------------
    def serve(self, model: str, consumer: int, n: int, queries: list[str]) -> list[Receipt]:
        """n paid calls through the serving service, each with a voucher one price higher."""
        model_id, buyer = self.models[model], self.cast.consumers[consumer]
        deadline = self.client.latest_timestamp() + 86_400
        out = []
        for i in range(n):
            key = (buyer.address, model_id)
            self.cumulative[key] = self.cumulative.get(key, 0) + PRICES[model]
            voucher = Voucher(buyer.address, model_id, self.cumulative[key], deadline)
            signature = sign_voucher(buyer, self.client.chain_id, self.contracts.escrow.address, voucher)
            text = queries[(len(self.receipts) + i) % len(queries)]
            out.append(self.service.classify(model_id, text, voucher, signature).receipt)
        self.receipts.extend(out)
        return out

    def charge(self, model: str) -> None:
        self.service.charge_pending(self.models[model])

    def sync_logs(self) -> None:
        """Ship the server's call log to every attributor (each gets its own copy)."""
        for i in range(len(self.peers)):
            target = self.worker_calls(i)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.server_log, target)

    # -- attributor processes -------------------------------------------------------------
    def start_peer(self, i: int, key: LocalAccount | None = None, with_key: bool = True) -> ProcessPeer:
        key = key or self.cast.attributors[i]
        secret = {"PROVENANT_KEY": "0x" + bytes(key.key).hex()} if with_key else {}
        env = {**{k: v for k, v in os.environ.items() if k != "PROVENANT_KEY"}, **secret,
               "PROVENANT_STORE": str(self.home / "store"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent / "backend"),
                                              os.environ.get("PYTHONPATH", "")])}
        self.worker_calls(i).mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "provenant.cli", "attributor-worker", "--rpc-url", self.devnet.rpc_url,
                   "--home", str(self.home), "--calls", str(self.worker_calls(i))]
        peer = ProcessPeer(command, env, self.root / f"attributor-{i}.log")
        self.spawned.append(peer)
        return peer

    def last_epoch(self, model: str) -> int:
        return int(self.client.call(self.contracts.settlement.functions.lastEpoch(self.models[model])))

    def settle(self, model: str, proposer: int) -> Settled:
        others = [p for i, p in enumerate(self.peers) if i != proposer]
        return settle_with_quorum(self.client, self.contracts, self.peers[proposer], others, self.models[model])

    def epoch_call_ids(self, model: str) -> list[list[str]]:
        results = sorted(settled_results(self.client, self.contracts, self.store, self.models[model]),
                         key=lambda r: r["epoch"])
        return [[c["call_id"] for c in r["calls"]] for r in results]

    def total_fees_in(self) -> int:
        escrow = self.contracts.escrow.functions
        return sum(int(self.client.call(escrow.cumulativeFeesAt(m, int(self.client.call(escrow.chargeSeq(m))))))
                   for m in self.models.values())

    def close(self) -> None:
        with ThreadPoolExecutor(len(self.spawned) or 1) as pool:  # each exit takes seconds: overlap them
            list(pool.map(lambda p: p.close(), self.spawned))
        self.devnet.stop()


def _slice(source: str, target: Path) -> Path:
    lines = (samples_dir() / source).read_text(encoding="utf-8").splitlines()[:ROWS_PER_FILE]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def queries() -> list[str]:
    return [json.loads(line)["text"] for line in (samples_dir() / "queries.jsonl").read_text().splitlines() if line]


def build_world(root: Path) -> World:
    cast = Cast.make()
    devnet = start_anvil(log_path=root / "anvil.log")
    client = ChainClient(devnet.rpc_url)
    home = root / "home"
    contracts = deploy_all(client, cast.admin, home, protocol_treasury=cast.treasury.address)
    store = open_store(str(home / "store"))  # where the CLI looks for it
    settlement, token = contracts.settlement.functions, contracts.token.functions
    role = client.call(settlement.ATTRIBUTOR_ROLE())
    for attributor in cast.attributors:
        client.transact(cast.admin, settlement.grantRole(role, attributor.address))
    client.transact(cast.admin, settlement.setQuorum(2))
    for consumer in cast.consumers:
        client.transact(cast.admin, token.transfer(consumer.address, 2 * DEPOSIT))
    world = World(devnet=devnet, client=client, contracts=contracts, root=root, cast=cast, models={},
                  service=ServingService(client, contracts, store, cast.server, CallLog(root / "server-calls")))
    # The attributor processes start now: their imports overlap the training below.
    world.peers = [world.start_peer(i) for i in range(3)]

    spec = {d["name"]: d for d in json.loads((samples_dir() / "datanets.json").read_text())["datanets"]}
    datanets = DatanetService(client, contracts, store)
    meta = lambda name: {k: v for k, v in spec[name].items() if k not in ("contributors", "curator_rejects",  # noqa: E731
                                                                         "used_by_demo_model")}
    d1 = datanets.create(cast.curators[0], meta("support-tickets"), curators=[c.address for c in cast.curators[:2]])
    d2 = datanets.create(cast.curators[2], meta("forum-posts"))
    files = [(d1, "alice_1.jsonl"), (d1, "bob_1.jsonl"), (d2, "carol_1.jsonl"), (d2, "dave_1.jsonl")]
    contributed: dict[int, list[int]] = {d1: [], d2: []}
    for contributor, (datanet, name) in zip(cast.contributors, files):
        record = datanets.contribute(contributor, datanet, _slice(name, root / name))
        contributed[datanet].append(record.contribution_id)
    datanets.approve(cast.curators[0], d1, contributed[d1])
    datanets.approve(cast.curators[2], d2, contributed[d2])

    factory = ModelFactory(client, contracts, store, datanets)
    settings = LoraSettings(epochs=1, max_length=32)
    for name, used in (("router-a", (d1, d2)), ("router-b", (d1,))):
        built = factory.build(cast.builder, ModelRequest(name=name, datanet_ids=used, server=cast.server.address,
                                                         price_per_call=PRICES[name], settings=settings))
        world.models[name] = built.model_id
        for consumer in cast.consumers:
            deposit_with_permit(client, contracts, consumer, built.model_id, DEPOSIT)
    with ThreadPoolExecutor(len(world.peers)) as pool:  # load both models in every process at once
        list(pool.map(lambda p: p.request("preload", model_ids=list(world.models.values())), world.peers))
    return world


class DriftingAttributor(Attributor):
    """A proposer whose scores are its honest ones times (1 + drift(contribution id)): float noise
    from another machine when the drift is tiny, a bent proposal when it is not."""

    drift: Callable[[int], float] = staticmethod(lambda k: 0.0)  # type: ignore[assignment]

    def epoch_calls(self, ctx):  # type: ignore[no-untyped-def]
        return [replace(c, scores={k: v * (1 + self.drift(k)) for k, v in c.scores.items()})
                for c in super().epoch_calls(ctx)]


# -- the command line, in this process --------------------------------------------------------------
def app():  # type: ignore[no-untyped-def]
    from provenant.cli import app as typer_app

    return typer_app


def chain_args(world: World) -> list[str]:
    return ["--rpc-url", world.devnet.rpc_url, "--home", str(world.home)]


def run_cli(args: list[str]) -> None:
    """Through cli.main(), which turns any error into one line and exit status 1."""
    from provenant import cli

    saved = sys.argv
    sys.argv = ["provenant", *args]
    try:
        cli.main()
    finally:
        sys.argv = saved
