"""Shared shape of the FinGPT sentiment benchmarks (FPB, FiQA-SA, TFNS, NWGI).

Prompts, label mappings, test splits and the answer rule are FinGPT's benchmark scripts'
(``fingpt/FinGPT_Benchmark/benchmarks/{fpb,fiqa,tfns,nwgi}.py``), so the numbers compare with
FinGPT's: the prompt is FinGPT's plain ``Instruction: ...`` / ``Input: ...`` / ``Answer: `` string,
fed without a chat or alpaca template (``--template`` does not apply), greedy, 10 new tokens; an
answer containing "positive" or "Positive" is positive, else "negative" or "Negative" negative,
else neutral (an answer naming neither counts as neutral).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evaluation.extractors import fingpt_sentiment
from evaluation.metrics import classification_scores
from evaluation.registry import GenerativeBenchmark, Row

LABELS = ("negative", "neutral", "positive")
NEWS_INSTRUCTION = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
TWEET_INSTRUCTION = "What is the sentiment of this tweet? Please choose an answer from {negative/neutral/positive}."


def sentiment_example(index: int, text: str, label: str, instruction: str = NEWS_INSTRUCTION) -> Row:
    """One normalised example."""
    if label not in LABELS:
        raise ValueError(f"sentiment label {label!r} is not one of {LABELS}")
    return {"id": index, "instruction": instruction, "text": text, "reference": label}


def fingpt_test_split(rows: list[Row], test_size: float) -> list[Row]:
    """FinGPT's held-out split of a dataset published without one: ``train_test_split(seed=42)``."""
    import datasets

    return list(datasets.Dataset.from_list(rows).train_test_split(test_size=test_size, seed=42)["test"])


class SentimentBenchmark(GenerativeBenchmark):
    """Three-way financial sentiment: accuracy, macro-F1 and weighted-F1."""

    max_new_tokens: ClassVar[int] = 10
    uses_template: ClassVar[bool] = False  # FinGPT's own prompt format, not the chat/alpaca template
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "weighted_f1")

    def build_prompt(self, example: Row) -> str:
        return f"Instruction: {example['instruction']}\nInput: {example['text']}\nAnswer: "

    def extract(self, completion: str, example: Row) -> Any:
        return fingpt_sentiment(completion)

    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        references = [ex["reference"] for ex in examples]
        scores = [float(a == r) for a, r in zip(answers, references, strict=True)]
        return classification_scores(answers, references, labels=LABELS), scores
