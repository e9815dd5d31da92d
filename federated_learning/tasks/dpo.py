"""Federated Direct Preference Optimization (DPO): TRL's DPOTrainer on prompt / chosen / rejected pairs.

Data: ``utils.dpo_data`` (hh-rlhf, UltraFeedback, bundled and local preference pairs), tokenised
once per run (``utils.dpo_tokenize``). The reference policy is fixed for the whole run and never a
second copy of the base model: the base model with the adapter disabled (OpenFedLLM's meaning
under PEFT), or with ``--ref_adapter <dir>`` that adapter, loaded as a frozen ``ref`` adapter on
every model of the run (which also starts from it). The round evaluation is the registry's
``dpo_preference`` on the dataset's held-out split: implicit-reward accuracy and margin against
that same reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import RunConfig
from federated_learning.tasks.base import RoundBenchmark, Task, register

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase
    from trl import DPOTrainer

logger = logging.getLogger(__name__)


@dataclass
class DPOArguments:
    """DPO-only flags (``--dpo_beta`` and ``--ref_adapter`` are ScriptArguments, as in OpenFedLLM)."""

    dataset_split: str | None = field(
        default=None,
        metadata={"help": "training split (default: the dataset's usual one: train, or train_sft for "
                          "HuggingFaceH4/ultrafeedback_binarized as OpenFedLLM; train_prefs is its preference split); "
                          "held-out pairs come from the matching test split"},
    )


@register
class DPOTask(Task):
    """Preference alignment of the LoRA adapter against a fixed reference policy."""

    name = "dpo"
    config_class = DPOArguments
    # config.py's defaults are SFT's. These make `python main_dpo.py` a short offline demo on CPU (README:
    # its measured time); every one of them is an ordinary flag (or YAML key) to override.
    defaults = {
        "dataset_name": "bundled/preferences",
        "num_rounds": 5,
        "num_clients": 5,
        "sample_clients": 2,
        "max_steps": 4,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "eval_samples": 100,
    }

    def validate(self, cfg: RunConfig) -> None:
        """``--dpo_beta`` > 0; ``--ref_adapter`` is a PEFT adapter folder."""
        if cfg.script.dpo_beta <= 0:
            raise ValueError(f"--dpo_beta must be positive, got {cfg.script.dpo_beta}")
        ref = cfg.script.ref_adapter
        if ref is not None and not (Path(ref) / "adapter_config.json").is_file():
            raise ValueError(f"--ref_adapter {ref!r} holds no adapter_config.json; pass a PEFT adapter folder, "
                             "e.g. a checkpoint-<round> folder of an SFT run")

    def check_data(self, cfg: RunConfig, data_path: str | None = None) -> None:
        """The preference data flags (or a node's own data) name usable pairs and an existing split."""
        from utils.dpo_data import validate_dpo_data_args

        validate_dpo_data_args(*self.data_source(cfg, data_path), cfg.task_args.dataset_split)

    def load(self, cfg: RunConfig, data_path: str | None = None) -> Dataset:
        """Prompt / chosen / rejected rows of the training split, shuffled with ``--seed``."""
        from utils.dpo_data import load_dpo_dataset

        name, local_dir = self.data_source(cfg, data_path)
        return load_dpo_dataset(name, local_dir, cfg.script.dataset_sample, cfg.task_args.dataset_split,
                                cfg.script.seed)

    def tokenize(self, rows: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: RunConfig) -> Dataset:
        """``prompt_ids``, ``chosen_ids``, ``rejected_ids``; pairs with no room for an answer are dropped."""
        from utils.dpo_tokenize import tokenize_dpo

        return tokenize_dpo(rows, tokenizer, cfg.script.template, cfg.script.seq_length)

    def build_trainer(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase, tokenized: Dataset,
                      cfg: RunConfig, output_dir: Path, bf16: bool) -> DPOTrainer:
        """A DPOTrainer over pre-tokenised pairs, built once per run, without a reference of its own.

        Given a PeftModel, DPOTrainer copies its *current* adapter into a frozen ``ref`` adapter.
        Built once, before round 1, that copy would never follow anything the run means by its
        reference, so it is removed; ``prepare_model`` then attaches the run's reference, if any.
        """
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        from federated_learning.trainers import common_training_kwargs, speed_up_local_steps
        from utils.constants import REF_ADAPTER

        script = cfg.script
        kwargs = common_training_kwargs(script, output_dir, bf16)
        if script.batch_size % 2 == 0:
            # A DPO step scores a chosen and a rejected answer per pair: 2 x batch_size sequences. Half the
            # pairs per micro-batch and twice the accumulation keep the pairs per step and the gradient
            # (the loss is a mean over equal-sized micro-batches) while holding no more sequences at once
            # than an SFT step of the same --batch_size.
            kwargs["per_device_train_batch_size"] = script.batch_size // 2
            kwargs["gradient_accumulation_steps"] = 2 * script.gradient_accumulation_steps
        args = DPOConfig(
            **kwargs,
            beta=script.dpo_beta,
            max_length=script.seq_length,  # prompt + answer; the rows are already cut to it
        )
        # DPOTrainer tokenises the dataset it is built with; the pre-tokenised rows of each client-round
        # are swapped in by LocalTrainer, so it is given one decoded row only.
        first = tokenized[0]
        placeholder = Dataset.from_dict({
            "prompt": [tokenizer.decode(first["prompt_ids"])],
            "chosen": [tokenizer.decode(first["chosen_ids"])],
            "rejected": [tokenizer.decode(first["rejected_ids"])],
        })
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=placeholder,
                             processing_class=tokenizer)
        if REF_ADAPTER not in model.peft_config:
            raise RuntimeError("DPOTrainer did not add its 'ref' adapter; this TRL version is not supported")
        model.delete_adapter(REF_ADAPTER)
        trainer.train_dataset = tokenized
        speed_up_local_steps(trainer, bf16)
        return trainer

    def round_benchmarks(self, cfg: RunConfig) -> list[RoundBenchmark]:
        """Preference metrics on the held-out pairs."""
        return [RoundBenchmark("dpo_preference")]

    def eval_settings(self, cfg: RunConfig) -> dict[str, Any]:
        """The held-out split matching the training split, and the run's beta."""
        return {"preference_dataset": cfg.script.dataset_name, "preference_split": cfg.task_args.dataset_split,
                "dpo_beta": cfg.script.dpo_beta}

    def start_adapter(self, cfg: RunConfig) -> str | None:
        """``--ref_adapter``: the reference is also where the policy starts."""
        if cfg.script.ref_adapter is not None:
            logger.info("--ref_adapter %s: reference and starting point; its adapter_config.json sets the LoRA "
                        "shape (--peft_lora_r/alpha/target_modules are not used)", cfg.script.ref_adapter)
        return cfg.script.ref_adapter

    def prepare_model(self, model: PeftModel, cfg: RunConfig) -> None:
        """Attach ``--ref_adapter`` as the frozen reference (checkpoints then save it under ``ref/``)."""
        if cfg.script.ref_adapter is not None:
            from utils.model import attach_reference_adapter

            attach_reference_adapter(model, cfg.script.ref_adapter)
