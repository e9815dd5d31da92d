"""GSM8K: grade-school math word problems, exact match of the final number.

Hub: ``openai/gsm8k``, config ``main``, split ``test`` (columns ``question``, ``answer`` ending in
``#### <number>``). The model is asked to end with the same marker; its answer is the number after
the last ``####``, else the last number it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.answers import extract_final_number
from evaluation.metrics import numbers_match
from evaluation.registry import GenerativeBenchmark, Row, register

INSTRUCTION_SUFFIX = "\nSolve it step by step, then write the final answer as '#### <number>'."


@register
class GSM8K(GenerativeBenchmark):
    """Grade-school math."""

    name = "gsm8k"
    hub_id = "openai/gsm8k"
    hub_config = "main"
    local_layout = "openai/gsm8k/main/*test*.{parquet,jsonl}: question, answer ('... #### 42')"
    max_new_tokens: ClassVar[int] = 256
    metric_names: ClassVar[tuple[str, ...]] = ("exact_match",)

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [{"id": i, "question": r["question"], "reference": extract_final_number(r["answer"])}
                for i, r in enumerate(rows)]

    def build_prompt(self, example: Row) -> str:
        return example["question"] + INSTRUCTION_SUFFIX

    def extract(self, completion: str, example: Row) -> Any:
        return extract_final_number(completion)

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        scores = [float(numbers_match(a, ex["reference"])) for a, ex in zip(answers, examples, strict=True)]
        return {"exact_match": sum(scores) / len(scores)}, scores
