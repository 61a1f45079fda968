"""Datanet metadata and public content, for the web app.

- `GET /v1/datanets/{id}`: the on-chain record with its metadata document and contribution rules;
- `POST /v1/datanets/metadata` (signed-in): check a metadata document's rules and store it by CID,
  so that the creator's wallet can then call `createDatanet(cid, ...)`;
- `GET /v1/content/{cid}`: bytes from the content store, verified against the CID as they stream
  (contributions, metadata, manifests and epoch results are public by design: their CIDs are on chain).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from provenant.api.auth import Session
from provenant.chain.bindings import DatanetView, decode
from provenant.datanets.service import DatanetService, canonical_json, rules_from_metadata
from provenant.store.blockstore import ContentStore

CID_PATTERN = r"^b[a-z2-7]{20,100}$"  # CIDv1, base32 (what the store produces)


class DatanetMetadata(BaseModel):
    """What a Datanet says about itself; rules are checked before anything is stored."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=5_000)
    license: str = Field(default="", max_length=100)
    task: str = Field(default="classification", pattern="^(classification|text|prompt_completion)$")
    labels: list[str] = Field(default_factory=list, max_length=1_000)
    max_rows_per_file: int = Field(default=1_000, ge=1, le=1_000_000)
    max_bytes_per_file: int = Field(default=1_048_576, ge=1, le=1_073_741_824)


def create_datanets_router(service: DatanetService, store: ContentStore,
                           require_session: Callable[..., Session]) -> APIRouter:
    router = APIRouter(tags=["datanets"])

    @router.get("/v1/datanets/{datanet_id}", responses={404: {"description": "no such Datanet"}})
    def datanet(datanet_id: int) -> dict[str, Any]:
        """The Datanet's on-chain record, its metadata document and its contribution rules."""
        if datanet_id < 1 or datanet_id > service.count():
            raise HTTPException(404, f"no Datanet {datanet_id}")
        view = decode(DatanetView, service.client.call(service.contracts.datanets.functions.getDatanet(datanet_id)))
        info = service.get(datanet_id)
        return {"datanet_id": datanet_id, **{k: v for k, v in asdict(view).items()}, "metadata": info.metadata,
                "rules": {**asdict(info.rules), "labels": list(info.rules.labels)}}

    @router.post("/v1/datanets/metadata", status_code=201,
                 responses={401: {"description": "no SIWE session"}, 422: {"description": "unusable rules"}})
    def store_metadata(metadata: DatanetMetadata, session: Session = Depends(require_session)) -> dict[str, str]:
        """Store a new Datanet's metadata by CID; the creator's wallet then calls createDatanet."""
        document = metadata.model_dump()
        try:
            rules_from_metadata(document)
        except ValueError as exc:
            raise HTTPException(422, f"metadata rules: {exc}") from None
        return {"cid": store.put(canonical_json(document)), "by": session.address}

    @router.get("/v1/content/{cid}", response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "not stored here"}})
    def content(cid: str = Path(pattern=CID_PATTERN, description="a CIDv1 in base32")) -> StreamingResponse:
        """Public content by CID, checked against the CID block by block as it is read."""
        try:
            present = store.has(cid)
        except ValueError:  # base32 of the right shape that is no CID: nothing of ours has it
            present = False
        if not present:
            raise HTTPException(404, f"{cid} is not in this store")
        stream = getattr(store, "iter_content", None)  # the local blockstore streams; others return bytes
        return StreamingResponse(stream(cid) if stream else iter([store.get(cid)]), media_type="application/octet-stream")

    return router
