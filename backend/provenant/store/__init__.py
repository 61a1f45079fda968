"""Content-addressed storage: CIDs computed locally, content verified on every read.

`open_store("http://127.0.0.1:5001")` talks to a kubo node; `open_store("/var/lib/provenant/blocks")`
keeps blocks on local disk. Both return CIDs identical to `ipfs add --cid-version=1 --raw-leaves`.
"""

from __future__ import annotations

from pathlib import Path

from provenant.store.blockstore import (
    ContentError,
    ContentIntegrityError,
    ContentNotFoundError,
    ContentStore,
    ContentStoreUnavailable,
    LocalBlockstore,
)
from provenant.store.cid import cid_for_bytes, dag_blocks, sha256_hex
from provenant.store.kubo import KuboStore

__all__ = [
    "ContentError",
    "ContentIntegrityError",
    "ContentNotFoundError",
    "ContentStore",
    "ContentStoreUnavailable",
    "KuboStore",
    "LocalBlockstore",
    "cid_for_bytes",
    "dag_blocks",
    "open_store",
    "sha256_hex",
]


def open_store(url_or_path: str) -> ContentStore:
    """An http(s):// URL selects a kubo RPC endpoint; anything else is a local blockstore directory."""
    if url_or_path.startswith(("http://", "https://")):
        return KuboStore(url_or_path)
    return LocalBlockstore(Path(url_or_path).expanduser())
