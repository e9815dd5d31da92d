"""The parts of a run, built from its config: run folder, model + adapter, client split, round evaluation, round loop.

``federated_learning.run`` puts them together for the single-process simulation; the Flower
ServerApp and ClientApp (``flower_app/``) use the same functions, so both build a run alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from config import FedArguments, RunConfig, ScriptArguments, to_dict
from evaluation.client_eval import ClientEvaluation, prompt_text
from evaluation.client_sets import client_mixes
from evaluation.registry import EvalSettings
from evaluation.round_eval import RoundEvaluation
from federated_learning.aggregators import build_aggregator, build_client_algorithm, resolve_fed_alg
from federated_learning.aggregators._registry import aggregator_class
from federated_learning.attacks import Attack
from federated_learning.checkpoint import load_checkpoint
from federated_learning.checks import client_ranks, parse_attack_clients
from federated_learning.client import LocalTrainer
from federated_learning.merged_delta import attach_merged_deltas
from federated_learning.partition import ClientRows, partition_indices
from federated_learning.round_loop import ClientRunner, Evaluator, RoundLoop, RoundPlan
from federated_learning.state import trainable_parameters
from federated_learning.tasks import Task
from federated_learning.wire import Wire
from utils.model import add_lora_adapter, bf16_supported, default_device, load_model_and_tokenizer

logger = logging.getLogger(__name__)


def default_run_name(cfg: RunConfig) -> str:
    """OpenFedLLM's run-folder naming, so its result paths stay familiar."""
    script, fed = cfg.script, cfg.fed
    dataset = script.dataset_name.rstrip("/").split("/")[-1]
    return (
        f"{dataset}_{script.dataset_sample}_{fed.fed_alg}_c{fed.num_clients}s{fed.sample_clients}"
        f"_i{script.max_steps}_b{script.batch_size}a{script.gradient_accumulation_steps}"
        f"_l{script.seq_length}_r{script.peft_lora_r}a{script.peft_lora_alpha}"
        f"_{time.strftime('%Y%m%d%H%M%S')}"
    )


def make_run_dir(cfg: RunConfig) -> Path:
    """The run folder (a resumed run continues in its checkpoint's folder); writes config.json."""
    script = cfg.script
    if script.resume_from_checkpoint is not None:
        run_dir = Path(script.resume_from_checkpoint).resolve().parent
    else:
        run_dir = Path(script.output_dir) / (script.run_name or default_run_name(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(*cfg.sections()), indent=1))
    return run_dir


def load_peft_model(
    script: ScriptArguments, adapter_dir: str | None = None
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model + tokenizer + LoRA adapter (fresh, or loaded from ``adapter_dir``) as the flags ask."""
    model, tokenizer = load_model_and_tokenizer(
        script.model_name_or_path,
        cache_dir=script.model_cache_dir,
        torch_dtype=script.torch_dtype,
        load_in_8bit=script.load_in_8bit,
        load_in_4bit=script.load_in_4bit,
        trust_remote_code=script.trust_remote_code,
    )
    # LoRA A is drawn from torch's RNG: seeding it (without touching the caller's RNG state) makes
    # the initial adapter a function of --seed alone, so a simulation and a Flower server start alike.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(script.seed)
        try:
            peft_model = add_lora_adapter(
                model,
                r=script.peft_lora_r,
                alpha=script.peft_lora_alpha,
                dropout=script.peft_lora_dropout,
                modules=script.peft_target_modules,
                gradient_checkpointing=script.gradient_checkpointing,
                adapter_dir=adapter_dir,
            )
        except RuntimeError as err:  # a saved adapter whose shapes are another model's
            if adapter_dir is None:
                raise
            lines = [line.strip() for line in str(err).strip().splitlines()]
            detail = next((line for line in lines if "size mismatch" in line), lines[0]).rstrip(".")
            raise ValueError(f"the adapter {adapter_dir} does not fit --model_name_or_path {script.model_name_or_path} "
                             f"({detail}); pass an adapter trained on this model") from err
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("model loaded: %d trainable of %d parameters (%.3f%%)", trainable, total, 100 * trainable / total)
    return peft_model, tokenizer


def split_clients(dataset: Dataset, cfg: RunConfig) -> list[np.ndarray]:
    """Each client's row indices into ``dataset`` as the flags say (simulation and Flower SuperNodes alike)."""
    fed = cfg.fed
    return partition_indices(
        dataset,
        fed.num_clients,
        fed.split_strategy,
        cfg.script.seed,
        partition_column=fed.partition_column,
        alpha=fed.dirichlet_alpha,
        shards_per_client=fed.shards_per_client,
    )


def use_bf16(script: ScriptArguments) -> bool:
    """bf16 autocast: as asked, else wherever the device supports it well."""
    if script.bf16 is not None:
        return script.bf16
    return bf16_supported(default_device())


def build_round_evaluation(
    task: Task, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, bf16: bool
) -> RoundEvaluation | None:
    """The task's round benchmarks on ``--eval_samples`` held-out examples (None: evaluation is off)."""
    script = cfg.script
    benchmarks = task.round_benchmarks(cfg)
    if script.eval_samples == 0 or not benchmarks:
        return None
    settings = EvalSettings(
        template=script.template, batch_size=script.eval_batch_size, seq_length=script.seq_length,
        limit=script.eval_samples, bf16=bf16, seed=script.seed, local_data_dir=script.local_data_dir,
        cache_reference=True,  # a run's reference policy is fixed for the run
    )
    settings = dataclasses.replace(settings, **task.eval_settings(cfg))
    return RoundEvaluation.load([(b.name, b.prefix) for b in benchmarks], tokenizer, settings)


def build_client_evaluation(
    evaluation: RoundEvaluation | None, dataset: Dataset, partition: Sequence[np.ndarray], cfg: RunConfig
) -> ClientEvaluation | None:
    """``--eval_per_client``: the round benchmarks on each client's own held-out sets (None when it is off).

    A client's mix is its share of every ``--partition_column`` value among its training rows; an
    IID split of data without the default column (``label``) gives every client a sample of the
    whole held-out split; a column named with ``--partition_column`` that the data lacks is refused.
    """
    script, fed = cfg.script, cfg.fed
    if not script.eval_per_client:
        return None
    if evaluation is None:
        raise ValueError(f"--eval_per_client: --dataset_name {script.dataset_name} has no held-out split to draw the "
                         "clients' sets from; use a dataset with a test split (a folder with train* and test* "
                         "files, a bundled or hub dataset), or drop --eval_per_client")
    column: str | None = fed.partition_column
    if column in dataset.column_names:
        mixes = client_mixes(dataset[column], partition)
    elif column == FedArguments.partition_column:  # the default, which data without labels lacks
        column, mixes = None, [{0: 1.0}] * len(partition)
    else:
        raise ValueError(f"--eval_per_client: --partition_column {column!r} is not a column of the training set "
                         f"(its columns: {dataset.column_names}); name the column that holds each row's label, "
                         "group or user")
    first = "instruction" if "instruction" in dataset.column_names else "prompt"
    texts = {prompt_text({first: value}) for value in dataset[first]}
    return ClientEvaluation.build(evaluation, column, mixes, script.eval_per_client, texts)


def exchanged_tensors(model: PeftModel, cfg: RunConfig) -> dict[str, torch.Tensor]:
    """{key: live tensor} of what server and clients exchange: the adapter's trainable weights, plus the merged
    deltas of the algorithms that merge into the base (attached here, ``federated_learning.merged_delta``)."""
    tensors: dict[str, torch.Tensor] = dict(trainable_parameters(model))
    if aggregator_class(cfg.fed.fed_alg, cfg.fed.fedopt_variant).merges_into_base:
        tensors.update(attach_merged_deltas(model))
    return tensors


def build_round_loop(
    cfg: RunConfig,
    model: PeftModel,
    local_trainer: LocalTrainer | None,
    shards: Sequence[ClientRows],
    run_dir: Path,
    evaluator: Evaluator | None,
    *,
    client_runner: ClientRunner | None = None,
    client_sizes: dict[int, int] | None = None,
    client_evaluation: ClientEvaluation | None = None,
) -> RoundLoop:
    """The aggregator and the round loop of ``cfg``, resumed from ``--resume_from_checkpoint`` if given.

    ``client_runner`` trains the clients elsewhere (the Flower ServerApp: on SuperNodes); without
    it they train in this process with ``local_trainer`` on ``shards``. ``client_sizes``: the most
    examples each client can report (default: its shard's size), which the server checks.
    """
    script, fed = cfg.script, cfg.fed
    plan = RoundPlan(
        fed_alg=fed.fed_alg,
        local_client=resolve_fed_alg(fed.fed_alg).local_client,
        num_rounds=fed.num_rounds,
        num_clients=fed.num_clients,
        sample_clients=fed.sample_clients,
        examples_per_round=script.batch_size * script.gradient_accumulation_steps * script.max_steps,
        learning_rate=script.learning_rate,
        min_learning_rate=script.min_learning_rate,
        seed=script.seed,
        save_model_freq=fed.save_model_freq,
        eval_every=script.eval_every,
        client_weighting=fed.client_weighting,
        max_update_norm=fed.max_update_norm,
        update_norm_bound=fed.update_norm_bound,
        client_ranks=client_ranks(cfg),
        comm_budget_mb=fed.comm_budget_mb,
        personalize_steps=script.personalize_steps,
        personalize_examples=script.batch_size * script.gradient_accumulation_steps * script.personalize_steps,
    )
    loop = RoundLoop(
        plan,
        model,
        exchanged_tensors(model, cfg),
        local_trainer,
        shards,
        build_aggregator(fed, script.seed),
        build_client_algorithm(fed),
        run_dir,
        evaluator,
        client_runner=client_runner,
        client_sizes=client_sizes if client_sizes is not None else {cid: len(rows) for cid, rows in enumerate(shards)},
        wire=Wire.from_flags(fed, script.seed),
        client_evaluation=client_evaluation,
        attack=None if fed.attack == "none" else Attack(fed.attack, parse_attack_clients(fed.attack_clients,
                                                                                           fed.num_clients),
                                                      fed.attack_scale, script.seed),
    )
    if script.resume_from_checkpoint is not None:
        if client_runner is not None and loop.client_algorithm.keeps_personal_state():
            raise ValueError(f"--resume_from_checkpoint: --fed_alg {fed.fed_alg}'s clients keep part of the adapter on "
                             "their SuperNodes, and a new Flower run starts them afresh; resume it in the simulation "
                             "(main_*.py) or start the Flower run over")
        if client_runner is not None and loop.wire.upload.error_feedback:
            raise ValueError(f"--resume_from_checkpoint: with --upload_codec {fed.upload_codec} each client keeps its "
                             "error-feedback residual on its SuperNode, and a new Flower run starts them afresh; "
                             "resume it in the simulation (main_*.py) or start the Flower run over")
        loop.restore(*load_checkpoint(script.resume_from_checkpoint))
        logger.info("resumed from %s after round %d", script.resume_from_checkpoint, loop.rounds_done)
    return loop
