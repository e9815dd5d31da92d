"""``bundled/fin_sentiment``: synthetic financial-news sentiment in fingpt-sentiment-train style.

Every sentence is composed from invented parts, so no third-party text is involved. The label
follows one rule that a model has to learn:

* a *movement* sentence says a metric moved: ``<company>'s <metric> <verb> <magnitude> <period>``.
  Flat verbs ("held steady") give ``neutral``; otherwise the label is positive when the direction
  is good for that metric: up for revenue or profit, down for losses, costs or debt
  ("net loss fell" is positive, "costs rose" is negative);
* an *event* sentence (a meeting date, an appointment) carries no cue and is ``neutral``.

Names of places, people and the source of the news are distractors that never decide the label.
The test split is built only from combinations train never shows: held-out sentence templates,
held-out companies and held-out (metric, verb) pairs. Every metric and verb still appears in train,
so a model scores well on test only by learning the cue -> label rule.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from utils.bundled._split import allowed, check_split, private_rng

INSTRUCTION = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
LABELS = ("negative", "neutral", "positive")
SIZES = {"train": 3000, "test": 300}
PAIR_TEST_FRACTION = 0.25  # share of (metric, verb) pairs that only test uses

# Metrics whose increase is good news, and metrics whose increase is bad news.
GOOD_METRICS = (
    "net sales", "revenue", "operating profit", "net profit", "pre-tax profit", "order intake",
    "operating cash flow", "order backlog", "gross profit",
)
BAD_METRICS = (
    "operating loss", "net loss", "pre-tax loss", "net debt", "costs", "production costs",
    "credit losses", "restructuring charges", "warranty expenses",
)
VERBS = {
    "up": ("rose", "increased", "grew", "climbed", "jumped", "surged", "went up", "edged up"),
    "down": ("fell", "decreased", "declined", "dropped", "slipped", "slumped", "went down", "edged down"),
    "flat": ("held steady", "remained flat", "stayed level", "remained unchanged", "stayed flat", "held level"),
}

# Sentence frames. {move} = verb + magnitude; ids listed in TEST_* are never used by train.
MOVEMENT_TEMPLATES = (
    "{companys} {metric} {move} {period}{extra}.",
    "{Period}, {companys} {metric} {move}{extra}.",
    "{company} said its {metric} {move} {period}.",
    "{Metric} at {company} {move} {period}{extra}.",
    "According to {company}, {metric} {move} {period}.",
    "{company} reported that its {metric} {move} {period}{extra}.",
    "The {metric} of {company} {move} {period}{extra}.",
    "{company}: {metric} {move} {period}{extra}.",
    "In its interim report, {company} said that {metric} {move} {period}.",
    "{company} announced that {metric} {move} {period}{extra}.",
    "{Period}, {metric} at {company} {move}{extra}.",
)
TEST_MOVEMENT_TEMPLATES = frozenset({3, 8, 10})
EVENT_TEMPLATES = (
    "{company} will publish its {report} on {weekday}, {month} {day}.",
    "{company} has appointed {person} as chief financial officer{extra}.",
    "{company} will hold its annual general meeting in {city} on {month} {day}.",
    "The board of {company} proposes that {person} be elected as chairman.",
    "{company} will move its head office to {city} next year{extra}.",
    "{person} will start as head of investor relations at {company} in {month}.",
    "Shares of {company} will trade under a new ticker from {month} {day}{extra}.",
)
TEST_EVENT_TEMPLATES = frozenset({2, 5})

_NAME_STARTS = ("Nor", "Kel", "Ast", "Vel", "Tar", "Bro", "Cor", "Dal", "Esk", "Fen", "Gry", "Hal")
_NAME_ENDS = ("vex", "dara", "mion", "tekka", "lund", "sora", "vik", "rion")
_NAME_SUFFIXES = ("Oyj", "Group", "Holdings", "Corp", "plc", "AB", "Industries", "Systems")
COMPANIES = tuple(
    f"{_NAME_STARTS[i % 12]}{_NAME_ENDS[(i * 5 + i // 12) % 8]} {_NAME_SUFFIXES[(i * 3) % 8]}" for i in range(24)
)
TEST_COMPANIES = frozenset(COMPANIES[3::4])  # every fourth company appears only in test

_PERSONS = tuple(f"{f} {s}" for f in ("Aino", "Mikael", "Sanna", "Tobias", "Leena", "Oskar")
                 for s in ("Kerttula", "Ahlgrenberg", "Vuorma", "Lindqvale"))
_CITIES = ("Vaskila", "Orrenby", "Marholm", "Tessaro", "Kuusvaara", "Lindeport")
_MONTHS = ("January", "February", "March", "April", "May", "June", "September", "October", "November")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_REPORTS = ("interim report", "half-year report", "annual report", "third-quarter results")
_ORDINALS = ("first", "second", "third", "fourth")
_EXTRAS = (
    "", "", ", the company said", ", it said in a statement", ", according to a stock exchange release",
    ", the group said on {weekday}", ", chief executive {person} said", ", the report showed",
)


@dataclass(frozen=True)
class SentimentExample:
    """One sentence with the structure it was built from (kept so tests can recheck the label)."""

    sentence: str
    label: str
    kind: str  # "movement" or "event"
    template: int
    company: str
    metric: str | None = None
    verb: str | None = None
    direction: str | None = None  # "up", "down" or "flat"

    def row(self) -> dict[str, str]:
        """The public columns: FinGPT's instruction/input/output plus ``label`` for partitioning."""
        return {"instruction": INSTRUCTION, "input": self.sentence, "output": self.label, "label": self.label}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def _period(rng: random.Random) -> str:
    year = rng.randint(2019, 2024)
    options = (
        f"in the {rng.choice(_ORDINALS)} quarter",
        f"in the {rng.choice(_ORDINALS)} quarter of {year}",
        f"in the {rng.choice(_ORDINALS[:2])} half of {year}",
        f"in {year}",
        f"in January-{rng.choice(_MONTHS[2:])} {year}",
        "in the period under review",
    )
    return rng.choice(options)


def _magnitude(rng: random.Random, direction: str) -> str:
    low, high = sorted(rng.sample(range(3, 960), 2))
    if direction == "flat":
        return rng.choice(("", f" at EUR {high} million", f" at EUR {low}.{rng.randint(1, 9)} million"))
    start, end = (low, high) if direction == "up" else (high, low)
    return rng.choice((
        "", f" by {rng.randint(2, 60)} percent", f" by {rng.randint(2, 60)}%", f" to EUR {end} million",
        f" from EUR {start} million to EUR {end} million",
    ))


def _fill(rng: random.Random, template: str, **slots: str) -> str:
    slots.setdefault("extra", rng.choice(_EXTRAS))
    common = {
        "person": rng.choice(_PERSONS), "city": rng.choice(_CITIES), "month": rng.choice(_MONTHS),
        "weekday": rng.choice(_WEEKDAYS), "day": str(rng.randint(1, 28)), "report": rng.choice(_REPORTS),
    }
    slots["extra"] = slots["extra"].format(**common)
    return template.format(**common, **slots)


def _companies(split: str) -> tuple[str, ...]:
    return tuple(c for c in COMPANIES if (c in TEST_COMPANIES) == (split == "test"))


def _templates(count: int, held_out: frozenset[int], split: str) -> tuple[int, ...]:
    return tuple(i for i in range(count) if (i in held_out) == (split == "test"))


def _movement(rng: random.Random, split: str, label: str) -> SentimentExample | None:
    if label == "neutral":
        direction, metric = "flat", rng.choice(GOOD_METRICS + BAD_METRICS)
    else:
        # Good and bad metrics equally often, so the metric's polarity cannot be ignored.
        good = rng.random() < 0.5
        metric = rng.choice(GOOD_METRICS if good else BAD_METRICS)
        direction = "up" if (label == "positive") == good else "down"
    verb = rng.choice(VERBS[direction])
    if not allowed(f"{metric}|{verb}", split, PAIR_TEST_FRACTION):
        return None
    template = rng.choice(_templates(len(MOVEMENT_TEMPLATES), TEST_MOVEMENT_TEMPLATES, split))
    company = rng.choice(_companies(split))
    period = _period(rng)
    sentence = _fill(
        rng, MOVEMENT_TEMPLATES[template], company=company, companys=_possessive(company), metric=metric,
        Metric=_capitalise(metric), move=verb + _magnitude(rng, direction), period=period, Period=_capitalise(period),
    )
    return SentimentExample(sentence, label, "movement", template, company, metric, verb, direction)


def _event(rng: random.Random, split: str) -> SentimentExample:
    template = rng.choice(_templates(len(EVENT_TEMPLATES), TEST_EVENT_TEMPLATES, split))
    company = rng.choice(_companies(split))
    sentence = _fill(rng, EVENT_TEMPLATES[template], company=company)
    return SentimentExample(sentence, "neutral", "event", template, company)


@functools.cache
def generate(split: str) -> tuple[SentimentExample, ...]:
    """All examples of ``split`` with their structure; classes exactly balanced, sentences unique."""
    check_split(split)
    rng = private_rng("fin_sentiment", split)
    per_label = SIZES[split] // len(LABELS)
    examples: list[SentimentExample] = []
    seen: set[str] = set()
    for index in range(per_label * len(LABELS)):
        label = LABELS[index % len(LABELS)]
        while True:
            # Half of the neutral sentences are flat movements, half are events without a cue.
            if label == "neutral" and rng.random() < 0.5:
                example = _event(rng, split)
            else:
                example = _movement(rng, split, label)
            if example is not None and example.sentence not in seen:
                break
        seen.add(example.sentence)
        examples.append(example)
    return tuple(examples)
