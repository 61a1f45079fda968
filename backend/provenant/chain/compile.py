"""Compile contracts/src with the repository's solc-js front (scripts/solc).

forge, Hardhat and this module use the same compiler (npm `solc`, pinned in package.json) and
the same settings (read from foundry.toml, the one place they are written), so the bytecode the
Python side deploys is the bytecode the forge tests exercised. Artifacts are cached under
build/artifacts keyed by a hash of every source and the settings; nothing is committed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from provenant.paths import build_dir, repo_root

CONTRACT_NAMES = (
    "ProvenantToken",
    "DatanetRegistry",
    "ModelRegistry",
    "UsageEscrow",
    "AttributionSettlement",
    "AgentRegistry",  # ERC-8004 identity for agents (backend/provenant/agents/)
    "X402Vaults",  # x402 payments into the models' fees through per-model CREATE2 vaults
    "RoyaltyRouter",  # agents' royalties routed into the models' fees
)


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict]
    bytecode: str  # 0x-prefixed creation code


class CompileError(RuntimeError):
    """The compiler rejected the sources; the message holds its first errors."""


def compiler_settings() -> dict:
    """Optimizer and EVM version, read from foundry.toml so every toolchain agrees."""
    profile = tomllib.loads((repo_root() / "foundry.toml").read_text())["profile"]["default"]
    return {
        "optimizer": {"enabled": bool(profile.get("optimizer", True)), "runs": int(profile.get("optimizer_runs", 200))},
        "evmVersion": profile["evm_version"],
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
    }


def _sources() -> dict[str, dict]:
    src = repo_root() / "contracts" / "src"
    return {
        f"contracts/src/{path.name}": {"content": path.read_text()}
        for path in sorted(src.glob("*.sol"))
    }


def compile_contracts(force: bool = False) -> dict[str, Artifact]:
    """Compile (or load from the cache) every contract the backend deploys."""
    sources = _sources()
    settings = compiler_settings()
    standard_input = {"language": "Solidity", "sources": sources, "settings": {**settings, "remappings": [
        "@openzeppelin/=node_modules/@openzeppelin/"
    ]}}
    keyed = {"input": standard_input, "contracts": CONTRACT_NAMES}  # a new contract name is a new cache entry
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    cache = build_dir() / "artifacts" / f"{key}.json"
    if cache.exists() and not force:
        raw = json.loads(cache.read_text())
    else:
        raw = _run_solc(standard_input)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw))
        tmp.replace(cache)
    return {name: Artifact(name=name, abi=raw[name]["abi"], bytecode=raw[name]["bytecode"]) for name in CONTRACT_NAMES}


def _run_solc(standard_input: dict) -> dict[str, dict]:
    front = repo_root() / "scripts" / "solc"
    proc = subprocess.run(
        ["node", str(front), "--standard-json"],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        cwd=repo_root(),
        check=False,
    )
    if proc.returncode != 0:
        raise CompileError(f"solc front failed: {proc.stderr.strip()[:500]}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("; ".join(e.get("formattedMessage", e.get("message", "")) for e in errors[:3]))
    compiled: dict[str, dict] = {}
    for file_name, contracts in output["contracts"].items():
        for name, data in contracts.items():
            if name in CONTRACT_NAMES and file_name.startswith("contracts/src/"):
                compiled[name] = {"abi": data["abi"], "bytecode": "0x" + data["evm"]["bytecode"]["object"]}
    missing = set(CONTRACT_NAMES) - set(compiled)
    if missing:
        raise CompileError(f"compiler output lacks {sorted(missing)}")
    return compiled
