"""The soak test's world (imported by tests/test_settlement_soak.py).

One anvil of its own; three Datanets built from the bundled samples, their rows split among 50
contributor accounts (one contribution each); five models trained for real on the config-built
"tiny-encoder" base (so that scoring a call costs ~1 ms and co-signers still re-score every call);
consumers with deposits; a serving key answering calls in this process; and `provenant
settle-loop` as a separate process group (the service and its two co-signing attributor
processes), which the test kills with SIGKILL and starts again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount

from provenant.attribution.index import IndexSettings
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import Devnet, start_anvil
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.demo.thread import samples_dir
from provenant.factory.base_models import TINY_ENCODER
from provenant.factory.builder import ModelFactory, ModelRequest
from provenant.factory.train import LoraSettings
from provenant.payments.deposits import deposit_with_permit
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.calllog import CallLog
from provenant.serving.service import ServingService
from provenant.store import open_store

CONTRIBUTORS = 50
CONSUMERS = 4
# (name, Datanet names, seed); every contributor is in the lineage of at least one model.
MODELS = (("soak-all", ("support-tickets", "forum-posts", "product-faq"), 0),
          ("soak-tickets", ("support-tickets",), 1),
          ("soak-forum-faq", ("forum-posts", "product-faq"), 2),
          ("soak-tickets-forum", ("support-tickets", "forum-posts"), 3),
          ("soak-all-b", ("support-tickets", "forum-posts", "product-faq"), 4))
SOURCES = {"support-tickets": ("alice_1.jsonl", "alice_2.jsonl", "bob_1.jsonl", "bob_2.jsonl"),
           "forum-posts": ("carol_1.jsonl", "dave_1.jsonl"), "product-faq": ("erin_1.jsonl",)}


class LeanClient(ChainClient):
    """The serving side's client in the soak: uint-returning views go to the node as raw eth_call
    with eth_abi encoding, skipping web3.py's per-call formatting (~5 ms of Python each, four
    per paid call); the node and the contracts answer exactly as before. Anything else, and any
    error, takes ChainClient's ordinary path (which decodes reverts)."""

    def call(self, fn, *, sender=None):  # type: ignore[no-untyped-def, override]
        outputs = [o["type"] for o in fn.abi.get("outputs", [])]
        if sender or not outputs or any(not t.startswith("uint") for t in outputs):
            return super().call(fn, sender=sender)
        raw = self.w3.provider.make_request("eth_call", [{"to": fn.address, "data": fn._encode_transaction_data()},
                                                         "latest"])
        if "result" not in raw:
            return super().call(fn, sender=sender)
        values = abi_decode(outputs, bytes.fromhex(raw["result"][2:]))
        return values[0] if len(values) == 1 else list(values)

    def latest_timestamp(self) -> int:
        block = self.w3.provider.make_request("eth_getBlockByNumber", ["latest", False])["result"]
        return int(block["timestamp"], 16)


@dataclass
class SoakCast:
    admin: LocalAccount
    treasury: LocalAccount
    curators: list[LocalAccount]
    builder: LocalAccount
    server: LocalAccount
    attributors: list[LocalAccount]
    consumers: list[LocalAccount]
    contributors: list[LocalAccount]

    @classmethod
    def make(cls) -> "SoakCast":
        k = list(dev_accounts(12 + CONSUMERS + CONTRIBUTORS))
        return cls(admin=k[0], treasury=k[1], curators=k[2:5], builder=k[5], server=k[6], attributors=k[7:10],
                   consumers=k[12:12 + CONSUMERS], contributors=k[12 + CONSUMERS:])


@dataclass
class SoakWorld:
    devnet: Devnet
    client: ChainClient
    contracts: Contracts
    root: Path
    cast: SoakCast
    models: dict[str, int]
    prices: dict[int, int]
    service: ServingService
    queries: list[str]
    deposits_in: int = 0
    cumulative: dict[tuple[str, int], int] = field(default_factory=dict)
    loop: subprocess.Popen | None = None
    loop_starts: int = 0

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def server_log(self) -> Path:
        return self.root / "server-calls"

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.service.store

    # -- traffic ----------------------------------------------------------------------------
    def serve(self, model_id: int, consumer: int, n: int, offset: int) -> None:
        """n paid calls, each with a voucher one price higher than the consumer's last."""
        buyer = self.cast.consumers[consumer]
        deadline = self.client.latest_timestamp() + 86_400
        for i in range(n):
            key = (buyer.address, model_id)
            self.cumulative[key] = self.cumulative.get(key, 0) + self.prices[model_id]
            voucher = Voucher(buyer.address, model_id, self.cumulative[key], deadline)
            signature = sign_voucher(buyer, self.client.chain_id, self.contracts.escrow.address, voucher)
            self.service.classify(model_id, self.queries[(offset + i) % len(self.queries)], voucher, signature)

    def charge(self, model_id: int) -> None:
        self.service.charge_pending(model_id)

    # -- the settle-loop process group -------------------------------------------------------
    def start_loop(self, max_calls: int) -> None:
        keys = {"PROVENANT_KEY": self.cast.attributors[0], "SOAK_PEER1_KEY": self.cast.attributors[1],
                "SOAK_PEER2_KEY": self.cast.attributors[2]}
        env = {**os.environ, **{k: "0x" + bytes(a.key).hex() for k, a in keys.items()},
               "PROVENANT_STORE": str(self.home / "store"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent / "backend"),
                                              os.environ.get("PYTHONPATH", "")])}
        config = self.root / "settle-loop.json"
        # Every attributor reads the server's log directly: it is append-only and a call is
        # fsynced before it is charged, so a reader never misses a charged call.
        config.write_text(json.dumps({"peers": [{"key_env": "SOAK_PEER1_KEY", "calls": str(self.server_log)},
                                                {"key_env": "SOAK_PEER2_KEY", "calls": str(self.server_log)}],
                                      "retry_after_s": 2}))
        command = [sys.executable, "-m", "provenant.cli", "settle-loop", "--config", str(config),
                   "--rpc-url", self.devnet.rpc_url, "--home", str(self.home), "--calls", str(self.server_log),
                   "--max-calls", str(max_calls), "--interval", "0.5"]
        with open(self.root / "settle-loop.log", "ab") as out:
            # Its own process group: the kill takes the service and its attributor processes at once.
            self.loop = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.loop_starts += 1

    def loop_ready(self) -> bool:
        """Whether the latest start has passed its checks (keys, peers) and begun ticking."""
        log = (self.root / "settle-loop.log").read_text(errors="replace")
        return log.count(" started: quorum ") >= self.loop_starts

    def kill_loop(self) -> None:
        assert self.loop is not None
        os.killpg(self.loop.pid, signal.SIGKILL)
        self.loop.wait()
        self.loop = None

    def stop_loop(self) -> int:
        assert self.loop is not None
        self.loop.send_signal(signal.SIGTERM)
        code = self.loop.wait(timeout=60)
        self.loop = None
        return code

    def last_epoch(self, model_id: int) -> int:
        return int(self.client.call(self.contracts.settlement.functions.lastEpoch(model_id)))

    def close(self) -> None:
        if self.loop is not None:
            try:
                os.killpg(self.loop.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.loop.wait()
        self.devnet.stop()


def _unthrottled() -> dict[str, object]:
    """Serving settings without the per-consumer rate limit (the soak drives four consumers as fast
    as the server answers; rate limiting is the serving tests' subject). Empty where the serving
    package predates its settings."""
    try:
        from provenant.serving.settings import ServingSettings
    except ImportError:
        return {}
    return {"settings": ServingSettings(rate_per_s=1e9, rate_burst=10**9)}


def _contribution_files(root: Path) -> dict[str, list[Path]]:
    """Each Datanet's sample rows split into consecutive slices, 50 slices in all, by row share."""
    rows = {d: [line for f in files for line in (samples_dir() / f).read_text(encoding="utf-8").splitlines() if line]
            for d, files in SOURCES.items()}
    total = sum(len(r) for r in rows.values())
    counts = {d: max(1, round(CONTRIBUTORS * len(r) / total)) for d, r in rows.items()}
    counts["support-tickets"] += CONTRIBUTORS - sum(counts.values())
    out: dict[str, list[Path]] = {}
    for d, lines in rows.items():
        n = counts[d]
        out[d] = []
        for i in range(n):
            path = root / f"{d}-{i}.jsonl"
            path.write_text("\n".join(lines[i * len(lines) // n:(i + 1) * len(lines) // n]) + "\n", encoding="utf-8")
            out[d].append(path)
    return out


def build_soak_world(root: Path, calls_per_consumer_model: int) -> SoakWorld:
    cast = SoakCast.make()
    devnet = start_anvil(accounts=12 + CONSUMERS + CONTRIBUTORS, log_path=root / "anvil.log")
    client = ChainClient(devnet.rpc_url)
    home = root / "home"
    contracts = deploy_all(client, cast.admin, home, protocol_treasury=cast.treasury.address)
    store = open_store(str(home / "store"))
    settlement, token = contracts.settlement.functions, contracts.token.functions
    role = client.call(settlement.ATTRIBUTOR_ROLE())
    for attributor in cast.attributors:
        client.transact(cast.admin, settlement.grantRole(role, attributor.address))
    client.transact(cast.admin, settlement.setQuorum(2))

    spec = {d["name"]: d for d in json.loads((samples_dir() / "datanets.json").read_text())["datanets"]}
    datanets = DatanetService(client, contracts, store)
    skip = ("contributors", "curator_rejects", "used_by_demo_model")
    curators = {"support-tickets": [cast.curators[0], cast.curators[1]], "forum-posts": [cast.curators[2]],
                "product-faq": [cast.curators[0]]}
    ids: dict[str, int] = {}
    contributors = iter(cast.contributors)
    for name, files in _contribution_files(root).items():
        owner = curators[name][0]
        ids[name] = datanets.create(owner, {k: v for k, v in spec[name].items() if k not in skip},
                                    curators=[c.address for c in curators[name]])
        contributed = [datanets.contribute(next(contributors), ids[name], f).contribution_id for f in files]
        datanets.approve(owner, ids[name], contributed)

    factory = ModelFactory(client, contracts, store, datanets)
    models, prices = {}, {}
    for i, (name, used, seed) in enumerate(MODELS):
        price = 10**15 + 7_919 * (i + 1) + 1  # odd prices: rounding dust must appear and be carried
        built = factory.build(cast.builder, ModelRequest(
            name=name, datanet_ids=tuple(ids[d] for d in used), server=cast.server.address, price_per_call=price,
            base_model=TINY_ENCODER, settings=LoraSettings(epochs=1, max_length=32, seed=seed),
            index_settings=IndexSettings(projection_dim=64)))
        models[name], prices[built.model_id] = built.model_id, price
    deposits_in = 0
    for consumer in cast.consumers:
        need = sum(p * calls_per_consumer_model for p in prices.values())
        client.transact(cast.admin, token.transfer(consumer.address, need + 10**15))
        for model_id, price in prices.items():
            amount = price * calls_per_consumer_model + 12_345  # a remainder that is never spent
            deposit_with_permit(client, contracts, consumer, model_id, amount)
            deposits_in += amount
    queries = [json.loads(line)["text"] for line in (samples_dir() / "queries.jsonl").read_text().splitlines() if line]
    lean = LeanClient(devnet.rpc_url)
    service = ServingService(lean, Contracts.load(lean, home), store, cast.server, CallLog(root / "server-calls"),
                             **_unthrottled())
    return SoakWorld(devnet=devnet, client=client, contracts=contracts, root=root, cast=cast, models=models,
                     prices=prices, service=service, queries=queries, deposits_in=deposits_in)
