"""The training-task interface and its registry: what SFT, DPO (and any next task) say about themselves.

A task is one file in this package with a class decorated ``@register``: its own flags (a
dataclass) and default overrides, its cheap checks, how it loads and tokenises its training rows,
the TRL trainer every client of a run shares, the registry benchmarks the round loop evaluates,
and the adapter a run starts from. Everything else (sampling, partitions, aggregation, the round
loop, checkpoints, the Flower apps) is shared and looks the task up by name, so adding a task
touches no other file. Importing a task module must stay light (the command line reads a task's
flags before anything heavy loads): heavy imports go inside the methods.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from config import RunConfig

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase, Trainer


@dataclass(frozen=True)
class RoundBenchmark:
    """A registry benchmark the round evaluation runs, and the prefix of its keys in metrics.jsonl."""

    name: str  # evaluation.registry name
    prefix: str = "eval_"  # a metric "accuracy" is logged as prefix + "accuracy"


class Task(ABC):
    """One kind of local training (SFT, DPO, ...), registered under ``name``."""

    name: ClassVar[str]
    config_class: ClassVar[type | None] = None  # the dataclass of this task's own flags
    defaults: ClassVar[Mapping[str, Any]] = {}  # default values of shared flags that differ for this task

    def validate(self, cfg: RunConfig) -> None:  # noqa: B027  (optional: most tasks add no checks)
        """Check this task's own flags, cheaply (no model, no data); raise ValueError naming the flag."""

    @staticmethod
    def data_source(cfg: RunConfig, data_path: str | None = None) -> tuple[str, str | None]:
        """``(--dataset_name, --local_data_dir)``, or a SuperNode's own ``data_path`` (then no local data dir)."""
        return (data_path, None) if data_path is not None else (cfg.script.dataset_name, cfg.script.local_data_dir)

    @abstractmethod
    def check_data(self, cfg: RunConfig, data_path: str | None = None) -> None:
        """Check the training-data flags cheaply (``data_path``: a SuperNode's own data instead)."""

    @abstractmethod
    def load(self, cfg: RunConfig, data_path: str | None = None) -> Dataset:
        """The training rows (``data_path``: a SuperNode's own data instead of ``--dataset_name``)."""

    @abstractmethod
    def tokenize(self, rows: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: RunConfig) -> Dataset:
        """Tokenise all training rows at once; a tokeniser that drops rows adds ``SOURCE_ROW``."""

    @abstractmethod
    def build_trainer(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase, tokenized: Dataset,
                      cfg: RunConfig, output_dir: Path, bf16: bool) -> Trainer:
        """The TRL trainer every client of the run shares (``tokenized``: some prepared rows)."""

    @abstractmethod
    def round_benchmarks(self, cfg: RunConfig) -> list[RoundBenchmark]:
        """The registry benchmarks the round loop scores the global adapter on."""

    def eval_settings(self, cfg: RunConfig) -> dict[str, Any]:
        """``evaluation.registry.EvalSettings`` fields the round benchmarks need from this task's flags."""
        return {}

    def start_adapter(self, cfg: RunConfig) -> str | None:
        """An adapter folder the global adapter starts from (None: a fresh LoRA)."""
        return None

    def prepare_model(self, model: PeftModel, cfg: RunConfig) -> None:  # noqa: B027  (optional hook)
        """Called once on every model a run holds (simulation, Flower server, nodes), after the trainer is built."""


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make the task ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"task {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _import_all() -> None:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


def available_tasks() -> list[str]:
    """Registered task names, sorted."""
    _import_all()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The task registered as ``name``; unknown names fail with the valid choices."""
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"task {name!r} is unknown; registered tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()
