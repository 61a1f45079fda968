"""Duplicate rows: exact (same normalised content) and near (MinHash over word shingles).

Flags are for curators and for attribution, never a refusal by themselves: a repeated row may be
legitimate (a common phrasing), and a curator decides. What is compared is a row's text content
(`text`, or `prompt` + `completion`), normalised with NFKC, case folding and collapsed
whitespace, so "Refund  please" and "refund please" are one row. A classification row's label is
not part of the content: the same text under two labels is a duplicate (and a conflict worth
seeing). Near duplicates use datasketch's MinHash and LSH: Jaccard similarity of word 3-grams
estimated with 128 permutations, flagged at >= 0.8 by default; or "words added" (`adds_words`):
one row's words, in order, are the other's with words added, up to as many as it has. That is
how a cheap edited copy looks ("... refunded please" -> "... refunded right away please"), and
its word 3-grams can share almost nothing. Attribution groups credit by the same test
(`attribution/duplicates.py`), so a curator sees the copies that would share a row's credit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from datasketch import MinHash

NEAR_THRESHOLD = 0.8
NUM_PERM = 128
SHINGLE_WORDS = 3
MINHASH_SEED = 1  # fixed: flags are reproducible by anyone with the same rows
MIN_COPIED_WORDS = 4  # a shorter row is too generic to be called a copy of a longer one
MAX_ADDED_RATIO = 2.0  # "words added" covers up to as many words added as were copied
WORD_SET_CANDIDATES = 0.4  # LSH level over word sets: a copy with words added shares >= 1/2 of them
WORD_SET_PERM = 64


@dataclass(frozen=True)
class DuplicateFlag:
    line: int  # 1-based line in the checked file
    kind: str  # "exact" | "near"
    of_contribution: int | None  # None: an earlier line of the same file
    of_line: int
    similarity: float  # 1.0 for exact; near: the MinHash Jaccard estimate, or the copied share of words

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


def words_of(text: str) -> list[str]:
    """The words of a normalised text, punctuation dropped ("up," and "up" are one word)."""
    return re.findall(r"\w+", text)


def adds_words(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether one word list is the other with words added anywhere: the shorter (>= 4 words) is a
    subsequence of the longer, which has at most twice as many words."""
    short, long = sorted((a, b), key=len)
    if not MIN_COPIED_WORDS <= len(short) < len(long) <= MAX_ADDED_RATIO * len(short):
        return False
    remaining = iter(long)
    return all(word in remaining for word in short)  # `in` advances the iterator past each match


@functools.cache
def _empty_minhash(num_perm: int) -> MinHash:
    from datasketch import MinHash  # imported on first use: it pulls in scipy (~0.4 s)

    return MinHash(num_perm=num_perm, seed=MINHASH_SEED)


def _new_minhash(num_perm: int) -> MinHash:
    # A copy shares the template's permutation table; a new MinHash would draw the same table again
    # from its seed, which was ~20% of the time of checking a 1,300-row upload.
    return _empty_minhash(num_perm).copy()


def _word_set_minhash(words: Sequence[str]) -> MinHash:
    m = _new_minhash(WORD_SET_PERM)
    m.update_batch([w.encode() for w in sorted(set(words))])
    return m


def minhash(text: str) -> MinHash:
    words = text.split()
    shingles = [" ".join(words[i:i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))]
    m = _new_minhash(NUM_PERM)
    m.update_batch([s.encode() for s in shingles])
    return m


def _candidate_threshold(threshold: float) -> float:
    # LSH banding is tuned to its threshold, so pairs just above it are often missed (0.84 was,
    # in a test); candidates come from a lower band threshold and are then kept only when their
    # estimated Jaccard similarity reaches `threshold`.
    return max(0.5, threshold - 0.2)


class _Rows:
    """Distinct rows by name, searchable by word 3-gram MinHash and by word set (for words added)."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self.hashes: dict[str, MinHash] = {}
        self.words: dict[str, list[str]] = {}
        self.lsh = MinHashLSH(threshold=_candidate_threshold(threshold), num_perm=NUM_PERM)
        self.word_lsh = MinHashLSH(threshold=WORD_SET_CANDIDATES, num_perm=WORD_SET_PERM)

    def insert(self, name: str, m: MinHash, words: list[str], word_set: MinHash | None = None) -> None:
        self.hashes[name], self.words[name] = m, words
        self.lsh.insert(name, m)
        self.word_lsh.insert(name, word_set if word_set is not None else _word_set_minhash(words))

    def nearest(self, m: MinHash, words: list[str], threshold: float,
                word_set: MinHash | None = None) -> tuple[str, float] | None:
        """The most similar row at >= `threshold` word 3-gram Jaccard; else the row this one copies
        with words added (or that copies it) sharing the largest share of words; else None."""
        best: tuple[str, float] | None = None
        for name in sorted(self.lsh.query(m)):
            similarity = m.jaccard(self.hashes[name])
            if similarity >= threshold and (best is None or similarity > best[1]):
                best = (name, similarity)
        if best is None:
            for name in sorted(self.word_lsh.query(word_set if word_set is not None else _word_set_minhash(words))):
                other = self.words[name]
                if len(other) == len(words):  # adds_words needs one to be longer; templated rows often tie
                    continue
                share = min(len(other), len(words)) / max(len(other), len(words), 1)
                if adds_words(other, words) and (best is None or share > best[1]):
                    best = (name, share)
        return best


class DuplicateIndex:
    """The rows already in a Datanet, by exact content key and by MinHash LSH."""

    def __init__(self, threshold: float = NEAR_THRESHOLD) -> None:
        self.threshold = threshold
        self._exact: dict[str, tuple[int, int]] = {}  # key -> (contribution, line), first seen
        self._rows = _Rows(threshold)
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
            text = normalised_text(row)
            self._rows.insert(f"{contribution_id}:{line}", minhash(text), words_of(text))

    def check(self, rows: Sequence[dict[str, Any]]) -> list[DuplicateFlag]:
        """Flags for `rows` against the index and against their own earlier lines (one per line)."""
        flags: list[DuplicateFlag] = []
        own_exact: dict[str, int] = {}
        own = _Rows(self.threshold)
        for line, row in enumerate(rows, start=1):
            key = content_key(row)
            text = normalised_text(row)
            if key in self._exact:
                contribution, of_line = self._exact[key]
                flags.append(DuplicateFlag(line, "exact", contribution, of_line, 1.0))
            elif key in own_exact:
                flags.append(DuplicateFlag(line, "exact", None, own_exact[key], 1.0))
            else:
                m, words = minhash(text), words_of(text)
                word_set = _word_set_minhash(words)  # searched twice and inserted: made once
                found = self._rows.nearest(m, words, self.threshold, word_set)
                in_file = own.nearest(m, words, self.threshold, word_set)
                if found is not None and (in_file is None or found[1] >= in_file[1]):
                    contribution, of_line = (int(x) for x in found[0].split(":"))
                    flags.append(DuplicateFlag(line, "near", contribution, of_line, found[1]))
                elif in_file is not None:
                    flags.append(DuplicateFlag(line, "near", None, int(in_file[0]), in_file[1]))
                own.insert(str(line), m, words, word_set)
            own_exact.setdefault(key, line)
        return flags
