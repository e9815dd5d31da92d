"""The benchmark interface and registry: a benchmark is a loader, a prompt builder, an extractor and a scorer.

Adding a benchmark is one file in ``evaluation/benchmarks/`` with a class decorated by
``@register``. Generation-based benchmarks subclass ``GenerativeBenchmark`` and only say how to
load rows, phrase the prompt, read the answer and score; the shared ``evaluate`` batches greedy
generation (adapter merged) and records every prompt, prediction and score.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from evaluation.generation import generate_greedy, stop_strings_for
from utils.templates import get_template

Row = dict[str, Any]


@dataclass
class EvalSettings:
    """Everything a benchmark may need besides the model; built once from the CLI flags."""

    template: str = "alpaca"
    batch_size: int = 8
    seq_length: int = 512
    limit: int | None = None
    data_dir: str | None = None
    bf16: bool = False
    max_new_tokens: int | None = None  # None: each benchmark's own budget
    seed: int = 2023
    show_progress: bool = False
    # code
    allow_code_execution: bool = False
    num_samples: int = 1  # > 1: sampled completions per problem for pass@k
    temperature: float = 0.8
    top_p: float = 0.95
    pass_k: tuple[int, ...] = (1, 10)
    execution_timeout: float = 3.0  # seconds of wall and CPU time per program
    execution_memory_mb: int = 1024  # address-space limit of each program's process
    # open-ended
    judge: Any = None  # evaluation.judge.JudgeClient
    # loss / preference
    sft_dataset: str = "bundled/fin_sentiment"
    local_data_dir: str | None = None
    preference_dataset: str = "bundled/preferences"
    preference_split: str | None = None  # the training split; held-out pairs come from its test split
    dpo_beta: float = 0.1
    cache_reference: bool = False  # the reference policy is fixed between calls (a training run): score it once


@dataclass
class BenchmarkResult:
    """Metrics of one model on one benchmark, with a record per example (prompt, prediction, score)."""

    metrics: dict[str, float]
    records: list[Row] = field(default_factory=list)
    artifacts: dict[str, list[Row]] = field(default_factory=dict)  # extra JSONL files, e.g. judge verdicts


class Benchmark(ABC):
    """One benchmark: where its data lives and how a model is scored on it."""

    name: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    hub_config: ClassVar[str | None] = None
    hub_revision: ClassVar[str | None] = None  # e.g. "refs/convert/parquet" for a loading-script repository
    hub_data_dir: ClassVar[str | None] = None  # a folder of that revision (its configs are folders there)
    original_folder: ClassVar[str | None] = None  # <data_dir>/<this>: the original release's files, if present
    split: ClassVar[str] = "test"
    local_layout: ClassVar[str] = ""  # README text: the files expected under --data_dir
    offline: ClassVar[bool] = False  # runs with nothing but this repository and its packages
    needs_judge: ClassVar[bool] = False
    needs_code_execution: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ()  # the headline metrics (README and tests)
    lower_is_better: ClassVar[tuple[str, ...]] = ()  # metrics where less is better (a client's worst is its highest)
    scores_dataset: ClassVar[str | None] = None  # a training dataset whose test split this scores (round evaluation)
    shuffled: ClassVar[bool] = False  # raw_rows come in a seeded random order: --limit keeps the first N

    def raw_rows(self, settings: EvalSettings) -> list[Row]:
        """Rows in the source schema: from ``--data_dir`` (the original release's folder if there, else the hub
        mirror) or the Hub."""
        from evaluation.data import load_rows

        if self.original_folder and settings.data_dir and (Path(settings.data_dir).expanduser()
                                                            / self.original_folder).is_dir():
            return load_rows(None, self.split, settings.data_dir, local_name=self.original_folder)
        return load_rows(self.hub_id, self.split, settings.data_dir, self.hub_config, revision=self.hub_revision,
                         hub_data_dir=self.hub_data_dir)

    @abstractmethod
    def normalize(self, rows: list[Row]) -> list[Row]:
        """Turn source rows into examples with at least ``id`` and ``reference`` keys.

        ``id`` is the example's position in ``rows`` (``load_groups`` reads each example's source row through it).
        """

    def load_groups(self, settings: EvalSettings, column: str) -> tuple[list[Row], list[Any]]:
        """Every example (``--limit`` ignored) and its source row's value of ``column`` (per-client evaluation).

        A ValueError names ``--partition_column`` when the source rows lack it.
        """
        rows = self.raw_rows(settings)
        if rows and column not in rows[0]:
            raise ValueError(f"--eval_per_client: the held-out rows of {self.name} have no --partition_column "
                             f"{column!r} (their columns: {sorted(rows[0])}), so no client's mix can be drawn; "
                             "pass the column that holds each row's label or group")
        examples = self.normalize(rows)
        return examples, [rows[example["id"]][column] for example in examples]

    def load(self, settings: EvalSettings) -> list[Row]:
        """The examples to evaluate: all, or a seeded sample of ``--limit`` of them.

        Where the rows are already in a seeded random order (``shuffled``: the training loaders'
        test splits) the sample is their first ``--limit``, the same rows the round evaluation of a
        training run with ``--eval_samples`` scores.
        """
        examples = self.normalize(self.raw_rows(settings))
        if not examples:
            raise ValueError(f"benchmark {self.name}: no examples were loaded")
        if settings.limit is not None and settings.limit < len(examples):
            if self.shuffled:
                return examples[: settings.limit]
            picked = sorted(random.Random(settings.seed).sample(range(len(examples)), settings.limit))
            examples = [examples[i] for i in picked]
        return examples

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        """Score ``model`` on ``examples``."""

    def fits(self, examples: Sequence[Row], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> list[bool]:
        """Whether each of ``examples`` can be scored within ``--seq_length`` (all, where it bounds nothing)."""
        return [True] * len(examples)

    def unscorable(self, examples: Sequence[Row], tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> int:
        """How many ``examples`` cannot be scored within ``--seq_length`` (``fits``)."""
        return sum(not fit for fit in self.fits(examples, tokenizer, settings))


class GenerativeBenchmark(Benchmark):
    """A benchmark scored from one greedy completion per example."""

    max_new_tokens: ClassVar[int] = 32
    uses_template: ClassVar[bool] = True  # False: the prompt is fed raw (code completion)

    @abstractmethod
    def build_prompt(self, example: Row) -> str:
        """The instruction for one example (the --template wraps it)."""

    @abstractmethod
    def extract(self, completion: str, example: Row) -> Any:
        """The answer contained in a completion (None when there is none)."""

    @abstractmethod
    def score(self, answers: Sequence[Any], examples: Sequence[Row]) -> tuple[dict[str, float], list[float]]:
        """Benchmark metrics, and a per-example score for the records."""

    def generation_budget(self, examples: Sequence[Row], tokenizer: PreTrainedTokenizerBase) -> int:
        """New tokens per completion (``--max_new_tokens`` overrides it)."""
        return self.max_new_tokens

    def render(self, example: Row, tokenizer: PreTrainedTokenizerBase, settings: EvalSettings) -> str:
        """The full model input of one example."""
        instruction = self.build_prompt(example)
        if not self.uses_template:
            return instruction
        return get_template(settings.template).prompt(instruction, tokenizer)

    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Row], settings: EvalSettings
    ) -> BenchmarkResult:
        prompts = [self.render(ex, tokenizer, settings) for ex in examples]
        completions = generate_greedy(
            model, tokenizer, prompts,
            max_new_tokens=settings.max_new_tokens or self.generation_budget(examples, tokenizer),
            batch_size=settings.batch_size, bf16=settings.bf16,
            stop_strings=stop_strings_for(settings.template) if self.uses_template else (),
            show_progress=settings.show_progress,
        )
        answers = [self.extract(text, ex) for text, ex in zip(completions, examples, strict=True)]
        metrics, scores = self.score(answers, examples)
        records = [
            {"id": ex["id"], "prompt": prompt, "prediction": text, "answer": answer,
             "reference": ex["reference"], "score": sc}
            for ex, prompt, text, answer, sc in zip(examples, prompts, completions, answers, scores, strict=True)
        ]
        return BenchmarkResult(metrics, records)


BENCHMARKS: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator adding a benchmark to the registry under its ``name``."""
    if cls.name in BENCHMARKS:
        raise ValueError(f"benchmark name {cls.name!r} is registered twice")
    BENCHMARKS[cls.name] = cls
    return cls


def _import_all() -> None:
    """Import every module of ``evaluation.benchmarks`` so that their ``@register`` runs."""
    import evaluation.benchmarks as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def available() -> dict[str, type[Benchmark]]:
    """All registered benchmarks, by name."""
    _import_all()
    return dict(sorted(BENCHMARKS.items()))


def benchmarks_scoring(dataset_name: str) -> list[str]:
    """Names of the benchmarks that score the held-out split of the training dataset ``dataset_name``."""
    return [name for name, cls in available().items() if cls.scores_dataset == dataset_name]


def get_benchmark(name: str) -> Benchmark:
    """An instance of the benchmark called ``name``; unknown names fail with the valid choices."""
    registry = available()
    if name not in registry:
        raise ValueError(f"--benchmarks: unknown benchmark {name!r}. Valid: {', '.join(registry)}")
    return registry[name]()
