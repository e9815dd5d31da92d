"""NWGI: News With GPT Instructions, seven-level sentiment folded to three as FinGPT does.

Hub: ``oliverwang15/news_with_gpt_instructions``, split ``test`` (columns ``news``, ``label``:
strong/moderately negative -> negative, mildly negative/neutral/mildly positive -> neutral,
moderately/strong positive -> positive).
"""

from __future__ import annotations

from evaluation.benchmarks._sentiment import SentimentBenchmark, sentiment_example
from evaluation.registry import Row, register

NWGI_LABELS = {
    "strong negative": "negative",
    "moderately negative": "negative",
    "mildly negative": "neutral",
    "neutral": "neutral",
    "mildly positive": "neutral",
    "moderately positive": "positive",
    "strong positive": "positive",
}


@register
class NWGI(SentimentBenchmark):
    """News sentiment labelled by GPT."""

    name = "nwgi"
    hub_id = "oliverwang15/news_with_gpt_instructions"
    local_layout = "oliverwang15/news_with_gpt_instructions/*test*.{parquet,jsonl,csv}: news, label (7 levels)"

    def normalize(self, rows: list[Row]) -> list[Row]:
        return [sentiment_example(i, r["news"], NWGI_LABELS[str(r["label"]).strip()]) for i, r in enumerate(rows)]
