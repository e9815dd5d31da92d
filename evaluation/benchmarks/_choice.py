"""Shared shape of multiple-choice benchmarks (MedQA, MedMCQA, MMLU): lettered options, accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.extractors import choice_letter
from evaluation.metrics import accuracy
from evaluation.registry import GenerativeBenchmark, Row

LETTERS = "ABCDEFGHIJ"


def choice_example(index: int, question: str, options: Sequence[str], answer_index: int, **extra: Any) -> Row:
    """One normalised example; ``answer_index`` is 0-based."""
    if not 0 <= answer_index < len(options):
        raise ValueError(f"answer index {answer_index} is outside the {len(options)} options of example {index}")
    return {"id": index, "question": question, "options": list(options), "reference": LETTERS[answer_index], **extra}


class MultipleChoiceBenchmark(GenerativeBenchmark):
    """Pick one lettered option; scored by accuracy of the extracted letter."""

    max_new_tokens: ClassVar[int] = 16
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)

    def build_prompt(self, example: Row) -> str:
        options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(example["options"]))
        return f"{example['question']}\n{options}\nAnswer with the letter of the correct option."

    def extract(self, completion: str, example: Row) -> Any:
        return choice_letter(completion, example["options"])

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        references = [ex["reference"] for ex in examples]
        scores = [float(a == r) for a, r in zip(answers, references, strict=True)]
        return {"accuracy": accuracy(answers, references)}, scores
