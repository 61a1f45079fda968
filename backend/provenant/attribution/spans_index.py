"""Suffix-array index over tokenised contributions: build, serialise, load (see `spans` for the rules).

Layout in memory and on disk (a safetensors file, little-endian, one metadata key):
- ``tokens`` (U8, ``width * (n_tokens + n_docs)``): every document's token ids as big-endian
  ``width``-byte integers, each document followed by one sentinel (all bytes 0xFF). Big-endian makes
  bytewise order equal token order, so suffixes compare with plain ``bytes`` comparison (C memcmp)
  and ``width`` can be 1-4 bytes: the narrowest that holds ``vocab_size`` ids plus the sentinel.
- ``suffix_array`` (U32, ``n_tokens``): start positions (in tokens) of every suffix that starts on a
  real token, in lexicographic order. Suffixes that start on a sentinel sort last and are dropped:
  no query can contain the sentinel, so they could never match.
- ``doc_starts`` (U32, ``n_docs``), ``doc_rows`` (U32, ``n_docs``): each document's first token position
  and its row within its contribution; documents are sorted by (contribution id, row).
- ``contribution_ids`` (U64), ``contribution_first_doc`` (U32): one entry per contribution.
Storage is ``width + 4`` bytes per token plus ``width + 8`` bytes per document: at most 8 bytes per
indexed token whenever ``vocab_size < 2**24 - 1`` (every common tokenizer) and documents average
a few tokens or more; with ``width = 4`` it is 8 bytes plus the per-document part.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FORMAT = "provenant-span-index/1"
METADATA_KEY = "provenant.spans"  # one key only: safetensors writes several metadata keys in random order
MAX_POSITIONS = 2**32 - 1  # suffix-array entries are uint32


class SpanIndexError(ValueError):
    """Bad input to the span index (empty corpus, token ids out of range, duplicate rows...)."""


class SpanIndexFormatError(SpanIndexError):
    """A serialised span index that is truncated, malformed or of another format."""


@dataclass(frozen=True)
class SpanDocument:
    contribution_id: int
    row: int
    tokens: Sequence[int] | np.ndarray


def token_width(vocab_size: int) -> int:
    """Bytes per stored token: the narrowest width whose all-ones value (the sentinel) is not an id."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise SpanIndexError(f"vocab_size must be an integer, got {vocab_size!r}")
    if not 1 <= vocab_size <= 2**32 - 1:
        raise SpanIndexError(f"vocab_size must be in [1, 2**32 - 1], got {vocab_size}")
    for width in (1, 2, 3, 4):
        if vocab_size <= 2 ** (8 * width) - 1:
            return width
    raise AssertionError("unreachable")


def encode_tokens(ids: np.ndarray, width: int) -> bytes:
    """Token ids (already range-checked) as big-endian ``width``-byte integers."""
    if width == 3:
        return np.ascontiguousarray(ids.astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:]).tobytes()
    return ids.astype(f">u{width}").tobytes()


def decode_tokens(data: bytes | memoryview | np.ndarray, width: int) -> np.ndarray:
    """The inverse of `encode_tokens`: big-endian ``width``-byte integers back to int64 ids."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if width == 3:
        padded = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        padded[:, 1:] = raw.reshape(-1, 3)
        return padded.view(">u4").reshape(-1).astype(np.int64)
    return raw.view(f">u{width}").astype(np.int64)


def check_tokens(tokens: Sequence[int] | np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    """Token ids as int64, or a SpanIndexError naming ``what`` and the offending id."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise SpanIndexError(f"{what}: tokens must be a flat sequence of integer ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise SpanIndexError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise SpanIndexError(f"{what}: token id {bad} is outside [0, {vocab_size}) (vocab_size={vocab_size})")
    return arr.astype(np.int64)


class SpanIndex:
    """A read-only suffix-array index; built by `build_span_index` or loaded by `SpanIndex.load`."""

    def __init__(self, text: bytes | mmap.mmap, text_offset: int, suffix_array: np.ndarray, doc_starts: np.ndarray,
                 doc_rows: np.ndarray, contribution_ids: np.ndarray, contribution_first_doc: np.ndarray,
                 vocab_size: int, width: int) -> None:
        self.text = text  # bytes, or the mmap of a whole file with tokens at text_offset
        self.text_offset = text_offset
        self.suffix_array = suffix_array
        self.doc_starts = doc_starts
        self.doc_rows = doc_rows
        self.contribution_ids = contribution_ids
        self.contribution_first_doc = contribution_first_doc
        self.vocab_size = vocab_size
        self.width = width
        self.n_tokens = int(len(suffix_array))
        self.n_docs = int(len(doc_starts))
        # Scalar reads in the binary search go through a memoryview (plain ints, no numpy scalar boxing).
        if sys.byteorder != "little":
            raise SpanIndexError("span index reading needs a little-endian machine")
        self.sa_view = memoryview(np.ascontiguousarray(suffix_array, dtype=np.uint32)).cast("B").cast("I")
        # Contributions are contiguous position ranges (documents are sorted by contribution, row).
        self.contribution_starts = np.asarray(doc_starts, dtype=np.uint32)[np.asarray(contribution_first_doc,
                                                                                      dtype=np.int64)]

    # -- positions to documents ------------------------------------------------------------------------
    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token positions -> (contribution id, row, offset in row), vectorised."""
        doc = np.searchsorted(self.doc_starts, positions, side="right") - 1
        contribution = np.searchsorted(self.contribution_first_doc, doc, side="right") - 1
        offsets = positions.astype(np.int64) - self.doc_starts[doc].astype(np.int64)
        return self.contribution_ids[contribution], self.doc_rows[doc].astype(np.int64), offsets

    def contributions_present(self, positions: np.ndarray) -> np.ndarray:
        """Mask over `contribution_ids` of those holding these (uint32) positions: O(k log C), no sort."""
        slots = np.searchsorted(self.contribution_starts, positions, side="right") - 1
        return np.bincount(slots, minlength=len(self.contribution_ids)) > 0

    # -- serialisation ---------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        start = self.text_offset
        text = np.frombuffer(self.text, dtype=np.uint8, count=self.width * (self.n_tokens + self.n_docs),
                             offset=start)
        return {"tokens": text, "suffix_array": np.asarray(self.suffix_array, dtype="<u4"),
                "doc_starts": np.asarray(self.doc_starts, dtype="<u4"),
                "doc_rows": np.asarray(self.doc_rows, dtype="<u4"),
                "contribution_ids": np.asarray(self.contribution_ids, dtype="<u8"),
                "contribution_first_doc": np.asarray(self.contribution_first_doc, dtype="<u4")}

    def token_ids(self) -> np.ndarray:
        """The indexed token stream as ids, rows separated by the sentinel (2**(8*width) - 1)."""
        return decode_tokens(self._arrays()["tokens"], self.width)

    def metadata(self) -> dict[str, object]:
        return {"format": INDEX_FORMAT, "vocab_size": self.vocab_size, "width": self.width,
                "tokens": self.n_tokens, "documents": self.n_docs, "contributions": len(self.contribution_ids)}

    def to_bytes(self) -> bytes:
        """Deterministic bytes: identical documents and vocab_size give identical bytes."""
        from safetensors.numpy import save

        meta = json.dumps(self.metadata(), sort_keys=True, separators=(",", ":"))
        return save(self._arrays(), metadata={METADATA_KEY: meta})

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> SpanIndex:
        if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
            raise SpanIndexFormatError(f"span index: sha256 differs from the expected {expected_sha256}")
        return cls._parse(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_sha256: str | None = None) -> SpanIndex:
        """Memory-map a saved index: no copy of the token or suffix arrays is made.

        Pass the digest the model's lineage records to detect a corrupted or swapped file (hashing
        reads the whole file once); the structural checks alone cannot see flipped data bytes.
        """
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < 8:
                raise SpanIndexFormatError(f"{path}: too short to be a span index")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if expected_sha256 is not None and hashlib.sha256(mapped).hexdigest() != expected_sha256:
            mapped.close()
            raise SpanIndexFormatError(f"{path}: sha256 differs from the expected {expected_sha256}")
        return cls._parse(mapped)

    @classmethod
    def _parse(cls, data: bytes | mmap.mmap) -> SpanIndex:
        try:
            return cls._parse_checked(data)
        except SpanIndexError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, struct.error) as exc:
            raise SpanIndexFormatError(f"span index: malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _parse_checked(cls, data: bytes | mmap.mmap) -> SpanIndex:
        if len(data) < 8:
            raise SpanIndexFormatError("span index: too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8 or header_len > 10_000_000:
            raise SpanIndexFormatError("span index: header length exceeds the file")
        try:
            header = json.loads(bytes(data[8:8 + header_len]))
            meta = json.loads(header.pop("__metadata__")[METADATA_KEY])
        except (ValueError, KeyError, TypeError) as exc:
            raise SpanIndexFormatError(f"span index: malformed header ({exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise SpanIndexFormatError(f"span index: format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
        base = 8 + header_len
        dtypes = {"U8": np.uint8, "U32": np.dtype("<u4"), "U64": np.dtype("<u8")}
        arrays: dict[str, np.ndarray] = {}
        offsets: dict[str, int] = {}
        for name in ("tokens", "suffix_array", "doc_starts", "doc_rows", "contribution_ids", "contribution_first_doc"):
            entry = header.get(name)
            if not isinstance(entry, dict) or entry.get("dtype") not in dtypes:
                raise SpanIndexFormatError(f"span index: tensor {name!r} missing or of a wrong dtype")
            begin, end = entry["data_offsets"]
            dtype = np.dtype(dtypes[entry["dtype"]])
            if not 0 <= begin <= end <= len(data) - base or (end - begin) % dtype.itemsize:
                raise SpanIndexFormatError(f"span index: tensor {name!r} lies outside the file")
            arrays[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=base + begin)
            offsets[name] = base + begin
        width, vocab = int(meta["width"]), int(meta["vocab_size"])
        n_tokens, n_docs = int(meta["tokens"]), int(meta["documents"])
        if (width != token_width(vocab) or len(arrays["suffix_array"]) != n_tokens or len(arrays["doc_starts"]) != n_docs
                or len(arrays["doc_rows"]) != n_docs or len(arrays["tokens"]) != width * (n_tokens + n_docs)
                or len(arrays["contribution_ids"]) != len(arrays["contribution_first_doc"])
                or len(arrays["contribution_ids"]) == 0):
            raise SpanIndexFormatError("span index: array sizes disagree with the metadata")
        starts, first = arrays["doc_starts"], arrays["contribution_first_doc"]
        if (n_docs == 0 or starts[0] != 0 or np.any(np.diff(starts.astype(np.int64)) < 1)
                or int(starts[-1]) >= n_tokens + n_docs or first[0] != 0
                or np.any(np.diff(first.astype(np.int64)) < 1) or int(first[-1]) >= n_docs
                or not np.all(arrays["contribution_ids"][1:] > arrays["contribution_ids"][:-1])):
            raise SpanIndexFormatError("span index: document or contribution tables are not ordered")
        text: bytes | mmap.mmap = data if isinstance(data, mmap.mmap) else bytes(data)
        return cls(text, offsets["tokens"], arrays["suffix_array"], arrays["doc_starts"], arrays["doc_rows"],
                   arrays["contribution_ids"], arrays["contribution_first_doc"], vocab, width)


def build_span_index(documents: Iterable[SpanDocument], vocab_size: int) -> SpanIndex:
    """Index every document (one contribution row each); input order does not change the bytes."""
    from pydivsufsort import divsufsort

    width = token_width(vocab_size)
    docs = sorted(documents, key=lambda d: (d.contribution_id, d.row))
    if not docs:
        raise SpanIndexError("span index: the corpus is empty (no documents)")
    checked: list[np.ndarray] = []
    seen: set[tuple[int, int]] = set()
    for doc in docs:
        what = f"contribution {doc.contribution_id} row {doc.row}"
        if (not isinstance(doc.contribution_id, (int, np.integer)) or not isinstance(doc.row, (int, np.integer))
                or not 0 <= doc.contribution_id < 2**64 or not 0 <= doc.row < 2**32):
            raise SpanIndexError(f"{what}: contribution id must fit in uint64 and row in uint32")
        if (doc.contribution_id, doc.row) in seen:
            raise SpanIndexError(f"{what}: appears twice")
        seen.add((doc.contribution_id, doc.row))
        checked.append(check_tokens(doc.tokens, vocab_size, what))
    lengths = np.array([len(t) for t in checked], dtype=np.int64)
    n_tokens = int(lengths.sum())
    if n_tokens == 0:
        raise SpanIndexError("span index: the corpus is empty (every document has zero tokens)")
    total = n_tokens + len(docs)
    if total > MAX_POSITIONS:
        raise SpanIndexError(f"span index: {total} positions exceed the uint32 limit; shard the corpus")
    sentinel = 2 ** (8 * width) - 1
    ids = np.full(total, sentinel, dtype=np.int64)
    doc_starts = np.zeros(len(docs), dtype=np.int64)
    doc_starts[1:] = np.cumsum(lengths + 1)[:-1]
    for start, tokens in zip(doc_starts.tolist(), checked):
        ids[start:start + len(tokens)] = tokens
    text = encode_tokens(ids, width)
    del ids
    byte_sa = np.asarray(divsufsort(text))  # bytes in, int32 (int64 past 2 GiB) byte positions out
    aligned = byte_sa[byte_sa % width == 0] // width if width > 1 else byte_sa
    del byte_sa
    # Suffixes starting on a sentinel (the largest token) sort last: drop them.
    suffix_array = np.ascontiguousarray(aligned[:n_tokens], dtype=np.uint32)
    contribution_ids, first_doc = np.unique(np.array([d.contribution_id for d in docs], dtype=np.uint64),
                                            return_index=True)
    return SpanIndex(text, 0, suffix_array, doc_starts.astype(np.uint32),
                     np.array([d.row for d in docs], dtype=np.uint32), contribution_ids,
                     first_doc.astype(np.uint32), int(vocab_size), width)
