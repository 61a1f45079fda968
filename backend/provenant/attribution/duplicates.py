"""Duplicate-aware credit: exact and near-duplicate training rows share one row's credit.

Why: influence is computed per row, so a contributor who submits the same data twice (or a
Sybil who copies someone else's rows into another wallet) would otherwise collect a second
full score for nothing the model did not already have. Rows are grouped when they carry the
same label (classification) and their normalised texts are identical or near-identical
(MinHash estimate of the Jaccard similarity of character 5-grams >= `threshold`, then checked
exactly). Character shingles, unlike word 3-grams, still see "the same sentence with one word
changed" as near-identical in short rows, which is what a cheap Sybil edit looks like.

Credit rule (public, deterministic): the group's credit is the MEAN of its members' scores, so a
group is worth one copy. Policy "first" (the default) gives it all to the earliest member, ordered
by (contribution id, row index); contribution ids increase in on-chain submission order, so the
original author keeps the credit and a later copy earns nothing. Policy "equal" splits it evenly
among the members instead. Either way a second copy adds nothing to the total paid for the row.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NEAR_THRESHOLD = 0.8
NUM_PERM = 64
SHINGLE_CHARS = 5
MINHASH_SEED = 7
POLICIES = ("first", "equal")


class DuplicateError(ValueError):
    """Bad input to duplicate grouping or credit sharing."""


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: 'Refund  please' and 'refund please' are one text."""
    return " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split())


def _shingles(text: str) -> set[str]:
    if len(text) <= SHINGLE_CHARS:
        return {text}
    return {text[i:i + SHINGLE_CHARS] for i in range(len(text) - SHINGLE_CHARS + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index (earlier row) becomes the root: deterministic
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_groups(texts: Sequence[str], labels: Sequence[object], order: Sequence[tuple[int, int]],
                     threshold: float | None = DEFAULT_NEAR_THRESHOLD) -> np.ndarray:
    """For each row, the position of its group's earliest member (by `order`); a row alone maps to itself.

    `order[i]` = (contribution id, row index) of row i. `threshold` None groups exact copies only.
    """
    n = len(texts)
    if len(labels) != n or len(order) != n:
        raise DuplicateError("texts, labels and order differ in length")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise DuplicateError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    rank = sorted(range(n), key=lambda i: (int(order[i][0]), int(order[i][1]), i))  # earliest first
    norm = [normalise(texts[i]) for i in rank]
    lab = [repr(labels[i]) for i in rank]
    uf = _UnionFind(n)  # over positions in `rank`
    first_seen: dict[tuple[str, str], int] = {}
    for pos, key in enumerate(zip(lab, norm)):
        if key in first_seen:
            uf.union(first_seen[key], pos)
        else:
            first_seen[key] = pos
    if threshold is not None and threshold < 1.0:
        _near_unions(list(first_seen.values()), norm, lab, threshold, uf)
    canonical = np.empty(n, dtype=np.int64)
    for pos in range(n):
        canonical[rank[pos]] = rank[uf.find(pos)]
    return canonical


def _near_unions(positions: list[int], norm: list[str], lab: list[str], threshold: float, uf: _UnionFind) -> None:
    """Union distinct texts whose character-shingle Jaccard similarity reaches `threshold` (same label)."""
    from datasketch import MinHash, MinHashLSH  # imported on first use: it pulls in scipy

    lsh = MinHashLSH(threshold=max(0.5, threshold - 0.2), num_perm=NUM_PERM)  # candidates, then exact check
    shingles: dict[int, set[str]] = {}
    for pos in positions:  # ascending: earlier rows are inserted first
        grams = _shingles(norm[pos])
        shingles[pos] = grams
        m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
        m.update_batch([g.encode() for g in sorted(grams)])
        for other in sorted(int(name) for name in lsh.query(m)):
            if lab[other] == lab[pos] and _jaccard(shingles[other], grams) >= threshold:
                uf.union(other, pos)
        lsh.insert(str(pos), m)


@dataclass(frozen=True)
class DuplicateSummary:
    groups: int  # groups with more than one member
    rows_in_groups: int
    rows_without_credit: int  # under policy "first": members other than the earliest


def summarise(canonical: np.ndarray) -> DuplicateSummary:
    counts = np.bincount(canonical, minlength=len(canonical))
    multi = counts > 1
    return DuplicateSummary(int(multi.sum()), int(counts[multi].sum()), int(counts[multi].sum() - multi.sum()))


def share_credit(scores: np.ndarray, canonical: np.ndarray, policy: str = "first") -> np.ndarray:
    """(Q, N) or (N,) per-row scores -> the same shape with each duplicate group's credit shared.

    A group's credit is the mean of its members' scores (one copy's worth); "first" gives it to the
    earliest member and zero to the rest, "equal" gives each member mean / size. Groups are handled
    in the order of their canonical row, members in row order, so results are bit-identical run to run.
    """
    if policy not in POLICIES:
        raise DuplicateError(f"unknown credit policy {policy!r}; choose from {POLICIES}")
    canonical = np.asarray(canonical, dtype=np.int64)
    single = scores.ndim == 1
    out = np.array(scores[None, :] if single else scores, dtype=np.float64, copy=True)
    if out.shape[1] != len(canonical):
        raise DuplicateError(f"{out.shape[1]} scores per query but {len(canonical)} rows in the groups")
    if len(canonical) and (canonical.min() < 0 or canonical.max() >= len(canonical)):
        raise DuplicateError("group representatives point outside the rows")
    if len(canonical) == 0:
        return out[0] if single else out
    # Members of a group sit together after a stable sort by head, in row order; reduceat sums each
    # run left to right, so the result is the same bits every time (a singleton's mean is itself).
    by_group = np.argsort(canonical, kind="stable")
    heads = canonical[by_group]
    starts = np.flatnonzero(np.r_[True, heads[1:] != heads[:-1]])
    sizes = np.diff(np.r_[starts, len(by_group)])
    means = np.add.reduceat(out[:, by_group], starts, axis=1) / sizes
    if policy == "first":
        out[:] = 0.0
        out[:, heads[starts]] = means
    else:
        out[:, by_group] = np.repeat(means / sizes, sizes, axis=1)
    return out[0] if single else out


def groups_digest(canonical: np.ndarray) -> str:
    """sha256 of the grouping, for receipts and results documents that name the rule's input."""
    return hashlib.sha256(np.ascontiguousarray(canonical, dtype="<i8").tobytes()).hexdigest()
