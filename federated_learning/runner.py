"""What main_sft.py and main_dpo.py share: run folder, threads, model + adapter, the simulation."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from peft import PeftModel
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import PreTrainedTokenizerBase, Trainer

from config import FedArguments, ScriptArguments, to_dict, validate
from federated_learning.aggregators import get_aggregator
from federated_learning.checkpoint import load_checkpoint
from federated_learning.client import LocalTrainer
from federated_learning.partition import ClientRows, client_rows, partition_indices
from federated_learning.partition_report import describe_partition
from federated_learning.simulation import ClientRunner, Evaluator, RoundPlan, Simulation
from federated_learning.state import trainable_parameters
from utils.model import (
    add_lora_adapter,
    bf16_supported,
    default_device,
    load_model_and_tokenizer,
    validate_model_source,
)

logger = logging.getLogger(__name__)


def setup_logging() -> None:
    """One concise log format; library chatter that is known to be harmless stays quiet."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    import datasets
    import transformers

    # Per-call progress bars of weight loading and dataset maps would interleave with the round bar.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def set_threads(requested: int) -> int:
    """Use ``requested`` intra-op threads, or one per CPU this process may run on."""
    threads = requested if requested > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def default_run_name(script_args: ScriptArguments, fed_args: FedArguments) -> str:
    """OpenFedLLM's run-folder naming, so its result paths stay familiar."""
    dataset = script_args.dataset_name.rstrip("/").split("/")[-1]
    return (
        f"{dataset}_{script_args.dataset_sample}_{fed_args.fed_alg}_c{fed_args.num_clients}s{fed_args.sample_clients}"
        f"_i{script_args.max_steps}_b{script_args.batch_size}a{script_args.gradient_accumulation_steps}"
        f"_l{script_args.seq_length}_r{script_args.peft_lora_r}a{script_args.peft_lora_alpha}"
        f"_{time.strftime('%Y%m%d%H%M%S')}"
    )


def make_run_dir(script_args: ScriptArguments, fed_args: FedArguments, *extra_configs: object) -> Path:
    """The run folder (a resumed run continues in its checkpoint's folder); writes config.json.

    ``extra_configs``: further config dataclasses of the entry point (main_dpo's DPOArguments).
    """
    if script_args.resume_from_checkpoint is not None:
        run_dir = Path(script_args.resume_from_checkpoint).resolve().parent
    else:
        run_dir = Path(script_args.output_dir) / (script_args.run_name or default_run_name(script_args, fed_args))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(script_args, fed_args, *extra_configs), indent=1))
    return run_dir


def load_peft_model(
    script_args: ScriptArguments, adapter_dir: str | None = None
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model + tokenizer + LoRA adapter as the flags ask."""
    model, tokenizer = load_model_and_tokenizer(
        script_args.model_name_or_path,
        cache_dir=script_args.model_cache_dir,
        torch_dtype=script_args.torch_dtype,
        load_in_8bit=script_args.load_in_8bit,
        load_in_4bit=script_args.load_in_4bit,
        trust_remote_code=script_args.trust_remote_code,
    )
    # LoRA A is drawn from torch's RNG: seeding it (without touching the caller's RNG state) makes
    # the initial adapter a function of --seed alone, so a simulation and a Flower server start alike.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(script_args.seed)
        peft_model = add_lora_adapter(
            model,
            r=script_args.peft_lora_r,
            alpha=script_args.peft_lora_alpha,
            dropout=script_args.peft_lora_dropout,
            modules=script_args.peft_target_modules,
            gradient_checkpointing=script_args.gradient_checkpointing,
            adapter_dir=adapter_dir,
        )
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("model loaded: %d trainable of %d parameters (%.3f%%)", trainable, total, 100 * trainable / total)
    return peft_model, tokenizer


def split_clients(dataset: Dataset, script_args: ScriptArguments, fed_args: FedArguments) -> list[np.ndarray]:
    """Each client's row indices into ``dataset`` as the flags say (simulation and Flower SuperNodes alike)."""
    return partition_indices(
        dataset,
        fed_args.num_clients,
        fed_args.split_strategy,
        script_args.seed,
        partition_column=fed_args.partition_column,
        alpha=fed_args.dirichlet_alpha,
        shards_per_client=fed_args.shards_per_client,
    )


def use_bf16(script_args: ScriptArguments) -> bool:
    """bf16 autocast: as asked, else wherever the device supports it well."""
    if script_args.bf16 is not None:
        return script_args.bf16
    return bf16_supported(default_device())


def run_simulation(
    script_args: ScriptArguments,
    fed_args: FedArguments,
    model: PeftModel,
    local_trainer: LocalTrainer | None,
    shards: Sequence[ClientRows],
    run_dir: Path,
    evaluator: Evaluator | None,
    *,
    client_runner: ClientRunner | None = None,
) -> Simulation:
    """Build the aggregator and the round loop, resume if asked, and train every remaining round.

    ``client_runner`` trains the clients elsewhere (the Flower ServerApp: on SuperNodes); without
    it they train in this process with ``local_trainer`` on ``shards``.
    """
    aggregator = get_aggregator(fed_args.fed_alg, **to_dict(fed_args))
    plan = RoundPlan(
        fed_alg=fed_args.fed_alg,
        num_rounds=fed_args.num_rounds,
        num_clients=fed_args.num_clients,
        sample_clients=fed_args.sample_clients,
        examples_per_round=script_args.batch_size * script_args.gradient_accumulation_steps * script_args.max_steps,
        learning_rate=script_args.learning_rate,
        min_learning_rate=script_args.min_learning_rate,
        seed=script_args.seed,
        save_model_freq=fed_args.save_model_freq,
        eval_every=script_args.eval_every,
    )
    simulation = Simulation(
        plan,
        model,
        trainable_parameters(model),
        local_trainer,
        shards,
        aggregator,
        run_dir,
        evaluator,
        client_runner=client_runner,
    )
    if script_args.resume_from_checkpoint is not None:
        simulation.restore(*load_checkpoint(script_args.resume_from_checkpoint))
        logger.info("resumed from %s after round %d", script_args.resume_from_checkpoint, simulation.rounds_done)
    simulation.run()
    logger.info("run folder: %s", run_dir)
    return simulation


TrainerBuilder = Callable[[PeftModel, PreTrainedTokenizerBase, Dataset, ScriptArguments, Path, bool], Trainer]
"""(model, tokenizer, first prepared shard, script_args, output_dir, bf16) -> the run's one TRL trainer."""


def run_federated(
    script_args: ScriptArguments,
    fed_args: FedArguments,
    *extra_configs: object,
    check: Callable[[], None],
    load: Callable[[], Dataset],
    prepare: Callable[[Dataset, PreTrainedTokenizerBase], Dataset],
    build_trainer: TrainerBuilder,
    build_evaluator: Callable[[PreTrainedTokenizerBase, bool], Evaluator | None],
    adapter_dir: str | None = None,
) -> Path:
    """One federated run, top to bottom; main_sft.py and main_dpo.py differ only in the callables they pass.

    ``check`` validates the mode's flags cheaply, ``load`` returns the training rows, ``prepare``
    tokenises them all at once, once per run (a tokeniser that drops rows adds
    ``partition.SOURCE_ROW``), ``build_trainer`` builds the trainer every client shares and
    ``build_evaluator(tokenizer, bf16)`` the round evaluation (not called with ``--eval_samples 0``);
    ``adapter_dir`` is an adapter to start from. Returns the run folder.
    """
    setup_logging()
    # Every check that needs no model happens before the (slow) model load.
    validate(script_args, fed_args)
    check()
    validate_model_source(script_args.model_name_or_path)
    threads = set_threads(script_args.torch_threads)

    dataset = load()
    partition = split_clients(dataset, script_args, fed_args)
    run_dir = make_run_dir(script_args, fed_args, *extra_configs)
    describe_partition(dataset, partition, fed_args.partition_column, run_dir)
    model, tokenizer = load_peft_model(script_args, adapter_dir)
    # One tokenisation of the whole set; each client holds only its row indices into it.
    shards = client_rows(prepare(dataset, tokenizer), partition, len(dataset))
    empty = [cid for cid, shard in enumerate(shards) if len(shard) == 0]
    if empty:
        raise ValueError(
            f"clients {empty} have no usable example after tokenisation (see the warnings above); "
            "raise --seq_length or lower --num_clients"
        )
    bf16 = use_bf16(script_args)
    logger.info(
        "%d clients, %d training examples; %d threads, bf16 autocast %s", len(shards), len(dataset), threads, bf16
    )
    trainer = build_trainer(model, tokenizer, shards[0].to_dataset(), script_args, run_dir / "trainer", bf16)
    evaluator = build_evaluator(tokenizer, bf16) if script_args.eval_samples > 0 else None
    with logging_redirect_tqdm():
        run_simulation(script_args, fed_args, model, LocalTrainer(trainer), shards, run_dir, evaluator)
    return run_dir
