"""Benchmark tasks with known ground truth, generated here (no public benchmark's test set).

Both tasks share one cast of contributors, each with a distinct role:
  alice   - an honest skill
  bob     - an honest skill (the one the Sybil copies)
  carol   - an honest skill, but 15% of her rows carry the wrong label / a wrong completion; in the
            classification task she teaches negation, the skill MiniLM learns (see skill_owners)
  dave    - an honest skill
  erin    - redundant bulk: many near-copies of a handful of low-signal rows from a domain the
            test set never asks about (volume without value)
  mallory - a Sybil: bob's rows, verbatim, from a second wallet (classification with `sybil_edit`:
            each row edited by one word, so that it is no longer an exact copy; see SYBIL_EDITS)

Classification skills are not lexically trivial: every content word appears under both labels, and
the label follows from a combination (item x category, order x relation, negation x state) or from
world knowledge (which of two things is bigger). The causal-LM skills are string transformations
of random letters under one shared instruction word, routed by the input's length (causal_task).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field


class TaskError(ValueError):
    """A task cannot be generated with the requested sizes."""


CONTRIBUTORS = ("alice", "bob", "carol", "dave", "erin", "mallory")
SKILL_OWNER = {"category": "alice", "size": "bob", "order": "carol", "negation": "dave"}  # see skill_owners
FLIPPED_CONTRIBUTOR, BULK_CONTRIBUTOR, SYBIL, SYBIL_VICTIM = "carol", "erin", "mallory", "bob"
# The classification skill whose rows carry the flipped labels. A wrong label can only be told from a
# right one against a rule the model learns from the clean rows. With every row clean (the cast of
# sessions 1-12, draws 0-2, two training seeds each) the factory's MiniLM classifier reached test
# accuracy 0.77-1.00 on negation but 0.43-0.53 (chance) on event order, which then held the flipped
# labels, so no model-based detector could beat chance on them. With carol's flips, negation reaches
# 0.55-0.75 at 3 epochs (draws 0-4) and 0.90 at 6 (draw 0): learnt, if not fully.
CLASSIFICATION_FLIPPED_SKILL = "negation"


def skill_owners(flipped_skill: str) -> dict[str, str]:
    """SKILL_OWNER with the flipped contributor moved to `flipped_skill` (its owner takes hers)."""
    if flipped_skill not in SKILL_OWNER:
        raise TaskError(f"unknown skill {flipped_skill!r}; choose from {sorted(SKILL_OWNER)}")
    owners = dict(SKILL_OWNER)
    carols = next(skill for skill, owner in owners.items() if owner == FLIPPED_CONTRIBUTOR)
    owners[carols], owners[flipped_skill] = owners[flipped_skill], FLIPPED_CONTRIBUTOR
    return owners


@dataclass(frozen=True)
class Row:
    text: str  # classification: the statement; causal LM: the prompt
    label: str  # classification: "true"/"false"; causal LM: the completion
    contributor: str
    skill: str
    flipped: bool = False  # ground truth for mislabelled-data detection


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "classification" or "causal"
    train: tuple[Row, ...]
    test: tuple[Row, ...]  # clean rows of the four skills; their owners are the top-1 ground truth
    notes: dict = field(default_factory=dict)

    def contributor_rows(self, contributor: str) -> list[int]:
        return [i for i, row in enumerate(self.train) if row.contributor == contributor]


def _append_word(text: str) -> str:
    return text + " indeed"


def _insert_word(text: str) -> str:
    words = text.split(" ")
    middle = len(words) // 2
    return " ".join(words[:middle] + ["really"] + words[middle:])


# How the Sybil edits the text of each copied classification row: "verbatim" not at all; "append": a
# word at the end; "insert": a word in the middle. Either escapes exact dedup, so the copy trains;
# the index's "words added" duplicate test is what groups it for credit. The causal task's
# Sybil stays verbatim: a word added to "do abcd=" is another instruction, not an edited copy.
SYBIL_EDITS = {"verbatim": lambda text: text, "append": _append_word, "insert": _insert_word}


def _sybil_rows(train: list[Row], edit: str) -> list[Row]:
    if edit not in SYBIL_EDITS:
        raise TaskError(f"unknown Sybil edit {edit!r}; choose from {sorted(SYBIL_EDITS)}")
    return [Row(SYBIL_EDITS[edit](r.text), r.label, SYBIL, r.skill) for r in train if r.contributor == SYBIL_VICTIM]


# -- classification -----------------------------------------------------------------------------
CATEGORIES = {  # small vocabularies: a few dozen rows must be able to teach the pairing
    "fruit": ("apple", "banana", "mango", "cherry"),
    "vehicle": ("truck", "bicycle", "bus", "tractor"),
    "tool": ("hammer", "wrench", "saw", "drill"),
}
CATEGORY_TEMPLATES = ("a {item} is a kind of {cat}", "the {item} counts as a {cat}", "you could call a {item} a {cat}",
                      "every {item} is a {cat}", "i would file a {item} under {cat}", "a {item} is one type of {cat}")
SIZES = ("ant", "mouse", "cat", "dog", "horse", "elephant", "whale", "mountain")  # increasing size
SIZE_TEMPLATES = ("a {a} is bigger than a {b}", "compared with a {b}, a {a} is bigger",
                  "a {a} is larger than a {b}")
EVENTS = (("woke up", "ate breakfast"), ("planted the seeds", "harvested the crop"),
          ("wrote the letter", "mailed the letter"), ("caught the fish", "cooked the fish"))
ORDER_TEMPLATES = ("{name} {a} before {name} {b}", "first {name} {a}, then {name} {b}",
                   "{name} {a} and later {b}")
NAMES = ("maria", "tom", "yuki", "omar", "lena", "raj", "ana", "li")
PLACES = ("bakery", "museum", "library", "pharmacy", "gym", "post office", "bank", "zoo")
TIMES = ("today", "on sunday", "this morning", "tonight", "at noon", "during the holiday")
NEGATION_TEMPLATES = ("the {place} is {state} {time} and visitors can walk in",
                      "since the {place} is {state} {time}, people may enter")


def _category_row(rng: random.Random, truth: bool) -> str:
    cat = rng.choice(sorted(CATEGORIES))
    if not truth:
        cat_other = rng.choice([c for c in sorted(CATEGORIES) if c != cat])
        item = rng.choice(CATEGORIES[cat_other])
    else:
        item = rng.choice(CATEGORIES[cat])
    return rng.choice(CATEGORY_TEMPLATES).format(item=item, cat=cat)


def _size_row(rng: random.Random, truth: bool) -> str:
    i, j = sorted(rng.sample(range(len(SIZES)), 2))
    while j - i < 2:  # keep the comparison unambiguous
        i, j = sorted(rng.sample(range(len(SIZES)), 2))
    small, big = SIZES[i], SIZES[j]
    a, b = (big, small) if truth else (small, big)  # every object appears on both sides, in both labels
    return rng.choice(SIZE_TEMPLATES).format(a=a, b=b)


def _order_row(rng: random.Random, truth: bool) -> str:
    first, second = rng.choice(EVENTS)
    name = rng.choice(NAMES)
    a, b = (first, second) if truth else (second, first)  # true when the events come in their natural order
    return rng.choice(ORDER_TEMPLATES).format(name=name, a=a, b=b)


def _negation_row(rng: random.Random, truth: bool) -> str:
    # open <-> true; the word "not" flips it, so neither "open", "closed" nor "not" decides alone.
    state = rng.choice(("open", "not closed")) if truth else rng.choice(("closed", "not open"))
    return rng.choice(NEGATION_TEMPLATES).format(place=rng.choice(PLACES), state=state, time=rng.choice(TIMES))


_SKILL_ROW = {"category": _category_row, "size": _size_row, "order": _order_row, "negation": _negation_row}
_BULK_BASE = (("status check: all systems nominal", "true"), ("status check: error detected", "false"),
              ("the sky report says sunny and clear", "true"), ("the sky report says sunny and dark", "false"),
              ("ping reply received from server", "true"), ("ping reply lost from server", "false"))
# Bulk rows whose label follows a cue no test row carries (the colour of a form), with no polarity
# to lend: the contrastive pairs above ("nominal" / "error detected") teach the negation skill's
# pattern, measured in session 14 (removing them drops negation below chance), so they are not
# low-signal on this task.
_INERT_BULK_BASE = (("form 12 was stamped in blue ink", "true"), ("form 12 was stamped in green ink", "false"),
                    ("crate 7 was painted blue", "true"), ("crate 7 was painted green", "false"),
                    ("the third tile is blue", "true"), ("the third tile is green", "false"))
BULK_STYLES = {"contrast": _BULK_BASE, "inert": _INERT_BULK_BASE}


def _skill_rows(rng: random.Random, skill: str, n: int, exclude: set[str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n:
            raise TaskError(f"cannot draw {n} distinct {skill} rows")
        truth = len(rows) % 2 == 0  # balanced labels
        text = _SKILL_ROW[skill](rng, truth)
        if text in exclude:
            continue
        exclude.add(text)
        rows.append((text, "true" if truth else "false"))
    return rows


def classification_task(rows_per_skill: int = 64, bulk_rows: int = 192, test_per_skill: int = 30,
                        flip_fraction: float = 0.15, seed: int = 0, sybil_edit: str = "verbatim",
                        flipped_skill: str = CLASSIFICATION_FLIPPED_SKILL, test_weights: Mapping[str, int] | None = None,
                        bulk_style: str = "contrast") -> Task:
    """Statements labelled true/false; see the module docstring for who contributes what.
    flipped_skill: the skill the flipped contributor teaches (and whose rows she mislabels).
    test_weights: test rows per skill as multiples of test_per_skill (default 1 each); graded
    weights give the teachers graded leave-one-out values, since mean test loss is a share-weighted
    sum of the skills' losses. bulk_style: the bulk contributor's rows (BULK_STYLES)."""
    weights = {skill: 1 for skill in SKILL_OWNER} if test_weights is None else dict(test_weights)
    if set(weights) != set(SKILL_OWNER) or min(weights.values()) < 1:
        raise TaskError(f"test_weights needs a positive integer for each of {sorted(SKILL_OWNER)}")
    if bulk_style not in BULK_STYLES:
        raise TaskError(f"unknown bulk style {bulk_style!r}; choose from {sorted(BULK_STYLES)}")
    bulk_base = BULK_STYLES[bulk_style]
    if rows_per_skill < 4 or test_per_skill < 1 or bulk_rows < len(bulk_base):
        raise TaskError("rows_per_skill >= 4, test_per_skill >= 1 and bulk_rows >= 6 are required")
    if not 0.1 <= flip_fraction <= 0.2:
        raise TaskError("flip_fraction must be in [0.1, 0.2]")
    owners = skill_owners(flipped_skill)
    rng = random.Random(seed)
    seen: set[str] = set()
    test = [Row(text, label, owners[skill], skill)
            for skill in owners for text, label in _skill_rows(rng, skill, weights[skill] * test_per_skill, seen)]
    train: list[Row] = []
    for skill, owner in owners.items():
        rows = _skill_rows(rng, skill, rows_per_skill, seen)
        flip = set(rng.sample(range(len(rows)), round(flip_fraction * len(rows)))) if owner == FLIPPED_CONTRIBUTOR else set()
        for k, (text, label) in enumerate(rows):
            if k in flip:
                label = "false" if label == "true" else "true"
            train.append(Row(text, label, owner, skill, flipped=k in flip))
    fillers = ("", ".", " ok", " today", "!", " again", " now", " (auto)")
    for k in range(bulk_rows):  # near-copies: 6 base rows x punctuation / filler / counter variants
        text, label = bulk_base[k % len(bulk_base)]
        variant = f"{text}{fillers[(k // len(bulk_base)) % len(fillers)]}"
        if k >= len(bulk_base) * len(fillers):
            variant = f"{variant} #{k // (len(bulk_base) * len(fillers))}"
        train.append(Row(variant, label, BULK_CONTRIBUTOR, "bulk"))
    train.extend(_sybil_rows(train, sybil_edit))
    return Task("classification", "classification", tuple(train), tuple(test),
                notes={"rows_per_skill": rows_per_skill, "bulk_rows": bulk_rows, "flip_fraction": flip_fraction,
                       "seed": seed, "sybil_edit": sybil_edit, "flipped_skill": flipped_skill,
                       "test_weights": weights, "bulk_style": bulk_style})


# -- causal LM ----------------------------------------------------------------------------------
LETTERS = "abcdefghjkmnpqrstuvwxyz"
STRING_OPS = {  # named primitives the benchmark's base LM is pretrained on (lm_pretrain.py)
    "rv": lambda s: s[::-1],  # reverse
    "rl": lambda s: s[1:] + s[0],  # rotate left by one
    "rr": lambda s: s[-1] + s[:-1],  # rotate right by one
    "sw": lambda s: "".join(s[i + 1] + s[i] for i in range(0, len(s) - 1, 2)) + (s[-1] if len(s) % 2 else ""),
}
CAUSAL_OP = "do"  # the one instruction word of every skill row: no prompt word tells the skills apart
_CAUSAL_SKILLS = {  # skill -> (input length, primitive): the contributor teaches "do" on that length
    "category": (3, "rv"),  # alice: reverse 3-letter inputs
    "size": (4, "rl"),  # bob: rotate 4-letter inputs
    "order": (5, "rr"),  # carol: rotate 5-letter inputs right (15% of her rows carry a wrong completion)
    "negation": (6, "sw"),  # dave: swap the pairs of 6-letter inputs
}
CAUSAL_SKILL_NAMES = {"category": "reverse/3", "size": "rotate-left/4", "order": "rotate-right/5", "negation": "swap/6"}


def causal_task(rows_per_skill: int = 48, bulk_rows: int = 48, test_per_skill: int = 12,
                flip_fraction: float = 0.15, seed: int = 0) -> Task:
    """Prompt `"do <letters>="`, completion the transformed letters (and EOS at training time).

    Not lexically trivial: every skill row starts with the same word, the letters are random, and every
    completion is a permutation of its input's letters (the same multiset), so no word or character
    n-gram names the skill; what decides it is the input's length, which the model
    must count. The base LM knows the four primitives under other names (lm_pretrain.py) but not which
    one `do` means for which length: that routing is each contributor's knowledge."""
    if rows_per_skill < 4 or test_per_skill < 1 or bulk_rows < 4:
        raise TaskError("rows_per_skill >= 4, test_per_skill >= 1 and bulk_rows >= 4 are required")
    if not 0.1 <= flip_fraction <= 0.2:
        raise TaskError("flip_fraction must be in [0.1, 0.2]")
    rng = random.Random(seed + 1000)
    seen: set[str] = set()

    def draw(skill: str, n: int) -> list[tuple[str, str]]:
        length, op = _CAUSAL_SKILLS[skill]
        out = []
        while len(out) < n:
            s = "".join(rng.choice(LETTERS) for _ in range(length))
            prompt = f"{CAUSAL_OP} {s}="
            if prompt not in seen and STRING_OPS[op](s) != s:
                seen.add(prompt)
                out.append((prompt, STRING_OPS[op](s)))
        return out

    test = [Row(p, c, SKILL_OWNER[skill], skill) for skill in SKILL_OWNER for p, c in draw(skill, test_per_skill)]
    train: list[Row] = []
    for skill, owner in SKILL_OWNER.items():
        rows = draw(skill, rows_per_skill)
        flip = set(rng.sample(range(len(rows)), round(flip_fraction * len(rows)))) if owner == FLIPPED_CONTRIBUTOR else set()
        for k, (prompt, completion) in enumerate(rows):
            if k in flip:  # a wrong completion with the input's own letters (a random other order), so
                letters = list(completion)  # comparing letters with the prompt cannot spot it
                while "".join(letters) == completion:
                    rng.shuffle(letters)
                completion = "".join(letters)
            train.append(Row(prompt, completion, owner, skill, flipped=k in flip))
    bulk_base = (("hi=", "hello"), ("bye=", "goodbye"), ("ok=", "okay"), ("thx=", "thanks"))
    for k in range(bulk_rows):
        prompt, completion = bulk_base[k % len(bulk_base)]
        suffix = "" if k < len(bulk_base) else " " * (1 + (k // len(bulk_base)) % 3)
        train.append(Row(suffix + prompt, completion, BULK_CONTRIBUTOR, "bulk"))
    train.extend(_sybil_rows(train, "verbatim"))
    return Task("causal-lm", "causal", tuple(train), tuple(test),
                notes={"rows_per_skill": rows_per_skill, "bulk_rows": bulk_rows, "flip_fraction": flip_fraction,
                       "seed": seed, "skills": CAUSAL_SKILL_NAMES})
