"""``bundled/preferences``: DPO pairs whose ``chosen`` answer is correct by construction.

Four categories, equally often: ``arithmetic`` (a word problem from ``bundled/arithmetic``; the
rejected answer has the same reasoning with a wrong final number), ``sentiment`` (a sentence from
``bundled/fin_sentiment``; the rejected answer is another label), ``comparison`` (which of two
numbers is larger/smaller) and ``parity`` (is a number even or odd). Chosen and rejected share their
wording and differ only in correctness, so preference accuracy measures whether a model prefers
the right answer, not a style. Test prompts come from held-out combinations: the test splits of
the other bundled datasets, held-out number pairs and held-out numbers.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from utils.bundled import arithmetic, fin_sentiment
from utils.bundled._split import allowed, check_split, private_rng

CATEGORIES = ("arithmetic", "sentiment", "comparison", "parity")
SIZES = {"train": 2000, "test": 200}
TEST_FRACTION = 0.2  # share of number pairs / numbers that only test uses

COMPARISON_PROMPTS = {
    "larger": ("Which number is larger, {a} or {b}?", "Which is the bigger number: {a} or {b}?"),
    "smaller": ("Which number is smaller, {a} or {b}?", "Which is the smaller number: {a} or {b}?"),
}
PARITY_PROMPTS = ("Is {n} an even or an odd number?", "Is the number {n} even or odd?")


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair and the answers it encodes (kept so tests can recheck which one is right)."""

    prompt: str
    chosen: str
    rejected: str
    category: str
    correct: str  # the verifiable answer in ``chosen`` (number, label or word)
    wrong: str  # the one in ``rejected``

    def row(self) -> dict[str, str]:
        """The public columns of a DPO dataset plus ``category`` for partitioning."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, "category": self.category}


def _wrong_number(rng: random.Random, correct: int) -> int:
    """A nearby wrong answer (off by one, two or ten), never negative."""
    while True:
        wrong = correct + rng.choice((-10, -2, -1, 1, 2, 10))
        if wrong >= 0:
            return wrong


def _arithmetic_pairs(rng: random.Random, split: str, count: int) -> list[PreferencePair]:
    pairs = []
    for problem in rng.sample(arithmetic.generate(split), count):
        wrong = _wrong_number(rng, problem.result)
        pairs.append(PreferencePair(
            problem.question, problem.answer(), problem.answer(wrong), "arithmetic", str(problem.result), str(wrong),
        ))
    return pairs


def _sentiment_pairs(rng: random.Random, split: str, count: int) -> list[PreferencePair]:
    pairs = []
    for example in rng.sample(fin_sentiment.generate(split), count):
        wrong = rng.choice([label for label in fin_sentiment.LABELS if label != example.label])
        prompt = f"{fin_sentiment.INSTRUCTION} {example.sentence}"
        pairs.append(PreferencePair(prompt, example.label, wrong, "sentiment", example.label, wrong))
    return pairs


def _comparison_pair(rng: random.Random, split: str) -> PreferencePair | None:
    a, b = rng.sample(range(10, 1000), 2)
    low, high = sorted((a, b))
    if not allowed(f"comparison|{low}|{high}", split, TEST_FRACTION):
        return None
    which = rng.choice(("larger", "smaller"))
    prompt = rng.choice(COMPARISON_PROMPTS[which]).format(a=a, b=b)
    right, other = (high, low) if which == "larger" else (low, high)
    return PreferencePair(
        prompt, f"{right} is {which} than {other}.", f"{other} is {which} than {right}.", "comparison",
        str(right), str(other),
    )


def _parity_pair(rng: random.Random, split: str) -> PreferencePair | None:
    number = rng.randint(10, 9999)
    if not allowed(f"parity|{number}", split, TEST_FRACTION):
        return None
    right, other = ("even", "odd") if number % 2 == 0 else ("odd", "even")
    article = {"even": "an even", "odd": "an odd"}
    prompt = rng.choice(PARITY_PROMPTS).format(n=number)
    chosen, rejected = f"{number} is {article[right]} number.", f"{number} is {article[other]} number."
    return PreferencePair(prompt, chosen, rejected, "parity", right, other)


def _sampled_pairs(
    rng: random.Random, split: str, count: int, make: Callable[[random.Random, str], PreferencePair | None],
) -> list[PreferencePair]:
    """``count`` pairs with distinct prompts; ``make`` returns None for a combination ``split`` may not use."""
    pairs: list[PreferencePair] = []
    seen: set[str] = set()
    while len(pairs) < count:
        pair = make(rng, split)
        if pair is not None and pair.prompt not in seen:
            seen.add(pair.prompt)
            pairs.append(pair)
    return pairs


@functools.cache
def generate(split: str) -> tuple[PreferencePair, ...]:
    """All pairs of ``split``: categories interleaved and equally often, prompts unique."""
    check_split(split)
    rng = private_rng("preferences", split)
    count = SIZES[split] // len(CATEGORIES)
    by_category = (
        _arithmetic_pairs(rng, split, count),
        _sentiment_pairs(rng, split, count),
        _sampled_pairs(rng, split, count, _comparison_pair),
        _sampled_pairs(rng, split, count, _parity_pair),
    )
    return tuple(pair for group in zip(*by_category, strict=True) for pair in group)
