"""Contribution uploads: the file a contributor will record on chain, checked and stored first.

`POST /v1/datanets/{id}/uploads` takes the JSONL file as the raw request body (Content-Type
application/x-ndjson, application/jsonl, text/plain or application/octet-stream; the file's
name in `X-Filename`). The body is streamed to a temporary file and cut off at the Datanet's
byte limit, so no upload is ever held whole in memory or written past the limit; then it is
validated line by line against the Datanet's rules and stored by CID. The answer carries what
the wallet then passes to `DatanetRegistry.contribute` (content hash, CID, size, row count),
and the rows that repeat, exactly or nearly, the Datanet's pending and approved rows.

Refused with 4xx and a message naming the problem, before anything is stored: no session
(401), an unknown Datanet (404), a caller not allow-listed on an allow-listed Datanet (403),
multipart or compressed or other media types (415), a declared or actual size over the limit
(413), a file name with a path, control characters or over 255 bytes (400), and any content the
rules refuse (422, with the line and the problem).
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from provenant.api.auth import Session
from provenant.datanets.duplicates import DuplicateIndex
from provenant.datanets.service import DatanetInfo
from provenant.datanets.validation import ContributionError, validate_contribution
from provenant.store.blockstore import ContentStore

ACCEPTED_TYPES = {"application/x-ndjson", "application/jsonl", "application/jsonlines", "application/json-lines",
                  "text/plain", "application/octet-stream", ""}
CHUNK = 64 * 1024


@dataclass(frozen=True)
class UploadDeps:
    """What the router needs from the chain and the store (kept narrow so tests pass real ones)."""

    datanet: Callable[[int], DatanetInfo | None]  # None when the Datanet does not exist
    may_contribute: Callable[[int, str], bool]  # (datanet id, address) -> allowed by chain state
    duplicates: Callable[[int], DuplicateIndex]  # the Datanet's pending and approved rows
    store: ContentStore
    spool_dir: Path  # where bodies are streamed before validation (same disk as the store)


class UploadOut(BaseModel):
    datanet_id: int
    file: str
    cid: str
    content_hash: str  # 0x sha256 of the bytes, what `contribute` takes
    size: int
    row_count: int
    contributor: str
    duplicates: list[dict[str, Any]]  # exact and near repeats, for the curators; not a refusal


def checked_file_name(raw: str | None) -> str:
    """The uploaded file's name, for messages only (never used as a path), or 400."""
    if raw is None or raw == "":
        return "upload.jsonl"
    if len(raw.encode("utf-8", "surrogatepass")) > 255:
        raise HTTPException(400, "file name is longer than 255 bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in raw):
        raise HTTPException(400, "file name contains control or format characters")
    if "/" in raw or "\\" in raw or raw in (".", "..") or raw.startswith(".."):
        raise HTTPException(400, f"file name {raw!r} contains a path; send the bare file name")
    return raw


def _check_headers(request: Request, limit: int) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media.startswith("multipart/"):
        raise HTTPException(415, "send the file as the raw request body (Content-Type: application/x-ndjson), "
                                 "not as multipart/form-data")
    if media not in ACCEPTED_TYPES:
        raise HTTPException(415, f"Content-Type {media!r} is not a JSONL file; use application/x-ndjson")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPException(415, f"compressed uploads ({encoding}) are not accepted; send the file as it is")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPException(413, f"file is {declared} bytes, over this Datanet's limit of {limit} bytes")


async def _spool(request: Request, spool_dir: Path, limit: int) -> Path:
    """Stream the body into a new temporary file, stopping as soon as it passes `limit` bytes."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".jsonl", dir=spool_dir)
    path = Path(name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit:
                    raise HTTPException(413, f"file is over this Datanet's limit of {limit} bytes "
                                             f"(stopped reading at byte {written})")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def create_uploads_router(deps: UploadDeps, require_session: Callable[..., Session]) -> APIRouter:
    router = APIRouter(prefix="/v1/datanets", tags=["datanets"])

    # The body is read as a stream (never parsed into memory by the framework), so its schema is
    # declared here for the OpenAPI document rather than inferred from a parameter.
    body_schema = {"type": "string", "format": "binary", "description": "the JSONL file, as it is"}
    request_body = {"required": True, "content": {t: {"schema": body_schema} for t in (
        "application/x-ndjson", "application/jsonl", "text/plain", "application/octet-stream")}}

    @router.post("/{datanet_id}/uploads", response_model=UploadOut, status_code=201,
                 openapi_extra={"requestBody": request_body, "parameters": [
                     {"name": "X-Filename", "in": "header", "required": False, "schema": {"type": "string"},
                      "description": "the file's name, shown in messages"}]},
                 responses={s: {"description": d} for s, d in (
                     (400, "bad file name or header"), (401, "no SIWE session"), (403, "not allowed to contribute"),
                     (404, "unknown Datanet"),
                     (413, "over the size limit"), (415, "wrong media type"), (422, "the rules refuse the file"))})
    async def upload(datanet_id: int, request: Request, session: Session = Depends(require_session)) -> Any:
        """Validate and store a contribution file; the wallet then records it with `contribute`."""
        shown = checked_file_name(request.headers.get("x-filename"))
        if datanet_id < 1:
            raise HTTPException(404, f"no Datanet {datanet_id}")
        datanet = deps.datanet(datanet_id)
        if datanet is None:
            raise HTTPException(404, f"no Datanet {datanet_id}")
        if not deps.may_contribute(datanet_id, session.address):
            raise HTTPException(403, f"{session.address} is not on Datanet {datanet_id}'s contributor allow-list")
        rules = datanet.rules
        _check_headers(request, rules.max_bytes)
        path = await _spool(request, deps.spool_dir, rules.max_bytes)
        try:
            try:
                checked = validate_contribution(path, rules, name=shown)
            except ContributionError as exc:
                raise HTTPException(422, {"file": shown, "errors": [{"line": exc.line, "problem": exc.problem}],
                                          "message": str(exc)}) from None
            cid = deps.store.put_file(path)
        finally:
            path.unlink(missing_ok=True)
        flags = [f.to_json() for f in deps.duplicates(datanet_id).check(checked.rows)]
        return UploadOut(datanet_id=datanet_id, file=shown, cid=cid, content_hash="0x" + checked.sha256,
                         size=checked.size, row_count=len(checked.rows), contributor=session.address,
                         duplicates=flags)

    return router
