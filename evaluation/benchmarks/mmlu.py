"""MMLU (Hendrycks et al., 2021): 57 subjects, reported overall and for its 4 category groups.

Hub: ``cais/mmlu``, config ``all``, split ``test`` (columns ``question``, ``subject``, ``choices``:
4 texts, ``answer``: 0-based index). Overall accuracy is the micro average over questions, as the
MMLU paper reports it; each group's accuracy is the micro average over that group's questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluation.benchmarks._choice import MultipleChoiceBenchmark, choice_example
from evaluation.metrics import accuracy, grouped_accuracy
from evaluation.registry import Row, register

GROUPS = ("stem", "humanities", "social_sciences", "other")
SUBJECT_GROUPS: dict[str, str] = {
    **dict.fromkeys((
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
        "college_mathematics", "college_physics", "computer_security", "conceptual_physics",
        "electrical_engineering", "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning",
    ), "stem"),
    **dict.fromkeys((
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios",
        "philosophy", "prehistory", "professional_law", "world_religions",
    ), "humanities"),
    **dict.fromkeys((
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology", "human_sexuality",
        "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    ), "social_sciences"),
    **dict.fromkeys((
        "anatomy", "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology",
    ), "other"),
}


@register
class MMLU(MultipleChoiceBenchmark):
    """Massive multitask language understanding."""

    name = "mmlu"
    hub_id = "cais/mmlu"
    hub_config = "all"
    local_layout = "cais/mmlu/all/*test*.parquet (or jsonl): question, subject, choices[4], answer (0-3)"
    metric_names = ("accuracy", *(f"accuracy_{g}" for g in GROUPS))

    def normalize(self, rows: list[Row]) -> list[Row]:
        examples = []
        for i, r in enumerate(rows):
            subject = str(r["subject"])
            if subject not in SUBJECT_GROUPS:
                raise ValueError(f"mmlu row {i}: unknown subject {subject!r}")
            examples.append(choice_example(i, r["question"], r["choices"], int(r["answer"]), subject=subject,
                                           group=SUBJECT_GROUPS[subject]))
        return examples

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        correct = [a == ex["reference"] for a, ex in zip(answers, examples, strict=True)]
        metrics = {"accuracy": accuracy(answers, [ex["reference"] for ex in examples])}
        by_group = grouped_accuracy(correct, [ex["group"] for ex in examples])
        metrics.update({f"accuracy_{g}": by_group.get(g, float("nan")) for g in GROUPS})
        return metrics, [float(c) for c in correct]
