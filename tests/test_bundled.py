"""Bundled datasets: deterministic, disjoint splits, balanced, answers correct; answer extraction."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import pytest

from evaluation.answers import SENTIMENT_LABELS, extract_final_number, extract_sentiment, normalise_number
from utils.bundled import (
    BUNDLED_DATASETS,
    arithmetic,
    fin_sentiment,
    is_bundled,
    load_bundled,
    preferences,
    style_preferences,
)

GENERATORS = (fin_sentiment.generate, arithmetic.generate, preferences.generate, style_preferences.generate)
COLUMNS = {
    "bundled/fin_sentiment": ["instruction", "input", "output", "label"],
    "bundled/arithmetic": ["question", "answer", "category"],
    "bundled/preferences": ["prompt", "chosen", "rejected", "category"],
    "bundled/style_preferences": ["prompt", "chosen", "rejected", "group", "user", "category"],
}
SIZES = {
    "bundled/fin_sentiment": (3000, 300), "bundled/arithmetic": (3000, 300), "bundled/preferences": (2000, 200),
    "bundled/style_preferences": (2000, 200),
}
# The column whose text must never repeat across splits.
TEXT_COLUMN = {"bundled/fin_sentiment": "input", "bundled/arithmetic": "question", "bundled/preferences": "prompt",
               "bundled/style_preferences": "prompt"}
# Written out here rather than imported, so the test checks the generator against an independent rule.
UP_IS_BAD = {"operating loss", "net loss", "pre-tax loss", "net debt", "costs", "production costs",
             "credit losses", "restructuring charges", "warranty expenses"}


def _clear_caches() -> None:
    for generate in GENERATORS:
        generate.cache_clear()


# ---------------------------------------------------------------------------------------------------
# all three datasets


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_sizes_and_columns(name: str) -> None:
    train, test = load_bundled(name, "train"), load_bundled(name, "test")
    assert (len(train), len(test)) == SIZES[name]
    assert train.column_names == test.column_names == COLUMNS[name]
    assert all(isinstance(value, str) and value for row in test for value in row.values())


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_deterministic_and_independent_of_global_rng(name: str) -> None:
    _clear_caches()
    random.seed(1)
    first = load_bundled(name, "train").to_list()
    _clear_caches()
    random.seed(2)
    second = load_bundled(name, "train").to_list()
    assert first == second
    # Generating must not consume the global random state either.
    random.seed(3)
    expected = random.random()
    random.seed(3)
    _clear_caches()
    load_bundled(name, "test")
    assert random.random() == expected, "generation consumed the global random state"


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_splits_disjoint_and_rows_unique(name: str) -> None:
    column = TEXT_COLUMN[name]
    train = load_bundled(name, "train")[column]
    test = load_bundled(name, "test")[column]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_generation_is_fast(name: str) -> None:
    _clear_caches()
    start = time.perf_counter()
    load_bundled(name, "train")
    load_bundled(name, "test")
    # Budget is < 1 s on a quiet machine; the margin absorbs a busy shared CPU.
    assert time.perf_counter() - start < 5.0


def test_each_call_gets_its_own_dataset() -> None:
    first = load_bundled("bundled/arithmetic", "test")
    first.set_format("pandas")
    second = load_bundled("bundled/arithmetic", "test")
    assert isinstance(second[0], dict)


def test_bad_name_and_split_are_rejected() -> None:
    with pytest.raises(ValueError, match="--dataset_name 'bundled/nope'.*bundled/fin_sentiment"):
        load_bundled("bundled/nope", "train")
    with pytest.raises(ValueError, match="'validation'"):
        load_bundled("bundled/arithmetic", "validation")
    assert is_bundled("bundled/preferences") and not is_bundled("gsm8k")


# ---------------------------------------------------------------------------------------------------
# fin_sentiment


def test_sentiment_classes_balanced() -> None:
    assert load_bundled("bundled/fin_sentiment", "test")["label"].count("positive") == 100
    for split, per_class in (("train", 1000), ("test", 100)):
        rows = load_bundled("bundled/fin_sentiment", split)
        assert {label: rows["label"].count(label) for label in SENTIMENT_LABELS} == dict.fromkeys(
            SENTIMENT_LABELS, per_class
        )
        assert rows["output"] == rows["label"]
        assert set(rows["instruction"]) == {
            "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
        }


@pytest.mark.parametrize("split", ["train", "test"])
def test_sentiment_label_follows_the_cue_rule(split: str) -> None:
    examples = fin_sentiment.generate(split)
    for example in examples:
        assert example.company in example.sentence
        if example.kind == "event":
            assert example.label == "neutral" and example.verb is None
            continue
        assert example.metric.lower() in example.sentence.lower()
        assert re.search(rf"\b{example.verb}\b", example.sentence)
        if example.direction == "flat":
            expected = "neutral"
        else:
            good_news = (example.direction == "up") != (example.metric in UP_IS_BAD)
            expected = "positive" if good_news else "negative"
        assert example.label == expected, example.sentence
    # Both metric polarities occur in each non-neutral class, so polarity cannot be ignored.
    for label in ("positive", "negative"):
        bad = [e.metric in UP_IS_BAD for e in examples if e.label == label and e.kind == "movement"]
        assert 0.3 < sum(bad) / len(bad) < 0.7


def test_sentiment_test_uses_held_out_combinations_of_seen_parts() -> None:
    train, test = fin_sentiment.generate("train"), fin_sentiment.generate("test")
    train_pairs = {(e.metric, e.verb) for e in train if e.kind == "movement"}
    test_pairs = {(e.metric, e.verb) for e in test if e.kind == "movement"}
    assert test_pairs and not train_pairs & test_pairs
    assert not {e.company for e in train} & {e.company for e in test}
    assert not {(e.kind, e.template) for e in train} & {(e.kind, e.template) for e in test}
    # Generalisation is possible: every metric and verb of test was seen in train.
    assert {m for m, _ in test_pairs} <= {m for m, _ in train_pairs}
    assert {v for _, v in test_pairs} <= {v for _, v in train_pairs}
    assert {"up", "down", "flat"} == {e.direction for e in test if e.kind == "movement"}


# ---------------------------------------------------------------------------------------------------
# arithmetic

REFERENCE = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "add-sub": lambda a, b, c: a + b - c,
    "mul-add": lambda a, b, c: a * b + c,
}
CATEGORY_OF = {"add": "addition", "sub": "subtraction", "mul": "multiplication",
               "add-sub": "two-step", "mul-add": "two-step"}
EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def _equations_hold(text: str) -> bool:
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    found = EQUATION.findall(text)
    return bool(found) and all(ops[op](int(x), int(y)) == int(z) for x, op, y, z in found)


@pytest.mark.parametrize("split", ["train", "test"])
def test_arithmetic_answers_are_correct(split: str) -> None:
    problems = arithmetic.generate(split)
    rows = load_bundled("bundled/arithmetic", split)
    for problem, row in zip(problems, rows, strict=True):
        expected = REFERENCE[problem.form](*problem.operands)
        assert row["answer"].endswith(f"\n#### {expected}")
        assert extract_final_number(row["answer"]) == str(expected)
        assert expected > 0 and all(0 < x < 100 for x in problem.operands)
        assert sorted(int(n) for n in re.findall(r"\d+", row["question"])) == sorted(problem.operands)
        assert _equations_hold(row["answer"]), row["answer"]
        assert row["category"] == CATEGORY_OF[problem.form]


def test_arithmetic_categories_balanced_and_operands_held_out() -> None:
    for split, per_category in (("train", 750), ("test", 75)):
        categories = load_bundled("bundled/arithmetic", split)["category"]
        assert {c: categories.count(c) for c in arithmetic.CATEGORIES} == dict.fromkeys(
            arithmetic.CATEGORIES, per_category
        )

    def combinations(split: str) -> set[tuple]:
        # Order-free for + and *, written independently of arithmetic.combination_key.
        return {(p.form, tuple(sorted(p.operands)) if p.form in ("add", "mul") else p.operands)
                for p in arithmetic.generate(split)}

    assert not combinations("train") & combinations("test")


# ---------------------------------------------------------------------------------------------------
# preferences


@pytest.mark.parametrize("split", ["train", "test"])
def test_preference_chosen_is_the_correct_answer(split: str) -> None:
    rows = load_bundled("bundled/preferences", split)
    gsm_answers = {r["question"]: r["answer"] for r in load_bundled("bundled/arithmetic", split)}
    labels = {r["input"]: r["label"] for r in load_bundled("bundled/fin_sentiment", split)}
    prefix = fin_sentiment.INSTRUCTION + " "
    counts = dict.fromkeys(preferences.CATEGORIES, 0)
    for row in rows:
        counts[row["category"]] += 1
        chosen, rejected, prompt = row["chosen"], row["rejected"], row["prompt"]
        assert chosen != rejected
        if row["category"] == "arithmetic":
            assert chosen == gsm_answers[prompt]
            assert extract_final_number(rejected) != extract_final_number(chosen)
            assert not _equations_hold(rejected.split("\n")[-2])
        elif row["category"] == "sentiment":
            assert prompt.startswith(prefix)
            assert chosen == labels[prompt[len(prefix):]]
            assert rejected in SENTIMENT_LABELS
        elif row["category"] == "comparison":
            a, b = (int(n) for n in re.findall(r"\d+", prompt))
            right = max(a, b) if "larger" in prompt or "bigger" in prompt else min(a, b)
            assert int(re.match(r"\d+", chosen).group(0)) == right
            assert int(re.match(r"\d+", rejected).group(0)) == a + b - right
        else:
            (number,) = (int(n) for n in re.findall(r"\d+", prompt))
            assert ("even" in chosen) == (number % 2 == 0) and ("odd" in chosen) == (number % 2 == 1)
            assert ("even" in rejected) != ("even" in chosen)
    size = len(rows) // len(preferences.CATEGORIES)
    assert counts == dict.fromkeys(preferences.CATEGORIES, size)


def test_preference_numbers_held_out() -> None:
    def numbers(split: str, category: str) -> set[tuple[int, ...]]:
        rows = load_bundled("bundled/preferences", split).filter(lambda r: r["category"] == category)
        return {tuple(sorted(int(n) for n in re.findall(r"\d+", p))) for p in rows["prompt"]}

    for category in ("comparison", "parity"):
        assert not numbers("train", category) & numbers("test", category)


# ---------------------------------------------------------------------------------------------------
# answer extraction


@pytest.mark.parametrize(("text", "expected"), [
    ("positive", "positive"),
    ("  Negative.", "negative"),
    ("The sentiment is NEUTRAL", "neutral"),
    ("neutral, maybe positive", "neutral"),
    ("positive or negative? negative", "positive"),
    ("It is non-negative", "negative"),
    ("positively fine", None),
    ("I cannot tell", None),
    ("", None),
])
def test_extract_sentiment(text: str, expected: str | None) -> None:
    assert extract_sentiment(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("#### 1,000", "1000"),
    ("#### 3.0", "3"),
    ("#### 2.50 dollars", "2.5"),
    ("#### -4", "-4"),
    ("first 12 then #### 5 and later #### 6 apples", "6"),
    ("no marker: 5 apples and 18 pears.", "18"),
    ("The total is $1,234.00.", "1234"),
    ("#### no number here, but 42 earlier", "42"),
    ("items 1,2,3", "3"),
    ("from 3-4 boxes", "4"),
    ("007 agents", "7"),
    ("-0.0", "0"),
    ("3x5=15", "15"),
    ("no digits at all", None),
    ("", None),
])
def test_extract_final_number(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_normalise_number() -> None:
    assert [normalise_number(n) for n in ("1,000,000", "10.00", "0.50", "-12", "000")] == [
        "1000000", "10", "0.5", "-12", "0",
    ]


# ---------------------------------------------------------------------------------------------------
# style preferences: two groups, conflicting preferences on the same kinds of prompt


@pytest.mark.parametrize("split", ["train", "test"])
def test_style_groups_prefer_opposite_answers_that_are_both_correct(split: str) -> None:
    rows = load_bundled("bundled/style_preferences", split).to_list()
    users = {}
    for row in rows:
        short, long = sorted((row["chosen"], row["rejected"]), key=len)
        assert row["chosen"] == (short if row["group"] == "concise" else long)
        assert long.endswith(f"{short}.") and short in long  # the detailed answer ends with the concise one
        if row["category"] == "arithmetic":
            assert short.isdigit()
        else:
            assert short in fin_sentiment.LABELS
        users.setdefault(row["user"], set()).add((row["group"], row["category"]))
    # Ten users, five per group, each with both categories and one group; equally many rows each.
    assert sorted(users, key=lambda u: int(u[4:])) == [f"user{i}" for i in range(10)]
    assert all(groups == {(("concise", "detailed")[int(u[4:]) // 5], c) for c in ("arithmetic", "sentiment")}
               for u, groups in users.items())
    assert Counter(row["user"] for row in rows) == dict.fromkeys(users, len(rows) // 10)
