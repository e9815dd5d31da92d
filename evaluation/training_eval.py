"""The evaluation the round loop runs on the global adapter (before training, every --eval_every rounds, at the end).

What it measures depends on the dataset: ``bundled/fin_sentiment`` gets sentiment accuracy and
macro-F1 from greedy generation, ``bundled/arithmetic`` exact match of the final number, and every
SFT dataset the held-out loss and perplexity of its test split. Greedy decoding on a fixed sample
makes the numbers deterministic; the model's train/eval mode and weights are left as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.generation import eval_mode, generate_greedy, stop_strings_for
from evaluation.heldout_loss import heldout_loss
from evaluation.metrics import classification_scores, exact_match
from evaluation.registry import Benchmark, EvalSettings, get_benchmark
from utils.templates import get_template

logger = logging.getLogger(__name__)

SENTIMENT_LABELS = ("negative", "neutral", "positive")
GENERATIVE_TASKS = {"bundled/fin_sentiment": "sentiment", "bundled/arithmetic": "arithmetic"}
MAX_NEW_TOKENS_CAP = 256  # generation length is the longest reference answer + slack, at most this
NEW_TOKENS_SLACK = 8


def load_heldout_rows(
    dataset_name: str, local_data_dir: str | None, num_samples: int, seed: int
) -> list[dict[str, object]]:
    """Up to ``num_samples`` rows of the dataset's test split ([] when it has none; logged)."""
    from utils.sft_data import load_sft_dataset

    try:
        dataset = load_sft_dataset(dataset_name, local_data_dir, num_samples, "test", seed)
    except (ValueError, FileNotFoundError) as err:
        logger.warning("No held-out evaluation for %s: it has no usable test split (%s)", dataset_name, err)
        return []
    return [dict(row) for row in dataset]


def sentiment_reference(row: Mapping[str, object]) -> str | None:
    """The gold sentiment of a row: from its response text, else from a text ``label`` column."""
    from evaluation.answers import extract_sentiment

    found = extract_sentiment(str(row["response"]))
    if found is None and isinstance(row.get("label"), str):
        found = extract_sentiment(str(row["label"]))
    return found


class RoundEvaluator:
    """Held-out metrics of a model on one dataset; build once, call after any round."""

    def __init__(
        self,
        dataset_name: str,
        tokenizer: PreTrainedTokenizerBase,
        template_name: str,
        local_data_dir: str | None = None,
        num_samples: int = 200,
        batch_size: int = 32,
        seq_length: int = 256,
        seed: int = 2023,
        *,
        bf16: bool = False,
        benchmarks: Sequence[str] = (),
        allow_code_execution: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"--eval_samples must be >= 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"--eval_batch_size must be >= 1, got {batch_size}")
        get_template(template_name)  # fail now, naming --template, rather than at the first evaluation
        self.dataset_name = dataset_name
        self.tokenizer = tokenizer
        self.template_name = template_name
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.bf16 = bf16
        self.task = GENERATIVE_TASKS.get(dataset_name, "loss")
        self.rows = load_heldout_rows(dataset_name, local_data_dir, num_samples, seed)
        self.references: list[str | None] = self._references(self.rows)
        if self.task != "loss" and None in self.references:
            # A row whose gold answer cannot be parsed cannot be scored; keep the rest.
            kept = [i for i, ref in enumerate(self.references) if ref is not None]
            logger.warning("Dropping %d held-out rows without a parsable reference answer",
                           len(self.rows) - len(kept))
            self.rows = [self.rows[i] for i in kept]
            self.references = [self.references[i] for i in kept]
        self.max_new_tokens = self._max_new_tokens(self.rows)
        self.last_predictions: list[str] = []
        self.settings = EvalSettings(template=template_name, batch_size=batch_size, seq_length=seq_length,
                                     limit=num_samples, bf16=bf16, seed=seed, local_data_dir=local_data_dir,
                                     allow_code_execution=allow_code_execution)
        self.benchmarks = [self._registry_benchmark(name) for name in benchmarks]
        logger.info("Round evaluation on %d held-out rows of %s (%s)", len(self.rows), dataset_name, self.task)

    @classmethod
    def from_args(cls, script_args: Any, tokenizer: PreTrainedTokenizerBase, bf16: bool) -> RoundEvaluator:
        """The round evaluation an SFT run's ``ScriptArguments`` ask for (main_sft.py, the Flower ServerApp)."""
        return cls(
            script_args.dataset_name, tokenizer, script_args.template, script_args.local_data_dir,
            num_samples=script_args.eval_samples, batch_size=script_args.eval_batch_size,
            seq_length=script_args.seq_length, seed=script_args.seed, bf16=bf16,
        )

    def _registry_benchmark(self, name: str) -> tuple[Benchmark, list[dict[str, object]]]:
        """A registry benchmark and its examples, loaded once (fast ones suit --eval_every)."""
        bench = get_benchmark(name)
        if bench.needs_judge:
            raise ValueError(f"benchmark {name} needs an LLM judge; run it with python -m evaluation instead")
        if bench.needs_code_execution and not self.settings.allow_code_execution:
            raise ValueError(f"benchmark {name} executes model-written code; allow it explicitly or drop it")
        return bench, bench.load(self.settings)

    def _references(self, rows: Sequence[Mapping[str, object]]) -> list[str | None]:
        if self.task == "sentiment":
            return [sentiment_reference(row) for row in rows]
        if self.task == "arithmetic":
            from evaluation.answers import extract_final_number

            return [extract_final_number(str(row["response"])) for row in rows]
        return []

    def _max_new_tokens(self, rows: Sequence[Mapping[str, object]]) -> int:
        """Enough new tokens for the longest reference answer, so no answer is cut by the budget."""
        if self.task == "loss" or not rows:
            return 0
        lengths = [len(self.tokenizer(str(row["response"]), add_special_tokens=False)["input_ids"]) for row in rows]
        return min(MAX_NEW_TOKENS_CAP, max(lengths) + NEW_TOKENS_SLACK)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Evaluate ``model`` (a PeftModel or plain model, in any mode); returns ``eval_*`` metrics."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        with eval_mode(model):
            if self.rows:
                loss, _ = heldout_loss(
                    model, self.tokenizer, self.rows, self.template_name,
                    seq_length=self.seq_length, batch_size=self.batch_size, bf16=self.bf16,
                )
                metrics.update({"eval_loss": loss["loss"], "eval_perplexity": loss["perplexity"]})
                if self.task != "loss":
                    metrics.update(self._generative_metrics(model))
            for bench, examples in self.benchmarks:
                result = bench.evaluate(model, self.tokenizer, examples, self.settings)
                metrics.update({f"eval_{bench.name}_{name}": value for name, value in result.metrics.items()})
        logger.info("Evaluation took %.1f s: %s", time.perf_counter() - start, metrics)
        return metrics

    def _generative_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        template = get_template(self.template_name)
        prompts = [template.prompt(str(row["instruction"]), self.tokenizer) for row in self.rows]
        self.last_predictions = generate_greedy(
            model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
            bf16=self.bf16, stop_strings=stop_strings_for(self.template_name),
        )
        if self.task == "sentiment":
            from evaluation.answers import extract_sentiment

            predicted = [extract_sentiment(text) for text in self.last_predictions]
            scores = classification_scores(predicted, self.references, labels=SENTIMENT_LABELS)
            return {f"eval_{name}": value for name, value in scores.items()}
        from evaluation.answers import extract_final_number

        predicted = [extract_final_number(text) for text in self.last_predictions]
        return {"eval_exact_match": exact_match(predicted, self.references)}
