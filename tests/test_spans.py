"""Span attribution (issue 6): suffix-array index, longest spans, credit, combination with gradients."""

from __future__ import annotations

import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from provenant.attribution.aggregate import PPM, ContributionMeta, aggregate
from provenant.attribution.spans import (CombinationError, SpanDocument, SpanIndex, SpanIndexError,
                                         SpanIndexFormatError, build_span_index, combine_attributions, combine_ppm,
                                         find_spans, longest_matches, span_attribution, token_width)
from provenant.attribution.spans_index import encode_tokens
from provenant.factory.base_models import ByteTokenizer

HANDWRITTEN = [SpanDocument(1, 0, [1, 2, 3, 4, 5]), SpanDocument(2, 0, [4, 5, 6, 7]),
               SpanDocument(3, 0, [9, 9, 9]), SpanDocument(3, 1, [2, 3, 4])]
META = {1: ContributionMeta("0xaa", 1), 2: ContributionMeta("0xbb", 1), 3: ContributionMeta("0xaa", 2),
        4: ContributionMeta("0xcc", 2)}


def brute_longest(docs: list[SpanDocument], output: list[int]) -> list[int]:
    """Longest prefix of output[i:] inside any single document, by direct comparison."""
    rows = [list(d.tokens) for d in docs]
    best = []
    for i in range(len(output)):
        top = 0
        for row in rows:
            for p in range(len(row)):
                k = 0
                while i + k < len(output) and p + k < len(row) and row[p + k] == output[i + k]:
                    k += 1
                top = max(top, k)
        best.append(top)
    return best


def brute_occurrences(docs: list[SpanDocument], pattern: list[int]) -> list[tuple[int, int, int]]:
    found = []
    for d in docs:
        row = list(d.tokens)
        for p in range(len(row) - len(pattern) + 1):
            if row[p:p + len(pattern)] == pattern:
                found.append((d.contribution_id, d.row, p))
    return sorted(found)


def test_handwritten_corpus_gives_exact_spans_and_credit() -> None:
    index = build_span_index(HANDWRITTEN, vocab_size=10)
    output = [0, 2, 3, 4, 5, 6, 7, 8]
    assert longest_matches(index, encode_tokens(np.array(output), index.width)) == [0, 4, 3, 4, 3, 2, 1, 0]
    result = find_spans(index, output, min_length=3)
    assert [(s.start, s.length, s.count, s.contributions) for s in result.spans] == [(1, 4, 1, (1,)), (3, 4, 1, (2,))]
    assert [(o.contribution_id, o.row, o.offset) for o in result.spans[0].occurrences] == [(1, 0, 1)]
    # Tokens 1-4 go to the first span (tie on length: earliest), 5-6 to the second; 0 and 7 are novel.
    assert [s.credited_tokens for s in result.spans] == [4, 2]
    assert result.covered_tokens == 6 and result.coverage == Fraction(3, 4)
    assert result.credit == ((1, Fraction(4)), (2, Fraction(2)))
    assert result.contribution_ppm() == {1: 666_666, 2: 333_333}
    # A shorter minimum keeps the span that starts inside contribution 3's second row too.
    spans = find_spans(index, [9, 9, 2, 3, 4], min_length=2).spans
    assert [(s.start, s.length, s.contributions) for s in spans] == [(0, 2, (3,)), (2, 3, (1, 3))]


def test_no_match_crosses_a_row_or_contribution_boundary() -> None:
    docs = [SpanDocument(1, 0, [1, 2, 3, 4, 5]), SpanDocument(2, 0, [6, 7, 8, 9]),
            SpanDocument(2, 1, [10, 11]), SpanDocument(2, 2, [12, 13])]
    index = build_span_index(docs, vocab_size=20)
    result = find_spans(index, [2, 3, 4, 5, 6, 7, 10, 11, 12, 13], min_length=2)
    # Without sentinels 2..7 and 10..13 would be single matches; with them each row is its own span.
    assert [(s.start, s.length, s.contributions) for s in result.spans] == [(0, 4, (1,)), (4, 2, (2,)),
                                                                            (6, 2, (2,)), (8, 2, (2,))]
    assert [(o.row, o.offset) for s in result.spans[1:] for o in s.occurrences] == [(0, 0), (1, 0), (2, 0)]


# Ids whose big-endian bytes contain 0xFF sit next to the all-0xFF sentinel in byte order.
@pytest.mark.parametrize("vocab_size,ids", [(4, [0, 1, 3]), (255, [254, 0, 1]), (65_535, [65_534, 255, 65_280]),
                                            (2**24 - 1, [2**24 - 2, 65_535, 255 << 16]),
                                            (2**32 - 1, [2**32 - 2, 255, 2**32 - 256])])
def test_matches_brute_force_on_random_corpora(vocab_size: int, ids: list[int]) -> None:
    rng = random.Random(vocab_size)
    for trial in range(12):
        docs = [SpanDocument(rng.randrange(5), r, [rng.choice(ids) for _ in range(rng.randrange(0, 25))])
                for r in range(rng.randrange(1, 8))]
        if not any(len(d.tokens) for d in docs):
            continue
        index = build_span_index(docs, vocab_size)
        output = [rng.choice(ids) for _ in range(rng.randrange(1, 40))]
        lengths = longest_matches(index, encode_tokens(np.array(output), index.width))
        assert lengths == brute_longest(docs, output), (trial, output)
        spans = find_spans(index, output, min_length=1, max_occurrences=1000).spans
        # Kept spans are exactly the (i, L[i]) not contained in another (j, L[j]).
        assert [(s.start, s.length) for s in spans] == [
            (i, n) for i, n in enumerate(lengths)
            if n >= 1 and not any(j < i and i + n <= j + lengths[j] for j in range(len(lengths)))]
        for span in spans:
            expected = brute_occurrences(docs, output[span.start:span.start + span.length])
            assert [(o.contribution_id, o.row, o.offset) for o in span.occurrences] == expected
            assert span.count == len(expected)
            assert span.contributions == tuple(sorted({c for c, _, _ in expected}))


def test_byte_tokenizer_spans_decode_to_the_copied_text() -> None:
    tok = ByteTokenizer()
    rows = {7: ["the tide tables for the northern harbour are published weekly",
                "keep the gate closed after dusk"],
            8: ["a warm front brings light rain to the coast by evening"]}
    docs = [SpanDocument(cid, r, tok.encode(text, add_bos=False)) for cid, texts in rows.items()
            for r, text in enumerate(texts)]
    index = build_span_index(docs, vocab_size=tok.vocab_size)
    answer = "forecast: a warm front brings light rain to the coast by evening, so keep the gate closed"
    result = find_spans(index, tok.encode(answer, add_bos=False), min_length=16, decode=tok.decode)
    # Rows start at "a" and "keep": the spaces before them in the answer are not part of any match.
    assert [s.text for s in result.spans] == ["a warm front brings light rain to the coast by evening",
                                              "keep the gate closed"]
    assert [s.contributions for s in result.spans] == [(8,), (7,)]
    attribution = span_attribution(result, META | {7: ContributionMeta("0xdd", 3), 8: ContributionMeta("0xee", 3)})
    assert attribution.contributions[0].key == "8" and attribution.contributions[0].ppm > 700_000
    assert sum(s.ppm for s in attribution.contributions) <= PPM


def test_credit_is_split_equally_among_distinct_contributions() -> None:
    phrase = [5, 6, 7, 8]
    docs = [SpanDocument(1, r, [1] + phrase + [2]) for r in range(5)] + [SpanDocument(2, 0, phrase + [3])]
    index = build_span_index(docs, vocab_size=10)
    result = find_spans(index, [0] + phrase + [9], min_length=4, max_occurrences=2)
    (span,) = result.spans
    assert span.count == 6 and len(span.occurrences) == 2 and span.contributions == (1, 2)
    # Five copies inside contribution 1 earn no more than contribution 2's single copy.
    assert result.credit == ((1, Fraction(2)), (2, Fraction(2)))
    assert sum(c for _, c in result.credit) == result.covered_tokens == 4
    listed_none = find_spans(index, [0] + phrase + [9], min_length=4, max_occurrences=0)
    assert listed_none.spans[0].occurrences == () and listed_none.credit == result.credit


def test_overlapping_spans_never_count_a_token_twice() -> None:
    docs = [SpanDocument(1, 0, [1, 2, 3, 4, 5, 6]), SpanDocument(2, 0, [4, 5, 6, 7, 8, 9, 10])]
    result = find_spans(build_span_index(docs, 20), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], min_length=3)
    assert [(s.start, s.length, s.credited_tokens) for s in result.spans] == [(0, 6, 3), (3, 7, 7)]
    assert result.covered_tokens == 10 and sum(c for _, c in result.credit) == 10
    # Equal lengths at neighbouring starts: both spans are maximal; the earlier one wins the tie.
    docs = [SpanDocument(1, 0, [1, 2, 3, 4]), SpanDocument(2, 0, [2, 3, 4, 5])]
    result = find_spans(build_span_index(docs, 20), [1, 2, 3, 4, 5], min_length=4)
    assert [(s.start, s.length, s.credited_tokens) for s in result.spans] == [(0, 4, 4), (1, 4, 1)]


def test_bytes_are_deterministic_and_content_addressable(tmp_path: Path) -> None:
    index = build_span_index(HANDWRITTEN, vocab_size=10)
    shuffled = build_span_index(list(reversed(HANDWRITTEN)), vocab_size=10)
    assert index.to_bytes() == shuffled.to_bytes()
    assert build_span_index(HANDWRITTEN[:3], vocab_size=10).sha256() != index.sha256()
    # A fresh process (fresh hash seeds in Python and in safetensors' Rust maps) writes the same bytes.
    code = ("from provenant.attribution.spans import SpanDocument, build_span_index\n"
            "docs = [SpanDocument(1, 0, [1, 2, 3, 4, 5]), SpanDocument(2, 0, [4, 5, 6, 7]),"
            " SpanDocument(3, 0, [9, 9, 9]), SpanDocument(3, 1, [2, 3, 4])]\n"
            "print(build_span_index(docs, 10).sha256())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == index.sha256()
    path = tmp_path / "spans.safetensors"
    index.save(path)
    loaded = SpanIndex.load(path, expected_sha256=index.sha256())  # memory-mapped
    with pytest.raises(SpanIndexFormatError, match="sha256 differs"):
        SpanIndex.load(path, expected_sha256="ab" * 32)
    assert loaded.to_bytes() == index.to_bytes()
    output = [0, 2, 3, 4, 5, 6, 7, 8]
    assert find_spans(loaded, output, min_length=2) == find_spans(index, output, min_length=2)
    assert find_spans(SpanIndex.from_bytes(index.to_bytes()), output) == find_spans(index, output)
    from safetensors.numpy import load  # the file is a plain safetensors file
    assert sorted(load(path.read_bytes())) == ["contribution_first_doc", "contribution_ids", "doc_rows",
                                               "doc_starts", "suffix_array", "tokens"]


@pytest.mark.parametrize("vocab_size,width", [(259, 2), (32_000, 2), (151_646, 3), (2**24 - 2, 3)])
def test_storage_is_at_most_eight_bytes_per_indexed_token(vocab_size: int, width: int) -> None:
    rng = np.random.default_rng(0)
    docs = [SpanDocument(c, r, rng.integers(0, vocab_size, size=100)) for c in range(10) for r in range(20)]
    index = build_span_index(docs, vocab_size)
    assert index.width == token_width(vocab_size) == width
    assert len(index.to_bytes()) / index.n_tokens <= 8


def test_combination_rule_limits_and_bounds() -> None:
    span = {1: 600_000, 2: 400_000}
    gradient = {2: 250_000, 3: 749_999}
    assert combine_ppm(span, gradient, 1) == {1: 600_000, 2: 400_000, 3: 0}
    assert combine_ppm(span, gradient, 0) == {1: 0, 2: 250_000, 3: 749_999}
    assert combine_ppm(span, gradient, Fraction(1, 4)) == {1: 150_000, 2: 287_500, 3: 562_499}
    rng = random.Random(3)
    previous = -1
    for step in range(11):
        w = Fraction(step, 10)
        combined = combine_ppm(span, gradient, w)
        assert sum(combined.values()) <= PPM
        assert combined[1] >= previous  # the span-only contribution gains as coverage grows
        previous = combined[1]
    for _ in range(50):
        cuts = sorted(rng.randrange(PPM + 1) for _ in range(3))
        a = {k: v for k, v in enumerate([cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1]])}
        b = {k + 1: v for k, v in enumerate([PPM - cuts[2], cuts[0], cuts[1] - cuts[0]])}
        assert sum(combine_ppm(a, b, Fraction(rng.randrange(1000), 999)).values()) <= PPM


def test_combined_attribution_from_span_and_gradient_sides() -> None:
    index = build_span_index(HANDWRITTEN, vocab_size=10)
    result = find_spans(index, [0, 2, 3, 4, 5, 6, 7, 8], min_length=3)
    spans = span_attribution(result, META)
    # A gradient attribution as `aggregate` produces it: signed scores; contribution 4 is never quoted.
    gradient = aggregate(np.array([0.5, -0.2, 0.1, 0.4]), np.array([4, 1, 2, 4]), META)
    combined = combine_attributions(spans, gradient, result.coverage, META)
    ppm = combined.contribution_ppm()
    assert ppm == combine_ppm(spans.contribution_ppm(), gradient.contribution_ppm(), Fraction(3, 4))
    assert ppm[4] > 0 and ppm[1] > ppm[4] and sum(ppm.values()) <= PPM
    contributors = {s.key: s.ppm for s in combined.contributors}
    assert contributors["0xaa"] == ppm[1] + ppm.get(3, 0) and contributors["0xcc"] == ppm[4]
    assert combine_attributions(spans, gradient, 0, META).contribution_ppm() == {
        k: v for k, v in {**{1: 0, 2: 0}, **gradient.contribution_ppm()}.items()}
    assert combine_attributions(None, gradient, 1, META).contribution_ppm() == gradient.contribution_ppm()
    assert combine_attributions(spans, None, 0, META).contribution_ppm() == spans.contribution_ppm()
    assert combined.top(2)["contributions"][0]["id"] == "1"


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(SpanIndexError, match="corpus is empty"):
        build_span_index([], vocab_size=10)
    with pytest.raises(SpanIndexError, match="corpus is empty"):
        build_span_index([SpanDocument(1, 0, [])], vocab_size=10)
    with pytest.raises(SpanIndexError, match="contribution 2 row 0: token id 10 is outside"):
        build_span_index([SpanDocument(1, 0, [1]), SpanDocument(2, 0, [3, 10])], vocab_size=10)
    with pytest.raises(SpanIndexError, match="token id -1"):
        build_span_index([SpanDocument(1, 0, [-1, 3])], vocab_size=10)
    with pytest.raises(SpanIndexError, match="must be integers"):
        build_span_index([SpanDocument(1, 0, [1.5])], vocab_size=10)
    with pytest.raises(SpanIndexError, match="must fit in uint64"):
        build_span_index([SpanDocument(-1, 0, [1])], vocab_size=10)
    with pytest.raises(SpanIndexError, match="appears twice"):
        build_span_index([SpanDocument(1, 0, [1]), SpanDocument(1, 0, [2])], vocab_size=10)
    for vocab in (0, 2**32, True):
        with pytest.raises(SpanIndexError, match="vocab_size"):
            build_span_index(HANDWRITTEN, vocab_size=vocab)  # type: ignore[arg-type]
    index = build_span_index(HANDWRITTEN, vocab_size=10)
    with pytest.raises(SpanIndexError, match="output: token id 12 is outside"):
        find_spans(index, [1, 2, 12])
    with pytest.raises(SpanIndexError, match="min_length"):
        find_spans(index, [1, 2], min_length=0)
    with pytest.raises(SpanIndexError, match="no ContributionMeta"):
        span_attribution(find_spans(index, [1, 2, 3], min_length=2), {})
    empty = find_spans(index, [])
    assert empty.spans == () and empty.coverage == 0
    data = index.to_bytes()
    for broken in (data[:5], data[:-3], b"\x10" + data[1:], data.replace(b"provenant-span-index/1", b"provenant-span-index/9")):
        with pytest.raises(SpanIndexFormatError):
            SpanIndex.from_bytes(broken)
    # Any single corrupted header byte is refused with the format error, or still describes this index.
    header_end = 8 + int.from_bytes(data[:8], "little")
    for at in range(0, header_end, 3):
        broken = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]
        try:
            assert SpanIndex.from_bytes(broken).to_bytes() == data
        except SpanIndexFormatError:
            pass
    with pytest.raises(SpanIndexFormatError, match="sha256 differs"):
        SpanIndex.from_bytes(data, expected_sha256="00" * 32)
    assert SpanIndex.from_bytes(data, expected_sha256=index.sha256()).to_bytes() == data
    with pytest.raises(CombinationError, match="weight"):
        combine_ppm({1: 1}, {1: 1}, Fraction(3, 2))
    with pytest.raises(CombinationError, match="more than"):
        combine_ppm({1: PPM, 2: 1}, {}, 0)
    with pytest.raises(CombinationError, match="non-negative"):
        combine_ppm({1: -5}, {}, 0)
    with pytest.raises(CombinationError, match="needs a span or a gradient"):
        combine_attributions(None, None, 0, META)
