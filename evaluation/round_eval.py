"""The evaluation a training run's round loop calls on the live global adapter: registry benchmarks.

Before training, every ``--eval_every`` rounds and at the end, each benchmark the task names scores
the model on examples loaded once, and its metrics go to metrics.jsonl as ``<prefix><metric>``
(``eval_accuracy``, say). It is the same code ``python -m evaluation`` runs on saved checkpoints,
so a round's numbers and the command line's agree. Greedy decoding on a fixed sample makes them
deterministic; the model's train/eval mode and weights are left as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.generation import eval_mode
from evaluation.registry import Benchmark, EvalSettings, Row, get_benchmark

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    benchmark: Benchmark
    examples: list[Row]
    prefix: str


class RoundEvaluation:
    """Registry benchmarks with their examples, loaded once; call it after any round."""

    def __init__(self, entries: Sequence[_Entry], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> None:
        """Use ``load`` to build one."""
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.settings = settings

    @classmethod
    def load(
        cls, benchmarks: Sequence[tuple[str, str]], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings
    ) -> RoundEvaluation | None:
        """Load the examples of each ``(benchmark name, key prefix)``; None when none has any.

        A benchmark whose data is not there (a dataset without a test split, say) is left out, and
        that is said once here rather than by empty results every round.
        """
        entries = []
        for name, prefix in benchmarks:
            bench = get_benchmark(name)
            try:
                examples = bench.load(settings)
            except (ValueError, FileNotFoundError) as err:
                logger.warning("Round evaluation without %s: %s", name, err)
                continue
            unscorable = bench.unscorable(examples, tokenizer, settings)
            if unscorable == len(examples):
                raise ValueError(f"round evaluation {name}: none of its {len(examples)} held-out examples fits "
                                 f"--seq_length {settings.seq_length} (each response alone needs more); raise it")
            if unscorable:
                logger.warning("Round evaluation %s: %d of %d held-out examples do not fit --seq_length %d and are "
                               "not scored", name, unscorable, len(examples), settings.seq_length)
            logger.info("Round evaluation: %s on %d held-out examples", name, len(examples))
            entries.append(_Entry(bench, examples, prefix))
        if not entries:
            logger.warning("Round evaluation is off: none of %s has held-out data", ", ".join(n for n, _ in benchmarks))
            return None
        return cls(entries, tokenizer, settings)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Evaluate ``model`` (a PeftModel or plain model, in any mode); returns the prefixed metrics."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        with eval_mode(model):
            for entry in self.entries:
                result = entry.benchmark.evaluate(model, self.tokenizer, entry.examples, self.settings)
                metrics.update({entry.prefix + name: value for name, value in result.metrics.items()})
        logger.info("Evaluation took %.1f s: %s", time.perf_counter() - start, metrics)
        return metrics
