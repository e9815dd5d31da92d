"""FPB: Financial PhraseBank (Malo et al., 2014), sentences with >= 50% annotator agreement.

Hub: ``takala/financial_phrasebank``, config ``sentences_50agree``, split ``train`` (columns
``sentence``, ``label``: 0 negative, 1 neutral, 2 positive); the test set is FinGPT's
``train_test_split(seed=42)`` quarter of it.
"""

from __future__ import annotations

from evaluation.benchmarks._sentiment import SentimentBenchmark, fingpt_test_split, sentiment_example
from evaluation.registry import Row, register

FPB_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@register
class FPB(SentimentBenchmark):
    """Financial PhraseBank sentiment."""

    name = "fpb"
    hub_id = "takala/financial_phrasebank"
    hub_config = "sentences_50agree"
    split = "train"
    local_layout = ("takala/financial_phrasebank/[sentences_50agree/]*train*.{parquet,jsonl,csv}: "
                    "sentence, label (0/1/2)")

    def normalize(self, rows: list[Row]) -> list[Row]:
        test = fingpt_test_split(rows, test_size=0.25)
        return [sentiment_example(i, r["sentence"], FPB_LABELS[int(r["label"])]) for i, r in enumerate(test)]
