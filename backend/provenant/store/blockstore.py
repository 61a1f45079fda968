"""Content stores addressed by IPFS CIDs, and a local one that keeps each block as a file.

Every read is verified: a store hands back bytes only after hashing each block against the CID
that names it, because the whole point of recording CIDs on chain is that nobody (a disk, a
backup, a remote IPFS node) can swap the content under them unnoticed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from provenant.store.cid import (
    Block,
    BlockRef,
    chunk_bytes,
    chunk_stream,
    decode_file_node,
    iter_dag_blocks,
    parse_cid,
)


class ContentError(RuntimeError):
    """Any content-store failure; the message is one line meant for a person."""


class ContentNotFoundError(ContentError, LookupError):
    """The store has no content (or is missing a block) under this CID."""

    def __init__(self, cid: str, detail: str = "") -> None:
        super().__init__(f"no content stored under CID {cid}" + (f" ({detail})" if detail else ""))
        self.cid = cid


class ContentIntegrityError(ContentError):
    """The bytes a store holds or returns do not hash to the CID that names them."""

    def __init__(self, cid: str, detail: str) -> None:
        super().__init__(f"content under CID {cid} failed verification: {detail}")
        self.cid = cid


class ContentStoreUnavailable(ContentError):
    """The store cannot be reached (a remote node that is down or refuses connections)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"content store at {url} is unavailable: {detail}")
        self.url = url


@runtime_checkable
class ContentStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store the bytes; return their CID (CIDv1 base32, as `ipfs add --cid-version=1 --raw-leaves`)."""
        ...

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file's content without reading it whole into memory; return its CID."""
        ...

    def get(self, cid: str) -> bytes:
        """The verified content; ContentNotFoundError, ContentIntegrityError, ValueError (bad CID)."""
        ...

    def has(self, cid: str) -> bool: ...


class LocalBlockstore:
    """Blocks as files under `root`, sharded like kubo's flatfs (`next-to-last/2`).

    Blocks are written children first and the root last, each atomically (temp file, fsync,
    os.replace), so a crash leaves at worst some orphan blocks and `.tmp-*` files, never a
    partial block under a real name nor a root whose children are missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlockstore({str(self.root)!r})"

    # -- writing ------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        return self._put_blocks(iter_dag_blocks(chunk_bytes(bytes(data))))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        # At most one chunk is in memory at a time: each leaf is written as soon as it is read.
        with open(path, "rb") as stream:
            return self._put_blocks(iter_dag_blocks(chunk_stream(stream)))

    def _put_blocks(self, blocks: Iterator[Block]) -> str:
        last = None
        for last in blocks:
            self._write(last)
        assert last is not None
        return last.cid

    def _write(self, block: Block) -> None:
        path = self._path(block.cid)
        if path.exists():
            try:
                if path.read_bytes() == block.data:
                    return
            except OSError:
                pass
            # A damaged copy: writing the good bytes again repairs it.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(block.data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- reading ------------------------------------------------------------------------
    def has(self, cid: str) -> bool:
        # The root is written last, so its presence means the whole DAG was stored.
        return self._path(str(parse_cid(cid))).is_file()

    def get(self, cid: str) -> bytes:
        # Joined only after every block verified: a caller never sees part of bad content.
        return b"".join(self.iter_content(cid))

    def iter_content(self, cid: str) -> Iterator[bytes]:
        """The content chunk by chunk, each block verified before its bytes are yielded.

        For streaming large content; on ContentIntegrityError the caller must discard what it
        already received.
        """
        root = parse_cid(cid)
        yield from self._iter_block(root, str(root))

    def _iter_block(self, ref: BlockRef, root: str) -> Iterator[bytes]:
        data = self._read_verified(ref, root)
        if ref.codec_name == "raw":
            yield data
            return
        try:
            node = decode_file_node(data)
        except ValueError as exc:
            raise ContentIntegrityError(root, f"block {ref} is not a UnixFS file node: {exc}") from None
        produced = len(node.data)
        if node.data:
            yield node.data
        for child in node.links:
            for piece in self._iter_block(child, root):
                produced += len(piece)
                yield piece
        if node.filesize is not None and produced != node.filesize:
            raise ContentIntegrityError(
                root, f"node {ref} declares {node.filesize} bytes but its blocks hold {produced}"
            )

    def _read_verified(self, ref: BlockRef, root: str) -> bytes:
        cid = str(ref)
        try:
            data = self._path(cid).read_bytes()
        except FileNotFoundError:
            if cid == root:
                raise ContentNotFoundError(cid) from None
            raise ContentNotFoundError(root, f"block {cid} of its DAG is missing") from None
        if not ref.matches(data):
            where = "" if cid == root else f" (block {cid} of its DAG)"
            raise ContentIntegrityError(root, f"stored bytes do not hash to the CID{where}")
        return data

    def _path(self, cid: str) -> Path:
        return self.root / cid[-3:-1] / cid
