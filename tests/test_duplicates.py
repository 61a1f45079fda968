"""Duplicate flags: exact after normalisation, near by MinHash, inside a file and across contributions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenant.datanets.duplicates import DuplicateIndex, content_key

SAMPLES = Path(__file__).resolve().parents[1] / "backend" / "provenant" / "demo" / "samples"


def rows(*texts: str, label: str = "billing") -> list[dict[str, str]]:
    return [{"text": t, "label": label} for t in texts]


def test_exact_duplicates_ignore_case_width_and_spacing_but_not_words() -> None:
    a = {"text": "Refund  please, my card was charged twice", "label": "billing"}
    b = {"text": "refund please, my card was charged twice", "label": "technical"}  # label is not content
    c = {"text": "Ｒｅｆｕｎｄ please, my card was charged twice", "label": "billing"}  # full-width: NFKC
    d = {"text": "refund please, my card was charged once", "label": "billing"}
    assert content_key(a) == content_key(b) == content_key(c) != content_key(d)
    assert content_key({"prompt": "a", "completion": "b"}) != content_key({"prompt": "a b", "completion": ""})


def test_flags_inside_a_file_and_across_contributions() -> None:
    index = DuplicateIndex()
    index.add(7, rows("the parcel arrived with a cracked screen and a missing charger cable",
                      "please close my account and delete all of my personal data from your servers today"))
    checked = rows(
        "The parcel arrived with a CRACKED screen and a missing charger cable",  # exact of 7:1
        "please close my account and delete all of my personal data from your servers tonight",  # near 7:2
        "my invoice shows a charge for a plan i never subscribed to at all",  # new
        "my invoice shows a charge for a plan i never subscribed to at all",  # exact of own line 3
        "how do i pair the headphones with a laptop over bluetooth quickly",  # new
    )
    flags = {f.line: f for f in index.check(checked)}
    assert set(flags) == {1, 2, 4}
    assert (flags[1].kind, flags[1].of_contribution, flags[1].of_line) == ("exact", 7, 1)
    assert (flags[2].kind, flags[2].of_contribution, flags[2].of_line) == ("near", 7, 2)
    assert 0.8 <= flags[2].similarity < 1.0
    assert (flags[4].kind, flags[4].of_contribution, flags[4].of_line) == ("exact", None, 3)


def test_a_copied_file_is_flagged_line_by_line_and_unrelated_rows_are_not() -> None:
    def load(name: str) -> list[dict]:
        return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines() if line.strip()]

    index = DuplicateIndex()
    index.add(1, load("alice_1.jsonl"))
    index.add(2, load("bob_1.jsonl"))
    copied = load("alice_1.jsonl")
    flags = index.check(copied)
    assert len(flags) == len(copied) and all(f.kind == "exact" and f.of_contribution == 1 for f in flags)
    # Another Datanet's rows are not flagged against these two files (carol's file does repeat its
    # own templates, and those near-duplicate lines are flagged within the file).
    assert [f for f in index.check(load("carol_1.jsonl")) if f.of_contribution is not None] == []


def test_a_copy_with_a_word_inserted_is_flagged_near_though_its_word_trigrams_differ() -> None:
    index = DuplicateIndex()
    original = "my card was charged twice for the same order"
    index.add(3, rows(original, "the app crashes every time i open the settings page"))
    checked = rows("my card was charged twice for the very same order",  # a word inside: 3-gram Jaccard 0.4
                   "my card was charged for the same order twice",  # words moved, none added: another row
                   "card charged twice",  # a subsequence, but too short to call a copy
                   "the app crashes every time i open the settings page on my phone")  # words appended
    flags = {f.line: f for f in index.check(checked)}
    assert set(flags) == {1, 4}
    assert (flags[1].kind, flags[1].of_contribution, flags[1].of_line) == ("near", 3, 1)
    assert flags[1].similarity == pytest.approx(9 / 10)  # the copied share of the words
    assert (flags[4].of_contribution, flags[4].of_line) == (3, 2)
    # inside one file too
    own = {f.line: f for f in DuplicateIndex().check(rows(original, "so " + original + " last week"))}
    assert (own[2].kind, own[2].of_contribution, own[2].of_line) == ("near", None, 1)
