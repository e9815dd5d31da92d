"""The round benchmarks on every client's own held-out set (``--eval_per_client``).

Built from a run's ``RoundEvaluation``: each benchmark's whole held-out split, with every example's
``--partition_column`` value, is sampled into one set per client by the client's training mix
(``evaluation.client_sets``). ``score`` evaluates a model on one client's sets with the same code
as the pooled round evaluation, so a client's numbers and the pooled ones mean the same thing. Each
client has its own benchmark instances, so a benchmark that caches its reference scores (DPO's
reference policy) caches them per client set.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from evaluation.client_sets import client_eval_indices
from evaluation.generation import eval_mode
from evaluation.registry import Benchmark, EvalSettings, Row, get_benchmark
from evaluation.round_eval import RoundEvaluation

logger = logging.getLogger(__name__)


@dataclass
class _ClientEntry:
    benchmarks: list[Benchmark]  # one instance per client
    examples: list[list[Row]]  # each client's held-out examples
    prefix: str


class ClientEvaluation:
    """Every round benchmark's examples split into one held-out set per client; ``score`` one model on one set."""

    def __init__(self, entries: Sequence[_ClientEntry], tokenizer: PreTrainedTokenizerBase,
                 settings: EvalSettings, lower_is_better: set[str], headline: str) -> None:
        """Use ``build`` to make one."""
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.settings = settings
        self.lower_is_better = lower_is_better  # prefixed metric names
        self.headline = headline  # the prefixed metric the per-client plot draws

    @classmethod
    def build(cls, evaluation: RoundEvaluation, column: str | None, mixes: Sequence[dict[Hashable, float]],
              per_client: int, training_texts: set[str]) -> ClientEvaluation:
        """Sets of ``per_client`` examples for each of ``mixes`` (each client's share of every ``column`` value).

        ``column`` None (an IID split of data without one): every client's set is a seeded sample
        of the whole held-out split. Only examples that fit ``--seq_length`` are drawn. A
        ValueError names the flag when a held-out split lacks ``column``, when a client's values
        have no scorable held-out example, or when every held-out example is a training row
        (``training_texts``: the training rows' prompts; a single data file is every split at once).
        """
        settings = evaluation.settings
        entries, lower = [], set()
        num_clients = len(mixes)
        for entry in evaluation.entries:
            name = entry.benchmark.name
            everything = dataclasses.replace(settings, limit=None)
            if column is None:
                examples = entry.benchmark.load(everything)
                values: list[Hashable] = [0] * len(examples)
                client_mixes: Sequence[dict[Hashable, float]] = [{0: 1.0}] * num_clients
            else:
                examples, values = entry.benchmark.load_groups(everything, column)
                client_mixes = mixes
            if examples and all(prompt_text(example) in training_texts for example in examples):
                raise ValueError(f"--eval_per_client: every held-out row of {name} is a training row (a single data "
                                 "file is every split at once), so no client has a held-out set; use a dataset "
                                 "with a test split (a folder with train* and test* files, a bundled or hub "
                                 "dataset), or drop --eval_per_client")
            fits = entry.benchmark.fits(examples, evaluation.tokenizer, settings)
            examples = [example for example, fit in zip(examples, fits, strict=True) if fit]
            values = [value for value, fit in zip(values, fits, strict=True) if fit]
            sets = client_eval_indices(values, client_mixes, per_client, settings.seed)
            short = [c for c, rows in enumerate(sets) if len(rows) < per_client]
            if short:
                logger.warning("Per-client evaluation %s: %d clients have fewer than %d held-out examples of their "
                               "mix (the smallest: %d)", name, len(short), per_client, min(len(sets[c]) for c in short))
            entries.append(_ClientEntry([get_benchmark(name) for _ in range(num_clients)],
                                        [[examples[i] for i in rows] for rows in sets], entry.prefix))
            lower.update(entry.prefix + metric for metric in entry.benchmark.lower_is_better)
            logger.info("Per-client evaluation: %s on %d clients' sets of %d-%d examples", name, num_clients,
                        min(len(s) for s in sets), max(len(s) for s in sets))
        last = evaluation.entries[-1]
        headline = last.prefix + (last.benchmark.metric_names[0] if last.benchmark.metric_names else "loss")
        return cls(entries, evaluation.tokenizer, settings, lower, headline)

    @property
    def num_clients(self) -> int:
        """How many clients have a set."""
        return len(self.entries[0].examples)

    def score(self, model: torch.nn.Module, client: int) -> dict[str, float]:
        """The prefixed metrics of ``model`` on ``client``'s held-out sets."""
        metrics: dict[str, float] = {}
        with eval_mode(model):
            for entry in self.entries:
                result = entry.benchmarks[client].evaluate(model, self.tokenizer, entry.examples[client],
                                                           self.settings)
                metrics.update({entry.prefix + name: value for name, value in result.metrics.items()})
        return metrics


def prompt_text(row: Mapping[str, Any]) -> str:
    """A row's prompt as text (SFT's instruction, DPO's prompt turns), to compare held-out and training rows."""
    return str(row.get("instruction", row.get("prompt", "")))


def summarise(prefix: str, scores: dict[int, dict[str, float]], lower_is_better: set[str]) -> dict[str, float]:
    """``<prefix><metric>_{mean,worst,best,std}`` over the clients of ``scores`` (each client counts once; per-category
    metrics, ``name/category``, are left to the per-client records)."""
    summary: dict[str, float] = {}
    metrics = sorted({m for client in scores.values() for m in client if "/" not in m})
    for metric in metrics:
        values = np.asarray([client[metric] for client in scores.values() if metric in client], dtype=np.float64)
        worst, best = (values.max(), values.min()) if metric in lower_is_better else (values.min(), values.max())
        summary.update({f"{prefix}{metric}_mean": float(values.mean()), f"{prefix}{metric}_worst": float(worst),
                        f"{prefix}{metric}_best": float(best), f"{prefix}{metric}_std": float(values.std())})
    return summary
