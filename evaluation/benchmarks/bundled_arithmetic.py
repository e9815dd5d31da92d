"""The bundled arithmetic task (``bundled/arithmetic``, test split): exact match of the final number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.answers import extract_final_number
from evaluation.benchmarks._bundled import BundledBenchmark
from evaluation.metrics import numbers_match
from evaluation.registry import Row, register


@register
class BundledArithmetic(BundledBenchmark):
    """GSM8K-style word problems with answers held out by construction."""

    name = "bundled_arithmetic"
    scores_dataset = "bundled/arithmetic"
    metric_names: ClassVar[tuple[str, ...]] = ("exact_match",)

    def normalize(self, rows: list[Row]) -> list[Row]:
        return self.scorable([{"id": i, "instruction": r["instruction"], "response": r["response"],
                               "category": r.get("category"), "reference": extract_final_number(r["response"])}
                              for i, r in enumerate(rows)])

    def extract(self, completion: str, example: Row) -> Any:
        return extract_final_number(completion)

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        scores = [float(numbers_match(a, ex["reference"])) for a, ex in zip(answers, examples, strict=True)]
        return {"exact_match": sum(scores) / len(scores)}, scores
