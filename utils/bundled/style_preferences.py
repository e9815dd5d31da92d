"""``bundled/style_preferences``: DPO pairs whose clients disagree, for heterogeneous preferences.

Two groups of users ask the same kinds of questions (a word problem from ``bundled/arithmetic``, a
news sentence to label from ``bundled/fin_sentiment``) and get the same two correct answers, one
concise (the bare number or label) and one detailed (the reasoning or the evidence, then the
answer). The ``concise`` group prefers the concise answer, the ``detailed`` group the detailed one:
on the same kind of prompt their preferences conflict, so no single policy can satisfy both.
Columns: ``prompt``, ``chosen``, ``rejected``, ``group`` (concise / detailed), ``user`` (user0 ..
user9; users 0-4 are concise, 5-9 detailed) and ``category`` (arithmetic / sentiment).
``--split_strategy natural --partition_column user`` makes each user a client; ``group`` makes one
client per group. Every user has rows in both splits; test prompts come from the test splits of
the source datasets (held-out combinations), so no test prompt is a training prompt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from utils.bundled import arithmetic, fin_sentiment
from utils.bundled._split import check_split, private_rng

GROUPS = ("concise", "detailed")
USERS = 10  # users 0 .. 4 are concise, 5 .. 9 detailed
SIZES = {"train": 2000, "test": 200}


@dataclass(frozen=True)
class StylePair:
    """One pair and the styles it was built from (kept so tests can recheck which one is chosen)."""

    prompt: str
    concise: str
    detailed: str
    user: int
    category: str

    @property
    def group(self) -> str:
        """The user's group."""
        return GROUPS[self.user * len(GROUPS) // USERS]

    def row(self) -> dict[str, str]:
        """``prompt``/``chosen``/``rejected`` as the user's group prefers, with ``group``, ``user`` and ``category``."""
        chosen, rejected = (self.concise, self.detailed) if self.group == "concise" else (self.detailed, self.concise)
        return {"prompt": self.prompt, "chosen": chosen, "rejected": rejected, "group": self.group,
                "user": f"user{self.user}", "category": self.category}


def _arithmetic(problem: arithmetic.ArithmeticProblem, user: int) -> StylePair:
    reasoning = problem.answer().split("\n####")[0]
    return StylePair(problem.question, f"{problem.result}", f"{reasoning} So the answer is {problem.result}.", user,
                     "arithmetic")


def _sentiment(example: fin_sentiment.SentimentExample, user: int) -> StylePair:
    prompt = f"{fin_sentiment.INSTRUCTION} {example.sentence}"
    detailed = (f"The sentence reports: \"{example.sentence}\" For the company this is {example.label} news, so "
                f"the sentiment is {example.label}.")
    return StylePair(prompt, example.label, detailed, user, "sentiment")


@functools.cache
def generate(split: str) -> tuple[StylePair, ...]:
    """All pairs of ``split``: categories alternate, users cycle over both, so every user has both categories."""
    check_split(split)
    rng = private_rng("style_preferences", split)
    half = SIZES[split] // 2
    problems = rng.sample(arithmetic.generate(split), half)
    sentences = rng.sample(fin_sentiment.generate(split), half)
    pairs = []
    for index in range(half):
        pairs.append(_arithmetic(problems[index], index % USERS))
        pairs.append(_sentiment(sentences[index], index % USERS))
    return tuple(pairs)
