"""MedMCQA: Indian medical entrance exam questions, 4 options.

Hub: ``openlifescienceai/medmcqa``, split ``validation`` (the test split has no answers; columns
``question``, ``opa``..``opd``, ``cop``: the correct option, 0-based, ``subject_name``).
"""

from __future__ import annotations

from evaluation.benchmarks._choice import MultipleChoiceBenchmark, choice_example
from evaluation.registry import Row, register


@register
class MedMCQA(MultipleChoiceBenchmark):
    """Medical entrance exam questions, 4 options."""

    name = "medmcqa"
    hub_id = "openlifescienceai/medmcqa"
    split = "validation"
    local_layout = "openlifescienceai/medmcqa/*validation*.{parquet,jsonl}: question, opa, opb, opc, opd, cop (0-3)"

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [
            choice_example(i, r["question"], [r["opa"], r["opb"], r["opc"], r["opd"]], int(r["cop"]),
                           subject=r.get("subject_name"))
            for i, r in enumerate(rows)
        ]
