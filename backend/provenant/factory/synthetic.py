"""A small synthetic topic-classification dataset for tests, benchmarks and the demo.

Each row is `<opener><subject> <event><closer>` drawn from per-topic phrase lists, so held-out rows
are new combinations rather than copies of training rows. Deterministic in `seed`.
"""

from __future__ import annotations

import random

from provenant.factory.train import Example

TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sports": (
        ("the striker", "the home team", "the coach", "the goalkeeper", "the tennis champion", "the marathon runner",
         "the league", "the captain"),
        ("scored twice in the final", "won the championship match", "praised the young defenders",
         "saved a penalty in extra time", "served three aces in a row", "broke the course record",
         "suspended two players after the derby", "signed a new contract with the club"),
    ),
    "weather": (
        ("forecasters", "the met office", "a cold front", "the storm", "a heatwave", "morning fog",
         "heavy rain", "the hurricane"),
        ("warned of snow on the hills", "brought strong winds to the coast", "pushed temperatures above forty degrees",
         "flooded low-lying streets", "closed mountain roads with ice", "is expected to clear by the afternoon",
         "knocked down power lines overnight", "raised the chance of thunderstorms"),
    ),
    "finance": (
        ("the central bank", "investors", "the stock market", "the company", "bond traders", "the treasury",
         "analysts", "the pension fund"),
        ("raised interest rates by a quarter point", "sold government bonds", "fell sharply at the open",
         "announced a share buyback", "reported quarterly earnings above estimates", "cut its inflation forecast",
         "moved into safer assets", "issued new long-dated debt"),
    ),
    "cooking": (
        ("the chef", "the recipe", "the bakery", "my grandmother", "the food critic", "the restaurant",
         "a home cook", "the pastry team"),
        ("roasted the vegetables with garlic", "needs two cups of flour and butter", "baked sourdough before dawn",
         "simmered the tomato sauce for hours", "praised the crispy dumplings", "added fresh basil to the soup",
         "whisked eggs for the omelette", "glazed the cake with dark chocolate"),
    ),
}
OPENERS = ("", "reports say ", "breaking: ", "today ", "in the news, ", "locals heard that ")
CLOSERS = ("", " again", " this week", " according to sources", " on monday", " as expected")


def synthetic_examples(n: int, seed: int = 0, labels: tuple[str, ...] = ("sports", "weather", "finance"),
                       contributions: int = 5) -> list[Example]:
    """`n` rows cycling through `labels`; row i belongs to contribution 1 + i % contributions."""
    unknown = [label for label in labels if label not in TOPICS]
    if unknown:
        raise ValueError(f"no synthetic topic for {unknown}; choose from {sorted(TOPICS)}")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        subjects, events = TOPICS[label]
        text = f"{rng.choice(OPENERS)}{rng.choice(subjects)} {rng.choice(events)}{rng.choice(CLOSERS)}"
        rows.append(Example(text=text, label=label, contribution_id=1 + i % contributions,
                            row_index=i // contributions))
    return rows
