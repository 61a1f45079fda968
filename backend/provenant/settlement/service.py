"""`provenant settle-loop`: the SettlementLoop as a long-running service.

It watches every registered model (or the ones named), closes each model's epoch when the
EpochPolicy says so (paid calls counted, or the age of the oldest unsettled charge), gathers M of N
co-signatures from its configured peers, posts, and rechecks what it posted for reorgs.

Start-up refuses, naming the problem, when the service's key is missing or not registered, when a
peer's key is missing or its process refuses, or when the peers cannot reach the quorum. A node
that stops answering is retried (rpc.py); after `max_rpc_failures` consecutive failed ticks the
service stops with one line naming the endpoint.

Restarts are safe at any instant, kill -9 included: nothing that matters lives in this process.
Which calls an epoch holds follows from the chain and the call log (membership.py, keyed by call
id), the results document is canonical JSON, so a restarted service proposes the same CID and
root; a settlement already posted is simply no longer open. A reorg that drops a settlement
posted before a restart makes that epoch open again, and it is proposed afresh (same inputs,
same CID and root).

Peers are pluggable: a `PeerSpec.transport` names a factory in TRANSPORTS; "process" (the JSON
lines attributor worker, worker.py) is built in. Keys travel only in environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from provenant.settlement.membership import EpochPolicy

log = logging.getLogger("provenant.settlement")


class ServiceRefused(RuntimeError):
    """The service cannot start; the message names the problem (never a key)."""


@dataclass(frozen=True)
class PeerSpec:
    """One co-signer. `key_env` names the variable *in the service's environment* that holds the
    peer's key (handed to the peer process as PROVENANT_KEY, nowhere else)."""

    key_env: str
    calls: Path | None = None  # the peer's copy of the call log (default: the service's)
    transport: str = "process"
    command: tuple[str, ...] | None = None  # default: this Python running `provenant attributor-worker`
    name: str = ""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], index: int) -> "PeerSpec":
        unknown = set(raw) - {"key_env", "calls", "transport", "command", "name"}
        if unknown or "key_env" not in raw:
            raise ServiceRefused(f"peer {index} in the settle-loop config: needs key_env"
                                 + (f"; unknown fields {sorted(unknown)}" if unknown else ""))
        return cls(key_env=str(raw["key_env"]), calls=Path(raw["calls"]) if raw.get("calls") else None,
                   transport=str(raw.get("transport", "process")),
                   command=tuple(raw["command"]) if raw.get("command") else None,
                   name=str(raw.get("name") or f"peer-{index}"))


@dataclass(frozen=True)
class ServiceConfig:
    rpc_url: str
    home: Path
    calls: Path  # the proposer's (this service's) copy of the call log
    key_env: str = "PROVENANT_KEY"
    model_ids: tuple[int, ...] = ()  # empty: every registered model, re-read each tick
    policy: EpochPolicy = field(default_factory=EpochPolicy)
    peers: tuple[PeerSpec, ...] = ()
    interval_s: float = 5.0
    confirmations: int = 2
    max_rpc_failures: int = 3  # consecutive ticks that end in RpcUnavailable before giving up
    retry_after_s: float = 60.0  # a model whose quorum failed is proposed again after this
    max_ticks: int | None = None  # stop after this many ticks (tests, cron-style runs)

    @classmethod
    def load(cls, path: Path | None, **given: Any) -> "ServiceConfig":
        """A JSON config file (models, policy, peers, interval_s, confirmations, ...) overlaid by
        the options given on the command line (those that are not None)."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                raw = json.loads(Path(path).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ServiceRefused(f"settle-loop config {path} is not readable JSON: {exc}") from None
        values: dict[str, Any] = {}
        if "models" in raw:
            values["model_ids"] = tuple(int(m) for m in raw["models"])
        if "policy" in raw:
            values["policy"] = EpochPolicy(**{k: raw["policy"].get(k) for k in ("max_calls", "max_age_s")})
        if "peers" in raw:
            values["peers"] = tuple(PeerSpec.from_json(p, i + 1) for i, p in enumerate(raw["peers"]))
        for name in ("calls", "key_env", "interval_s", "confirmations", "max_rpc_failures", "retry_after_s",
                     "max_ticks"):
            if name in raw:
                values[name] = Path(raw[name]) if name == "calls" else raw[name]
        values.update({k: v for k, v in given.items() if v is not None})
        if "calls" not in values:
            values["calls"] = Path(values["home"]) / "calls"
        return cls(**values)


PeerFactory = Callable[[PeerSpec, ServiceConfig], Any]  # returns a started quorum.Peer
TRANSPORTS: dict[str, PeerFactory] = {}


def register_transport(name: str, factory: PeerFactory) -> None:
    TRANSPORTS[name] = factory


def _key_variables(config: ServiceConfig) -> set[str]:
    return {config.key_env, "PROVENANT_KEY", *(p.key_env for p in config.peers)}


def start_process_peer(spec: PeerSpec, config: ServiceConfig) -> Any:
    """An attributor worker process holding only its own key (every other key variable removed)."""
    from provenant.settlement.worker import ProcessPeer

    secret = os.environ.get(spec.key_env)
    if not secret:
        raise ServiceRefused(f"{spec.name}: environment variable {spec.key_env} (its key) is not set")
    env = {k: v for k, v in os.environ.items() if k not in _key_variables(config)}
    env["PROVENANT_KEY"] = secret
    calls = spec.calls or config.calls
    command = list(spec.command or (sys.executable, "-m", "provenant.cli", "attributor-worker",
                                    "--rpc-url", config.rpc_url, "--home", str(config.home), "--calls", str(calls)))
    logs = config.home / "settle-loop"
    logs.mkdir(parents=True, exist_ok=True)
    return ProcessPeer(command, env, logs / f"{spec.name}.log")


register_transport("process", start_process_peer)


class RestartingPeer:
    """A peer that is started again when its process has died (a crashed co-signer must not stop
    the service); requests are not retried blindly: a failed one surfaces as an error."""

    def __init__(self, spec: PeerSpec, config: ServiceConfig) -> None:
        if spec.transport not in TRANSPORTS:
            raise ServiceRefused(f"{spec.name}: unknown peer transport {spec.transport!r} "
                                 f"(known: {sorted(TRANSPORTS)})")
        self.spec, self.config = spec, config
        self.inner = TRANSPORTS[spec.transport](spec, config)

    def wait_ready(self) -> str:
        try:
            return str(self.inner.wait_ready()) if hasattr(self.inner, "wait_ready") else str(self.inner.address)
        except Exception as exc:  # noqa: BLE001 - named and re-raised as a refusal to start
            raise ServiceRefused(f"{self.spec.name}: {exc}") from None

    def _live(self) -> Any:
        process = getattr(self.inner, "process", None)
        if process is not None and process.poll() is not None:
            log.warning("%s exited (%s); starting it again", self.spec.name, process.returncode)
            self.inner = TRANSPORTS[self.spec.transport](self.spec, self.config)
            self.wait_ready()
        return self.inner

    @property
    def address(self) -> str:
        return str(self._live().address)

    def propose(self, model_id: int, upto_seq: int | None = None) -> Any:
        return self._live().propose(model_id, upto_seq)

    def cosign(self, proposal: Any) -> Any:
        return self._live().cosign(proposal)

    def post(self, proposal: Any, signatures: dict[str, bytes]) -> str:
        return str(self._live().post(proposal, signatures))

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


@dataclass
class TickReport:
    settled: list[tuple[int, int, str]]  # (model, epoch, results CID)
    actions: list[str]


class SettleService:
    """Start with `start()` (all the refusals happen there), then `run()` until stopped."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.loop: Any = None
        self.peers: list[RestartingPeer] = []
        self.stopping = threading.Event()

    def start(self) -> None:
        from provenant.chain.deploy import Contracts
        from provenant.chain.keys import KeyLoadError, account_from_env
        from provenant.settlement.roles import require_registered
        from provenant.settlement.rpc import connect, retrying

        c = self.config
        try:
            key = account_from_env(c.key_env)  # before any slow import: a missing key is named at once
        except KeyLoadError as exc:
            raise ServiceRefused(f"settle-loop key: {exc}") from None
        client = connect(c.rpc_url)
        contracts = Contracts.load(client, c.home)
        client.check_signer(key)
        require_registered(client, contracts, key.address)  # AttributorNotRegistered names the address
        quorum = int(retrying("reading the quorum", c.rpc_url,
                              lambda: client.call(contracts.settlement.functions.quorum())))
        if 1 + len(c.peers) < quorum:
            raise ServiceRefused(f"the quorum is {quorum} signatures but only {len(c.peers)} co-signing peer(s) "
                                 f"are configured besides this service's key")
        try:
            for i, spec in enumerate(c.peers):
                self.peers.append(RestartingPeer(replace(spec, name=spec.name or f"peer-{i + 1}"), c))
            with ThreadPoolExecutor(max(1, len(self.peers))) as pool:  # their imports overlap
                addresses = list(pool.map(lambda p: p.wait_ready(), self.peers))
        except ServiceRefused:
            self.close()  # the peers already started must not outlive the refusal
            raise
        if key.address in addresses or len(set(addresses)) != len(addresses):
            self.close()
            raise ServiceRefused("two attributors share a key: every peer needs its own")

        from provenant.serving.calllog import CallLog
        from provenant.settlement.attributor import Attributor
        from provenant.settlement.loop import SettlementLoop
        from provenant.settlement.quorum import LocalPeer
        from provenant.store import open_store

        store = open_store(os.environ.get("PROVENANT_STORE", str(c.home / "store")))
        proposer = LocalPeer(Attributor(client, contracts, store, key, CallLog(c.calls)))
        self.loop = SettlementLoop(client, contracts, store, proposer=proposer, peers=self.peers,
                                   call_log=CallLog(c.calls), policy=c.policy, confirmations=c.confirmations,
                                   retry_after_s=c.retry_after_s)
        log.info("settle-loop %s started: quorum %s, %s peer(s), policy %s", key.address, quorum, len(self.peers),
                 c.policy)

    def model_ids(self) -> list[int]:
        if self.config.model_ids:
            return list(self.config.model_ids)
        loop = self.loop
        count = int(loop.reader.call(loop.contracts.models.functions.modelCount(), "reading modelCount"))
        return list(range(1, count + 1))

    def tick(self) -> TickReport:
        done = self.loop.tick(self.model_ids())
        return TickReport([(s.proposal.attestation.model_id, s.proposal.attestation.epoch,
                            s.proposal.attestation.results_cid) for s in done], list(self.loop.last_actions))

    def run(self) -> int:
        """Tick every interval until stopped (or max_ticks); RpcUnavailable stops it after
        `max_rpc_failures` consecutive failed ticks by raising (one line at the CLI)."""
        from provenant.settlement.rpc import RpcUnavailable

        failures, ticks = 0, 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                report = self.tick()
                failures = 0
                for model_id, epoch, cid in report.settled:
                    log.info("settled model %s epoch %s: results %s", model_id, epoch, cid)
            except RpcUnavailable as exc:
                failures += 1
                if failures >= self.config.max_rpc_failures:
                    raise
                log.warning("tick failed (%s of %s allowed): %s", failures, self.config.max_rpc_failures, exc)
            ticks += 1
            if self.config.max_ticks is not None and ticks >= self.config.max_ticks:
                break
            self.stopping.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))
        return 0

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.peers))) as pool:
            list(pool.map(lambda p: p.close(), self.peers))


def run_service(config: ServiceConfig, install_signals: bool = True) -> int:
    """Start (or refuse), then run until SIGTERM/SIGINT; peers are closed on the way out."""
    import signal

    service = SettleService(config)
    service.start()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stopping.set())
    try:
        return service.run()
    finally:
        service.close()


__all__: Sequence[str] = ["PeerSpec", "RestartingPeer", "ServiceConfig", "ServiceRefused", "SettleService",
                          "TRANSPORTS", "TickReport", "register_transport", "run_service"]
