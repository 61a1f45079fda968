"""Duplicate-aware credit: exact and near-duplicate training rows share one row's credit.

Why: influence is computed per row, so a contributor who submits the same data twice (or a
Sybil who copies someone else's rows into another wallet) would otherwise collect a second
full score for nothing the model did not already have. Rows are grouped when they carry the
same label (classification) and their normalised texts are identical or near-identical. Near
means either test (MinHash/LSH over character 5-grams finds the candidates, then each is checked exactly):
- Jaccard similarity >= `threshold` (0.8): the same sentence with a small edit. Character
  shingles, unlike word 3-grams, still see one changed word as near-identical in short rows.
- words added (`datanets.duplicates.adds_words`, the test curators' flags use too): the shorter
  text's words, in order, are a subsequence of the longer's, which has at most twice as many words;
  the shorter has at least 4 words. This is a copy with a word (or a few)
  added anywhere. On the benchmark, a Sybil who added one word to each of bob's 40 rows (at the end
  or in the middle) escaped the Jaccard test on 14-22 (end) and 40 (middle) of them and gained
  +25% and +55% of payout (bench/RESULTS.md). On five draws of the classification task and on two
  owners drawing rows of one skill, the test joined no honest pair; a character-containment test
  (95% of the shorter text's 5-grams) joined 0-4 of 40 honest rows and missed every middle insertion.
  A replaced word is caught only when the Jaccard test sees it.
Groups form in (contribution id, row index) order: a row joins the group of the earliest earlier
row it is a near duplicate of, or heads a new group. Groups never merge, so a copy cannot fold its
victim's distinct rows into one group worth a single row.

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

from provenant.datanets.duplicates import adds_words, words_of

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


def duplicate_groups(texts: Sequence[str], labels: Sequence[object], order: Sequence[tuple[int, int]],
                     threshold: float | None = DEFAULT_NEAR_THRESHOLD, words_added: bool = True) -> np.ndarray:
    """For each row, the position of its group's earliest member (by `order`); a row alone maps to itself.

    `order[i]` = (contribution id, row index) of row i. `threshold` None groups exact copies only;
    `words_added` False turns that test off (indexes written before it existed).
    """
    n = len(texts)
    if len(labels) != n or len(order) != n:
        raise DuplicateError("texts, labels and order differ in length")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise DuplicateError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    rank = sorted(range(n), key=lambda i: (int(order[i][0]), int(order[i][1]), i))  # earliest first
    norm = [normalise(texts[i]) for i in rank]
    lab = [repr(labels[i]) for i in rank]
    head = list(range(n))  # position -> its group's head position
    first_seen: dict[tuple[str, str], int] = {}
    for pos, key in enumerate(zip(lab, norm)):
        head[pos] = first_seen.setdefault(key, pos)
    if threshold is not None and (threshold < 1.0 or words_added):  # near-duplicate search is on
        _join_near_groups(sorted(first_seen.values()), norm, lab, _NearTest(threshold, words_added), head)
    canonical = np.empty(n, dtype=np.int64)
    for pos in range(n):
        canonical[rank[pos]] = rank[head[head[pos]]]  # an exact copy follows its first occurrence's group
    return canonical


@dataclass(frozen=True)
class _NearTest:
    jaccard: float
    words_added: bool

    @property
    def candidate_jaccard(self) -> float:
        """A Jaccard level for LSH below the pairs the test joins (a copy with up to as many words
        added as copied shares as little as a third of its 5-grams, hence the lower level)."""
        level = max(0.5, self.jaccard - 0.2)
        return min(level, 0.3) if self.words_added else level

    def joins(self, grams: tuple[set[str], set[str]], words: tuple[list[str], list[str]]) -> bool:
        a, b = grams
        # Jaccard >= t needs the smaller set to be at least t times the larger: skip the rest cheaply
        if min(len(a), len(b)) >= self.jaccard * max(len(a), len(b)) and len(a & b) >= self.jaccard * len(a | b):
            return True
        return self.words_added and adds_words(*words)


def _join_near_groups(positions: list[int], norm: list[str], lab: list[str], test: _NearTest, head: list[int]) -> None:
    """Each distinct text joins the group of the earliest earlier row it is a near duplicate of (same
    label), or heads a group itself. Groups never merge: under a union of every near pair, a Sybil's
    edited copies, each near its original and near each other, joined a victim's 20 distinct rows
    into one group worth one row (a test caught it)."""
    from datasketch import MinHash, MinHashLSH  # imported on first use: it pulls in scipy

    lsh = MinHashLSH(threshold=test.candidate_jaccard, num_perm=NUM_PERM)  # candidates, then an exact check
    shingles: dict[int, set[str]] = {}
    words: dict[int, list[str]] = {}
    for pos in positions:  # ascending: earlier rows first
        shingles[pos], words[pos] = _shingles(norm[pos]), words_of(norm[pos])
        m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
        m.update_batch([g.encode() for g in sorted(shingles[pos])])
        match = next((other for other in sorted(int(name) for name in lsh.query(m))
                      if lab[other] == lab[pos] and test.joins((shingles[other], shingles[pos]),
                                                               (words[other], words[pos]))), None)
        if match is not None:
            head[pos] = head[match]
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
