"""A SuperNode's training side: its data, model and trainer, built as ``main_sft.py`` builds them.

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

from config import FedArguments, ScriptArguments, to_dict
from federated_learning.aggregators import Aggregator, get_aggregator
from federated_learning.client import LocalTrainer
from federated_learning.runner import load_peft_model, set_threads, split_clients, use_bf16
from federated_learning.state import trainable_parameters
from federated_learning.trainers import build_sft_trainer
from flower_app.logs import setup_flower_logging
from flower_app.node_config import NodeSettings
from flower_app.run_config import RunSettings
from utils.model import validate_model_source
from utils.sft_data import load_sft_dataset, validate_sft_data_args
from utils.sft_tokenize import tokenize_sft

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    """What one client needs to train a round: the trainer on the model, and its tokenised rows."""

    key: tuple[object, ...]
    local_trainer: LocalTrainer
    trainable: dict[str, torch.nn.Parameter]
    aggregator: Aggregator  # built from the run flags alone: only its client_hooks are used here
    shard: Dataset


_last: list[Worker] = []  # at most one: the worker of the latest (run, node)


def load_client_rows(script_args: ScriptArguments, fed_args: FedArguments, node: NodeSettings) -> Dataset:
    """This node's rows: its own data, or its shard of the run's dataset split exactly as the simulation splits it."""
    if node.data_path is not None:
        validate_sft_data_args(node.data_path, None)
        return load_sft_dataset(node.data_path, None, script_args.dataset_sample, "train", script_args.seed)
    validate_sft_data_args(script_args.dataset_name, script_args.local_data_dir)
    dataset = load_sft_dataset(
        script_args.dataset_name, script_args.local_data_dir, script_args.dataset_sample, "train", script_args.seed
    )
    return dataset.select(split_clients(dataset, script_args, fed_args)[node.partition_id])


def build_worker(key: tuple[object, ...], settings: RunSettings, node: NodeSettings) -> Worker:
    """Load this node's data and the model, tokenise, and build the one trainer."""
    script_args, fed_args = settings.script_args, settings.fed_args
    if node.model_path is not None:
        script_args = dataclasses.replace(script_args, model_name_or_path=node.model_path)
    node.check_run(fed_args.num_clients)
    validate_model_source(script_args.model_name_or_path)
    set_threads(script_args.torch_threads)
    rows = load_client_rows(script_args, fed_args, node)
    model, tokenizer = load_peft_model(script_args)
    shard = tokenize_sft(rows, tokenizer, script_args.template, script_args.seq_length)
    if len(shard) == 0:
        raise ValueError(f"client {node.partition_id} has no usable example after tokenisation; raise --seq_length "
                         "or give it more data")
    # The trainer writes nothing (no saving, no reporting); it still wants an output folder.
    output_dir = Path(tempfile.gettempdir()) / "fedllm-flower-trainer"
    trainer = build_sft_trainer(model, tokenizer, shard, script_args, output_dir, use_bf16(script_args))
    logger.info("client %d: %d examples", node.partition_id, len(shard))
    return Worker(
        key, LocalTrainer(trainer, show_progress=False), trainable_parameters(model),
        get_aggregator(fed_args.fed_alg, **to_dict(fed_args)), shard,
    )


def get_worker(run_id: int, settings: RunSettings, node: NodeSettings) -> Worker:
    """The worker of (run, node), reusing the last one built in this process when it matches."""
    key = (run_id, node)
    if not _last or _last[0].key != key:
        setup_flower_logging()
        _last[:] = [build_worker(key, settings, node)]
    return _last[0]
