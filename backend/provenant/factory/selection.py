"""Which rows train a model: filters over approved contributions, a held-out split, row caps and
sampling weights per Datanet — decided once, deterministically, before training.

The plan is a pure function of (the candidate contributions with their row counts, row keys,
submission block and timestamp; the filters; the seed). In this order:
1. contributions pass the contributor and date filters (date = the block that recorded the
   contribution: its number or its timestamp, both inclusive bounds);
2. each distinct row trains once (`dedup`, on by default): a row whose key (`row_key`) an earlier
   row of the passing contributions already has, by (contribution id, row index) across every
   Datanet, is a repeat and is neither trained nor held out. Why: a second copy teaches the model
   nothing new but makes it lean on that data harder, so a contributor who submits the same rows
   again, or copies them into a second wallet, would raise the original's influence everywhere
   (measured: +6.9% payout on the attribution benchmark before this step). Contribution ids follow
   on-chain submission order, so the first author's rows are the ones that train.
   With `near_repeats` (on with dedup), a classification row is a repeat too when its duplicate
   group (`attribution.duplicates.duplicate_groups`, the rule credit sharing uses: a small edit, or
   words added) is headed by a row of an EARLIER contribution. Why: a Sybil who edits each copied
   row escapes the exact key, and although credit sharing then pays the pair as one row, training
   both made the model lean on that data harder: +7.0% (a word appended) and +9.6% (a word
   inserted) payout on the attribution benchmark. Near-variants inside one contribution still
   train: on the benchmark, dropping them too left the classifier 157 of 320 rows, and at the same
   epochs it fell to chance (test accuracy 0.662 -> 0.487).
Then per Datanet:
3. the Datanet's rows are shuffled with a generator seeded from (seed, Datanet id);
4. the first `held_out` fraction of them is the Datanet's evaluation split (at least one row when
   the fraction is positive and the Datanet has two rows or more; training keeps at least one);
5. the training rows are capped to `max_rows[datanet]` (the first ones of the shuffle);
6. a sampling weight w draws round(w x rows) training rows: w < 1 a seeded subset, w > 1 every
   row floor(w) times plus a seeded subset (repeated rows appear repeatedly, and train repeatedly).
Each contribution's training rows (sorted, weighted repeats kept) are what its lineage leaf hashes,
and its held-out rows and dropped repeats are recorded beside them, so `verify model` recomputes all
three from the content store and the chain.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provenant.attribution.duplicates import duplicate_groups, normalise


class SelectionError(ValueError):
    """Filters that cannot be applied, or that leave nothing to train on."""


@dataclass(frozen=True)
class SelectionFilters:
    contributors: tuple[str, ...] = ()  # only these contributors (any case); empty: everyone
    exclude_contributors: tuple[str, ...] = ()
    from_block: int | None = None  # contributions recorded in blocks >= from_block
    to_block: int | None = None
    from_time: int | None = None  # unix seconds of the recording block, inclusive
    to_time: int | None = None
    max_rows: dict[int, int] = field(default_factory=dict)  # Datanet id -> at most this many training rows
    weights: dict[int, float] = field(default_factory=dict)  # Datanet id -> sampling weight (default 1)
    held_out: float = 0.0  # fraction of each Datanet's rows kept out of training for evaluation
    dedup: bool = True  # each distinct row trains once (see the module doc, step 2)
    near_repeats: bool = True  # ... and a near duplicate of an earlier contribution's row is a repeat too

    def __post_init__(self) -> None:
        object.__setattr__(self, "contributors", tuple(a.lower() for a in self.contributors))
        object.__setattr__(self, "exclude_contributors", tuple(a.lower() for a in self.exclude_contributors))
        object.__setattr__(self, "max_rows", {int(k): v for k, v in self.max_rows.items()})
        object.__setattr__(self, "weights", {int(k): float(v) for k, v in self.weights.items()})
        object.__setattr__(self, "near_repeats", self.near_repeats and self.dedup)  # a part of dedup
        problems = []
        for name in ("contributors", "exclude_contributors"):
            bad = [a for a in getattr(self, name) if not (a.startswith("0x") and len(a) == 42)]
            if bad:
                problems.append(f"{name}: {bad[0]!r} is not a 0x address")
        for low, high, what in ((self.from_block, self.to_block, "block"), (self.from_time, self.to_time, "time")):
            if any(v is not None and (not isinstance(v, int) or v < 0) for v in (low, high)):
                problems.append(f"from_{what}/to_{what} must be non-negative integers")
            elif low is not None and high is not None and low > high:
                problems.append(f"from_{what} {low} is after to_{what} {high}")
        problems += [f"max_rows for Datanet {d} must be a positive integer, got {v!r}"
                     for d, v in self.max_rows.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        problems += [f"weight for Datanet {d} must be in (0, 100], got {v!r}"
                     for d, v in self.weights.items() if not 0.0 < v <= 100.0]
        if not 0.0 <= self.held_out < 1.0:
            problems.append(f"held_out must be in [0, 1), got {self.held_out!r}")
        if problems:
            raise SelectionError("invalid selection filters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able and canonical (Datanet ids as decimal strings); part of the training config."""
        return {"contributors": sorted(self.contributors), "exclude_contributors": sorted(self.exclude_contributors),
                "from_block": self.from_block, "to_block": self.to_block, "from_time": self.from_time,
                "to_time": self.to_time, "max_rows": {str(k): v for k, v in sorted(self.max_rows.items())},
                "weights": {str(k): v for k, v in sorted(self.weights.items())}, "held_out": self.held_out,
                "dedup": self.dedup, "near_repeats": self.near_repeats}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SelectionFilters":
        # A document without "dedup" was frozen before the step existed: its rows trained as they
        # came; one without "near_repeats" dropped exact repeats only.
        return cls(**{**data, "contributors": tuple(data.get("contributors", ())),
                      "exclude_contributors": tuple(data.get("exclude_contributors", ())),
                      "dedup": bool(data.get("dedup", False)), "near_repeats": bool(data.get("near_repeats", False))})

    @property
    def is_default(self) -> bool:
        return self == SelectionFilters()

    def describe(self) -> str:
        return "all approved contributions" if self.is_default else "filtered approved contributions"


@dataclass(frozen=True)
class Candidate:
    """An approved contribution that could train the model."""

    contribution_id: int
    datanet_id: int
    contributor: str
    rows: int  # rows in its file
    block_number: int
    timestamp: int
    row_keys: tuple[str, ...] = ()  # `row_key` of each row; empty: contents unknown, no row counts as a repeat
    row_texts: tuple[tuple[str, str], ...] = ()  # (text, label) of each classification row, for near repeats


@dataclass(frozen=True)
class ContributionPlan:
    contribution_id: int
    datanet_id: int
    train: tuple[int, ...]  # row indices that train, sorted (weighted repeats kept)
    held_out: tuple[int, ...]  # row indices kept for evaluation, sorted
    rows: int  # rows in the file
    repeats: tuple[int, ...] = ()  # row indices dropped because an earlier row is the same row, sorted

    @property
    def all_rows(self) -> bool:
        """Every row trains, once, in file order: the lineage leaf records no indices."""
        return self.train == tuple(range(self.rows))


def row_key(row: Mapping[str, Any]) -> str:
    """What makes two rows one training row. Classification: the text after NFKC, case folding and
    whitespace collapse, and the label (the rule duplicate credit uses for exact copies). Causal LM:
    the prompt and completion exactly (a text row is a completion with an empty prompt, as it
    trains), since there case and spacing are what the model learns."""
    if "label" in row:
        fields = ["classification", normalise(str(row["text"])), row["label"]]
    else:
        fields = ["causal-lm", str(row.get("prompt", "")), str(row.get("completion", row.get("text", "")))]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def find_repeats(kept: Sequence[Candidate], near: bool) -> set[tuple[int, int]]:
    """(contribution id, row index) of each row that repeats an earlier row (step 2 of the module doc):
    the same `row_key` as any earlier row, or with `near` in the duplicate group of an earlier
    contribution's row."""
    ordered = sorted(kept, key=lambda c: c.contribution_id)
    for c in ordered:
        for name, values in (("row keys", c.row_keys), ("row texts", c.row_texts)):
            if values and len(values) != c.rows:
                raise SelectionError(f"contribution {c.contribution_id}: {len(values)} {name} for {c.rows} rows")
    seen: set[str] = set()
    out: set[tuple[int, int]] = set()
    for c in ordered:
        for i, key in enumerate(c.row_keys):
            if key in seen:
                out.add((c.contribution_id, i))
            seen.add(key)
    return out | _near_repeats(ordered) if near else out


def _near_repeats(ordered: Sequence[Candidate]) -> set[tuple[int, int]]:
    rows = [(c.contribution_id, i, text, label) for c in ordered for i, (text, label) in enumerate(c.row_texts)]
    if not rows:
        return set()
    heads = duplicate_groups([r[2] for r in rows], [r[3] for r in rows], [(r[0], r[1]) for r in rows])
    return {(cid, i) for (cid, i, _, _), head in zip(rows, heads) if rows[head][0] != cid}


def row_texts(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(text, label) of each row of a classification file; () for a causal-LM file, whose near
    duplicates are not repeats (its exact key keeps case and spacing as content)."""
    if not rows or not all("label" in row for row in rows):
        return ()
    return tuple((str(row["text"]), str(row["label"])) for row in rows)


def _rng(seed: int, datanet_id: int, purpose: str) -> random.Random:
    # A digest, not Python's hash(): the same in every process whatever PYTHONHASHSEED says.
    digest = hashlib.sha256(f"provenant.selection/1:{seed}:{datanet_id}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _passes(c: Candidate, f: SelectionFilters) -> bool:
    who = c.contributor.lower()
    return ((not f.contributors or who in f.contributors) and who not in f.exclude_contributors
            and (f.from_block is None or c.block_number >= f.from_block)
            and (f.to_block is None or c.block_number <= f.to_block)
            and (f.from_time is None or c.timestamp >= f.from_time)
            and (f.to_time is None or c.timestamp <= f.to_time))


def plan_selection(candidates: Sequence[Candidate], filters: SelectionFilters, seed: int) -> list[ContributionPlan]:
    """The rows of each kept contribution that train and that are held out (see the module doc)."""
    by_datanet: dict[int, list[Candidate]] = defaultdict(list)
    for c in sorted(candidates, key=lambda c: c.contribution_id):
        if _passes(c, filters):
            by_datanet[c.datanet_id].append(c)
    unknown = sorted((set(filters.max_rows) | set(filters.weights)) - {c.datanet_id for c in candidates})
    if unknown:
        raise SelectionError(f"row caps or weights name Datanets {unknown}, which are not being trained on")
    repeats = (find_repeats([c for kept in by_datanet.values() for c in kept], filters.near_repeats)
               if filters.dedup else set())
    plans: list[ContributionPlan] = []
    for datanet_id in sorted(by_datanet):
        kept = by_datanet[datanet_id]
        pool = [(c.contribution_id, i) for c in kept for i in range(c.rows) if (c.contribution_id, i) not in repeats]
        _rng(seed, datanet_id, "order").shuffle(pool)
        n_eval = 0
        if filters.held_out > 0 and len(pool) >= 2:
            n_eval = min(len(pool) - 1, max(1, int(filters.held_out * len(pool))))
        held, train = pool[:n_eval], pool[n_eval:]
        train = train[:filters.max_rows.get(datanet_id, len(train))]
        weight = filters.weights.get(datanet_id, 1.0)
        if weight != 1.0 and train:
            want = max(1, round(weight * len(train)))
            extra = list(train)
            _rng(seed, datanet_id, "weight").shuffle(extra)
            train = train * (want // len(train)) + extra[:want % len(train)]
        train_of: dict[int, list[int]] = defaultdict(list)
        held_of: dict[int, list[int]] = defaultdict(list)
        for cid, i in train:
            train_of[cid].append(i)
        for cid, i in held:
            held_of[cid].append(i)
        plans += [ContributionPlan(contribution_id=c.contribution_id, datanet_id=datanet_id,
                                   train=tuple(sorted(train_of[c.contribution_id])),
                                   held_out=tuple(sorted(held_of[c.contribution_id])), rows=c.rows,
                                   repeats=tuple(i for i in range(c.rows) if (c.contribution_id, i) in repeats))
                  for c in kept]  # even those capped to nothing, or all repeats: they were considered
    if not any(p.train for p in plans):
        raise SelectionError("the selection filters leave no rows to train on")
    return plans


def summarize(plans: Sequence[ContributionPlan]) -> dict[str, dict[str, int]]:
    """Per Datanet (id as a string): contributions that train, training rows, held-out rows and rows
    dropped as repeats."""
    out: dict[str, dict[str, int]] = {}
    for p in plans:
        s = out.setdefault(str(p.datanet_id), {"contributions": 0, "train_rows": 0, "held_out_rows": 0,
                                               "repeated_rows": 0})
        s["contributions"] += 1 if p.train else 0
        s["train_rows"] += len(p.train)
        s["held_out_rows"] += len(p.held_out)
        s["repeated_rows"] += len(p.repeats)
    return out
