"""``bundled/arithmetic``: GSM8K-style word problems with one or two small-number steps.

``answer`` shows the computation and ends with ``#### <number>`` as GSM8K does (without GSM8K's
``<<a+b=c>>`` calculator annotations, which a 135M model does not need). Operands are one or two
digits, so a small model can learn the task with a few minutes of LoRA training. The test split
uses only held-out operand combinations: no (operation, operands) tuple of test occurs in train.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from utils.bundled._split import allowed, check_split, private_rng

CATEGORIES = ("addition", "subtraction", "multiplication", "two-step")
SIZES = {"train": 3000, "test": 300}
TEST_FRACTION = 0.2  # share of operand combinations that only test uses

# (question, reasoning) pairs per form; {r} is the final result, {s} the intermediate one.
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "add": (
        ("{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?",
         "{name} has {a} + {b} = {r} {item} now."),
        (("{name} collected {a} {item} on Monday and {b} {item} on Tuesday. "
          "How many {item} did {name} collect in total?"),
         "{name} collected {a} + {b} = {r} {item} in total."),
        (("A shop sold {a} {item} in the morning and {b} {item} in the afternoon. "
          "How many {item} did the shop sell that day?"),
         "The shop sold {a} + {b} = {r} {item} that day."),
        (("There are {a} {item} on the table. {name} puts {b} more {item} on the table. "
          "How many {item} are on the table now?"),
         "There are {a} + {b} = {r} {item} on the table now."),
    ),
    "sub": (
        ("{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?",
         "{name} has {a} - {b} = {r} {item} left."),
        (("There are {a} {item} in a box. {name} takes {b} {item} out of the box. "
          "How many {item} are still in the box?"),
         "There are {a} - {b} = {r} {item} still in the box."),
        ("{name} needs {a} {item} and already has {b}. How many more {item} does {name} need?",
         "{name} needs {a} - {b} = {r} more {item}."),
        ("A class had {a} {item}. The students used {b} of them. How many {item} are left?",
         "There are {a} - {b} = {r} {item} left."),
    ),
    "mul": (
        (("{name} buys {a} {containers} of {item}. Each {container} holds {b} {item}. "
          "How many {item} does {name} buy?"),
         "{name} buys {a} * {b} = {r} {item}."),
        ("A {container} holds {b} {item}. How many {item} are in {a} {containers}?",
         "{a} {containers} hold {a} * {b} = {r} {item}."),
        ("{name} saves {b} dollars every week. How many dollars does {name} save in {a} weeks?",
         "In {a} weeks {name} saves {a} * {b} = {r} dollars."),
        ("Each of {a} children has {b} {item}. How many {item} do the children have altogether?",
         "The children have {a} * {b} = {r} {item} altogether."),
    ),
    "add-sub": (
        (("{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. "
          "How many {item} does {name} have now?"),
         ("After buying, {name} has {a} + {b} = {s} {item}.\n"
          "After giving some away, {name} has {s} - {c} = {r} {item}.")),
        (("A bus has {a} passengers. At the first stop {b} people get on and {c} people get off. "
          "How many passengers are on the bus now?"),
         ("After people get on, there are {a} + {b} = {s} passengers.\n"
          "After people get off, there are {s} - {c} = {r} passengers.")),
    ),
    "mul-add": (
        (("{name} buys {a} {containers} with {b} {item} in each and also has {c} loose {item}. "
          "How many {item} does {name} have in total?"),
         "The {containers} hold {a} * {b} = {s} {item}.\nIn total {name} has {s} + {c} = {r} {item}."),
        ("A farmer plants {a} rows of {b} trees and then {c} more trees. How many trees did the farmer plant?",
         "The rows have {a} * {b} = {s} trees.\nThe farmer planted {s} + {c} = {r} trees."),
    ),
}
FORMS_BY_CATEGORY = {
    "addition": ("add",), "subtraction": ("sub",), "multiplication": ("mul",), "two-step": ("add-sub", "mul-add"),
}

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo",
         "Maya", "Nico", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara")
ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "shells", "coins", "cards")
CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("jar", "jars"), ("pack", "packs"), ("basket", "baskets"))


def compute(form: str, operands: tuple[int, ...]) -> tuple[int, int | None]:
    """(final result, intermediate result or None) of ``form`` applied to ``operands``."""
    if form == "add":
        return operands[0] + operands[1], None
    if form == "sub":
        return operands[0] - operands[1], None
    if form == "mul":
        return operands[0] * operands[1], None
    a, b, c = operands
    if form == "add-sub":
        return a + b - c, a + b
    if form == "mul-add":
        return a * b + c, a * b
    raise ValueError(f"unknown arithmetic form {form!r}")


def combination_key(form: str, operands: tuple[int, ...]) -> str:
    """The key that assigns an operand combination to train or test."""
    # Commutative forms share one key per operand set, so test never shows 12 + 34 after train's 34 + 12.
    key = tuple(sorted(operands)) if form in ("add", "mul") else operands
    return f"{form}|{key}"


def _operands(rng: random.Random, form: str) -> tuple[int, ...]:
    if form == "add":
        return rng.randint(2, 99), rng.randint(2, 99)
    if form == "sub":
        a = rng.randint(10, 99)
        return a, rng.randint(2, a - 1)
    if form == "mul":
        return rng.randint(2, 12), rng.randint(2, 15)
    if form == "add-sub":
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        return a, b, rng.randint(2, min(99, a + b - 1))
    return rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 30)  # mul-add


@dataclass(frozen=True)
class ArithmeticProblem:
    """One word problem with the structure it was built from (kept so tests can recompute it)."""

    category: str
    form: str
    operands: tuple[int, ...]
    template: int
    slots: tuple[tuple[str, str], ...]  # name, item, container words

    @property
    def result(self) -> int:
        """The correct final answer."""
        return compute(self.form, self.operands)[0]

    def _values(self) -> dict[str, object]:
        values: dict[str, object] = dict(self.slots)
        values.update(zip("abc", self.operands, strict=False))  # two or three operands
        values["s"] = compute(self.form, self.operands)[1]
        return values

    @property
    def question(self) -> str:
        """The question text."""
        return TEMPLATES[self.form][self.template][0].format(**self._values())

    def answer(self, result: int | None = None) -> str:
        """Reasoning then ``#### <result>``; a ``result`` other than the correct one gives a wrong answer."""
        final = self.result if result is None else result
        reasoning = TEMPLATES[self.form][self.template][1].format(**self._values(), r=final)
        return f"{reasoning}\n#### {final}"

    def row(self) -> dict[str, str]:
        """The public columns: GSM8K's question/answer plus ``category`` for partitioning."""
        return {"question": self.question, "answer": self.answer(), "category": self.category}


def _problem(rng: random.Random, split: str, category: str) -> ArithmeticProblem | None:
    form = rng.choice(FORMS_BY_CATEGORY[category])
    operands = _operands(rng, form)
    if not allowed(combination_key(form, operands), split, TEST_FRACTION):
        return None
    singular, plural = rng.choice(CONTAINERS)
    slots = (("name", rng.choice(NAMES)), ("item", rng.choice(ITEMS)), ("container", singular), ("containers", plural))
    return ArithmeticProblem(category, form, operands, rng.randrange(len(TEMPLATES[form])), slots)


@functools.cache
def generate(split: str) -> tuple[ArithmeticProblem, ...]:
    """All problems of ``split``: categories equally often, questions unique."""
    check_split(split)
    rng = private_rng("arithmetic", split)
    problems: list[ArithmeticProblem] = []
    seen: set[str] = set()
    for index in range(SIZES[split]):
        category = CATEGORIES[index % len(CATEGORIES)]
        while True:
            problem = _problem(rng, split, category)
            if problem is not None and problem.question not in seen:
                break
        seen.add(problem.question)
        problems.append(problem)
    return tuple(problems)
