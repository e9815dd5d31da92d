"""A SuperNode's training side: its data, model and trainer, built as ``main_sft.py`` / ``main_dpo.py`` build them.

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

from config import ScriptArguments, to_dict
from federated_learning.aggregators import Aggregator, get_aggregator
from federated_learning.client import LocalTrainer
from federated_learning.partition import SOURCE_ROW
from federated_learning.runner import load_peft_model, set_threads, split_clients, use_bf16
from federated_learning.state import trainable_parameters
from federated_learning.trainers import build_dpo_trainer, build_sft_trainer
from flower_app.logs import setup_flower_logging
from flower_app.node_config import NodeSettings
from flower_app.run_config import RunSettings
from utils.dpo_data import load_dpo_dataset, validate_dpo_data_args
from utils.dpo_tokenize import tokenize_dpo
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


def load_client_rows(settings: RunSettings, script_args: ScriptArguments, node: NodeSettings) -> Dataset:
    """This node's rows: its own data, or its shard of the run's dataset split exactly as the simulation splits it."""
    if settings.mode == "dpo":
        split = settings.dpo_args.dataset_split

        def check(name: str, local_dir: str | None) -> None:
            validate_dpo_data_args(name, local_dir, split)

        def load(name: str, local_dir: str | None) -> Dataset:
            return load_dpo_dataset(name, local_dir, script_args.dataset_sample, split, script_args.seed)
    else:

        def check(name: str, local_dir: str | None) -> None:
            validate_sft_data_args(name, local_dir)

        def load(name: str, local_dir: str | None) -> Dataset:
            return load_sft_dataset(name, local_dir, script_args.dataset_sample, "train", script_args.seed)

    if node.data_path is not None:
        check(node.data_path, None)
        return load(node.data_path, None)
    check(script_args.dataset_name, script_args.local_data_dir)
    dataset = load(script_args.dataset_name, script_args.local_data_dir)
    return dataset.select(split_clients(dataset, script_args, settings.fed_args)[node.partition_id])


def build_worker(key: tuple[object, ...], settings: RunSettings, node: NodeSettings) -> Worker:
    """Load this node's data and the model, tokenise, and build the one trainer (SFT or DPO, as main_<mode>.py)."""
    script_args, fed_args = settings.script_args, settings.fed_args
    dpo = settings.mode == "dpo"
    if node.model_path is not None:
        script_args = dataclasses.replace(script_args, model_name_or_path=node.model_path)
    node.check_run(fed_args.num_clients)
    validate_model_source(script_args.model_name_or_path)
    if dpo:
        from main_dpo import validate_dpo_flags

        validate_dpo_flags(script_args)
    set_threads(script_args.torch_threads)
    rows = load_client_rows(settings, script_args, node)
    model, tokenizer = load_peft_model(script_args, script_args.ref_adapter if dpo else None)
    if dpo:
        shard = tokenize_dpo(rows, tokenizer, script_args.template, script_args.seq_length)
        if SOURCE_ROW in shard.column_names:  # pairs were dropped; the node needs only the kept ones
            shard = shard.remove_columns(SOURCE_ROW)
    else:
        shard = tokenize_sft(rows, tokenizer, script_args.template, script_args.seq_length)
    if len(shard) == 0:
        raise ValueError(f"client {node.partition_id} has no usable example after tokenisation; raise --seq_length "
                         "or give it more data")
    # The trainer writes nothing (no saving, no reporting); it still wants an output folder.
    output_dir = Path(tempfile.gettempdir()) / "fedllm-flower-trainer"
    build_trainer = build_dpo_trainer if dpo else build_sft_trainer
    trainer = build_trainer(model, tokenizer, shard, script_args, output_dir, use_bf16(script_args))
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
