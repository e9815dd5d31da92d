"""MedQA (USMLE), the 4-option version.

Hub: ``GBaker/MedQA-USMLE-4-options``, split ``test`` (columns ``question``, ``options``: a dict
letter -> text, ``answer_idx``: the correct letter).
"""

from __future__ import annotations

from evaluation.benchmarks._choice import LETTERS, MultipleChoiceBenchmark, choice_example
from evaluation.registry import Row, register


@register
class MedQA(MultipleChoiceBenchmark):
    """USMLE-style medical questions, 4 options."""

    name = "medqa"
    hub_id = "GBaker/MedQA-USMLE-4-options"
    local_layout = "GBaker/MedQA-USMLE-4-options/*test*.{jsonl,parquet}: question, options {A..D}, answer_idx"

    def normalize(self, rows: list[Row]) -> list[Row]:
        examples = []
        for i, r in enumerate(rows):
            keys = sorted(k for k, v in r["options"].items() if v is not None)
            if "".join(keys) != LETTERS[: len(keys)]:
                raise ValueError(f"medqa row {i}: option keys {keys} are not consecutive letters from A")
            answer = str(r["answer_idx"]).strip()
            examples.append(choice_example(i, r["question"], [r["options"][k] for k in keys], keys.index(answer)))
        return examples
