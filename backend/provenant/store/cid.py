"""IPFS CIDs computed locally, byte for byte what `ipfs add --cid-version=1 --raw-leaves` gives.

We never trust a remote node to tell us what a CID is: every CID recorded on chain is one we
computed here, so this module reproduces kubo's importer at its defaults:

* the content is cut into fixed 256 KiB (262,144-byte) chunks; each chunk is a `raw` block;
* content of one chunk (the empty file included) is that raw block itself;
* above that, a balanced DAG of dag-pb UnixFS `File` nodes, at most 174 links per node: the
  leaves are grouped 174 at a time, those groups 174 at a time, and so on up to one root;
* CIDv1, base32, sha2-256 throughout.

dag-pb's canonical encoding writes the Links (field 2) before Data (field 1). Each PBLink holds
Hash=1, Name=2 (present and empty, as kubo and the JS importer both write it), Tsize=3 (the
cumulative byte size of the child's DAG). UnixFS Data holds Type=1 (File=2), filesize=3 and one
blocksizes=4 entry per child (the file bytes under that child), never packed. The protobuf is
hand-written because these few fields are all we need and their order is part of the hash.
Cross-checked against `ipfs-unixfs-importer` 17 (tests/js/cid_vectors.mjs) and kubo's
published vector for `hello world\\n`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from multiformats import CID

CHUNK_SIZE = 262_144  # kubo's default chunker, `size-262144`
MAX_LINKS = 174  # kubo's balanced layout: helpers.DefaultLinksPerBlock
RAW, DAG_PB = "raw", "dag-pb"
RAW_CODE, DAG_PB_CODE = 0x55, 0x70  # multicodec codes; both one-byte varints
_CODECS = {RAW_CODE: RAW, DAG_PB_CODE: DAG_PB}
_SHA2_256 = b"\x12\x20"  # multihash prefix: sha2-256, 32-byte digest
_UNIXFS_FILE = 2


def sha256_hex(data: bytes) -> str:
    """Plain hex SHA-256 of the bytes (no 0x): the content hash stored beside a CID."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A CIDv1 naming a raw or dag-pb block by its sha2-256: every CID this package makes.

    Built by hand rather than with multiformats' CID on the hot paths: its argument checks
    (typing_validation) raise and catch TypeErrors internally, costing tens of microseconds per
    CID, and the frames those tracebacks keep alive until the cycle collector runs pinned every
    chunk being hashed, so streaming a file grew memory with its size. multiformats still
    parses CID strings from outside (`parse_cid`), and tests check both spell CIDs alike.
    """

    codec: int  # RAW_CODE or DAG_PB_CODE
    digest: bytes

    @classmethod
    def of(cls, codec: int, block: bytes) -> BlockRef:
        return cls(codec, hashlib.sha256(block).digest())

    @classmethod
    def from_binary(cls, data: bytes) -> BlockRef:
        """From a binary CID as dag-pb links hold it (CIDv1, or CIDv0 in old non-raw-leaf DAGs)."""
        if len(data) == 36 and data[0] == 1 and data[1] in _CODECS and data[2:4] == _SHA2_256:
            return cls(data[1], data[4:])
        if len(data) == 34 and data[:2] == _SHA2_256:
            return cls(DAG_PB_CODE, data[2:])
        raise ValueError(f"unsupported binary CID {data.hex()}")

    @property
    def codec_name(self) -> str:
        return _CODECS[self.codec]

    @property
    def binary(self) -> bytes:
        return bytes((1, self.codec)) + _SHA2_256 + self.digest

    def __str__(self) -> str:
        # multibase base32: "b" + RFC 4648 base32, lower case, unpadded
        return "b" + base64.b32encode(self.binary).decode("ascii").lower().rstrip("=")

    def matches(self, block: bytes) -> bool:
        """True when the block's bytes hash to this CID's digest."""
        return hashlib.sha256(block).digest() == self.digest


def parse_cid(cid: str) -> BlockRef:
    """Decode a CID string (any multibase, v0 or v1); ValueError naming it unless it is one we
    can verify: sha2-256 over a raw or dag-pb block. str() of the result is CIDv1 base32."""
    if cid[:1] == "b":  # our own spelling, decoded by hand (BlockRef says why)
        try:
            ref = BlockRef.from_binary(base64.b32decode(cid[1:].upper() + "=" * (-(len(cid) - 1) % 8)))
            if str(ref) == cid:
                return ref
        except ValueError:  # binascii.Error is one; multiformats below names the problem
            pass
    try:
        parsed = CID.decode(cid)
        codec, hashfun, digest = parsed.codec.code, parsed.hashfun.name, parsed.raw_digest
    except Exception as exc:  # multiformats raises a zoo of KeyError/ValueError subclasses
        raise ValueError(f"malformed CID {cid!r}: {exc}") from None
    if hashfun != "sha2-256" or len(digest) != 32:
        raise ValueError(f"CID {cid!r} uses {hashfun}; only sha2-256 can be verified here")
    if codec not in _CODECS:
        raise ValueError(f"CID {cid!r} has codec {parsed.codec.name}; expected raw or dag-pb")
    # CIDv0 (Qm...) names the same dag-pb block as its v1 form; one spelling keeps lookups simple.
    return BlockRef(codec, digest)


# -- protobuf, just enough of it ------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _pb_bytes(num: int, value: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _pb_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each varint or length-delimited field; skips fixed-width ones."""
    i, end = 0, len(buf)

    def read_varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            if i >= end or shift > 63:
                raise ValueError("truncated or overlong protobuf varint")
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while i < end:
        key = read_varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            yield num, read_varint()
        elif wire == 2:
            size = read_varint()
            if i + size > end:
                raise ValueError("truncated protobuf field")
            yield num, buf[i : i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


@dataclass(frozen=True, slots=True)
class Block:
    cid: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Link:
    """A child as its parent records it."""

    cid: bytes  # binary CID
    tsize: int  # whole DAG under the child, in encoded bytes: the PBLink Tsize
    filesize: int  # file bytes under the child: the parent's blocksizes entry


def _encode_file_node(links: list[_Link]) -> bytes:
    pb_links = b"".join(
        _pb_bytes(2, _pb_bytes(1, link.cid) + _pb_bytes(2, b"") + _pb_varint(3, link.tsize)) for link in links
    )
    unixfs = _pb_varint(1, _UNIXFS_FILE) + _pb_varint(3, sum(link.filesize for link in links))
    unixfs += b"".join(_pb_varint(4, link.filesize) for link in links)
    return pb_links + _pb_bytes(1, unixfs)


@dataclass
class _BalancedBuilder:
    """Builds kubo's balanced layout incrementally, so a file of any size streams through it.

    levels[k] holds the not-yet-grouped children at height k. A full group is only closed when
    one more child arrives, because whether a lone node is the root or gets wrapped in a parent
    depends on whether anything follows it (175 leaves -> a root over two nodes, the second
    with a single link, exactly as kubo and the JS importer do).
    """

    max_links: int
    levels: list[list[_Link]] = field(default_factory=lambda: [[]])

    def push(self, height: int, link: _Link) -> Iterator[Block]:
        if height == len(self.levels):
            self.levels.append([])
        if len(self.levels[height]) == self.max_links:
            yield from self._close(height)
        self.levels[height].append(link)

    def _close(self, height: int) -> Iterator[Block]:
        links, self.levels[height] = self.levels[height], []
        data = _encode_file_node(links)
        ref = BlockRef.of(DAG_PB_CODE, data)
        yield Block(str(ref), data)
        tsize = len(data) + sum(link.tsize for link in links)
        yield from self.push(height + 1, _Link(ref.binary, tsize, sum(link.filesize for link in links)))

    def finish(self) -> Iterator[Block]:
        # Every level holds at least one child (a level is only emptied by a push into it).
        height = 0
        while not (height == len(self.levels) - 1 and len(self.levels[height]) == 1):
            yield from self._close(height)
            height += 1
        # What is left is the root, which was the block yielded last.


def iter_dag_blocks(chunks: Iterable[bytes], *, max_links: int = MAX_LINKS) -> Iterator[Block]:
    """Every block of the file's DAG, each once per occurrence; the last one yielded is the root.

    Children are always yielded before their parents, so a store that writes blocks in this
    order never has a root whose children are missing.
    """
    if max_links < 2:
        raise ValueError("max_links must be at least 2")
    builder = _BalancedBuilder(max_links)
    for chunk in chunks:
        ref = BlockRef.of(RAW_CODE, chunk)
        yield Block(str(ref), chunk)
        yield from builder.push(0, _Link(ref.binary, len(chunk), len(chunk)))
    if not builder.levels[0]:  # no chunk at all: an empty file is one empty raw block, as in kubo
        yield from iter_dag_blocks([b""], max_links=max_links)
        return
    yield from builder.finish()


def chunk_bytes(data: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    if not data:
        yield b""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


def chunk_stream(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Exact fixed-size chunks from a binary stream; short reads (pipes, sockets) are refilled."""
    buf = stream.read(chunk_size)
    yield_empty = not buf  # an empty stream is one empty chunk, like chunk_bytes(b"")
    while buf:
        while len(buf) < chunk_size and (more := stream.read(chunk_size - len(buf))):
            buf += more
        yield buf
        buf = stream.read(chunk_size)
    if yield_empty:
        yield b""


def dag_blocks(data: bytes, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> dict[str, bytes]:
    """The DAG's blocks, CID -> bytes (insertion order: children first, root last)."""
    return {b.cid: b.data for b in iter_dag_blocks(chunk_bytes(data, chunk_size), max_links=max_links)}


def cid_for_chunks(chunks: Iterable[bytes], *, max_links: int = MAX_LINKS) -> str:
    root = None
    for root in iter_dag_blocks(chunks, max_links=max_links):
        pass
    assert root is not None  # iter_dag_blocks always yields at least one block
    return root.cid


def cid_for_bytes(data: bytes, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> str:
    """The CID `ipfs add --cid-version=1 --raw-leaves` reports for these bytes.

    chunk_size and max_links exist for tests of deep trees; anything but the defaults gives
    CIDs that kubo at its defaults would not reproduce.
    """
    return cid_for_chunks(chunk_bytes(data, chunk_size), max_links=max_links)


def cid_for_stream(stream: BinaryIO, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> str:
    return cid_for_chunks(chunk_stream(stream, chunk_size), max_links=max_links)


# -- reading a DAG back ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileNode:
    """The parts of a dag-pb UnixFS file node a reader needs."""

    links: list[BlockRef]  # children, in file order
    data: bytes  # inline file bytes (only in non-raw-leaf DAGs), before the children's
    filesize: int | None


def decode_file_node(block: bytes) -> FileNode:
    """Parse a dag-pb block holding a UnixFS File (or Raw) node; ValueError if it is anything else."""
    links: list[BlockRef] = []
    unixfs: bytes | None = None
    for num, value in _pb_fields(block):
        if num == 2 and isinstance(value, bytes):
            for link_num, link_value in _pb_fields(value):
                if link_num == 1 and isinstance(link_value, bytes):
                    links.append(BlockRef.from_binary(link_value))
        elif num == 1 and isinstance(value, bytes):
            unixfs = value
    if unixfs is None:
        raise ValueError("dag-pb node carries no UnixFS data")
    kind, data, filesize = None, b"", None
    for num, value in _pb_fields(unixfs):
        if num == 1 and isinstance(value, int):
            kind = value
        elif num == 2 and isinstance(value, bytes):
            data = value
        elif num == 3 and isinstance(value, int):
            filesize = value
    if kind not in (0, _UNIXFS_FILE):  # 0 = Raw, the leaf type of old non-raw-leaf DAGs
        raise ValueError(f"UnixFS node of type {kind} is not a file")
    return FileNode(links, data, filesize)
