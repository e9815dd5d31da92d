"""The bundled financial sentiment task (``bundled/fin_sentiment``, test split): accuracy and F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.answers import SENTIMENT_LABELS, extract_sentiment
from evaluation.benchmarks._bundled import BundledBenchmark
from evaluation.metrics import classification_scores
from evaluation.registry import Row, register


@register
class BundledSentiment(BundledBenchmark):
    """Three-way sentiment of generated finance news, labels held out by construction."""

    name = "bundled_sentiment"
    scores_dataset = "bundled/fin_sentiment"
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "weighted_f1")

    def normalize(self, rows: list[Row]) -> list[Row]:
        return self.scorable([{"id": i, "instruction": r["instruction"], "response": r["response"],
                               "reference": extract_sentiment(r["response"])} for i, r in enumerate(rows)])

    def extract(self, completion: str, example: Row) -> Any:
        return extract_sentiment(completion)

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        references = [ex["reference"] for ex in examples]
        scores = [float(a == r) for a, r in zip(answers, references, strict=True)]
        return classification_scores(answers, references, labels=SENTIMENT_LABELS), scores
