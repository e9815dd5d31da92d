"""TFNS: Twitter Financial News Sentiment.

Hub: ``zeroshot/twitter-financial-news-sentiment``, split ``validation`` as FinGPT evaluates it
(columns ``text``, ``label``: 0 bearish -> negative, 1 bullish -> positive, 2 neutral).
"""

from __future__ import annotations

from evaluation.benchmarks._sentiment import TWEET_INSTRUCTION, SentimentBenchmark, sentiment_example
from evaluation.registry import Row, register

TFNS_LABELS = {0: "negative", 1: "positive", 2: "neutral"}


@register
class TFNS(SentimentBenchmark):
    """Twitter financial news sentiment."""

    name = "tfns"
    hub_id = "zeroshot/twitter-financial-news-sentiment"
    split = "validation"
    local_layout = "zeroshot/twitter-financial-news-sentiment/*valid*.{csv,parquet,jsonl}: text, label (0/1/2)"

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [
            sentiment_example(i, r["text"], TFNS_LABELS[int(r["label"])], TWEET_INSTRUCTION)
            for i, r in enumerate(rows)
        ]
