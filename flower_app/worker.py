"""A SuperNode's training side: its data, model and trainer, built as the simulation builds them.

Flower's deployment engine starts a fresh ClientApp process per message, so this is built once
per round there; under the Ray simulation backend a process serves many messages, so the last
worker is kept and reused while the run and the client stay the same.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from federated_learning.aggregators import ClientAlgorithm, build_client_algorithm
from federated_learning.build import exchanged_tensors, load_peft_model, split_clients, use_bf16
from federated_learning.client import LocalTrainer
from federated_learning.process import set_threads
from federated_learning.tasks import Task, get_task
from federated_learning.wire import Wire
from flower_app.logs import setup_flower_logging
from flower_app.node_config import NodeSettings
from flower_app.run_config import RunSettings
from utils.constants import PROMPT_CUT, SOURCE_ROW
from utils.model_source import validate_model_source

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    """What one client needs to train a round: the trainer on the model, and its tokenised rows."""

    key: tuple[object, ...]
    local_trainer: LocalTrainer
    trainable: dict[str, torch.Tensor]  # the exchanged keys (federated_learning.build.exchanged_tensors)
    algorithm: ClientAlgorithm  # the client side of --fed_alg (its hooks)
    shard: Dataset
    wire: Wire  # the run's codecs (federated_learning.wire)


_last: list[Worker] = []  # at most one: the worker of the latest (run, node)


def load_client_rows(task: Task, settings: RunSettings, node: NodeSettings) -> Dataset:
    """This node's rows: its own data, or its shard of the run's dataset split exactly as the simulation splits it."""
    cfg = settings.cfg
    if node.data_path is not None:
        task.check_data(cfg, node.data_path)
        return task.load(cfg, node.data_path)
    task.check_data(cfg)
    dataset = task.load(cfg)
    return dataset.select(split_clients(dataset, cfg)[node.partition_id])


def build_worker(key: tuple[object, ...], settings: RunSettings, node: NodeSettings) -> Worker:
    """Load this node's data and the model, tokenise, and build the one trainer, as the simulation does."""
    cfg = settings.cfg
    if node.model_path is not None:
        cfg = dataclasses.replace(cfg, script=dataclasses.replace(cfg.script, model_name_or_path=node.model_path))
    task = get_task(cfg.task)
    node.check_run(cfg.fed.num_clients)
    validate_model_source(cfg.script.model_name_or_path)
    task.validate(cfg)
    algorithm = build_client_algorithm(cfg.fed)
    set_threads(cfg.script.torch_threads)
    rows = load_client_rows(task, settings, node)
    model, tokenizer = load_peft_model(cfg.script, task.start_adapter(cfg))
    shard = task.tokenize(rows, tokenizer, cfg)
    bookkeeping = [c for c in (SOURCE_ROW, PROMPT_CUT) if c in shard.column_names]
    if bookkeeping:  # the node trains on the rows kept, and needs nothing else about them
        shard = shard.remove_columns(bookkeeping)
    if len(shard) == 0:
        raise ValueError(f"client {node.partition_id} has no usable example after tokenisation; raise --seq_length "
                         "or give it more data")
    # The trainer writes nothing (no saving, no reporting); it still wants an output folder.
    output_dir = Path(tempfile.gettempdir()) / "fedllm-flower-trainer"
    trainer = task.build_trainer(model, tokenizer, shard, cfg, output_dir, use_bf16(cfg.script))
    task.prepare_model(model, cfg)
    logger.info("client %d: %d examples", node.partition_id, len(shard))
    return Worker(key, LocalTrainer(trainer, show_progress=False), exchanged_tensors(model, cfg), algorithm, shard,
                  Wire.from_flags(cfg.fed, cfg.script.seed))


def get_worker(run_id: int, settings: RunSettings, node: NodeSettings) -> Worker:
    """The worker of (run, node), reusing the last one built in this process when it matches."""
    key = (run_id, node)
    if not _last or _last[0].key != key:
        setup_flower_logging()
        _last[:] = [build_worker(key, settings, node)]
    return _last[0]
