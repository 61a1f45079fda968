"""Where the repository's non-Python parts live (contracts, node tools, build output)."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root: $PROVENANT_ROOT, else the folder above `backend/`."""
    override = os.environ.get("PROVENANT_ROOT")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


def node_bin(tool: str) -> Path:
    """A node tool installed by the README's commands (anvil, forge, hardhat)."""
    path = repo_root() / "node_modules" / ".bin" / tool
    if not path.exists():
        raise FileNotFoundError(f"{tool} is not installed at {path}: run `make setup` first")
    return path


def build_dir() -> Path:
    path = repo_root() / "build"
    path.mkdir(parents=True, exist_ok=True)
    return path
