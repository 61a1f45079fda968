"""Span attribution for large models: which training data an output repeats, verbatim.

Gradient influence does not scale to large causal LMs served at volume; verbatim reuse does, and it
is the case where a contributor's claim is strongest. So, for causal-LM calls, we find the longest
spans of the output that occur in the tokenised contributions and credit the contributions they
come from. Our own suffix-array index (built with pydivsufsort, MIT; infini-gram is not usable
for its licence); the layout and storage bound are in `spans_index`.

Index. One document per contribution row (the tokens the model was trained on, without BOS), each
followed by a sentinel id that no query may contain, so no match crosses a row or contribution
boundary. Deterministic: the same (contribution, row, tokens) set and vocab_size give the same
bytes in any input order, so the file is content-addressable (`SpanIndex.sha256`, or its CID).

Spans (`find_spans`). For every output position i, L[i] = the length of the longest prefix of
output[i:] that occurs in the index (infini-gram style: one binary search over the suffix array
per position, comparing big-endian token bytes with memcmp, then the longest common prefix with
the two neighbouring suffixes). A span (i, L[i]) is kept when L[i] >= min_length and it is not
contained in another one (L[i] >= L[i-1]); maximal spans may overlap.

Credit rule. Each output token inside at least one kept span is worth one unit, given to the
longest span covering it (the earliest on ties), so overlapping spans never count a token twice.
A span's units are split equally among the distinct contributions in which it occurs (however
many times it occurs in each: repeating text inside one contribution earns nothing extra).
A contribution's score is its units / output length; shares are of the positive part in ppm
(`SpanResult.contribution_ppm` exactly, `span_attribution` through `aggregate`).

Combination with gradient influence (`combine_attributions`, `combine_ppm`):
    combined_ppm[c] = floor(w * span_ppm[c] + (1 - w) * gradient_ppm[c]),
    w = coverage = (output tokens inside spans of length >= min_length) / output length,
in exact rational arithmetic. Verbatim regurgitation (w -> 1) is credited to its source, novel
text (w -> 0) falls back to gradients; each side sums to <= 1e6 ppm, so the result does too.
With only one side available, that side gets w = 1. Contributors' and Datanets' ppm are exact
integer sums of their contributions' combined ppm.
"""

from __future__ import annotations

from provenant.attribution.spans_combine import CombinationError, combine_attributions, combine_ppm
from provenant.attribution.spans_index import (INDEX_FORMAT, SpanDocument, SpanIndex, SpanIndexError,
                                               SpanIndexFormatError, build_span_index, token_width)
from provenant.attribution.spans_query import (DEFAULT_MAX_OCCURRENCES, DEFAULT_MIN_LENGTH, Span, SpanOccurrence,
                                               SpanResult, find_spans, longest_matches, maximal_spans,
                                               span_attribution)

__all__ = [
    "INDEX_FORMAT", "DEFAULT_MAX_OCCURRENCES", "DEFAULT_MIN_LENGTH", "CombinationError", "Span", "SpanDocument",
    "SpanIndex", "SpanIndexError", "SpanIndexFormatError", "SpanOccurrence", "SpanResult", "build_span_index",
    "combine_attributions", "combine_ppm", "find_spans", "longest_matches", "maximal_spans", "span_attribution",
    "token_width",
]
