"""Combining span credit with gradient influence (the rule is stated in `spans`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from fractions import Fraction

from provenant.attribution.aggregate import PPM, Attribution, ContributionMeta, Share


class CombinationError(ValueError):
    """Bad input to the combination rule (weight outside [0, 1], shares that are not ppm)."""


def _check_ppm(name: str, shares: Mapping[int, int]) -> None:
    for key, value in shares.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CombinationError(f"{name}: share of contribution {key} must be a non-negative integer ppm, got {value!r}")
    if sum(shares.values()) > PPM:
        raise CombinationError(f"{name}: shares sum to {sum(shares.values())} ppm, more than {PPM}")


def _as_weight(weight: Fraction | int | float) -> Fraction:
    try:
        w = Fraction(weight)
    except (TypeError, ValueError):
        raise CombinationError(f"weight must be a number in [0, 1], got {weight!r}") from None
    if not 0 <= w <= 1:
        raise CombinationError(f"weight must be in [0, 1], got {weight!r}")
    return w


def combine_ppm(span_ppm: Mapping[int, int], gradient_ppm: Mapping[int, int],
                weight: Fraction | int | float) -> dict[int, int]:
    """floor(w * span + (1 - w) * gradient) per contribution, in exact integer arithmetic.

    Each input sums to at most 1e6, so the result does too; w = 1 returns the span shares and
    w = 0 the gradient shares, unchanged. Keys: the union, ascending; zero shares are kept.
    """
    _check_ppm("span_ppm", span_ppm)
    _check_ppm("gradient_ppm", gradient_ppm)
    w = _as_weight(weight)
    num, den = w.numerator, w.denominator
    keys = sorted(set(span_ppm) | set(gradient_ppm))
    return {k: (num * span_ppm.get(k, 0) + (den - num) * gradient_ppm.get(k, 0)) // den for k in keys}


def _ranked(totals: Mapping[str, int]) -> tuple[Share, ...]:
    shares = [Share(key=k, score=v / PPM, ppm=v) for k, v in totals.items()]
    return tuple(sorted(shares, key=lambda s: (-s.ppm, -s.score, s.key)))


def combine_attributions(span: Attribution | None, gradient: Attribution | None, coverage: Fraction | int | float,
                         meta: Mapping[int, ContributionMeta]) -> Attribution:
    """The combined per-answer attribution.

    ``coverage`` is `SpanResult.coverage` (fraction of the output inside spans >= min_length), used as
    the span weight w. A missing side gets weight 0 (span None -> gradient only; gradient None -> spans
    only). Contributors' and Datanets' ppm are the exact sums of their contributions' combined ppm,
    so every level sums to at most 1e6 and the aggregation is re-checkable with integers alone; a
    Share's score is its combined share (ppm / 1e6), since the two sides' raw scores have no common unit.
    """
    if span is None and gradient is None:
        raise CombinationError("combine_attributions needs a span or a gradient attribution")
    w = _as_weight(coverage)
    if span is None:
        w = Fraction(0)
    elif gradient is None:
        w = Fraction(1)
    combined = combine_ppm(span.contribution_ppm() if span else {}, gradient.contribution_ppm() if gradient else {}, w)
    missing = [k for k in combined if k not in meta]
    if missing:
        raise CombinationError(f"no ContributionMeta for contributions {missing[:5]}")
    contributors: dict[str, int] = defaultdict(int)
    datanets: dict[str, int] = defaultdict(int)
    for key, ppm in combined.items():
        contributors[meta[key].contributor] += ppm
        datanets[str(meta[key].datanet_id)] += ppm
    return Attribution(contributions=_ranked({str(k): v for k, v in combined.items()}),
                       contributors=_ranked(dict(contributors)), datanets=_ranked(dict(datanets)))
