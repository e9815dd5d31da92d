"""FiQA-SA: FiQA 2018 task 1 aspect sentiment of financial headlines and microblog posts.

Hub: ``pauri32/fiqa-2018`` (splits train/validation/test; columns ``sentence``, ``sentiment_score``
in [-1, 1], ``format`` "post" or "headline"). As FinGPT does, the three splits are joined and its
``train_test_split(0.226, seed=42)`` test part is used; a score < -0.1 is negative, >= 0.1 positive,
neutral in between; posts get the tweet instruction.
"""

from __future__ import annotations

from evaluation.benchmarks._sentiment import (
    NEWS_INSTRUCTION,
    TWEET_INSTRUCTION,
    SentimentBenchmark,
    fingpt_test_split,
    sentiment_example,
)
from evaluation.data import load_rows
from evaluation.registry import EvalSettings, Row, register


def score_to_label(score: float) -> str:
    """FinGPT's thresholds on the continuous FiQA sentiment score."""
    if score < -0.1:
        return "negative"
    return "neutral" if score < 0.1 else "positive"


@register
class FiQASA(SentimentBenchmark):
    """FiQA sentiment analysis."""

    name = "fiqa_sa"
    hub_id = "pauri32/fiqa-2018"
    local_layout = "pauri32/fiqa-2018/*{train,valid,test}*.{parquet,jsonl,csv}: sentence, sentiment_score, format"

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        rows: list[Row] = []
        for split in ("train", "validation", "test"):
            rows.extend(load_rows(self.hub_id, split, settings.data_dir))
        return rows

    def normalize(self, rows: list[Row]) -> list[Row]:
        test = fingpt_test_split(rows, test_size=0.226)
        return [
            sentiment_example(
                i, r["sentence"], score_to_label(float(r["sentiment_score"])),
                TWEET_INSTRUCTION if r.get("format") == "post" else NEWS_INSTRUCTION,
            )
            for i, r in enumerate(test)
        ]
