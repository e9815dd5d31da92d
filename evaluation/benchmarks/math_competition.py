"""MATH (Hendrycks et al., 2021): competition problems, exact match of the boxed answer.

Hub: ``EleutherAI/hendrycks_math``, one config per subject (algebra, counting_and_probability,
geometry, intermediate_algebra, number_theory, prealgebra, precalculus), split ``test`` (columns
``problem``, ``level``, ``type``, ``solution`` whose last ``\\boxed{}`` holds the answer). Answers are
compared after a light LaTeX normalisation (``evaluation.extractors.normalize_math``), not by
symbolic equivalence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.data import load_rows
from evaluation.extractors import last_boxed, math_answer, normalize_math
from evaluation.metrics import grouped_accuracy
from evaluation.registry import EvalSettings, GenerativeBenchmark, Row, register

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")
INSTRUCTION_SUFFIX = "\nSolve the problem, then give the final answer as \\boxed{answer}."


@register
class MATHBenchmark(GenerativeBenchmark):
    """Competition mathematics."""

    name = "math"
    hub_id = "EleutherAI/hendrycks_math"
    local_layout = "EleutherAI/hendrycks_math/<subject>/*test*.{parquet,jsonl}: problem, level, type, solution"
    max_new_tokens: ClassVar[int] = 384
    metric_names: ClassVar[tuple[str, ...]] = ("exact_match",)

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        if settings.data_dir is not None:  # every subject folder at once
            return load_rows(self.hub_id, self.split, settings.data_dir)
        rows: list[Row] = []
        for subject in SUBJECTS:
            rows.extend(load_rows(self.hub_id, self.split, None, subject))
        return rows

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": i, "problem": r["problem"], "type": r.get("type"), "level": r.get("level"),
                 "reference": normalize_math(last_boxed(r["solution"]))} for i, r in enumerate(rows)]

    def build_prompt(self, example: Row) -> str:
        return example["problem"] + INSTRUCTION_SUFFIX

    def extract(self, completion: str, example: Row) -> Any:
        return normalize_math(math_answer(completion))

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        correct = [a is not None and a == ex["reference"] for a, ex in zip(answers, examples, strict=True)]
        metrics = {"exact_match": sum(correct) / len(correct)}
        by_type = grouped_accuracy(correct, [str(ex["type"]) for ex in examples])
        metrics.update({f"exact_match_{t.lower().replace(' & ', '_').replace(' ', '_')}": v
                        for t, v in by_type.items() if t != "None"})
        return metrics, [float(c) for c in correct]
