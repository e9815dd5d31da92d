"""PubMedQA (Jin et al., 2019), expert-labelled part: answer a research question from an abstract with yes, no or maybe.

Hub: ``qiaojin/PubMedQA``, config ``pqa_labeled``, split ``train`` (its only split; columns
``pubid``, ``question``, ``context``: {"contexts": [paragraphs], ...}, ``final_decision``).

The paper's test set is 500 of these 1,000 questions, listed in ``data/test_ground_truth.json`` of
the PubMedQA repository (github.com/pubmedqa/pubmedqa; pubid -> yes/no/maybe), which is not on the
Hub. Put that file at ``<data_dir>/pubmedqa/test_ground_truth.json`` and only those 500 are scored,
against its labels, as the paper does (accuracy and macro-F1); without it all 1,000 labelled
questions are (lighteval's convention), which the results name as such in the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from evaluation.extractors import yes_no_maybe
from evaluation.metrics import classification_scores
from evaluation.registry import EvalSettings, GenerativeBenchmark, Row, register

logger = logging.getLogger(__name__)

ANSWERS = ("yes", "no", "maybe")
TEST_IDS = Path("pubmedqa") / "test_ground_truth.json"


@register
class PubMedQA(GenerativeBenchmark):
    """Biomedical yes/no/maybe questions with the abstract as context."""

    name = "pubmedqa"
    hub_id = "qiaojin/PubMedQA"
    hub_config = "pqa_labeled"
    split = "train"
    local_layout = ("qiaojin/PubMedQA/pqa_labeled/*train*.parquet: pubid, question, context.contexts, "
                    "final_decision; optional pubmedqa/test_ground_truth.json: the paper's 500-question test set")
    max_new_tokens: ClassVar[int] = 16
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        rows = super().raw_rows(settings)
        ground_truth = Path(settings.data_dir).expanduser() / TEST_IDS if settings.data_dir else None
        if ground_truth is None or not ground_truth.is_file():
            logger.info("pubmedqa: all %d labelled questions (no %s under --data_dir: not the paper's 500-question "
                        "test set)", len(rows), TEST_IDS)
            return rows
        labels = {str(k): str(v) for k, v in json.loads(ground_truth.read_text()).items()}
        test = [{**r, "final_decision": labels[str(r["pubid"])]} for r in rows if str(r["pubid"]) in labels]
        if len(test) != len(labels):
            raise ValueError(f"{ground_truth}: {len(labels) - len(test)} of its {len(labels)} pubids are not in "
                             f"{self.hub_id} {self.hub_config}")
        logger.info("pubmedqa: the paper's test set, %d questions of %s", len(test), ground_truth)
        return test

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
        metrics = classification_scores(answers, references, labels=ANSWERS)
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}, scores
