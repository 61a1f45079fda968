"""Longest spans of an output that occur in the indexed training data, and their credit (see `spans`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from provenant.attribution.aggregate import Attribution, ContributionMeta, aggregate
from provenant.attribution.spans_index import SpanIndex, SpanIndexError, check_tokens, encode_tokens

DEFAULT_MIN_LENGTH = 8  # tokens; for byte-level tokenizers use ~32 (a few words)
DEFAULT_MAX_OCCURRENCES = 16  # occurrences listed per span (all of them are credited)


@dataclass(frozen=True)
class SpanOccurrence:
    contribution_id: int
    row: int
    offset: int  # token offset of the span within that row


@dataclass(frozen=True)
class Span:
    start: int  # offset in the output, in tokens
    length: int  # tokens
    count: int  # occurrences in the indexed data
    contributions: tuple[int, ...]  # distinct contributions that contain it, ascending
    credited_tokens: int  # output tokens whose credit this span carries (see `spans` for the rule)
    occurrences: tuple[SpanOccurrence, ...]  # the first few, ordered by (contribution, row, offset)
    text: str | None  # decoded span when a decoder was given

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start, "length": self.length, "count": self.count,
                "contributions": list(self.contributions), "credited_tokens": self.credited_tokens,
                "occurrences": [[o.contribution_id, o.row, o.offset] for o in self.occurrences], "text": self.text}


@dataclass(frozen=True)
class SpanResult:
    output_length: int
    min_length: int
    spans: tuple[Span, ...]  # maximal spans of length >= min_length, by start
    covered_tokens: int  # output tokens inside at least one span
    credit: tuple[tuple[int, Fraction], ...]  # (contribution id, credited output tokens), ascending ids

    @property
    def coverage(self) -> Fraction:
        """Fraction of the output covered by spans: the span weight of the combination rule."""
        return Fraction(self.covered_tokens, self.output_length) if self.output_length else Fraction(0)

    def contribution_ppm(self) -> dict[int, int]:
        """Exact shares of the span credit in ppm, rounded down (no float on the way)."""
        total = sum((c for _, c in self.credit), Fraction(0))
        return {cid: int(c * 1_000_000 / total) for cid, c in self.credit} if total else {}

    def to_dict(self) -> dict[str, object]:
        return {"output_length": self.output_length, "min_length": self.min_length,
                "covered_tokens": self.covered_tokens, "coverage": float(self.coverage),
                "spans": [s.to_dict() for s in self.spans],
                "credit": [[cid, str(c)] for cid, c in self.credit]}


def _lower_bound(index: SpanIndex, pattern: bytes, lo: int, hi: int) -> int:
    """First suffix-array slot whose suffix is >= pattern (bytes comparison is C memcmp)."""
    text, sa, width, base, size = index.text, index.sa_view, index.width, index.text_offset, len(pattern)
    while lo < hi:
        mid = (lo + hi) >> 1
        at = base + sa[mid] * width
        if text[at:at + size] < pattern:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _upper_bound(index: SpanIndex, pattern: bytes, lo: int, hi: int) -> int:
    """First slot whose suffix does not start with pattern and is > pattern."""
    text, sa, width, base, size = index.text, index.sa_view, index.width, index.text_offset, len(pattern)
    while lo < hi:
        mid = (lo + hi) >> 1
        at = base + sa[mid] * width
        if text[at:at + size] <= pattern:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _common_tokens(index: SpanIndex, slot: int, pattern: bytes) -> int:
    """Tokens shared by the pattern and the suffix at ``slot`` (binary search on prefix equality)."""
    width = index.width
    at = index.text_offset + index.sa_view[slot] * width
    suffix = index.text[at:at + len(pattern)]
    lo, hi = 0, len(suffix) // width  # pattern[:lo] matches; the answer is <= hi
    if suffix == pattern[:len(suffix)]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if suffix[:mid * width] == pattern[:mid * width]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def longest_matches(index: SpanIndex, output: bytes) -> list[int]:
    """For each output position, the length of its longest prefix that occurs in the index.

    The longest prefix of P that occurs is its longest common prefix with one of the two suffixes
    around P's insertion point in the suffix array, so one binary search per position suffices.
    """
    width, n = index.width, index.n_tokens
    lengths: list[int] = []
    for i in range(len(output) // width):
        pattern = output[i * width:]
        slot = _lower_bound(index, pattern, 0, n)
        best = _common_tokens(index, slot, pattern) if slot < n else 0
        if slot > 0:
            best = max(best, _common_tokens(index, slot - 1, pattern))
        lengths.append(best)
    return lengths


def maximal_spans(lengths: Sequence[int], min_length: int) -> list[tuple[int, int]]:
    """(start, length) of spans not contained in another: since L[i] >= L[i-1] - 1, the span at i is
    contained in an earlier one exactly when L[i] < L[i-1]."""
    return [(i, ln) for i, ln in enumerate(lengths) if ln >= min_length and (i == 0 or ln >= lengths[i - 1])]


def _occurrences(index: SpanIndex, pattern: bytes,
                 limit: int) -> tuple[int, np.ndarray, tuple[SpanOccurrence, ...]]:
    """(count, mask of the contributions holding it, first `limit` occurrences) of a pattern that occurs.

    Positions increase with (contribution, row, offset), so the first occurrences in that order are
    the smallest positions: a partial sort, not a full one, keeps boilerplate spans cheap.
    """
    lo = _lower_bound(index, pattern, 0, index.n_tokens)
    hi = _upper_bound(index, pattern, lo, index.n_tokens)
    positions = index.suffix_array[lo:hi]  # uint32, no copy
    present = index.contributions_present(positions)
    if limit == 0:
        return int(hi - lo), present, ()
    if limit < len(positions):
        positions = np.partition(positions, limit - 1)[:limit]
    first = np.sort(positions)
    contribution, row, offset = index.locate(first.astype(np.int64))
    return (int(hi - lo), present,
            tuple(SpanOccurrence(int(c), int(r), int(o)) for c, r, o in zip(contribution, row, offset)))


def find_spans(index: SpanIndex, output_tokens: Sequence[int] | np.ndarray, *, min_length: int = DEFAULT_MIN_LENGTH,
               decode: Callable[[list[int]], str] | None = None,
               max_occurrences: int = DEFAULT_MAX_OCCURRENCES) -> SpanResult:
    """Maximal spans of the output found in the index, with their occurrences and the credit rule."""
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise SpanIndexError(f"min_length must be an integer >= 1, got {min_length!r}")
    if not isinstance(max_occurrences, int) or max_occurrences < 0:
        raise SpanIndexError(f"max_occurrences must be an integer >= 0, got {max_occurrences!r}")
    ids = check_tokens(output_tokens, index.vocab_size, "output")
    output = encode_tokens(ids, index.width)
    found = maximal_spans(longest_matches(index, output), min_length)
    width, token_list = index.width, ids.tolist()

    # Credit: each covered output token goes to the longest span covering it (earliest on ties).
    owner = [-1] * len(token_list)
    for k in sorted(range(len(found)), key=lambda k: (-found[k][1], found[k][0])):
        start, length = found[k]
        for t in range(start, start + length):
            if owner[t] < 0:
                owner[t] = k
    spans: list[Span] = []
    # Per split count (number of distinct contributions), credited tokens per contribution slot:
    # integers, so the credit stays exact without a Fraction per (span, contribution).
    by_split: dict[int, np.ndarray] = {}
    seen: dict[bytes, tuple[int, np.ndarray, tuple[SpanOccurrence, ...]]] = {}  # a span quoted twice
    for k, (start, length) in enumerate(found):
        pattern = output[start * width:(start + length) * width]
        if pattern not in seen:
            seen[pattern] = _occurrences(index, pattern, max_occurrences)
        count, present, occurrences = seen[pattern]
        distinct = tuple(index.contribution_ids[present].tolist())
        credited = owner.count(k)
        if credited:
            tokens = by_split.setdefault(len(distinct), np.zeros(len(present), dtype=np.int64))
            tokens[present] += credited
        text = None
        if decode is not None:
            try:
                text = decode(token_list[start:start + length])
            except Exception:  # noqa: BLE001 - a decoder that cannot render a span just leaves no text
                text = None
        spans.append(Span(start, length, count, distinct, credited, occurrences, text))
    covered = sum(1 for o in owner if o >= 0)
    common = math.lcm(*by_split) if by_split else 1  # one exact denominator: a Fraction per contribution
    numerators = np.zeros(len(index.contribution_ids), dtype=object)  # Python ints: lcm may pass 2**63
    for split in sorted(by_split):
        numerators += by_split[split].astype(object) * (common // split)
    credit = {int(index.contribution_ids[slot]): Fraction(int(numerators[slot]), common)
              for slot in np.flatnonzero(numerators != 0).tolist()}
    return SpanResult(len(token_list), min_length, tuple(spans), covered,
                      tuple((cid, credit[cid]) for cid in sorted(credit) if credit[cid] > 0))


def span_attribution(result: SpanResult, meta: Mapping[int, ContributionMeta]) -> Attribution:
    """The span credit as an `aggregate.Attribution`: score = credited output tokens / output length."""
    missing = [cid for cid, _ in result.credit if cid not in meta]
    if missing:
        raise SpanIndexError(f"span attribution: no ContributionMeta for contributions {missing[:5]}")
    scores = np.array([float(c / result.output_length) for _, c in result.credit], dtype=np.float64)
    ids = np.array([cid for cid, _ in result.credit], dtype=np.int64)
    return aggregate(scores, ids, meta)
