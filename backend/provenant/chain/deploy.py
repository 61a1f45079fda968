"""Deploying the contracts and remembering where they are: one manifest per chain id.

The manifest (<home>/deployments/<chain id>.json) is what every later command reads to find
the contracts. Deploying twice onto a chain that already holds a deployment is refused (it
would orphan every record made against the first one); on a fresh devnet whose previous
manifest points at addresses with no code, the stale manifest is replaced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from provenant.chain.bindings import check_bindings
from provenant.chain.client import ChainClient, ChainError
from provenant.chain.compile import Artifact, compile_contracts

DEFAULT_SPLIT_BPS = {"protocol": 500, "owner": 1500, "curators": 1000, "contributors": 7000}
TOKEN_SUPPLY_WEI = 1_000_000_000 * 10**18
AGENT_REGISTRY = "AgentRegistry"
X402_VAULTS = "X402Vaults"
ROYALTY_ROUTER = "RoyaltyRouter"


class AlreadyDeployed(ChainError):
    """A deployment manifest for this chain already points at live contracts."""


class NotDeployed(ChainError):
    """No deployment manifest for this chain."""


@dataclass(frozen=True)
class DeploymentManifest:
    chain_id: int
    deployer: str
    block_number: int
    addresses: dict[str, str]  # contract name -> checksum address
    # The ERC-8004 AgentRegistry, kept out of `addresses` so that every consumer that maps those
    # names to compiled ABIs (the indexer, the API) keeps working unchanged; "" before agents existed.
    agent_registry: str = ""
    # x402 vaults and the royalty router, kept out of `addresses` for the same reason; "" before
    # they existed.
    x402_vaults: str = ""
    royalty_router: str = ""

    def extras(self) -> dict[str, str]:
        """The contracts kept out of `addresses`, by name (only those deployed)."""
        named = {AGENT_REGISTRY: self.agent_registry, X402_VAULTS: self.x402_vaults,
                 ROYALTY_ROUTER: self.royalty_router}
        return {name: address for name, address in named.items() if address}

    @staticmethod
    def path_for(home: Path, chain_id: int) -> Path:
        return Path(home) / "deployments" / f"{chain_id}.json"

    def save(self, home: Path) -> Path:
        path = self.path_for(home, self.chain_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, home: Path, chain_id: int) -> "DeploymentManifest":
        path = cls.path_for(home, chain_id)
        if not path.exists():
            raise NotDeployed(f"no deployment for chain id {chain_id} in {path.parent}: run `provenant deploy` first")
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class Contracts:
    """The deployed contracts as web3 objects, plus their artifacts."""

    token: Contract
    datanets: Contract
    models: Contract
    escrow: Contract
    settlement: Contract
    manifest: DeploymentManifest
    # The ERC-8004 agent registry; None for a deployment made before it existed.
    agents: Contract | None = None
    # x402 vaults (X402Vaults) and the royalty router; None for a deployment made before them.
    x402: Contract | None = None
    royalties: Contract | None = None

    @classmethod
    def attach(cls, client: ChainClient, manifest: DeploymentManifest) -> "Contracts":
        artifacts = compile_contracts()
        check_bindings(artifacts)
        named = {**manifest.addresses, **manifest.extras()}
        client.register_abis({n: a.abi for n, a in artifacts.items()}, named)

        def extra(name: str, address: str) -> Contract | None:
            return client.w3.eth.contract(address=address, abi=artifacts[name].abi) if address else None

        def at(name: str) -> Contract:
            return client.w3.eth.contract(address=manifest.addresses[name], abi=artifacts[name].abi)

        return cls(
            token=at("ProvenantToken"),
            datanets=at("DatanetRegistry"),
            models=at("ModelRegistry"),
            escrow=at("UsageEscrow"),
            settlement=at("AttributionSettlement"),
            manifest=manifest,
            agents=extra(AGENT_REGISTRY, manifest.agent_registry),
            x402=extra(X402_VAULTS, manifest.x402_vaults),
            royalties=extra(ROYALTY_ROUTER, manifest.royalty_router),
        )

    @classmethod
    def load(cls, client: ChainClient, home: Path) -> "Contracts":
        return cls.attach(client, DeploymentManifest.load(home, client.chain_id))


def _has_live_deployment(client: ChainClient, home: Path) -> DeploymentManifest | None:
    try:
        manifest = DeploymentManifest.load(home, client.chain_id)
    except NotDeployed:
        return None
    token = manifest.addresses.get("ProvenantToken")
    if token and client.w3.eth.get_code(Web3.to_checksum_address(token)):
        return manifest
    return None  # stale: the devnet was restarted


def deploy_all(
    client: ChainClient,
    deployer: LocalAccount,
    home: Path,
    *,
    protocol_treasury: str | None = None,
    split_bps: dict[str, int] | None = None,
    withdraw_delay: int = 86_400,
    split_delay: int = 2 * 86_400,
) -> Contracts:
    """Compile and deploy the five contracts, wire them, deploy the agent registry, the x402 vaults and the
    royalty router, and write the manifest."""
    client.check_signer(deployer)
    live = _has_live_deployment(client, home)
    if live is not None:
        raise AlreadyDeployed(
            f"chain id {client.chain_id} already has a deployment (token at {live.addresses['ProvenantToken']}, "
            f"manifest {DeploymentManifest.path_for(home, client.chain_id)}): refusing to deploy again"
        )
    artifacts: dict[str, Artifact] = compile_contracts()
    client.register_abis({n: a.abi for n, a in artifacts.items()}, {})
    split = split_bps or DEFAULT_SPLIT_BPS
    admin = deployer.address

    def deploy(name: str, *args: object) -> str:
        address, _ = client.deploy(deployer, artifacts[name].abi, artifacts[name].bytecode, *args)
        return address

    start_block = client.w3.eth.block_number
    token = deploy("ProvenantToken", admin, TOKEN_SUPPLY_WEI)
    datanets = deploy("DatanetRegistry", token, admin)
    models = deploy("ModelRegistry", datanets, admin)
    escrow = deploy("UsageEscrow", token, models, withdraw_delay, admin)
    settlement = deploy(
        "AttributionSettlement",
        token,
        escrow,
        admin,
        protocol_treasury or admin,
        (split["protocol"], split["owner"], split["curators"], split["contributors"]),
        split_delay,
    )
    manifest = DeploymentManifest(
        chain_id=client.chain_id,
        deployer=admin,
        block_number=start_block,
        addresses={
            "ProvenantToken": token,
            "DatanetRegistry": datanets,
            "ModelRegistry": models,
            "UsageEscrow": escrow,
            "AttributionSettlement": settlement,
        },
    )
    contracts = Contracts.attach(client, manifest)
    client.transact(deployer, contracts.escrow.functions.setSettlement(settlement))
    # Deployed last, so the five contracts above keep the addresses they always had.
    agents = deploy(AGENT_REGISTRY)
    x402_vaults = deploy(X402_VAULTS, token, escrow)
    royalty_router = deploy(ROYALTY_ROUTER, token, escrow, agents)
    manifest = DeploymentManifest(chain_id=manifest.chain_id, deployer=manifest.deployer,
                                  block_number=manifest.block_number,
                                  addresses=manifest.addresses, agent_registry=agents,
                                  x402_vaults=x402_vaults, royalty_router=royalty_router)
    contracts = Contracts.attach(client, manifest)
    manifest.save(home)
    return contracts
