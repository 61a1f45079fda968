"""What the indexer needs to know: the endpoint, the contracts, and its tuning knobs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Contracts the deployment manifest names outside `addresses` (manifest field -> contract name; see
# provenant.chain.deploy.DeploymentManifest): kept out so that older readers of `addresses` keep
# working. An empty or absent field (a deployment made before the contract existed) is skipped.
MANIFEST_EXTRAS: dict[str, str] = {
    "agent_registry": "AgentRegistry",
    "x402_vaults": "X402Vaults",
    "royalty_router": "RoyaltyRouter",
}


@dataclass(frozen=True)
class IndexerConfig:
    rpc_url: str
    addresses: Mapping[str, str]  # contract name -> address (the names of compile.CONTRACT_NAMES)
    start_block: int  # the deployment block: no project event can be older
    finality_depth: int = 64  # the deepest reorg that is rolled back; deeper ones halt the indexer
    range_start: int = 2_000  # first eth_getLogs range, in blocks
    range_max: int = 2_000  # ranges grow back up to this after successes
    confirmations: int = 0  # blocks behind the head left unindexed (0: index the head; reorgs are handled)
    poll_interval: float = 1.0  # seconds between polls once caught up
    stall_polls: int = 10  # polls without progress, while the chain is ahead, that count as a stall
    prefetch: bool = True  # fetch the next range while the current one is written
    # After a batch of at least this many events (a backfill) the next one is not fetched in a
    # thread: on a local node the fetch is CPU work, and a thread beside the writes costs more
    # than it overlaps (the GIL; measured in bench/RESULTS.md). It is fetched in-line, or, with
    # `fetch_process`, fetched and decoded in a second process (pipeline.py): worth it where the
    # node is remote (the transfer is waiting, not work) or cores are idle.
    large_batch_events: int = 5_000
    fetch_process: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.finality_depth < 1:
            raise ValueError("finality_depth must be at least 1")
        if self.start_block < 0:
            raise ValueError("start_block must not be negative")

    @classmethod
    def from_manifest(cls, rpc_url: str, manifest: Path | Mapping[str, Any], **overrides: Any) -> "IndexerConfig":
        """From a deployment manifest (provenant.chain.deploy writes <home>/deployments/<chain id>.json)."""
        data = json.loads(Path(manifest).read_text()) if isinstance(manifest, (str, Path)) else dict(manifest)
        return cls(rpc_url=rpc_url, addresses=manifest_addresses(data), start_block=int(data["block_number"]),
                   **overrides)

    def contracts_key(self) -> str:
        """The indexed addresses as the checkpoint records them (sorted, lowercase, comma-separated)."""
        return ",".join(sorted(a.lower() for a in self.addresses.values()))


def manifest_addresses(data: Mapping[str, Any]) -> dict[str, str]:
    """Contract name -> address: `addresses` plus the contracts named outside it."""
    named = dict(data["addresses"])
    for field_name, contract in MANIFEST_EXTRAS.items():
        address = data.get(field_name)
        if address:
            if contract in named and named[contract].lower() != str(address).lower():
                raise ValueError(f"the manifest names {contract} twice, at {named[contract]} and {address}")
            named[contract] = str(address)
    return named
