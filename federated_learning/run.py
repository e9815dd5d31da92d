"""One federated run in this process, top to bottom, for any registered task.

checks -> data -> client split -> model + adapter -> tokenise once -> the shared trainer ->
round evaluation -> round loop (resumed if asked) -> rounds. ``prepare`` does everything before
the first round, so every input problem surfaces there; ``execute`` trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from config import RunConfig
from federated_learning.checks import validate_flags
from federated_learning.process import quiet_progress_bars, set_threads, setup_logging
from federated_learning.tasks import get_task
from utils.model_source import validate_model_source

if TYPE_CHECKING:
    from federated_learning.round_loop import Evaluator, RoundLoop

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """A run ready to train: its round loop and its folder."""

    loop: RoundLoop
    run_dir: Path


def prepare(cfg: RunConfig, *, wrap_evaluator: Callable[[Evaluator], Evaluator] | None = None) -> PreparedRun:
    """Everything before the first round; a ValueError names the flag or file at fault.

    ``wrap_evaluator`` wraps the round evaluation (``training_scripts/reproduce_table.py`` reuses
    the untrained model's scores across the runs of a table with it).
    """
    setup_logging()
    task = get_task(cfg.task)
    # Every check that needs no model happens before the (slow) model load.
    validate_flags(cfg)
    task.validate(cfg)
    task.check_data(cfg)
    validate_model_source(cfg.script.model_name_or_path)
    quiet_progress_bars()
    threads = set_threads(cfg.script.torch_threads)

    from federated_learning.build import (
        build_client_evaluation,
        build_round_evaluation,
        build_round_loop,
        load_peft_model,
        make_run_dir,
        split_clients,
        use_bf16,
    )
    from federated_learning.client import LocalTrainer
    from federated_learning.partition import client_rows
    from federated_learning.partition_report import describe_partition, record_tokenization, tokenization_report

    dataset = task.load(cfg)
    partition = split_clients(dataset, cfg)
    run_dir = make_run_dir(cfg)
    describe_partition(dataset, partition, cfg.fed.partition_column, run_dir)
    model, tokenizer = load_peft_model(cfg.script, task.start_adapter(cfg))
    # One tokenisation of the whole set; each client holds only its row indices into it.
    prepared = task.tokenize(dataset, tokenizer, cfg)
    report = tokenization_report(prepared, partition, len(dataset))
    record_tokenization(run_dir, report, cfg.script.seq_length)
    shards = client_rows(prepared, partition, len(dataset))
    empty = [cid for cid, shard in enumerate(shards) if len(shard) == 0]
    if empty:
        left_out = sum(report[cid]["dropped"] for cid in empty)
        raise ValueError(
            f"clients {empty} have no trainable example: {left_out} of their rows need more than --seq_length "
            f"{cfg.script.seq_length} tokens for the response alone (the rest: none); raise --seq_length, or "
            "lower --num_clients if they hold no rows"
        )
    bf16 = use_bf16(cfg.script)
    logger.info(
        "%d clients, %d training examples; %d threads, bf16 autocast %s", len(shards), len(dataset), threads, bf16
    )
    trainer = task.build_trainer(model, tokenizer, shards[0].to_dataset(), cfg, run_dir / "trainer", bf16)
    task.prepare_model(model, cfg)
    evaluator = build_round_evaluation(task, cfg, tokenizer, bf16)
    client_evaluation = build_client_evaluation(evaluator, dataset, partition, cfg)
    if evaluator is not None and wrap_evaluator is not None:
        evaluator = wrap_evaluator(evaluator)
    loop = build_round_loop(cfg, model, LocalTrainer(trainer), shards, run_dir, evaluator,
                            client_evaluation=client_evaluation)
    return PreparedRun(loop, run_dir)


def execute(prepared: PreparedRun) -> Path:
    """Train every remaining round; return the run folder."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        prepared.loop.run()
    logger.info("run folder: %s", prepared.run_dir)
    return prepared.run_dir


def run(cfg: RunConfig, *, wrap_evaluator: Callable[[Evaluator], Evaluator] | None = None) -> Path:
    """Prepare and train the run ``cfg`` describes; return its folder."""
    return execute(prepare(cfg, wrap_evaluator=wrap_evaluator))
