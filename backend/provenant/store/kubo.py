"""A content store backed by a kubo (go-ipfs) node, through its documented HTTP RPC.

The node is a convenience for pinning and serving, never an authority: every CID it reports is
recomputed locally (provenant.store.cid) and every byte it returns is re-hashed, and any
disagreement raises ContentIntegrityError instead of being trusted.

We speak the RPC directly (POST /api/v0/add, /cat, /pin/add, /pin/ls) because `ipfshttpclient`
only talks to go-ipfs <= 0.8. The import options are spelled out on every add rather than left
to the node's config (`Import.*` can change kubo's defaults), so that its CIDs are the ones we
compute; a node configured to differ anyway (e.g. Import.UnixFSFileMaxLinks) is refused.

Tested against a loopback stand-in that implements these endpoints over LocalBlockstore
(tests/test_store.py), not against a real kubo daemon, which cannot be installed where this
was written. Reading verifies by recomputing the CID of what /cat returns, so only content
imported with these settings (all of Provenant's) can be read back through this class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import httpx

from provenant.store.blockstore import ContentIntegrityError, ContentNotFoundError, ContentStoreUnavailable
from provenant.store.cid import CHUNK_SIZE, cid_for_bytes, cid_for_stream, parse_cid

# Exactly `ipfs add --cid-version=1 --raw-leaves`, with kubo's default chunker and hash pinned.
_ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{CHUNK_SIZE}",
    "hash": "sha2-256",
    "pin": "true",
}


class KuboStore:
    """ContentStore on a kubo node's RPC API, e.g. KuboStore("http://127.0.0.1:5001")."""

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,  # e.g. Authorization for API.Authorizations
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(
            base_url=f"{self.api_url}/api/v0", timeout=timeout, headers=dict(headers or {}), transport=transport
        )

    def __repr__(self) -> str:
        return f"KuboStore({self.api_url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KuboStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ContentStore -------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        expected = cid_for_bytes(data)
        answer = self._post("add", params=_ADD_PARAMS, files={"file": ("blob", data, "application/octet-stream")})
        return self._check_added(expected, answer)

    def put_file(self, path: str | os.PathLike[str]) -> str:
        # Two streaming passes (hash locally, then upload): memory stays at a chunk or so.
        with open(path, "rb") as stream:
            expected = cid_for_stream(stream)
        with open(path, "rb") as stream:
            answer = self._post(
                "add",
                params=_ADD_PARAMS,
                files={"file": (os.path.basename(path), stream, "application/octet-stream")},
            )
        return self._check_added(expected, answer)

    def get(self, cid: str) -> bytes:
        wanted = str(parse_cid(cid))
        response = self._post("cat", params={"arg": wanted}, missing=wanted)
        data = response.content
        got = cid_for_bytes(data)
        if got != wanted:
            raise ContentIntegrityError(wanted, f"kubo at {self.api_url} returned {len(data)} bytes that hash to {got}")
        return data

    def has(self, cid: str) -> bool:
        """Whether the node keeps this content pinned (recursively), i.e. will not drop it."""
        wanted = str(parse_cid(cid))
        try:
            answer = self._json(self._post("pin/ls", params={"arg": wanted, "type": "recursive"}, missing=wanted))
        except ContentNotFoundError:
            return False
        return any(str(parse_cid(key)) == wanted for key in answer.get("Keys", {}))

    def pin(self, cid: str) -> None:
        """Pin content already on (or reachable by) the node, e.g. content someone else added."""
        wanted = str(parse_cid(cid))
        answer = self._json(self._post("pin/add", params={"arg": wanted, "recursive": "true"}, missing=wanted))
        pinned = {str(parse_cid(p)) for p in answer.get("Pins", [])}
        if wanted not in pinned:
            raise ContentIntegrityError(wanted, f"kubo at {self.api_url} answered pin/add with {sorted(pinned)}")

    # -- RPC plumbing -------------------------------------------------------------------
    def _check_added(self, expected: str, response: httpx.Response) -> str:
        # /add streams one JSON object per line (per file, plus progress when asked); ours is the last.
        lines = [line for line in response.text.splitlines() if line.strip()]
        try:
            last = json.loads(lines[-1]) if lines else {}
        except ValueError:
            last = {}
        if not isinstance(last, dict) or "Hash" not in last:  # e.g. an error object streamed mid-add
            detail = (last.get("Message") if isinstance(last, dict) else None) or response.text[:200]
            raise ContentStoreUnavailable(self.api_url, f"/api/v0/add returned no CID ({detail!r})")
        reported = str(last["Hash"])
        try:
            reported_cid = str(parse_cid(reported))
        except ValueError:
            reported_cid = reported
        if reported_cid != expected:
            raise ContentIntegrityError(
                expected, f"kubo at {self.api_url} reported CID {reported!r} for it; refusing to record that"
            )
        return expected

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            answer = response.json()
        except ValueError:
            raise ContentStoreUnavailable(self.api_url, "answered with something that is not JSON") from None
        return answer if isinstance(answer, dict) else {}

    def _post(self, command: str, *, missing: str | None = None, **kwargs: Any) -> httpx.Response:
        """POST (the RPC refuses GET) and turn transport failures and RPC errors into ours."""
        try:
            response = self._client.post(f"/{command}", **kwargs)
        except httpx.TimeoutException as exc:
            if missing is not None:  # an online node looks for an unknown CID until we give up
                raise ContentNotFoundError(missing, f"kubo at {self.api_url} did not find it in time") from exc
            raise ContentStoreUnavailable(self.api_url, f"timed out on /api/v0/{command}") from exc
        except httpx.TransportError as exc:
            raise ContentStoreUnavailable(self.api_url, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 200:
            return response
        message = _rpc_message(response)
        if missing is not None and response.status_code == 500 and _means_missing(message):
            raise ContentNotFoundError(missing, f"kubo at {self.api_url}: {message}")
        raise ContentStoreUnavailable(self.api_url, f"/api/v0/{command} answered {response.status_code}: {message}")


def _rpc_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("Message", response.text))  # kubo's {"Message", "Code", "Type"}
    except ValueError:
        return response.text.strip()[:200]


def _means_missing(message: str) -> bool:
    lowered = message.lower()
    return any(s in lowered for s in ("not found", "not pinned", "no link named", "block was not found"))
