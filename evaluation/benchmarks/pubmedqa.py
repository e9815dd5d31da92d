"""PubMedQA (expert-labelled part): answer a research question from an abstract with yes, no or maybe.

Hub: ``qiaojin/PubMedQA``, config ``pqa_labeled``, split ``train`` (its only split; columns
``pubid``, ``question``, ``context``: {"contexts": [paragraphs], ...}, ``final_decision``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.extractors import yes_no_maybe
from evaluation.metrics import accuracy
from evaluation.registry import GenerativeBenchmark, Row, register


@register
class PubMedQA(GenerativeBenchmark):
    """Biomedical yes/no/maybe questions with the abstract as context."""

    name = "pubmedqa"
    hub_id = "qiaojin/PubMedQA"
    hub_config = "pqa_labeled"
    split = "train"
    local_layout = ("qiaojin/PubMedQA/pqa_labeled/*train*.{parquet,jsonl}: "
                    "pubid, question, context.contexts, final_decision")
    max_new_tokens: ClassVar[int] = 16
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)

    def normalize(self, rows: list[Row]) -> list[Row]:
        examples = []
        for r in rows:
            context = r["context"]
            paragraphs = context["contexts"] if isinstance(context, dict) else [str(context)]
            examples.append({"id": r["pubid"], "question": r["question"], "context": "\n".join(paragraphs),
                             "reference": str(r["final_decision"]).strip().lower()})
        return examples

    def build_prompt(self, example: Row) -> str:
        return (f"Context: {example['context']}\nQuestion: {example['question']}\n"
                "Answer the question with yes, no or maybe.")

    def extract(self, completion: str, example: Row) -> Any:
        return yes_no_maybe(completion)

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        references = [ex["reference"] for ex in examples]
        scores = [float(a == r) for a, r in zip(answers, references, strict=True)]
        return {"accuracy": accuracy(answers, references)}, scores
