"""Duplicate rows: exact (same normalised content) and near (MinHash over word shingles).

Flags are for curators and for attribution, never a refusal by themselves: a repeated row may be
legitimate (a common phrasing), and a curator decides. What is compared is a row's text content
(`text`, or `prompt` + `completion`), normalised with NFKC, case folding and collapsed
whitespace, so "Refund  please" and "refund please" are one row. A classification row's label is
not part of the content: the same text under two labels is a duplicate (and a conflict worth
seeing). Near duplicates use datasketch's MinHash and LSH: Jaccard similarity of word 3-grams
estimated with 128 permutations, flagged at >= 0.8 by default.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from datasketch import MinHash, MinHashLSH

NEAR_THRESHOLD = 0.8
NUM_PERM = 128
SHINGLE_WORDS = 3
MINHASH_SEED = 1  # fixed: flags are reproducible by anyone with the same rows


@dataclass(frozen=True)
class DuplicateFlag:
    line: int  # 1-based line in the checked file
    kind: str  # "exact" | "near"
    of_contribution: int | None  # None: an earlier line of the same file
    of_line: int
    similarity: float  # 1.0 for exact; the MinHash Jaccard estimate for near

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "of_contribution": self.of_contribution,
                "of_line": self.of_line, "similarity": round(self.similarity, 4)}


def _parts(row: dict[str, Any]) -> list[str]:
    parts = [row["text"]] if "text" in row else [row.get("prompt", ""), row.get("completion", "")]
    return [" ".join(unicodedata.normalize("NFKC", str(p)).casefold().split()) for p in parts]


def normalised_text(row: dict[str, Any]) -> str:
    return " ".join(_parts(row))


def content_key(row: dict[str, Any]) -> str:
    # The fields are hashed as a JSON list so that moving words between prompt and completion
    # makes another row.
    return hashlib.sha256(json.dumps(_parts(row), ensure_ascii=False).encode()).hexdigest()


def minhash(text: str) -> MinHash:
    from datasketch import MinHash  # imported on first use: it pulls in scipy (~0.4 s)

    words = text.split()
    shingles = [" ".join(words[i:i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))]
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    m.update_batch([s.encode() for s in shingles])
    return m


def _candidate_threshold(threshold: float) -> float:
    # LSH banding is tuned to its threshold, so pairs just above it are often missed (0.84 was,
    # in a test); candidates come from a lower band threshold and are then kept only when their
    # estimated Jaccard similarity reaches `threshold`.
    return max(0.5, threshold - 0.2)


class DuplicateIndex:
    """The rows already in a Datanet, by exact content key and by MinHash LSH."""

    def __init__(self, threshold: float = NEAR_THRESHOLD) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self._exact: dict[str, tuple[int, int]] = {}  # key -> (contribution, line), first seen
        self._hashes: dict[str, MinHash] = {}
        self._lsh = MinHashLSH(threshold=_candidate_threshold(threshold), num_perm=NUM_PERM)
        self.contributions: set[int] = set()

    def add(self, contribution_id: int, rows: Sequence[dict[str, Any]]) -> None:
        if contribution_id in self.contributions:
            return
        self.contributions.add(contribution_id)
        for line, row in enumerate(rows, start=1):
            key = content_key(row)
            if key in self._exact:
                continue  # an exact repeat adds nothing to near-duplicate search
            self._exact[key] = (contribution_id, line)
            name = f"{contribution_id}:{line}"
            self._hashes[name] = minhash(normalised_text(row))
            self._lsh.insert(name, self._hashes[name])

    def check(self, rows: Sequence[dict[str, Any]]) -> list[DuplicateFlag]:
        """Flags for `rows` against the index and against their own earlier lines (one per line)."""
        flags: list[DuplicateFlag] = []
        own_exact: dict[str, int] = {}
        from datasketch import MinHashLSH

        own = MinHashLSH(threshold=_candidate_threshold(self.threshold), num_perm=NUM_PERM)
        own_hashes: dict[str, MinHash] = {}
        for line, row in enumerate(rows, start=1):
            key = content_key(row)
            text = normalised_text(row)
            if key in self._exact:
                contribution, of_line = self._exact[key]
                flags.append(DuplicateFlag(line, "exact", contribution, of_line, 1.0))
            elif key in own_exact:
                flags.append(DuplicateFlag(line, "exact", None, own_exact[key], 1.0))
            else:
                m = minhash(text)
                flags.extend(self._near(line, m, own, own_hashes))
                own.insert(str(line), m)
                own_hashes[str(line)] = m
            own_exact.setdefault(key, line)
        return flags

    def _near(self, line: int, m: MinHash, own: MinHashLSH, own_hashes: dict[str, MinHash]) -> Iterable[DuplicateFlag]:
        best: DuplicateFlag | None = None
        for name in self._lsh.query(m):
            similarity = m.jaccard(self._hashes[name])
            contribution, of_line = (int(x) for x in name.split(":"))
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = DuplicateFlag(line, "near", contribution, of_line, similarity)
        for name in own.query(m):
            similarity = m.jaccard(own_hashes[name])
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = DuplicateFlag(line, "near", None, int(name), similarity)
        return [best] if best is not None else []
